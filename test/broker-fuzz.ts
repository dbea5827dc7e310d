// Property tests of the request path with fast-check: arbitrary JSON values, arbitrary strings
// and mutations of valid messages of every action, sent as objects and as JSON frames, through
// broker.handle and session.handle. Whatever arrives, handle() resolves to a well-formed
// envelope, and an error reply leaves everything as it was: the store, the timer wheel, the
// subscribers, the sessions, Object.prototype. fast-check prints the seed of a failure; pass it
// back with `fc.assert(..., { seed, path })` to replay.
import fc from 'fast-check'
import t, { type Test } from 'tap'
import { BrokerError } from '../lib/errors.js'
import { memoryStore } from '../lib/store/memory.js'
import type { Reply } from '../lib/schema.js'
import type { Session } from '../lib/session.js'
import type { SyncStore } from '../lib/store/store.js'
import { setup, type Fixture } from './fixtures/broker.js'
import { scanAll } from './fixtures/store-suite.js'

const CODES = [400, 401, 403, 404, 500, 503]
const ERROR_KEYS = ['action', 'requestId', 'code', 'status', 'error']
const FRAME_KEYS = ['code', 'status', 'error']
const SUCCESS_KEYS = ['action', 'requestId', 'status']
const MALFORMED = 'Malformed Json received.'
const FRAME_LIMIT = /^Validation failed with following violations: message must be at most \d+ bytes$/
const ACTIONS = [
  'authenticate', 'command/insert', 'command/update', 'command/get', 'command/list', 'command/subscribe',
  'command/unsubscribe', 'subscription/list', 'device/save', 'device/get', 'device/delete'
] as const
type Action = typeof ACTIONS[number]
const DEVICES: ReadonlyArray<readonly [id: string, networkId: number, deviceTypeId: number]> = [
  ['dev-1', 1, 1], ['dev-2', 2, 2], ['victim', 1, 1]
]
const PROTOTYPES = [Object.prototype, Array.prototype, Function.prototype, String.prototype]

let cases = 0

// --- the world the messages arrive in ----------------------------------------------------

interface World extends Fixture {
  /** Commands of dev-1 that valid update/get messages refer to. */
  ids: number[]
  /** The session fuzz messages go through, authenticated as admin. */
  fuzz: Session
  counts: { inserts: number, updates: number, pushes: number, expired: number, writes: number }
  errors: BrokerError[]
}

// A store that counts the writes that change something (an update of no command changes nothing).
function counting (inner: SyncStore, counts: { writes: number }): SyncStore {
  return {
    getDevice: (id) => inner.getDevice(id),
    saveDevice: (device) => { inner.saveDevice(device); counts.writes++ },
    deleteDevice: (id) => { counts.writes++; return inner.deleteDevice(id) },
    deleteCommands: (deviceId, limit) => {
      const deleted = inner.deleteCommands(deviceId, limit)
      counts.writes += deleted
      return deleted
    },
    commit: (batch, now) => {
      const result = inner.commit(batch, now)
      counts.writes += batch.inserts.length + result.before.filter((before) => before !== undefined).length
      return result
    },
    getCommand: (id, now) => inner.getCommand(id, now),
    expireCommands: (ids, now) => {
      const removed = inner.expireCommands(ids, now)
      counts.writes += removed.length
      return removed
    },
    scanCommands: (scan, now) => inner.scanCommands(scan, now),
    sortCommands: (query, now, maxWindow) => inner.sortCommands(query, now, maxWindow),
    countPending: (deviceId, now, cursor, examine) => inner.countPending(deviceId, now, cursor, examine),
    expiringCommands: (afterId, maxId, limit) => inner.expiringCommands(afterId, maxId, limit),
    lastCommandId: () => inner.lastCommandId(),
    close: () => { inner.close() }
  }
}

async function world (t: Test): Promise<World> {
  const counts = { inserts: 0, updates: 0, pushes: 0, expired: 0, writes: 0 }
  const fixture = setup(t, {}, counting(memoryStore(), counts))
  const { broker, admin } = fixture
  const errors: BrokerError[] = []
  broker.on('error', (err) => { errors.push(err) })
  broker.on('expired', () => { counts.expired++ })
  broker.subscribe({}, () => { counts.inserts++ })
  broker.subscribe({ returnUpdatedCommands: true }, () => { counts.updates++ })
  // A second session whose subscriptions count pushes: inserts and updates of every device.
  const probe = broker.session(() => { counts.pushes++ })
  for (const returnUpdatedCommands of [false, true]) {
    const reply = await probe.handle({ action: 'command/subscribe', returnUpdatedCommands }, admin)
    if (reply.status !== 'success') throw new Error(`probe subscribe failed: ${JSON.stringify(reply)}`)
  }
  const fuzz = broker.session(() => {})
  const auth = await fuzz.handle({ action: 'authenticate', token: admin })
  if (auth.status !== 'success') throw new Error('authenticate failed')
  const w: World = { ...fixture, ids: [], fuzz, counts, errors }
  await restore(w)
  return w
}

/** Puts back what successful fuzz messages changed: the devices, the referenced commands, subscriptions. */
async function restore (w: World): Promise<void> {
  for (const [id, networkId, deviceTypeId] of DEVICES) {
    const device = w.store.getDevice(id)
    if (device?.name !== id || device.networkId !== networkId || device.deviceTypeId !== deviceTypeId || device.data !== null || device.isBlocked) {
      await w.device(id, networkId, deviceTypeId)
    }
  }
  if (w.ids.length === 0 || w.ids.some((id) => w.store.getCommand(id, w.clock.now()) === undefined)) {
    w.ids = []
    for (const command of [
      { command: 'on', parameters: { level: 3 } },
      { command: 'off', lifetime: 60, status: 'new' },
      { command: 'on', lifetime: 3600, result: [1, 2] }
    ]) {
      const reply = await w.insert('dev-1', command)
      if (reply.status !== 'success') throw new Error(`insert failed: ${JSON.stringify(reply)}`)
      w.ids.push((reply.command as { id: number }).id)
    }
    await w.insert('dev-2', { command: 'other', lifetime: 120 })
  }
  const list = await w.fuzz.handle({ action: 'subscription/list' }, w.admin)
  if (Array.isArray(list.subscriptions) && list.subscriptions.length > 0) {
    await w.fuzz.handle({ action: 'command/unsubscribe' }, w.admin)
  }
  // The session's own token must still be the admin's.
  const auth = await w.fuzz.handle({ action: 'authenticate', token: w.admin })
  if (auth.status !== 'success') throw new Error('re-authenticate failed')
}

/** Everything an error reply must leave as it was, as one comparable string. */
async function snapshot (w: World): Promise<string> {
  const now = w.clock.now()
  const commands = DEVICES.map(([deviceId]) =>
    scanAll(w.store, { deviceId, order: 'ASC', examine: 1000, take: 1000 }, now))
  // Through the fuzz session with its own token: a failed message must not have changed it.
  const subscriptions = await w.fuzz.handle({ action: 'subscription/list', requestId: 'snapshot' })
  return JSON.stringify({
    lastCommandId: w.store.lastCommandId(),
    commands,
    devices: DEVICES.map(([id]) => w.store.getDevice(id)),
    timers: w.clock.pending,
    counts: w.counts,
    subscriptions,
    prototypes: PROTOTYPES.map((proto) => Reflect.ownKeys(proto).map(String)),
    polluted: (({}) as Record<string, unknown>).polluted ?? null
  })
}

// --- what a reply must look like -------------------------------------------------------

function parseFrame (input: unknown): { bare: boolean, message?: Record<string, unknown> } {
  let value = input
  if (typeof input === 'string') {
    if (Buffer.byteLength(input) > 1_048_576) return { bare: true }
    try {
      value = JSON.parse(input)
    } catch {
      return { bare: true }
    }
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return { bare: true }
  return { bare: false, message: value as Record<string, unknown> }
}

function same (a: readonly unknown[], b: readonly unknown[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i])
}

function echoable (value: unknown): boolean {
  if (typeof value === 'number') return Number.isFinite(value)
  try {
    return value === undefined || JSON.stringify(value) !== undefined
  } catch {
    return false
  }
}

/** Why the reply is not a well-formed answer to `input`, or undefined if it is. */
function malformed (reply: unknown, input: unknown): string | undefined {
  if (reply === null || typeof reply !== 'object') return `not an object: ${String(reply)}`
  const r = reply as Record<string, unknown>
  const keys = Object.keys(r)
  const { bare, message } = parseFrame(input)
  if (r.status === 'error') {
    if (!same(keys, bare ? FRAME_KEYS : ERROR_KEYS)) return `error reply keys ${keys.join(',')}`
    if (!CODES.includes(r.code as number)) return `code ${String(r.code)}`
    if (typeof r.error !== 'string' || r.error === '') return `error ${String(r.error)}`
    if (bare && r.error !== MALFORMED && !FRAME_LIMIT.test(r.error)) return `bare frame error ${r.error}`
  } else if (r.status === 'success') {
    if (bare) return 'a success reply to a frame that is not a JSON object'
    if (!same(keys.slice(0, 3), SUCCESS_KEYS)) return `success reply keys ${keys.join(',')}`
  } else {
    return `status ${String(r.status)}`
  }
  if (message !== undefined) {
    // What JSON cannot write back (too deep for the stack, a BigInt, NaN...) is echoed as null,
    // and such a requestId is refused.
    const action = echoable(message.action) ? message.action ?? null : null
    const requestId = echoable(message.requestId) ? message.requestId ?? null : null
    // Objects are echoed as given; frames as parsed, so compare their JSON.
    if (typeof input === 'string'
      ? JSON.stringify(r.action) !== JSON.stringify(action) || JSON.stringify(r.requestId) !== JSON.stringify(requestId)
      : !Object.is(r.action, action) || !Object.is(r.requestId, requestId)) {
      return 'action or requestId not echoed'
    }
  }
  try {
    JSON.stringify(reply)
  } catch (err) {
    if (typeof input === 'string') return `the reply to a frame is not serialisable: ${String(err)}`
  }
  return undefined
}

type Via = 'broker' | 'session'

// No token argument: the admin's for broker.handle, the session's own for session.handle.
const OWN = Symbol('own token')

/** Sends one message and checks the reply and, for an error, that nothing changed. */
async function send (w: World, via: Via, input: unknown, token: unknown = OWN): Promise<Reply> {
  cases++
  const before = await snapshot(w)
  let pending: Promise<Reply>
  try {
    pending = via === 'broker'
      ? w.broker.handle(input, token === OWN ? w.admin : token)
      : w.fuzz.handle(input, token === OWN ? undefined : token)
  } catch (err) {
    throw new Error(`${via}.handle threw synchronously: ${String(err)}`)
  }
  if (!(pending instanceof Promise)) throw new Error(`${via}.handle did not return a promise`)
  let reply: Reply
  try {
    reply = await pending
  } catch (err) {
    throw new Error(`${via}.handle rejected: ${String(err)}`)
  }
  const problem = malformed(reply, input)
  if (problem !== undefined) throw new Error(`${via}: malformed reply (${problem}): ${safe(reply)}`)
  if (w.errors.length > 0) {
    const reported = w.errors.splice(0).map((e) => `${e.code} ${e.message}`).join('; ')
    throw new Error(`${via}: the broker reported ${reported} (reply ${safe(reply)})`)
  }
  if (reply.status === 'error') {
    const after = await snapshot(w)
    if (after !== before) throw new Error(`${via}: the error reply ${safe(reply)} changed state:\nbefore ${before}\nafter  ${after}`)
  } else {
    await restore(w)
  }
  return reply
}

function safe (value: unknown): string {
  try {
    return (JSON.stringify(value) ?? String(value)).slice(0, 500)
  } catch {
    return String(value)
  }
}

/** The JSON frame of a message, or undefined when it has none (BigInt, nesting too deep). */
function frame (message: unknown): string | undefined {
  try {
    return JSON.stringify(message)
  } catch {
    return undefined
  }
}

// --- arbitraries ---------------------------------------------------------------------------

function nested (depth: number, kind: 'array' | 'object'): unknown {
  let value: unknown = 1
  for (let i = 0; i < depth; i++) value = kind === 'array' ? [value] : { a: value }
  return value
}

const LONG = 'x'.repeat(300_000)
const DEEP = nested(100_000, 'array')
// 400k characters, 1.2 MB of UTF-8: under maxFrameBytes in characters, over it in bytes.
const LONG_WIDE = '€'.repeat(400_000)
const POLLUTERS = [
  JSON.parse('{"__proto__":{"polluted":"yes"}}') as unknown,
  JSON.parse('{"constructor":{"prototype":{"polluted":"yes"}}}') as unknown,
  JSON.parse('{"prototype":{"polluted":"yes"},"__proto__":[1]}') as unknown,
  JSON.parse('[{"__proto__":{"polluted":"yes"}}]') as unknown
]

const special = fc.constantFrom<unknown>(
  1e308, -1e308, -0, 2 ** 53 + 1, -(2 ** 53) - 1, 2 ** 31, 2 ** 31 - 1, -1, 0, 1, 1.5, NaN, Infinity, -Infinity,
  Number.MIN_VALUE, Number.MAX_SAFE_INTEGER, '', ' ', '0', '-0', '1e308', '9007199254740993', 'null', 'true',
  '2026-13-45', '9999-12-31T23:59:59.999', '0000-01-01', '*', 'dev-1', true, false, null, undefined, [], {}, [null],
  [1, 'a'], { a: 1 }, 10n, [2 ** 53 + 1], ['*'], [-0]
)
// Big values travel through fast-check as labels, so that a counterexample prints (and
// fast-check's printer does not overflow the stack on them); mutate() swaps the value in.
class Huge {
  constructor (readonly label: string, readonly value: unknown) {}
  [fc.toStringMethod] (): string {
    return this.label
  }
}
const huge = fc.constantFrom(
  new Huge('x * 300000', LONG), new Huge('€ * 400000', LONG_WIDE), new Huge('x * 129', 'x'.repeat(129)),
  new Huge('x * 128', 'x'.repeat(128)), new Huge('a * 49', 'a'.repeat(49)),
  new Huge('[[...]] 100 deep', nested(100, 'array')), new Huge('[[...]] 4400 deep', nested(4400, 'array')),
  new Huge('{a:{...}} 4400 deep', nested(4400, 'object')), new Huge('[[...]] 100000 deep', DEEP),
  ...POLLUTERS.map((value) => new Huge(JSON.stringify(value), value))
)
const hostile: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: special },
  { weight: 2, arbitrary: fc.jsonValue() },
  { weight: 1, arbitrary: fc.string({ unit: 'binary' }) },
  { weight: 1, arbitrary: huge },
  { weight: 1, arbitrary: fc.integer() },
  { weight: 1, arbitrary: fc.double() }
)
const key = fc.oneof(
  fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'valueOf', 'hasOwnProperty', 'action', 'requestId'),
  fc.string({ maxLength: 8 })
)

interface Mutation {
  where: 'top' | 'inner'
  op: 'set' | 'delete' | 'add'
  index: number
  key: string
  value: unknown
}

const mutation: fc.Arbitrary<Mutation> = fc.record({
  where: fc.constantFrom('top', 'inner'),
  op: fc.constantFrom('set', 'set', 'delete', 'add'),
  index: fc.nat(),
  key,
  value: hostile
})

/** A valid message of each action, for this world. */
function template (w: World, action: Action): Record<string, unknown> {
  switch (action) {
    case 'authenticate': return { action, requestId: 1, token: w.admin }
    case 'command/insert': return {
      action, requestId: 2, deviceId: 'dev-1',
      command: { command: 'on', timestamp: '2026-01-01T00:00:01.000Z', parameters: { level: 3 }, lifetime: 30, status: 'new', result: null }
    }
    case 'command/update': return { action, requestId: 3, deviceId: 'dev-1', commandId: w.ids[1], command: { status: 'done', result: { ok: true } } }
    case 'command/get': return { action, requestId: 4, deviceId: 'dev-1', commandId: w.ids[0] }
    case 'command/list': return {
      action, requestId: 5, deviceId: 'dev-1', start: '2025-12-31', end: '2026-01-02T00:00:00', command: 'on',
      status: 'new', sortField: 'timestamp', sortOrder: 'DESC', take: 10, skip: 0
    }
    case 'command/subscribe': return {
      action, requestId: 6, deviceId: 'dev-1', networkIds: [1], deviceTypeIds: [1], names: ['on'],
      timestamp: '2025-12-31T00:00:00Z', returnUpdatedCommands: false, limit: 5
    }
    case 'command/unsubscribe': return { action, requestId: 7, subscriptionId: 1 }
    case 'subscription/list': return { action, requestId: 8, type: 'command' }
    case 'device/save': return {
      action, requestId: 9, deviceId: 'victim', device: { name: 'Victim', networkId: 1, deviceTypeId: 1, data: { a: [1] }, isBlocked: false }
    }
    case 'device/get': return { action, requestId: 10, deviceId: 'dev-2' }
    case 'device/delete': return { action, requestId: 11, deviceId: 'victim' }
  }
}

// Sets an own property, even `__proto__`, as JSON.parse would.
function define (target: Record<string, unknown>, name: string, value: unknown): void {
  Object.defineProperty(target, name, { value, enumerable: true, writable: true, configurable: true })
}

function mutate (message: Record<string, unknown>, mutations: readonly Mutation[]): Record<string, unknown> {
  for (const m of mutations) {
    let target = message
    if (m.where === 'inner') {
      const inner = Object.hasOwn(message, 'command') ? message.command : message.device
      if (inner !== null && typeof inner === 'object' && !Array.isArray(inner)) target = inner as Record<string, unknown>
    }
    const value = m.value instanceof Huge ? m.value.value : m.value
    const keys = Object.keys(target)
    const name = keys.length > 0 && m.op !== 'add' ? keys[m.index % keys.length] as string : m.key
    if (m.op === 'delete') delete target[name]
    else define(target, name, value)
  }
  return message
}

// --- properties ----------------------------------------------------------------------------

t.test('broker-fuzz: any JSON value gets a well-formed reply, and a refusal changes nothing', async (t) => {
  const w = await world(t)
  const start = cases
  await fc.assert(fc.asyncProperty(fc.jsonValue(), async (value) => {
    const text = JSON.stringify(value)
    for (const via of ['broker', 'session'] as const) {
      await send(w, via, value)
      await send(w, via, text)
    }
  }), { numRuns: 1000 })
  t.comment(`${cases - start} messages`)
  t.strictSame(w.errors, [])
})

t.test('broker-fuzz: any string frame gets a well-formed reply, and a refusal changes nothing', async (t) => {
  const w = await world(t)
  const start = cases
  const strings = fc.oneof(
    fc.string({ unit: 'binary' }),
    fc.string({ unit: 'grapheme' }),
    fc.string({ unit: fc.constantFrom('{', '}', '[', ']', '"', ':', ',', '\\', 'a', '1', ' ', 'n', 'u', 'l') }),
    fc.json(),
    fc.jsonValue().map((value) => JSON.stringify({ action: 'command/insert', deviceId: 'dev-1', command: value })),
    fc.constantFrom('', ' ', '\u0000', '\ufeff{}', '{}', '[]', 'null', '{"action":', '{"action":"command/insert"}',
      '{"__proto__":{"polluted":1},"action":"device/get","deviceId":"dev-1"}'),
    fc.constantFrom(
      new Huge('"x * 300000"', `"${LONG}"`), new Huge('"€ * 400000"', `"${LONG_WIDE}"`), new Huge('[ * 100000', '['.repeat(100_000)),
      new Huge('{"params": [[...]] 100000 deep}', `{"action":"device/get","deviceId":"dev-1","params":${'['.repeat(100_000)}${']'.repeat(100_000)}}`),
      new Huge('{"action": [[...]] 100000 deep}', `{"action":${'['.repeat(100_000)}${']'.repeat(100_000)},"requestId":1}`),
      new Huge('{"requestId": [[...]] 100000 deep}', `{"action":"device/get","requestId":${'['.repeat(100_000)}${']'.repeat(100_000)},"deviceId":"x"}`)
    )
  )
  await fc.assert(fc.asyncProperty(strings, async (generated) => {
    const text = generated instanceof Huge ? generated.value : generated
    await send(w, 'broker', text)
    await send(w, 'session', text)
  }), { numRuns: 1500 })
  t.comment(`${cases - start} messages`)
  t.strictSame(w.errors, [])
})

t.test('broker-fuzz: mutations of valid messages of every action get well-formed replies, and refusals change nothing', async (t) => {
  const w = await world(t)
  const start = cases
  const outcomes = new Map<string, number>()
  const arbitrary = fc.record({
    action: fc.constantFrom(...ACTIONS),
    mutations: fc.array(mutation, { minLength: 1, maxLength: 3 }),
    via: fc.constantFrom<Via>('broker', 'session'),
    asFrame: fc.boolean(),
    // Mostly the admin's (or the session's own); sometimes one limited to network 1 and type 1,
    // or one that may only read, so that permission checks are reached too.
    token: fc.constantFrom('own', 'own', 'own', 'network 1', 'read only')
  })
  const tokens: Record<string, unknown> = {
    own: OWN,
    'network 1': w.token({ n: ['1'], dt: ['1'] }),
    'read only': w.token({ a: [3, 5] })
  }
  await fc.assert(fc.asyncProperty(arbitrary, async ({ action, mutations, via, asFrame, token }) => {
    const message = mutate(template(w, action), mutations)
    const text = asFrame ? frame(message) : undefined
    const reply = await send(w, via, text ?? message, tokens[token])
    const outcome = reply.status === 'error' ? `${reply.code}` : 'success'
    outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1)
  }), { numRuns: 5000 })
  // The unmutated templates are valid: each reaches success.
  for (const action of ACTIONS) {
    if (action === 'command/unsubscribe') continue
    const reply = await send(w, 'session', template(w, action))
    t.equal(reply.status, 'success', `${action}: the template is valid`)
  }
  t.comment(`${cases - start} messages; replies ${[...outcomes].sort().map(([k, v]) => `${k}: ${v}`).join(', ')}`)
  for (const outcome of ['success', '400', '401', '403', '404']) t.ok((outcomes.get(outcome) ?? 0) > 0, `some replies are ${outcome}`)
  t.strictSame(w.errors, [])
})

t.test('broker-fuzz: any token argument is refused with 401 and changes nothing', async (t) => {
  const w = await world(t)
  const start = cases
  const tokens = fc.oneof(
    fc.anything(),
    fc.string({ unit: 'binary' }),
    fc.tuple(fc.base64String(), fc.base64String(), fc.base64String()).map((parts) => parts.join('.')),
    fc.constantFrom(w.admin + 'x', w.admin.slice(0, -1), w.admin.replace(/\./g, ''), `${w.admin}.`, w.admin.toUpperCase())
  ).filter((token) => token !== undefined)
  await fc.assert(fc.asyncProperty(tokens, fc.boolean(), async (token, asFrame) => {
    const message = { action: 'command/insert', requestId: 1, deviceId: 'dev-1', command: { command: 'on', lifetime: 5 } }
    const reply = await send(w, 'broker', asFrame ? JSON.stringify(message) : message, token)
    if (reply.status !== 'error' || reply.code !== 401) throw new Error(`token ${safe(token)} was not refused: ${safe(reply)}`)
    const fromSession = await send(w, 'session', message, token)
    if (fromSession.status !== 'error' || fromSession.code !== 401) throw new Error(`token ${safe(token)} was not refused by a session: ${safe(fromSession)}`)
  }), { numRuns: 750 })
  t.comment(`${cases - start} messages`)
  t.strictSame(w.errors, [])
})

t.test('broker-fuzz: totals', async (t) => {
  t.comment(`fuzz cases: ${cases} messages checked in total`)
  t.ok(cases >= 10_000, 'thousands of cases')
})
