// A DeviceHive-compatible WebSocket gateway in front of command-broker: one session per
// connection, frames in, replies and pushes out, commands in a SQLite file on disk, or in
// PostgreSQL when DATABASE_URL is set (then every gateway on that database and schema is one
// cluster). `npm start` runs it; DeviceHive clients connect to ws://127.0.0.1:8080/api/websocket.
// Meant to be copied: a client that sends oversized or invalid frames, or stops reading, loses
// its own connection and nothing else.
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { pathToFileURL } from 'node:url'
import { WebSocket, WebSocketServer } from 'ws'
import { createBroker, DEFAULTS, postgresStore, signToken, sqliteStore, type Broker, type BrokerOptions, type Store } from '../lib/index.js'

/** startGateway's own options; any other createBroker option (clock, limits) is passed on. */
export interface GatewayOptions extends Omit<BrokerOptions, 'secret' | 'key'> {
  /** SQLite file, when there is no `databaseUrl`. Default `command-broker.db`. */
  file?: string
  /**
   * A `postgres://` URL: the commands go to PostgreSQL instead of SQLite, and every gateway on
   * the same database and `schema` shares them (give them all the same `secret`). Default: none.
   */
  databaseUrl?: string | undefined
  /** The PostgreSQL schema, with `databaseUrl`. Default `command_broker`. */
  schema?: string | undefined
  /** DeviceHive's JWT_SECRET. Default: 32 random bytes, base64, so only tokens this gateway signs work. */
  secret?: string | undefined
  host?: string
  /** 0 picks a free port. Default 8080. */
  port?: number
  /** Most bytes a connection may have queued and unsent before it is closed with 1008. Default 4 MiB. */
  maxBufferedBytes?: number
  /** Where warnings go. Default `console.error`. */
  log?: (line: string) => void
}

export interface Gateway {
  broker: Broker
  /** The ws server, e.g. to watch its connections ('connection'); close() closes it. */
  server: WebSocketServer
  url: string
  adminToken: string
  close: () => Promise<void>
}

/** How long close() waits for clients to answer its 1001 before cutting them off. */
const CLOSE_GRACE_MS = 1000

export async function startGateway (options: GatewayOptions = {}): Promise<Gateway> {
  const {
    file = 'command-broker.db', databaseUrl, schema, secret: given, host = '127.0.0.1', port = 8080,
    maxBufferedBytes = 4 * 1024 * 1024, log = console.error, ...brokerOptions
  } = options
  if (!Number.isSafeInteger(maxBufferedBytes) || maxBufferedBytes < 1) {
    throw new RangeError(`startGateway: maxBufferedBytes must be a positive integer, received ${maxBufferedBytes}`)
  }
  const secret = given ?? randomBytes(32).toString('base64')
  if (given === undefined) log('[gateway] JWT_SECRET not set: generated a random secret; tokens from a DeviceHive server are refused until JWT_SECRET is set to its secret')
  const maxPayload = brokerOptions.maxFrameBytes ?? DEFAULTS.maxFrameBytes
  // Bind the port before opening the database: a second copy on a busy port fails here
  // (EADDRINUSE) without having touched the first one's file.
  const server = new WebSocketServer({ host, port, path: '/api/websocket', maxPayload })
  let broker: Broker
  try {
    await once(server, 'listening')
    const store = databaseUrl === undefined
      ? sqliteStore(file)
      : postgresStore({ connectionString: databaseUrl, ...(schema === undefined ? {} : { schema }) })
    broker = await openBroker(store, { ...brokerOptions, secret })
  } catch (err) {
    server.close()
    throw err
  }
  broker.on('error', (err) => { log(`[gateway] ${err.code}: ${err.message}`) })
  server.on('error', (err) => { log(`[gateway] server: ${err.message}`) })
  server.on('connection', (socket) => {
    // A frame over maxPayload, or text that is not UTF-8: ws closes with 1009 or 1007 after this.
    socket.on('error', (err) => { log(`[gateway] closing a connection: ${err.message}`) })
    try {
      serve(socket, broker, maxBufferedBytes, log)
    } catch (err) {
      log(`[gateway] could not open a session: ${String(err)}`)
      socket.close(1011)
    }
  })
  // A token's expiry is wall-clock time.
  const { clock } = brokerOptions
  const now = clock === undefined ? Date.now() : clock.date?.() ?? clock.now()
  return {
    broker,
    server,
    url: `ws://${host}:${(server.address() as AddressInfo).port}/api/websocket`,
    adminToken: signToken({ u: 1, a: [0], n: ['*'], dt: ['*'], e: now + 24 * 3_600_000 }, { secret, allowWeakKey: brokerOptions.allowWeakKey ?? false }),
    async close () {
      // Stop accepting; ask every client to go away (1001), and cut off those that do not
      // answer in time. The server's close callback runs once every connection has ended.
      const stopped = new Promise<void>((resolve) => { server.close(() => { resolve() }) })
      for (const client of server.clients) client.close(1001, 'server shutting down')
      const cutOff = setTimeout(() => { for (const client of server.clients) client.terminate() }, CLOSE_GRACE_MS).unref()
      await stopped
      clearTimeout(cutOff)
      await broker.close()
    }
  }
}

async function openBroker (store: Store, options: BrokerOptions): Promise<Broker> {
  try {
    // A PostgreSQL store connects and migrates in the background: a bad URL fails here.
    await store.lastCommandId()
    const broker = createBroker(store, options)
    // A shared store's broker serves once it hears the cluster's writes.
    if (store.shared !== undefined) await broker.ready
    return broker
  } catch (err) {
    // Wait for the store to let go of its file (and its checkpointer thread), or its
    // connections, before saying so: the caller may delete the file or open it again next.
    await store.close()
    throw err
  }
}

/** One connection: its frames go to a broker session, replies and pushes come back. */
function serve (socket: WebSocket, broker: Broker, maxBufferedBytes: number, log: (line: string) => void): void {
  const send = (message: object): void => {
    if (socket.readyState !== WebSocket.OPEN) return
    const text = JSON.stringify(message)
    // A client that stops reading would make unsent output pile up in this process without
    // end. One message always goes out onto an empty queue, however large.
    if (socket.bufferedAmount > 0 && socket.bufferedAmount + Buffer.byteLength(text) > maxBufferedBytes) {
      log(`[gateway] closing a connection that is not reading: ${socket.bufferedAmount} bytes unsent`)
      session.close()
      socket.close(1008, 'not reading')
      return
    }
    socket.send(text)
  }
  const session = broker.session(send)
  // Send each reply as soon as it resolves: the broker then guarantees a subscribe reply
  // goes out before that subscription's first push. A binary frame is read as UTF-8 text.
  const fail = (err: unknown): void => { log(`[gateway] a message failed: ${String(err)}`) }
  socket.on('message', (data) => {
    try {
      session.handle(String(data)).then(send).catch(fail)
    } catch (err) {
      fail(err)
    }
  })
  socket.on('close', () => { session.close() })
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const env = process.env
  const gateway = await startGateway({
    file: env.DB_FILE ?? 'command-broker.db',
    databaseUrl: env.DATABASE_URL,
    schema: env.DB_SCHEMA,
    secret: env.JWT_SECRET,
    // A JWT_SECRET shorter than 32 bytes (DeviceHive's demo `devicehive`) only with this set.
    allowWeakKey: env.ALLOW_WEAK_KEY === '1',
    port: Number(env.PORT ?? 8080),
    ...(env.MAX_BUFFERED_BYTES === undefined ? {} : { maxBufferedBytes: Number(env.MAX_BUFFERED_BYTES) })
  }).catch((err: unknown) => {
    console.error(`[gateway] could not start: ${err instanceof Error ? err.message : String(err)}`)
    process.exit(1)
  })
  // Once only: a Ctrl-C under npm arrives twice, from the terminal and forwarded by npm.
  let stopping = false
  const stop = (): void => {
    if (stopping) return
    stopping = true
    void gateway.close().then(() => process.exit(0))
  }
  process.on('SIGINT', stop)
  process.on('SIGTERM', stop)
  console.log(`command-broker gateway listening on ${gateway.url}`)
  console.log(`admin token (24 h): ${gateway.adminToken}`)
  const recovered = await gateway.broker.ready
  console.log(`recovered: ${recovered.expired} expired, ${recovered.rearmed} re-armed`)
}
