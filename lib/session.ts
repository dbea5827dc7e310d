import type { Push, Reply } from './schema.js'

/**
 * Receives a session's subscription pushes. Called synchronously; a returned
 * promise is not awaited (its rejection is reported on the broker's `error`
 * event), and a throw is reported the same way, so a slow or failing push
 * never holds up other sessions.
 */
export type PushFunction = (message: Push) => unknown

/** What a session needs from its broker. Internal. */
export interface SessionHost {
  open: (state: SessionState) => void
  dispatch: (state: SessionState, message: unknown, token: unknown) => Promise<Reply>
  closeSession: (state: SessionState) => void
}

/** A session's state, owned and changed by the broker. Internal. */
export interface SessionState {
  /** The token set by `authenticate`, used when a message comes without one. */
  token: unknown
  /** Subscription id to its remover. */
  readonly subscriptions: Map<number, SessionSubscription>
  readonly push: PushFunction
  closed: boolean
  /**
   * Releases of the pushes held by subscriptions made in the message being handled: run once
   * its reply has reached the caller.
   */
  readonly unreleased: Array<() => void>
}

/** A subscription as its session keeps it. Internal. */
export interface SessionSubscription {
  readonly id: number
  readonly deviceId: string | null
  readonly networkIds: readonly number[] | null
  readonly deviceTypeIds: readonly number[] | null
  readonly names: readonly string[] | null
  readonly timestamp: string | null
  readonly remove: () => void
}

/**
 * One client connection's view of the broker: what a gateway creates per
 * WebSocket. Serves every action, including `authenticate` and the
 * subscription actions, and delivers pushes through the `push` function given
 * to `broker.session(push)`.
 *
 * Pushes of a subscription start only after its subscribe reply has been
 * delivered to whoever awaited `handle()`; send each reply as soon as the
 * promise resolves, before awaiting anything else, and the order on the wire
 * is reply first.
 */
export class Session {
  readonly #host: SessionHost
  readonly #state: SessionState

  /** @internal Use `broker.session(push)`. */
  constructor (host: SessionHost, push: PushFunction) {
    this.#host = host
    this.#state = { token: undefined, subscriptions: new Map(), push, closed: false, unreleased: [] }
    host.open(this.#state)
  }

  /**
   * Handles one request (a parsed object or a raw JSON frame) and resolves to
   * its reply; never throws or rejects. `token`, when given, is used for this
   * message instead of the session's own (set by `authenticate`).
   */
  handle (message: unknown, token?: unknown): Promise<Reply> {
    const state = this.#state
    const reply = this.#host.dispatch(state, message, token)
    // A new subscription holds its pushes until the reply is out. The caller's continuation
    // and this reaction are queued together when `reply` settles, this one first; the
    // microtask it queues then runs after the caller's, which has sent the reply.
    if (state.unreleased.length > 0) {
      const releases = state.unreleased.splice(0)
      void reply.then(() => { queueMicrotask(() => { for (const release of releases) release() }) })
    }
    return reply
  }

  /** Whether `close()` was called (or the broker closed). */
  get closed (): boolean {
    return this.#state.closed
  }

  /** Drops every subscription of the session; later pushes are dropped and requests refused. Idempotent. */
  close (): void {
    this.#host.closeSession(this.#state)
  }
}
