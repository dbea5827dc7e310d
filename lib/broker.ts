import mittModule, { type Emitter } from 'mitt'
import { z } from 'zod'
import { Action, allows, Authenticator, canSee, type ActionId, type Grant } from './auth.js'
import type { Clock } from './clock.js'
import { BrokerError, describeCause, isBrokerError, ProtocolError, type BrokerErrorCode } from './errors.js'
import { CommandEvent, FanOut, type Subscriber } from './fan-out.js'
import { guardStore } from './guarded-store.js'
import { checkFilterList, checkText, serialiseJson } from './limits.js'
import { deferred, InsertOp, UpdateOp, WriteOp, WriteQueue, type Payload } from './group-commit.js'
import {
  ACCESS_DENIED, BROKER_CLOSED, COMMAND_ID_REQUIRED, COMMAND_REQUIRED, DEVICE_ID_INVALID, DEVICE_ID_REQUIRED,
  DEVICE_REQUIRED, INTERNAL_ERROR, MALFORMED_JSON, SESSION_REQUIRED,
  commandNotFound, deviceNotFound, subscriptionNotFound, unknownAction, validationFailed
} from './messages.js'
import { resolveOptions, type BrokerOptions, type ResolvedOptions } from './options.js'
import {
  authenticateSchema, commandUnsubscribeSchema, deviceBody, deviceError, insertBody, insertError, listFilters, malformed,
  parse, subscribeFilters, subscriptionListSchema, updateBody, type Command, type Push, type Reply
} from './schema.js'
import { Session, type PushFunction, type SessionHost, type SessionState } from './session.js'
import { normalizeFilter, type CommandPatch, type CommandRecord, type DeviceRecord, type Store } from './store.js'
import { formatTimestamp } from './timestamp.js'
import { TimerWheel } from './timer-wheel.js'
import { describeAction, echoable, failure, frameFailure, success, toCommand, toDevice } from './wire.js'

// mitt's types describe a CommonJS module; Node loads its ESM build, whose default export is the factory.
const mitt = mittModule as unknown as typeof mittModule.default

/** What `broker.ready` resolves to once start-up recovery is done. */
export interface RecoveryReport {
  /** Commands that fell due while the broker was down, now expired and gone. */
  expired: number
  /** Commands still pending, armed again for expiry. */
  rearmed: number
}

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

/** Which commands an in-process subscription receives; an absent field matches everything. */
export interface SubscribeFilter {
  deviceId?: string
  networkIds?: readonly number[]
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

const DEVICE_ID = /^[a-zA-Z0-9-]{1,48}$/
const SORT_FIELDS: ReadonlyMap<string, 'timestamp' | 'command' | 'status'> = new Map([
  ['timestamp', 'timestamp'], ['command', 'command'], ['status', 'status']
])
const MAX_TAKE = 1000
const MAX_HISTORY = 1000
// After a store failure, expiry and recovery try again this much later.
const RETRY_MS = 1000

type Message = Record<string, unknown>

// Per device: pending commands (stored, never updated, not expired), counted by the store at
// `since` and kept up to date since; commands that had expired by `since` were never counted.
interface PendingCount {
  count: number
  readonly since: number
}

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
 */
export class Broker {
  /**
   * Resolves once start-up recovery is done: commands that fell due while the
   * broker was down are expired (and reported on `expired`), the rest re-armed.
   * Requests are served meanwhile; an expired command is never visible.
   */
  readonly ready: Promise<RecoveryReport>

  readonly #options: ResolvedOptions
  readonly #store: Store
  readonly #clock: Clock
  readonly #auth: Authenticator
  readonly #wheel: TimerWheel
  readonly #fanOut: FanOut
  readonly #writes: WriteQueue
  readonly #events: Emitter<Record<keyof BrokerEvents, unknown>> = mitt()
  readonly #pending = new Map<string, PendingCount>()
  readonly #sessions = new Set<SessionState>()
  // The error of each slice of writes whose transaction failed, until it is settled.
  readonly #commitErrors = new WeakMap<object, unknown>()
  readonly #host: SessionHost
  #nextSubscriptionId = 1
  #closed = false
  #closing: Promise<void> | undefined
  // Start-up recovery: pages (recoveredTo, recoverUpTo] of ids, then resolves `ready`.
  #recoveredTo = 0
  readonly #recoverUpTo: number
  readonly #report: RecoveryReport = { expired: 0, rearmed: 0 }
  readonly #resolveReady: (report: RecoveryReport) => void
  #recoveryImmediate: NodeJS.Immediate | undefined
  #recoveryTimer: unknown

  /** @internal Use {@link createBroker}. */
  constructor (store: Store, options: BrokerOptions) {
    this.#options = resolveOptions(options)
    this.#store = guardStore(store)
    this.#clock = this.#options.clock
    this.#auth = new Authenticator(this.#options.key, this.#options.tokenCacheSize)
    this.#fanOut = new FanOut((err) => this.#fail('ERR_SUBSCRIBER', 'a subscriber threw', err))
    this.#writes = new WriteQueue(this.#options.writeBatch, {
      commit: (ops) => { this.#commit(ops) },
      settle: (ops) => { this.#settle(ops) }
    })
    this.#recoverUpTo = this.#store.lastCommandId()
    this.#wheel = new TimerWheel({
      clock: this.#clock,
      tick: this.#options.tick,
      batch: this.#options.expiryBatch,
      onExpire: (ids) => { this.#expire(ids) }
    })
    this.#host = {
      open: (state) => { this.#sessions.add(state) },
      dispatch: (state, message, token) => this.#dispatch(state, message, token),
      closeSession: (state) => { this.#closeSession(state) }
    }
    const ready = deferred<RecoveryReport>()
    this.ready = ready.promise
    this.#resolveReady = ready.resolve
    // Recovery waits a turn, so listeners attached right after createBroker() see its events.
    this.#recoveryImmediate = setImmediate(this.#recover)
  }

  /**
   * Handles one stateless request (a parsed object or a raw JSON string) with
   * `token`, and resolves to the reply envelope of spec §1. Never throws and
   * never rejects. Subscription actions need a session and are answered 400.
   * A write's reply comes only once it is committed to the store.
   */
  handle (message: unknown, token?: unknown): Promise<Reply> {
    return this.#dispatch(undefined, message, token)
  }

  /**
   * Opens a session for one client connection; `push` receives its
   * subscription pushes. Throws `BrokerError` `ERR_CLOSED` after `close()`.
   */
  session (push: PushFunction): Session {
    if (this.#closed) throw new BrokerError('ERR_CLOSED', 'broker.session: the broker is closed')
    if (typeof push !== 'function') throw new TypeError(`broker.session: push must be a function, received ${typeof push}`)
    return new Session(this.#host, push)
  }

  /**
   * Calls `handler` with every command inserted from now on that matches
   * `filter` (or, with `returnUpdatedCommands`, every update of one). The
   * command is deeply frozen; a handler that throws is reported on `error`
   * and does not affect the insert or other handlers. Returns the function
   * that unsubscribes. Throws `TypeError` for a bad filter or handler.
   */
  subscribe (filter: SubscribeFilter, handler: (command: Command) => void): () => void {
    if (this.#closed) throw new BrokerError('ERR_CLOSED', 'broker.subscribe: the broker is closed')
    const parsed = subscribeFilterSchema.safeParse(filter)
    if (!parsed.success) {
      const issue = parsed.error.issues[0] as z.core.$ZodIssue
      throw new TypeError(`broker.subscribe: filter${issue.path.map((key) => `.${String(key)}`).join('')}: ${issue.message}`)
    }
    if (typeof handler !== 'function') throw new TypeError(`broker.subscribe: handler must be a function, received ${typeof handler}`)
    const { returnUpdatedCommands = false, ...rest } = parsed.data
    return this.#fanOut.add({
      filter: normalizeFilter(rest),
      updates: returnUpdatedCommands,
      deliver: (event) => { handler(event.command) }
    })
  }

  /** Adds a listener for `expired` or `error`. A listener that throws is reported on `error`. */
  on<K extends keyof BrokerEvents>(type: K, listener: (value: BrokerEvents[K]) => void): void {
    this.#events.on(type, listener as (value: unknown) => void)
  }

  /** Removes a listener added with `on`. */
  off<K extends keyof BrokerEvents>(type: K, listener: (value: BrokerEvents[K]) => void): void {
    this.#events.off(type, listener as (value: unknown) => void)
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
    // Closed first: whatever the last flush makes a subscriber do is refused with 503.
    this.#closed = true
    this.#writes.flush()
    this.#wheel.close()
    if (this.#recoveryImmediate !== undefined) clearImmediate(this.#recoveryImmediate)
    if (this.#recoveryTimer !== undefined) this.#clock.clearTimeout(this.#recoveryTimer)
    for (const state of this.#sessions) this.#closeSession(state)
    this.#resolveReady(this.#report)
    try {
      await this.#store.close()
    } catch (err) {
      this.#fail('ERR_STORE', 'closing the store failed', err)
    }
  }

  // --- requests -------------------------------------------------------------------------

  async #dispatch (session: SessionState | undefined, input: unknown, token: unknown): Promise<Reply> {
    let action: unknown = null
    let requestId: unknown = null
    try {
      let message = input
      if (typeof input === 'string') {
        const limit = this.#options.maxFrameBytes
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
      if (this.#closed || session?.closed === true) return failure(action, requestId, 503, BROKER_CLOSED)
      const routed = this.#route(session, msg, token)
      if (routed instanceof WriteOp) {
        await routed.done
        return success(action, requestId, routed.payload())
      }
      return success(action, requestId, routed)
    } catch (err) {
      if (err instanceof ProtocolError) return failure(action, requestId, err.code, err.error)
      if (isBrokerError(err, 'ERR_STORE')) this.#fail('ERR_STORE', 'a request failed in the store; answered 500', err)
      else this.#fail('ERR_INTERNAL', 'handling a request failed', err)
      return failure(action, requestId, 500, INTERNAL_ERROR)
    }
  }

  #route (session: SessionState | undefined, msg: Message, token: unknown): Payload | WriteOp {
    const action = msg.action
    switch (action) {
      case 'authenticate': return this.#authenticate(session, msg)
      case 'command/insert': return this.#insert(this.#grant(session, token), msg)
      case 'command/update': return this.#update(this.#grant(session, token), msg)
      case 'command/get': return this.#get(this.#grant(session, token), msg)
      case 'command/list': return this.#list(this.#grant(session, token), msg)
      case 'command/subscribe': return this.#subscribe(this.#sessionOf(session), token, msg)
      case 'command/unsubscribe': return this.#unsubscribe(this.#sessionOf(session), token, msg)
      case 'subscription/list': return this.#subscriptions(this.#sessionOf(session), token, msg)
      case 'device/save': return this.#saveDevice(this.#grant(session, token), msg)
      case 'device/get': return this.#getDevice(this.#grant(session, token), msg)
      case 'device/delete': return this.#deleteDevice(this.#grant(session, token), msg)
      default: throw new ProtocolError(400, unknownAction(describeAction(action)))
    }
  }

  #grant (session: SessionState | undefined, token: unknown): Grant {
    return this.#auth.grant(token === undefined ? session?.token : token, this.#clock.now())
  }

  #sessionOf (session: SessionState | undefined): SessionState {
    if (session === undefined) throw new ProtocolError(400, SESSION_REQUIRED)
    return session
  }

  // The device checks of spec §3, in its order: action (403), then deviceId (400 if missing,
  // unless the token reaches no device at all), then the device itself (403, or 404 for a
  // token that may see every device).
  #device (grant: Grant, action: ActionId, msg: Message): DeviceRecord {
    const deviceId = this.#deviceId(grant, action, msg)
    const device = this.#store.getDevice(deviceId)
    if (device === undefined) {
      if (grant.allDevices) throw new ProtocolError(404, deviceNotFound(deviceId))
      throw new ProtocolError(403, ACCESS_DENIED)
    }
    if (!canSee(grant, device.networkId, device.deviceTypeId)) throw new ProtocolError(403, ACCESS_DENIED)
    return device
  }

  #deviceId (grant: Grant, action: ActionId, msg: Message): string {
    if (!allows(grant, action)) throw new ProtocolError(403, ACCESS_DENIED)
    const { deviceId } = msg
    if (deviceId === undefined || deviceId === null || deviceId === '') {
      throw grant.networks === null ? new ProtocolError(403, ACCESS_DENIED) : new ProtocolError(400, DEVICE_ID_REQUIRED)
    }
    if (typeof deviceId !== 'string') throw new ProtocolError(400, MALFORMED_JSON)
    return deviceId
  }

  #authenticate (session: SessionState | undefined, msg: Message): Payload {
    const { token } = parse(authenticateSchema, msg, malformed)
    const now = this.#clock.now()
    this.#auth.grant(token, now)
    if (session !== undefined) session.token = token
    return undefined
  }

  #insert (grant: Grant, msg: Message): InsertOp {
    const device = this.#device(grant, Action.CreateDeviceCommand, msg)
    if (msg.command === undefined || msg.command === null) throw new ProtocolError(400, COMMAND_REQUIRED)
    const { maxLifetime, maxPendingPerDevice } = this.#options
    const body = parse(insertBody, msg.command, (issues) => insertError(issues, maxLifetime))
    const now = this.#clock.now()
    const lifetime = body.lifetime ?? null
    if (lifetime !== null && lifetime > maxLifetime) throw insertError([], maxLifetime)
    const parameters = serialiseJson('parameters', body.parameters, this.#options)
    const result = serialiseJson('result', body.result, this.#options)
    let pending = this.#pendingOf(device.id, now)
    if (pending.count >= maxPendingPerDevice) {
      // The count may still hold commands whose time has passed but whose expiry has not run
      // yet (a backlog, a coarse tick): commit what is queued and count again in the store.
      this.#writes.flush()
      this.#pending.delete(device.id)
      pending = this.#pendingOf(device.id, now)
    }
    if (pending.count >= maxPendingPerDevice) {
      throw new ProtocolError(400, validationFailed(`device ${device.id} has ${pending.count} pending commands, the limit is ${maxPendingPerDevice}`))
    }
    const timestamp = body.timestamp ?? now
    const op = new InsertOp({
      command: body.command,
        timestamp,
        lastUpdated: timestamp,
        userId: grant.userId,
        deviceId: device.id,
        networkId: device.networkId,
        deviceTypeId: device.deviceTypeId,
        parameters,
        lifetime,
        status: body.status === undefined || body.status === null ? null : checkText('status', body.status, this.#options),
        result,
      expiresAt: lifetime === null ? null : now + lifetime * 1000,
      updated: false,
      id: 0
    })
    pending.count++
    return this.#writes.push(op)
  }

  #update (grant: Grant, msg: Message): UpdateOp {
    if (!allows(grant, Action.UpdateDeviceCommand)) throw new ProtocolError(403, ACCESS_DENIED)
    const commandId = this.#commandId(msg)
    const device = this.#device(grant, Action.UpdateDeviceCommand, msg)
    if (msg.command === undefined || msg.command === null) throw new ProtocolError(400, COMMAND_REQUIRED)
    const body = parse(updateBody, msg.command, malformed)
    const patch: CommandPatch = {}
    if (body.status !== undefined) patch.status = body.status === null ? null : checkText('status', body.status, this.#options)
    if (body.result !== undefined) patch.result = serialiseJson('result', body.result, this.#options)
    return this.#writes.push(new UpdateOp(commandId, device.id, patch, this.#clock.now()))
  }

  #get (grant: Grant, msg: Message): Payload {
    const device = this.#device(grant, Action.GetDeviceCommand, msg)
    const commandId = this.#commandId(msg)
    const record = this.#store.getCommand(commandId, this.#clock.now())
    if (record === undefined || record.deviceId !== device.id) throw new ProtocolError(404, commandNotFound(commandId))
    return { command: toCommand(record) }
  }

  #commandId (msg: Message): number {
    const { commandId } = msg
    if (commandId === undefined || commandId === null) throw new ProtocolError(400, COMMAND_ID_REQUIRED)
    if (!Number.isSafeInteger(commandId)) throw new ProtocolError(400, MALFORMED_JSON)
    return commandId as number
  }

  #list (grant: Grant, msg: Message): Payload {
    const device = this.#device(grant, Action.GetDeviceCommand, msg)
    const query = parse(listFilters, msg, malformed)
    const sortField = SORT_FIELDS.get((query.sortField ?? 'timestamp').toLowerCase())
    if (sortField === undefined) throw new ProtocolError(400, validationFailed('sortField must be timestamp, command or status'))
    const sortOrder = (query.sortOrder ?? 'ASC').toUpperCase()
    if (sortOrder !== 'ASC' && sortOrder !== 'DESC') throw new ProtocolError(400, validationFailed('sortOrder must be ASC or DESC'))
    const take = query.take ?? 20
    const skip = query.skip ?? 0
    if (take < 0 || take > MAX_TAKE) throw new ProtocolError(400, validationFailed(`take must be from 0 to ${MAX_TAKE}`))
    if (skip < 0) throw new ProtocolError(400, validationFailed('skip must not be negative'))
    const records = this.#store.listCommands({
      deviceId: device.id,
      start: query.start ?? undefined,
      end: query.end ?? undefined,
      command: query.command ?? undefined,
      status: query.status ?? undefined,
      sortField,
      sortOrder,
      take,
      skip
    }, this.#clock.now())
    return { commands: records.map(toCommand) }
  }

  #saveDevice (grant: Grant, msg: Message): Payload {
    const deviceId = this.#deviceId(grant, Action.RegisterDevice, msg)
    if (!DEVICE_ID.test(deviceId)) throw new ProtocolError(400, DEVICE_ID_INVALID)
    if (msg.device === undefined || msg.device === null) throw new ProtocolError(400, DEVICE_REQUIRED)
    const body = parse(deviceBody, msg.device, deviceError)
    const existing = this.#store.getDevice(deviceId)
    const networkId = body.networkId ?? null
    const deviceTypeId = body.deviceTypeId ?? null
    // A token must reach the device both where it is and where it is going.
    if ((existing !== undefined && !canSee(grant, existing.networkId, existing.deviceTypeId)) ||
        !canSee(grant, networkId, deviceTypeId)) {
      throw new ProtocolError(403, ACCESS_DENIED)
    }
    const data = serialiseJson('data', body.data, this.#options)
    // Writes accepted before this one commit first, so they see the device as it was.
    this.#writes.flush()
    this.#store.saveDevice({ id: deviceId, name: body.name, data, networkId, deviceTypeId, isBlocked: body.isBlocked ?? false })
    return undefined
  }

  #getDevice (grant: Grant, msg: Message): Payload {
    return { device: toDevice(this.#device(grant, Action.GetDevice, msg)) }
  }

  #deleteDevice (grant: Grant, msg: Message): Payload {
    const device = this.#device(grant, Action.RegisterDevice, msg)
    // Inserts accepted before the delete commit first, and are deleted with the device.
    this.#writes.flush()
    const removed = this.#store.deleteDevice(device.id)
    for (const { id, expiresAt } of removed) this.#wheel.cancel(id, expiresAt)
    this.#pending.delete(device.id)
    return undefined
  }

  // --- subscriptions --------------------------------------------------------------------

  #subscribe (session: SessionState, token: unknown, msg: Message): Payload {
    // The subscription keeps the token it was made with: every push is checked against it.
    const subscriptionToken = token === undefined ? session.token : token
    const grant = this.#auth.grant(subscriptionToken, this.#clock.now())
    let deviceId: string | undefined
    if (msg.deviceId === undefined || msg.deviceId === null) {
      if (!allows(grant, Action.GetDeviceCommand)) throw new ProtocolError(403, ACCESS_DENIED)
    } else {
      deviceId = this.#device(grant, Action.GetDeviceCommand, msg).id
    }
    // Lengths first: a list too long is refused before anything walks it.
    this.#filterLengths(msg)
    const body = parse(subscribeFilters, msg, malformed)
    const limit = body.limit ?? 20
    if (limit < 0 || limit > MAX_HISTORY) throw new ProtocolError(400, validationFailed(`limit must be from 0 to ${MAX_HISTORY}`))
    const maxSubscriptions = this.#options.maxSubscriptionsPerSession
    if (session.subscriptions.size >= maxSubscriptions) {
      throw new ProtocolError(400, validationFailed(`a session may hold at most ${maxSubscriptions} subscriptions`))
    }
    const filter = normalizeFilter({
      deviceId,
      networkIds: body.networkIds == null ? undefined : checkFilterList('networkIds', body.networkIds, this.#options),
      deviceTypeIds: body.deviceTypeIds == null ? undefined : checkFilterList('deviceTypeIds', body.deviceTypeIds, this.#options),
      names: body.names == null ? undefined : checkFilterList('names', body.names, this.#options)
    })
    const updates = body.returnUpdatedCommands ?? false
    const id = this.#nextSubscriptionId++
    const action = updates ? 'command/update' : 'command/insert'
    // Pushes wait here until the subscribe reply has gone out: Session.handle releases them.
    let held: Push[] | undefined = []
    const visible = (record: CommandRecord): boolean => this.#visible(subscriptionToken, record)
    const deliver = (command: Command): void => {
      const push: Push = { action, command, subscriptionId: id }
      if (held !== undefined) held.push(push)
      else this.#push(session, push)
    }
    // History is read before the subscription exists: if the store fails, nothing is left
    // behind. Nothing can commit in between, as all of this runs synchronously.
    const history = body.timestamp !== undefined && body.timestamp !== null && !updates && limit > 0
      ? this.#store.commandsAfter(filter, body.timestamp, limit, this.#clock.now(), visible)
      : []
    const remove = this.#fanOut.add({
      filter,
      updates,
      deliver: (event) => { if (!session.closed && visible(event.record)) deliver(event.command) }
    } satisfies Subscriber)
    session.subscriptions.set(id, {
      id,
      deviceId: deviceId ?? null,
      networkIds: filter.networkIds ?? null,
      deviceTypeIds: filter.deviceTypeIds ?? null,
      names: filter.names ?? null,
      timestamp: body.timestamp === undefined || body.timestamp === null ? null : formatTimestamp(body.timestamp),
      remove
    })
    for (const record of history) deliver(toCommand(record))
    session.unreleased.push(() => {
      const pushes = held as Push[]
      held = undefined
      for (const push of pushes) if (!session.closed) this.#push(session, push)
    })
    return { subscriptionId: id }
  }

  // Refuses a filter list longer than maxFilterItems before anything walks it.
  #filterLengths (msg: Message): void {
    const max = this.#options.maxFilterItems
    for (const name of ['networkIds', 'deviceTypeIds', 'names'] as const) {
      const list = msg[name]
      if (Array.isArray(list) && list.length > max) throw new ProtocolError(400, validationFailed(`${name} must have at most ${max} entries`))
    }
  }

  #unsubscribe (session: SessionState, token: unknown, msg: Message): Payload {
    this.#grant(session, token)
    const { subscriptionId } = parse(commandUnsubscribeSchema, msg, malformed)
    if (subscriptionId === undefined || subscriptionId === null) {
      for (const subscription of session.subscriptions.values()) subscription.remove()
      session.subscriptions.clear()
      return undefined
    }
    const subscription = session.subscriptions.get(subscriptionId)
    if (subscription === undefined) throw new ProtocolError(404, subscriptionNotFound(subscriptionId))
    subscription.remove()
    session.subscriptions.delete(subscriptionId)
    return undefined
  }

  #subscriptions (session: SessionState, token: unknown, msg: Message): Payload {
    this.#grant(session, token)
    const { type } = parse(subscriptionListSchema, msg, malformed)
    const subscriptions = []
    if (type === undefined || type === null || type === 'command') {
      for (const s of session.subscriptions.values()) {
        subscriptions.push({
          subscriptionId: s.id,
          type: 'command',
          deviceId: s.deviceId,
          networkIds: s.networkIds,
          deviceTypeIds: s.deviceTypeIds,
          names: s.names,
          timestamp: s.timestamp
        })
      }
    }
    return { subscriptions }
  }

  // Whether a subscription's token, as of now, may see a command: each push is checked.
  #visible (token: unknown, record: CommandRecord): boolean {
    let grant: Grant
    try {
      grant = this.#auth.grant(token, this.#clock.now())
    } catch {
      return false
    }
    return allows(grant, Action.GetDeviceCommand) && canSee(grant, record.networkId, record.deviceTypeId)
  }

  #push (session: SessionState, push: Push): void {
    try {
      const sent = session.push(push)
      if (sent instanceof Promise) sent.catch((err: unknown) => { this.#fail('ERR_PUSH', 'a session push failed', err) })
    } catch (err) {
      this.#fail('ERR_PUSH', 'a session push threw', err)
    }
  }

  #closeSession (state: SessionState): void {
    if (state.closed) return
    state.closed = true
    for (const subscription of state.subscriptions.values()) subscription.remove()
    state.subscriptions.clear()
    this.#sessions.delete(state)
  }

  // --- writes ---------------------------------------------------------------------------

  // One transaction of writes: no callbacks into other code here (see WriteSink.commit).
  #commit (ops: Array<InsertOp | UpdateOp>): void {
    const store = this.#store
    try {
      store.transaction(() => {
        for (const op of ops) {
          if (op.kind === 'insert') op.record.id = store.insertCommand(op.record)
          else op.before = store.updateCommand(op.id, op.deviceId, op.patch, op.now, op.now)
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
      for (const op of ops) if (op.kind === 'insert') this.#uncount(op.record.deviceId, op.record.expiresAt)
      this.#fail('ERR_STORE', 'a write failed; its requests were answered 500', this.#commitErrors.get(ops))
      return
    }
    const now = this.#clock.now()
    for (const op of ops) {
      if (op.kind === 'insert') {
        const { record } = op
        if (record.expiresAt !== null && !this.#closed) this.#wheel.add(record.id, record.expiresAt)
        // One whose lifetime ran out before it committed is gone for readers already: it is
        // reported when its timer fires, not pushed as new.
        if (record.expiresAt === null || record.expiresAt > now) this.#fanOut.publish(record, false)
      } else if (op.before !== undefined) {
        const { before, patch } = op
        if (!before.updated) this.#uncount(before.deviceId, before.expiresAt)
        if (this.#fanOut.has(true)) {
          this.#fanOut.publish({
            ...before,
            status: patch.status === undefined ? before.status : patch.status,
            result: patch.result === undefined ? before.result : patch.result,
            lastUpdated: op.now,
            updated: true
          }, true)
        }
      }
    }
  }

  #pendingOf (deviceId: string, now: number): PendingCount {
    let pending = this.#pending.get(deviceId)
    if (pending === undefined) {
      pending = { count: this.#store.countPending(deviceId, now), since: now }
      this.#pending.set(deviceId, pending)
    }
    return pending
  }

  // A command leaves the device's pending count: unless it had already expired when the
  // count was taken, since then it was never counted.
  #uncount (deviceId: string, expiresAt: number | null): void {
    const pending = this.#pending.get(deviceId)
    if (pending !== undefined && pending.count > 0 && (expiresAt === null || expiresAt > pending.since)) pending.count--
  }

  // --- expiry ---------------------------------------------------------------------------

  // Expires the commands among `ids` that are due, and reports those never updated.
  // Returns how many left the store.
  #expire (ids: number[]): number {
    const now = this.#clock.now()
    let removed: CommandRecord[]
    try {
      removed = this.#store.transaction(() => this.#store.expireCommands(ids, now))
    } catch (err) {
      // Re-armed before reporting: a listener may close the broker, and then the wheel too.
      for (const id of ids) this.#wheel.add(id, now + RETRY_MS)
      this.#fail('ERR_STORE', 'expiring commands failed; retrying', err)
      return 0
    }
    for (const record of removed) {
      if (record.updated) continue
      this.#uncount(record.deviceId, record.expiresAt)
      this.#emit('expired', new CommandEvent(record).command)
      if (this.#fanOut.has(true)) this.#fanOut.publish({ ...record, status: 'expired' }, true)
    }
    return removed.length
  }

  readonly #recover = (): void => {
    this.#recoveryImmediate = undefined
    this.#recoveryTimer = undefined
    if (this.#closed) return
    let page: Array<[number, number]>
    try {
      // One page per event-loop turn, no bigger than what expiry may do in one turn.
      page = this.#store.expiringCommands(this.#recoveredTo, this.#recoverUpTo, this.#options.expiryBatch)
    } catch (err) {
      this.#recoveryTimer = this.#clock.setTimeout(this.#recover, RETRY_MS)
      this.#fail('ERR_STORE', 'start-up recovery failed; retrying', err)
      return
    }
    const now = this.#clock.now()
    const due: number[] = []
    for (const [id, expiresAt] of page) {
      if (expiresAt <= now) {
        due.push(id)
      } else {
        this.#wheel.add(id, expiresAt)
        this.#report.rearmed++
      }
    }
    if (due.length > 0) this.#report.expired += this.#expire(due)
    // An `expired` or `error` listener may have closed the broker.
    if (this.#closed) return
    const last = page[page.length - 1]
    if (page.length < this.#options.expiryBatch || last === undefined) {
      this.#resolveReady({ ...this.#report })
      return
    }
    this.#recoveredTo = last[0]
    this.#recoveryImmediate = setImmediate(this.#recover)
  }

  // --- events ---------------------------------------------------------------------------

  #emit (type: 'expired', value: Command): void {
    const listeners = this.#events.all.get(type) as Array<(value: unknown) => void> | undefined
    if (listeners === undefined) return
    for (const listener of listeners.slice()) {
      try {
        listener(value)
      } catch (err) {
        this.#fail('ERR_SUBSCRIBER', `an '${type}' listener threw`, err)
      }
    }
  }

  // Reports on `error`: what happened, then what failed; `cause` is the original error (the
  // store's own, not the guard's wrapper).
  #fail (code: BrokerErrorCode, message: string, cause: unknown): void {
    const original = isBrokerError(cause, 'ERR_STORE') ? cause.cause : cause
    const error = new BrokerError(code, `${message}: ${describeCause(original)}`, { cause: original })
    const listeners = this.#events.all.get('error') as Array<(value: unknown) => void> | undefined
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
