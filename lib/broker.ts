import { z } from 'zod'
import { ACTIONS, ORDERED, WRITES, type Action, type Request, type Result } from './actions/index.js'
import { BrokerError, isBrokerError, ProtocolError } from './errors.js'
import { Core, type BrokerEvents, type Message } from './core.js'
import type { RecoveryReport } from './expiry.js'
import { checkStreamOptions, CommandStream, type CommandStreamOptions } from './command-stream.js'
import { invoke, type InvokeOptions, type InvokeRequest } from './invoke.js'
import { WriteOp } from './group-commit.js'
import { INTERNAL_ERROR, MALFORMED_JSON, unknownAction, validationFailed } from './messages.js'
import { resolveOptions, type BrokerOptions } from './options.js'
import type { Command, Message as AnyMessage, Reply, ReplyTo, UncheckedMessage } from './schema.js'
import { Session, SessionState, type PushFunction, type SessionHost } from './session.js'
import type { Store } from './store/store.js'
import { describeAction, echoable, failure, frameFailure, success } from './wire.js'

export type { BrokerEvents } from './core.js'
export type { RecoveryReport } from './expiry.js'

/** What `broker.stats()` answers; see there. */
export interface BrokerStats {
  sessions: number
  subscriptions: number
  queuedWrites: number
  timers: number
  expiryLag: number
  pendingCommands: number | undefined
  commits: { count: number, writes: number, lastBatch: number, largestBatch: number, lastMs: number, totalMs: number }
  storeBytes: number | undefined
}

/** Which commands an in-process subscription receives; an absent field matches everything. */
export interface SubscribeFilter {
  /** One device's commands; `networkIds` and `deviceTypeIds` are then not filters. */
  deviceId?: string
  /** Commands of devices in these networks (where the device is now). */
  networkIds?: readonly number[]
  /** Commands of devices of these types (as the device is now). */
  deviceTypeIds?: readonly number[]
  names?: readonly string[]
  /**
   * Receive commands after each `command/update` (and, with `status: "expired"`, when one
   * expires without an update) instead of on insert. Default false.
   */
  returnUpdatedCommands?: boolean
}

const subscribeFilterSchema = z.strictObject({
  deviceId: z.string().optional(),
  networkIds: z.array(z.int()).optional(),
  deviceTypeIds: z.array(z.int()).optional(),
  names: z.array(z.string()).optional(),
  returnUpdatedCommands: z.boolean().optional()
})

/**
 * Creates a broker on a store. `options` needs `secret` (DeviceHive's
 * `JWT_SECRET`) or `key`; see {@link BrokerOptions} for the rest. Throws
 * `TypeError`/`RangeError` for bad options or a store that lacks a method.
 *
 * Start-up recovery (expiring what fell due while the broker was down, and
 * re-arming the rest) runs in the background; `await broker.ready` for it.
 *
 * @example
 * const broker = createBroker(sqliteStore('hub.db'), { secret: process.env.JWT_SECRET })
 * const reply = await broker.handle({ action: 'command/insert', requestId: 1, deviceId: 'lamp-1',
 *   command: { command: 'on', lifetime: 30 } }, token)
 */
export function createBroker (store: Store, options: BrokerOptions): Broker {
  return new Broker(store, options)
}

/**
 * An embeddable DeviceHive command broker. Use {@link createBroker}.
 *
 * `handle()` serves the stateless actions; `session()` gives a gateway one
 * stateful session per connection; `subscribe()` and `on()` are for
 * in-process consumers. `close()` releases everything.
 *
 * A request goes from `handle()` through its action (`lib/actions/`) to the
 * store, the write queue (`group-commit.ts`), the timer wheel (`expiry.ts`)
 * and the fan-out (`fan-out.ts`) that delivers it to subscribers.
 */
export class Broker {
  /**
   * Resolves once start-up recovery is done: commands that fell due while the
   * broker was down are expired (and reported on `expired`), the rest re-armed.
   * Requests are served meanwhile; an expired command is never visible.
   */
  readonly ready: Promise<RecoveryReport>

  readonly #core: Core
  readonly #host: SessionHost
  #closing: Promise<void> | undefined

  /** @internal Use {@link createBroker}. */
  constructor (store: Store, options: BrokerOptions) {
    const core = new Core(store, resolveOptions(options))
    this.#core = core
    this.ready = core.expiry.ready
    this.#host = {
      dispatch: (state, message, token, afterReply) => this.#dispatch(state, message, token, afterReply),
      pushFailed: (err) => { core.fail('ERR_PUSH', 'a session push failed', err) },
      closed: (state) => { core.sessions.delete(state) }
    }
  }

  /**
   * Handles one stateless request (a parsed object or a raw JSON string) with
   * `token`, and resolves to the reply envelope of spec §1. Never throws and
   * never rejects. Subscription actions need a session and are answered 400.
   * A write's reply comes only once it is committed to the store.
   *
   * Typed per action: a `Message` resolves to its action's {@link ReplyTo} (narrow on
   * `status === 'success'` to read e.g. `reply.command`), and an object literal with an action
   * no one serves fails to compile. A JSON string, `unknown` or an object whose `action` is a
   * plain `string` resolves to a {@link Reply}.
   */
  handle<M extends AnyMessage> (message: M, token?: unknown): Promise<ReplyTo<M['action']>>
  handle<const T> (message: T & UncheckedMessage<T>, token?: unknown): Promise<Reply>
  handle (message: unknown, token?: unknown): Promise<Reply> {
    return this.#dispatch(undefined, message, token, undefined)
  }

  /**
   * Opens a session for one client connection; `push` receives its
   * subscription pushes. Throws `BrokerError` `ERR_CLOSED` after `close()`.
   */
  session (push: PushFunction): Session {
    if (this.#core.closed) throw new BrokerError('ERR_CLOSED', 'broker.session: the broker is closed')
    if (typeof push !== 'function') throw new TypeError(`broker.session: push must be a function, received ${typeof push}`)
    const state = new SessionState(this.#host, push)
    this.#core.sessions.add(state)
    return new Session(state)
  }

  /**
   * Calls `handler` with every command inserted from now on that matches
   * `filter` (or, with `returnUpdatedCommands`, every update of one). The
   * command is deeply frozen; a handler that throws is reported on `error`
   * and does not affect the insert or other handlers. Returns the function
   * that unsubscribes. Throws `TypeError` for a bad filter or handler.
   */
  subscribe (filter: SubscribeFilter, handler: (command: Command) => void): () => void {
    if (this.#core.closed) throw new BrokerError('ERR_CLOSED', 'broker.subscribe: the broker is closed')
    const parsed = subscribeFilterSchema.safeParse(filter)
    if (!parsed.success) {
      const issue = parsed.error.issues[0] as z.core.$ZodIssue
      throw new TypeError(`broker.subscribe: filter${issue.path.map((key) => `.${String(key)}`).join('')}: ${issue.message}`)
    }
    if (typeof handler !== 'function') throw new TypeError(`broker.subscribe: handler must be a function, received ${typeof handler}`)
    const { returnUpdatedCommands = false, deviceId, networkIds, deviceTypeIds, names } = parsed.data
    // Empty lists filter nothing, as absent ones do.
    const some = <T>(list: T[] | undefined): T[] | undefined => list === undefined || list.length === 0 ? undefined : list
    return this.#core.fanOut.add({
      filter: { deviceId, networkIds: some(networkIds), deviceTypeIds: some(deviceTypeIds), names: some(names) },
      updates: returnUpdatedCommands,
      deliver: (event) => { handler(event.command) }
    })
  }

  /**
   * Sends a command and waits for its device's answer: inserts `request.command` for
   * `request.deviceId` as `command/insert` would (with `token`, which must also allow reading
   * commands, permission 5), then resolves with the command (twelve keys, deeply frozen) as it
   * stands after its first `command/update`, from whichever process the device is on. Rejects
   * with a `BrokerError`: `ERR_REFUSED` (the insert's error reply in `reply`), `ERR_EXPIRED`
   * (its lifetime ran out first), `ERR_TIMEOUT` (`options.timeout` ms passed first, on the
   * broker's clock), `ERR_ABORTED` (`options.signal`), `ERR_CLOSED`. A timed-out or aborted
   * invocation leaves the command to its lifetime: give it one, or it waits in the store for
   * ever (or for the broker's `retention`). Throws `TypeError`/`RangeError` for a bad request
   * or options.
   */
  invoke (request: InvokeRequest, token: unknown, options?: InvokeOptions): Promise<Command> {
    return invoke(this.#core, (message, as) => this.handle(message, as), request, token, options)
  }

  /**
   * The commands that match `filter` (as {@link Broker.subscribe} takes it), from now on, as an
   * async iterable: `for await (const command of broker.commands({ deviceId }))`. It listens
   * until it ends: `break`, `return()`, `await using`, `options.signal`, or `close()`. A
   * consumer slower than the commands has `options.bufferSize` (default 1000) of them held for
   * it; past that, by default, the stream ends with `ERR_OVERFLOW` once it has handed out what
   * it held (`overflow: 'drop-oldest'` drops the oldest instead and counts them in `dropped`).
   * Throws `TypeError`/`RangeError` for a bad filter or options, `ERR_CLOSED` once closed.
   */
  commands (filter: SubscribeFilter = {}, options: CommandStreamOptions = {}): CommandStream {
    const core = this.#core
    if (core.closed) throw new BrokerError('ERR_CLOSED', 'broker.commands: the broker is closed')
    const checked = checkStreamOptions(options)
    const close = (): void => { stream.close() }
    const stream: CommandStream = new CommandStream((deliver) => this.subscribe(filter, deliver), checked, () => { core.closers.delete(close) })
    if (!stream.ended) core.closers.add(close)
    return stream
  }

  /**
   * What the broker holds and has done, for dashboards and alerts: open sessions, live
   * subscriptions, writes queued for the next commit, commands armed in the timer wheel and
   * how late its last firing was (`expiryLag`, ms: a tick at most while the loop keeps up),
   * pending commands of the devices counted so far (on a shared store, which counts its own,
   * undefined), the group commits so far (count, writes, last and largest batch, last and
   * total ms), and the store's size in bytes if it can tell (SQLite: the file and its WAL).
   */
  async stats (): Promise<BrokerStats> {
    const core = this.#core
    const size = core.store.size?.()
    return {
      sessions: core.sessions.size,
      subscriptions: core.fanOut.size,
      queuedWrites: core.writes.size,
      timers: core.expiry.timers,
      expiryLag: core.expiry.lag,
      pendingCommands: core.shared === undefined ? core.pending.total : undefined,
      commits: { ...core.commits },
      storeBytes: size instanceof Promise ? await size : size
    }
  }

  /** Adds a listener for `expired` or `error`. A listener that throws is reported on `error`. */
  on<K extends keyof BrokerEvents>(type: K, listener: (value: BrokerEvents[K]) => void): void {
    this.#core.events.on(type, listener as (value: unknown) => void)
  }

  /** Removes a listener added with `on`. */
  off<K extends keyof BrokerEvents>(type: K, listener: (value: BrokerEvents[K]) => void): void {
    this.#core.events.off(type, listener as (value: unknown) => void)
  }

  /** Whether `close()` has been called. */
  get closed (): boolean {
    return this.#core.closed
  }

  /**
   * Commits writes already accepted (their requests then resolve), stops the
   * expiry timer and recovery, closes every session and the store. Requests
   * after this are answered 503 `Broker is closed`. Idempotent.
   */
  close (): Promise<void> {
    this.#closing ??= this.#shutdown()
    return this.#closing
  }

  async #shutdown (): Promise<void> {
    const core = this.#core
    // Closed first: whatever the last flush makes a subscriber do is refused with 503.
    core.closed = true
    core.expiry.close()
    // Writes already accepted commit, and their subscribers hear of them; a store that
    // answers later is awaited.
    const flushed = core.writes.flush()
    if (flushed instanceof Promise) await flushed
    core.stopListening()
    for (const state of core.sessions) state.close()
    for (const close of [...core.closers]) close()
    try {
      await core.store.close()
    } catch (err) {
      core.fail('ERR_STORE', 'closing the store failed', err)
    }
  }

  // Serves a session's request in the session's order: a write after the session's earlier
  // writes have queued, anything else after they have committed, so it sees them. The common
  // case, a write whose turn has come and that its action serves at once, is served here
  // without a promise of its own (one async call and its await less per write: ~0.5 KB).
  #inOrder (session: SessionState, name: string, request: Request, serve: Action): Result | Promise<Result> {
    if (!ORDERED.has(name)) return this.#afterWrites(session, request, serve)
    const turn = session.beginWrite()
    // A device write sees the session's earlier command writes committed.
    if (turn !== undefined || (!WRITES.has(name) && session.pendingWrite !== undefined)) return this.#writeLater(session, name, request, serve, turn)
    let result
    try {
      result = serve(request)
    } catch (err) {
      session.endWrite()
      throw err
    }
    if (result instanceof Promise) return this.#written(session, result)
    // Set before the turn ends: a read that waited for the turn then waits for the commit.
    if (result instanceof WriteOp) session.pendingWrite = result.done
    session.endWrite()
    return result
  }

  // A request that is not a write: once the session's earlier writes have committed.
  async #afterWrites (session: SessionState, request: Request, serve: Action): Promise<Result> {
    const queued = session.afterWrites()
    if (queued !== undefined) await queued
    if (session.pendingWrite !== undefined) await session.pendingWrite
    this.#core.checkOpen(session)
    const result = serve(request)
    return result instanceof Promise ? await result : result
  }

  // A write that waits for its turn, or (a device write) for the session's earlier commits.
  async #writeLater (session: SessionState, name: string, request: Request, serve: Action, turn: Promise<void> | undefined): Promise<Result> {
    const core = this.#core
    try {
      if (turn !== undefined) {
        await turn
        core.checkOpen(session)
      }
      if (!WRITES.has(name) && session.pendingWrite !== undefined) {
        await session.pendingWrite
        core.checkOpen(session)
      }
      let result = serve(request)
      if (result instanceof Promise) result = await result
      if (result instanceof WriteOp) session.pendingWrite = result.done
      return result
    } finally {
      session.endWrite()
    }
  }

  // A write whose action answered later: its turn ends once it has.
  async #written (session: SessionState, serving: Promise<Result>): Promise<Result> {
    try {
      const result = await serving
      if (result instanceof WriteOp) session.pendingWrite = result.done
      return result
    } finally {
      session.endWrite()
    }
  }

  async #dispatch (session: SessionState | undefined, input: unknown, token: unknown, afterReply: Array<() => void> | undefined): Promise<Reply> {
    const core = this.#core
    let action: unknown = null
    let requestId: unknown = null
    try {
      let message = input
      if (typeof input === 'string') {
        const limit = core.options.maxFrameBytes
        if (input.length > limit || (input.length * 3 > limit && Buffer.byteLength(input) > limit)) {
          return frameFailure(400, validationFailed(`message must be at most ${limit} bytes`))
        }
        try {
          message = JSON.parse(input)
        } catch {
          return frameFailure(400, MALFORMED_JSON)
        }
      }
      if (message === null || typeof message !== 'object' || Array.isArray(message)) {
        return frameFailure(400, MALFORMED_JSON)
      }
      const msg = message as Message
      // A reply echoes action and requestId, so each must be something JSON can write back.
      action = echoable(msg.action) ? msg.action ?? null : null
      if (!echoable(msg.requestId)) return failure(action, null, 400, MALFORMED_JSON)
      requestId = msg.requestId ?? null
      core.checkOpen(session)
      const name = typeof action === 'string' ? action : undefined
      const serve = name === undefined ? undefined : ACTIONS.get(name)
      if (serve === undefined) throw new ProtocolError(400, unknownAction(describeAction(msg.action)))
      const request: Request = { core, session, msg, token, afterReply }
      let result = session === undefined ? serve(request) : this.#inOrder(session, name as string, request, serve)
      if (result instanceof Promise) result = await result
      if (result instanceof WriteOp) {
        const done = result.done as Promise<void>
        await done
        if (session?.pendingWrite === done) session.pendingWrite = undefined
        return success(action, requestId, result.payload())
      }
      return success(action, requestId, result)
    } catch (err) {
      if (err instanceof ProtocolError) return failure(action, requestId, err.code, err.error)
      if (isBrokerError(err, 'ERR_STORE')) core.fail('ERR_STORE', 'a request failed in the store; answered 500', err)
      else core.fail('ERR_INTERNAL', 'handling a request failed', err)
      return failure(action, requestId, 500, INTERNAL_ERROR)
    }
  }
}
