import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { createBroker } from '../lib/broker.js'
import { signToken } from '../lib/auth.js'
import { BrokerError } from '../lib/errors.js'
import { manualClock } from '../lib/manual-clock.js'
import { memoryStore } from '../lib/store/memory.js'
import type { Command, Reply } from '../lib/schema.js'
import { sqliteStore } from '../lib/store/sqlite.js'
import type { Store } from '../lib/store/store.js'
import { laterStore } from './fixtures/later-store.js'
import { sharedSpace } from './fixtures/shared-store.js'
import { body, CLOSED, DENIED, errorOf, EXPIRED, INVALID, MALFORMED, NAME, NO_DEVICE_ID, overridable, rawToken, SECRET, setup, START, UNAUTHORIZED } from './fixtures/broker.js'

const TWELVE_KEYS = ['id', 'command', 'timestamp', 'lastUpdated', 'userId', 'deviceId', 'networkId', 'deviceTypeId', 'parameters', 'lifetime', 'status', 'result']

t.test('broker: a frame that is not a JSON object gets the bare 400 envelope', async (t) => {
  const { broker, admin } = setup(t)
  for (const frame of ['nope', '{"action":', '[]', '5', 'null', '"text"', '', [], 5, null, 'true', undefined]) {
    const reply = await broker.handle(frame, admin)
    t.same(Object.keys(reply), ['code', 'status', 'error'], `keys for ${JSON.stringify(frame)}`)
    t.strictSame(reply, { code: 400, status: 'error', error: 'Malformed Json received.' })
  }
})

t.test('broker: requestId is echoed verbatim, null when absent', async (t) => {
  const { broker, admin } = setup(t)
  for (const requestId of [1, 'abc', { nested: [1, null] }, [1, 2], 0, false, null]) {
    const reply = await broker.handle({ action: 'device/get', requestId, deviceId: 'none' }, admin)
    t.strictSame(reply.requestId, requestId)
  }
  const reply = await broker.handle('{"action":"device/get","deviceId":"none"}', admin)
  t.equal(reply.requestId, null)
  t.ok('requestId' in reply)
})

t.test('broker: an error reply has exactly action, requestId, code, status, error in order', async (t) => {
  const { broker } = setup(t)
  const reply = await broker.handle({ action: 'command/insert', requestId: 7, deviceId: 'x', command: {} })
  t.same(Object.keys(reply), ['action', 'requestId', 'code', 'status', 'error'])
  t.equal(JSON.stringify(reply), '{"action":"command/insert","requestId":7,"code":401,"status":"error","error":"Unauthorized"}')
})

t.test('broker: unknown and missing actions', async (t) => {
  const { broker, admin } = setup(t)
  // @ts-expect-error an action no one serves fails to compile in an object literal; the broker answers it all the same
  t.strictSame(await broker.handle({ action: 'notification/insert', requestId: 1 }, admin),
    { action: 'notification/insert', requestId: 1, code: 400, status: 'error', error: 'Unknown action requested: notification/insert' })
  t.strictSame(await broker.handle({ requestId: 2 }, admin),
    { action: null, requestId: 2, code: 400, status: 'error', error: 'Unknown action requested: null' })
  t.strictSame(errorOf(await broker.handle({ action: 5 }, admin)), { code: 400, error: 'Unknown action requested: 5' })
  // @ts-expect-error as above
  t.strictSame(errorOf(await broker.handle({ action: '__proto__' }, admin)), { code: 400, error: 'Unknown action requested: __proto__' })
})

t.test('broker: handle() never throws and never rejects, even for hostile objects', async (t) => {
  const { broker, admin } = setup(t)
  const hostile = new Proxy({}, { get () { throw new Error('boom') } })
  const errors: unknown[] = []
  broker.on('error', (err) => errors.push(err))
  const reply = await broker.handle(hostile, admin)
  t.strictSame(errorOf(reply), { code: 500, error: 'Internal server error' })
  t.equal((errors[0] as BrokerError).code, 'ERR_INTERNAL')
  const cyclic: Record<string, unknown> = { a: 1 }
  cyclic.self = cyclic
  await broker.handle({ action: 'device/save', deviceId: 'd', device: { name: 'd' } }, admin)
  t.strictSame(errorOf(await broker.handle({ action: 'command/insert', deviceId: 'd', command: { command: 'x', parameters: cyclic } }, admin)), MALFORMED)
  t.strictSame(errorOf(await broker.handle({ action: 'command/insert', deviceId: 'd', command: { command: 'x', parameters: 10n } }, admin)), MALFORMED)
  t.strictSame(errorOf(await broker.handle({ action: 'command/insert', deviceId: 'd', command: { command: 'x', parameters: () => 1 } }, admin)), MALFORMED)
})

t.test('broker: §3 error precedence for a device-scoped action', async (t) => {
  const { broker, clock, token, device } = setup(t)
  await device('lamp-1', 1, 10)
  await device('nullnet', null, 10)
  const expired = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'], e: clock.now() - 1 }, { secret: SECRET })
  const refresh = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'], t: 0 }, { secret: SECRET, now: clock.now() })
  const otherKey = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'] }, { secret: 'c29tZXRoaW5nZWxzZQ==', now: clock.now(), allowWeakKey: true })
  const noUser = rawToken({ a: [0], n: ['*'], dt: ['*'], e: clock.now() + 60_000, t: 1 })
  const nullUser = rawToken({ u: null, a: [0], n: ['*'], dt: ['*'], e: clock.now() + 60_000, t: 1 })
  const otherType = rawToken({ u: 1, a: [0], n: ['*'], dt: ['*'], e: clock.now() + 60_000, t: 2 })
  const nullLists = rawToken({ u: 1, a: [0], n: null, dt: null, e: clock.now() + 60_000, t: 1 })
  const rows: Array<[string, unknown, Record<string, unknown>, { code: number, error: string }]> = [
    ['no token', undefined, { deviceId: 'lamp-1' }, UNAUTHORIZED],
    ['empty token', '', { deviceId: 'lamp-1' }, UNAUTHORIZED],
    ['null token', null, { deviceId: 'lamp-1' }, UNAUTHORIZED],
    ['garbage token', 'not.a.jwt', { deviceId: 'lamp-1' }, INVALID],
    ['non-string token', 42, { deviceId: 'lamp-1' }, INVALID],
    ['token signed with another secret', otherKey, { deviceId: 'lamp-1' }, INVALID],
    ['refresh token', refresh, { deviceId: 'lamp-1' }, INVALID],
    ['no u claim', noUser, { deviceId: 'lamp-1' }, INVALID],
    ['null u claim', nullUser, { deviceId: 'lamp-1' }, INVALID],
    ['t other than 0 is an access token', otherType, { deviceId: 'lamp-1' }, { code: 400, error: 'Command is required' }],
    ['null n reads as absent: no device', nullLists, { deviceId: 'lamp-1' }, DENIED],
    ['invalid beats a missing deviceId', 'x.y.z', {}, INVALID],
    ['expired token', expired, { deviceId: 'lamp-1' }, EXPIRED],
    ['expired beats a missing action', expired, {}, EXPIRED],
    ['action missing', token({ a: [3] }), { deviceId: 'lamp-1' }, DENIED],
    ['no action at all (a absent)', token({ a: undefined }), { deviceId: 'lamp-1' }, DENIED],
    ['action missing beats a missing deviceId', token({ a: [3] }), {}, DENIED],
    ['action missing beats an unknown device', token({ a: [5] }), { deviceId: 'ghost' }, DENIED],
    ['client set lacks nothing needed', token({ a: [] }), { deviceId: 'lamp-1' }, { code: 400, error: 'Command is required' }],
    ['other network', token({ n: ['2'] }), { deviceId: 'lamp-1' }, DENIED],
    ['n absent: no device at all', token({ n: undefined }), { deviceId: 'lamp-1' }, DENIED],
    ['n absent and no deviceId: the missing target is checked first', token({ n: undefined }), {}, NO_DEVICE_ID],
    ['other device type', token({ n: ['1'], dt: ['11'] }), { deviceId: 'lamp-1' }, DENIED],
    ['dt absent means every type', token({ n: ['1'], dt: undefined }), { deviceId: 'lamp-1' }, { code: 400, error: 'Command is required' }],
    ['null network needs n *', token({ n: ['1'] }), { deviceId: 'nullnet' }, DENIED],
    ['null network, n *', token({ n: ['*'], dt: ['10'] }), { deviceId: 'nullnet' }, { code: 400, error: 'Command is required' }],
    ['unknown device, restricted token', token({ n: ['1'] }), { deviceId: 'ghost' }, DENIED],
    ['unknown device, n * but dt restricted', token({ n: ['*'], dt: ['10'] }), { deviceId: 'ghost' }, DENIED],
    ['deviceId missing', token({ n: ['1'] }), {}, NO_DEVICE_ID],
    ['deviceId empty', token(), { deviceId: '' }, NO_DEVICE_ID],
    ['deviceId null', token(), { deviceId: null }, NO_DEVICE_ID],
    ['deviceId of the wrong type', token(), { deviceId: {} }, MALFORMED],
    ['a numeric deviceId is its decimal text', token(), { deviceId: 12 }, { code: 404, error: 'Device with such deviceId = 12 not found' }],
    ['unknown device, wildcard token', token(), { deviceId: 'ghost' }, { code: 404, error: 'Device with such deviceId = ghost not found' }]
  ]
  for (const [name, tok, fields, expected] of rows) {
    const reply = await broker.handle({ action: 'command/insert', requestId: name, ...fields }, tok)
    t.strictSame(errorOf(reply), expected, name)
    t.equal(reply.action, 'command/insert', `${name}: action echoed`)
    t.equal(reply.requestId, name, `${name}: requestId echoed`)
  }
})

t.test('broker: a token DeviceHive signed with the same JWT_SECRET is accepted', async (t) => {
  const { createHmac } = await import('node:crypto')
  // DeviceHive's demo JWT_SECRET: six bytes of key, accepted only with allowWeakKey.
  const { broker, device, clock } = setup(t, { secret: 'devicehive', allowWeakKey: true })
  await device('lamp-1')
  const header = Buffer.from('{"alg":"HS256"}').toString('base64url')
  const payload = Buffer.from(JSON.stringify({ payload: { u: 7, a: [0], n: ['*'], dt: ['*'], e: clock.now() + 60_000, t: 1 } })).toString('base64url')
  const key = Buffer.from([0x75, 0xeb, 0xe2, 0x71, 0xe8, 0x62])
  const signature = createHmac('sha256', key).update(`${header}.${payload}`).digest('base64url')
  const reply = await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on' } }, `${header}.${payload}.${signature}`)
  t.equal(reply.status, 'success')
  t.equal((body(reply).command as { userId: number }).userId, 7)
})

t.test('broker: a raw key works as configuration', async (t) => {
  const key = new Uint8Array(32).fill(7)
  const clock = manualClock(START)
  const broker = createBroker(memoryStore(), { key, clock })
  t.teardown(() => broker.close())
  const token = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'] }, { key, now: START })
  t.equal((await broker.handle({ action: 'device/save', deviceId: 'a', device: { name: 'a' } }, token)).status, 'success')
  t.strictSame(errorOf(await broker.handle({ action: 'device/get', deviceId: 'a' }, signToken({ u: 1, a: [0], n: ['*'] }, { secret: SECRET, now: START }))), INVALID)
})

t.test('broker: expiry is checked on every message, not only at authentication', async (t) => {
  const { broker, clock, device, token } = setup(t)
  await device('lamp-1')
  const short = token({ e: clock.now() + 1000 })
  t.equal((await broker.handle({ action: 'device/get', deviceId: 'lamp-1' }, short)).status, 'success')
  clock.advance(1000)
  t.equal((await broker.handle({ action: 'device/get', deviceId: 'lamp-1' }, short)).status, 'success', 'e === now is still valid')
  clock.advance(1)
  t.strictSame(errorOf(await broker.handle({ action: 'device/get', deviceId: 'lamp-1' }, short)), EXPIRED)
})

t.test('broker: command/insert replies with exactly the four assigned keys, after the commit', async (t) => {
  const { broker, store, device, token, clock } = setup(t)
  await device('lamp-1')
  clock.advance(1234)
  const reply = await broker.handle({ action: 'command/insert', requestId: 'r', deviceId: 'lamp-1', command: { command: 'on' } }, token({ u: 42 }))
  t.same(Object.keys(reply), ['action', 'requestId', 'status', 'command'])
  const inner = body(reply).command as Record<string, unknown>
  t.same(Object.keys(inner), ['id', 'timestamp', 'lastUpdated', 'userId'])
  t.strictSame(inner, { id: 1, timestamp: '2026-01-01T00:00:01.234', lastUpdated: '2026-01-01T00:00:01.234', userId: 42 })
  t.ok(store.getCommand(1, clock.now()), 'durable by the time the reply arrives')
  const second = await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on' } }, token({ u: 0 }))
  t.equal((body(second).command as { id: number }).id, 2, 'ids increase')
  t.equal((body(second).command as { userId: unknown }).userId, 0, 'u: 0 is user 0')
})

t.test('broker: the inserted command as command/get shows it: twelve keys, client timestamp kept', async (t) => {
  const { broker, admin, device } = setup(t)
  await device('lamp-1', 3, 4)
  const reply = await broker.handle({
    action: 'command/insert',
    deviceId: 'lamp-1',
    command: {
      command: 'set',
      timestamp: '2025-06-01T10:00:00Z',
      parameters: { level: 5, list: [1, 'a', null] },
      lifetime: 60,
      status: 'queued',
      result: 'none',
      id: 999,
      deviceId: 'other',
      userId: 77,
      networkId: 9,
      extra: { ignored: true }
    }
  }, admin)
  t.strictSame(body(reply).command, { id: 1, timestamp: '2025-06-01T10:00:00.000', lastUpdated: '2025-06-01T10:00:00.000', userId: 1 })
  const got = await broker.handle({ action: 'command/get', deviceId: 'lamp-1', commandId: 1 }, admin)
  const command = body(got).command as Command
  t.same(Object.keys(command), TWELVE_KEYS)
  t.strictSame(command, {
    id: 1,
    command: 'set',
    timestamp: '2025-06-01T10:00:00.000',
    lastUpdated: '2025-06-01T10:00:00.000',
    userId: 1,
    deviceId: 'lamp-1',
    networkId: 3,
    deviceTypeId: 4,
    parameters: { level: 5, list: [1, 'a', null] },
    lifetime: 60,
    status: 'queued',
    result: 'none'
  })
  await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'bare' } }, admin)
  const bare = body(await broker.handle({ action: 'command/get', deviceId: 'lamp-1', commandId: 2 }, admin)).command as Command
  t.equal(JSON.stringify(bare).includes('"parameters":null,"lifetime":null,"status":null,"result":null'), true, 'nulls serialised')
})

t.test('broker: §4 validation of command/insert', async (t) => {
  const { broker, admin, device } = setup(t, { maxLifetime: 3600, maxPayloadBytes: 64 })
  await device('lamp-1')
  const lifetime = { code: 400, error: 'Validation failed with following violations: lifetime must be an integer from 1 to 3600 (seconds)' }
  const rows: Array<[string, Record<string, unknown>, { code: number, error: string } | undefined]> = [
    ['command missing', {}, { code: 400, error: 'Command is required' }],
    ['command null', { command: null }, { code: 400, error: 'Command is required' }],
    ['command a number', { command: 5 }, MALFORMED],
    ['command a string', { command: 'on' }, MALFORMED],
    ['command an array', { command: [] }, MALFORMED],
    ['name missing', { command: {} }, NAME],
    ['name empty', { command: { command: '' } }, NAME],
    ['name not a string', { command: { command: { a: 1 } } }, NAME],
    ['a numeric name is its decimal text, as Gson reads it', { command: { command: 5 } }, undefined],
    ['name of 129 characters', { command: { command: 'x'.repeat(129) } }, NAME],
    ['name of 128 characters', { command: { command: 'x'.repeat(128) } }, undefined],
    ['lifetime a string', { command: { command: 'on', lifetime: 'x' } }, MALFORMED],
    ['lifetime a fraction', { command: { command: 'on', lifetime: 1.5 } }, lifetime],
    ['lifetime zero', { command: { command: 'on', lifetime: 0 } }, lifetime],
    ['lifetime negative', { command: { command: 'on', lifetime: -5 } }, lifetime],
    ['lifetime above the maximum', { command: { command: 'on', lifetime: 3601 } }, lifetime],
    ['lifetime huge', { command: { command: 'on', lifetime: 1e300 } }, lifetime],
    ['lifetime at the maximum', { command: { command: 'on', lifetime: 3600 } }, undefined],
    ['lifetime null', { command: { command: 'on', lifetime: null } }, undefined],
    ['timestamp unparseable', { command: { command: 'on', timestamp: 'yesterday' } }, MALFORMED],
    ['timestamp an object', { command: { command: 'on', timestamp: {} } }, MALFORMED],
    ['status an object', { command: { command: 'on', status: {} } }, MALFORMED],
    ['a numeric status is its decimal text', { command: { command: 'on', status: 5 } }, undefined],
    ['a numeric string lifetime is that number', { command: { command: 'on', lifetime: '30' } }, undefined],
    ['a wrong type beats a bad name', { command: { command: '', lifetime: 'x' } }, MALFORMED],
    ['a bad name beats a bad lifetime', { command: { command: '', lifetime: 0 } }, NAME],
    ['parameters too large', { command: { command: 'on', parameters: { s: 'x'.repeat(60) } } }, { code: 400, error: 'Validation failed with following violations: parameters must be at most 64 bytes when serialised' }],
    ['result too large', { command: { command: 'on', result: 'é'.repeat(40) } }, { code: 400, error: 'Validation failed with following violations: result must be at most 64 bytes when serialised' }],
    ['parameters exactly at the limit', { command: { command: 'on', parameters: 'x'.repeat(62) } }, undefined]
  ]
  for (const [name, fields, expected] of rows) {
    const reply = await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', ...fields }, admin)
    t.strictSame(errorOf(reply), expected, name)
  }
})

t.test('broker: a refused message changes nothing: no row, no timer, no event', async (t) => {
  const { broker, admin, device, clock, store } = setup(t, { maxPayloadBytes: 64 })
  await device('lamp-1')
  const heard: unknown[] = []
  broker.subscribe({}, (command) => heard.push(command))
  const timers = clock.pending
  for (const command of [{ command: '' }, { command: 'on', lifetime: 'x' }, { command: 'on', lifetime: 5, parameters: 'x'.repeat(100) }, { command: 'on', lifetime: 0 }]) {
    t.equal((await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command }, admin)).status, 'error')
  }
  t.equal(store.lastCommandId(), 0, 'nothing stored')
  t.equal(clock.pending, timers, 'no timer armed')
  t.strictSame(heard, [], 'no subscriber heard anything')
})

t.test('broker: timestamps are read leniently and written in DeviceHive form', async (t) => {
  const { broker, admin, device } = setup(t)
  await device('lamp-1')
  const cases: Array<[unknown, string]> = [
    ['2026-11-25T09:39:49.123', '2026-11-25T09:39:49.123'],
    ['2026-11-25T09:39:49', '2026-11-25T09:39:49.000'],
    ['2026-11-25T09:39:49.123Z', '2026-11-25T09:39:49.123'],
    ['2026-11-25T11:39:49.123+02:00', '2026-11-25T09:39:49.123'],
    ['2026-11-25', '2026-11-25T00:00:00.000'],
    [Date.UTC(2026, 10, 25, 9, 39, 49, 5), '2026-11-25T09:39:49.005'],
    [String(Date.UTC(2026, 10, 25)), '2026-11-25T00:00:00.000']
  ]
  for (const [timestamp, written] of cases) {
    const reply = await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on', timestamp } }, admin)
    t.equal((body(reply).command as { timestamp: string }).timestamp, written, String(timestamp))
  }
})

t.test('broker: __proto__ and constructor keys round-trip as data and pollute nothing', async (t) => {
  const { broker, admin, device } = setup(t)
  await device('lamp-1')
  const frame = '{"action":"command/insert","deviceId":"lamp-1","command":{"command":"x","parameters":{"__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}}},"result":{"__proto__":[1]}}}'
  t.equal((await broker.handle(frame, admin)).status, 'success')
  const got = body(await broker.handle({ action: 'command/get', deviceId: 'lamp-1', commandId: 1 }, admin)).command as Command
  t.equal(JSON.stringify(got.parameters), '{"__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}}}')
  t.equal(JSON.stringify(got.result), '{"__proto__":[1]}')
  t.ok(Object.hasOwn(got.parameters as object, '__proto__'), 'an own data property')
  t.equal(({} as Record<string, unknown>).polluted, undefined, 'Object.prototype untouched')
})

t.test('broker: maxPendingPerDevice refuses the next insert and stores nothing', async (t) => {
  const { broker, admin, device, store, clock } = setup(t, { maxPendingPerDevice: 2 })
  await device('lamp-1')
  await device('lamp-2')
  t.equal((await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'a', lifetime: 10 } }, admin)).status, 'success')
  t.equal((await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'b' } }, admin)).status, 'success')
  const refused = await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'c' } }, admin)
  t.strictSame(errorOf(refused), { code: 400, error: 'Validation failed with following violations: device lamp-1 has 2 pending commands, the limit is 2' })
  t.equal(store.lastCommandId(), 2, 'nothing stored')
  t.equal((await broker.handle({ action: 'command/insert', deviceId: 'lamp-2', command: { command: 'a' } }, admin)).status, 'success', 'other devices unaffected')
  await broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: 2, command: { status: 'done' } }, admin)
  t.equal((await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'c' } }, admin)).status, 'success', 'an update frees a place')
  t.equal((await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'd' } }, admin)).status, 'error')
  clock.advance(10_000)
  t.equal((await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'd' } }, admin)).status, 'success', 'an expiry frees a place')
  const burst = await Promise.all([1, 2, 3].map(() => broker.handle({ action: 'command/insert', deviceId: 'lamp-2', command: { command: 'x' } }, admin)))
  t.same(burst.map((reply) => reply.status), ['success', 'error', 'error'], 'writes in flight count too')
})

t.test('broker: a command expires exactly at its lifetime on the broker clock, never early', async (t) => {
  const { broker, admin, device, clock, store } = setup(t)
  await device('lamp-1')
  const expired: Command[] = []
  broker.on('expired', (command) => expired.push(command))
  await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on', lifetime: 30, timestamp: '2020-01-01', status: 'sent' } }, admin)
  clock.advance(29_999)
  t.equal(expired.length, 0, 'not early')
  t.equal((await broker.handle({ action: 'command/get', deviceId: 'lamp-1', commandId: 1 }, admin)).status, 'success')
  clock.advance(1)
  t.equal(expired.length, 1, 'on time')
  t.equal(expired[0]?.status, 'sent', 'as it stood')
  t.ok(Object.isFrozen(expired[0]), 'frozen')
  t.equal(store.getCommand(1, 0), undefined, 'gone from the store')
  t.strictSame(errorOf(await broker.handle({ action: 'command/get', deviceId: 'lamp-1', commandId: 1 }, admin)), { code: 404, error: 'Command with id = 1 not found' })
})

t.test('broker: off the tick grid, expiry is at most one tick late', async (t) => {
  const { broker, admin, device, clock } = setup(t, { tick: 100 }, memoryStore(), START + 37)
  await device('lamp-1')
  const expired: number[] = []
  broker.on('expired', () => expired.push(clock.now()))
  await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on', lifetime: 1 } }, admin)
  clock.advance(999)
  t.equal(expired.length, 0)
  clock.advance(100)
  t.equal(expired.length, 1)
  const late = (expired[0] as number) - (START + 37 + 1000)
  t.ok(late >= 0 && late <= 100, `late by ${late} ms`)
})

t.test('broker: updated commands expire silently; never-updated ones are reported', async (t) => {
  const { broker, admin, device, clock, store } = setup(t)
  await device('lamp-1')
  const expired: number[] = []
  const updates: Command[] = []
  broker.on('expired', (command) => expired.push(command.id))
  broker.subscribe({ returnUpdatedCommands: true }, (command) => updates.push(command))
  await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'a', lifetime: 5 } }, admin)
  await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'b', lifetime: 5 } }, admin)
  await broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: 2, command: { status: 'done' } }, admin)
  clock.advance(5000)
  t.same(expired, [1])
  t.same(updates.map((c) => [c.id, c.status]), [[2, 'done'], [1, 'expired']], 'update subscribers see status expired')
  t.equal(store.getCommand(2, 0), undefined, 'the updated one is gone too')
})

t.test('broker: devices (§12) save, get, delete', async (t) => {
  const { broker, admin, token, clock } = setup(t)
  const save = (deviceId: unknown, device: unknown, tok = admin): Promise<Reply> => broker.handle({ action: 'device/save', requestId: 1, deviceId, device }, tok)
  t.strictSame(await save('lamp-1', { name: 'Lamp', networkId: 1, deviceTypeId: 2, data: { room: 'hall' } }), { action: 'device/save', requestId: 1, status: 'success' })
  const got = await broker.handle({ action: 'device/get', requestId: 2, deviceId: 'lamp-1' }, admin)
  t.same(Object.keys(got), ['action', 'requestId', 'status', 'device'])
  t.same(Object.keys(body(got).device as object), ['id', 'name', 'data', 'networkId', 'deviceTypeId', 'isBlocked'])
  t.strictSame(body(got).device, { id: 'lamp-1', name: 'Lamp', data: { room: 'hall' }, networkId: 1, deviceTypeId: 2, isBlocked: false })
  t.equal((await save('lamp-1', { name: 'Renamed', isBlocked: true })).status, 'success', 'an update')
  t.strictSame(body(await broker.handle({ action: 'device/get', deviceId: 'lamp-1' }, admin)).device,
    { id: 'lamp-1', name: 'Renamed', data: { room: 'hall' }, networkId: 1, deviceTypeId: 2, isBlocked: true },
    'changes only the fields present: the device stays in its network')
  t.equal((await save('lamp-1', { networkId: '3', data: [1], name: null, isBlocked: 'false' })).status, 'success', 'no name needed to update; null is absent; Gson reads strings')
  t.strictSame(body(await broker.handle({ action: 'device/get', deviceId: 'lamp-1' }, admin)).device,
    { id: 'lamp-1', name: 'Renamed', data: [1], networkId: 3, deviceTypeId: 2, isBlocked: false })
  t.strictSame(errorOf(await save('new-one', { networkId: 1 })),
    { code: 400, error: 'Field cannot be empty. The length of name should not be more than 128 symbols.' }, 'a name is needed to create')
  const badId = { code: 400, error: 'Device Id can only contain letters, digits and dashes.' }
  t.strictSame(errorOf(await save('bad id', { name: 'x' })), badId)
  t.strictSame(errorOf(await save('a_b', { name: 'x' })), badId)
  t.strictSame(errorOf(await save('x'.repeat(49), { name: 'x' })), badId)
  t.equal((await save('x'.repeat(48), { name: 'x' })).status, 'success')
  t.strictSame(errorOf(await save('d', undefined)), { code: 400, error: 'Device is required' })
  t.strictSame(errorOf(await save('d', 'x')), MALFORMED)
  const name = { code: 400, error: 'Field cannot be empty. The length of name should not be more than 128 symbols.' }
  t.strictSame(errorOf(await save('d', {})), name)
  t.strictSame(errorOf(await save('d', { name: '' })), name)
  t.strictSame(errorOf(await save('d', { name: 'x'.repeat(129) })), name)
  t.strictSame(errorOf(await save('d', { name: 'x', networkId: 'one' })), MALFORMED)
  t.strictSame(errorOf(await save('d', { name: 'x', isBlocked: 'yes' })), MALFORMED)
  t.strictSame(errorOf(await save('d', { name: 'x' }, token({ a: [3] }))), DENIED, 'needs RegisterDevice')
  t.strictSame(errorOf(await save('d', { name: 'x', networkId: 1 }, token({ a: [6], n: ['2'] }))), DENIED, 'needs the target network')
  t.equal((await save('d', { name: 'x', networkId: 2 }, token({ a: [6], n: ['2'] }))).status, 'success', 'a restricted token may register in its network')
  t.strictSame(errorOf(await save('lamp-1', { name: 'x', networkId: 2 }, token({ a: [6], n: ['2'] }))), DENIED, 'and may not take a device from another network')
  t.strictSame(errorOf(await broker.handle({ action: 'device/get', deviceId: 'ghost' }, admin)), { code: 404, error: 'Device with such deviceId = ghost not found' })
  t.strictSame(errorOf(await broker.handle({ action: 'device/get', deviceId: 'd' }, token({ a: [3], n: ['1'] }))), DENIED)
  t.equal((await broker.handle({ action: 'device/get', deviceId: 'd' }, token({ a: [3], n: ['2'] }))).status, 'success')
  // delete removes the device, its commands and their timers
  await broker.handle({ action: 'command/insert', deviceId: 'd', command: { command: 'x', lifetime: 100 } }, admin)
  const timers = clock.pending
  t.strictSame(errorOf(await broker.handle({ action: 'device/delete', deviceId: 'd' }, token({ a: [3] }))), DENIED)
  t.strictSame(await broker.handle({ action: 'device/delete', requestId: 3, deviceId: 'd' }, admin), { action: 'device/delete', requestId: 3, status: 'success' })
  t.ok(clock.pending <= timers, 'its timer is gone')
  t.strictSame(errorOf(await broker.handle({ action: 'device/get', deviceId: 'd' }, admin)), { code: 404, error: 'Device with such deviceId = d not found' })
  t.strictSame(errorOf(await broker.handle({ action: 'device/delete', deviceId: 'd' }, admin)), { code: 404, error: 'Device with such deviceId = d not found' })
})

t.test('broker: device data is size-limited and copied', async (t) => {
  const { broker, admin } = setup(t, { maxPayloadBytes: 32 })
  t.strictSame(errorOf(await broker.handle({ action: 'device/save', deviceId: 'd', device: { name: 'x', data: 'x'.repeat(40) } }, admin)),
    { code: 400, error: 'Validation failed with following violations: data must be at most 32 bytes when serialised' })
  const data = { a: 1 }
  await broker.handle({ action: 'device/save', deviceId: 'd', device: { name: 'x', data } }, admin)
  data.a = 2
  t.strictSame(body(await broker.handle({ action: 'device/get', deviceId: 'd' }, admin)).device, { id: 'd', name: 'x', data: { a: 1 }, networkId: null, deviceTypeId: null, isBlocked: false })
})

t.test('broker: subscribers are filtered, isolated and handed frozen copies', async (t) => {
  const { broker, admin, device, store, clock } = setup(t)
  await device('lamp-1', 1, 10)
  await device('lamp-2', 2, 20)
  const seen: Record<string, string[]> = { device: [], names: [], network: [], type: [], all: [], other: [], updates: [] }
  const record = (key: string) => (command: Command) => { (seen[key] as string[]).push(`${command.deviceId}:${command.command}`) }
  broker.subscribe({ deviceId: 'lamp-1' }, record('device'))
  broker.subscribe({ deviceId: 'lamp-1', names: ['on'] }, record('names'))
  broker.subscribe({ networkIds: [2] }, record('network'))
  broker.subscribe({ deviceTypeIds: [10, 10] }, record('type'))
  broker.subscribe({}, record('all'))
  broker.subscribe({ deviceId: 'lamp-3' }, record('other'))
  broker.subscribe({ deviceId: 'lamp-1', returnUpdatedCommands: true }, record('updates'))
  const unsubscribe = broker.subscribe({}, () => t.fail('unsubscribed handler called'))
  unsubscribe()
  unsubscribe()
  await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on' } }, admin)
  await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'off' } }, admin)
  await broker.handle({ action: 'command/insert', deviceId: 'lamp-2', command: { command: 'on' } }, admin)
  t.strictSame(seen, {
    device: ['lamp-1:on', 'lamp-1:off'],
    names: ['lamp-1:on'],
    network: ['lamp-2:on'],
    type: ['lamp-1:on', 'lamp-1:off'],
    all: ['lamp-1:on', 'lamp-1:off', 'lamp-2:on'],
    other: [],
    updates: []
  })
  // a throwing handler: others still run, the insert succeeds, the error is reported
  const errors: BrokerError[] = []
  broker.on('error', (err) => errors.push(err))
  const after: Command[] = []
  broker.subscribe({ deviceId: 'lamp-2' }, () => { throw new Error('bad handler') })
  broker.subscribe({ deviceId: 'lamp-2' }, (command) => {
    after.push(command)
    t.throws(() => { (command as { command: string }).command = 'hacked' }, TypeError, 'frozen')
    t.throws(() => { (command.parameters as { x: number }).x = 2 }, TypeError, 'deeply frozen')
  })
  const reply = await broker.handle({ action: 'command/insert', deviceId: 'lamp-2', command: { command: 'set', parameters: { x: 1 } } }, admin)
  t.equal(reply.status, 'success')
  t.equal(after.length, 1)
  t.equal(errors[0]?.code, 'ERR_SUBSCRIBER')
  t.equal((errors[0]?.cause as Error).message, 'bad handler')
  t.equal((await store.getCommand(4, clock.now()))?.parameters, '{"x":1}', 'store untouched')
})

t.test('broker: an insert for one device does not touch the handlers of another', async (t) => {
  const { broker, admin, device } = setup(t)
  await device('lamp-1')
  let calls = 0
  for (let i = 0; i < 100; i++) broker.subscribe({ deviceId: `other-${i}` }, () => { calls++ })
  for (let i = 0; i < 100; i++) broker.subscribe({ deviceId: `other-${i}`, returnUpdatedCommands: true }, () => { calls++ })
  await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on' } }, admin)
  await broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: 1, command: { status: 'ok' } }, admin)
  t.equal(calls, 0)
})

t.test('broker: subscribe() checks its arguments', async (t) => {
  const { broker } = setup(t)
  t.throws(() => broker.subscribe({ deviceId: 5 } as never, () => {}), { name: 'TypeError', message: /filter\.deviceId/ })
  t.throws(() => broker.subscribe({ networkIds: ['1'] } as never, () => {}), { name: 'TypeError', message: /filter\.networkIds\.0/ })
  t.throws(() => broker.subscribe({ device: 'x' } as never, () => {}), TypeError, 'unknown keys refused')
  t.throws(() => broker.subscribe({}, 'nope' as never), { name: 'TypeError', message: /handler must be a function/ })
})

t.test('broker: a listener that throws is reported, and error listeners cannot break it', async (t) => {
  const { broker, admin, device, clock } = setup(t)
  await device('lamp-1')
  const errors: BrokerError[] = []
  broker.on('error', () => { throw new Error('listener of errors broken') })
  broker.on('error', (err) => errors.push(err))
  const bad = (): void => { throw new Error('bad listener') }
  broker.on('expired', bad)
  let expired = 0
  broker.on('expired', () => { expired++ })
  await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on', lifetime: 1 } }, admin)
  clock.advance(1000)
  t.equal(expired, 1)
  t.equal(errors[0]?.code, 'ERR_SUBSCRIBER')
  broker.off('expired', bad)
  await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on', lifetime: 1 } }, admin)
  clock.advance(1000)
  t.equal(expired, 2)
  t.equal(errors.length, 1, 'removed listener no longer called')
})

t.test('broker: without an error listener, errors become process warnings', async (t) => {
  const { broker, admin, device } = setup(t)
  await device('lamp-1')
  broker.subscribe({}, () => { throw new Error('nobody listens') })
  const warnings: Error[] = []
  const onWarning = (warning: Error): void => { warnings.push(warning) }
  process.on('warning', onWarning)
  t.teardown(() => { process.off('warning', onWarning) })
  await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on' } }, admin)
  await new Promise(setImmediate)
  t.equal((warnings[0] as BrokerError | undefined)?.code, 'ERR_SUBSCRIBER')
})

t.test('broker: writes arriving together share one transaction (group commit)', async (t) => {
  const inner = memoryStore()
  let transactions = 0
  const store: Store = { ...overridable(inner), commit: (...args) => { transactions++; return inner.commit(...args) } }
  const { broker, admin, device } = setup(t, { writeBatch: 40 }, store)
  await device('lamp-1')
  transactions = 0
  const replies = await Promise.all(Array.from({ length: 100 }, (_, i) =>
    broker.handle({ action: 'command/insert', requestId: i, deviceId: 'lamp-1', command: { command: `c${i}` } }, admin)))
  t.equal(transactions, 3, '100 writes, batches of at most 40')
  t.same(replies.map((reply) => (body(reply).command as { id: number }).id), Array.from({ length: 100 }, (_, i) => i + 1), 'ids follow arrival order')
  transactions = 0
  await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'alone' } }, admin)
  t.equal(transactions, 1, 'a lone write commits on its own')
})

t.test('broker: a failing store answers 500, reports ERR_STORE, leaves no timer or push, and recovers', async (t) => {
  const inner = memoryStore()
  let failing = false
  const store: Store = {
    ...overridable(inner),
    commit: (...args) => {
      if (failing) throw new Error('disk on fire')
      return inner.commit(...args)
    }
  }
  const { broker, admin, device, clock } = setup(t, {}, store)
  await device('lamp-1')
  const errors: BrokerError[] = []
  const heard: Command[] = []
  broker.on('error', (err) => errors.push(err))
  broker.subscribe({}, (command) => heard.push(command))
  failing = true
  const timers = clock.pending
  const replies = await Promise.all([1, 2].map((i) => broker.handle({ action: 'command/insert', requestId: i, deviceId: 'lamp-1', command: { command: 'on', lifetime: 5 } }, admin)))
  t.same(replies.map(errorOf), [{ code: 500, error: 'Internal server error' }, { code: 500, error: 'Internal server error' }])
  t.equal(errors.length, 1, 'one report per failed transaction')
  t.equal(errors[0]?.code, 'ERR_STORE')
  t.match((errors[0]?.cause as Error).message, /disk on fire/)
  t.equal(clock.pending, timers, 'no timer')
  t.equal(heard.length, 0, 'no push')
  t.equal(inner.lastCommandId(), 0, 'nothing half-written')
  failing = false
  t.equal((await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on', lifetime: 5 } }, admin)).status, 'success', 'recovers')
  t.equal(heard.length, 1)
})

t.test('broker: a read that fails in the store answers 500 with ERR_STORE', async (t) => {
  const inner = memoryStore()
  const store: Store = { ...overridable(inner), getDevice: () => { throw new Error('unreadable') } }
  const { broker, admin } = setup(t, {}, store)
  const errors: BrokerError[] = []
  broker.on('error', (err) => errors.push(err))
  t.strictSame(errorOf(await broker.handle({ action: 'device/get', deviceId: 'x' }, admin)), { code: 500, error: 'Internal server error' })
  t.equal(errors[0]?.code, 'ERR_STORE')
})

t.test('broker: a failing expiry is reported and retried', async (t) => {
  const inner = memoryStore()
  let failing = true
  const store: Store = {
    ...overridable(inner),
    expireCommands: (ids, now) => {
      if (failing) throw new Error('locked')
      return inner.expireCommands(ids, now)
    }
  }
  const { broker, admin, device, clock } = setup(t, {}, store)
  await device('lamp-1')
  const errors: BrokerError[] = []
  const expired: number[] = []
  broker.on('error', (err) => errors.push(err))
  broker.on('expired', (command) => expired.push(command.id))
  await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on', lifetime: 1 } }, admin)
  clock.advance(1000)
  t.equal(errors[0]?.code, 'ERR_STORE')
  t.same(expired, [])
  failing = false
  clock.advance(1000)
  t.same(expired, [1], 'expired on the retry')
})

t.test('broker: restart on the same SQLite file expires what fell due and re-arms the rest', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'command-broker-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const file = join(dir, 'hub.db')
  const first = setup(t, {}, sqliteStore(file))
  await first.device('lamp-1')
  for (const [command, lifetime] of [['short', 10], ['long', 100], ['forever', null], ['updated', 10]] as const) {
    await first.insert('lamp-1', { command, lifetime })
  }
  await first.broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: 4, command: { status: 'done' } }, first.admin)
  t.equal((await first.broker.ready).expired, 0)
  await first.broker.close()

  // 50 s later, a new process opens the same file.
  const clock = manualClock(START + 50_000)
  const broker = createBroker(sqliteStore(file), { secret: SECRET, clock })
  t.teardown(() => broker.close())
  const expired: string[] = []
  broker.on('expired', (command) => expired.push(command.command))
  const admin = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'] }, { secret: SECRET, now: clock.now() })
  t.strictSame(errorOf(await broker.handle({ action: 'command/get', deviceId: 'lamp-1', commandId: 1 }, admin)),
    { code: 404, error: 'Command with id = 1 not found' }, 'overdue commands are invisible even before recovery')
  t.strictSame(await broker.ready, { expired: 2, rearmed: 1 })
  t.same(expired, ['short'], 'reported: only the never-updated one')
  const next = await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'new' } }, admin)
  t.equal((body(next).command as { id: number }).id, 5, 'ids continue')
  clock.advance(49_999)
  t.same(expired, ['short'])
  clock.advance(1)
  t.same(expired, ['short', 'long'], 're-armed command expires on time')
  t.equal((await broker.handle({ action: 'command/get', deviceId: 'lamp-1', commandId: 3 }, admin)).status, 'success', 'no lifetime: kept')
})

t.test('broker: recovery pages through many pending commands', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'command-broker-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const file = join(dir, 'hub.db')
  const { broker, admin, device } = setup(t, {}, sqliteStore(file, { synchronous: 'normal' }))
  await device('lamp-1')
  await Promise.all(Array.from({ length: 4500 }, (_, i) => broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'c', lifetime: i % 2 === 0 ? 1 : 100 } }, admin)))
  await broker.close()
  const clock = manualClock(START + 50_000)
  const second = createBroker(sqliteStore(file), { secret: SECRET, clock })
  t.teardown(() => second.close())
  let reported = 0
  second.on('expired', () => { reported++ })
  t.strictSame(await second.ready, { expired: 2250, rearmed: 2250 })
  t.equal(reported, 2250)
})

t.test('broker: close() commits what was accepted, then refuses politely and releases everything', async (t) => {
  const { broker, admin, device, clock, store } = setup(t)
  await device('lamp-1')
  const inFlight = broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on', lifetime: 10 } }, admin)
  await broker.close()
  t.equal((await inFlight).status, 'success', 'accepted write committed')
  t.equal(clock.pending, 0, 'no timer left')
  t.strictSame(await broker.handle({ action: 'device/get', requestId: 9, deviceId: 'lamp-1' }, admin),
    { action: 'device/get', requestId: 9, code: 503, status: 'error', error: 'Broker is closed' })
  t.throws(() => store.getDevice('lamp-1'), { code: 'ERR_CLOSED' }, 'store closed')
  t.throws(() => broker.subscribe({}, () => {}), { code: 'ERR_CLOSED' })
  t.throws(() => broker.session(() => {}), { code: 'ERR_CLOSED' })
  await broker.close()
  t.pass('close is idempotent')
})

t.test('broker: closed says whether close() was called', async (t) => {
  const { broker } = setup(t)
  t.equal(broker.closed, false)
  const closing = broker.close()
  t.equal(broker.closed, true, 'at once')
  await closing
})

t.test('broker: on a store that answers later, close() waits for the last commit and its replies', async (t) => {
  const store = laterStore()
  const { broker, admin, device } = setup(t, {}, store)
  await device('lamp-1')
  store.hold('commit', 'call')
  const first = broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'first' } }, admin)
  while (store.waiting('commit') === 0) await new Promise(setImmediate)
  // Queued behind the commit in flight: close() commits it too before closing the store.
  const second = broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'second' } }, admin)
  await new Promise(setImmediate)
  let closed = false
  const closing = broker.close().then(() => { closed = true })
  await new Promise(setImmediate)
  t.equal(closed, false, 'close() waits for the commit in flight')
  store.release('commit')
  await closing
  t.strictSame([(await first).status, (await second).status], ['success', 'success'], 'both accepted writes committed')
  t.strictSame([body(await first).command.id, body(await second).command.id], [1, 2], 'in order, before the store closed')
})

t.test('broker: close() reports a store that fails to close', async (t) => {
  const inner = memoryStore()
  const broker = createBroker({ ...overridable(inner), close: () => { throw new Error('stuck') } }, { secret: SECRET, clock: manualClock(START) })
  const errors: BrokerError[] = []
  broker.on('error', (err) => errors.push(err))
  await broker.close()
  t.equal(errors[0]?.code, 'ERR_STORE')
})

t.test('broker: createBroker checks the store', async (t) => {
  t.throws(() => createBroker({} as Store, { secret: SECRET }), { name: 'TypeError', message: /store\.getDevice/ })
  t.throws(() => createBroker(null as unknown as Store, { secret: SECRET }), TypeError)
})


t.test('broker: a string message over maxFrameBytes is refused before it is parsed', async (t) => {
  const { broker, admin } = setup(t, { maxFrameBytes: 64 })
  const tooBig = JSON.stringify({ action: 'device/get', deviceId: 'x'.repeat(60) })
  t.strictSame(await broker.handle(tooBig, admin), { code: 400, status: 'error', error: 'Validation failed with following violations: message must be at most 64 bytes' })
  const multiByte = JSON.stringify({ action: 'device/get', deviceId: 'é'.repeat(24) })
  t.ok(multiByte.length <= 64 && Buffer.byteLength(multiByte) > 64, 'fits in characters, not in bytes')
  t.equal((await broker.handle(multiByte, admin)).code, 400)
  t.strictSame(errorOf(await broker.handle(JSON.stringify({ action: 'device/get', deviceId: 'é'.repeat(10) }), admin)),
    { code: 404, error: `Device with such deviceId = ${'é'.repeat(10)} not found` }, 'under the limit in bytes: handled')
  t.equal((await broker.handle({ action: 'device/get', deviceId: 'x'.repeat(100) }, admin)).code, 404, 'objects are not frames')
})

t.test('broker: start-up recovery that fails is reported and retried', async (t) => {
  const inner = memoryStore()
  let failures = 1
  const store: Store = {
    ...overridable(inner),
    expiringCommands: (afterId, maxId, limit) => {
      if (failures-- > 0) throw new Error('busy')
      return inner.expiringCommands(afterId, maxId, limit)
    }
  }
  const { broker, clock } = setup(t, {}, store)
  const errors: BrokerError[] = []
  broker.on('error', (err) => errors.push(err))
  await new Promise(setImmediate)
  t.equal(errors[0]?.code, 'ERR_STORE')
  t.match(errors[0]?.message, /recovery failed; retrying/)
  clock.advance(1000)
  t.strictSame(await broker.ready, { expired: 0, rearmed: 0 }, 'the retry completes recovery')
})

t.test('broker: close() during a recovery retry stops it', async (t) => {
  const inner = memoryStore()
  const store: Store = { ...overridable(inner), expiringCommands: () => { throw new Error('busy') } }
  const { broker, clock } = setup(t, {}, store)
  broker.on('error', () => {})
  await new Promise(setImmediate)
  t.equal(clock.pending, 1, 'a retry is armed')
  await broker.close()
  t.equal(clock.pending, 0, 'and cleared by close()')
  t.strictSame(await broker.ready, { expired: 0, rearmed: 0 }, 'ready settles')
})

t.test('broker: a subscriber that throws something other than an Error is reported with it', async (t) => {
  const { broker, admin, device } = setup(t)
  await device('lamp-1')
  const errors: BrokerError[] = []
  broker.on('error', (err) => errors.push(err))
  broker.subscribe({}, () => { throw 'just a string' }) // eslint-disable-line no-throw-literal
  await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on' } }, admin)
  t.equal(errors[0]?.message, 'a subscriber threw: just a string')
  t.equal(errors[0]?.cause, 'just a string')
})

t.test('broker: an action or requestId JSON cannot write back is never echoed', async (t) => {
  const { broker, admin } = setup(t)
  const deep = '['.repeat(100_000) + ']'.repeat(100_000)
  const deepAction = await broker.handle(`{"action":${deep},"requestId":1}`, admin)
  t.strictSame(deepAction, { action: null, requestId: 1, code: 400, status: 'error', error: 'Unknown action requested: object' })
  const deepId = await broker.handle(`{"action":"device/get","requestId":${deep},"deviceId":"x"}`, admin)
  t.strictSame(deepId, { action: 'device/get', requestId: null, code: 400, status: 'error', error: 'Malformed Json received.' })
  t.doesNotThrow(() => JSON.stringify([deepAction, deepId]), 'both replies serialise')
  t.strictSame(errorOf(await broker.handle({ action: 10n }, admin)), { code: 400, error: 'Unknown action requested: bigint' })
  t.strictSame(errorOf(await broker.handle({ action: 'device/get', requestId: () => 1 }, admin)), MALFORMED)
  t.strictSame(errorOf(await broker.handle({ action: 'device/get', requestId: NaN }, admin)), MALFORMED)
  t.strictSame(errorOf(await broker.handle({ action: ['a', 1] }, admin)), { code: 400, error: 'Unknown action requested: ["a",1]' })
  t.equal((await broker.handle({ action: 'device/get', requestId: { a: [1] }, deviceId: 'x' }, admin)).requestId !== null, true, 'an object requestId is echoed')
})

t.test('broker: a command is pending until its expiry runs: at most a tick after its time', async (t) => {
  // A one-minute tick: a command with a 1 s lifetime is past its time long before the wheel fires.
  const { broker, admin, device, clock } = setup(t, { maxPendingPerDevice: 2, tick: 60_000 })
  await device('lamp-1')
  for (const command of ['a', 'b']) {
    t.equal((await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command, lifetime: 1 } }, admin)).status, 'success')
  }
  t.equal((await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'c' } }, admin)).status, 'error', 'both pending: refused')
  clock.advance(1000)
  t.equal((await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'c' } }, admin)).status, 'error',
    'past their time, but not expired yet: still counted (refusing never scans the store)')
  clock.advance(60_000)
  await new Promise(setImmediate)
  const queued = [broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'd' } }, admin),
    broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'e' } }, admin),
    broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'f' } }, admin)]
  t.same((await Promise.all(queued)).map((reply) => reply.status), ['success', 'success', 'error'], 'expired: room for two, counting writes still queued')
})

t.test('broker: a refused insert neither commits the queue nor reads the store', async (t) => {
  const inner = memoryStore()
  let transactions = 0
  let counts = 0
  const store: Store = {
    ...overridable(inner),
    commit: (...args) => { transactions++; return inner.commit(...args) },
    countPending: (...args) => { counts++; return inner.countPending(...args) }
  }
  const { broker, admin, device } = setup(t, { maxPendingPerDevice: 3 }, store)
  await device('lamp-1')
  transactions = 0
  const replies = await Promise.all(Array.from({ length: 50 }, (_, i) =>
    broker.handle({ action: 'command/insert', requestId: i, deviceId: 'lamp-1', command: { command: `c${i}` } }, admin)))
  t.same(replies.map((reply) => reply.status), [...Array(3).fill('success'), ...Array(47).fill('error')])
  t.equal(transactions, 1, '47 refusals, still one transaction for the three accepted')
  t.equal(counts, 1, 'the device was counted once, when its first insert came')
})

t.test('broker: reporting never throws, whatever a subscriber, listener or push throws', async (t) => {
  const { broker, admin, device, clock } = setup(t)
  await device('lamp-1')
  const hostile: unknown[] = [
    Object.create(null),
    new Proxy({}, { getPrototypeOf () { throw new Error('trap') }, get () { throw new Error('trap') } }),
    Object.defineProperty(new Error('x'), 'message', { get (): string { throw new Error('getter') } }),
    Symbol('s')
  ]
  const errors: BrokerError[] = []
  broker.on('error', (err) => errors.push(err))
  let thrower = 0
  broker.subscribe({}, () => { throw hostile[thrower++ % hostile.length] })
  broker.on('expired', () => { throw Object.create(null) })
  const session = broker.session(() => { throw Object.create(null) })
  t.equal((await session.handle({ action: 'command/subscribe', deviceId: 'lamp-1' }, admin)).status, 'success')
  for (let i = 0; i < hostile.length; i++) {
    const reply = await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on', lifetime: 1 } }, admin)
    t.equal(reply.status, 'success', `insert ${i} is answered`)
  }
  clock.advance(1000)
  await new Promise(setImmediate)
  t.same(errors.map((err) => err.code).sort(), [
    ...Array(4).fill('ERR_PUSH'), ...Array(4).fill('ERR_SUBSCRIBER'), ...Array(4).fill('ERR_SUBSCRIBER')
  ].sort(), 'every throw is reported once')
  t.ok(errors.every((err) => err instanceof BrokerError && typeof err.message === 'string'), 'each as a BrokerError with a message')
  t.equal(errors.find((err) => err.cause === hostile[0])?.message, 'a subscriber threw: an object')
  t.equal(errors.find((err) => err.cause === hostile[2])?.message, 'a subscriber threw: a value that cannot be described')
})

t.test('broker: close() from a subscriber still commits every accepted write of the batch', async (t) => {
  const { broker, admin, device } = setup(t, { writeBatch: 2 })
  await device('lamp-1')
  let closing: Promise<void> | undefined
  broker.subscribe({}, () => { closing ??= broker.close() })
  const replies = await Promise.all(Array.from({ length: 5 }, (_, i) =>
    broker.handle({ action: 'command/insert', requestId: i, deviceId: 'lamp-1', command: { command: `c${i}` } }, admin)))
  t.same(replies.map((reply) => reply.status), Array(5).fill('success'), 'all five answered success, none 500')
  await closing
})

t.test('broker: a device/delete from a subscriber runs after every slice of the batch has committed', async (t) => {
  const store = memoryStore()
  const { broker, admin, device } = setup(t, { writeBatch: 2 }, store)
  await device('lamp-1')
  let deleted: Promise<Reply> | undefined
  broker.subscribe({}, () => { deleted ??= broker.handle({ action: 'device/delete', deviceId: 'lamp-1' }, admin) })
  const replies = await Promise.all(Array.from({ length: 5 }, (_, i) =>
    broker.handle({ action: 'command/insert', requestId: i, deviceId: 'lamp-1', command: { command: `c${i}` } }, admin)))
  t.same(replies.map((reply) => reply.status), Array(5).fill('success'))
  t.equal((await deleted)?.status, 'success')
  await broker.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'again' } }, admin)
  const list = body(await broker.handle({ action: 'command/list', deviceId: 'lamp-1' }, admin))
  t.strictSame(list.commands, [], 'no command of the deleted device survived it')
})

t.test('broker: an insert made while close() flushes is answered 503', async (t) => {
  const { broker, admin, device } = setup(t)
  await device('lamp-1')
  let late: Promise<Reply> | undefined
  broker.subscribe({}, () => { late ??= broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'late' } }, admin) })
  const first = broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'first' } }, admin)
  await broker.close()
  t.equal((await first).status, 'success', 'the accepted insert committed')
  t.strictSame(errorOf(await (late as Promise<Reply>)), CLOSED, 'the one made during close() is refused, not failed')
})

t.test('broker: close() from an error listener during a failing expiry leaves nothing running', async (t) => {
  const inner = memoryStore()
  let failing = false
  const store: Store = { ...overridable(inner), expireCommands: (ids, now) => { if (failing) throw new Error('busy'); return inner.expireCommands(ids, now) } }
  const { broker, admin, device, clock } = setup(t, {}, store)
  await device('lamp-1')
  await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on', lifetime: 1 } }, admin)
  failing = true
  let closing: Promise<void> | undefined
  broker.on('error', () => { closing ??= broker.close() })
  clock.advance(1000)
  await closing
  t.ok(closing !== undefined, 'the listener closed the broker')
  t.equal(clock.pending, 0, 'no timer left: neither the wheel nor a retry')
})

t.test('broker: an insert whose lifetime ran out before its commit is reported expired, not pushed as new', async (t) => {
  const { broker, admin, device, clock } = setup(t)
  await device('lamp-1')
  const inserts: Command[] = []
  const updates: Command[] = []
  const expired: Command[] = []
  broker.subscribe({}, (command) => inserts.push(command))
  broker.subscribe({ returnUpdatedCommands: true }, (command) => updates.push(command))
  broker.on('expired', (command) => expired.push(command))
  const reply = broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on', lifetime: 1 } }, admin)
  clock.advance(1000) // before the commit, which waits for the next turn
  t.equal((await reply).status, 'success')
  t.equal(inserts.length, 0, 'never pushed as an insert')
  clock.advance(100)
  await new Promise(setImmediate)
  t.equal(expired.length, 1, 'reported as expired')
  t.equal(updates[0]?.status, 'expired', 'and pushed to update subscribers as expired')
})

t.test('broker: stats() counts sessions, subscriptions, queued writes, timers, pending commands, commits and the store size', async (t) => {
  const { broker, admin, device, insert, clock } = setup(t)
  const empty = await broker.stats()
  t.strictSame(empty, {
    sessions: 0, subscriptions: 0, queuedWrites: 0, timers: 0, expiryLag: 0, pendingCommands: 0,
    commits: { count: 0, writes: 0, lastBatch: 0, largestBatch: 0, lastMs: 0, totalMs: 0 },
    storeBytes: undefined
  }, 'nothing yet; the memory store does not tell its size')
  await device('lamp-1')
  const session = broker.session(() => {})
  await session.handle({ action: 'command/subscribe', deviceId: 'lamp-1' }, admin)
  broker.subscribe({}, () => {})
  await Promise.all([insert('lamp-1', { command: 'a', lifetime: 5 }), insert('lamp-1', { command: 'b', lifetime: 5 }), insert('lamp-1', { command: 'c' })])
  const queued = broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'd' } }, admin)
  const stats = await broker.stats()
  await queued
  t.equal(stats.sessions, 1)
  t.equal(stats.subscriptions, 2)
  t.equal(stats.queuedWrites, 1, 'the insert not committed yet')
  t.equal(stats.timers, 2, 'two commands with a lifetime armed')
  t.equal(stats.pendingCommands, 4, 'the queued insert counts already')
  t.equal(stats.commits.count, 1)
  t.equal(stats.commits.largestBatch, 3, 'the three inserts made together committed together')
  t.ok(stats.commits.totalMs >= stats.commits.lastMs && stats.commits.lastMs >= 0)
  clock.advance(5000)
  clock.advance(250)
  const later = await broker.stats()
  t.equal(later.timers, 0, 'fired')
  t.ok(later.expiryLag >= 0 && later.expiryLag <= 250, 'fired within the advance that passed their time')
})

t.test('broker: stats() of a store that tells its size, and of a shared store (pending counted by the store)', async (t) => {
  const { broker } = setup(t, {}, { ...overridable(memoryStore()), size: () => 12_345 })
  t.equal((await broker.stats()).storeBytes, 12_345)
  const later = setup(t, {}, { ...laterStore(), size: () => Promise.resolve(678) })
  t.equal((await later.broker.stats()).storeBytes, 678)
  const node = sharedSpace().node()
  t.equal((await setup(t, {}, node).broker.stats()).pendingCommands, undefined)
})
