import t from 'tap'
import { systemClock, type Clock } from '../lib/clock.js'
import { manualClock } from '../lib/manual-clock.js'
import { DEFAULTS, describe, resolveOptions, type BrokerOptions } from '../lib/options.js'
import { expectError } from './fixtures/throws.js'

const DH_KEY = Buffer.from([0x75, 0xeb, 0xe2, 0x71, 0xe8, 0x62])
// 32 bytes once base64-decoded.
const STRONG = 'dGVzdC1zZWNyZXQtb2YtdGhpcnR5LXR3by1ieXRlcyE='

// The documented bounds of each numeric option (inclusive).
const LIMITS: Record<keyof typeof DEFAULTS, [number, number]> = {
  tick: [1, 60_000],
  maxLifetime: [1, 2 ** 31 - 1],
  retention: [0, 2 ** 31 - 1],
  maxPayloadBytes: [2, 2 ** 30],
  maxJsonDepth: [1, 1000],
  maxFilterItems: [1, 100_000],
  maxFrameBytes: [2, 2 ** 30],
  maxReplyBytes: [1024, 2 ** 30],
  maxTake: [1, 1_000_000],
  maxHistory: [1, 1_000_000],
  maxSortWindow: [1, 10_000_000],
  maxPendingPerDevice: [1, 2 ** 31 - 1],
  maxSubscriptionsPerSession: [1, 2 ** 31 - 1],
  tokenCacheSize: [0, 2 ** 24],
  writeBatch: [1, 1_000_000],
  expiryBatch: [1, 1_000_000],
  accessTokenLifetime: [1, 2 ** 31 - 1],
  refreshTokenLifetime: [1, 2 ** 31 - 1]
}
const NAMES = Object.keys(LIMITS) as Array<keyof typeof DEFAULTS>



function resolveWith (extra: Record<string, unknown>): ReturnType<typeof resolveOptions> {
  return resolveOptions({ secret: STRONG, ...extra } as BrokerOptions)
}

t.test('options: DEFAULTS holds the documented defaults and is frozen', async (t) => {
  t.strictSame({ ...DEFAULTS }, {
    tick: 100,
    maxLifetime: 604_800,
    retention: 0,
    maxPayloadBytes: 65_536,
    maxJsonDepth: 64,
    maxFilterItems: 100,
    maxFrameBytes: 1_048_576,
    maxReplyBytes: 2_097_152,
    maxTake: 1000,
    maxHistory: 1000,
    maxSortWindow: 10_000,
    maxPendingPerDevice: 10_000,
    maxSubscriptionsPerSession: 100,
    tokenCacheSize: 1000,
    writeBatch: 1000,
    expiryBatch: 1000,
    accessTokenLifetime: 1800,
    refreshTokenLifetime: 15_552_000
  })
  t.ok(Object.isFrozen(DEFAULTS))
})

t.test('options: defaults are applied', async (t) => {
  const resolved = resolveOptions({ secret: STRONG })
  t.strictSame(resolved.key, Buffer.from('test-secret-of-thirty-two-bytes!'), 'key derived from the secret')
  t.equal(resolved.allowWeakKey, false, 'weak keys refused by default')
  t.equal(resolved.clock, systemClock, 'the system clock')
  for (const name of NAMES) t.equal(resolved[name], DEFAULTS[name], name)
  t.strictSame(Object.keys(resolved).sort(), ['allowWeakKey', 'clock', 'key', ...NAMES].sort(), 'nothing else')
})

t.test('options: undefined values take the default', async (t) => {
  const resolved = resolveWith({ clock: undefined, tick: undefined, writeBatch: undefined })
  t.equal(resolved.clock, systemClock)
  t.equal(resolved.tick, DEFAULTS.tick)
  t.equal(resolved.writeBatch, DEFAULTS.writeBatch)
})

t.test('options: given values are kept', async (t) => {
  const clock = manualClock(1000)
  const given = { tick: 5, maxLifetime: 60, retention: 90, maxPayloadBytes: 100, maxJsonDepth: 3, maxFilterItems: 2, maxFrameBytes: 200, maxReplyBytes: 5000, maxTake: 9, maxHistory: 11, maxSortWindow: 12, accessTokenLifetime: 13, refreshTokenLifetime: 14, maxPendingPerDevice: 3, maxSubscriptionsPerSession: 4, tokenCacheSize: 0, writeBatch: 7, expiryBatch: 8 }
  const resolved = resolveOptions({ key: new Uint8Array([1, 2, 3]), allowWeakKey: true, clock, ...given })
  t.strictSame([...resolved.key], [1, 2, 3], 'raw key')
  t.equal(resolved.allowWeakKey, true)
  t.equal(resolved.clock, clock, 'the given clock')
  for (const name of NAMES) t.equal(resolved[name], given[name], name)
})

t.test('options: every numeric option accepts its bounds', async (t) => {
  for (const name of NAMES) {
    const [min, max] = LIMITS[name]
    t.equal(resolveWith({ [name]: min })[name], min, `${name} = ${min}`)
    t.equal(resolveWith({ [name]: max })[name], max, `${name} = ${max}`)
  }
})

t.test('options: every numeric option refuses a non-number with a TypeError', async (t) => {
  const bad: Array<[unknown, string]> = [['5', 'string "5"'], [true, 'boolean true'], [{}, 'Object'], [[1], 'Array'], [5n, 'bigint 5']]
  for (const name of NAMES) {
    for (const [value, described] of bad) {
      expectError(t, () => resolveWith({ [name]: value }), TypeError, `createBroker: options.${name} must be an integer, received ${described}`, `${name}: ${described}`)
    }
  }
})

t.test('options: every numeric option refuses a non-integer or out-of-range number with a RangeError', async (t) => {
  for (const name of NAMES) {
    const [min, max] = LIMITS[name]
    const expected = `createBroker: options.${name} must be an integer from ${min} to ${max}, received number`
    for (const value of [min - 1, max + 1, min + 0.5, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -1]) {
      expectError(t, () => resolveWith({ [name]: value }), RangeError, `${expected} ${String(value)}`, `${name}: ${value}`)
    }
  }
})

t.test('options: an unknown option is a TypeError naming it', async (t) => {
  expectError(t, () => resolveWith({ ticks: 5 }), TypeError,
    'createBroker: unknown option ticks; expected one of secret, key, allowWeakKey, clock, tick, maxLifetime, retention, maxPayloadBytes, maxJsonDepth, maxFilterItems, maxFrameBytes, maxReplyBytes, maxTake, maxHistory, maxSortWindow, maxPendingPerDevice, maxSubscriptionsPerSession, tokenCacheSize, writeBatch, expiryBatch, accessTokenLifetime, refreshTokenLifetime',
    'ticks')
  expectError(t, () => resolveWith({ jwtSecret: 'x' }), TypeError, /^createBroker: unknown option jwtSecret;/, 'jwtSecret')
  expectError(t, () => resolveOptions({ foo: undefined } as BrokerOptions), TypeError, /unknown option foo/, 'checked before the key, even when undefined')
})

t.test('options: options that are not an object are a TypeError', async (t) => {
  const cases: Array<[unknown, string]> = [[undefined, /received undefined/.source], [null, 'received null'], ['devicehive', 'received string "devicehive"'], [5, 'received number 5'], [true, 'received boolean true']]
  for (const [value, tail] of cases) {
    expectError(t, () => resolveOptions(value as BrokerOptions), TypeError, new RegExp(`^createBroker: options must be an object with secret or key, ${tail}`), String(value))
  }
})

t.test('options: key problems surface with the createBroker prefix', async (t) => {
  expectError(t, () => resolveOptions({}), TypeError, /^createBroker: options\.secret .*options\.key .*is required$/, 'neither')
  expectError(t, () => resolveOptions({ secret: STRONG, key: DH_KEY }), TypeError, /^createBroker: pass options\.secret or options\.key, not both$/, 'both')
  expectError(t, () => resolveOptions({ secret: '***' }), RangeError, /^createBroker: options\.secret must base64-decode/, 'empty secret')
  expectError(t, () => resolveOptions({ key: new Uint8Array(0) }), RangeError, /^createBroker: options\.key must hold at least one byte/, 'empty key')
})

t.test('options: a key shorter than 32 bytes is refused unless allowWeakKey', async (t) => {
  const message = 'createBroker: the key must be at least 32 bytes, received 6 (a secret string is base64-decoded: it needs at least 43 base64 characters); a short HMAC key can be brute-forced from one token. Use a longer secret, or set allowWeakKey: true to accept tokens from a DeviceHive whose JWT_SECRET is short'
  expectError(t, () => resolveOptions({ secret: 'devicehive' }), RangeError, message, "DeviceHive's demo secret")
  expectError(t, () => resolveOptions({ key: new Uint8Array(31) }), RangeError, /at least 32 bytes, received 31/, 'a 31-byte key')
  t.equal(resolveOptions({ key: new Uint8Array(32) }).key.length, 32, 'a 32-byte key')
  t.strictSame(resolveOptions({ secret: 'devicehive', allowWeakKey: true }).key, DH_KEY, 'allowWeakKey accepts the demo secret')
  expectError(t, () => resolveOptions({ secret: STRONG, allowWeakKey: 'yes' } as unknown as BrokerOptions), TypeError,
    'createBroker: options.allowWeakKey must be a boolean, received string "yes"', 'allowWeakKey must be a boolean')
})

t.test('options: the date of a clock, when given, must be a function', async (t) => {
  const full: Clock = { now: () => 0, setTimeout: () => 0, clearTimeout: () => {} }
  t.equal(resolveWith({ clock: { ...full, date: () => 5 } }).clock.date?.(), 5)
  expectError(t, () => resolveWith({ clock: { ...full, date: 5 } }), TypeError, 'createBroker: options.clock.date must be a function when given, received number 5')
})

t.test('options: the elapsed of a clock, when given, must be a function', async (t) => {
  const full: Clock = { now: () => 0, setTimeout: () => 0, clearTimeout: () => {} }
  t.equal(resolveWith({ clock: { ...full, elapsed: () => 7 } }).clock.elapsed?.(), 7)
  expectError(t, () => resolveWith({ clock: { ...full, elapsed: 'fast' } }), TypeError, 'createBroker: options.clock.elapsed must be a function when given, received string "fast"')
})

t.test('options: a clock missing a method is a TypeError', async (t) => {
  const full: Clock = { now: () => 0, setTimeout: () => 0, clearTimeout: () => {} }
  for (const method of ['now', 'setTimeout', 'clearTimeout'] as const) {
    const { [method]: _missing, ...clock } = full
    expectError(t, () => resolveWith({ clock }), TypeError,
      new RegExp(`^createBroker: options\\.clock must have now\\(\\), setTimeout\\(\\) and clearTimeout\\(\\); ${method} is `), `without ${method}`)
  }
  expectError(t, () => resolveWith({ clock: { ...full, now: 5 } }), TypeError,
    'createBroker: options.clock must have now(), setTimeout() and clearTimeout(); now is number 5', 'now not a function')
  expectError(t, () => resolveWith({ clock: { ...full, clearTimeout: null } }), TypeError, /; clearTimeout is null$/, 'clearTimeout null')
  expectError(t, () => resolveWith({ clock: Date }), TypeError, 'createBroker: options.clock must be an object with now(), setTimeout() and clearTimeout(), received function', 'Date is not a clock')
  expectError(t, () => resolveWith({ clock: 'system' }), TypeError, /options\.clock must be an object .*, received string "system"$/, 'a string')
  expectError(t, () => resolveWith({ clock: null }), TypeError, /options\.clock must be an object .*, received null$/, 'null is not "use the default"')
  expectError(t, () => resolveWith({ tick: null }), TypeError, 'createBroker: options.tick must be an integer, received null', 'null is not "use the default" either')
  expectError(t, () => resolveWith({ constructor: 5 }), TypeError, /unknown option constructor/, 'inherited names are unknown options too')
})

t.test('options: describe names null', async (t) => {
  t.equal(describe(null), 'null')
})

t.test('options: describe names an object by its constructor', async (t) => {
  class Gadget {}
  t.equal(describe({}), 'Object')
  t.equal(describe([]), 'Array')
  t.equal(describe(new Map()), 'Map')
  t.equal(describe(new Gadget()), 'Gadget', 'class instance')
  t.equal(describe(DH_KEY), 'Buffer')
  t.equal(describe(Object.create(null)), 'object', 'no prototype')
  t.equal(describe({ constructor: undefined }), 'object', 'constructor shadowed by undefined')
})

t.test('options: describe names a function without its source', async (t) => {
  t.equal(describe(() => 'secret'), 'function')
  t.equal(describe(class Gadget {}), 'function', 'a class')
  t.equal(describe(Date.now), 'function', 'a builtin')
})

t.test('options: describe quotes a short string', async (t) => {
  t.equal(describe(''), 'string ""')
  t.equal(describe('abc'), 'string "abc"')
  t.equal(describe('a"b\n'), 'string "a\\"b\\n"', 'escaped as JSON')
  t.equal(describe('x'.repeat(40)), `string "${'x'.repeat(40)}"`, '40 characters kept whole')
})

t.test('options: describe truncates a long string', async (t) => {
  t.equal(describe('x'.repeat(41)), `string "${'x'.repeat(40)}…"`, '41 characters')
  t.equal(describe('0123456789'.repeat(100)), `string "${'0123456789'.repeat(4)}…"`, '1000 characters')
})

t.test('options: describe gives the type and value of other primitives', async (t) => {
  t.equal(describe(5), 'number 5')
  t.equal(describe(-1.5), 'number -1.5')
  t.equal(describe(Number.NaN), 'number NaN')
  t.equal(describe(true), 'boolean true')
  t.equal(describe(10n), 'bigint 10')
  t.equal(describe(Symbol('s')), 'symbol Symbol(s)')
})
