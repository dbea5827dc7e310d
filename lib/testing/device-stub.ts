// deviceStub(): a device that answers each command it is sent with a command/update.
import type { Broker } from '../broker.js'
import { describe } from '../options.js'
import type { Command, CommandUpdateMessage, DeviceSaveMessage } from '../schema.js'
import type { Session } from '../session.js'
import { checkBroker, kitOf, refused, type Kit } from './kit.js'

/** What a device stub answers a command with: the `command` of `command/update`. */
export type Answer = CommandUpdateMessage['command']

/** Options of {@link deviceStub}. */
export interface DeviceStubOptions {
  /** The device it plays. */
  deviceId: string
  /**
   * Called with each command sent to the device; what it returns (or resolves to) is sent
   * back as the command's `command/update`. `undefined` leaves the command unanswered.
   */
  answer: (command: Command) => Answer | undefined | Promise<Answer | undefined>
  /** The token its session uses. Default on a test broker: `tokens.device`; required on another broker. */
  token?: string
  /** The device's fields, saved if the device is missing. Default `{ name: deviceId }`. */
  device?: DeviceSaveMessage['device']
}

/** A running device stub. */
export interface DeviceStub {
  /** Every command the device was sent, in order. */
  readonly commands: readonly Command[]
  /** What went wrong answering: an `answer` that threw or rejected, an update refused (`ERR_REFUSED`). */
  readonly errors: readonly unknown[]
  /** Its session. */
  readonly session: Session
  /**
   * Waits for the answers under way to be sent, then closes the session; rejects with the
   * first of `errors`, if any. Closing the broker also stops the stub.
   */
  close: () => Promise<void>
}

/**
 * Plays device `deviceId` on `broker`: saves the device if it is missing (with `device`, by
 * the test broker's `tokens.admin`, or on another broker by `token`), opens a session with
 * `token`, subscribes to the device's commands, and answers each with `answer(command)`.
 * Resolves once it is subscribed: commands inserted from then on reach it. Rejects with
 * `ERR_REFUSED` (the reply in `reply`) if a step is refused. Throws `TypeError` for bad
 * options, naming the option.
 *
 * @example
 * await deviceStub(broker, { deviceId: 'lamp-1', answer: (command) => ({ status: 'done', result: command.parameters }) })
 */
export function deviceStub (broker: Broker, options: DeviceStubOptions): Promise<DeviceStub> {
  const { deviceId, answer, token, device } = check(broker, options)
  const admin = kitOf(broker)?.tokens.admin ?? token
  const commands: Command[] = []
  const errors: unknown[] = []
  const answering = new Set<Promise<void>>()
  let session: Session | undefined

  const reply = async (command: Command): Promise<void> => {
    const update = await answer(command)
    if (update === undefined) return
    const sent = await (session as Session).handle({ action: 'command/update', deviceId, commandId: command.id, command: update })
    if (sent.status === 'error') throw refused(`deviceStub: the update of command ${command.id} was refused`, sent)
  }
  const pushed = (command: Command): void => {
    commands.push(command)
    const done: Promise<void> = reply(command).catch((err: unknown) => { errors.push(err) }).finally(() => { answering.delete(done) })
    answering.add(done)
  }

  return (async () => {
    const found = await broker.handle({ action: 'device/get', deviceId }, admin)
    if (found.status === 'error') {
      if (found.code !== 404) throw refused('deviceStub: device/get failed', found)
      const saved = await broker.handle({ action: 'device/save', deviceId, device: { name: deviceId, ...device } }, admin)
      if (saved.status === 'error') throw refused('deviceStub: device/save failed', saved)
    }
    const opened = broker.session((push) => { pushed(push.command) })
    session = opened
    const steps: Array<[string, object]> = [
      ['authenticate', { action: 'authenticate', token: token ?? (kitOf(broker) as Kit).tokens.device }],
      ['command/subscribe', { action: 'command/subscribe', deviceId }]
    ]
    for (const [what, message] of steps) {
      const reply = await opened.handle(message)
      if (reply.status === 'error') {
        opened.close()
        throw refused(`deviceStub: ${what} failed`, reply)
      }
    }
    return {
      commands,
      errors,
      session: opened,
      async close () {
        while (answering.size > 0) await Promise.all(answering)
        opened.close()
        if (errors.length > 0) throw errors[0]
      }
    }
  })()
}

function check (broker: Broker, options: DeviceStubOptions): DeviceStubOptions {
  const who = 'deviceStub'
  checkBroker(who, broker)
  if (typeof options !== 'object' || options === null) throw new TypeError(`${who}: options must be an object, received ${describe(options)}`)
  const { deviceId, answer, token, device } = options
  if (typeof deviceId !== 'string' || deviceId === '') throw new TypeError(`${who}: options.deviceId must be a non-empty string, received ${describe(deviceId)}`)
  if (typeof answer !== 'function') throw new TypeError(`${who}: options.answer must be a function, received ${describe(answer)}`)
  if (token !== undefined && typeof token !== 'string') throw new TypeError(`${who}: options.token must be a string, received ${describe(token)}`)
  if (token === undefined && kitOf(broker) === undefined) throw new TypeError(`${who}: options.token is required on a broker createTestBroker did not make`)
  if (device !== undefined && (typeof device !== 'object' || device === null)) throw new TypeError(`${who}: options.device must be an object, received ${describe(device)}`)
  return options
}
