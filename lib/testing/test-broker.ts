// createTestBroker(): a broker on a memory store and a manual clock, with tokens to use it.
import { randomBytes } from 'node:crypto'
import { Broker } from '../broker.js'
import { Action, signToken, type SignTokenClaims } from '../auth.js'
import { manualClock, type ManualClock } from '../manual-clock.js'
import { describe, type BrokerOptions } from '../options.js'
import { memoryStore } from '../store/memory.js'
import { register } from './kit.js'

/** Where a test broker's clock starts unless told: 2026-01-01T00:00:00.000Z. */
export const TEST_START = Date.parse('2026-01-01T00:00:00.000Z')

// The kit's tokens expire a year after they were signed, on the test clock: a test that
// advances the clock by hours or days still has them. Sign a short one to test expiry.
const TOKEN_LIFETIME = 365 * 24 * 3_600_000

/** Options of {@link createTestBroker}; all optional. */
export interface TestBrokerOptions {
  /** What the manual clock reads at first, epoch ms. Default {@link TEST_START}. */
  start?: number
  /** DeviceHive's `JWT_SECRET`, as for `createBroker`. Default: 32 random bytes, base64. */
  secret?: string
  /** Any other `createBroker` option (`tick`, `maxLifetime`, ...); not `secret`, `key` or `clock`. */
  broker?: Omit<BrokerOptions, 'secret' | 'key' | 'clock'>
}

/**
 * Access tokens for a test broker, signed with its secret against its clock, each reaching
 * every device (`n: ["*"], dt: ["*"]`) and valid for a year of the test clock.
 */
export interface TestTokens {
  /** User 1, every action (`a: [0]`). */
  readonly admin: string
  /** User 2, what a service needs: insert, get, list and subscribe to commands, get devices (`a: [3, 5, 7]`). */
  readonly client: string
  /** User 3, what a device needs: get and update commands, subscribe to them (`a: [5, 8]`). */
  readonly device: string
  /**
   * Signs any claims, over the admin's (`u: 1, a: [0], n: ["*"], dt: ["*"]`, `e` a year
   * after the clock's now): `tokens.sign({ a: [5], n: ['7'] })`, or `{ e: clock.now() + 1000 }`.
   */
  sign: (claims?: Partial<SignTokenClaims>) => string
}

/** What {@link createTestBroker} resolves to. */
export interface TestBroker {
  /** A broker on a memory store; `broker.close()` releases everything. */
  broker: Broker
  /** Its clock: `clock.advance(ms)` expires commands and fires timeouts. */
  clock: ManualClock
  tokens: TestTokens
  /** The secret its tokens are keyed with, for signing elsewhere. */
  secret: string
}

// A broker that, once closed, ends the waits of the helpers on it (ERR_CLOSED).
class TestKitBroker extends Broker {
  readonly #closing: Set<() => void>

  constructor (options: BrokerOptions, closing: Set<() => void>) {
    super(memoryStore(), options)
    this.#closing = closing
  }

  override async close (): Promise<void> {
    await super.close()
    for (const closed of [...this.#closing]) closed()
  }
}

/**
 * A broker to test against: a memory store, a manual clock (nothing happens with time
 * until the test calls `clock.advance(ms)`), a fresh secret, and `tokens.admin`,
 * `tokens.client` and `tokens.device`. Resolves once the broker is ready. Throws
 * `TypeError`/`RangeError` for bad options, naming the option.
 *
 * @example
 * const { broker, clock, tokens } = await createTestBroker()
 * t.teardown(() => broker.close())
 */
export function createTestBroker (options: TestBrokerOptions = {}): Promise<TestBroker> {
  const { start = TEST_START, secret = randomBytes(32).toString('base64'), broker: rest = {} } = check(options)
  const clock = manualClock(start)
  const closing = new Set<() => void>()
  const broker = new TestKitBroker({ ...rest, secret, clock }, closing)
  const allowWeakKey = rest.allowWeakKey === true
  const sign = (claims: Partial<SignTokenClaims> = {}): string =>
    signToken({ u: 1, a: [Action.All], n: ['*'], dt: ['*'], e: clock.now() + TOKEN_LIFETIME, ...claims }, { secret, allowWeakKey })
  const tokens: TestTokens = Object.freeze({
    admin: sign(),
    client: sign({ u: 2, a: [Action.GetDevice, Action.GetDeviceCommand, Action.CreateDeviceCommand] }),
    device: sign({ u: 3, a: [Action.GetDeviceCommand, Action.UpdateDeviceCommand] }),
    sign
  })
  register(broker, { clock, tokens, closing })
  return broker.ready.then(() => ({ broker, clock, tokens, secret }))
}

const KNOWN = new Set(['start', 'secret', 'broker'])

function check (options: TestBrokerOptions): TestBrokerOptions {
  const who = 'createTestBroker'
  if (typeof options !== 'object' || options === null) throw new TypeError(`${who}: options must be an object, received ${describe(options)}`)
  for (const key of Object.keys(options)) {
    if (!KNOWN.has(key)) throw new TypeError(`${who}: unknown option ${key} (known: start, secret, broker)`)
  }
  const { start, secret, broker } = options
  if (start !== undefined && typeof start !== 'number') throw new TypeError(`${who}: options.start must be a number of epoch ms, received ${describe(start)}`)
  if (start !== undefined && !Number.isFinite(start)) throw new RangeError(`${who}: options.start must be finite, received ${describe(start)}`)
  if (secret !== undefined && typeof secret !== 'string') throw new TypeError(`${who}: options.secret must be a string (DeviceHive's JWT_SECRET), received ${describe(secret)}`)
  if (broker !== undefined) {
    if (typeof broker !== 'object' || broker === null) throw new TypeError(`${who}: options.broker must be an object, received ${describe(broker)}`)
    for (const key of ['secret', 'key', 'clock']) {
      if (key in broker) throw new TypeError(`${who}: options.broker.${key} is not for the test broker to take: it sets its own (use options.secret, options.start)`)
    }
  }
  return options
}
