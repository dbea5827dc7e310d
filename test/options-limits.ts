// The configured limits at their defaults, end to end: each passes at exactly its default and is
// refused at default + 1 with the documented reply (400 `Validation failed with following
// violations: ...`), storing nothing. And the README's Options table states the same defaults.
import { readFileSync } from 'node:fs'
import t, { type Test } from 'tap'
import { DEFAULTS } from '../lib/options.js'
import type { Reply } from '../lib/schema.js'
import type { CommandRecord } from '../lib/store/store.js'
import { body, errorOf, insertAll, insertOne, setup, START, type Fixture } from './fixtures/broker.js'
import { command, scanAll } from './fixtures/store-suite.js'
import { wireBytes } from '../lib/turns.js'

const VALIDATION = /^Validation failed with following violations: \S/
const LIMITS = ['maxFrameBytes', 'maxPayloadBytes', 'maxJsonDepth', 'maxFilterItems', 'maxReplyBytes', 'maxTake', 'maxHistory', 'maxSortWindow', 'maxPendingPerDevice', 'maxSubscriptionsPerSession', 'maxLifetime'] as const
let checked = 0

/** A 400 `Validation failed with following violations: ...` that names `what`. */
function validation (t: Test, reply: Reply, what: RegExp, label: string): void {
  const error = errorOf(reply)
  t.equal(error?.code, 400, `${label}: 400`)
  t.match(error?.error, VALIDATION, `${label}: Validation failed with following violations: ...`)
  t.match(error?.error, what, `${label}: says which limit`)
}

function commands (w: Fixture, deviceId: string): CommandRecord[] {
  return scanAll(w.store, { deviceId, order: 'ASC', examine: 1000, take: 1000 }, w.clock.now())
}

/**
 * `message` as a JSON frame of exactly `bytes` UTF-8 bytes: padded with spaces before the last
 * brace, or (`wide`) with three-byte characters in an ignored `pad` field, so the frame has
 * far fewer characters than bytes.
 */
function frameOf (message: Record<string, unknown>, bytes: number, wide = false): string {
  let frame: string
  if (!wide) {
    const base = JSON.stringify(message)
    frame = base.slice(0, -1) + ' '.repeat(bytes - Buffer.byteLength(base)) + '}'
  } else {
    const base = JSON.stringify({ ...message, pad: '' })
    const room = bytes - Buffer.byteLength(base)
    frame = base.slice(0, -2) + '€'.repeat(Math.floor(room / 3)) + '"' + ' '.repeat(room % 3) + '}'
  }
  if (Buffer.byteLength(frame) !== bytes) throw new Error(`frameOf: ${Buffer.byteLength(frame)} bytes, wanted ${bytes}`)
  return frame
}

/** A JSON value whose serialisation is exactly `bytes` bytes: a string, ASCII or three-byte. */
function payloadOf (bytes: number, wide = false): string {
  // Two bytes of quotes; the rest is the string's content.
  const room = bytes - 2
  const value = wide ? '€'.repeat(Math.floor(room / 3)) + 'x'.repeat(room % 3) : 'x'.repeat(room)
  if (Buffer.byteLength(JSON.stringify(value)) !== bytes) throw new Error('payloadOf: wrong size')
  return value
}

t.test('options-limits: maxFrameBytes passes a frame of exactly the default and refuses one byte more', async (t) => {
  const w = setup(t)
  await w.device('lamp-1')
  const limit = DEFAULTS.maxFrameBytes
  const message = { action: 'command/insert', requestId: 1, deviceId: 'lamp-1', command: { command: 'on' } }
  for (const wide of [false, true]) {
    const kind = wide ? 'three-byte characters' : 'ASCII'
    const before = w.store.lastCommandId()
    const over = frameOf(message, limit + 1, wide)
    const reply = await w.broker.handle(over, w.admin)
    t.strictSame(reply, { code: 400, status: 'error', error: `Validation failed with following violations: message must be at most ${limit} bytes` },
      `${kind}: ${limit + 1} bytes (${over.length} characters) refused with the bare 400 envelope`)
    const session = w.broker.session(() => {})
    t.strictSame(await session.handle(over, w.admin), reply, `${kind}: the same through a session`)
    t.equal(w.store.lastCommandId(), before, `${kind}: nothing stored`)
    const exact = await w.broker.handle(frameOf(message, limit, wide), w.admin)
    t.equal(exact.status, 'success', `${kind}: exactly ${limit} bytes is accepted`)
    t.equal(w.store.lastCommandId(), before + 1, `${kind}: and stored`)
    checked += 2
  }
})

t.test('options-limits: maxPayloadBytes holds for parameters, result and device data, at exactly the default', async (t) => {
  const w = setup(t)
  await w.device('lamp-1')
  const limit = DEFAULTS.maxPayloadBytes
  const target = body(await w.insert('lamp-1', { command: 'target' })).command.id as number
  for (const wide of [false, true]) {
    const kind = wide ? 'three-byte' : 'ASCII'
    const over = payloadOf(limit + 1, wide)
    const exact = payloadOf(limit, wide)

    for (const field of ['parameters', 'result'] as const) {
      const before = w.store.lastCommandId()
      validation(t, await w.insert('lamp-1', { command: 'big', [field]: over }), new RegExp(`${field} must be at most ${limit} bytes`), `insert ${field}, ${kind}, ${limit + 1} bytes`)
      t.equal(w.store.lastCommandId(), before, 'nothing stored')
      const reply = await w.insert('lamp-1', { command: 'big', [field]: exact })
      t.equal(reply.status, 'success', `insert ${field}, ${kind}, exactly ${limit} bytes`)
      t.equal(w.store.getCommand(body(reply).command.id as number, w.clock.now())?.[field], JSON.stringify(exact), 'stored whole')
      checked += 2
    }

    const stored = JSON.stringify(w.store.getCommand(target, w.clock.now()))
    validation(t, await w.broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: target, command: { status: 's', result: over } }, w.admin),
      new RegExp(`result must be at most ${limit} bytes`), `update result, ${kind}, ${limit + 1} bytes`)
    t.equal(JSON.stringify(w.store.getCommand(target, w.clock.now())), stored, 'the command is unchanged, status included')
    t.equal((await w.broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: target, command: { result: exact } }, w.admin)).status,
      'success', `update result, ${kind}, exactly ${limit} bytes`)
    t.equal(w.store.getCommand(target, w.clock.now())?.result, JSON.stringify(exact), 'stored whole')

    const id = `dev-${kind}`
    validation(t, await w.broker.handle({ action: 'device/save', deviceId: id, device: { name: id, data: over } }, w.admin),
      new RegExp(`data must be at most ${limit} bytes`), `device data, ${kind}, ${limit + 1} bytes`)
    t.equal(w.store.getDevice(id), undefined, 'no device created')
    validation(t, await w.broker.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'renamed', data: over, networkId: 1, deviceTypeId: 1 } }, w.admin),
      /data must be at most/, `device data of an existing device, ${kind}`)
    t.equal(w.store.getDevice('lamp-1')?.name, 'lamp-1', 'the existing device is unchanged')
    t.equal((await w.broker.handle({ action: 'device/save', deviceId: id, device: { name: id, data: exact } }, w.admin)).status,
      'success', `device data, ${kind}, exactly ${limit} bytes`)
    t.equal(w.store.getDevice(id)?.data, JSON.stringify(exact), 'stored whole')
    checked += 4
  }
})

t.test('options-limits: maxPayloadBytes holds for a status too, on insert and on update', async (t) => {
  const w = setup(t)
  await w.device('lamp-1')
  const limit = DEFAULTS.maxPayloadBytes
  for (const wide of [false, true]) {
    const kind = wide ? 'three-byte' : 'ASCII'
    const target = body(await w.insert('lamp-1', { command: 'target' })).command.id as number
    // payloadOf counts two bytes of quotes: a status is the bare string.
    const over = payloadOf(limit + 3, wide)
    const exact = payloadOf(limit + 2, wide)
    const before = w.store.lastCommandId()
    validation(t, await w.insert('lamp-1', { command: 'big', status: over }), new RegExp(`status must be at most ${limit} bytes`), `insert status, ${kind}, ${limit + 1} bytes`)
    t.equal(w.store.lastCommandId(), before, 'nothing stored')
    const reply = await w.insert('lamp-1', { command: 'big', status: exact })
    t.equal(w.store.getCommand(body(reply).command.id as number, w.clock.now())?.status, exact, `insert status, ${kind}, exactly ${limit} bytes, stored whole`)
    validation(t, await w.broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: target, command: { status: over } }, w.admin),
      new RegExp(`status must be at most ${limit} bytes`), `update status, ${kind}, ${limit + 1} bytes`)
    t.equal(w.store.getCommand(target, w.clock.now())?.status, null, 'the command is unchanged')
    t.equal((await w.broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: target, command: { status: exact } }, w.admin)).status,
      'success', `update status, ${kind}, exactly ${limit} bytes`)
    t.equal(w.store.getCommand(target, w.clock.now())?.status, exact, 'stored whole')
    checked += 4
  }
})

/** A JSON value nested exactly `depth` deep: arrays and objects alternating. */
function nested (depth: number): unknown {
  let value: unknown = 'leaf'
  for (let i = 0; i < depth; i++) value = i % 2 === 0 ? [value] : { k: value }
  return value
}

t.test('options-limits: maxJsonDepth holds for parameters, result and device data, at exactly the default', async (t) => {
  const w = setup(t)
  await w.device('lamp-1')
  const limit = DEFAULTS.maxJsonDepth
  const over = nested(limit + 1)
  const exact = nested(limit)
  const target = body(await w.insert('lamp-1', { command: 'target' })).command.id as number
  for (const field of ['parameters', 'result'] as const) {
    const before = w.store.lastCommandId()
    validation(t, await w.insert('lamp-1', { command: 'deep', [field]: over }), new RegExp(`${field} must nest arrays and objects at most ${limit} deep`), `insert ${field}, depth ${limit + 1}`)
    t.equal(w.store.lastCommandId(), before, 'nothing stored')
    const reply = await w.insert('lamp-1', { command: 'deep', [field]: exact })
    t.equal(w.store.getCommand(body(reply).command.id as number, w.clock.now())?.[field], JSON.stringify(exact), `insert ${field}, depth ${limit}, stored whole`)
    checked += 2
  }
  validation(t, await w.broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: target, command: { result: over } }, w.admin),
    /result must nest/, `update result, depth ${limit + 1}`)
  t.equal(w.store.getCommand(target, w.clock.now())?.result, null, 'unchanged')
  t.equal((await w.broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: target, command: { result: exact } }, w.admin)).status, 'success')
  validation(t, await w.broker.handle({ action: 'device/save', deviceId: 'deep', device: { name: 'deep', data: over } }, w.admin), /data must nest/, `device data, depth ${limit + 1}`)
  t.equal(w.store.getDevice('deep'), undefined, 'no device created')
  t.equal((await w.broker.handle({ action: 'device/save', deviceId: 'deep', device: { name: 'deep', data: exact } }, w.admin)).status, 'success')
  // Brackets inside strings are text, not nesting.
  t.equal((await w.insert('lamp-1', { command: 'text', parameters: { s: '[[[[{{{{'.repeat(100), t: '\\"[' } })).status, 'success', 'brackets in strings do not count')
  checked += 4
})

t.test('options-limits: maxFilterItems holds for networkIds, deviceTypeIds and names; a name is at most 128 characters', async (t) => {
  const w = setup(t)
  await w.device('lamp-1')
  const limit = DEFAULTS.maxFilterItems
  const session = w.broker.session(() => {})
  body(await session.handle({ action: 'authenticate', token: w.admin }))
  const lists: Record<string, (n: number) => unknown[]> = {
    networkIds: (n) => Array.from({ length: n }, (_, i) => i + 1),
    deviceTypeIds: (n) => Array.from({ length: n }, (_, i) => i + 1),
    names: (n) => Array.from({ length: n }, (_, i) => `name-${i}`)
  }
  for (const [field, make] of Object.entries(lists)) {
    validation(t, await session.handle({ action: 'command/subscribe', [field]: make(limit + 1) }), new RegExp(`${field} must have at most ${limit} entries`), `${field}, ${limit + 1} entries`)
    // A huge list is refused before anything walks it: its entries are not even of the right type.
    validation(t, await session.handle({ action: 'command/subscribe', [field]: Array(150_000).fill({}) }), /at most/, `${field}, 150,000 entries of the wrong type`)
    t.equal((await session.handle({ action: 'command/subscribe', [field]: make(limit) })).status, 'success', `${field}, exactly ${limit} entries`)
    checked += 2
  }
  validation(t, await session.handle({ action: 'command/subscribe', names: ['x'.repeat(129)] }), /names entries must be at most 128 characters/, 'a 129-character name')
  t.equal((await session.handle({ action: 'command/subscribe', names: ['x'.repeat(128)] })).status, 'success', 'a 128-character name')
  t.equal((body(await session.handle({ action: 'subscription/list' })).subscriptions as unknown[]).length, 4, 'only the accepted subscriptions exist')
})

t.test('options-limits: maxPendingPerDevice accepts exactly the default pending commands, then refuses', async (t) => {
  const w = setup(t)
  await w.device('lamp-1')
  await w.device('lamp-2')
  const limit = DEFAULTS.maxPendingPerDevice
  // One burst: the broker counts pending commands as it accepts them, before they commit.
  const replies = await Promise.all(Array.from({ length: limit + 1 }, (_, i) => w.insert('lamp-1', { command: `c${i}` })))
  const accepted = replies.filter((reply) => reply.status === 'success').length
  t.equal(accepted, limit, `exactly ${limit} accepted`)
  validation(t, replies[limit] as Reply, new RegExp(`device lamp-1 has ${limit} pending commands, the limit is ${limit}`), `command ${limit + 1}`)
  t.equal(commands(w, 'lamp-1').length, limit, `${limit} stored, not one more`)
  const last = w.store.lastCommandId()
  validation(t, await w.insert('lamp-1', { command: 'again' }), /pending commands/, `another, after the burst committed`)
  t.equal(w.store.lastCommandId(), last, 'nothing stored')
  t.equal((await w.insert('lamp-2', { command: 'elsewhere' })).status, 'success', 'another device is not affected')
  // An update makes a command no longer pending: there is room for exactly one more.
  const first = commands(w, 'lamp-1')[0] as CommandRecord
  t.equal((await w.broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: first.id, command: { status: 'done' } }, w.admin)).status, 'success')
  t.equal((await w.insert('lamp-1', { command: 'room' })).status, 'success', 'one more after an update')
  validation(t, await w.insert('lamp-1', { command: 'full' }), /pending commands/, 'and then full again')
  checked += 2
})

t.test('options-limits: maxSubscriptionsPerSession allows exactly the default, then refuses', async (t) => {
  const w = setup(t)
  await w.device('lamp-1')
  const limit = DEFAULTS.maxSubscriptionsPerSession
  let pushes = 0
  const session = w.broker.session(() => { pushes++ })
  body(await session.handle({ action: 'authenticate', token: w.admin }))
  for (let i = 0; i < limit; i++) body(await session.handle({ action: 'command/subscribe', requestId: i, deviceId: 'lamp-1' }))
  validation(t, await session.handle({ action: 'command/subscribe', requestId: limit, deviceId: 'lamp-1' }),
    new RegExp(`a session may hold at most ${limit} subscriptions`), `subscription ${limit + 1}`)
  validation(t, await session.handle({ action: 'command/subscribe', returnUpdatedCommands: true }), /subscriptions/, 'an update subscription counts too')
  t.equal((body(await session.handle({ action: 'subscription/list' })).subscriptions as unknown[]).length, limit, `${limit} subscriptions held`)
  await w.insert('lamp-1', { command: 'on' })
  await new Promise(setImmediate)
  t.equal(pushes, limit, 'one push per subscription: the refused ones do not exist')
  // Another session has its own allowance; dropping one makes room for one.
  const other = w.broker.session(() => {})
  t.equal((await other.handle({ action: 'command/subscribe' }, w.admin)).status, 'success', 'another session is not affected')
  body(await session.handle({ action: 'command/unsubscribe', subscriptionId: body(await session.handle({ action: 'subscription/list' })).subscriptions[0].subscriptionId }))
  t.equal((await session.handle({ action: 'command/subscribe' })).status, 'success', 'room for one after an unsubscribe')
  validation(t, await session.handle({ action: 'command/subscribe' }), /subscriptions/, 'and then full again')
  checked += 2
})

t.test('options-limits: maxTake and maxHistory accept exactly the default, refuse one more', async (t) => {
  const w = setup(t)
  await w.device('lamp-1')
  const take = DEFAULTS.maxTake
  t.equal((await w.broker.handle({ action: 'command/list', deviceId: 'lamp-1', take }, w.admin)).status, 'success', `take ${take}`)
  validation(t, await w.broker.handle({ action: 'command/list', deviceId: 'lamp-1', take: take + 1 }, w.admin), new RegExp(`take must be at most ${take}`), `take ${take + 1}`)
  const session = w.broker.session(() => {})
  const limit = DEFAULTS.maxHistory
  t.equal((await session.handle({ action: 'command/subscribe', deviceId: 'lamp-1', timestamp: START, limit }, w.admin)).status, 'success', `limit ${limit}`)
  validation(t, await session.handle({ action: 'command/subscribe', deviceId: 'lamp-1', timestamp: START, limit: limit + 1 }, w.admin),
    new RegExp(`limit must be from 0 to ${limit}`), `limit ${limit + 1}`)
  checked += 4
})

t.test('options-limits: maxSortWindow sorts exactly the default number of commands, refuses one more', async (t) => {
  const w = setup(t)
  await w.device('lamp-1')
  const limit = DEFAULTS.maxSortWindow
  insertAll(w.store, Array.from({ length: limit }, (_, i) => command({ deviceId: 'lamp-1', command: `c${i % 97}`, timestamp: START + i })))
  const sorted = await w.broker.handle({ action: 'command/list', deviceId: 'lamp-1', sortField: 'command', take: 3 }, w.admin)
  t.same((body(sorted).commands as Array<{ command: string }>).map((c) => c.command), ['c0', 'c0', 'c0'], `${limit} commands sorted`)
  insertOne(w.store, command({ deviceId: 'lamp-1', command: 'one more', timestamp: START + limit }))
  validation(t, await w.broker.handle({ action: 'command/list', deviceId: 'lamp-1', sortField: 'status' }, w.admin),
    new RegExp(`sorting by status covers at most ${limit} commands; narrow the window with start and end, or sort by timestamp`), `${limit + 1} commands`)
  t.equal((await w.broker.handle({ action: 'command/list', deviceId: 'lamp-1', sortField: 'status', end: START + limit }, w.admin)).status, 'success', 'a narrower window is sorted')
  t.equal((await w.broker.handle({ action: 'command/list', deviceId: 'lamp-1', sortField: 'timestamp', take: 5 }, w.admin)).status, 'success', 'sorting by timestamp has no such bound')
  checked += 2
})

t.test('options-limits: maxReplyBytes answers a list of exactly the default, refuses one byte more', async (t) => {
  const w = setup(t)
  await w.device('lamp-1')
  await w.device('lamp-2')
  const limit = DEFAULTS.maxReplyBytes
  // 33 commands whose sizes on the wire add up to exactly the limit, on each device; on
  // lamp-2 the last one is a byte larger.
  const rows = 33
  const bare = wireBytes({ id: 0, ...command({ deviceId: 'lamp-1', command: 'big' }) })
  const each = Math.floor(limit / rows) - bare
  const last = limit - (rows - 1) * (bare + each) - bare
  for (const [deviceId, extra] of [['lamp-1', 0], ['lamp-2', 1]] as const) {
    insertAll(w.store, Array.from({ length: rows }, (_, i) => {
      const length = (i === rows - 1 ? last + extra : each) - 2
      return command({ deviceId, command: 'big', timestamp: START + i, parameters: JSON.stringify('x'.repeat(length)) })
    }))
  }
  const exact = await w.broker.handle({ action: 'command/list', deviceId: 'lamp-1', take: 100 }, w.admin)
  t.equal((body(exact).commands as unknown[]).length, rows, `${limit} bytes: answered`)
  validation(t, await w.broker.handle({ action: 'command/list', deviceId: 'lamp-2', take: 100 }, w.admin),
    new RegExp(`the reply would be larger than ${limit} bytes; ask for fewer commands with take`), `${limit + 1} bytes`)
  t.equal((await w.broker.handle({ action: 'command/list', deviceId: 'lamp-2', take: rows - 1 }, w.admin)).status, 'success', 'fewer commands fit')
  validation(t, await w.broker.handle({ action: 'command/list', deviceId: 'lamp-2', take: 100, sortField: 'command' }, w.admin),
    /the reply would be larger/, 'sorted by command too')
  checked += 2
})

t.test('options-limits: maxLifetime accepts exactly the default, refuses one second more', async (t) => {
  const w = setup(t)
  await w.device('lamp-1')
  const limit = DEFAULTS.maxLifetime
  const expired: number[] = []
  w.broker.on('expired', (command) => { expired.push(command.id) })
  const before = w.store.lastCommandId()
  const timers = w.clock.pending
  const over = await w.insert('lamp-1', { command: 'long', lifetime: limit + 1 })
  t.strictSame(errorOf(over), { code: 400, error: `Validation failed with following violations: lifetime must be an integer from 1 to ${limit} (seconds)` }, `lifetime ${limit + 1}`)
  t.equal(w.store.lastCommandId(), before, 'nothing stored')
  t.equal(w.clock.pending, timers, 'no timer armed')
  const reply = await w.insert('lamp-1', { command: 'long', lifetime: limit })
  const id = body(reply).command.id as number
  t.equal(w.store.getCommand(id, w.clock.now())?.expiresAt, START + limit * 1000, `lifetime ${limit} accepted, expiring in ${limit} s`)
  w.clock.advance(limit * 1000 - 1)
  t.strictSame(expired, [], 'not a millisecond early')
  w.clock.advance(1 + DEFAULTS.tick)
  t.strictSame(expired, [id], 'and on time')
  checked += 2
})

t.test('options-limits: the README Options table states these defaults', async (t) => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
  const section = readme.split(/^## /m).find((part) => part.startsWith('Options\n'))
  if (section === undefined) throw new Error('README has no Options section')
  const table = new Map<string, string>()
  for (const line of section.split('\n')) {
    const cells = line.split('|').slice(1, -1).map((cell) => cell.trim())
    const name = /^`(\w+)`$/.exec(cells[0] ?? '')?.[1]
    if (name !== undefined && cells.length === 3) table.set(name, (cells[1] as string).replace(/^`|`$/g, ''))
  }
  for (const name of LIMITS) {
    t.equal(table.get(name), String(DEFAULTS[name]), `${name}: README says ${table.get(name) ?? 'nothing'}, DEFAULTS says ${DEFAULTS[name]}`)
  }
  for (const name of Object.keys(DEFAULTS) as Array<keyof typeof DEFAULTS>) {
    t.equal(table.get(name), String(DEFAULTS[name]), `every default is documented: ${name}`)
  }
  t.comment(`${LIMITS.length} limits, ${checked} boundaries checked at default and default + 1; README table agrees`)
})
