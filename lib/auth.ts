import { createSigner, createVerifier } from 'fast-jwt'
import { z } from 'zod'
import { ProtocolError } from './errors.js'
import { INVALID_CREDENTIALS, TOKEN_EXPIRED, UNAUTHORIZED } from './messages.js'

/**
 * DeviceHive's action ids, as they appear in a token's `a` claim.
 * `All` (0) grants every action; an empty `a` grants the client set.
 */
export const Action = Object.freeze({
  All: 0,
  None: 1,
  GetNetwork: 2,
  GetDevice: 3,
  GetDeviceNotification: 4,
  GetDeviceCommand: 5,
  RegisterDevice: 6,
  CreateDeviceCommand: 7,
  UpdateDeviceCommand: 8,
  CreateDeviceNotification: 9,
  GetCurrentUser: 10,
  UpdateCurrentUser: 11,
  ManageUser: 12,
  ManageConfiguration: 13,
  ManageNetwork: 14,
  ManageToken: 15,
  ManagePlugin: 16,
  GetDeviceType: 17,
  ManageDeviceType: 18
})

/** One of DeviceHive's action ids (0..18). */
export type ActionId = typeof Action[keyof typeof Action]

const ALL_ACTIONS = (1 << 19) - 1
// What `a: []` grants: every client-facing action.
const CLIENT_ACTIONS = [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 15, 16, 17].reduce((mask, id) => mask | (1 << id), 0)

/**
 * The claims of a DeviceHive token, found under its `payload` claim. A null list reads as an
 * absent one, as DeviceHive (whose own tokens may carry `"n": null`) reads it.
 */
export const tokenClaimsSchema = z.object({
  /** User id; becomes the `userId` of inserted commands. Required, as in DeviceHive. */
  u: z.int(),
  /** Action ids granted; `[0]` is all, `[]` the client set, absent none. */
  a: z.array(z.int()).nullish(),
  /** Network ids as strings, or `"*"`; absent means no device at all. */
  n: z.array(z.string()).nullish(),
  /** Device type ids as strings, or `"*"`; absent means all. */
  dt: z.array(z.string()).nullish(),
  /** Expiry, epoch milliseconds. */
  e: z.number(),
  /** 0 for a refresh token (never accepted for requests); any other number is an access token. */
  t: z.number()
})

/** The claims of a DeviceHive token (under the JWT's `payload` claim). */
export type TokenClaims = z.infer<typeof tokenClaimsSchema>

/**
 * What a verified token allows, compiled once per token. `networks` and
 * `deviceTypes` are `'*'` or sets of ids; `networks` is null when `n` is
 * absent (no device at all).
 */
export interface Grant {
  readonly userId: number
  readonly actions: number
  readonly networks: '*' | ReadonlySet<number> | null
  readonly deviceTypes: '*' | ReadonlySet<number>
  /** `n` and `dt` both hold `"*"`: every device, existing or not. */
  readonly allDevices: boolean
  /** Epoch ms; the token is expired when `expiresAt < now`. */
  readonly expiresAt: number
  /** The claims it was compiled from, frozen: what `token/create` copies. */
  readonly claims: Readonly<TokenClaims>
}

/**
 * Turns DeviceHive's `JWT_SECRET` into the HMAC key DeviceHive signs with: the
 * string is base64-decoded leniently (characters outside the base64 alphabet
 * dropped, an incomplete trailing group of four dropped). `"devicehive"` gives
 * the six bytes `75 eb e2 71 e8 62`. May return an empty key: callers reject it.
 */
export function deriveKey (secret: string): Buffer {
  const alphabet = secret.replace(/[^A-Za-z0-9+/=]/g, '')
  return Buffer.from(alphabet.slice(0, alphabet.length - (alphabet.length % 4)), 'base64')
}

/** How to key HS256: DeviceHive's secret string, or the raw key bytes. */
export type KeyOptions = { secret: string, key?: undefined } | { key: Uint8Array, secret?: undefined }

/**
 * Resolves `{ secret }` or `{ key }` to key bytes. Throws `TypeError` for
 * neither, both, or wrong types, and `RangeError` for an empty key. `who`
 * prefixes the messages.
 */
export function resolveKey (options: { secret?: unknown, key?: unknown }, who: string): Buffer {
  const { secret, key } = options
  if (secret !== undefined && key !== undefined) {
    throw new TypeError(`${who}: pass options.secret or options.key, not both`)
  }
  if (secret !== undefined) {
    if (typeof secret !== 'string') {
      throw new TypeError(`${who}: options.secret must be a string (DeviceHive's JWT_SECRET), received ${typeof secret}`)
    }
    const derived = deriveKey(secret)
    if (derived.length === 0) {
      throw new RangeError(`${who}: options.secret must base64-decode to at least one byte of key (DeviceHive decodes JWT_SECRET as base64), received a secret with ${secret.length} characters that decodes to none`)
    }
    return derived
  }
  if (key !== undefined) {
    if (!(key instanceof Uint8Array)) {
      throw new TypeError(`${who}: options.key must be a Uint8Array, received ${typeof key}`)
    }
    if (key.length === 0) throw new RangeError(`${who}: options.key must hold at least one byte, received an empty key`)
    return Buffer.from(key)
  }
  throw new TypeError(`${who}: options.secret (DeviceHive's JWT_SECRET string) or options.key (Uint8Array) is required`)
}

// Longest token kept in the cache, in characters: DeviceHive's are a few hundred.
const MAX_CACHED_TOKEN = 8192

/** The shortest HMAC key accepted without `allowWeakKey`, in bytes: SHA-256's output size. */
export const MIN_KEY_BYTES = 32

/**
 * Throws a `RangeError` for a key shorter than {@link MIN_KEY_BYTES}, unless `allowWeakKey`.
 * `who` prefixes the message.
 */
export function checkKeyStrength (key: Uint8Array, allowWeakKey: boolean, who: string): void {
  if (key.length < MIN_KEY_BYTES && !allowWeakKey) {
    throw new RangeError(`${who}: the key must be at least ${MIN_KEY_BYTES} bytes, received ${key.length} (a secret string is base64-decoded: it needs at least 43 base64 characters); a short HMAC key can be brute-forced from one token. Use a longer secret, or set allowWeakKey: true to accept tokens from a DeviceHive whose JWT_SECRET is short`)
  }
}

/**
 * Verifies tokens and compiles their grants. Verified grants are cached by
 * the exact token string, so a session's repeated token costs a Map lookup,
 * while expiry is still checked against the clock on every call. Eviction is
 * least recently used, approximated CLOCK-style: a hit only marks the entry,
 * and a marked entry gets a second chance when it comes up for eviction.
 */
export class Authenticator {
  readonly #verify: (token: string) => unknown
  readonly #sign: (payload: { payload: TokenClaims }) => string
  // Map order is insertion order: the first entry is the next candidate for eviction.
  readonly #cache = new Map<string, { grant: Grant, used: boolean }>()
  readonly #cacheSize: number

  constructor (key: Buffer, cacheSize: number) {
    // Only HS256; `exp`/`nbf` are DeviceHive's `e` here, checked against the broker's clock.
    this.#verify = createVerifier({ key, algorithms: ['HS256'], cache: false, ignoreExpiration: true, ignoreNotBefore: true })
    this.#sign = createSigner({ key, algorithm: 'HS256', noTimestamp: true })
    this.#cacheSize = cacheSize
  }

  /**
   * The access token's grant, or throws the 401 `ProtocolError` DeviceHive answers with.
   * `allowExpired` skips the expiry check, for what a session may do once its token has run
   * out (unsubscribe).
   */
  grant (token: unknown, now: number, allowExpired = false): Grant {
    if (token === undefined || token === null || token === '') throw new ProtocolError(401, UNAUTHORIZED)
    if (typeof token !== 'string') throw new ProtocolError(401, INVALID_CREDENTIALS)
    const cached = this.#cache.get(token)
    let grant: Grant
    if (cached === undefined) {
      grant = this.#compile(token)
      // A token is at most a frame long: one so long that caching it would cost real memory
      // is verified every time instead.
      if (this.#cacheSize > 0 && token.length <= MAX_CACHED_TOKEN) {
        this.#evict()
        this.#cache.set(token, { grant, used: false })
      }
    } else {
      cached.used = true
      grant = cached.grant
    }
    if (grant.expiresAt < now && !allowExpired) throw new ProtocolError(401, TOKEN_EXPIRED)
    return grant
  }

  /**
   * The claims of a refresh token (`t: 0`), or throws the 401 to answer: `Invalid
   * credentials` for anything else, `Token expired` for one whose `e` has passed.
   */
  refreshClaims (token: string, now: number): TokenClaims {
    const claims = this.#claims(token)
    if (claims.t !== 0) throw new ProtocolError(401, INVALID_CREDENTIALS)
    if (claims.e < now) throw new ProtocolError(401, TOKEN_EXPIRED)
    return claims
  }

  /** Signs claims with the broker's key, in DeviceHive's claim order: u, a, n, dt, e, t. */
  sign (claims: TokenClaims): string {
    const { u, a, n, dt, e, t } = claims
    return this.#sign({ payload: { u, a, n, dt, e, t } })
  }

  // Makes room for one entry: the oldest unmarked entry goes; marked ones it passes over
  // lose their mark and move to the back. Ends within one pass plus one.
  #evict (): void {
    for (const [token, entry] of this.#cache) {
      if (this.#cache.size < this.#cacheSize) return
      this.#cache.delete(token)
      if (entry.used) {
        entry.used = false
        this.#cache.set(token, entry)
      }
    }
  }

  #compile (token: string): Grant {
    const claims = this.#claims(token)
    if (claims.t === 0) throw new ProtocolError(401, INVALID_CREDENTIALS)
    return compileGrant(claims)
  }

  // The verified claims of any token, or 401 Invalid credentials.
  #claims (token: string): TokenClaims {
    let decoded: unknown
    try {
      decoded = this.#verify(token)
    } catch {
      throw new ProtocolError(401, INVALID_CREDENTIALS)
    }
    const parsed = tokenClaimsSchema.safeParse((decoded as { payload?: unknown }).payload)
    if (!parsed.success) throw new ProtocolError(401, INVALID_CREDENTIALS)
    return parsed.data
  }
}

/** Compiles verified claims into a {@link Grant}. */
export function compileGrant (claims: TokenClaims): Grant {
  const networks = claims.n === undefined || claims.n === null ? null : ids(claims.n)
  const deviceTypes = claims.dt === undefined || claims.dt === null ? '*' : ids(claims.dt)
  return {
    userId: claims.u,
    actions: actionMask(claims.a),
    networks,
    deviceTypes,
    allDevices: networks === '*' && deviceTypes === '*',
    expiresAt: claims.e,
    claims: Object.freeze({ ...claims })
  }
}

/** The actions an `a` claim grants, as a bit mask of action ids. */
export function actionMask (a: readonly number[] | null | undefined): number {
  if (a === undefined || a === null) return 0
  let actions = a.length === 0 ? CLIENT_ACTIONS : 0
  for (const id of a) {
    if (id === Action.All) actions = ALL_ACTIONS
    else if (id > 0 && id <= 18) actions |= 1 << id
  }
  return actions
}

// `["*", ...]` is everything; otherwise the ids, as numbers (device ids are integers on the
// wire). A string that is not a canonical integer can never match, so it is dropped.
function ids (list: readonly string[]): '*' | Set<number> {
  if (list.includes('*')) return '*'
  const set = new Set<number>()
  for (const item of list) {
    const id = Number(item)
    if (Number.isSafeInteger(id) && String(id) === item) set.add(id)
  }
  return set
}

/** Whether the grant holds every action and reaches every device: it may mint any token. */
export function isAdmin (grant: Grant): boolean {
  return grant.actions === ALL_ACTIONS && grant.allDevices
}

// DeviceHive's action names, lower-cased, to their ids: `token/create` takes either.
const ACTION_NAMES: ReadonlyMap<string, number> = new Map([
  ['*', Action.All],
  ...Object.entries(Action).map(([name, id]): [string, number] => [name.toLowerCase(), id])
])

/** An action id, or DeviceHive's name of one (any case, `*` for all); undefined if neither. */
export function actionId (action: number | string): number | undefined {
  if (typeof action === 'number') return Number.isInteger(action) && action >= 0 && action <= 18 ? action : undefined
  return ACTION_NAMES.get(action.toLowerCase())
}

/** Whether the grant holds an action (an `Action` id). */
export function allows (grant: Grant, action: ActionId): boolean {
  return ((grant.actions >>> action) & 1) === 1
}

/**
 * Whether the grant may see a device (or a command) in this network and of
 * this device type. A null network or type is visible only to `"*"`.
 */
export function canSee (grant: Grant, networkId: number | null, deviceTypeId: number | null): boolean {
  const { networks, deviceTypes } = grant
  if (networks === null) return false
  if (networks !== '*' && (networkId === null || !networks.has(networkId))) return false
  if (deviceTypes !== '*' && (deviceTypeId === null || !deviceTypes.has(deviceTypeId))) return false
  return true
}

/** Claims for {@link signToken}: `e` defaults to an hour after `now`, `t` to 1 (access). */
export type SignTokenClaims = Omit<TokenClaims, 'e' | 't'> & { e?: number, t?: number }

/**
 * Options of {@link signToken}: the key (as for `createBroker`, and held to the same 32
 * bytes unless `allowWeakKey`), and `now` for the default `e`.
 */
export type SignTokenOptions = KeyOptions & {
  /** What the default expiry counts from, epoch ms. Default `Date.now()`. */
  now?: number
  /** Sign with a key shorter than 32 bytes (DeviceHive's demo secret `devicehive`, say). Default false. */
  allowWeakKey?: boolean
}

/**
 * Issues a DeviceHive-format HS256 access token, keyed exactly as a broker
 * with the same `secret` (or `key`) verifies it, and as a DeviceHive server
 * with that `JWT_SECRET` signs. For fixtures and admin tooling.
 *
 * @example
 * const token = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'] }, { secret: process.env.JWT_SECRET })
 *
 * Footgun: the default `e` counts from the real time; with a manual clock set
 * far from today, pass `now` or `e`.
 */
export function signToken (claims: SignTokenClaims, options: SignTokenOptions): string {
  const key = resolveKey(options, 'signToken')
  checkKeyStrength(key, options.allowWeakKey === true, 'signToken')
  const now = options.now ?? Date.now()
  const parsed = tokenClaimsSchema.safeParse({ t: 1, e: now + 3_600_000, ...claims })
  if (!parsed.success) {
    const issue = parsed.error.issues[0] as z.core.$ZodIssue
    throw new TypeError(`signToken: claim ${issue.path.join('.')}: ${issue.message}`)
  }
  // DeviceHive's claim order: u, a, n, dt, e, t.
  const { u, a, n, dt, e, t } = parsed.data
  return createSigner({ key, algorithm: 'HS256', noTimestamp: true })({ payload: { u, a, n, dt, e, t } })
}
