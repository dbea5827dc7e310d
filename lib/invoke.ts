import { Action, allows } from './auth.js'
import type { Core } from './core.js'
import { BrokerError, describeCause } from './errors.js'
import { CommandEvent, type Subscriber } from './fan-out.js'
import { ACCESS_DENIED } from './messages.js'
import { describe } from './options.js'
import type { Command, CommandInsertMessage, Reply } from './schema.js'
import type { CommandRecord } from './store/store.js'
import { aborted, checkSignal, checkTimeout } from './waiting.js'
import { failure } from './wire.js'

// How its errors name it.
const WHO = 'broker.invoke'

/** What `broker.invoke()` sends: a device, and the `command` object `command/insert` takes. */
export interface InvokeRequest {
  deviceId: string
  command: CommandInsertMessage['command']
}

/** How long `broker.invoke()` waits, and what may stop it. */
export interface InvokeOptions {
  /** Aborting it rejects the invocation with `ERR_ABORTED`. */
  signal?: AbortSignal | undefined
  /** Most milliseconds to wait for the device's answer, on the broker's clock; then `ERR_TIMEOUT`. Default: no limit but the command's lifetime. */
  timeout?: number | undefined
}

/**
 * One `broker.invoke()`: listens to the device's updates first, inserts, then settles with the
 * command's first update, or with why not. Internal: use `broker.invoke()`.
 */
export function invoke (core: Core, insert: (message: object, token: unknown) => Promise<Reply>, request: InvokeRequest, token: unknown, options: InvokeOptions = {}): Promise<Command> {
  const { signal, timeout } = check(request, options)
  if (core.closed) return Promise.reject(new BrokerError('ERR_CLOSED', 'broker.invoke: the broker is closed'))
  if (signal?.aborted === true) return Promise.reject(aborted(WHO, signal))
  return new Promise<Command>((resolve, reject) => {
    let id: number | undefined
    let timer: unknown
    let settled = false
    // Called once: after it, nothing is listening any more (the read back checks `settled`).
    const settle = (outcome: Command | BrokerError): void => {
      settled = true
      remove()
      core.closers.delete(onClose)
      if (timer !== undefined) core.clock.clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      if (outcome instanceof BrokerError) reject(outcome)
      else resolve(outcome)
    }
    const heard = (event: CommandEvent): void => {
      if (event.record.id !== id) return
      if (event.type === 'expire') settle(new BrokerError('ERR_EXPIRED', `broker.invoke: command ${id} expired before the device answered`))
      else settle(event.command)
    }
    // Listening from before the insert: once its id is known, every later answer is heard.
    const subscriber: Subscriber = { filter: { deviceId: request.deviceId }, updates: true, deliver: heard }
    const remove = core.fanOut.add(subscriber)
    const onAbort = (): void => { settle(aborted(WHO, signal as AbortSignal)) }
    const onClose = (): void => { settle(new BrokerError('ERR_CLOSED', 'broker.invoke: the broker closed before the device answered')) }
    signal?.addEventListener('abort', onAbort, { once: true })
    core.closers.add(onClose)
    if (timeout !== undefined) {
      timer = core.clock.setTimeout(() => { settle(new BrokerError('ERR_TIMEOUT', `broker.invoke: no answer from device ${request.deviceId} within ${timeout} ms`)) }, timeout)
    }
    // The insert's reply says whether it was taken; it needs the right to read it back too.
    let reading: boolean
    try {
      reading = allows(core.grant(undefined, token), Action.GetDeviceCommand)
    } catch {
      // A token refused outright: the insert answers with DeviceHive's 401 and is refused.
      reading = true
    }
    const sent: Promise<Reply> = reading
      ? insert({ action: 'command/insert', deviceId: request.deviceId, command: request.command }, token)
      : Promise.resolve(failure('command/insert', null, 403, ACCESS_DENIED))
    void sent.then((reply) => {
      if (reply.status !== 'success') {
        settle(new BrokerError('ERR_REFUSED', `broker.invoke: the insert was refused: ${reply.code} ${reply.error}`, { reply }))
        return null
      }
      id = (reply as unknown as { command: { id: number } }).command.id
      // The device may have answered before the reply was back (from another process, say):
      // then the store has the answer. A later one is heard as it comes.
      return read(core, id)
    }).then((record) => {
      if (settled || record === null) return
      if (record === undefined) settle(new BrokerError('ERR_EXPIRED', `broker.invoke: command ${id} was gone (expired, or its device deleted) before the device answered`))
      else if (record.updated) settle(new CommandEvent('update', record, record).command)
    }, (err: unknown) => {
      settle(new BrokerError('ERR_STORE', `broker.invoke: reading command ${id} back failed: ${describeCause(err)}`, { cause: err }))
    })
  })
}

// The command as stored now (undefined: gone).
async function read (core: Core, id: number): Promise<CommandRecord | undefined> {
  const record = core.store.getCommand(id, core.clock.now())
  return record instanceof Promise ? await record : record
}

function check (request: InvokeRequest, options: InvokeOptions): InvokeOptions {
  if (typeof request !== 'object' || request === null) throw new TypeError(`broker.invoke: request must be an object, received ${describe(request)}`)
  if (typeof request.deviceId !== 'string' || request.deviceId === '') {
    throw new TypeError(`broker.invoke: request.deviceId must be a non-empty string, received ${describe(request.deviceId)}`)
  }
  if (typeof options !== 'object' || options === null) throw new TypeError(`broker.invoke: options must be an object, received ${describe(options)}`)
  checkSignal(WHO, options.signal)
  checkTimeout(WHO, options.timeout)
  return options
}
