import t, { type Test } from 'tap'
import type { Broker } from '../lib/broker.js'
import { BrokerError } from '../lib/errors.js'
import { memoryStore } from '../lib/store/memory.js'
import type { Command, Push, Reply } from '../lib/schema.js'
import { FanOut } from '../lib/fan-out.js'
import { Reaper, reaper, SessionState, type Session } from '../lib/session.js'
import type { Store } from '../lib/store/store.js'
import { body, CLOSED, DENIED, errorOf, EXPIRED, INVALID, MALFORMED, NO_COMMAND, NO_COMMAND_ID, NO_DEVICE_ID, overridable, setup, START, UNAUTHORIZED } from './fixtures/broker.js'

const TWELVE_KEYS = ['id', 'command', 'timestamp', 'lastUpdated', 'userId', 'deviceId', 'networkId', 'deviceTypeId', 'parameters', 'lifetime', 'status', 'result']
const ERROR_KEYS = ['action', 'requestId', 'code', 'status', 'error']
const VALIDATION = /^Validation failed with following violations: \S/

type Row = [name: string, token: string | undefined, fields: Record<string, unknown>, expected: { code: number, error: string } | undefined]

/** An ISO time `ms` after START, as a client would send it. */
function iso (ms: number): string {
  return new Date(START + ms).toISOString()
}

/** The same time as the broker writes it: no zone. */
function wire (ms: number): string {
  return new Date(START + ms).toISOString().slice(0, 23)
}

/** Lets queued work (commits, promise reactions) run: one event-loop turn, not a sleep. */
function turn (): Promise<void> {
  return new Promise(setImmediate)
}

interface Client {
  session: Session
  pushes: Push[]
}

/** A session that records its pushes, authenticated with `token` when one is given. */
async function connect (broker: Broker, token?: string): Promise<Client> {
  const pushes: Push[] = []
  const session = broker.session((push) => { pushes.push(push) })
  if (token !== undefined) {
    const reply = await session.handle({ action: 'authenticate', token })
    if (reply.status !== 'success') throw new Error(`authenticate failed: ${JSON.stringify(reply)}`)
  }
  return { session, pushes }
}

/** Subscribes and returns the subscription id (throws on an error reply). */
async function subscribe (session: Session, fields: Record<string, unknown> = {}, token?: string): Promise<number> {
  const reply = await session.handle({ action: 'command/subscribe', ...fields }, token)
  return body(reply).subscriptionId as number
}

/** A command as command/get shows it. */
async function getCommand (session: Session, deviceId: string, commandId: number): Promise<Command> {
  return body(await session.handle({ action: 'command/get', deviceId, commandId })).command as Command
}

/** Runs error rows through `session` (a row's token, when given, is message-level) and checks each reply. */
async function checkRows (t: Test, session: Session, action: string, rows: Row[]): Promise<void> {
  for (const [name, token, fields, expected] of rows) {
    const reply = await session.handle({ action, requestId: name, ...fields }, token)
    t.strictSame(errorOf(reply), expected, name)
    if (expected !== undefined) t.same(Object.keys(reply), ERROR_KEYS, `${name}: error keys`)
    t.equal(reply.action, action, `${name}: action echoed`)
    t.equal(reply.requestId, name, `${name}: requestId echoed`)
  }
}

// --- authenticate (§11) ---------------------------------------------------------------------

t.test('session: authenticate succeeds with exactly action, requestId, status', async (t) => {
  const { broker, admin } = setup(t)
  const session = broker.session(() => {})
  const reply = await session.handle({ action: 'authenticate', requestId: 'a1', token: admin })
  t.same(Object.keys(reply), ['action', 'requestId', 'status'])
  t.equal(JSON.stringify(reply), '{"action":"authenticate","requestId":"a1","status":"success"}')
  const frame = await session.handle(JSON.stringify({ action: 'authenticate', token: admin }))
  t.equal(JSON.stringify(frame), '{"action":"authenticate","requestId":null,"status":"success"}', 'a raw frame works too')
})

t.test('session: authenticate refuses empty, invalid, refresh, expired and non-string tokens', async (t) => {
  const { broker, token, clock } = setup(t)
  const session = broker.session(() => {})
  const rows: Row[] = [
    ['token missing', undefined, {}, UNAUTHORIZED],
    ['token empty', undefined, { token: '' }, UNAUTHORIZED],
    ['token null', undefined, { token: null }, UNAUTHORIZED],
    ['garbage token', undefined, { token: 'not.a.jwt' }, INVALID],
    ['refresh token', undefined, { token: token({ t: 0 }) }, INVALID],
    ['expired token', undefined, { token: token({ e: clock.now() - 1 }) }, EXPIRED],
    ['token a number is read as its text', undefined, { token: 42 }, INVALID],
    ['token an object', undefined, { token: { jwt: 'x' } }, MALFORMED],
    ['token an array', undefined, { token: [] }, MALFORMED]
  ]
  await checkRows(t, session, 'authenticate', rows)
  t.equal(JSON.stringify(await session.handle({ action: 'authenticate', requestId: 3, token: '' })),
    '{"action":"authenticate","requestId":3,"code":401,"status":"error","error":"Unauthorized"}')
})

t.test('session: a failed authenticate leaves the previous token in place', async (t) => {
  const { broker, token, device, clock } = setup(t)
  await device('lamp-1')
  const { session } = await connect(broker, token({ u: 7 }))
  for (const bad of ['', 'x.y.z', token({ t: 0 }), token({ e: clock.now() - 1 }), 5, null]) {
    t.equal((await session.handle({ action: 'authenticate', token: bad })).status, 'error', `refused: ${String(bad).slice(0, 12)}`)
  }
  const reply = await session.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on' } })
  t.equal((body(reply).command as { userId: number }).userId, 7, 'still the first token')
  t.equal((await session.handle({ action: 'authenticate', token: token({ u: 8 }) })).status, 'success')
  const again = await session.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on' } })
  t.equal((body(again).command as { userId: number }).userId, 8, 'a successful authenticate replaces it')
})

t.test('session: a session that never authenticated gets 401 Unauthorized on every other action', async (t) => {
  const { broker, device, insert } = setup(t)
  await device('lamp-1')
  await insert('lamp-1', { command: 'on' })
  const session = broker.session(() => { t.fail('no push expected') })
  const rows: Array<[string, Record<string, unknown>]> = [
    ['command/insert', { deviceId: 'lamp-1', command: { command: 'on' } }],
    ['command/update', { deviceId: 'lamp-1', commandId: 1, command: { status: 'done' } }],
    ['command/get', { deviceId: 'lamp-1', commandId: 1 }],
    ['command/list', { deviceId: 'lamp-1' }],
    ['command/subscribe', { deviceId: 'lamp-1' }],
    ['command/subscribe', {}],
    ['command/unsubscribe', {}],
    ['command/unsubscribe', { subscriptionId: 1 }],
    ['subscription/list', {}],
    ['device/save', { deviceId: 'lamp-2', device: { name: 'x' } }],
    ['device/get', { deviceId: 'lamp-1' }],
    ['device/delete', { deviceId: 'lamp-1' }]
  ]
  for (const [action, fields] of rows) {
    const reply = await session.handle({ action, requestId: 9, ...fields })
    t.strictSame(reply, { action, requestId: 9, code: 401, status: 'error', error: 'Unauthorized' }, action)
  }
})

t.test('session: a message-level token works without authenticate and overrides the session token', async (t) => {
  const { broker, token, device } = setup(t)
  await device('lamp-1')
  const { session, pushes } = await connect(broker)
  const id = await subscribe(session, { deviceId: 'lamp-1' }, token({ u: 3 }))
  t.ok(Number.isInteger(id), 'subscribed with a message-level token alone')
  const first = await session.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on' } }, token({ u: 3 }))
  t.equal((body(first).command as { userId: number }).userId, 3)
  t.equal(pushes.length, 1, 'the subscription works')
  t.strictSame(errorOf(await session.handle({ action: 'command/list', deviceId: 'lamp-1' })), UNAUTHORIZED, 'the token was not kept')
  await session.handle({ action: 'authenticate', token: token({ u: 7, n: ['2'] }) })
  t.strictSame(errorOf(await session.handle({ action: 'command/get', deviceId: 'lamp-1', commandId: 1 })), DENIED, 'session token: network 2 only')
  const over = await session.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on' } }, token({ u: 9 }))
  t.equal((body(over).command as { userId: number }).userId, 9, 'the message-level token wins')
  t.strictSame(errorOf(await session.handle({ action: 'command/get', deviceId: 'lamp-1', commandId: 1 })), DENIED, 'and the session token is unchanged')
})

t.test('session: via broker.handle, authenticate only validates', async (t) => {
  const { broker, admin, device, clock, token } = setup(t)
  await device('lamp-1')
  t.strictSame(await broker.handle({ action: 'authenticate', requestId: 1, token: admin }), { action: 'authenticate', requestId: 1, status: 'success' })
  t.strictSame(errorOf(await broker.handle({ action: 'authenticate', token: 'x.y.z' })), INVALID)
  t.strictSame(errorOf(await broker.handle({ action: 'authenticate', token: token({ e: clock.now() - 1 }) })), EXPIRED)
  t.strictSame(errorOf(await broker.handle({ action: 'authenticate' })), UNAUTHORIZED)
  t.strictSame(errorOf(await broker.handle({ action: 'authenticate', token: 1 })), INVALID, 'a number is read as its text')
  t.strictSame(errorOf(await broker.handle({ action: 'authenticate', token: {} })), MALFORMED)
  t.strictSame(errorOf(await broker.handle({ action: 'device/get', deviceId: 'lamp-1' })), UNAUTHORIZED, 'nothing remembered')
})

t.test('session: broker.handle answers subscription actions 400, a session is needed', async (t) => {
  const { broker, admin } = setup(t)
  const error = 'Subscriptions need a session: use broker.session(push)'
  for (const action of ['command/subscribe', 'command/unsubscribe', 'subscription/list']) {
    t.strictSame(await broker.handle({ action, requestId: 4 }, admin), { action, requestId: 4, code: 400, status: 'error', error }, action)
  }
})

t.test('session: broker.session() wants a push function', async (t) => {
  const { broker } = setup(t)
  t.throws(() => broker.session('nope' as never), { name: 'TypeError', message: /push must be a function/ })
})

// --- command/update (§7) --------------------------------------------------------------------

t.test('session: command/update changes only status and result, moves lastUpdated to now, replies three keys', async (t) => {
  const { broker, admin, device, insert, clock } = setup(t)
  await device('lamp-1', 3, 4)
  await device('lamp-2', 5, 6)
  await insert('lamp-1', {
    command: 'set', timestamp: '2025-06-01T10:00:00Z', parameters: { level: 5 }, lifetime: 60, status: 'queued', result: 'none'
  })
  const { session } = await connect(broker, admin)
  const original = await getCommand(session, 'lamp-1', 1)
  clock.advance(5000)
  // What real clients do: send the whole command back, here with every other key changed.
  const sent = {
    ...original,
    id: 555,
    command: 'renamed',
    timestamp: '2020-01-01T00:00:00.000',
    lastUpdated: '2020-01-01T00:00:00.000',
    userId: 99,
    deviceId: 'lamp-2',
    networkId: 9,
    deviceTypeId: 9,
    parameters: { changed: true },
    lifetime: 1,
    status: 'done',
    result: { ok: true }
  }
  t.same(Object.keys(sent), TWELVE_KEYS, 'the whole twelve-key command is sent')
  const reply = await session.handle({ action: 'command/update', requestId: 'u1', deviceId: 'lamp-1', commandId: 1, command: sent })
  t.same(Object.keys(reply), ['action', 'requestId', 'status'])
  t.equal(JSON.stringify(reply), '{"action":"command/update","requestId":"u1","status":"success"}')
  const updated = await getCommand(session, 'lamp-1', 1)
  t.equal(JSON.stringify(updated), JSON.stringify({ ...original, lastUpdated: wire(5000), status: 'done', result: { ok: true } }),
    'only status, result and lastUpdated changed')
  t.equal(updated.lastUpdated, '2026-01-01T00:00:05.000')
  t.strictSame(body(await session.handle({ action: 'command/list', deviceId: 'lamp-2' })).commands, [], 'nothing moved to lamp-2')
  t.strictSame(errorOf(await session.handle({ action: 'command/get', deviceId: 'lamp-1', commandId: 555 })), { code: 404, error: 'Command with id = 555 not found' })

  clock.advance(1000)
  t.equal(body(await session.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: 1, command: { status: 'second' } })).status, 'success')
  t.strictSame(await getCommand(session, 'lamp-1', 1), { ...original, lastUpdated: wire(6000), status: 'second', result: { ok: true } }, 'status alone: result kept')
  clock.advance(1000)
  await session.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: 1, command: { result: [1, 2] } })
  t.strictSame(await getCommand(session, 'lamp-1', 1), { ...original, lastUpdated: wire(7000), status: 'second', result: [1, 2] }, 'result alone: status kept')
  clock.advance(1000)
  await session.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: 1, command: { command: 'ignored', parameters: 1 } })
  t.strictSame(await getCommand(session, 'lamp-1', 1), { ...original, lastUpdated: wire(8000), status: 'second', result: [1, 2] }, 'neither: only lastUpdated')
  clock.advance(1000)
  // A device that sends the whole command back with its result still null (as DeviceHive reads it: not sent).
  await session.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: 1, command: { ...sent, status: 'third', result: null } })
  t.strictSame(await getCommand(session, 'lamp-1', 1), { ...original, lastUpdated: wire(9000), status: 'third', result: [1, 2] }, 'result: null keeps the stored result')
  await session.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: 1, command: { status: null, result: 'r' } })
  t.strictSame(await getCommand(session, 'lamp-1', 1), { ...original, lastUpdated: wire(9000), status: 'third', result: 'r' }, 'status: null keeps the stored status')
})

t.test('session: command/update error rows, in the spec order', async (t) => {
  const { broker, admin, token, device, insert, clock } = setup(t)
  await device('lamp-1', 1, 1)
  await device('lamp-2', 2, 2)
  await insert('lamp-1', { command: 'a' })
  await insert('lamp-2', { command: 'b' })
  await insert('lamp-1', { command: 'c', lifetime: 1 })
  clock.advance(1000)
  const { session } = await connect(broker, admin)
  const command = { status: 'done' }
  const rows: Row[] = [
    ['invalid token', 'x.y.z', { deviceId: 'lamp-1', commandId: 1, command }, INVALID],
    ['expired token', token({ e: clock.now() - 1 }), { deviceId: 'lamp-1', commandId: 1, command }, EXPIRED],
    ['commandId missing', undefined, { deviceId: 'lamp-1', command }, NO_COMMAND_ID],
    ['commandId null', undefined, { deviceId: 'lamp-1', commandId: null, command }, NO_COMMAND_ID],
    ['commandId missing beats deviceId missing', undefined, { command }, NO_COMMAND_ID],
    ['commandId missing beats a device out of reach', token({ n: ['2'] }), { deviceId: 'lamp-1', command }, NO_COMMAND_ID],
    ['deviceId missing', undefined, { commandId: 1, command }, NO_DEVICE_ID],
    ['deviceId empty', undefined, { deviceId: '', commandId: 1, command }, NO_DEVICE_ID],
    ['deviceId null', undefined, { deviceId: null, commandId: 1, command }, NO_DEVICE_ID],
    ['action 8 missing', token({ a: [5, 7] }), { deviceId: 'lamp-1', commandId: 1, command }, DENIED],
    ['action 8 missing beats deviceId missing', token({ a: [5, 7] }), { commandId: 1, command }, DENIED],
    ['other network', token({ n: ['2'] }), { deviceId: 'lamp-1', commandId: 1, command }, DENIED],
    ['other device type', token({ n: ['1'], dt: ['2'] }), { deviceId: 'lamp-1', commandId: 1, command }, DENIED],
    ['unknown device, restricted token', token({ n: ['1'] }), { deviceId: 'ghost', commandId: 1, command }, DENIED],
    ['unknown device, wildcard token', undefined, { deviceId: 'ghost', commandId: 1, command }, { code: 404, error: 'Device with such deviceId = ghost not found' }],
    ['device errors beat command missing', token({ n: ['2'] }), { deviceId: 'lamp-1', commandId: 1 }, DENIED],
    ['command missing', undefined, { deviceId: 'lamp-1', commandId: 1 }, NO_COMMAND],
    ['command null', undefined, { deviceId: 'lamp-1', commandId: 1, command: null }, NO_COMMAND],
    ['command missing beats an unknown id', undefined, { deviceId: 'lamp-1', commandId: 999 }, NO_COMMAND],
    ['commandId a string', undefined, { deviceId: 'lamp-1', commandId: 'abc', command }, MALFORMED],
    ['commandId a numeric string is that number: unknown id', undefined, { deviceId: 'lamp-1', commandId: '999', command }, { code: 404, error: 'Command with id = 999 not found' }],
    ['commandId a fraction', undefined, { deviceId: 'lamp-1', commandId: 1.5, command }, MALFORMED],
    ['deviceId a number is its text: no such device', undefined, { deviceId: 5, commandId: 1, command }, { code: 404, error: 'Device with such deviceId = 5 not found' }],
    ['deviceId an object', undefined, { deviceId: {}, commandId: 1, command }, MALFORMED],
    ['status an object', undefined, { deviceId: 'lamp-1', commandId: 1, command: { status: {} } }, MALFORMED],
    ['command a string', undefined, { deviceId: 'lamp-1', commandId: 1, command: 'done' }, MALFORMED],
    ['unknown id', undefined, { deviceId: 'lamp-1', commandId: 999, command }, { code: 404, error: 'Command with id = 999 not found' }],
    ['expired command', undefined, { deviceId: 'lamp-1', commandId: 3, command }, { code: 404, error: 'Command with id = 3 not found' }],
    ['command of another device', undefined, { deviceId: 'lamp-1', commandId: 2, command }, { code: 404, error: 'Command with id = 2 not found' }]
  ]
  await checkRows(t, session, 'command/update', rows)
  const fresh = broker.session(() => {})
  t.strictSame(errorOf(await fresh.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: 1, command })), UNAUTHORIZED, 'not authenticated')
  for (const [deviceId, commandId] of [['lamp-1', 1], ['lamp-2', 2]] as const) {
    const command = await getCommand(session, deviceId, commandId)
    t.equal(command.status, null, `command ${commandId} untouched`)
    t.equal(command.lastUpdated, command.timestamp, `command ${commandId}: lastUpdated untouched`)
  }
  t.equal((await session.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: 1, command }, token({ a: [8], n: ['1'] }))).status, 'success', 'action 8 and the network suffice')
})

t.test('session: command/update checks the size of result', async (t) => {
  const { broker, admin, device, insert } = setup(t, { maxPayloadBytes: 16 })
  await device('lamp-1')
  await insert('lamp-1', { command: 'a' })
  const { session } = await connect(broker, admin)
  const reply = await session.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: 1, command: { result: 'x'.repeat(40) } })
  t.equal(reply.code, 400)
  t.match(reply.error, VALIDATION)
  t.equal((await getCommand(session, 'lamp-1', 1)).result, null, 'unchanged')
})

t.test('session: a command/update the store fails answers 500, reports ERR_STORE and pushes nothing', async (t) => {
  const inner = memoryStore()
  let failing = false
  const store: Store = {
    ...overridable(inner),
    commit: (...args) => {
      if (failing) throw new Error('disk on fire')
      return inner.commit(...args)
    }
  }
  const { broker, admin, device, insert } = setup(t, {}, store)
  await device('lamp-1')
  await insert('lamp-1', { command: 'a' })
  const errors: BrokerError[] = []
  broker.on('error', (err) => errors.push(err))
  const { session, pushes } = await connect(broker, admin)
  await subscribe(session, { returnUpdatedCommands: true })
  failing = true
  t.strictSame(errorOf(await session.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: 1, command: { status: 'done' } })),
    { code: 500, error: 'Internal server error' })
  t.equal(errors[0]?.code, 'ERR_STORE')
  t.strictSame(pushes, [], 'no push')
  failing = false
  t.equal((await session.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: 1, command: { status: 'done' } })).status, 'success', 'recovers')
  t.equal(pushes.length, 1)
})

// --- command/get (§8) -----------------------------------------------------------------------

t.test('session: command/get replies with the twelve keys in order', async (t) => {
  const { broker, device, insert, token } = setup(t)
  await device('lamp-1', 3, 4)
  await insert('lamp-1', { command: 'set', timestamp: '2025-06-01T10:00:00.5Z', parameters: { a: [1] }, lifetime: 30, status: 'queued', result: 7 }, token({ u: 12 }))
  await insert('lamp-1', { command: 'bare' })
  const { session } = await connect(broker, token({ a: [5], n: ['3'], dt: ['4'] }))
  const reply = await session.handle({ action: 'command/get', requestId: 'g', deviceId: 'lamp-1', commandId: 1 })
  t.same(Object.keys(reply), ['action', 'requestId', 'status', 'command'])
  t.same(Object.keys(body(reply).command as object), TWELVE_KEYS)
  t.equal(JSON.stringify(reply), '{"action":"command/get","requestId":"g","status":"success","command":{"id":1,"command":"set",' +
    '"timestamp":"2025-06-01T10:00:00.500","lastUpdated":"2025-06-01T10:00:00.500","userId":12,"deviceId":"lamp-1","networkId":3,' +
    '"deviceTypeId":4,"parameters":{"a":[1]},"lifetime":30,"status":"queued","result":7}}')
  t.equal(JSON.stringify(await getCommand(session, 'lamp-1', 2)), '{"id":2,"command":"bare","timestamp":"2026-01-01T00:00:00.000",' +
    '"lastUpdated":"2026-01-01T00:00:00.000","userId":1,"deviceId":"lamp-1","networkId":3,"deviceTypeId":4,"parameters":null,' +
    '"lifetime":null,"status":null,"result":null}', 'nulls serialised')
})

t.test('session: command/get error rows: device checks, deviceId, commandId, 404; needs action 5', async (t) => {
  const { broker, admin, token, device, insert, clock } = setup(t)
  await device('lamp-1', 1, 1)
  await device('lamp-2', 2, 2)
  await insert('lamp-1', { command: 'a' })
  await insert('lamp-2', { command: 'b' })
  await insert('lamp-1', { command: 'c', lifetime: 1 })
  const { session } = await connect(broker, admin)
  t.equal((await getCommand(session, 'lamp-1', 3)).command, 'c', 'visible before it expires')
  clock.advance(1000)
  const rows: Row[] = [
    ['invalid token', 'x.y.z', { deviceId: 'lamp-1', commandId: 1 }, INVALID],
    ['expired token', token({ e: clock.now() - 1 }), { deviceId: 'lamp-1', commandId: 1 }, EXPIRED],
    ['action 5 missing', token({ a: [3, 7, 8] }), { deviceId: 'lamp-1', commandId: 1 }, DENIED],
    ['action 5 missing beats deviceId missing', token({ a: [7] }), {}, DENIED],
    ['other network', token({ n: ['2'] }), { deviceId: 'lamp-1', commandId: 1 }, DENIED],
    ['other network beats commandId missing', token({ n: ['2'] }), { deviceId: 'lamp-1' }, DENIED],
    ['other device type', token({ n: ['*'], dt: ['2'] }), { deviceId: 'lamp-1', commandId: 1 }, DENIED],
    ['unknown device, restricted token', token({ n: ['1'] }), { deviceId: 'ghost', commandId: 1 }, DENIED],
    ['unknown device, wildcard token', undefined, { deviceId: 'ghost', commandId: 1 }, { code: 404, error: 'Device with such deviceId = ghost not found' }],
    ['unknown device beats commandId missing', undefined, { deviceId: 'ghost' }, { code: 404, error: 'Device with such deviceId = ghost not found' }],
    ['deviceId missing', undefined, { commandId: 1 }, NO_DEVICE_ID],
    ['deviceId missing beats commandId missing', undefined, {}, NO_DEVICE_ID],
    ['deviceId a number is its text', undefined, { deviceId: 1, commandId: 1 }, { code: 404, error: 'Device with such deviceId = 1 not found' }],
    ['deviceId an array', undefined, { deviceId: ['lamp-1'], commandId: 1 }, MALFORMED],
    ['commandId a numeric string is that number', undefined, { deviceId: 'lamp-1', commandId: '1' }, undefined],
    ['commandId missing', undefined, { deviceId: 'lamp-1' }, NO_COMMAND_ID],
    ['commandId null', undefined, { deviceId: 'lamp-1', commandId: null }, NO_COMMAND_ID],
    ['commandId a string', undefined, { deviceId: 'lamp-1', commandId: 'abc' }, MALFORMED],
    ['unknown id', undefined, { deviceId: 'lamp-1', commandId: 42 }, { code: 404, error: 'Command with id = 42 not found' }],
    ['command of another device', undefined, { deviceId: 'lamp-1', commandId: 2 }, { code: 404, error: 'Command with id = 2 not found' }],
    ['expired command', undefined, { deviceId: 'lamp-1', commandId: 3 }, { code: 404, error: 'Command with id = 3 not found' }],
    ['action 5 and the network suffice', token({ a: [5], n: ['1'] }), { deviceId: 'lamp-1', commandId: 1 }, undefined]
  ]
  await checkRows(t, session, 'command/get', rows)
})

// --- command/list (§9) ----------------------------------------------------------------------

// Four commands whose timestamps, names and statuses each sort them differently.
async function listFixture (t: Test): Promise<{ session: Session, ids: (fields: Record<string, unknown>) => Promise<number[]>, fixture: ReturnType<typeof setup> }> {
  const fixture = setup(t)
  const { broker, admin, device, insert } = fixture
  await device('lamp-1')
  await insert('lamp-1', { command: 'delta', timestamp: iso(3000), status: 'c' })
  await insert('lamp-1', { command: 'alpha', timestamp: iso(1000), status: 'b' })
  await insert('lamp-1', { command: 'charlie', timestamp: iso(4000), status: 'd' })
  await insert('lamp-1', { command: 'bravo', timestamp: iso(2000), status: 'a' })
  const { session } = await connect(broker, admin)
  const ids = async (fields: Record<string, unknown>): Promise<number[]> => {
    const reply = await session.handle({ action: 'command/list', deviceId: 'lamp-1', ...fields })
    return (body(reply).commands as Command[]).map((command) => command.id)
  }
  return { session, ids, fixture }
}

t.test('session: command/list defaults to ascending timestamps, twelve keys each', async (t) => {
  const { session, ids } = await listFixture(t)
  const reply = await session.handle({ action: 'command/list', requestId: 'l', deviceId: 'lamp-1' })
  t.same(Object.keys(reply), ['action', 'requestId', 'status', 'commands'])
  const commands = body(reply).commands as Command[]
  t.same(commands.map((command) => command.id), [2, 4, 1, 3])
  for (const command of commands) t.same(Object.keys(command), TWELVE_KEYS, `command ${command.id}: twelve keys`)
  t.strictSame(commands[0], {
    id: 2, command: 'alpha', timestamp: wire(1000), lastUpdated: wire(1000), userId: 1, deviceId: 'lamp-1', networkId: 1, deviceTypeId: 1, parameters: null, lifetime: null, status: 'b', result: null
  })
  t.same(await ids({ start: null, end: null, command: null, status: null, sortField: null, sortOrder: null, take: null, skip: null }), [2, 4, 1, 3], 'nulls mean defaults')
})

t.test('session: command/list sorts by every sortField in both orders', async (t) => {
  const { ids } = await listFixture(t)
  const expected: Array<[string, string, number[]]> = [
    ['timestamp', 'ASC', [2, 4, 1, 3]],
    ['timestamp', 'DESC', [3, 1, 4, 2]],
    ['command', 'ASC', [2, 4, 3, 1]],
    ['command', 'DESC', [1, 3, 4, 2]],
    ['status', 'ASC', [4, 2, 1, 3]],
    ['status', 'DESC', [3, 1, 2, 4]]
  ]
  for (const [sortField, sortOrder, order] of expected) {
    t.same(await ids({ sortField, sortOrder }), order, `${sortField} ${sortOrder}`)
  }
  t.same(await ids({ sortField: 'command' }), [2, 4, 3, 1], 'sortOrder defaults to ASC')
  t.same(await ids({ sortOrder: 'DESC' }), [3, 1, 4, 2], 'sortField defaults to timestamp')
})

t.test('session: command/list start and end are strictly exclusive; command and status filter', async (t) => {
  const { ids } = await listFixture(t)
  t.same(await ids({ start: iso(1000) }), [4, 1, 3], 'a command AT start is excluded')
  t.same(await ids({ start: iso(999) }), [2, 4, 1, 3])
  t.same(await ids({ end: iso(4000) }), [2, 4, 1], 'a command AT end is excluded')
  t.same(await ids({ end: iso(4001) }), [2, 4, 1, 3])
  t.same(await ids({ start: iso(1000), end: iso(4000) }), [4, 1])
  t.same(await ids({ start: START + 2000, end: String(START + 3001) }), [1], 'epoch ms as number and numeric string')
  t.same(await ids({ start: iso(2000), end: iso(3000) }), [], 'nothing strictly between')
  t.same(await ids({ command: 'alpha' }), [2])
  t.same(await ids({ command: 'alp' }), [], 'one exact name')
  t.same(await ids({ status: 'c' }), [1])
  t.same(await ids({ status: 'C' }), [], 'exact status')
  t.same(await ids({ command: 'delta', status: 'b' }), [], 'filters combine')
})

t.test('session: command/list takes 20 by default, skip and take page', async (t) => {
  const { broker, admin, device, insert } = setup(t)
  await device('lamp-1')
  await device('lamp-2')
  for (let i = 0; i < 25; i++) await insert('lamp-1', { command: `c${i}`, timestamp: iso(1000 * (25 - i)) })
  await insert('lamp-2', { command: 'other' })
  const { session } = await connect(broker, admin)
  const ids = async (fields: Record<string, unknown>): Promise<number[]> =>
    (body(await session.handle({ action: 'command/list', deviceId: 'lamp-1', ...fields })).commands as Command[]).map((c) => c.id)
  t.same(await ids({}), Array.from({ length: 20 }, (_, i) => 25 - i), '20, oldest first')
  t.equal((await ids({ take: 100 })).length, 25, 'only this device')
  t.same(await ids({ skip: 5, take: 3 }), [20, 19, 18])
  t.same(await ids({ skip: 22 }), [3, 2, 1])
  t.same(await ids({ skip: 25 }), [])
  t.same(await ids({ take: 0 }), [])
})

t.test('session: command/list skips expired commands; a device with no commands lists []', async (t) => {
  const { broker, admin, device, insert, clock } = setup(t)
  await device('lamp-1')
  await device('empty')
  await insert('lamp-1', { command: 'short', lifetime: 1 })
  await insert('lamp-1', { command: 'long', lifetime: 2 })
  await insert('lamp-1', { command: 'forever' })
  const { session } = await connect(broker, admin)
  const names = async (): Promise<string[]> =>
    (body(await session.handle({ action: 'command/list', deviceId: 'lamp-1' })).commands as Command[]).map((c) => c.command)
  t.same(await names(), ['short', 'long', 'forever'])
  clock.advance(1000)
  t.same(await names(), ['long', 'forever'])
  clock.advance(1000)
  t.same(await names(), ['forever'])
  t.equal(JSON.stringify(await session.handle({ action: 'command/list', requestId: 2, deviceId: 'empty' })),
    '{"action":"command/list","requestId":2,"status":"success","commands":[]}')
})

t.test('session: command/list is lenient where DeviceHive is, strict on types it cannot read, and checks the device', async (t) => {
  const { session, ids, fixture } = await listFixture(t)
  const { token } = fixture
  t.same(await ids({ sortField: 'name' }), [2, 4, 1, 3], 'an unknown sortField is ignored')
  t.same(await ids({ sortField: '' }), [2, 4, 1, 3], 'an empty one too')
  t.same(await ids({ sortField: 'COMMAND', sortOrder: 'desc' }), [1, 3, 4, 2], 'sortField and sortOrder are case-insensitive')
  t.same(await ids({ sortOrder: 'UP' }), [2, 4, 1, 3], 'an unknown sortOrder is ignored')
  t.same(await ids({ take: -1 }), [], 'a negative take is an empty list')
  t.same(await ids({ skip: -1 }), [], 'a negative skip too')
  t.same(await ids({ take: '2', skip: '1' }), [4, 1], 'numeric strings are numbers')
  t.same(await ids({ command: 'alpha', names: ['alpha', 'bravo'] }), [2], 'names and command both apply')
  t.same(await ids({ names: ['alpha', 'delta'] }), [2, 1], 'names')
  t.same(await ids({ names: [] }), [2, 4, 1, 3], 'an empty names list filters nothing')
  t.same(await ids({ names: ['delta'], sortField: 'status' }), [1], 'names when sorting by status')
  const over = await session.handle({ action: 'command/list', requestId: 'take', deviceId: 'lamp-1', take: 1001 })
  t.equal(over.code, 400, 'take above maxTake')
  t.match(over.error, /^Validation failed with following violations: take must be at most 1000$/)
  t.same(Object.keys(over), ERROR_KEYS)
  const rows: Row[] = [
    ['start unparseable', undefined, { deviceId: 'lamp-1', start: 'yesterday' }, MALFORMED],
    ['end an object', undefined, { deviceId: 'lamp-1', end: {} }, MALFORMED],
    ['command an object', undefined, { deviceId: 'lamp-1', command: {} }, MALFORMED],
    ['status a boolean', undefined, { deviceId: 'lamp-1', status: true }, MALFORMED],
    ['sortField an object', undefined, { deviceId: 'lamp-1', sortField: {} }, MALFORMED],
    ['sortOrder an array', undefined, { deviceId: 'lamp-1', sortOrder: [] }, MALFORMED],
    ['take a non-numeric string', undefined, { deviceId: 'lamp-1', take: 'twenty' }, MALFORMED],
    ['skip a string', undefined, { deviceId: 'lamp-1', skip: 'x' }, MALFORMED],
    ['names not a list', undefined, { deviceId: 'lamp-1', names: 'alpha' }, MALFORMED],
    ['deviceId missing', undefined, {}, NO_DEVICE_ID],
    ['deviceId a number is its text', undefined, { deviceId: 1 }, { code: 404, error: 'Device with such deviceId = 1 not found' }],
    ['deviceId an object', undefined, { deviceId: {} }, MALFORMED],
    ['unknown device', undefined, { deviceId: 'ghost' }, { code: 404, error: 'Device with such deviceId = ghost not found' }],
    ['action 5 missing', token({ a: [7, 8] }), { deviceId: 'lamp-1' }, DENIED],
    ['other network', token({ n: ['2'] }), { deviceId: 'lamp-1' }, DENIED],
    ['device errors beat bad filters', token({ n: ['2'] }), { deviceId: 'lamp-1', take: 'x' }, DENIED],
    ['expired token', token({ e: fixture.clock.now() - 1 }), { deviceId: 'lamp-1' }, EXPIRED]
  ]
  await checkRows(t, session, 'command/list', rows)
})

// --- command/subscribe, command/unsubscribe, subscription/list (§10) ------------------------

t.test('session: subscribe replies with an integer subscriptionId; pushes are exactly action, command, subscriptionId', async (t) => {
  const { broker, admin, device, insert } = setup(t)
  await device('lamp-1', 3, 4)
  const { session, pushes } = await connect(broker, admin)
  const reply = await session.handle({ action: 'command/subscribe', requestId: 's1', deviceId: 'lamp-1' })
  t.same(Object.keys(reply), ['action', 'requestId', 'status', 'subscriptionId'])
  const id = body(reply).subscriptionId as number
  t.ok(Number.isSafeInteger(id), 'an integer')
  t.equal(JSON.stringify(reply), `{"action":"command/subscribe","requestId":"s1","status":"success","subscriptionId":${id}}`)
  const second = await subscribe(session, { deviceId: 'lamp-1', names: ['nothing'] })
  t.not(second, id, 'ids differ')
  await insert('lamp-1', { command: 'set', parameters: { level: 2 }, lifetime: 60, status: 'queued', result: null })
  t.equal(pushes.length, 1)
  const push = pushes[0] as Push
  t.same(Object.keys(push), ['action', 'command', 'subscriptionId'])
  t.same(Object.keys(push.command), TWELVE_KEYS)
  const got = await getCommand(session, 'lamp-1', 1)
  t.equal(JSON.stringify(push), JSON.stringify({ action: 'command/insert', command: got, subscriptionId: id }))
  t.equal(JSON.stringify(push.command), '{"id":1,"command":"set","timestamp":"2026-01-01T00:00:00.000","lastUpdated":"2026-01-01T00:00:00.000",' +
    '"userId":1,"deviceId":"lamp-1","networkId":3,"deviceTypeId":4,"parameters":{"level":2},"lifetime":60,"status":"queued","result":null}')
})

t.test('session: history replays strictly newer commands, ascending, up to limit', async (t) => {
  const { broker, admin, device, insert } = setup(t)
  await device('lamp-1')
  await device('lamp-2')
  // Inserted out of timestamp order; names say the order.
  for (const [name, at] of [['c', 3000], ['a', 1000], ['e', 5000], ['b', 2000], ['d', 4000]] as const) {
    await insert('lamp-1', { command: name, timestamp: iso(at) })
  }
  await insert('lamp-2', { command: 'other', timestamp: iso(3500) })
  const { session, pushes } = await connect(broker, admin)
  const limited = await subscribe(session, { deviceId: 'lamp-1', timestamp: iso(2000), limit: 2 })
  await turn()
  t.same(pushes.map((push) => push.command.command), ['c', 'd'], 'b has the EQUAL timestamp: not replayed; at most 2')
  t.ok(pushes.every((push) => push.subscriptionId === limited && push.action === 'command/insert'))
  t.same(pushes.map((push) => push.command.timestamp), [wire(3000), wire(4000)])
  pushes.length = 0
  await subscribe(session, { deviceId: 'lamp-1', timestamp: iso(2000) })
  await turn()
  t.same(pushes.map((push) => push.command.command), ['c', 'd', 'e'], 'no limit given')
  pushes.length = 0
  await subscribe(session, { timestamp: wire(1000), names: ['e', 'a', 'other', 'c'] })
  await turn()
  t.same(pushes.map((push) => push.command.command), ['c', 'other', 'e'], 'filters apply to history; every device')
  pushes.length = 0
  await subscribe(session, { deviceId: 'lamp-1' })
  await subscribe(session, { deviceId: 'lamp-1', timestamp: null })
  await subscribe(session, { deviceId: 'lamp-1', timestamp: iso(0), returnUpdatedCommands: true })
  await turn()
  t.same(pushes, [], 'no timestamp: no history; returnUpdatedCommands: only updated commands, and none was')
  await subscribe(session, { deviceId: 'lamp-1', timestamp: iso(0), limit: 0 })
  await turn()
  t.same(pushes.map((push) => push.command.command), ['a', 'b', 'c', 'd', 'e'], 'limit 0: no limit but the configured maximum')
  pushes.length = 0
  await insert('lamp-1', { command: 'live', timestamp: iso(0) })
  t.same(pushes.map((push) => push.command.command), ['live', 'live', 'live', 'live', 'live'],
    'then live pushes, whatever their timestamp, to the five lamp-1 insert subscriptions')
})

t.test('session: history sends at most 20 by default, the oldest first', async (t) => {
  const { broker, admin, device, insert } = setup(t)
  await device('lamp-1')
  for (let i = 1; i <= 25; i++) await insert('lamp-1', { command: `c${i}`, timestamp: iso(i * 1000) })
  const { session, pushes } = await connect(broker, admin)
  await subscribe(session, { deviceId: 'lamp-1', timestamp: iso(0) })
  await turn()
  t.same(pushes.map((push) => push.command.id), Array.from({ length: 20 }, (_, i) => i + 1))
})

t.test('session: history honours the token: a restricted token replays only what it may see', async (t) => {
  const { broker, token, device, insert } = setup(t)
  await device('net-1', 1, 1)
  await device('net-2', 2, 1)
  for (let i = 1; i <= 4; i++) await insert(i % 2 === 0 ? 'net-2' : 'net-1', { command: `c${i}`, timestamp: iso(i * 1000) })
  const { session, pushes } = await connect(broker, token({ n: ['1'] }))
  await subscribe(session, { timestamp: iso(0), limit: 2 })
  await turn()
  t.same(pushes.map((push) => push.command.command), ['c1', 'c3'], 'limit counts visible commands only')
})

t.test('session: the subscribe reply is observed before any push of that subscription', async (t) => {
  const { broker, admin, device, insert } = setup(t)
  await device('lamp-1')
  await insert('lamp-1', { command: 'old-1', timestamp: iso(1000) })
  await insert('lamp-1', { command: 'old-2', timestamp: iso(2000) })
  const log: unknown[] = []
  const session = broker.session((push) => { log.push(push) })
  await session.handle({ action: 'authenticate', token: admin })
  // Accepted before the subscribe, committed after it: by the device/save below, synchronously,
  // while the subscribe reply is still on its way.
  const live = insert('lamp-1', { command: 'live' })
  const replied = session.handle({ action: 'command/subscribe', requestId: 'sub', deviceId: 'lamp-1', timestamp: iso(0) }).then((reply) => { log.push(reply) })
  const saved = broker.handle({ action: 'device/save', deviceId: 'lamp-2', device: { name: 'x' } }, admin)
  await Promise.all([live, replied, saved])
  const after = insert('lamp-1', { command: 'after' })
  await after
  await turn()
  const entries = log.map((entry) => 'status' in (entry as object)
    ? `reply:${(entry as Reply).requestId as string}`
    : `push:${(entry as Push).command.command}`)
  t.same(entries, ['reply:sub', 'push:old-1', 'push:old-2', 'push:live', 'push:after'])
})

t.test('session: returnUpdatedCommands gets only command/update pushes, after every update, never inserts', async (t) => {
  const { broker, admin, device, insert, clock } = setup(t)
  await device('lamp-1')
  await device('lamp-2')
  const { session, pushes } = await connect(broker, admin)
  const updates = await subscribe(session, { deviceId: 'lamp-1', returnUpdatedCommands: true })
  const inserts = await subscribe(session, { deviceId: 'lamp-1', returnUpdatedCommands: false })
  await insert('lamp-1', { command: 'set', parameters: { x: 1 } })
  await insert('lamp-2', { command: 'elsewhere' })
  t.same(pushes.map((push) => [push.subscriptionId, push.action]), [[inserts, 'command/insert']], 'the insert reaches only the insert subscription')
  pushes.length = 0
  clock.advance(1000)
  await session.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: 1, command: { status: 'running' } })
  clock.advance(1000)
  await session.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: 1, command: { result: { ok: true } } })
  await session.handle({ action: 'command/update', deviceId: 'lamp-2', commandId: 2, command: { status: 'done' } })
  t.equal(pushes.length, 2, 'one push per update of a matching command')
  t.ok(pushes.every((push) => push.subscriptionId === updates && push.action === 'command/update'))
  t.same(Object.keys(pushes[0] as Push), ['action', 'command', 'subscriptionId'])
  const got = await getCommand(session, 'lamp-1', 1)
  t.equal(JSON.stringify(pushes[1]), JSON.stringify({ action: 'command/update', command: got, subscriptionId: updates }), 'the command after the update')
  t.strictSame([pushes[0]?.command.status, pushes[0]?.command.result, pushes[0]?.command.lastUpdated], ['running', null, wire(1000)])
  t.strictSame([pushes[1]?.command.status, pushes[1]?.command.result, pushes[1]?.command.lastUpdated], ['running', { ok: true }, wire(2000)])
  t.strictSame(errorOf(await session.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: 9, command: { status: 'x' } })),
    { code: 404, error: 'Command with id = 9 not found' })
  t.equal(pushes.length, 2, 'a failed update pushes nothing')
})

t.test('session: a command expiring before any update pushes command/update with status expired', async (t) => {
  const { broker, admin, device, insert, clock } = setup(t)
  await device('lamp-1')
  const { session, pushes } = await connect(broker, admin)
  const updates = await subscribe(session, { deviceId: 'lamp-1', returnUpdatedCommands: true })
  const other = await connect(broker, admin)
  await subscribe(other.session, { deviceId: 'lamp-1' })
  await insert('lamp-1', { command: 'never', lifetime: 5, status: 'queued', parameters: { p: 1 } })
  await insert('lamp-1', { command: 'touched', lifetime: 5 })
  const before = await getCommand(session, 'lamp-1', 1)
  await session.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: 2, command: { status: 'done' } })
  t.same(pushes.map((push) => push.command.id), [2])
  pushes.length = 0
  other.pushes.length = 0
  clock.advance(5000)
  t.equal(pushes.length, 1, 'only the never-updated command is pushed')
  t.equal(JSON.stringify(pushes[0]), JSON.stringify({ action: 'command/update', command: { ...before, status: 'expired' }, subscriptionId: updates }),
    'the command as it stood, status expired')
  t.same(other.pushes, [], 'insert subscriptions hear nothing of it')
})

t.test('session: one push per event per subscription, however many filters match', async (t) => {
  const { broker, admin, device, insert } = setup(t)
  await device('lamp-1', 1, 10)
  const { session, pushes } = await connect(broker, admin)
  const ids = [
    await subscribe(session, { networkIds: [1, 1] }),
    await subscribe(session, { deviceTypeIds: [10, 10, 10] }),
    await subscribe(session, { deviceId: 'lamp-1', networkIds: [1] }),
    await subscribe(session, { deviceId: 'lamp-1', networkIds: [1], deviceTypeIds: [10], names: ['on', 'on'] }),
    await subscribe(session, { networkIds: [1, 2], deviceTypeIds: [10, 11] })
  ]
  const updateIds = [
    await subscribe(session, { networkIds: [1, 1], returnUpdatedCommands: true }),
    await subscribe(session, { deviceId: 'lamp-1', deviceTypeIds: [10], returnUpdatedCommands: true })
  ]
  await insert('lamp-1', { command: 'on' })
  t.same(pushes.map((push) => push.subscriptionId).sort((a, b) => a - b), ids, 'each insert subscription once')
  pushes.length = 0
  await session.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: 1, command: { status: 'ok' } })
  t.same(pushes.map((push) => push.subscriptionId).sort((a, b) => a - b), updateIds, 'each update subscription once')
})

t.test('session: routing matrix by deviceId, networkIds, deviceTypeIds, names, wildcard and restricted tokens', async (t) => {
  const { broker, admin, token, device, insert } = setup(t)
  await device('lamp-1', 1, 10)
  await device('lamp-2', 2, 20)
  await device('lamp-3', 1, 20)
  const { session, pushes } = await connect(broker, admin)
  const restricted = await connect(broker, token({ n: ['1'] }))
  const subs = {
    device: await subscribe(session, { deviceId: 'lamp-1' }),
    network: await subscribe(session, { networkIds: [2] }),
    type: await subscribe(session, { deviceTypeIds: [20] }),
    names: await subscribe(session, { names: ['on'] }),
    networkAndType: await subscribe(session, { networkIds: [1], deviceTypeIds: [20] }),
    emptyLists: await subscribe(session, { networkIds: [], deviceTypeIds: [], names: [] }),
    wildcard: await subscribe(session, { deviceId: null })
  }
  const restrictedId = await subscribe(restricted.session)
  const restrictedUpdates = await subscribe(restricted.session, { returnUpdatedCommands: true })
  await insert('lamp-1', { command: 'on' })
  await insert('lamp-2', { command: 'off' })
  await insert('lamp-3', { command: 'on' })
  // Registered after every subscription above.
  await device('lamp-4', 1, 10)
  await device('lamp-5', 2, 10)
  await insert('lamp-4', { command: 'blink' })
  await insert('lamp-5', { command: 'on' })
  await restricted.session.handle({ action: 'command/update', deviceId: 'lamp-2', commandId: 2, command: { status: 'x' } }, admin)
  await restricted.session.handle({ action: 'command/update', deviceId: 'lamp-4', commandId: 4, command: { status: 'x' } }, admin)
  const seen = (id: number, list: Push[]): string[] => list.filter((push) => push.subscriptionId === id).map((push) => `${push.command.deviceId}:${push.command.command}`)
  t.strictSame(Object.fromEntries(Object.entries(subs).map(([name, id]) => [name, seen(id, pushes)])), {
    device: ['lamp-1:on'],
    network: ['lamp-2:off', 'lamp-5:on'],
    type: ['lamp-2:off', 'lamp-3:on'],
    names: ['lamp-1:on', 'lamp-3:on', 'lamp-5:on'],
    networkAndType: ['lamp-3:on'],
    emptyLists: ['lamp-1:on', 'lamp-2:off', 'lamp-3:on', 'lamp-4:blink', 'lamp-5:on'],
    wildcard: ['lamp-1:on', 'lamp-2:off', 'lamp-3:on', 'lamp-4:blink', 'lamp-5:on']
  })
  t.same(seen(restrictedId, restricted.pushes), ['lamp-1:on', 'lamp-3:on', 'lamp-4:blink'], 'n: [1] never sees network 2, sees lamp-4 registered later')
  t.same(seen(restrictedUpdates, restricted.pushes), ['lamp-4:blink'], 'nor its updates')
})

t.test('session: subscribe checks action 5 and the device', async (t) => {
  const { broker, admin, token, device } = setup(t)
  await device('lamp-1', 1, 1)
  const { session } = await connect(broker, admin)
  const rows: Row[] = [
    ['no action 5, no filter', token({ a: [3, 7, 8] }), {}, DENIED],
    ['no action 5, a device', token({ a: [3, 7, 8] }), { deviceId: 'lamp-1' }, DENIED],
    ['unknown device, wildcard token', undefined, { deviceId: 'ghost' }, { code: 404, error: 'Device with such deviceId = ghost not found' }],
    ['unknown device, restricted token', token({ n: ['1'] }), { deviceId: 'ghost' }, DENIED],
    ['device of another network', token({ n: ['2'] }), { deviceId: 'lamp-1' }, DENIED],
    ['deviceId empty', undefined, { deviceId: '' }, NO_DEVICE_ID],
    ['invalid token', 'x.y.z', {}, INVALID],
    ['a network the token does not reach', token({ n: ['1'] }), { networkIds: [1, 2] }, DENIED],
    ['a device type the token does not reach', token({ n: ['1'], dt: ['1'] }), { deviceTypeIds: [2] }, DENIED],
    ['a network, for a token without n', token({ n: undefined }), { networkIds: [1] }, DENIED],
    ['with a device, its networks are checked too', token({ n: ['1'] }), { deviceId: 'lamp-1', networkIds: [2] }, DENIED],
    ['everything, for a token that reaches no network', token({ n: undefined }), {}, { code: 403, error: 'No access to any device type or network' }],
    ['everything, for a token of no network', token({ n: [] }), {}, { code: 403, error: 'No access to any device type or network' }],
    ['everything, for a token of no device type', token({ n: ['1'], dt: [] }), {}, { code: 403, error: 'No access to any device type or network' }],
    ['names only, for a token that reaches nothing', token({ n: undefined }), { names: ['on'] }, { code: 403, error: 'No access to any device type or network' }],
    ['networks it reaches', token({ n: ['1', '2'] }), { networkIds: [2] }, undefined],
    ['action 5 alone suffices', token({ a: [5], n: ['1'] }), { deviceId: 'lamp-1' }, undefined]
  ]
  await checkRows(t, session, 'command/subscribe', rows)
  const reply = await session.handle({ action: 'command/subscribe', limit: -1 })
  t.equal(reply.code, 400, 'limit negative')
  t.match(reply.error, VALIDATION)
  const listed = body(await session.handle({ action: 'subscription/list' })).subscriptions as unknown[]
  t.equal(listed.length, 2, 'only the successful subscribes made subscriptions')
  t.strictSame(errorOf(await session.handle({ action: 'command/unsubscribe' }, token({ a: [3, 7, 8] }))), DENIED, 'unsubscribe needs action 5')
  t.strictSame(errorOf(await session.handle({ action: 'subscription/list' }, token({ a: [3, 7, 8] }))), DENIED, 'subscription/list needs action 5 or 4')
  t.equal((await session.handle({ action: 'subscription/list' }, token({ a: [4] }))).status, 'success', 'action 4 suffices for subscription/list')
})

t.test('session: with a deviceId, a subscription filters by the device alone', async (t) => {
  const { broker, admin, device, insert } = setup(t)
  await device('lamp-1', 1, 1)
  const { session, pushes } = await connect(broker, admin)
  await subscribe(session, { deviceId: 'lamp-1', networkIds: [1], deviceTypeIds: [1] })
  await broker.handle({ action: 'device/save', deviceId: 'lamp-1', device: { networkId: 2, deviceTypeId: 2 } }, admin)
  await insert('lamp-1', { command: 'moved' })
  t.same(pushes.map((push) => push.command.command), ['moved'], 'networkIds and deviceTypeIds were an access check, not a filter')
})

t.test('session: device/delete ends the subscriptions made for that device', async (t) => {
  const { broker, admin, device, insert } = setup(t)
  await device('lamp-1', 1, 1)
  await device('lamp-2', 1, 1)
  const { session, pushes } = await connect(broker, admin)
  const gone = await subscribe(session, { deviceId: 'lamp-1' })
  const goneUpdates = await subscribe(session, { deviceId: 'lamp-1', returnUpdatedCommands: true })
  const kept = await subscribe(session, { networkIds: [1] })
  const other = await subscribe(session, { deviceId: 'lamp-2' })
  await broker.handle({ action: 'device/delete', deviceId: 'lamp-1' }, admin)
  t.same((body(await session.handle({ action: 'subscription/list' })).subscriptions as Array<{ subscriptionId: number }>).map((s) => s.subscriptionId),
    [kept, other], 'the subscriptions made for lamp-1 are gone')
  t.strictSame(errorOf(await session.handle({ action: 'command/unsubscribe', subscriptionId: gone })), { code: 404, error: `Subscription with id ${gone} was not found` })
  await device('lamp-1', 1, 1)
  await insert('lamp-1', { command: 'reborn' })
  t.same(pushes.map((push) => push.subscriptionId), [kept], 'a device created again does not revive them')
  t.notOk(pushes.some((push) => push.subscriptionId === goneUpdates))
})

t.test('session: history of a returnUpdatedCommands subscription: commands updated after timestamp, as command/update', async (t) => {
  const { broker, admin, device, insert, clock } = setup(t)
  await device('lamp-1')
  for (const name of ['a', 'b', 'c']) await insert('lamp-1', { command: name, timestamp: iso(0) })
  clock.advance(1000)
  await broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: 3, command: { status: 'early' } }, admin)
  clock.advance(1000)
  await broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: 1, command: { status: 'late' } }, admin)
  const { session, pushes } = await connect(broker, admin)
  const id = await subscribe(session, { deviceId: 'lamp-1', returnUpdatedCommands: true, timestamp: iso(1000) })
  await turn()
  t.same(pushes.map((push) => [push.action, push.subscriptionId, push.command.command, push.command.status]),
    [['command/update', id, 'a', 'late']], 'only a was updated strictly after the timestamp')
  pushes.length = 0
  await subscribe(session, { returnUpdatedCommands: true, timestamp: iso(999) })
  await turn()
  t.same(pushes.map((push) => push.command.command), ['a', 'c'], 'both, by command timestamp then id')
})

t.test('session: replies come in request order, and a read sees the session\'s own earlier writes', async (t) => {
  const { broker, admin, device, insert } = setup(t)
  await device('lamp-1')
  await insert('lamp-1', { command: 'on' })
  const { session } = await connect(broker, admin)
  const order: number[] = []
  const track = (n: number, reply: Promise<Reply>): Promise<Reply> => reply.then((r) => { order.push(n); return r })
  const update = track(1, session.handle({ action: 'command/update', requestId: 1, deviceId: 'lamp-1', commandId: 1, command: { status: 'done' } }))
  const get = track(2, session.handle({ action: 'command/get', requestId: 2, deviceId: 'lamp-1', commandId: 1 }))
  const list = track(3, session.handle({ action: 'command/list', requestId: 3, deviceId: 'lamp-1' }))
  const inserted = track(4, session.handle({ action: 'command/insert', requestId: 4, deviceId: 'lamp-1', command: { command: 'next' } }))
  const again = track(5, session.handle({ action: 'command/get', requestId: 5, deviceId: 'lamp-1', commandId: 2 }))
  await Promise.all([update, get, list, inserted, again])
  t.same(order, [1, 2, 3, 4, 5], 'in order')
  t.equal(body(await get).command.status, 'done', 'the get sees the update made before it')
  t.equal((body(await list).commands as Command[])[0]?.status, 'done', 'and so does the list')
  t.equal(body(await again).command.command, 'next', 'a get sees the insert made before it')
})

t.test('session: a device write waits for the session\'s earlier command writes to commit, and sees them', async (t) => {
  const { broker, admin, device } = setup(t)
  await device('lamp-1')
  const { session } = await connect(broker, admin)
  const inserted = session.handle({ action: 'command/insert', requestId: 1, deviceId: 'lamp-1', command: { command: 'on' } })
  const deleted = session.handle({ action: 'device/delete', requestId: 2, deviceId: 'lamp-1' })
  t.equal((await inserted).status, 'success', 'the insert, queued first, commits')
  t.equal((await deleted).status, 'success')
  const saved = await session.handle({ action: 'device/save', requestId: 3, deviceId: 'lamp-1', device: { name: 'again' } })
  t.equal(saved.status, 'success')
  t.strictSame(body(await session.handle({ action: 'command/list', requestId: 4, deviceId: 'lamp-1' })).commands, [], 'the insert was deleted with its device')
})

t.test('session: unsubscribe stops pushes; unknown id 404; no id removes all', async (t) => {
  const { broker, admin, device, insert } = setup(t)
  await device('lamp-1')
  const { session, pushes } = await connect(broker, admin)
  const other = await connect(broker, admin)
  const a = await subscribe(session, { deviceId: 'lamp-1' })
  const b = await subscribe(session, {})
  const c = await subscribe(session, { returnUpdatedCommands: true })
  const foreign = await subscribe(other.session, {})
  await insert('lamp-1', { command: 'one' })
  t.same(pushes.map((push) => push.subscriptionId), [a, b])
  const reply = await session.handle({ action: 'command/unsubscribe', requestId: 'u', subscriptionId: a })
  t.equal(JSON.stringify(reply), '{"action":"command/unsubscribe","requestId":"u","status":"success"}')
  pushes.length = 0
  await insert('lamp-1', { command: 'two' })
  t.same(pushes.map((push) => push.subscriptionId), [b], 'a no longer pushes')
  t.strictSame(await session.handle({ action: 'command/unsubscribe', requestId: 'again', subscriptionId: a }),
    { action: 'command/unsubscribe', requestId: 'again', code: 404, status: 'error', error: `Subscription with id ${a} was not found` }, 'twice: 404')
  t.strictSame(errorOf(await session.handle({ action: 'command/unsubscribe', subscriptionId: 999 })), { code: 404, error: 'Subscription with id 999 was not found' })
  t.strictSame(errorOf(await session.handle({ action: 'command/unsubscribe', subscriptionId: foreign })),
    { code: 404, error: `Subscription with id ${foreign} was not found` }, 'another session\'s subscription')
  t.strictSame(await session.handle({ action: 'command/unsubscribe', requestId: 'all' }), { action: 'command/unsubscribe', requestId: 'all', status: 'success' })
  t.strictSame(body(await session.handle({ action: 'subscription/list' })).subscriptions, [], 'all gone')
  pushes.length = 0
  other.pushes.length = 0
  await insert('lamp-1', { command: 'three' })
  await session.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: 3, command: { status: 'x' } })
  t.same(pushes, [], 'neither b nor c pushes')
  t.same(other.pushes.map((push) => push.subscriptionId), [foreign], 'the other session keeps its own')
  t.strictSame(errorOf(await session.handle({ action: 'command/unsubscribe', subscriptionId: c })), { code: 404, error: `Subscription with id ${c} was not found` })
  await subscribe(session, {})
  t.equal((await session.handle({ action: 'command/unsubscribe', subscriptionId: null })).status, 'success', 'a null id removes all too')
  t.strictSame(body(await session.handle({ action: 'subscription/list' })).subscriptions, [])
})

t.test('session: subscription/list shows each subscription with nulls and DeviceHive timestamps', async (t) => {
  const { broker, admin, device } = setup(t)
  await device('lamp-1')
  const { session } = await connect(broker, admin)
  t.equal(JSON.stringify(await session.handle({ action: 'subscription/list', requestId: 1 })),
    '{"action":"subscription/list","requestId":1,"status":"success","subscriptions":[]}')
  const a = await subscribe(session, { deviceId: 'lamp-1', names: ['on', 'off'], timestamp: '2026-01-01T01:02:03Z' })
  const b = await subscribe(session, { networkIds: [1, 2], deviceTypeIds: [3], returnUpdatedCommands: true })
  const c = await subscribe(session, { timestamp: START + 5 })
  const reply = await session.handle({ action: 'subscription/list', requestId: 2 })
  t.same(Object.keys(reply), ['action', 'requestId', 'status', 'subscriptions'])
  const subscriptions = body(reply).subscriptions as Array<Record<string, unknown>>
  for (const s of subscriptions) t.same(Object.keys(s), ['subscriptionId', 'type', 'deviceId', 'networkIds', 'deviceTypeIds', 'names', 'timestamp'])
  t.equal(JSON.stringify(subscriptions), JSON.stringify([
    { subscriptionId: a, type: 'command', deviceId: 'lamp-1', networkIds: null, deviceTypeIds: null, names: ['on', 'off'], timestamp: '2026-01-01T01:02:03.000' },
    { subscriptionId: b, type: 'command', deviceId: null, networkIds: [1, 2], deviceTypeIds: [3], names: null, timestamp: null },
    { subscriptionId: c, type: 'command', deviceId: null, networkIds: null, deviceTypeIds: null, names: null, timestamp: '2026-01-01T00:00:00.005' }
  ]))
  t.strictSame(body(await session.handle({ action: 'subscription/list', type: 'command' })).subscriptions, subscriptions, 'type command')
  t.strictSame(body(await session.handle({ action: 'subscription/list', type: null })).subscriptions, subscriptions, 'type null')
  t.strictSame(body(await session.handle({ action: 'subscription/list', type: 'notification' })).subscriptions, [], 'no notification subscriptions')
  const other = await connect(broker, admin)
  t.strictSame(body(await other.session.handle({ action: 'subscription/list' })).subscriptions, [], 'per session')
})

t.test('session: maxSubscriptionsPerSession refuses the next subscribe with 400', async (t) => {
  const { broker, admin } = setup(t, { maxSubscriptionsPerSession: 2 })
  const { session } = await connect(broker, admin)
  const first = await subscribe(session, {})
  await subscribe(session, {})
  const refused = await session.handle({ action: 'command/subscribe', requestId: 3 })
  t.equal(refused.code, 400)
  t.match(refused.error, VALIDATION)
  t.same(Object.keys(refused), ERROR_KEYS)
  t.equal((body(await session.handle({ action: 'subscription/list' })).subscriptions as unknown[]).length, 2, 'nothing added')
  const other = await connect(broker, admin)
  t.equal((await other.session.handle({ action: 'command/subscribe' })).status, 'success', 'per session')
  await session.handle({ action: 'command/unsubscribe', subscriptionId: first })
  t.equal((await session.handle({ action: 'command/subscribe' })).status, 'success', 'room again after an unsubscribe')
})

t.test('session: a subscription lives for the session: the expiry of its token does not silence it', async (t) => {
  const { broker, admin, device, insert, token, clock } = setup(t)
  await device('lamp-1')
  const { session, pushes } = await connect(broker, token({ e: clock.now() + 10_000 }))
  const inserts = await subscribe(session, { deviceId: 'lamp-1' })
  const updates = await subscribe(session, { returnUpdatedCommands: true })
  await insert('lamp-1', { command: 'before', lifetime: 100 })
  await broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: 1, command: { status: 'ok' } }, admin)
  t.same(pushes.map((push) => push.subscriptionId), [inserts, updates])
  clock.advance(10_001)
  pushes.length = 0
  await insert('lamp-1', { command: 'after', lifetime: 5 })
  await insert('lamp-1', { command: 'updated' })
  await broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: 3, command: { status: 'ok' } }, admin)
  clock.advance(5000 + 100)
  t.same(pushes.map((push) => [push.subscriptionId, push.command.command, push.command.status]), [
    [inserts, 'after', null], [inserts, 'updated', null], [updates, 'updated', 'ok'], [updates, 'after', 'expired']
  ], 'inserts, updates and expiries are pushed after the token expired')
  t.strictSame(errorOf(await session.handle({ action: 'command/get', deviceId: 'lamp-1', commandId: 1 })), EXPIRED,
    'while new requests with the expired token are refused')
  t.same((body(await session.handle({ action: 'subscription/list' })).subscriptions as unknown[]).length, 2,
    'subscription/list still works with the expired token')
  t.equal((await session.handle({ action: 'command/unsubscribe', subscriptionId: inserts })).status, 'success', 'and so does unsubscribe')
  t.equal((await session.handle({ action: 'authenticate', token: admin })).status, 'success', 'authenticating again')
  t.same((body(await session.handle({ action: 'subscription/list' })).subscriptions as Array<{ subscriptionId: number }>).map((s) => s.subscriptionId),
    [updates], 'keeps the subscriptions')
})

t.test('session: a subscription keeps the rights it was made with, and reads where the device is now', async (t) => {
  const { broker, admin, device, insert, token } = setup(t)
  await device('lamp-1', 1, 1)
  const one = await connect(broker, token({ n: ['1'] }))
  const two = await connect(broker, token({ n: ['2'] }))
  await subscribe(one.session, { returnUpdatedCommands: true })
  await subscribe(two.session, { returnUpdatedCommands: true })
  await subscribe(one.session, {})
  await subscribe(two.session, {})
  await insert('lamp-1', { command: 'while in 1' })
  t.same(one.pushes.map((push) => push.command.command), ['while in 1'])
  t.same(two.pushes, [])
  await broker.handle({ action: 'device/save', deviceId: 'lamp-1', device: { networkId: 2 } }, admin)
  one.pushes.length = 0
  await broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: 1, command: { status: 'done' } }, admin)
  await insert('lamp-1', { command: 'while in 2' })
  t.same(one.pushes, [], 'network 1 no longer sees the device: neither the update of its old command nor the new one')
  t.same(two.pushes.map((push) => [push.action, push.command.command, push.command.status]),
    [['command/update', 'while in 1', 'done'], ['command/insert', 'while in 2', null]], 'network 2 sees both')
  const replay = await connect(broker, token({ n: ['1'] }))
  await subscribe(replay.session, { timestamp: new Date(START - 1).toISOString() })
  await turn()
  t.same(replay.pushes, [], 'nor does network 1 replay its history')
  const replay2 = await connect(broker, token({ n: ['2'] }))
  await subscribe(replay2.session, { timestamp: new Date(START - 1).toISOString() })
  await turn()
  t.same(replay2.pushes.map((push) => push.command.command), ['while in 1', 'while in 2'], 'network 2 does')
})

t.test('session: each push checks the subscribing token, not the token the session holds now', async (t) => {
  const { broker, device, insert, token } = setup(t)
  await device('net-2', 2, 1)
  const { session, pushes } = await connect(broker, token({ n: ['1'] }))
  await subscribe(session, {})
  await session.handle({ action: 'authenticate', token: token({ n: ['2'] }) })
  await insert('net-2', { command: 'x' })
  t.same(pushes, [], 'the subscription keeps its own token')
  await subscribe(session, {})
  await insert('net-2', { command: 'y' })
  t.same(pushes.map((push) => push.command.command), ['y'])
})

// --- session lifecycle ----------------------------------------------------------------------

t.test('session: close() drops its subscriptions and refuses later messages with 503', async (t) => {
  const { broker, admin, device, insert } = setup(t)
  await device('lamp-1')
  const { session, pushes } = await connect(broker, admin)
  const other = await connect(broker, admin)
  await subscribe(session, {})
  await subscribe(session, { returnUpdatedCommands: true })
  await subscribe(other.session, {})
  t.equal(session.closed, false)
  session.close()
  t.equal(session.closed, true)
  session.close()
  t.equal(session.closed, true, 'idempotent')
  await insert('lamp-1', { command: 'on' })
  await broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: 1, command: { status: 'x' } }, admin)
  t.same(pushes, [], 'no more pushes')
  t.equal(other.pushes.length, 1, 'other sessions unaffected')
  t.equal(other.session.closed, false)
  for (const action of ['authenticate', 'command/get', 'command/subscribe', 'subscription/list']) {
    t.strictSame(await session.handle({ action, requestId: 5, token: admin, deviceId: 'lamp-1', commandId: 1 }),
      { action, requestId: 5, code: 503, status: 'error', error: 'Broker is closed' }, action)
  }
  t.strictSame(errorOf(await session.handle({ action: 'command/get', deviceId: 'lamp-1', commandId: 1 }, admin)), CLOSED, 'even with a token')
})

t.test('session: broker.close() closes every session', async (t) => {
  const { broker, admin, device } = setup(t)
  await device('lamp-1')
  const a = await connect(broker, admin)
  const b = await connect(broker, admin)
  const idle = await connect(broker, admin)
  await subscribe(a.session, {})
  await subscribe(b.session, { deviceId: 'lamp-1', returnUpdatedCommands: true })
  await broker.close()
  t.equal(a.session.closed, true)
  t.equal(b.session.closed, true)
  t.equal(idle.session.closed, true, 'also a session that never subscribed')
  for (const { session } of [a, b, idle]) {
    t.strictSame(errorOf(await session.handle({ action: 'subscription/list' })), CLOSED)
  }
  a.session.close()
  t.equal(a.session.closed, true, 'closing again is harmless')
})

// Closing is O(1) a session: its subscriptions end over later turns (lib/session.ts, Reaper),
// so a gateway whose connections all drop does not block the event loop for a second.
t.test('session: a closed session\'s subscriptions push nothing while they wait, and then leave the fan-out', async (t) => {
  const { broker, admin, device, insert } = setup(t)
  await device('lamp-1')
  const fanOuts = new Set<FanOut>()
  const { add } = FanOut.prototype
  FanOut.prototype.add = function (this: FanOut, subscriber) {
    fanOuts.add(this)
    return add.call(this, subscriber)
  }
  t.teardown(() => { FanOut.prototype.add = add })
  const sessions = await Promise.all(Array.from({ length: 3 }, async () => await connect(broker, admin)))
  for (const { session } of sessions) {
    for (let k = 0; k < 4; k++) await subscribe(session, k % 2 === 0 ? { deviceId: 'lamp-1' } : { networkIds: [1] })
  }
  const [fanOut] = fanOuts
  t.equal(fanOut?.size, 12)
  const waiting = reaper.size
  for (const { session } of sessions) session.close()
  t.equal(reaper.size, waiting + 3, 'the sessions wait for the reaper')
  t.equal(fanOut?.size, 12, 'their subscriptions are still filed')
  t.equal((await insert('lamp-1', { command: 'meanwhile' })).status, 'success')
  t.same(sessions.flatMap(({ pushes }) => pushes), [], 'and push nothing')
  for (let i = 0; i < 10 && reaper.size > 0; i++) await turn()
  t.equal(reaper.size, 0, 'the reaper is done')
  t.equal(fanOut?.size, 0, 'every subscription has left the fan-out')
})

t.test('session: the reaper ends a bounded number of subscriptions per turn, oldest session first', async (t) => {
  const host = { dispatch: async () => ({ action: null, status: 'success' }) as unknown as Reply, pushFailed: () => {}, closed: () => {} }
  const ended: string[] = []
  const state = (name: string, count: number): SessionState => {
    const s = new SessionState(host, () => {})
    for (let i = 0; i < count; i++) s.subscriptions.set(i, { id: i, listing: undefined as never, end: () => { ended.push(`${name}${i}`) } })
    return s
  }
  const small = new Reaper(3)
  const a = state('a', 4)
  const b = state('b', 2)
  const c = state('c', 2)
  small.add(state('none', 0))
  t.equal(small.size, 0, 'a session without subscriptions is not queued')
  for (const s of [a, b, c]) small.add(s)
  t.equal(small.size, 3)
  t.same(ended, [], 'nothing ends in the closing turn')
  await turn()
  t.same(ended, ['a0', 'a1', 'a2'], 'at most three a turn')
  // Ended meanwhile by someone else (a device/delete): the reaper finds nothing left.
  for (const id of [...b.subscriptions.keys()]) b.subscriptions.delete(id)
  await turn()
  t.same(ended, ['a0', 'a1', 'a2', 'a3', 'c0', 'c1'])
  t.equal(small.size, 0)
  t.same([a, b, c].map((s) => s.subscriptions.size), [0, 0, 0], 'every session lets go of its subscriptions')
  small.add(state('d', 1))
  await turn()
  t.same(ended.slice(-1), ['d0'], 'and the reaper starts again for the next')
})

t.test('session: a history replay stops when its session closes', async (t) => {
  const store = memoryStore()
  let scans = 0
  const counting = overridable(store)
  const scan = counting.scanCommands
  counting.scanCommands = (...args) => { scans++; return scan(...args) }
  const { broker, admin, device, insert } = setup(t, {}, counting)
  await device('lamp-1')
  for (let i = 0; i < 40; i++) await insert('lamp-1', { command: `c${i}`, timestamp: iso(i + 1) })
  const open = await connect(broker, admin)
  scans = 0
  await subscribe(open.session, { timestamp: iso(0), limit: 40 })
  for (let i = 0; i < 20; i++) await turn()
  t.equal(open.pushes.length, 40, 'a replay to the end')
  const steps = scans
  t.ok(steps > 1, `takes several steps (${steps})`)
  const { session, pushes } = await connect(broker, admin)
  scans = 0
  await subscribe(session, { timestamp: iso(0), limit: 40 })
  t.equal(scans, 1, 'the first step comes with the reply')
  const sent = pushes.length
  session.close()
  for (let i = 0; i < 20; i++) await turn()
  t.equal(scans, 1, 'no step after the close')
  t.equal(pushes.length, sent, 'nor a push')
})

t.test('session: a push that throws is reported as ERR_PUSH and other sessions still receive theirs', async (t) => {
  const { broker, admin, device, insert } = setup(t)
  await device('lamp-1')
  const errors: BrokerError[] = []
  broker.on('error', (err) => errors.push(err))
  const boom = new Error('socket gone')
  const bad = broker.session(() => { throw boom })
  await bad.handle({ action: 'authenticate', token: admin })
  await subscribe(bad, {})
  await subscribe(bad, { deviceId: 'lamp-1' })
  const good = await connect(broker, admin)
  await subscribe(good.session, {})
  const reply = await insert('lamp-1', { command: 'on' })
  t.equal(reply.status, 'success', 'the insert is unaffected')
  t.equal(good.pushes.length, 1, 'the other session got its push')
  t.equal(errors.length, 2, 'one report per failed push')
  t.ok(errors[0] instanceof BrokerError)
  t.equal(errors[0]?.code, 'ERR_PUSH')
  t.equal(errors[0]?.cause, boom)
  t.equal(bad.closed, false, 'the session stays open')
})

t.test('session: a push returning a rejected promise is reported as ERR_PUSH and not awaited', async (t) => {
  const { broker, admin, device, insert } = setup(t)
  await device('lamp-1')
  const errors: BrokerError[] = []
  broker.on('error', (err) => errors.push(err))
  const boom = new Error('write failed')
  let rejected = 0
  const rejecting = broker.session(() => { rejected++; return Promise.reject(boom) })
  let stuck = 0
  const hanging = broker.session(() => { stuck++; return new Promise(() => {}) })
  for (const session of [rejecting, hanging]) {
    await session.handle({ action: 'authenticate', token: admin })
    await subscribe(session, {})
  }
  const good = await connect(broker, admin)
  await subscribe(good.session, {})
  t.equal((await insert('lamp-1', { command: 'one' })).status, 'success')
  t.equal((await insert('lamp-1', { command: 'two' })).status, 'success', 'a push that never settles holds nothing up')
  t.equal(stuck, 2, 'called again without waiting for the first')
  t.equal(rejected, 2)
  t.equal(good.pushes.length, 2)
  await turn()
  t.equal(errors.length, 2)
  t.ok(errors.every((err) => err instanceof BrokerError && err.code === 'ERR_PUSH' && err.cause === boom))
})

t.test('session: pushes to a closed session are dropped, not thrown', async (t) => {
  const { broker, admin, device, insert } = setup(t)
  await device('lamp-1')
  await insert('lamp-1', { command: 'old', timestamp: iso(1000) })
  const errors: unknown[] = []
  broker.on('error', (err) => errors.push(err))
  // History held for a reply that arrives after the session closed.
  const { session, pushes } = await connect(broker, admin)
  const reply = session.handle({ action: 'command/subscribe', deviceId: 'lamp-1', timestamp: iso(0) })
  session.close()
  t.equal((await reply).status, 'success', 'the subscribe itself had been served')
  await turn()
  t.same(pushes, [], 'held history dropped')
  // A session closed by the push of one of its own subscriptions: the next one is dropped.
  const log: Push[] = []
  const closing = broker.session((push) => { log.push(push); closing.close() })
  await closing.handle({ action: 'authenticate', token: admin })
  await subscribe(closing, {})
  await subscribe(closing, {})
  t.equal((await insert('lamp-1', { command: 'new' })).status, 'success')
  t.equal(log.length, 1, 'only the first push was delivered')
  await insert('lamp-1', { command: 'newer' })
  t.equal(log.length, 1)
  t.same(errors, [], 'nothing thrown or reported')
})

t.test('session: a history read the store fails answers 500 and reports ERR_STORE', async (t) => {
  const inner = memoryStore()
  const store: Store = { ...overridable(inner), scanCommands: () => { throw new Error('unreadable') } }
  const { broker, admin } = setup(t, {}, store)
  const errors: BrokerError[] = []
  broker.on('error', (err) => errors.push(err))
  const { session } = await connect(broker, admin)
  t.strictSame(errorOf(await session.handle({ action: 'command/subscribe', timestamp: iso(0) })), { code: 500, error: 'Internal server error' })
  t.equal(errors[0]?.code, 'ERR_STORE')
  t.strictSame(body(await session.handle({ action: 'subscription/list' })).subscriptions, [], 'the failed subscribe left no subscription behind')
})

// --- wrong types ----------------------------------------------------------------------------

t.test('session: a field of the wrong type anywhere is 400 Malformed Json received.', async (t) => {
  const { broker, admin, device } = setup(t)
  await device('lamp-1')
  const { session, pushes } = await connect(broker, admin)
  const rows: Array<[string, Record<string, unknown>]> = [
    ['command/subscribe', { networkIds: '1' }],
    ['command/subscribe', { networkIds: ['x'] }],
    ['command/subscribe', { deviceTypeIds: 1 }],
    ['command/subscribe', { deviceTypeIds: [1.5] }],
    ['command/subscribe', { names: [{}] }],
    ['command/subscribe', { names: 'on' }],
    ['command/subscribe', { limit: 'x' }],
    ['command/subscribe', { returnUpdatedCommands: 'yes' }],
    ['command/subscribe', { timestamp: 'yesterday' }],
    ['command/subscribe', { deviceId: {} }],
    ['command/unsubscribe', { subscriptionId: 'x' }],
    ['command/unsubscribe', { subscriptionId: 1.5 }],
    ['subscription/list', { type: {} }],
    ['authenticate', { token: [] }]
  ]
  for (const [action, fields] of rows) {
    t.strictSame(await session.handle({ action, requestId: 'w', ...fields }),
      { action, requestId: 'w', code: 400, status: 'error', error: 'Malformed Json received.' }, `${action} ${JSON.stringify(fields)}`)
  }
  t.strictSame(body(await session.handle({ action: 'subscription/list' })).subscriptions, [], 'no subscription was made')
  t.strictSame(await session.handle('{"action":"command/subscribe",'), { code: 400, status: 'error', error: 'Malformed Json received.' }, 'a broken frame')
  await device('lamp-2')
  t.same(pushes, [])
})

t.test('session: JSON types are read as Gson reads them: numbers as text, numeric strings as numbers, "true" as true', async (t) => {
  const { broker, admin, device, insert } = setup(t)
  await device('42', 1, 1)
  const { session, pushes } = await connect(broker, admin)
  const id = body(await session.handle({ action: 'command/subscribe', deviceId: 42, networkIds: ['1'], names: [7], returnUpdatedCommands: 'true', limit: '5' })).subscriptionId
  t.strictSame(body(await session.handle({ action: 'subscription/list', type: 'command' })).subscriptions, [{
    subscriptionId: id, type: 'command', deviceId: '42', networkIds: [1], deviceTypeIds: null, names: ['7'], timestamp: null
  }], 'the device id, network ids and names as DeviceHive would read them')
  await insert('42', { command: 7 })
  await session.handle({ action: 'command/update', deviceId: '42', commandId: '1', command: { status: 200 } })
  t.same(pushes.map((push) => [push.action, push.command.command, push.command.status]), [['command/update', '7', '200']])
  t.equal((await session.handle({ action: 'command/unsubscribe', subscriptionId: String(id) })).status, 'success', 'a numeric string subscription id')
})

