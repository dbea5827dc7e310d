// The example gateway over real sockets: the round trip a DeviceHive client and device make,
// then hostile clients (oversized and invalid frames, a client that stops reading), a busy
// port, shutdown, and the command line under SIGTERM.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir, userInfo } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { pino, type Logger } from 'pino'
import t, { type Test } from 'tap'
import { startGateway, type Gateway, type GatewayOptions } from '../examples/gateway.js'
import { signToken } from '../lib/auth.js'
import { manualClock } from '../lib/manual-clock.js'
import { sqliteStore } from '../lib/store/sqlite.js'
import { postgres } from './fixtures/postgres.js'
import { Client } from './fixtures/ws-client.js'

const START = Date.parse('2026-01-01T00:00:00.000Z')
/** 32 bytes once base64-decoded, as a JWT_SECRET must be without ALLOW_WEAK_KEY. */
const SECRET = 'dGVzdC1zZWNyZXQtb2YtdGhpcnR5LXR3by1ieXRlcyE='
const GATEWAY = fileURLToPath(new URL('../examples/gateway.ts', import.meta.url))


type LogRecord = Record<string, unknown>

/** A pino logger (at info) whose records are kept, parsed, in `logs`. */
function capture (): { logger: Logger, logs: LogRecord[] } {
  const logs: LogRecord[] = []
  return { logs, logger: pino({}, { write (line: string) { logs.push(JSON.parse(line) as LogRecord) } }) }
}

const silent = pino({ level: 'silent' })

/** A gateway on a free port over a fresh file, with its log records kept; closed at teardown. */
async function openGateway (t: Test, options: GatewayOptions = {}): Promise<{ gateway: Gateway, logs: LogRecord[], dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'command-broker-gateway-'))
  const { logger, logs } = capture()
  const gateway = await startGateway({ file: join(dir, 'hub.db'), secret: SECRET, port: 0, logger, ...options })
  t.teardown(async () => {
    await gateway.close()
    rmSync(dir, { recursive: true, force: true })
  })
  return { gateway, logs, dir }
}

let served = 0

/** Asserts the gateway still serves a new client: authenticate, then a request and its reply. */
async function assertServes (t: Test, gateway: Gateway, token = gateway.adminToken): Promise<void> {
  const client = await new Client(gateway.url).open()
  const id = `probe-${++served}`
  t.strictSame(await client.request({ action: 'authenticate', requestId: 1, token }),
    { action: 'authenticate', requestId: 1, status: 'success' }, 'a new client authenticates')
  t.strictSame(await client.request({ action: 'device/save', requestId: 2, deviceId: id, device: { name: id, networkId: 1 } }),
    { action: 'device/save', requestId: 2, status: 'success' }, 'and gets its reply')
  const closed = client.closed()
  client.socket.close()
  await closed
}

t.test('example-gateway: a client and a device make the full round trip over WebSocket', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'command-broker-gateway-'))
  const clock = manualClock(START)
  const gateway = await startGateway({ file: join(dir, 'hub.db'), secret: SECRET, port: 0, clock, logger: silent })
  t.teardown(async () => {
    await gateway.close()
    rmSync(dir, { recursive: true, force: true })
  })
  t.match(gateway.url, /^ws:\/\/127\.0\.0\.1:\d+\/api\/websocket$/)
  const deviceToken = signToken({ u: 2, a: [5, 8], n: ['1'] }, { secret: SECRET, now: START })
  const client = await new Client(gateway.url).open()
  const device = await new Client(gateway.url).open()

  t.strictSame(await client.request({ action: 'authenticate', requestId: 1, token: gateway.adminToken }),
    { action: 'authenticate', requestId: 1, status: 'success' })
  t.strictSame(await client.request({ action: 'device/save', requestId: 2, deviceId: 'lamp-1', device: { name: 'Lamp', networkId: 1 } }),
    { action: 'device/save', requestId: 2, status: 'success' })
  t.equal((await device.request({ action: 'authenticate', requestId: 1, token: deviceToken })).status, 'success')

  const deviceSub = await device.request({ action: 'command/subscribe', requestId: 2, deviceId: 'lamp-1', names: ['on'] })
  t.same(Object.keys(deviceSub), ['action', 'requestId', 'status', 'subscriptionId'])
  const updateSub = await client.request({ action: 'command/subscribe', requestId: 3, deviceId: 'lamp-1', returnUpdatedCommands: true })
  t.equal(updateSub.status, 'success')

  // The client inserts; the device, subscribed by name, receives the push.
  const inserted = await client.request({ action: 'command/insert', requestId: 4, deviceId: 'lamp-1', command: { command: 'on', parameters: { level: 3 }, lifetime: 30 } })
  t.strictSame(inserted, {
    action: 'command/insert',
    requestId: 4,
    status: 'success',
    command: { id: 1, timestamp: '2026-01-01T00:00:00.000', lastUpdated: '2026-01-01T00:00:00.000', userId: 1 }
  })
  const push = await device.next()
  t.same(Object.keys(push), ['action', 'command', 'subscriptionId'])
  t.equal(push.action, 'command/insert')
  t.equal(push.subscriptionId, deviceSub.subscriptionId)
  const command = push.command as Record<string, unknown>
  t.strictSame(command, {
    id: 1,
    command: 'on',
    timestamp: '2026-01-01T00:00:00.000',
    lastUpdated: '2026-01-01T00:00:00.000',
    userId: 1,
    deviceId: 'lamp-1',
    networkId: 1,
    deviceTypeId: null,
    parameters: { level: 3 },
    lifetime: 30,
    status: null,
    result: null
  })

  // The device sends the whole command back with its status and result, as real devices do.
  clock.advance(1500)
  t.strictSame(await device.request({ action: 'command/update', requestId: 3, deviceId: 'lamp-1', commandId: 1, command: { ...command, status: 'done', result: { ok: true } } }),
    { action: 'command/update', requestId: 3, status: 'success' })
  const update = await client.next()
  t.equal(update.action, 'command/update')
  t.equal(update.subscriptionId, updateSub.subscriptionId)
  t.match(update.command, { id: 1, status: 'done', result: { ok: true }, lastUpdated: '2026-01-01T00:00:01.500' })

  const got = await client.request({ action: 'command/get', requestId: 5, deviceId: 'lamp-1', commandId: 1 })
  t.match(got, { status: 'success', command: { id: 1, command: 'on', status: 'done', result: { ok: true } } })

  // A command nobody answers expires, and the client's update subscription is told.
  const off = await client.request({ action: 'command/insert', requestId: 6, deviceId: 'lamp-1', command: { command: 'off', lifetime: 5 } })
  const offId = (off.command as { id: number }).id
  clock.advance(5000)
  const expired = await client.next()
  t.match(expired, { action: 'command/update', subscriptionId: updateSub.subscriptionId, command: { id: offId, command: 'off', status: 'expired' } })
  t.match(await client.request({ action: 'command/get', requestId: 7, deviceId: 'lamp-1', commandId: offId }),
    { code: 404, status: 'error', error: `Command with id = ${offId} not found` })
  t.equal(device.queued, 0, 'the device heard nothing of "off": it subscribed to "on" only')

  // Frames that are not JSON get DeviceHive's error, and the connection stays usable.
  device.socket.send('not json')
  t.strictSame(await device.next(), { code: 400, status: 'error', error: 'Malformed Json received.' })
  client.socket.close()
  device.socket.close()
})

t.test('example-gateway: two gateways on one DATABASE_URL and schema are one cluster (needs PostgreSQL)', async (t) => {
  const pg = await postgres(t)
  if (pg === undefined) return
  const schema = pg.schema()
  const user = process.env.PGUSER ?? userInfo().username
  const url = process.env.DATABASE_URL ??
    `postgres://${encodeURIComponent(user)}@${process.env.PGHOST ?? '127.0.0.1'}:${process.env.PGPORT ?? 5432}/${process.env.PGDATABASE ?? user}`
  const [one, two] = [await openGateway(t, { databaseUrl: url, schema }), await openGateway(t, { databaseUrl: url, schema })]
  t.equal(existsSync(join(one.dir, 'hub.db')), false, 'no SQLite file: the commands are in PostgreSQL')
  const device = await new Client(one.gateway.url).open()
  const client = await new Client(two.gateway.url).open()
  t.equal((await client.request({ action: 'authenticate', requestId: 1, token: two.gateway.adminToken })).status, 'success')
  t.equal((await device.request({ action: 'authenticate', requestId: 1, token: one.gateway.adminToken })).status, 'success')
  t.equal((await client.request({ action: 'device/save', requestId: 2, deviceId: 'lamp-1', device: { name: 'Lamp' } })).status, 'success')
  t.equal((await device.request({ action: 'command/subscribe', requestId: 2, deviceId: 'lamp-1' })).status, 'success', 'the device, on the first gateway, sees the device the second saved')
  const inserted = await client.request({ action: 'command/insert', requestId: 3, deviceId: 'lamp-1', command: { command: 'on' } })
  t.equal(inserted.status, 'success')
  const push = await device.next()
  t.equal(push.action, 'command/insert', 'the command inserted on the second gateway is pushed by the first')
  t.equal((push.command as { id: number }).id, (inserted.command as { id: number }).id)
  for (const c of [device, client]) {
    const closed = c.closed()
    c.socket.close()
    await closed
  }
})

t.test('example-gateway: a DATABASE_URL nobody answers on fails the start, and frees the port', async (t) => {
  await t.rejects(startGateway({ databaseUrl: 'postgres://nobody@127.0.0.1:1/none', secret: SECRET, port: 0, logger: silent }))
})

t.test('example-gateway: /healthz answers ok, /metrics is broker.stats() in Prometheus text, anything else 404', async (t) => {
  const { gateway } = await openGateway(t)
  const client = await new Client(gateway.url).open()
  t.equal((await client.request({ action: 'authenticate', requestId: 1, token: gateway.adminToken })).status, 'success')
  t.equal((await client.request({ action: 'device/save', requestId: 2, deviceId: 'lamp-1', device: { name: 'Lamp' } })).status, 'success')
  t.equal((await client.request({ action: 'command/insert', requestId: 3, deviceId: 'lamp-1', command: { command: 'on', lifetime: 30 } })).status, 'success')
  const health = await fetch(`${gateway.httpUrl}/healthz`)
  t.equal(health.status, 200)
  t.equal(await health.text(), 'ok\n')
  const metrics = await fetch(`${gateway.httpUrl}/metrics`)
  t.equal(metrics.status, 200)
  t.match(metrics.headers.get('content-type'), /^text\/plain/)
  const text = await metrics.text()
  t.match(text, /^# HELP command_broker_sessions Open sessions\.$/m)
  t.match(text, /^command_broker_sessions 1$/m, 'the one client')
  t.match(text, /^command_broker_timers 1$/m, 'its command armed')
  t.match(text, /^command_broker_commits_total [1-9]\d*$/m)
  t.match(text, /^command_broker_store_bytes [1-9]\d*$/m, 'the SQLite file')
  t.equal((await fetch(`${gateway.httpUrl}/nothing`)).status, 404)
  const closed = client.closed()
  client.socket.close()
  await closed
})

t.test('example-gateway: a frame over 1 MiB closes only its connection, with 1009', async (t) => {
  const { gateway, logs } = await openGateway(t)
  const bystander = await new Client(gateway.url).open()
  const hostile = await new Client(gateway.url).open()
  hostile.socket.on('error', () => {})
  const code = hostile.closed()
  hostile.socket.send(Buffer.alloc(1024 * 1024 + 100, 'a'))
  t.equal(await code, 1009, 'the client hears "message too big"')
  t.match(logs, [{ level: 40, msg: 'closing a connection: Max payload size exceeded', err: { code: 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' }, remoteAddress: '127.0.0.1' }])
  t.equal((await bystander.request({ action: 'authenticate', requestId: 1, token: gateway.adminToken })).status, 'success',
    'a client connected before is still served')
  await assertServes(t, gateway)
})

t.test('example-gateway: a text frame that is not UTF-8 closes only its connection, with 1007', async (t) => {
  const { gateway, logs } = await openGateway(t)
  const bystander = await new Client(gateway.url).open()
  const hostile = await new Client(gateway.url).open()
  hostile.socket.on('error', () => {})
  const code = hostile.closed()
  // ws sends a Buffer as a text frame as is, without checking it.
  hostile.socket.send(Buffer.from([0xff, 0xfe, 0xfd, 0xfc]), { binary: false })
  t.equal(await code, 1007, 'the client hears "invalid frame payload data"')
  t.match(logs, [{ level: 40, msg: 'closing a connection: Invalid WebSocket frame: invalid UTF-8 sequence', err: { code: 'WS_ERR_INVALID_UTF8' } }])
  t.equal((await bystander.request({ action: 'authenticate', requestId: 1, token: gateway.adminToken })).status, 'success',
    'a client connected before is still served')
  await assertServes(t, gateway)
})

t.test('example-gateway: a binary frame is read as text', async (t) => {
  const { gateway } = await openGateway(t)
  const client = await new Client(gateway.url).open()
  client.socket.send(Buffer.from(JSON.stringify({ action: 'authenticate', requestId: 1, token: gateway.adminToken })), { binary: true })
  t.strictSame(await client.next(), { action: 'authenticate', requestId: 1, status: 'success' })
  client.socket.send(Buffer.from('not json'), { binary: true })
  t.strictSame(await client.next(), { code: 400, status: 'error', error: 'Malformed Json received.' })
  client.socket.close()
})

t.test('example-gateway: a client that stops reading is closed with 1008 and the gateway serves on', async (t) => {
  const maxBufferedBytes = 256 * 1024
  const { gateway, logs } = await openGateway(t, { maxBufferedBytes })
  const writer = await new Client(gateway.url).open()
  t.equal((await writer.request({ action: 'authenticate', requestId: 0, token: gateway.adminToken })).status, 'success')
  t.equal((await writer.request({ action: 'device/save', requestId: 0, deviceId: 'firehose', device: { name: 'Firehose', networkId: 1 } })).status, 'success')
  const reader = await new Client(gateway.url).open()
  t.equal((await reader.request({ action: 'authenticate', requestId: 1, token: gateway.adminToken })).status, 'success')
  t.equal((await reader.request({ action: 'command/subscribe', requestId: 2, deviceId: 'firehose' })).status, 'success')
  reader.tcp.pause()

  // ~60 kB a push: the kernel's socket buffers fill first (some MB on loopback), then the
  // gateway's own queue, until one more push would pass the bound.
  const blob = 'x'.repeat(60_000)
  let inserted = 0
  const statuses = new Set<unknown>()
  while (!logs.some((record) => String(record.msg).includes('not reading')) && inserted < 1000) {
    statuses.add((await writer.request({ action: 'command/insert', requestId: 3, deviceId: 'firehose', command: { command: 'fill', parameters: { blob } } })).status)
    inserted++
  }
  t.strictSame([...statuses], ['success'], 'the writer was served throughout')
  t.match(logs, [{ level: 40, msg: /^closing a connection: the client is not reading: \d+ bytes unsent$/, err: { code: 'ERR_NOT_READING' } }], `dropped after ${inserted} inserts`)
  const unsent = (logs[0]?.err as { bufferedAmount: number }).bufferedAmount
  t.ok(unsent > 0 && unsent <= maxBufferedBytes, `at most maxBufferedBytes were queued (${unsent})`)

  // Nothing more goes to the dropped connection.
  const after = await writer.request({ action: 'command/insert', requestId: 4, deviceId: 'firehose', command: { command: 'after' } })
  t.equal(after.status, 'success')
  await assertServes(t, gateway)

  // Reading again, the client gets what was queued, then the close frame.
  const code = reader.closed()
  reader.tcp.resume()
  t.equal(await code, 1008, 'policy violation')
  const pushes = []
  while (reader.queued > 0) pushes.push(await reader.next())
  t.ok(pushes.length > 0 && pushes.length < inserted, `the client got the ${pushes.length} pushes sent before the bound, not all ${inserted}`)
  t.ok(pushes.every((push) => (push.command as { command: string }).command === 'fill'), 'and not the command inserted after')
})

t.test('example-gateway: a second gateway on a busy port fails with EADDRINUSE before creating its database', async (t) => {
  const { gateway, dir } = await openGateway(t)
  const port = Number(new URL(gateway.url).port)
  const second = join(dir, 'second.db')
  const { logger, logs } = capture()
  const error = await startGateway({ file: second, secret: SECRET, port, logger }).then(
    () => t.fail('the second gateway started'), (err: unknown) => err)
  t.match(error, { code: 'EADDRINUSE', message: /EADDRINUSE/ })
  t.notOk(existsSync(second), 'the second database file was never created')
  t.strictSame(logs, [])
  await assertServes(t, gateway)
})

t.test('example-gateway: a broker option createBroker refuses fails the start, and releases the port and the file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'command-broker-gateway-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  // Found once the port is bound and the file opened: both are released (an open port would
  // keep this process from exiting; an open SQLite file keeps its -wal file).
  const file = join(dir, 'hub.db')
  await t.rejects(startGateway({ file, secret: '', port: 0, logger: silent }), { name: 'RangeError', message: /options\.secret/ })
  t.ok(existsSync(file), 'the file was opened')
  t.notOk(existsSync(`${file}-wal`), 'and closed')
})

t.test('example-gateway: a bad maxBufferedBytes fails before listening or opening anything', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'command-broker-gateway-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const file = join(dir, 'hub.db')
  for (const maxBufferedBytes of [0, -1, 1.5, Number.NaN]) {
    await t.rejects(startGateway({ file, secret: SECRET, port: 0, maxBufferedBytes, logger: silent }),
      new RangeError(`startGateway: maxBufferedBytes must be a positive integer, received ${maxBufferedBytes}`))
  }
  t.notOk(existsSync(file))
})

t.test('example-gateway: without a secret it makes a random one and refuses the demo secret', async (t) => {
  const { gateway, logs } = await openGateway(t, { secret: undefined })
  t.match(logs, [{ level: 40, msg: /^JWT_SECRET not set: generated a random secret; tokens from a DeviceHive server are refused until JWT_SECRET is set/ }])
  const demo = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'] }, { secret: 'devicehive', allowWeakKey: true })
  const client = await new Client(gateway.url).open()
  t.match(await client.request({ action: 'authenticate', requestId: 1, token: demo }), { status: 'error', code: 401 })
  client.socket.close()
  await assertServes(t, gateway)
})

t.test('example-gateway: other options go to createBroker, and maxFrameBytes bounds WebSocket frames too', async (t) => {
  const { gateway } = await openGateway(t, { maxFrameBytes: 1000 })
  const client = await new Client(gateway.url).open()
  client.socket.send('x'.repeat(1000))
  t.strictSame(await client.next(), { code: 400, status: 'error', error: 'Malformed Json received.' }, 'a frame of maxFrameBytes reaches the broker')
  const code = client.closed()
  client.socket.send('x'.repeat(1001))
  t.equal(await code, 1009, 'one byte more is refused by ws')
  await assertServes(t, gateway)
})

t.test('example-gateway: close() sends clients 1001, cuts off one that does not answer, and closes the broker', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'command-broker-gateway-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const gateway = await startGateway({ file: join(dir, 'hub.db'), secret: SECRET, port: 0, logger: silent })
  const polite = await new Client(gateway.url).open()
  const deaf = await new Client(gateway.url).open()
  deaf.socket.on('error', () => {})
  deaf.tcp.pause()
  const politeCode = polite.closed()
  const deafClosed = deaf.closed()
  await gateway.close()
  t.equal(await politeCode, 1001, 'going away')
  deaf.tcp.resume()
  await deafClosed
  t.pass('close() resolved although one client never answered its close frame')
  t.match(await gateway.broker.handle({ action: 'command/list', deviceId: 'x' }, gateway.adminToken), { code: 503 }, 'the broker is closed')
  await gateway.close()
  t.pass('close() again resolves')
})

t.test('example-gateway: a connection after the broker closed is refused with 1011 and the process lives', async (t) => {
  const { gateway, logs } = await openGateway(t)
  await gateway.broker.close()
  const client = await new Client(gateway.url).open()
  t.equal(await client.closed(), 1011, 'internal error')
  t.match(logs, [{ level: 40, msg: 'closing a connection: broker.session: the broker is closed', err: { code: 'ERR_CLOSED' } }])
})

interface Cli {
  child: ChildProcessWithoutNullStreams
  /** What it has printed so far. */
  output: () => { stdout: string, stderr: string }
  /** Its log records so far: the JSON lines of its stdout. */
  records: () => LogRecord[]
  /** Resolves with the first log record that matches, or rejects if the process exits first. */
  record: (match: (record: LogRecord) => boolean) => Promise<LogRecord>
  /** Its exit code and signal, once it has exited and its output is all read. */
  exited: Promise<[number | null, NodeJS.Signals | null]>
}

/** Every variable the command line reads: unset in the child unless given. */
const CONFIGURATION = ['HOST', 'PORT', 'DB_FILE', 'DATABASE_URL', 'DB_SCHEMA', 'JWT_SECRET', 'ALLOW_WEAK_KEY', 'MAX_BUFFERED_BYTES',
  'CLOSE_GRACE_MS', 'RETENTION', 'SHUTDOWN_TIMEOUT_MS', 'LOG_LEVEL'] as const

/**
 * Runs the command-line gateway (examples/gateway.ts as the main module) in a child process
 * with `env` added to this one's, and none of its configuration variables but those given.
 */
function runCli (t: Test, env: Record<string, string>): Cli {
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env }
  for (const name of CONFIGURATION) if (env[name] === undefined) delete childEnv[name]
  // tap loads .ts through --import loaders in execArgv; the child gets the same ones.
  const child = spawn(process.execPath, [...process.execArgv, GATEWAY], { env: childEnv })
  const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => { child.on('close', (code, signal) => { resolve([code, signal]) }) })
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk })
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
  const records = (): LogRecord[] => stdout.split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as LogRecord)
  const record = (match: (record: LogRecord) => boolean): Promise<LogRecord> => new Promise((resolve, reject) => {
    const look = (): void => {
      const found = stdout.endsWith('\n') ? records().find(match) : undefined
      if (found !== undefined) {
        child.stdout.off('data', look)
        resolve(found)
      }
    }
    child.stdout.on('data', look)
    look()
    void exited.then(() => { reject(new Error(`the gateway exited first: ${stdout}${stderr}`)) })
  })
  return { child, output: () => ({ stdout, stderr }), records, record, exited }
}

t.test('example-gateway: the command line logs its URL and admin token, serves, and exits 0 on SIGTERM', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'command-broker-gateway-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const { child, records, record, exited, output } = runCli(t, { PORT: '0', DB_FILE: join(dir, 'cli.db'), RETENTION: '3600' })
  const { url } = await record((r) => r.msg === `listening on ${String(r.url)}`) as { url: string }
  const { adminToken } = await record((r) => r.msg === 'admin token (24 h)') as { adminToken: string }
  t.match(url, /^ws:\/\/127\.0\.0\.1:\d+\/api\/websocket$/)
  t.match(records()[0], { level: 40, msg: /^JWT_SECRET not set: generated a random secret/, pid: child.pid, time: /^\d{4}-\d\d-\d\dT/ },
    'pino JSON lines on stdout, with ISO times')
  const client = await new Client(url).open()
  t.equal((await client.request({ action: 'authenticate', requestId: 1, token: adminToken })).status, 'success')
  t.equal((await client.request({ action: 'device/save', requestId: 2, deviceId: 'lamp-1', device: { name: 'Lamp' } })).status, 'success')
  t.equal((await client.request({ action: 'command/insert', requestId: 3, deviceId: 'lamp-1', command: { command: 'on' } })).status, 'success')
  const metrics = await (await fetch(`${url.replace(/^ws/, 'http').replace(/\/api\/websocket$/, '')}/metrics`)).text()
  t.match(metrics, /^command_broker_timers 1$/m, 'RETENTION armed the command sent without a lifetime')
  const code = client.closed()
  child.kill('SIGTERM')
  t.equal(await code, 1001, 'the connected client is told the server is going away')
  t.strictSame(await exited, [0, null], 'the gateway exits 0 by itself')
  t.match(records().slice(-2), [{ level: 30, msg: 'shutting down', signal: 'SIGTERM' }, { level: 30, msg: 'stopped' }])
  t.equal(output().stderr, '')
})

t.test('example-gateway: SIGTERM under load loses no acknowledged write, and the process exits 0 by itself', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'command-broker-gateway-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const file = join(dir, 'load.db')
  const { child, record, records, exited } = runCli(t, { PORT: '0', DB_FILE: file, JWT_SECRET: SECRET })
  const { url } = await record((r) => r.msg === `listening on ${String(r.url)}`) as { url: string }
  t.notOk(records().some((r) => 'adminToken' in r), 'with JWT_SECRET set, no token goes into the logs')
  const token = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'] }, { secret: SECRET })
  const client = await new Client(url).open()
  t.equal((await client.request({ action: 'authenticate', requestId: 1, token })).status, 'success')
  t.equal((await client.request({ action: 'device/save', requestId: 2, deviceId: 'pump', device: { name: 'Pump' } })).status, 'success')

  // Inserts, 32 in flight at any time, until the connection closes; SIGTERM once 300 are in.
  const acknowledged: number[] = []
  const failed: unknown[] = []
  let sent = 0
  let open = true
  const code = client.closed().then((code) => { open = false; return code })
  const send = (): void => {
    if (!open) return
    sent++
    client.socket.send(JSON.stringify({ action: 'command/insert', requestId: 100 + sent, deviceId: 'pump', command: { command: 'pulse', parameters: { n: sent } } }))
  }
  const receive = async (): Promise<void> => {
    // Replies already received when the close frame came are counted too.
    while (open || client.queued > 0) {
      const reply = await Promise.race([client.next(), code.then(() => undefined)])
      if (reply === undefined) break
      if (reply.status === 'success') acknowledged.push((reply.command as { id: number }).id)
      else failed.push(reply)
      if (acknowledged.length === 300) child.kill('SIGTERM')
      send()
    }
  }
  for (let i = 0; i < 32; i++) send()
  await receive()
  t.equal(await code, 1001, 'going away')
  t.strictSame(await exited, [0, null], 'the gateway exits 0 by itself')
  t.strictSame(failed, [], 'no request was refused')
  t.ok(acknowledged.length >= 300, `${acknowledged.length} of ${sent} inserts were acknowledged`)
  t.match(records().slice(-2), [{ msg: 'shutting down', signal: 'SIGTERM' }, { msg: 'stopped' }])

  // Every acknowledged command is in the file.
  const store = sqliteStore(file)
  t.teardown(() => store.close())
  const missing = acknowledged.filter((id) => store.getCommand(id, Date.now()) === undefined)
  t.strictSame(missing, [], `all ${acknowledged.length} acknowledged commands are in the file`)
})

t.test('example-gateway: a weak secret is refused unless asked for, and the port is released', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'command-broker-gateway-'))
  let gateway: Gateway | undefined
  // One teardown, in order: the gateway lets go of its files before the directory goes.
  t.teardown(async () => {
    await gateway?.close()
    rmSync(dir, { recursive: true, force: true })
  })
  await t.rejects(startGateway({ file: join(dir, 'weak.db'), secret: 'devicehive', port: 0, logger: silent }),
    { name: 'RangeError', message: /^createBroker: the key must be at least 32 bytes, received 6/ })
  gateway = await startGateway({ file: join(dir, 'weak.db'), secret: 'devicehive', allowWeakKey: true, port: 0, logger: silent })
  const demo = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'] }, { secret: 'devicehive', allowWeakKey: true })
  const client = await new Client(gateway.url).open()
  t.equal((await client.request({ action: 'authenticate', requestId: 1, token: demo })).status, 'success', 'with allowWeakKey, the demo secret works')
  t.equal((await client.request({ action: 'authenticate', requestId: 2, token: gateway.adminToken })).status, 'success', 'and so does the admin token it prints')
  client.socket.close()
})

t.test('example-gateway: the command line refuses a weak JWT_SECRET without ALLOW_WEAK_KEY=1', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'command-broker-gateway-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const { records, exited } = runCli(t, { PORT: '0', DB_FILE: join(dir, 'weak.db'), JWT_SECRET: 'devicehive' })
  t.strictSame(await exited, [1, null])
  t.match(records(), [{ level: 60, msg: /^could not start: createBroker: the key must be at least 32 bytes, received 6 .*allowWeakKey/ }])
})

t.test('example-gateway: the command line on a busy port exits 1 with one clear line and no database', async (t) => {
  const { gateway, dir } = await openGateway(t)
  const port = new URL(gateway.url).port
  const file = join(dir, 'second.db')
  const { output, records, exited } = runCli(t, { PORT: port, DB_FILE: file, JWT_SECRET: SECRET })
  t.strictSame(await exited, [1, null])
  t.equal(output().stderr, '')
  t.match(records(), [{ level: 60, msg: `could not start: listen EADDRINUSE: address already in use 127.0.0.1:${port}`, err: { code: 'EADDRINUSE' } }])
  t.equal(records().length, 1, 'one line')
  t.notOk(existsSync(file), 'the database file was never created')
  await assertServes(t, gateway)
})

t.test('example-gateway: the command line names every bad variable of its environment and exits 1 before starting', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'command-broker-gateway-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const file = join(dir, 'never.db')
  const { output, exited } = runCli(t, {
    PORT: '80a', DB_FILE: file, DATABASE_URL: 'mysql://db/hub', DB_SCHEMA: 'Hub', JWT_SECRET: '', ALLOW_WEAK_KEY: 'yes',
    MAX_BUFFERED_BYTES: '0', CLOSE_GRACE_MS: '-1', RETENTION: '1d', SHUTDOWN_TIMEOUT_MS: '1e4', LOG_LEVEL: 'loud'
  })
  t.strictSame(await exited, [1, null])
  t.equal(output().stdout, '')
  t.strictSame(output().stderr.split('\n'), [
    '[gateway] bad environment: PORT must be a whole number from 0 to 65535, received "80a"',
    '[gateway] bad environment: DATABASE_URL must be a postgres:// or postgresql:// URL, received "mysql://db/hub"',
    '[gateway] bad environment: DB_SCHEMA must be a lowercase identifier of 1 to 56 characters (a-z, 0-9, _; not starting with a digit or pg_), received "Hub"',
    '[gateway] bad environment: JWT_SECRET must not be empty (unset it for a random secret), received ""',
    '[gateway] bad environment: ALLOW_WEAK_KEY must be 1 or 0, received "yes"',
    `[gateway] bad environment: MAX_BUFFERED_BYTES must be a whole number from 1 to ${Number.MAX_SAFE_INTEGER}, received "0"`,
    '[gateway] bad environment: CLOSE_GRACE_MS must be a whole number from 0 to 2147483647, received "-1"',
    '[gateway] bad environment: RETENTION must be a whole number from 0 to 2147483647, received "1d"',
    '[gateway] bad environment: SHUTDOWN_TIMEOUT_MS must be a whole number from 1 to 2147483647, received "1e4"',
    '[gateway] bad environment: LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent, received "loud"',
    ''
  ])
  t.notOk(existsSync(file), 'nothing was opened')
})
