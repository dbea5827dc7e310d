import { checkKeyStrength, resolveKey } from './auth.js'
import { systemClock, type Clock } from './clock.js'

/**
 * Options of `createBroker`. Exactly one of `secret` and `key` is required;
 * every other option has the default shown, and a bad value throws
 * `TypeError` or `RangeError` from `createBroker`, naming the option.
 */
export interface BrokerOptions {
  /**
   * DeviceHive's `JWT_SECRET`. Like DeviceHive, the broker base64-decodes it
   * (leniently) to get the HS256 key, so tokens a DeviceHive server signed
   * with the same secret are accepted.
   */
  secret?: string
  /** The raw HS256 key, instead of `secret`. */
  key?: Uint8Array
  /**
   * Accept a key shorter than 32 bytes. Default false: a short HMAC key can be brute-forced
   * from one token (a 3-byte key took 2 s), and then any token forged. Set it only to accept
   * tokens from a DeviceHive whose `JWT_SECRET` is short, such as its demo `devicehive`.
   */
  allowWeakKey?: boolean
  /** Source of time for expiry and token checks. Default: the system clock. Tests pass `manualClock()`. */
  clock?: Clock
  /** Expiry resolution in ms: a command expires at most one tick after its time. Default 100. */
  tick?: number
  /** Largest `lifetime` a command may ask for, in seconds. Default 604800 (7 days). */
  maxLifetime?: number
  /**
   * How long a command inserted without a `lifetime` is kept, in seconds; 0 keeps it until its
   * device is deleted. Default 0, as before the option existed: a hub that runs for months
   * should set it, or its store grows for ever. The command expires as if it had had that
   * lifetime (gone for readers, and if never updated reported on `expired` and pushed with
   * status `"expired"`), while its `lifetime` stays null, as the client sent it; an update does
   * not extend it. It may exceed `maxLifetime`, which bounds what clients ask for. Footgun: it
   * is fixed at insert, so commands stored while it was 0 are kept for ever, and changing it
   * changes only later inserts; on a shared store give every process the same value.
   */
  retention?: number
  /**
   * Largest serialised `parameters`, `result` or device `data`, and largest `status`, in
   * UTF-8 bytes (each). Default 65536.
   */
  maxPayloadBytes?: number
  /**
   * Deepest nesting of arrays and objects in `parameters`, `result` or device `data`.
   * Default 64. Anything a device must parse back is held to it, so a push can always be
   * serialised again (V8 runs out of stack somewhere past a few thousand levels).
   */
  maxJsonDepth?: number
  /**
   * Most entries in one `networkIds`, `deviceTypeIds` or `names` list of a subscription or
   * a `command/list`. Default 100. Each entry of a subscription is indexed, so this bounds
   * what one subscription costs; a `names` entry is also held to a command name's 128 characters.
   */
  maxFilterItems?: number
  /** Largest message `handle()` accepts as a string, in UTF-8 bytes. Default 1048576 (1 MiB). */
  maxFrameBytes?: number
  /**
   * Largest `command/list` reply, in UTF-8 bytes: a list that would be larger answers 400
   * and names `take`. Default 2097152 (2 MiB).
   */
  maxReplyBytes?: number
  /** Largest `take` of `command/list`. Default 1000. */
  maxTake?: number
  /** Most commands a subscription's history replays (also what `limit: 0` means). Default 1000. */
  maxHistory?: number
  /**
   * Most commands `command/list` sorts by `command` or `status`: the device's commands in the
   * `start`..`end` window. A larger window answers 400 (narrow it with `start` and `end`);
   * sorting by `timestamp` has no such bound. Default 10000.
   */
  maxSortWindow?: number
  /**
   * Most commands a device may have pending (stored, not yet updated, not expired).
   * An insert beyond it is refused with 400 and nothing is stored. Default 10000.
   */
  maxPendingPerDevice?: number
  /** Most subscriptions one session may hold. Default 100. */
  maxSubscriptionsPerSession?: number
  /** Verified tokens kept compiled, least recently used out; 0 disables. Default 1000. */
  tokenCacheSize?: number
  /**
   * Most writes committed in one store transaction. Writes that arrive together share a
   * transaction (group commit); a larger burst is split. Default 1000.
   */
  writeBatch?: number
  /**
   * Most commands expired per event-loop turn (one store transaction); more wait for the next
   * turn. Default 1000. On SQLite each expiry deletes a row from every index, and a bigger
   * transaction shares page writes among them: measured here, 31 µs a row in transactions of
   * 256, 14 µs in transactions of 1000 (a turn of ~14 ms), 10 µs in 4096. Lower it for
   * shorter turns, at the cost of how many expiries per second the store can keep up with.
   */
  expiryBatch?: number
  /** Lifetime of the access tokens `token/refresh` and `token/create` issue, in seconds. Default 1800 (30 minutes, DeviceHive's). */
  accessTokenLifetime?: number
  /** Lifetime of the refresh tokens `token/create` issues, in seconds. Default 15552000 (180 days). */
  refreshTokenLifetime?: number
}

/** The defaults of every `createBroker` option but the key. */
export const DEFAULTS = Object.freeze({
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

/** Options after defaults and checks. */
export interface ResolvedOptions extends Readonly<typeof DEFAULTS> {
  readonly key: Buffer
  readonly clock: Clock
  readonly allowWeakKey: boolean
}

const LIMITS: Readonly<Record<keyof typeof DEFAULTS, readonly [min: number, max: number]>> = {
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

// The options that are not numbers with defaults.
const OTHER_OPTIONS: readonly string[] = ['secret', 'key', 'allowWeakKey', 'clock']

/** Applies defaults and checks every option; throws `TypeError`/`RangeError` naming the option. */
export function resolveOptions (options: BrokerOptions | undefined): ResolvedOptions {
  if (options === null || typeof options !== 'object') {
    throw new TypeError(`createBroker: options must be an object with secret or key, received ${describe(options)}`)
  }
  for (const name of Object.keys(options)) {
    if (!OTHER_OPTIONS.includes(name) && !Object.hasOwn(DEFAULTS, name)) {
      throw new TypeError(`createBroker: unknown option ${name}; expected one of ${OTHER_OPTIONS.join(', ')}, ${Object.keys(DEFAULTS).join(', ')}`)
    }
  }
  const allowWeakKey = options.allowWeakKey ?? false
  if (typeof allowWeakKey !== 'boolean') {
    throw new TypeError(`createBroker: options.allowWeakKey must be a boolean, received ${describe(allowWeakKey)}`)
  }
  const key = resolveKey(options, 'createBroker')
  checkKeyStrength(key, allowWeakKey, 'createBroker')
  // Only undefined means "use the default": null is a value, and a wrong one.
  const clock = options.clock === undefined ? systemClock : options.clock
  if (clock === null || typeof clock !== 'object') {
    throw new TypeError(`createBroker: options.clock must be an object with now(), setTimeout() and clearTimeout(), received ${describe(clock)}`)
  }
  for (const method of ['now', 'setTimeout', 'clearTimeout'] as const) {
    if (typeof (clock as Partial<Clock>)[method] !== 'function') {
      throw new TypeError(`createBroker: options.clock must have now(), setTimeout() and clearTimeout(); ${method} is ${describe((clock as Partial<Clock>)[method])}`)
    }
  }
  for (const method of ['date', 'elapsed'] as const) {
    const value = (clock as Partial<Clock>)[method]
    if (value !== undefined && typeof value !== 'function') {
      throw new TypeError(`createBroker: options.clock.${method} must be a function when given, received ${describe(value)}`)
    }
  }
  const resolved: Record<string, unknown> = { key, clock, allowWeakKey }
  for (const name of Object.keys(DEFAULTS) as Array<keyof typeof DEFAULTS>) {
    const value = options[name] === undefined ? DEFAULTS[name] : options[name]
    const [min, max] = LIMITS[name]
    if (typeof value !== 'number') {
      throw new TypeError(`createBroker: options.${name} must be an integer, received ${describe(value)}`)
    }
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new RangeError(`createBroker: options.${name} must be an integer from ${min} to ${max}, received ${describe(value)}`)
    }
    resolved[name] = value
  }
  return resolved as unknown as ResolvedOptions
}

/** A short, safe description of a value for error messages. */
export function describe (value: unknown): string {
  if (value === undefined) return 'undefined'
  if (value === null) return 'null'
  if (typeof value === 'object') return value.constructor?.name ?? 'object'
  if (typeof value === 'function') return 'function'
  if (typeof value === 'string') return `string ${JSON.stringify(value.length > 40 ? value.slice(0, 40) + '…' : value)}`
  return `${typeof value} ${String(value)}`
}
