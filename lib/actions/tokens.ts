// authenticate, token/refresh, token/create and server/info (spec §11).
import { Action, actionId, actionMask, allows, isAdmin, type Grant, type TokenClaims } from '../auth.js'
import { ProtocolError } from '../errors.js'
import { ACCESS_DENIED, REFRESH_TOKEN_REQUIRED, TOKEN_EXPIRED, validationFailed } from '../messages.js'
import { authenticateSchema, malformed, parse, tokenPayload, tokenRefreshSchema } from '../schema.js'
import { formatTimestamp } from '../timestamp.js'
import { checkLengths } from './filters.js'
import type { Request, Result } from './request.js'

// The lists of a token/create payload, each held to maxFilterItems.
const TOKEN_LISTS = ['actions', 'networkIds', 'deviceTypeIds']

/** The DeviceHive API version `server/info` reports: the one whose behaviour the broker follows. */
export const API_VERSION = '3.5.0'

/**
 * `authenticate`: checks the token and, in a session, makes it the session's for later
 * requests. The session's subscriptions keep the rights they were made with. A token refused
 * only for having expired becomes the session's all the same if it had none, so that its later
 * requests answer `Token expired`, not `Unauthorized`: the official JavaScript client refreshes
 * its token on that string alone, and re-authenticates with an expired one after a reconnect.
 * A session that holds a token keeps it.
 */
export function authenticate (request: Request): Result {
  const { token } = parse(authenticateSchema, request.msg, malformed)
  try {
    request.core.grant(undefined, token)
  } catch (err) {
    const { session } = request
    if (session !== undefined && session.token === undefined && err instanceof ProtocolError && err.error === TOKEN_EXPIRED) session.token = token
    throw err
  }
  if (request.session !== undefined) request.session.token = token
  return undefined
}

/**
 * `token/refresh`: a refresh token (`t: 0`) signed with the broker's key buys an access
 * token with the same user and rights, for `accessTokenLifetime`. The refresh token is the
 * credential: no session token or permission is needed.
 */
export function refresh (request: Request): Result {
  const { core } = request
  const { refreshToken } = parse(tokenRefreshSchema, request.msg, malformed)
  if (refreshToken === undefined || refreshToken === null || refreshToken === '') throw new ProtocolError(400, REFRESH_TOKEN_REQUIRED)
  const now = core.date()
  const claims = core.auth.refreshClaims(refreshToken, now)
  return { accessToken: core.auth.sign({ ...claims, e: now + core.options.accessTokenLifetime * 1000, t: 1 }) }
}

/**
 * `token/create` (permission 15, ManageToken): a token pair for `payload`, no wider than the
 * caller's own token; lists left out copy the caller's. A token with every action that
 * reaches every device may mint any.
 */
export function create (request: Request): Result {
  const { core, msg } = request
  const grant = core.grant(request.session, request.token)
  if (!allows(grant, Action.ManageToken)) throw new ProtocolError(403, ACCESS_DENIED)
  if (msg.payload === undefined || msg.payload === null) throw new ProtocolError(400, validationFailed('payload is required'))
  if (typeof msg.payload === 'object' && !Array.isArray(msg.payload)) checkLengths(msg.payload as Record<string, unknown>, core.options, TOKEN_LISTS)
  const payload = parse(tokenPayload, msg.payload, malformed)
  const own = grant.claims
  const claims: Omit<TokenClaims, 'e' | 't'> = {
    u: payload.userId ?? own.u,
    a: payload.actions === undefined || payload.actions === null ? own.a : actionIds(payload.actions),
    n: payload.networkIds ?? own.n,
    dt: payload.deviceTypeIds ?? own.dt
  }
  if (!isAdmin(grant) && !within(grant, claims)) throw new ProtocolError(403, ACCESS_DENIED)
  const now = core.date()
  const { accessTokenLifetime, refreshTokenLifetime } = core.options
  return {
    accessToken: core.auth.sign({ ...claims, e: payload.expiration ?? now + accessTokenLifetime * 1000, t: 1 }),
    refreshToken: core.auth.sign({ ...claims, e: payload.refreshExpiration ?? now + refreshTokenLifetime * 1000, t: 0 })
  }
}

/** `server/info`: the API version and the time; no token needed. A gateway may fill in the URLs. */
export function serverInfo (request: Request): Result {
  return {
    info: {
      apiVersion: API_VERSION,
      serverTimestamp: formatTimestamp(request.core.date()),
      restServerUrl: null,
      webSocketServerUrl: null
    }
  }
}

function actionIds (actions: ReadonlyArray<number | string>): number[] {
  const ids: number[] = []
  for (const action of actions) {
    const id = actionId(action)
    if (id === undefined) throw new ProtocolError(400, validationFailed(`actions: unknown action ${JSON.stringify(action)}`))
    ids.push(id)
  }
  return ids
}

// Whether claims grant nothing the grant lacks: the same user, no other action, network or type.
function within (grant: Grant, claims: Omit<TokenClaims, 'e' | 't'>): boolean {
  if (claims.u !== grant.userId) return false
  const actions = actionMask(claims.a)
  if ((actions & ~grant.actions) !== 0) return false
  return covers(grant.networks, claims.n) && covers(grant.deviceTypes, claims.dt)
}

// Whether a granted set covers a claimed list. A claimed list is absent only when the
// caller's own is (absent lists copy the caller's), and then it grants what the caller has.
function covers (granted: Grant['networks'], claimed: readonly string[] | null | undefined): boolean {
  if (claimed === undefined || claimed === null || granted === '*') return true
  if (granted === null) return claimed.length === 0
  return claimed.every((id) => id !== '*' && granted.has(Number(id)) && String(Number(id)) === id)
}
