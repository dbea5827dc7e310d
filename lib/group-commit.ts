import { ProtocolError } from './errors.js'
import { INTERNAL_ERROR, commandNotFound } from './messages.js'
import type { Awaitable, CommandPatch, CommandRecord, DeviceRecord } from './store/store.js'
import { formatTimestamp } from './timestamp.js'

/** What a success reply carries after its envelope's keys; undefined for none. */
export type Payload = object | undefined

/**
 * A write a request is waiting on. Handlers return one instead of a payload; the dispatcher
 * awaits `done`, then asks `payload()` for the reply.
 */
export abstract class WriteOp {
  /** Set when its transaction failed: the request is answered 500. */
  failed = false
  /** Settles when its batch has been committed; set when queued. */
  done: Promise<void> | undefined
  /** The device the request was checked against: its network and type route the event. */
  abstract readonly device: DeviceRecord

  /** The reply payload once committed; throws the ProtocolError to answer instead. */
  abstract payload (): Payload
}

/** A `command/insert`: its reply is the four assigned keys. */
export class InsertOp extends WriteOp {
  readonly kind = 'insert'
  /** The command to store; its id is 0 until the store assigns one at commit. */
  readonly record: CommandRecord
  readonly device: DeviceRecord

  constructor (record: CommandRecord, device: DeviceRecord) {
    super()
    this.record = record
    this.device = device
  }

  /**
   * Set when a shared store refused it at commit: its device had `maxPendingPerDevice`
   * pending commands by then, counted across the cluster.
   */
  refusal: ProtocolError | undefined

  payload (): Payload {
    if (this.failed) throw new ProtocolError(500, INTERNAL_ERROR)
    if (this.refusal !== undefined) throw this.refusal
    const { id, timestamp, userId } = this.record
    const formatted = formatTimestamp(timestamp)
    return { command: { id, timestamp: formatted, lastUpdated: formatted, userId } }
  }
}

/** A `command/update`: 404 if the command was gone by the time it committed. */
export class UpdateOp extends WriteOp {
  readonly kind = 'update'
  /** The command before the change; undefined if it did not exist (or had expired) at commit. */
  before: CommandRecord | undefined

  /** `lastUpdated` is the wall-clock time the update sets. */
  constructor (
    readonly id: number,
    readonly device: DeviceRecord,
    readonly patch: CommandPatch,
    readonly lastUpdated: number
  ) {
    super()
  }

  /** The device the command must belong to. */
  get deviceId (): string {
    return this.device.id
  }

  payload (): Payload {
    if (this.failed) throw new ProtocolError(500, INTERNAL_ERROR)
    if (this.before === undefined) throw new ProtocolError(404, commandNotFound(this.id))
    return undefined
  }
}

/** What a write queue needs from its owner. */
export interface WriteSink {
  /**
   * Runs one transaction of writes and records each outcome on its op (`failed`, the assigned
   * id, `before`), at once or when the returned promise settles. Must not throw or reject,
   * and must not call out to code that may re-enter the queue: it runs while later slices
   * still wait their turn.
   */
  commit: (ops: Array<InsertOp | UpdateOp>) => Awaitable<void>
  /**
   * Runs what a committed (or failed) slice makes visible: timers, subscribers, error reports.
   * Called once every slice of the flush has been committed, so code it calls (a subscriber
   * that closes the broker, or deletes a device) never lands between two slices of one flush.
   */
  settle: (ops: Array<InsertOp | UpdateOp>) => void
}

/**
 * Group commit: writes queued during one event-loop turn are committed together at the next
 * (setImmediate), in transactions of at most `size` writes, and each write's `done` settles
 * once they all have. A lone write commits on the next turn, as soon as the loop is free.
 * One flush is in flight at a time: with a store that answers later, writes queued meanwhile
 * wait for it, then commit together.
 */
export class WriteQueue {
  readonly #size: number
  readonly #sink: WriteSink
  // Writes not committed yet, in arrival order, and the promise they all await.
  // Invariant: every op in #ops is uncommitted; a flush takes slices from the head only.
  #ops: Array<InsertOp | UpdateOp> = []
  #done: { promise: Promise<void>, resolve: () => void } | undefined
  #immediate: NodeJS.Immediate | undefined
  // The flush whose commits are under way, if they answer later; the next waits for it.
  #flushing: Promise<void> | undefined
  readonly #onImmediate = (): void => {
    this.#immediate = undefined
    void this.flush()
  }

  constructor (size: number, sink: WriteSink) {
    this.#size = size
    this.#sink = sink
  }

  /** Writes queued and not yet committed. */
  get size (): number {
    return this.#ops.length
  }

  /** Queues a write for the next commit and returns it, its `done` set. */
  push<Op extends InsertOp | UpdateOp>(op: Op): Op {
    if (this.#done === undefined) {
      this.#done = deferred<void>()
      if (this.#flushing === undefined) this.#immediate = setImmediate(this.#onImmediate)
    }
    this.#ops.push(op)
    op.done = this.#done.promise
    return op
  }

  /**
   * Commits what is queued, now (after the flush in flight, if any): for a write that must
   * follow them, and for close(). Every slice commits before any is settled, and the
   * requests resolve after both. Returns a promise only if a commit answered later; it
   * settles once what was queued at the call has committed. Never rejects.
   */
  flush (): Awaitable<void> {
    if (this.#immediate !== undefined) clearImmediate(this.#immediate)
    this.#immediate = undefined
    if (this.#flushing !== undefined) return this.#flushing.then(() => this.flush())
    const done = this.#done
    if (done === undefined) return
    const ops = this.#ops
    this.#ops = []
    this.#done = undefined
    const slices: Array<Array<InsertOp | UpdateOp>> = []
    for (let i = 0; i < ops.length; i += this.#size) slices.push(ops.slice(i, i + this.#size))
    for (let i = 0; i < slices.length; i++) {
      const committing = this.#sink.commit(slices[i] as Array<InsertOp | UpdateOp>)
      if (committing instanceof Promise) {
        const flushing = this.#finish(committing, slices, i + 1, done)
        this.#flushing = flushing
        return flushing
      }
    }
    this.#settle(slices, done)
  }

  // The rest of a flush whose commit at `from - 1` answered later: one slice at a time.
  async #finish (committing: Promise<void>, slices: Array<Array<InsertOp | UpdateOp>>, from: number, done: { resolve: () => void }): Promise<void> {
    await committing
    for (let i = from; i < slices.length; i++) await this.#sink.commit(slices[i] as Array<InsertOp | UpdateOp>)
    this.#flushing = undefined
    this.#settle(slices, done)
    // Writes queued while this flush was in flight commit next.
    if (this.#done !== undefined && this.#immediate === undefined) this.#immediate = setImmediate(this.#onImmediate)
  }

  #settle (slices: Array<Array<InsertOp | UpdateOp>>, done: { resolve: () => void }): void {
    for (const slice of slices) this.#sink.settle(slice)
    done.resolve()
  }
}

/** A promise and its resolve function (Promise.withResolvers is Node 22+). */
export function deferred<T> (): { promise: Promise<T>, resolve: (value: T) => void } {
  let resolve!: (value: T) => void
  const promise = new Promise<T>((r) => { resolve = r })
  return { promise, resolve }
}
