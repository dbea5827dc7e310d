import { channels, observing } from './diagnostics.js'
import type { Message, Push, Reply, ReplyTo, UncheckedMessage } from './schema.js'

/**
 * Receives a session's subscription pushes. Called synchronously; a returned
 * promise is not awaited (its rejection is reported on the broker's `error`
 * event), and a throw is reported the same way, so a slow or failing push
 * never holds up other sessions.
 */
export type PushFunction = (message: Push) => unknown

/** What a session needs from its broker. Internal. */
export interface SessionHost {
  /** Serves one request; `afterReply` collects what must run once its reply is out. */
  dispatch: (state: SessionState, message: unknown, token: unknown, afterReply: Array<() => void>) => Promise<Reply>
  /** Reports a push that threw or rejected. */
  pushFailed: (error: unknown) => void
  /** Forgets a closed session. */
  closed: (state: SessionState) => void
}

/** A subscription as its session keeps it. Internal. */
export interface SessionSubscription {
  readonly id: number
  /** What `subscription/list` shows, as the client asked for it. */
  readonly listing: SubscriptionListing
  /** Ends it: no push from now on, and whatever is under way stops. Idempotent. */
  readonly end: () => void
}

/** One entry of `subscription/list` (spec §10), keys in wire order. */
export interface SubscriptionListing {
  subscriptionId: number
  type: 'command'
  deviceId: string | null
  networkIds: readonly number[] | null
  deviceTypeIds: readonly number[] | null
  names: readonly string[] | null
  timestamp: string | null
}

/**
 * A session's state, changed by the broker's actions. Internal. It keeps the session's
 * promises: its replies go out in the order its requests came, a request that reads waits
 * for the session's own earlier writes, and a new subscription's pushes wait for its reply.
 */
export class SessionState {
  /** The token set by `authenticate`, used when a message comes without one. */
  token: unknown
  closed = false
  readonly subscriptions = new Map<number, SessionSubscription>()
  /**
   * The session's last write still waiting for its commit (`done` unsettled), if any: a
   * request that is not a write waits for it, so it sees that write.
   */
  pendingWrite: Promise<void> | undefined
  readonly #push: PushFunction
  readonly #host: SessionHost
  // Write turns: a write takes ticket #started and runs once #finished reaches it (every
  // earlier write has queued); a read waits for the writes started before it. Waiters are in
  // ticket order. On a store that answers at once a turn ends before the next begins, and
  // nobody ever waits.
  #started = 0
  #finished = 0
  readonly #waiters: Array<{ readonly ticket: number, readonly resolve: () => void }> = []
  // The reply of the last request, while it is not out yet: the next reply waits for it.
  #lastReply: Promise<unknown> | undefined
  #inFlight = 0

  constructor (host: SessionHost, push: PushFunction) {
    this.#host = host
    this.#push = push
  }

  /**
   * Takes a write's turn: undefined if it may run now, else a promise that resolves once the
   * session's earlier writes have queued (or failed). Each call must be followed by one `endWrite()`.
   */
  beginWrite (): Promise<void> | undefined {
    return this.#after(this.#started++)
  }

  /** Ends the turn of the oldest write that has one: it has queued (or failed). */
  endWrite (): void {
    const finished = ++this.#finished
    while (this.#waiters.length > 0 && (this.#waiters[0] as { ticket: number }).ticket <= finished) {
      (this.#waiters.shift() as { resolve: () => void }).resolve()
    }
  }

  /** For a request that is not a write: undefined, or a promise that resolves once the writes begun before it have queued. */
  afterWrites (): Promise<void> | undefined {
    return this.#after(this.#started)
  }

  #after (ticket: number): Promise<void> | undefined {
    if (this.#finished >= ticket) return undefined
    return new Promise((resolve) => { this.#waiters.push({ ticket, resolve }) })
  }

  /** Sends a push, unless the session is closed; a push that throws or rejects is reported. */
  push (push: Push): void {
    if (this.closed) return
    if (observing && channels.push.hasSubscribers) channels.push.publish({ push })
    try {
      const sent = this.#push(push)
      if (sent instanceof Promise) sent.catch(this.#host.pushFailed)
    } catch (err) {
      this.#host.pushFailed(err)
    }
  }

  /** Ends every subscription of the session. */
  endSubscriptions (): void {
    for (const subscription of this.subscriptions.values()) subscription.end()
    this.subscriptions.clear()
  }

  /**
   * Closes the session: no push leaves it from now on, its later requests are refused, and its
   * subscriptions end over the next event-loop turns (see {@link Reaper}). Idempotent.
   */
  close (): void {
    if (this.closed) return
    this.closed = true
    reaper.add(this)
    this.#host.closed(this)
  }

  /** Handles one request in the session's order (see {@link Session.handle}). */
  handle (message: unknown, token: unknown): Promise<Reply> {
    const afterReply: Array<() => void> = []
    const own = this.#host.dispatch(this, message, token, afterReply)
    // Replies leave in request order: a reply that is ready early waits for the one before.
    // A plain `then` returning `own`, not an async function awaiting it: a promise and an await
    // less per reply that queues (0.56 KB per command with 50 in flight, sampled).
    const previous = this.#lastReply
    const reply = previous === undefined ? own : previous.then(() => own)
    this.#inFlight++
    this.#lastReply = reply
    void reply.then(() => {
      if (--this.#inFlight === 0) this.#lastReply = undefined
      // This reaction and the caller's continuation are queued together when `reply` settles,
      // this one first; the microtask it queues runs after the caller's, which has sent the
      // reply. So what waits for the reply (a new subscription's pushes) comes after it.
      if (afterReply.length > 0) queueMicrotask(() => { for (const release of afterReply) release() })
    })
    return reply
  }
}

// Subscriptions a reaper ends per event-loop turn: a few milliseconds of work.
const REAP_STEP = 4096

/**
 * Ends the subscriptions of closed sessions, a bounded number per event-loop turn, oldest
 * session first. Internal. A gateway whose connections all drop closes every session in one
 * turn: ending their subscriptions there (ten thousand sessions of a hundred, measured: 0.9 s)
 * would hold up every request and timer meanwhile. A closed session sends nothing, so its
 * subscriptions only wait here to let go of the fan-out's memory.
 */
export class Reaper {
  readonly #step: number
  // Closed sessions whose subscriptions have not all ended; those before #head are done.
  #queue: Array<SessionState | undefined> = []
  #head = 0
  #scheduled = false

  /** `step`: most subscriptions ended per turn, >= 1. */
  constructor (step: number) {
    this.#step = step
  }

  /** Sessions with subscriptions left to end. */
  get size (): number {
    return this.#queue.length - this.#head
  }

  /** Ends the subscriptions of a closed session over the next turns. */
  add (state: SessionState): void {
    if (state.subscriptions.size === 0) return
    this.#queue.push(state)
    if (this.#scheduled) return
    this.#scheduled = true
    setImmediate(this.#reap)
  }

  readonly #reap = (): void => {
    let budget = this.#step
    const queue = this.#queue
    while (budget > 0 && this.#head < queue.length) {
      const state = queue[this.#head] as SessionState
      const { subscriptions } = state
      for (const subscription of subscriptions.values()) {
        subscription.end()
        subscriptions.delete(subscription.id)
        if (--budget === 0) break
      }
      if (subscriptions.size > 0) break
      queue[this.#head++] = undefined
    }
    if (this.#head < queue.length) {
      setImmediate(this.#reap)
      return
    }
    // Drained: a fresh array, so a long queue's backing store goes too.
    this.#queue = []
    this.#head = 0
    this.#scheduled = false
  }
}

/** The reaper of every broker's sessions: the budget per turn is the process's, not a broker's. */
export const reaper = new Reaper(REAP_STEP)

/**
 * One client connection's view of the broker: what a gateway creates per
 * WebSocket. Serves every action, including `authenticate` and the
 * subscription actions, and delivers pushes through the `push` function given
 * to `broker.session(push)`.
 *
 * Replies come in the order requests were made, and a request sees the
 * session's own earlier writes (an `update` then a `get` reads the update).
 * Pushes of a subscription start only after its subscribe reply has been
 * delivered to whoever awaited `handle()`; send each reply as soon as the
 * promise resolves, before awaiting anything else, and the order on the wire
 * is reply first.
 */
export class Session {
  readonly #state: SessionState

  /** @internal Use `broker.session(push)`. */
  constructor (state: SessionState) {
    this.#state = state
  }

  /**
   * Handles one request (a parsed object or a raw JSON frame) and resolves to
   * its reply; never throws or rejects. `token`, when given, is used for this
   * message instead of the session's own (set by `authenticate`). Typed per action as
   * `broker.handle()` is.
   */
  handle<M extends Message> (message: M, token?: unknown): Promise<ReplyTo<M['action']>>
  handle<const T> (message: T & UncheckedMessage<T>, token?: unknown): Promise<Reply>
  handle (message: unknown, token?: unknown): Promise<Reply> {
    return this.#state.handle(message, token)
  }

  /** Whether `close()` was called (or the broker closed). */
  get closed (): boolean {
    return this.#state.closed
  }

  /** Drops every subscription of the session; later pushes are dropped and requests refused. Idempotent. */
  close (): void {
    this.#state.close()
  }
}
