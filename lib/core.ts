import { performance } from 'node:perf_hooks'
import mittModule, { type Emitter } from 'mitt'
import { allows, Authenticator, canSee, type ActionId, type Grant } from './auth.js'
import type { Clock } from './clock.js'
import { BrokerError, describeCause, isBrokerError, ProtocolError, type BrokerErrorCode } from './errors.js'
import { LocalBus, type Bus, type BusEvent } from './bus/bus.js'
import { channels, observing } from './diagnostics.js'
import { Expiry } from './expiry.js'
import { CommandEvent, FanOut } from './fan-out.js'
import { guardStore } from './store/guarded.js'
import { WriteQueue, type InsertOp, type UpdateOp } from './group-commit.js'
import { ACCESS_DENIED, BROKER_CLOSED, COMMAND_ID_REQUIRED, DEVICE_ID_REQUIRED, MALFORMED_JSON, deviceNotFound, validationFailed } from './messages.js'
import type { ResolvedOptions } from './options.js'
import { PendingCounts } from './pending.js'
import type { Command } from './schema.js'
import type { SessionState } from './session.js'
import type { Awaitable, CommandRecord, CommitResult, DeviceRecord, SharedSpace, Store, WriteBatch } from './store/store.js'
import { STEP_EXAMINE } from './turns.js'

// mitt's types describe a CommonJS module; Node loads its ESM build, whose default export is the factory.
const mitt = mittModule as unknown as typeof mittModule.default

/** The broker's in-process events and what their listeners receive. */
export interface BrokerEvents {
  /**
   * A command expired before any `command/update` (its lifetime ran out, or the broker's
   * `retention` for one without: then its `lifetime` is null): the command as it stood,
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
  /** The store's shared space when processes share it: then the store counts pending commands and publishes events. */
  readonly shared: SharedSpace | undefined
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
  /**
   * Device saves and deletes under way on a store that answers later, by device id: a write
   * of that device waits for it. With `deviceGeneration`, counting every one ever started, a
   * write whose device read overlapped one reads the device again.
   */
  readonly #deviceWrites = new Map<string, Promise<void>>()
  /** What ends each `broker.invoke()` still waiting and each `broker.commands()` stream, when the broker closes. */
  readonly closers = new Set<() => void>()
  deviceGeneration = 0
  /** Expires commands when their time comes: the timer wheel and start-up recovery. */
  readonly expiry: Expiry
  closed = false
  /** Group commits so far: how many, their writes, the last and the largest batch, and the time they took (ms). */
  readonly commits = { count: 0, writes: 0, lastBatch: 0, largestBatch: 0, lastMs: 0, totalMs: 0 }
  #nextSubscriptionId = 1
  // Publishes this broker's own events when its store is not shared.
  readonly #localBus: LocalBus | undefined
  readonly #stopListening: () => void
  // The error of each slice of writes whose transaction failed, until it is settled.
  readonly #commitErrors = new WeakMap<object, unknown>()

  constructor (store: Store, options: ResolvedOptions) {
    this.options = options
    this.store = guardStore(store)
    this.shared = this.store.shared
    this.#localBus = this.shared === undefined ? new LocalBus() : undefined
    // Where the broker hears of writes: the shared space's bus, or its own in-process one.
    const bus: Bus = this.shared?.bus ?? this.#localBus as LocalBus
    this.clock = options.clock
    this.auth = new Authenticator(options.key, options.tokenCacheSize)
    this.fanOut = new FanOut((err) => { this.fail('ERR_SUBSCRIBER', 'a subscriber threw', err) })
    this.writes = new WriteQueue(options.writeBatch, {
      commit: (ops) => this.#commit(ops),
      settle: (ops) => { this.#settle(ops) }
    })
    this.#stopListening = bus.subscribe(
      (event) => { this.#deliver(event) },
      (err) => { this.fail('ERR_STORE', 'the store\'s event bus failed; it is recovering', err) }
    )
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
  device (grant: Grant, action: ActionId, msg: Message): Awaitable<DeviceRecord> {
    const deviceId = this.deviceId(grant, action, msg)
    const device = this.store.getDevice(deviceId)
    if (device instanceof Promise) return device.then((found) => checkDevice(grant, deviceId, found))
    return checkDevice(grant, deviceId, device)
  }

  /**
   * Whether a write of `deviceId` must start over (read the device again) rather than queue:
   * a save or delete of it is under way, or one started since `generation` was read. Only
   * a store that answers later gets here.
   */
  deviceChanged (deviceId: string, generation: number): Promise<void> | undefined {
    const writing = this.#deviceWrites.get(deviceId)
    if (writing !== undefined) return writing
    return generation === this.deviceGeneration ? undefined : Promise.resolve()
  }

  /**
   * Runs a device save or delete: after the writes queued before it have committed (they
   * saw the device as it was), and, on a store that answers later, registered so that
   * writes of the device wait for it.
   */
  deviceWrite<T> (deviceId: string, write: () => Awaitable<T>): Awaitable<T> {
    const flushed = this.writes.flush()
    if (!(flushed instanceof Promise)) {
      const done = write()
      if (!(done instanceof Promise)) return done
      return this.#tracked(deviceId, done)
    }
    return this.#tracked(deviceId, flushed.then(write))
  }

  #tracked<T> (deviceId: string, running: Promise<T>): Promise<T> {
    this.deviceGeneration++
    const settled = running.then(noop, noop)
    this.#deviceWrites.set(deviceId, settled)
    void settled.then(() => { if (this.#deviceWrites.get(deviceId) === settled) this.#deviceWrites.delete(deviceId) })
    return running
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
  #commit (ops: Array<InsertOp | UpdateOp>): Awaitable<void> {
    const inserts = []
    const updates = []
    for (const op of ops) {
      if (op.kind === 'insert') inserts.push(op.record)
      else updates.push(op)
    }
    const batch: WriteBatch = { inserts, updates, maxPending: this.options.maxPendingPerDevice }
    const started = observing ? performance.now() : 0
    let result
    try {
      result = this.store.commit(batch, this.clock.now())
    } catch (err) {
      this.#failed(ops, err)
      return
    }
    if (result instanceof Promise) {
      return result.then((done) => { this.#committed(ops, done, started) }, (err: unknown) => { this.#failed(ops, err) })
    }
    this.#committed(ops, result, started)
  }

  #committed (ops: Array<InsertOp | UpdateOp>, result: CommitResult, started: number): void {
    if (observing) {
      const { commits } = this
      commits.lastMs = performance.now() - started
      commits.totalMs += commits.lastMs
      commits.count++
      commits.writes += ops.length
      commits.lastBatch = ops.length
      if (ops.length > commits.largestBatch) commits.largestBatch = ops.length
    }
    let insert = 0
    let update = 0
    for (const op of ops) {
      if (op.kind === 'update') {
        op.before = result.before[update++]
        continue
      }
      const id = result.ids[insert++]
      if (id !== undefined) {
        op.record.id = id
        continue
      }
      const { maxPendingPerDevice } = this.options
      op.refusal = new ProtocolError(400, validationFailed(`device ${op.record.deviceId} has ${maxPendingPerDevice} pending commands, the limit is ${maxPendingPerDevice}`))
    }
  }

  #failed (ops: Array<InsertOp | UpdateOp>, err: unknown): void {
    for (const op of ops) op.failed = true
    this.#commitErrors.set(ops, err)
  }

  // After every slice of a flush has committed: only now do timers start, subscribers hear of
  // it, and failures get reported, so whatever those call (close(), another write) comes after.
  #settle (ops: Array<InsertOp | UpdateOp>): void {
    if (this.#commitErrors.has(ops)) {
      if (this.shared === undefined) for (const op of ops) if (op.kind === 'insert') this.pending.uncount(op.record)
      this.fail('ERR_STORE', 'a write failed; its requests were answered 500', this.#commitErrors.get(ops))
      return
    }
    const now = this.clock.now()
    const bus = this.#localBus
    // Asked once a slice, not once a write: what an unobserved broker pays stays per commit.
    const insertObserved = observing && channels.insert.hasSubscribers
    const updateObserved = observing && channels.update.hasSubscribers
    for (const op of ops) {
      if (op.kind === 'insert') {
        const { record } = op
        if (op.refusal !== undefined) continue
        if (record.expiresAt !== null && !this.closed) this.expiry.arm(record.id, record.expiresAt)
        // One whose lifetime ran out before it committed is gone for readers already: it is
        // reported when its timer fires, not pushed as new. A shared store published it.
        const publish = bus !== undefined && this.fanOut.has(false) && (record.expiresAt === null || record.expiresAt > now)
        if (!publish && !insertObserved) continue
        const event = new CommandEvent('insert', record, op.device)
        if (insertObserved) channels.insert.publish({ command: event.command })
        if (publish) bus.publish(event)
      } else if (op.before !== undefined) {
        const { before, patch } = op
        if (bus !== undefined && !before.updated) this.pending.uncount(before)
        const publish = bus !== undefined && this.fanOut.has(true)
        if (!publish && !updateObserved) continue
        const event = new CommandEvent('update', {
          ...before,
          status: patch.status === undefined ? before.status : patch.status,
          result: patch.result === undefined ? before.result : patch.result,
          lastUpdated: op.lastUpdated,
          updated: true
        }, op.device)
        if (updateObserved) channels.update.publish({ command: event.command })
        if (publish) bus.publish(event)
      }
    }
  }


  /** Publishes an expiry on this broker's own bus; a shared store has published its own. */
  publishExpired (record: CommandRecord, device: DeviceRecord): void {
    if (this.#localBus !== undefined && this.fanOut.has(true)) {
      this.#localBus.publish(new CommandEvent('expire', { ...record, status: 'expired' }, device))
    }
  }

  // An event from the bus, this broker's own or, on a shared store, any broker's.
  #deliver (event: BusEvent): void {
    if (event.type === 'device-deleted') {
      for (const subscriber of this.fanOut.forDevice(event.deviceId)) subscriber.end?.()
      return
    }
    const commandEvent = event instanceof CommandEvent
      ? event
      : new CommandEvent(event.type, event.type === 'expire' ? { ...event.record, status: 'expired' } : event.record, event)
    if (event.type === 'insert') {
      // From another broker: one that expired before it got here is not pushed as new.
      const { expiresAt } = event.record
      if (expiresAt !== null && expiresAt <= this.clock.now()) return
      if (this.fanOut.has(false)) this.fanOut.publish(commandEvent, false)
    } else if (this.fanOut.has(true)) {
      this.fanOut.publish(commandEvent, true)
    }
  }

  /** Stops listening to the bus. */
  stopListening (): void {
    this.#stopListening()
  }

  // --- events ---------------------------------------------------------------------------

  /** Tells the `expired` listeners; one that throws is reported on `error`. */
  emitExpired (record: CommandRecord, device: DeviceRecord): void {
    const listeners = this.events.all.get('expired') as Array<(value: unknown) => void> | undefined
    const observed = observing && channels.expire.hasSubscribers
    if (!observed && (listeners === undefined || listeners.length === 0)) return
    const command = new CommandEvent('expire', record, device).command
    if (observed) channels.expire.publish({ command })
    if (listeners === undefined) return
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
    if (observing && channels.error.hasSubscribers) channels.error.publish({ error })
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

// The device checks of spec §3 once the device has been read.
function checkDevice (grant: Grant, deviceId: string, device: DeviceRecord | undefined): DeviceRecord {
  if (device === undefined) {
    if (grant.allDevices) throw new ProtocolError(404, deviceNotFound(deviceId))
    throw new ProtocolError(403, ACCESS_DENIED)
  }
  if (!canSee(grant, device.networkId, device.deviceTypeId)) throw new ProtocolError(403, ACCESS_DENIED)
  return device
}

function noop (): void {}
