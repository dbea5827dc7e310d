// command-broker/ws over real sockets on port 0: one session per connection, replies in
// order and before a subscription's pushes, frames as text, hostile clients (oversized and
// invalid frames, a client that never reads) losing only their own connection, and close()
// with 1001, a grace period and a client that never answers.
import { once } from 'node:events'
import { readdirSync, readFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { WebSocket, WebSocketServer, type ServerOptions } from 'ws'
import { signToken } from '../../lib/auth.js'
import { createBroker, type Broker } from '../../lib/broker.js'
import { BrokerError } from '../../lib/errors.js'
import { memoryStore } from '../../lib/store/memory.js'
import * as entry from '../../lib/ws/attach.js'
import { attach, type AttachErrorContext, type AttachOptions, type Attachment } from '../../lib/ws/attach.js'
import { Client } from '../fixtures/ws-client.js'

const SECRET = 'dGVzdC1zZWNyZXQtb2YtdGhpcnR5LXR3by1ieXRlcyE='
const TOKEN = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'], e: Date.now() + 3_600_000 }, { secret: SECRET })
const MiB = 1024 * 1024


interface Setup {
  wss: WebSocketServer
  broker: Broker
  attachment: Attachment
  url: string
  errors: Array<[Error, AttachErrorContext]>
  connect: () => Promise<Client>
}

/**
 * A server on a free port with the broker's maxFrameBytes as maxPayload, a broker on a
 * memory store, and attach() between them, recording what onError is told; all closed at
 * teardown. A 'connection' listener the test adds runs after attach's.
 */
async function setup (t: Test, options: AttachOptions = {}, serverOptions: ServerOptions = {}): Promise<Setup> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, maxPayload: MiB, ...serverOptions })
  await once(wss, 'listening')
  const broker = createBroker(memoryStore(), { secret: SECRET })
  const errors: Array<[Error, AttachErrorContext]> = []
  const attachment = attach(wss, broker, { onError: (error, context) => { errors.push([error, context]) }, ...options })
  const url = `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`
  const clients: Client[] = []
  t.teardown(async () => {
    for (const client of clients) client.socket.terminate()
    await attachment.close()
    await new Promise((resolve) => { wss.close(resolve) })
    await broker.close()
  })
  const connect = async (): Promise<Client> => {
    const client = new Client(url)
    client.socket.on('error', () => {})
    clients.push(client)
    return await client.open()
  }
  return { wss, broker, attachment, url, errors, connect }
}

async function authenticated (connect: () => Promise<Client>): Promise<Client> {
  const client = await connect()
  const reply = await client.request({ action: 'authenticate', requestId: 0, token: TOKEN })
  if (reply.status !== 'success') throw new Error(`authenticate: ${JSON.stringify(reply)}`)
  return client
}

/** Asserts a client connected now is served: authenticate, then a request and its reply. */
async function assertServes (t: Test, connect: () => Promise<Client>): Promise<void> {
  const client = await authenticated(connect)
  t.strictSame(await client.request({ action: 'command/list', requestId: 1, deviceId: 'nobody' }),
    { action: 'command/list', requestId: 1, code: 404, status: 'error', error: 'Device with such deviceId = nobody not found' }, 'a new client is served')
  client.socket.close()
}

t.test('ws/attach: bad arguments and options throw, naming what is wrong', async (t) => {
  const wss = new WebSocketServer({ noServer: true })
  const broker = createBroker(memoryStore(), { secret: SECRET })
  t.teardown(async () => { await broker.close() })
  const call = attach as (...args: unknown[]) => Attachment
  t.throws(() => call(undefined, broker), new TypeError('attach: wss must be a ws WebSocketServer, received undefined'))
  t.throws(() => call(null, broker), new TypeError('attach: wss must be a ws WebSocketServer, received null'))
  t.throws(() => call({}, broker), new TypeError('attach: wss must be a ws WebSocketServer, received Object'))
  t.throws(() => call(wss, {}), new TypeError('attach: broker must be a Broker, received Object'))
  t.throws(() => call(wss, broker, null), new TypeError('attach: options must be an object, received null'))
  t.throws(() => call(wss, broker, 'x'), new TypeError('attach: options must be an object, received string "x"'))
  t.throws(() => call(wss, broker, { maxBufferBytes: 1 }),
    new TypeError('attach: unknown option maxBufferBytes; expected one of maxBufferedBytes, closeGraceMs, onError'))
  t.throws(() => call(wss, broker, { maxBufferedBytes: '1' }), new TypeError('attach: options.maxBufferedBytes must be an integer, received string "1"'))
  for (const value of [0, -1, 1.5, Number.NaN, 2 ** 53]) {
    t.throws(() => call(wss, broker, { maxBufferedBytes: value }),
      new RangeError(`attach: options.maxBufferedBytes must be an integer from 1 to ${Number.MAX_SAFE_INTEGER}, received number ${value}`))
  }
  t.throws(() => call(wss, broker, { closeGraceMs: null }), new TypeError('attach: options.closeGraceMs must be an integer, received null'))
  for (const value of [-1, 0.5, 2 ** 31]) {
    t.throws(() => call(wss, broker, { closeGraceMs: value }),
      new RangeError(`attach: options.closeGraceMs must be an integer from 0 to 2147483647, received number ${value}`))
  }
  t.throws(() => call(wss, broker, { onError: 'log' }), new TypeError('attach: options.onError must be a function, received string "log"'))
  t.equal(wss.listenerCount('connection'), 0, 'nothing was attached')
  const attachment = attach(wss, broker, { maxBufferedBytes: 1, closeGraceMs: 0, onError: () => {} })
  t.equal(attachment.connections, 0)
  await attachment.close()
})

t.test('ws/attach: one session per connection, requests answered in order, a subscribe reply before its pushes', async (t) => {
  const { connect, attachment } = await setup(t)
  const writer = await authenticated(connect)
  const reader = await authenticated(connect)
  t.equal(attachment.connections, 2)
  t.equal((await writer.request({ action: 'device/save', requestId: 1, deviceId: 'lamp-1', device: { name: 'Lamp' } })).status, 'success')

  // A burst of requests on one connection, writes and reads mixed: the replies come in the
  // order the requests were sent, and each read sees the connection's earlier writes.
  const burst = 50
  for (let i = 0; i < burst; i++) {
    writer.socket.send(JSON.stringify(i % 2 === 0
      ? { action: 'command/insert', requestId: 100 + i, deviceId: 'lamp-1', command: { command: `c${i}` } }
      : { action: 'command/list', requestId: 100 + i, deviceId: 'lamp-1', take: 1000 }))
  }
  const replies = []
  for (let i = 0; i < burst; i++) replies.push(await writer.next())
  t.strictSame(replies.map((reply) => reply.requestId), Array.from({ length: burst }, (_, i) => 100 + i), 'replies in request order')
  t.ok(replies.every((reply) => reply.status === 'success'))
  const seen = replies.filter((_, i) => i % 2 === 1).map((reply) => (reply.commands as unknown[]).length)
  t.ok(seen.every((count, i) => count >= i + 1), `each list saw every insert sent before it (${seen.join(' ')})`)

  // The subscribe reply and then, on the same connection, an insert's push: the reply first.
  reader.socket.send(JSON.stringify({ action: 'command/subscribe', requestId: 2, deviceId: 'lamp-1' }))
  reader.socket.send(JSON.stringify({ action: 'command/insert', requestId: 3, deviceId: 'lamp-1', command: { command: 'on' } }))
  const first = await reader.next()
  t.match(first, { action: 'command/subscribe', requestId: 2, status: 'success' })
  const rest = [await reader.next(), await reader.next()]
  t.match(rest.find((m) => m.action === 'command/insert' && m.subscriptionId === first.subscriptionId), { command: { command: 'on' } }, 'the push, after the reply')
  t.match(rest.find((m) => m.requestId === 3), { status: 'success' })

  // Sessions are per connection: the writer has no subscription, and heard no push.
  t.strictSame(await writer.request({ action: 'subscription/list', requestId: 4 }),
    { action: 'subscription/list', requestId: 4, status: 'success', subscriptions: [] })
  t.match(await reader.request({ action: 'subscription/list', requestId: 5 }), { subscriptions: [{ subscriptionId: first.subscriptionId }] })
  t.equal(writer.queued, 0)

  // A connection's session closes with it: the reader's subscription hears nothing more.
  const closed = reader.closed()
  reader.socket.close()
  await closed
  while (attachment.connections > 1) await new Promise(setImmediate)
  t.equal(attachment.connections, 1)
  t.equal((await writer.request({ action: 'command/insert', requestId: 6, deviceId: 'lamp-1', command: { command: 'off' } })).status, 'success')
})

t.test('ws/attach: binary frames are read as UTF-8 text, whatever the socket\'s binaryType', async (t) => {
  const binaryTypes = ['nodebuffer', 'arraybuffer', 'fragments'] as const
  let connection = 0
  const { connect, wss } = await setup(t)
  wss.on('connection', (socket) => { socket.binaryType = binaryTypes[connection++ % binaryTypes.length] as typeof binaryTypes[number] })
  for (const binaryType of binaryTypes) {
    const client = await connect()
    client.socket.send(Buffer.from(JSON.stringify({ action: 'authenticate', requestId: 1, token: TOKEN })), { binary: true })
    t.strictSame(await client.next(), { action: 'authenticate', requestId: 1, status: 'success' }, binaryType)
    client.socket.send(Buffer.from('not json'), { binary: true })
    t.strictSame(await client.next(), { code: 400, status: 'error', error: 'Malformed Json received.' })
    client.socket.send(JSON.stringify({ action: 'command/list', requestId: 2, deviceId: 'x' }))
    t.match(await client.next(), { requestId: 2, code: 404 }, 'and text frames too')
  }
})

t.test('ws/attach: a frame over maxPayload closes only its connection, with 1009, and is reported', async (t) => {
  const { connect, errors } = await setup(t)
  const bystander = await authenticated(connect)
  const hostile = await connect()
  const code = hostile.closed()
  hostile.socket.send(Buffer.alloc(MiB + 100, 'a'))
  t.equal(await code, 1009, 'message too big')
  t.equal(errors.length, 1)
  t.match(errors[0]?.[0], { code: 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH', message: 'Max payload size exceeded' })
  t.ok(errors[0]?.[1].socket instanceof WebSocket, 'with the connection')
  t.match(errors[0]?.[1].request, { url: '/', headers: { host: /^127\.0\.0\.1:\d+$/ } }, 'and its request')
  t.match(await bystander.request({ action: 'command/list', requestId: 1, deviceId: 'x' }), { code: 404 }, 'the other connection is served')
  await assertServes(t, connect)
})

t.test('ws/attach: a text frame that is not UTF-8 closes only its connection, with 1007, and is reported', async (t) => {
  const { connect, errors } = await setup(t)
  const bystander = await authenticated(connect)
  const hostile = await connect()
  const code = hostile.closed()
  // ws sends a Buffer as a text frame as it is, unchecked.
  hostile.socket.send(Buffer.from([0xff, 0xfe, 0xfd, 0xfc]), { binary: false })
  t.equal(await code, 1007, 'invalid frame payload data')
  t.match(errors.map(([error]) => error), [{ code: 'WS_ERR_INVALID_UTF8', message: 'Invalid WebSocket frame: invalid UTF-8 sequence' }])
  t.match(await bystander.request({ action: 'command/list', requestId: 1, deviceId: 'x' }), { code: 404 })
  await assertServes(t, connect)
})

t.test('ws/attach: without onError, errors become process warnings', async (t) => {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, maxPayload: 100 })
  await once(wss, 'listening')
  const broker = createBroker(memoryStore(), { secret: SECRET })
  const attachment = attach(wss, broker)
  t.teardown(async () => {
    await attachment.close()
    await new Promise((resolve) => { wss.close(resolve) })
    await broker.close()
  })
  const warned = once(process, 'warning') as Promise<[Error]>
  const client = new Client(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}`)
  client.socket.on('error', () => {})
  await client.open()
  const code = client.closed()
  client.socket.send('x'.repeat(101))
  t.equal(await code, 1009)
  const [warning] = await warned
  t.match(warning, { code: 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' })
})

t.test('ws/attach: a client that never reads is closed with 1008 once maxBufferedBytes would pass, and nothing else is', async (t) => {
  const maxBufferedBytes = 256 * 1024
  const { connect, errors } = await setup(t, { maxBufferedBytes })
  const writer = await authenticated(connect)
  t.equal((await writer.request({ action: 'device/save', requestId: 1, deviceId: 'firehose', device: { name: 'Firehose' } })).status, 'success')
  const reader = await authenticated(connect)
  t.equal((await reader.request({ action: 'command/subscribe', requestId: 2, deviceId: 'firehose' })).status, 'success')
  reader.tcp.pause()

  // ~60 kB a push: the kernel's socket buffers fill first (some MB on loopback), then the
  // connection's own queue, until one more push would pass the bound.
  const blob = 'x'.repeat(60_000)
  let inserted = 0
  const statuses = new Set<unknown>()
  while (errors.length === 0 && inserted < 2000) {
    statuses.add((await writer.request({ action: 'command/insert', requestId: 3, deviceId: 'firehose', command: { command: 'fill', parameters: { blob } } })).status)
    inserted++
  }
  t.strictSame([...statuses], ['success'], 'the writer was served throughout')
  t.equal(errors.length, 1, `closed after ${inserted} inserts`)
  const [error, context] = errors[0] as [Error & { bufferedAmount: number }, AttachErrorContext]
  t.match(error, { code: 'ERR_NOT_READING', message: /^the client is not reading: \d+ bytes unsent$/ })
  t.ok(error.bufferedAmount > 0 && error.bufferedAmount <= maxBufferedBytes, `at most maxBufferedBytes were queued (${error.bufferedAmount})`)
  t.equal(context.socket.readyState, WebSocket.CLOSING)

  // Nothing more goes to the dropped connection; the others are served.
  t.equal((await writer.request({ action: 'command/insert', requestId: 4, deviceId: 'firehose', command: { command: 'after' } })).status, 'success')
  await assertServes(t, connect)

  // Reading again, the client gets what was queued, then the close frame.
  const code = reader.closed()
  reader.tcp.resume()
  t.equal(await code, 1008, 'policy violation')
  const pushes = []
  while (reader.queued > 0) pushes.push(await reader.next())
  t.ok(pushes.length > 0 && pushes.length < inserted, `the client got the ${pushes.length} pushes sent before the bound, not all ${inserted}`)
  t.ok(pushes.every((push) => (push.command as { command: string }).command === 'fill'), 'and not the command inserted after')
})

t.test('ws/attach: a reply to a connection that has closed meanwhile is dropped', async (t) => {
  const { connect, errors, broker, wss } = await setup(t)
  // Runs after attach's own message listener: the request is under way, then the connection goes.
  wss.on('connection', (socket) => { socket.on('message', () => { if (socket.listenerCount('message') > 0) socket.terminate() }) })
  const client = await connect()
  const closed = client.closed()
  client.socket.send(JSON.stringify({ action: 'authenticate', requestId: 0, token: TOKEN }))
  client.socket.send(JSON.stringify({ action: 'device/save', requestId: 1, deviceId: 'lamp-1', device: { name: 'Lamp' } }))
  t.equal(await closed, 1006)
  t.equal(client.queued, 0, 'no reply')
  t.match(await broker.handle({ action: 'device/get', deviceId: 'lamp-1' }, TOKEN), { status: 'success', device: { id: 'lamp-1' } }, 'the request was served')
  t.strictSame(errors, [])
})

t.test('ws/attach: a connection the broker refuses a session is closed with 1011 and reported', async (t) => {
  const { connect, errors, broker, attachment } = await setup(t)
  await broker.close()
  const client = await connect()
  t.equal(await client.closed(), 1011, 'internal error')
  t.match(errors.map(([error]) => error), [new BrokerError('ERR_CLOSED', 'broker.session: the broker is closed')])
  while (attachment.connections > 0) await new Promise(setImmediate)
  t.equal(attachment.connections, 0)
})

t.test('ws/attach: close() answers requests under way, sends 1001, cuts off a client that never answers, and leaves the server and broker open', async (t) => {
  const closeGraceMs = 300
  let closing: Promise<void> | undefined
  const { connect, broker, errors, attachment, wss } = await setup(t, { closeGraceMs })
  // Runs after attach's own message listener: the first frame is under way when close() is called.
  // What each connection's close was on the server's side: 1006 if the client never answered.
  const serverCodes: number[] = []
  wss.on('connection', (socket) => {
    socket.on('message', () => { closing ??= attachment.close() })
    socket.on('close', (code) => { serverCodes.push(code) })
  })
  const polite = await connect()
  const deaf = await connect()
  deaf.tcp.pause()
  t.equal(attachment.connections, 2)
  const politeCode = polite.closed()
  const deafCode = deaf.closed()

  // Two frames at once: the first is being served when close() is called, the second comes after.
  const started = Date.now()
  polite.socket.send(JSON.stringify({ action: 'authenticate', requestId: 1, token: TOKEN }))
  polite.socket.send(JSON.stringify({ action: 'device/save', requestId: 2, deviceId: 'lamp-2', device: { name: 'Lamp' } }))
  t.strictSame(await polite.next(), { action: 'authenticate', requestId: 1, status: 'success' }, 'the request under way is answered')
  t.equal(await politeCode, 1001, 'then going away')
  t.equal(polite.queued, 0, 'the frame that came after close() was not served')
  t.match(await broker.handle({ action: 'device/get', deviceId: 'lamp-2' }, TOKEN), { code: 404 })
  t.ok(closing !== undefined)
  t.equal(attachment.close(), closing, 'close() again returns the same promise')
  await closing
  const took = Date.now() - started
  t.ok(took >= closeGraceMs - 20, `close() waited for the client that does not answer (${took} ms)`)
  t.equal(attachment.connections, 0)
  t.strictSame(serverCodes, [1001, 1006], 'the polite client answered 1001; the other was cut off without an answer')
  deaf.tcp.resume()
  t.equal(await deafCode, 1001, 'the close frame was waiting in its buffer')

  // The server still accepts; a connection made now is sent away at once, and the broker serves.
  const late = await connect()
  t.equal(await late.closed(), 1001)
  t.equal((await broker.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'Lamp' } }, TOKEN)).status, 'success', 'the broker is open')
  t.strictSame(errors, [])
})

t.test('ws/attach: command-broker/ws is its own entry, and ws an optional peer that only it needs', async (t) => {
  t.strictSame(Object.keys(entry), ['attach'], 'it exports attach alone')
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as Record<string, Record<string, unknown>>
  t.strictSame(pkg.exports?.['./ws'], { types: './dist/lib/ws/attach.d.ts', default: './dist/lib/ws/attach.js' })
  t.match(pkg.peerDependencies, { ws: '^8.0.0' })
  t.strictSame(pkg.peerDependenciesMeta?.ws, { optional: true })
  t.ok(pkg.devDependencies?.ws !== undefined && pkg.dependencies?.ws === undefined, 'installed for development, not for users')
  // No file of lib imports ws at run time: the core opens no socket, and attach needs only its types.
  const lib = new URL('../../lib/', import.meta.url)
  const files = readdirSync(lib, { recursive: true, encoding: 'utf8' }).filter((file) => file.endsWith('.ts'))
  t.ok(files.includes('ws/attach.ts') && files.length > 10)
  const loading = files.filter((file) => /^import (?!type )[^\n]*from 'ws'|import\('ws'\)|require\('ws'\)/m.test(readFileSync(new URL(file, lib), 'utf8')))
  t.strictSame(loading, [])
  t.match(readFileSync(new URL('ws/attach.ts', lib), 'utf8'), /^import type \{ RawData, WebSocket, WebSocketServer \} from 'ws'$/m)
})
