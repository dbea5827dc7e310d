// DeviceHive's official JS client (npm devicehive 2.1.0) at its default options against the
// example gateway, over real sockets. Every frame on the wire is recorded on the server side,
// so what the client sends, and what the broker answers, is asserted, not only what the
// client reports.
//
// What the client does at its defaults (src/DeviceHive.js, ApiStrategy.js, transports/WS.js):
// - connect(): with an access and a refresh token it sends token/refresh, then authenticate
//   with the token it got back, then token/create with that token's claims (autoUpdateSession),
//   so the token must hold ManageToken (15). It keeps the pair token/create returns.
// - A socket error with code ECONNRESET (a TCP reset; a clean close does nothing) makes it
//   reopen the socket after reconnectionInterval (default 5 s), authenticate again with the
//   access token from its last token/refresh, and re-subscribe from the last push's timestamp.
// - A reply `Token expired` makes it open a new socket and connect through token/refresh with
//   the refresh token token/create gave it, then send the request again there. The old socket
//   stays open, with whatever subscriptions it has.
// The client needs ws 3 (package.json overrides universal-websocket-client to 1.0.2 for it):
// with ws 8 a TCP reset reaches it as no error at all, and it never reconnects.
import type { EventEmitter } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import type { IncomingMessage } from 'node:http'
import { createRequire } from 'node:module'
import type { Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import t, { type Test } from 'tap'
import type { WebSocket, WebSocketServer } from 'ws'
import { startGateway, type Gateway } from '../examples/gateway.js'
import { signToken } from '../lib/auth.js'
import { DEFAULTS } from '../lib/index.js'
import { manualClock, type ManualClock } from '../lib/manual-clock.js'

const START = Date.parse('2026-01-01T00:00:00.000Z')
/** 32 bytes once base64-decoded, as a JWT_SECRET must be without ALLOW_WEAK_KEY. */
const SECRET = 'dGVzdC1zZWNyZXQtb2YtdGhpcnR5LXR3by1ieXRlcyE='
/**
 * What the tests do: 15 ManageToken (the client's own token/create), 6 RegisterDevice
 * (device/save), 5 GetDeviceCommand (command/subscribe), 7 CreateDeviceCommand (command/insert).
 */
const ACTIONS = [5, 6, 7, 15]
const CLAIMS = { u: 1, a: ACTIONS, n: ['*'], dt: ['*'] }
/** Past the access token the broker's token/refresh hands out (30 minutes by default). */
const ACCESS_RUNS_OUT = DEFAULTS.accessTokenLifetime * 1000 + 1
/** A test fails, rather than hangs, if a frame or push it waits for never comes (a reconnect takes 5 s). */
const TIMEOUT = 60_000

// The client's surface these tests use. It ships no types.
interface DeviceHiveClient extends EventEmitter {
  connect: () => Promise<DeviceHiveClient>
  disconnect: () => void
  device: { add: (device: object) => Promise<unknown> }
  command: {
    subscribe: (query: object) => Promise<{ subscriptionId: string }>
    insert: (deviceId: string, command: object) => Promise<unknown>
  }
  info: { getServerInfo: () => Promise<unknown> }
  /** Internal: the WebSocket transport, to check it is not left reconnecting. */
  strategy: { transport: { isReconnecting: boolean } }
}
interface DeviceHiveModule {
  new (options: { mainServiceURL: string, accessToken?: string, refreshToken?: string }): DeviceHiveClient
  models: {
    Command: new (fields: Record<string, unknown>) => object
    Device: new (fields: Record<string, unknown>) => object
    query: { CommandPollQuery: new (fields: Record<string, unknown>) => object }
  }
}
const DeviceHive = createRequire(import.meta.url)('devicehive') as DeviceHiveModule
const { Command, Device } = DeviceHive.models
const { CommandPollQuery } = DeviceHive.models.query

type Message = Record<string, unknown>
interface Frame {
  /** 1 for the gateway's first connection, and so on. */
  conn: number
  /** `>` client to gateway, `<` gateway to client. */
  dir: '>' | '<'
  msg: Message
}

interface Waiter {
  match: (frame: Frame) => boolean
  resolve: (frame: Frame) => void
}

/**
 * Every frame of every connection to a gateway, in the order the gateway saw them, and each
 * connection's TCP socket, to reset it. Frames in are read with a second 'message' listener;
 * frames out by wrapping the connection's send, which the gateway calls for every reply and push.
 */
class Wire {
  readonly frames: Frame[] = []
  readonly #tcp: Socket[] = []
  readonly #waiting: Waiter[] = []

  constructor (server: WebSocketServer) {
    server.on('connection', (socket: WebSocket, request: IncomingMessage) => {
      const conn = this.#tcp.push(request.socket)
      socket.on('message', (data) => { this.#record({ conn, dir: '>', msg: JSON.parse(String(data)) as Message }) })
      const send = socket.send.bind(socket) as (text: string) => void
      const sender = socket as unknown as { send: (text: string) => void }
      sender.send = (text) => {
        this.#record({ conn, dir: '<', msg: JSON.parse(text) as Message })
        send(text)
      }
    })
  }

  /** The first frame, already seen or still to come, that matches. */
  async until (match: (frame: Frame) => boolean): Promise<Frame> {
    const seen = this.frames.find(match)
    if (seen !== undefined) return seen
    return await new Promise((resolve) => { this.#waiting.push({ match, resolve }) })
  }

  /** The reply the gateway sent on a connection to an action, once it is out. */
  async reply (conn: number, action: string): Promise<Message> {
    return (await this.until((f) => f.conn === conn && f.dir === '<' && f.msg.action === action && 'status' in f.msg)).msg
  }

  /** One connection's frames. */
  of (conn: number): Frame[] {
    return this.frames.filter((f) => f.conn === conn)
  }

  /** One connection's frames, each as `> action` or `< action status [code error]`. */
  summary (conn: number): string[] {
    return this.of(conn).map(({ dir, msg }) => dir === '>'
      ? `> ${String(msg.action)}`
      : `< ${[msg.action, msg.status ?? 'push', msg.code, msg.error].filter((part) => part !== undefined).join(' ')}`)
  }

  /** How many connections the gateway has accepted. */
  get connections (): number {
    return this.#tcp.length
  }

  /** Drops a connection from the server side with a TCP reset: the client sees ECONNRESET. */
  reset (conn: number): void {
    const socket = this.#tcp[conn - 1]
    if (socket === undefined) throw new Error(`no connection ${conn}`)
    socket.resetAndDestroy()
  }

  #record (frame: Frame): void {
    this.frames.push(frame)
    for (let i = 0; i < this.#waiting.length;) {
      const waiter = this.#waiting[i] as Waiter
      if (waiter.match(frame)) {
        this.#waiting.splice(i, 1)
        waiter.resolve(frame)
      } else {
        i++
      }
    }
  }
}

/** The client's 'message' events (command pushes), awaitable one by one, in order. */
class Inbox {
  readonly #queue: Message[] = []
  readonly #waiting: Array<(message: Message) => void> = []

  constructor (client: EventEmitter) {
    client.on('message', (message: Message) => {
      const waiter = this.#waiting.shift()
      if (waiter !== undefined) waiter(message)
      else this.#queue.push(message)
    })
  }

  async next (): Promise<Message> {
    const queued = this.#queue.shift()
    if (queued !== undefined) return queued
    return await new Promise((resolve) => { this.#waiting.push(resolve) })
  }

  get queued (): number {
    return this.#queue.length
  }
}

interface Setup {
  gateway: Gateway
  clock: ManualClock
  wire: Wire
  dh: DeviceHiveClient
  inbox: Inbox
  errors: unknown[]
  accessToken: string
  refreshToken: string
}

/**
 * A gateway over a fresh file on a free port, with a manual clock (so an access token runs out
 * when a test says so), and a client made with the default options and both tokens. At the end
 * the client disconnects and the gateway closes (1001 to the connections the client left open):
 * clean closes, which start no reconnect.
 */
async function setUp (t: Test, claims: typeof CLAIMS = CLAIMS): Promise<Setup> {
  const dir = mkdtempSync(join(tmpdir(), 'command-broker-client-'))
  const clock = manualClock(START)
  const gateway = await startGateway({ file: join(dir, 'hub.db'), secret: SECRET, port: 0, clock, logger: pino({ level: 'silent' }) })
  const wire = new Wire(gateway.server)
  const accessToken = signToken({ ...claims, e: START + 3_600_000 }, { secret: SECRET, now: START })
  const refreshToken = signToken({ ...claims, e: START + 86_400_000, t: 0 }, { secret: SECRET, now: START })
  const dh = new DeviceHive({ mainServiceURL: gateway.url, accessToken, refreshToken })
  const inbox = new Inbox(dh)
  const errors: unknown[] = []
  dh.on('error', (error: unknown) => { errors.push(error) })
  t.teardown(async () => {
    dh.disconnect()
    await gateway.close()
    rmSync(dir, { recursive: true, force: true })
  })
  return { gateway, clock, wire, dh, inbox, errors, accessToken, refreshToken }
}

/** What a request frame carried, less its random requestId. */
function body (frame: Frame | undefined): Message {
  const { requestId: _, ...rest } = frame?.msg ?? {}
  return rest
}

/** The command as a push carries it (spec §5), as the client hands it on: plus its subscription. */
function command (id: number, name: string, parameters: object, subscriptionId: string, at = '2026-01-01T00:00:00.000'): Message {
  return {
    id,
    command: name,
    timestamp: at,
    lastUpdated: at,
    userId: 1,
    deviceId: 'lamp-1',
    networkId: 1,
    deviceTypeId: null,
    parameters,
    lifetime: 7200,
    status: null,
    result: null,
    subscriptionId
  }
}

/**
 * connect() at the defaults, then a device, a subscription and a command: asserts the connect
 * frames and the push. Returns the external subscription id and the tokens the wire carried.
 */
async function connectAndReceive (t: Test, setup: Setup): Promise<{ subscriptionId: string, refreshed: string, issuedRefresh: string }> {
  const { dh, wire, inbox, accessToken, refreshToken } = setup
  t.equal(await dh.connect(), dh, 'connect() resolves with the client')

  t.strictSame(wire.summary(1), [
    '> token/refresh', '< token/refresh success',
    '> authenticate', '< authenticate success',
    '> token/create', '< token/create success'
  ], 'connect() goes through token/refresh, authenticate and token/create')
  const [refresh, refreshReply, auth, , create, createReply] = wire.of(1)
  t.strictSame(body(refresh), { refreshToken, action: 'token/refresh' }, 'token/refresh carries the refresh token it was given')
  const refreshed = refreshReply?.msg.accessToken as string
  t.not(refreshed, accessToken, 'token/refresh answers a new access token')
  t.strictSame(body(auth), { action: 'authenticate', token: refreshed }, 'it authenticates with that one, not the access token it was given')
  t.strictSame(body(create), { action: 'token/create', payload: { userId: 1, actions: ACTIONS, networkIds: ['*'], deviceTypeIds: ['*'] } },
    'token/create asks for its own claims')
  const issuedRefresh = createReply?.msg.refreshToken as string
  t.type(issuedRefresh, 'string', 'token/create answers a token pair, which the client keeps')

  t.strictSame(await dh.device.add(new Device({ id: 'lamp-1', name: 'Lamp', networkId: 1 })), {}, 'device/save through the client')
  const { subscriptionId } = await dh.command.subscribe(new CommandPollQuery({ deviceId: 'lamp-1' }))
  t.type(subscriptionId, 'string', 'the client hands out its own subscription id')
  t.strictSame(await dh.command.insert('lamp-1', new Command({ command: 'on', parameters: { level: 3 }, lifetime: 7200 })),
    { id: 1, timestamp: '2026-01-01T00:00:00.000', lastUpdated: '2026-01-01T00:00:00.000', userId: 1 }, 'command/insert through the client')
  t.strictSame(await inbox.next(), command(1, 'on', { level: 3 }, subscriptionId), 'the push reaches the client: the twelve keys and its subscription id')
  return { subscriptionId, refreshed, issuedRefresh }
}

t.test('example-gateway-client: the official client at its defaults: connect, receive, reconnect after a TCP reset, then through token/refresh once its access token runs out', { timeout: TIMEOUT }, async (t) => {
  const setup = await setUp(t)
  const { clock, wire, dh, inbox, errors } = setup
  const { subscriptionId, refreshed, issuedRefresh } = await connectAndReceive(t, setup)

  // The gateway's side of the connection is reset. After its reconnectionInterval (5 s at the
  // default) the client opens a second connection, authenticates again and re-subscribes.
  wire.reset(1)
  t.equal((await wire.reply(2, 'command/subscribe')).status, 'success', 'a second connection re-subscribes')
  t.strictSame(wire.summary(2), ['> authenticate', '< authenticate success', '> command/subscribe', '< command/subscribe success'],
    'after a reset the client reconnects, re-authenticates and re-subscribes')
  const [reauth, resubscribe] = wire.of(2).filter((f) => f.dir === '>')
  t.strictSame(body(reauth), { action: 'authenticate', token: refreshed }, 'with the access token its token/refresh gave it')
  t.strictSame(body(resubscribe), { deviceId: 'lamp-1', timestamp: '2026-01-01T00:00:00.000', action: 'command/subscribe' },
    'from the timestamp of the last push it received')
  // server/info needs no token; its reply comes after the re-subscribe's, so by then the client
  // has mapped the new subscription to its old id.
  t.match(await dh.info.getServerInfo(), { apiVersion: '3.5.0', serverTimestamp: '2026-01-01T00:00:00.000' }, 'server/info through the client')
  clock.advance(1000)
  await dh.command.insert('lamp-1', new Command({ command: 'dim', parameters: { level: 1 }, lifetime: 7200 }))
  t.strictSame(await inbox.next(), command(2, 'dim', { level: 1 }, subscriptionId, '2026-01-01T00:00:01.000'),
    'the re-subscription delivers under the same subscription id')

  // The access token runs out. The next request is answered `Token expired`, and the client
  // reconnects through token/refresh on a third connection, then sends the request again there.
  clock.advance(ACCESS_RUNS_OUT)
  const again = await dh.command.subscribe(new CommandPollQuery({ deviceId: 'lamp-1' }))
  t.strictSame(wire.summary(2).slice(-2), ['> command/subscribe', '< command/subscribe error 401 Token expired'],
    'the second connection answers the subscribe `Token expired`')
  t.strictSame(wire.summary(3), [
    '> token/refresh', '< token/refresh success',
    '> authenticate', '< authenticate success',
    '> token/create', '< token/create success',
    '> command/subscribe', '< command/subscribe success'
  ], 'the client reconnects through token/refresh and subscribes on the new connection')
  const [refresh3, refreshReply3, auth3] = wire.of(3)
  t.strictSame(body(refresh3), { refreshToken: issuedRefresh, action: 'token/refresh' }, 'with the refresh token token/create gave it')
  t.strictSame(body(auth3), { action: 'authenticate', token: refreshReply3?.msg.accessToken }, 'then authenticates with the new access token')
  const expired = wire.of(2).at(-2)
  t.equal(wire.of(3).at(-2)?.msg.requestId, expired?.msg.requestId, 'the subscribe is sent again as it was')
  t.not(again.subscriptionId, subscriptionId, 'a new subscription')

  // One more command: the new subscription delivers it, and so does the re-subscription on the
  // second connection, which the client leaves open (a subscription outlives its token, spec §10).
  await dh.command.insert('lamp-1', new Command({ command: 'off', parameters: { level: 0 }, lifetime: 7200 }))
  const at = '2026-01-01T00:30:01.001'
  const pushes = [await inbox.next(), await inbox.next()]
  t.strictSame(pushes.map((p) => p.subscriptionId).sort(), [subscriptionId, again.subscriptionId].sort(), 'one push for each subscription')
  for (const push of pushes) t.strictSame(push, command(3, 'off', { level: 0 }, push.subscriptionId as string, at))
  t.equal(wire.connections, 3, 'three connections in all')
  t.equal(inbox.queued, 0, 'no other push')
  t.strictSame(errors, [], 'the client reported no error')
  t.equal(dh.strategy.transport.isReconnecting, false, 'no reconnect under way')
})

t.test('example-gateway-client: a TCP reset after the access token ran out makes the client reconnect through token/refresh', { timeout: TIMEOUT }, async (t) => {
  const setup = await setUp(t)
  const { clock, wire, dh, inbox, errors } = setup
  const { subscriptionId, issuedRefresh } = await connectAndReceive(t, setup)

  // Typical in production: the socket drops after more than 30 minutes. The client
  // re-authenticates with its expired access token (it ignores the answer) and re-subscribes.
  clock.advance(ACCESS_RUNS_OUT)
  wire.reset(1)
  const resubscribed = await wire.reply(2, 'command/subscribe')
  t.strictSame(wire.summary(2).slice(0, 3), ['> authenticate', '< authenticate error 401 Token expired', '> command/subscribe'])
  // The broker answers `Token expired` on a session whose authenticate was refused for an
  // expired token (README, Protocol notes): the client refreshes on that string alone.
  t.strictSame(wire.summary(2).slice(3), ['< command/subscribe error 401 Token expired'],
    'the re-subscribe after an expired re-authenticate is answered `Token expired`')
  t.equal(resubscribed.error, 'Token expired')

  // The client reconnects through token/refresh on a third connection and re-subscribes there.
  t.equal((await wire.reply(3, 'command/subscribe')).status, 'success', 'a third connection re-subscribes')
  t.strictSame(wire.summary(3), [
    '> token/refresh', '< token/refresh success',
    '> authenticate', '< authenticate success',
    '> token/create', '< token/create success',
    '> command/subscribe', '< command/subscribe success'
  ], 'the client reconnects through token/refresh and re-subscribes')
  t.strictSame(body(wire.of(3)[0]), { refreshToken: issuedRefresh, action: 'token/refresh' }, 'with the refresh token token/create gave it')
  t.strictSame(body(wire.of(3).at(-2)), { deviceId: 'lamp-1', timestamp: '2026-01-01T00:00:00.000', action: 'command/subscribe' },
    'from the timestamp of the last push')

  // Then subscribe again and receive one more command, on both subscriptions.
  const again = await dh.command.subscribe(new CommandPollQuery({ deviceId: 'lamp-1' }))
  await dh.command.insert('lamp-1', new Command({ command: 'off', parameters: { level: 0 }, lifetime: 7200 }))
  const pushes = [await inbox.next(), await inbox.next()]
  t.strictSame(pushes.map((p) => p.subscriptionId).sort(), [subscriptionId, again.subscriptionId].sort(), 'one push for each subscription')
  for (const push of pushes) t.strictSame(push, command(2, 'off', { level: 0 }, push.subscriptionId as string, '2026-01-01T00:30:00.001'))
  t.strictSame(errors, [], 'the client reported no error')
  t.equal(dh.strategy.transport.isReconnecting, false, 'no reconnect under way')
})

t.test('example-gateway-client: at its defaults the client cannot connect with a token that lacks ManageToken', { timeout: TIMEOUT }, async (t) => {
  const { dh, wire } = await setUp(t, { ...CLAIMS, a: [5, 6, 7] })
  await t.rejects(dh.connect(), { message: 'Invalid credentials error during attempt to authenticate. Error: Access is denied' })
  t.strictSame(wire.summary(1).slice(-2), ['> token/create', '< token/create error 403 Access is denied'], 'its own token/create is refused')
})
