// A DeviceHive-compatible WebSocket gateway in front of command-broker: a `ws` server, the
// broker's `command-broker/ws` adapter between them (one session per connection, hostile
// clients lose only their own connection), commands in a SQLite file on disk, or in PostgreSQL
// when DATABASE_URL is set (then every gateway on that database and schema is one cluster).
// Logs are pino's JSON lines on stdout; the command line reads its configuration from the
// environment and stops gracefully on SIGINT and SIGTERM. `npm start` runs it; DeviceHive
// clients connect to ws://127.0.0.1:8080/api/websocket. Meant to be copied.
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { pathToFileURL } from 'node:url'
import { pino, type Logger } from 'pino'
import { createServer, type ServerResponse } from 'node:http'
import { Gauge, Registry } from 'prom-client'
import { WebSocketServer } from 'ws'
import { z } from 'zod'
import { createBroker, DEFAULTS, postgresStore, signToken, sqliteStore, type Broker, type BrokerOptions, type BrokerStats, type Store } from '../lib/index.js'
import { attach, type Attachment } from '../lib/ws/attach.js'

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
  /** How long close() waits for clients to answer its 1001 before cutting them off, in ms. Default 1000. */
  closeGraceMs?: number
  /** Where logs go. Default: pino at `info`, JSON lines on stdout. */
  logger?: Logger
}

export interface Gateway {
  broker: Broker
  /** The ws server, e.g. to watch its connections ('connection'); close() closes it. */
  server: WebSocketServer
  url: string
  /** `http://host:port`: `GET /metrics` (Prometheus text) and `GET /healthz` are served there. */
  httpUrl: string
  adminToken: string
  /**
   * Stops accepting, answers the requests under way, sends every client 1001 (cutting off those
   * that do not answer within `closeGraceMs`), then closes the broker: accepted writes commit.
   */
  close: () => Promise<void>
}

export async function startGateway (options: GatewayOptions = {}): Promise<Gateway> {
  const {
    file = 'command-broker.db', databaseUrl, schema, secret: given, host = '127.0.0.1', port = 8080,
    maxBufferedBytes = 4 * 1024 * 1024, closeGraceMs, logger = pino(), ...brokerOptions
  } = options
  if (!Number.isSafeInteger(maxBufferedBytes) || maxBufferedBytes < 1) {
    throw new RangeError(`startGateway: maxBufferedBytes must be a positive integer, received ${maxBufferedBytes}`)
  }
  const secret = given ?? randomBytes(32).toString('base64')
  if (given === undefined) logger.warn('JWT_SECRET not set: generated a random secret; tokens from a DeviceHive server are refused until JWT_SECRET is set to its secret')
  // Bind the port before opening the database: a second copy on a busy port fails here
  // (EADDRINUSE) without having touched the first one's file. Frames over the broker's
  // maxFrameBytes are refused by ws itself (1009), before they are read into memory.
  // One HTTP server: WebSocket upgrades on /api/websocket, /metrics and /healthz beside them.
  const http = createServer((request, response) => { void serveHttp(request.url, response, broker, metrics) })
  let server: WebSocketServer | undefined
  let broker: Broker | undefined
  let attachment: Attachment
  const metrics = new Registry()
  try {
    http.listen(port, host)
    await once(http, 'listening')
    // Made once listening: ws re-emits the HTTP server's errors (EADDRINUSE) as its own.
    server = new WebSocketServer({ server: http, path: '/api/websocket', maxPayload: brokerOptions.maxFrameBytes ?? DEFAULTS.maxFrameBytes })
    const store = databaseUrl === undefined
      ? sqliteStore(file)
      : postgresStore({ connectionString: databaseUrl, ...(schema === undefined ? {} : { schema }) })
    broker = await openBroker(store, { ...brokerOptions, secret })
    attachment = attach(server, broker, {
      maxBufferedBytes,
      ...(closeGraceMs === undefined ? {} : { closeGraceMs }),
      onError: (err, { request }) => { logger.warn({ err, remoteAddress: request.socket.remoteAddress }, `closing a connection: ${err.message}`) }
    })
  } catch (err) {
    server?.close()
    http.close()
    await broker?.close()
    throw err
  }
  registerMetrics(metrics, broker)
  broker.on('error', (err) => { logger.error({ err }, `${err.code}: ${err.message}`) })
  server.on('error', (err) => { logger.error({ err }, `server: ${err.message}`) })
  server.on('connection', (socket, request) => {
    const remoteAddress = request.socket.remoteAddress
    logger.debug({ remoteAddress }, 'connection opened')
    socket.once('close', (code) => { logger.debug({ remoteAddress, code }, 'connection closed') })
  })
  // A token's expiry is wall-clock time.
  const { clock } = brokerOptions
  const now = clock === undefined ? Date.now() : clock.date?.() ?? clock.now()
  let closing: Promise<void> | undefined
  const opened = broker
  const adapter = attachment
  return {
    broker,
    server,
    url: `ws://${host}:${(http.address() as AddressInfo).port}/api/websocket`,
    httpUrl: `http://${host}:${(http.address() as AddressInfo).port}`,
    adminToken: signToken({ u: 1, a: [0], n: ['*'], dt: ['*'], e: now + 24 * 3_600_000 }, { secret, allowWeakKey: brokerOptions.allowWeakKey ?? false }),
    close () {
      closing ??= (async () => {
        const stopped = new Promise<void>((resolve) => { server.close(() => { resolve() }) })
        const httpStopped = new Promise<void>((resolve) => { http.close(() => { resolve() }) })
        await adapter.close()
        await stopped
        http.closeAllConnections()
        await httpStopped
        await opened.close()
      })()
      return closing
    }
  }
}

// /healthz answers 200 while the broker serves, 503 once it has closed; /metrics is
// broker.stats() in Prometheus's text format, read at each scrape.
async function serveHttp (url: string | undefined, response: ServerResponse, broker: Broker | undefined, metrics: Registry): Promise<void> {
  if (url === '/healthz') {
    const healthy = broker !== undefined && !broker.closed
    response.writeHead(healthy ? 200 : 503, { 'content-type': 'text/plain' }).end(healthy ? 'ok\n' : 'closed\n')
    return
  }
  if (url === '/metrics' && broker !== undefined) {
    const text = await metrics.metrics()
    response.writeHead(200, { 'content-type': metrics.contentType }).end(text)
    return
  }
  response.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n')
}

// One gauge per figure of broker.stats(), collected when Prometheus scrapes.
function registerMetrics (registry: Registry, broker: Broker): void {
  const figures: Array<[string, string, (stats: BrokerStats) => number | undefined]> = [
    ['sessions', 'Open sessions.', (s) => s.sessions],
    ['subscriptions', 'Live subscriptions.', (s) => s.subscriptions],
    ['queued_writes', 'Writes waiting for the next group commit.', (s) => s.queuedWrites],
    ['timers', 'Commands armed in the expiry wheel.', (s) => s.timers],
    ['expiry_lag_ms', 'How late the wheel last fired for its most overdue command, ms.', (s) => s.expiryLag],
    ['pending_commands', 'Pending commands of the devices counted so far.', (s) => s.pendingCommands],
    ['commits_total', 'Group commits so far.', (s) => s.commits.count],
    ['committed_writes_total', 'Writes committed so far.', (s) => s.commits.writes],
    ['commit_largest_batch', 'Largest group commit, writes.', (s) => s.commits.largestBatch],
    ['commit_seconds_total', 'Time spent committing, seconds.', (s) => s.commits.totalMs / 1000],
    ['store_bytes', 'Bytes the store takes.', (s) => s.storeBytes]
  ]
  let stats: Promise<BrokerStats> | undefined
  for (const [name, help, read] of figures) {
    new Gauge({
      name: `command_broker_${name}`,
      help,
      registers: [registry],
      // One stats() per scrape, shared by every gauge.
      async collect () {
        stats ??= broker.stats().finally(() => { setImmediate(() => { stats = undefined }) })
        const value = read(await stats)
        if (value !== undefined) this.set(value)
      }
    })
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

/** A whole number from the environment, from min to max. */
const integer = (fallback: number, min: number, max: number) => z.string()
  .regex(/^\d+$/, `must be a whole number from ${min} to ${max}`)
  .transform(Number)
  .refine((value) => value >= min && value <= max, `must be a whole number from ${min} to ${max}`)
  .default(fallback)

/** The command line's configuration: every variable is checked before anything starts. */
export const environment = z.object({
  HOST: z.string().min(1, 'must not be empty').default('127.0.0.1'),
  PORT: integer(8080, 0, 65535),
  DB_FILE: z.string().min(1, 'must not be empty').default('command-broker.db'),
  DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\//, 'must be a postgres:// or postgresql:// URL').optional(),
  DB_SCHEMA: z.string().regex(/^(?!pg_)[a-z_][a-z0-9_]{0,55}$/, 'must be a lowercase identifier of 1 to 56 characters (a-z, 0-9, _; not starting with a digit or pg_)').optional(),
  JWT_SECRET: z.string().min(1, 'must not be empty (unset it for a random secret)').optional(),
  ALLOW_WEAK_KEY: z.enum(['0', '1'], 'must be 1 or 0').default('0'),
  MAX_BUFFERED_BYTES: integer(4 * 1024 * 1024, 1, Number.MAX_SAFE_INTEGER),
  CLOSE_GRACE_MS: integer(1000, 0, 2 ** 31 - 1),
  RETENTION: integer(DEFAULTS.retention, 0, 2 ** 31 - 1),
  SHUTDOWN_TIMEOUT_MS: integer(10_000, 1, 2 ** 31 - 1),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], 'must be one of fatal, error, warn, info, debug, trace, silent').default('info')
})

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const parsed = environment.safeParse(process.env)
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      const name = String(issue.path[0])
      console.error(`[gateway] bad environment: ${name} ${issue.message}, received ${JSON.stringify(process.env[name])}`)
    }
    process.exit(1)
  }
  const env = parsed.data
  const logger = pino({ level: env.LOG_LEVEL, timestamp: pino.stdTimeFunctions.isoTime })
  const gateway = await startGateway({
    file: env.DB_FILE,
    databaseUrl: env.DATABASE_URL,
    schema: env.DB_SCHEMA,
    secret: env.JWT_SECRET,
    // A JWT_SECRET shorter than 32 bytes (DeviceHive's demo `devicehive`) only with this set.
    allowWeakKey: env.ALLOW_WEAK_KEY === '1',
    host: env.HOST,
    port: env.PORT,
    maxBufferedBytes: env.MAX_BUFFERED_BYTES,
    closeGraceMs: env.CLOSE_GRACE_MS,
    retention: env.RETENTION,
    logger
  }).catch((err: unknown) => {
    logger.fatal({ err }, `could not start: ${err instanceof Error ? err.message : String(err)}`)
    process.exit(1)
  })
  // Once only: a Ctrl-C under npm arrives twice, from the terminal and forwarded by npm.
  let stopping = false
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return
    stopping = true
    logger.info({ signal }, 'shutting down')
    setTimeout(() => {
      logger.fatal({ timeoutMs: env.SHUTDOWN_TIMEOUT_MS }, 'shutdown timed out')
      process.exit(1)
    }, env.SHUTDOWN_TIMEOUT_MS).unref()
    void gateway.close().then(() => {
      logger.info('stopped')
      process.exit(0)
    })
  }
  process.on('SIGINT', stop)
  process.on('SIGTERM', stop)
  logger.info({ url: gateway.url }, `listening on ${gateway.url}`)
  // Only this process can sign tokens for a random secret: print one. With JWT_SECRET set,
  // tokens come from where that secret lives, and none goes into the logs.
  if (env.JWT_SECRET === undefined) logger.info({ adminToken: gateway.adminToken }, 'admin token (24 h)')
  const recovered = await gateway.broker.ready
  logger.info(recovered, `recovered: ${recovered.expired} expired, ${recovered.rearmed} re-armed`)
}
