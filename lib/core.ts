import mittModule, { type Emitter } from 'mitt'
import { allows, Authenticator, canSee, type ActionId, type Grant } from './auth.js'
import type { Clock } from './clock.js'
import { BrokerError, describeCause, isBrokerError, ProtocolError, type BrokerErrorCode } from './errors.js'
import { Expiry } from './expiry.js'
import { CommandEvent, FanOut } from './fan-out.js'
import { guardStore } from './store/guarded.js'
import { WriteQueue, type InsertOp, type UpdateOp } from './group-commit.js'
import { ACCESS_DENIED, BROKER_CLOSED, COMMAND_ID_REQUIRED, DEVICE_ID_REQUIRED, MALFORMED_JSON, deviceNotFound } from './messages.js'
import type { ResolvedOptions } from './options.js'
import { PendingCounts } from './pending.js'
import type { Command } from './schema.js'
import type { SessionState } from './session.js'
import type { CommandRecord, DeviceRecord, Store } from './store/store.js'
import { STEP_EXAMINE } from './turns.js'

// mitt's types describe a CommonJS module; Node loads its ESM build, whose default export is the factory.
const mitt = mittModule as unknown as typeof mittModule.default

/** The broker's in-process events and what their listeners receive. */
export interface BrokerEvents {
  /**
   * A command expired before any `command/update`: the command as it stood,
   * deeply frozen. Commands that were updated expire silently.
   */
  expired: Command
  /** Something failed outside any single request: a store write, a subscriber, a push. */
  error: BrokerError
}

// A numeric string that Gson would read as an integer (and no longer than a safe one).
const INTEGER = /^-?\d{1,16}$/

/** A JSON request, parsed. */
export type Message = Record<string, unknown>

/**
 * What the actions share: the store, the clock, tokens, the write queue, the fan-out and the
 * pending counts, and the checks every device-scoped request makes (spec §3). Internal: the
 * broker creates one, and every action (`lib/actions/`) works through it.
 */
export class Core {
  readonly options: ResolvedOptions
  readonly store: Store
  readonly clock: Clock
  readonly auth: Authenticator
  readonly fanOut: FanOut
  readonly writes: WriteQueue
  readonly pending: PendingCounts
  readonly events: Emitter<Record<keyof BrokerEvents, unknown>> = mitt()
  /** Open sessions. */
  readonly sessions = new Set<SessionState>()
  /** Devices whose commands are being deleted, and when that is done: a new device of the id waits. */
  readonly deletions = new Map<string, Promise<void>>()
  /** Expires commands when their time comes: the timer wheel and start-up recovery. */
  readonly expiry: Expiry
  closed = false
  #nextSubscriptionId = 1
  // The error of each slice of writes whose transaction failed, until it is settled.
  readonly #commitErrors = new WeakMap<object, unknown>()

  constructor (store: Store, options: ResolvedOptions) {
    this.options = options
    this.store = guardStore(store)
    this.clock = options.clock
    this.auth = new Authenticator(options.key, options.tokenCacheSize)
    this.fanOut = new FanOut((err) => { this.fail('ERR_SUBSCRIBER', 'a subscriber threw', err) })
    this.writes = new WriteQueue(options.writeBatch, {
      commit: (ops) => { this.#commit(ops) },
      settle: (ops) => { this.#settle(ops) }
    })
    this.pending = new PendingCounts(this.store, STEP_EXAMINE * 4)
    // Last: it reads the store, and starts recovery on the next turn.
    this.expiry = new Expiry(this)
  }

  /** The wall clock, epoch ms: for the times clients see and token expiry. */
  date (): number {
    const { clock } = this
    return clock.date === undefined ? clock.now() : clock.date()
  }

  /** Throws the 503 to answer once the broker or the session has closed: after a wait, a request checks. */
  checkOpen (session: SessionState | undefined): void {
    if (this.closed || session?.closed === true) throw new ProtocolError(503, BROKER_CLOSED)
  }

  /** A new subscription id: unique in this broker. */
  subscriptionId (): number {
    return this.#nextSubscriptionId++
  }

  // --- the checks of spec §3 ------------------------------------------------------------

  /** The grant of the message's token, or of the session's; throws the 401 to answer. */
  grant (session: SessionState | undefined, token: unknown, allowExpired = false): Grant {
    return this.auth.grant(token === undefined ? session?.token : token, this.date(), allowExpired)
  }

  /**
   * The device checks of spec §3, in its order: the action (403), then `deviceId` (400 if
   * missing), then the device itself (403, or 404 for a token that may see every device).
   */
  device (grant: Grant, action: ActionId, msg: Message): DeviceRecord {
    const deviceId = this.deviceId(grant, action, msg)
    const device = this.store.getDevice(deviceId)
    if (device === undefined) {
      if (grant.allDevices) throw new ProtocolError(404, deviceNotFound(deviceId))
      throw new ProtocolError(403, ACCESS_DENIED)
    }
    if (!canSee(grant, device.networkId, device.deviceTypeId)) throw new ProtocolError(403, ACCESS_DENIED)
    return device
  }

  /** The action check, then `deviceId` as a string (a number is its decimal text, as Gson reads it). */
  deviceId (grant: Grant, action: ActionId, msg: Message): string {
    if (!allows(grant, action)) throw new ProtocolError(403, ACCESS_DENIED)
    let { deviceId } = msg
    if (typeof deviceId === 'number' && Number.isFinite(deviceId)) deviceId = String(deviceId)
    if (deviceId === undefined || deviceId === null || deviceId === '') throw new ProtocolError(400, DEVICE_ID_REQUIRED)
    if (typeof deviceId !== 'string') throw new ProtocolError(400, MALFORMED_JSON)
    return deviceId
  }

  /** `commandId`: an integer, or a numeric string read as one. */
  commandId (msg: Message): number {
    let { commandId } = msg
    if (commandId === undefined || commandId === null) throw new ProtocolError(400, COMMAND_ID_REQUIRED)
    if (typeof commandId === 'string' && INTEGER.test(commandId)) commandId = Number(commandId)
    if (!Number.isSafeInteger(commandId)) throw new ProtocolError(400, MALFORMED_JSON)
    return commandId as number
  }

  // --- writes ---------------------------------------------------------------------------

  // One transaction of writes: no callbacks into other code here (see WriteSink.commit).
  #commit (ops: Array<InsertOp | UpdateOp>): void {
    const store = this.store
    try {
      store.transaction(() => {
        for (const op of ops) {
          if (op.kind === 'insert') op.record.id = store.insertCommand(op.record)
          else op.before = store.updateCommand(op.id, op.deviceId, op.patch, op.lastUpdated, op.now)
        }
      })
    } catch (err) {
      for (const op of ops) op.failed = true
      this.#commitErrors.set(ops, err)
    }
  }

  // After every slice of a flush has committed: only now do timers start, subscribers hear of
  // it, and failures get reported, so whatever those call (close(), another write) comes after.
  #settle (ops: Array<InsertOp | UpdateOp>): void {
    if (this.#commitErrors.has(ops)) {
      for (const op of ops) if (op.kind === 'insert') this.pending.uncount(op.record)
      this.fail('ERR_STORE', 'a write failed; its requests were answered 500', this.#commitErrors.get(ops))
      return
    }
    const now = this.clock.now()
    for (const op of ops) {
      if (op.kind === 'insert') {
        const { record } = op
        if (record.expiresAt !== null && !this.closed) this.expiry.arm(record.id, record.expiresAt)
        // One whose lifetime ran out before it committed is gone for readers already: it is
        // reported when its timer fires, not pushed as new.
        if (this.fanOut.has(false) && (record.expiresAt === null || record.expiresAt > now)) {
          this.fanOut.publish(new CommandEvent(record, op.device), false)
        }
      } else if (op.before !== undefined) {
        const { before, patch } = op
        if (!before.updated) this.pending.uncount(before)
        if (this.fanOut.has(true)) {
          this.fanOut.publish(new CommandEvent({
            ...before,
            status: patch.status === undefined ? before.status : patch.status,
            result: patch.result === undefined ? before.result : patch.result,
            lastUpdated: op.lastUpdated,
            updated: true
          }, op.device), true)
        }
      }
    }
  }

  // --- events ---------------------------------------------------------------------------

  /** Tells the `expired` listeners; one that throws is reported on `error`. */
  emitExpired (record: CommandRecord, device: DeviceRecord): void {
    const listeners = this.events.all.get('expired') as Array<(value: unknown) => void> | undefined
    if (listeners === undefined || listeners.length === 0) return
    const command = new CommandEvent(record, device).command
    for (const listener of listeners.slice()) {
      try {
        listener(command)
      } catch (err) {
        this.fail('ERR_SUBSCRIBER', "an 'expired' listener threw", err)
      }
    }
  }

  /**
   * Reports on `error`: what happened, then what failed; `cause` is the original error (the
   * store's own, not the guard's wrapper). Never throws, whatever was thrown.
   */
  fail (code: BrokerErrorCode, message: string, cause: unknown): void {
    const original = isBrokerError(cause, 'ERR_STORE') ? cause.cause : cause
    const error = new BrokerError(code, `${message}: ${describeCause(original)}`, { cause: original })
    const listeners = this.events.all.get('error') as Array<(value: unknown) => void> | undefined
    if (listeners === undefined || listeners.length === 0) {
      // Nobody listens: say it once on stderr rather than lose it.
      process.emitWarning(error)
      return
    }
    for (const listener of listeners.slice()) {
      try {
        listener(error)
      } catch {
        // An error listener that throws has nowhere left to report to.
      }
    }
  }
}
