// token/refresh, token/create and server/info (spec §11), through broker.handle and sessions.
import { createVerifier } from 'fast-jwt'
import t from 'tap'
import { deriveKey } from '../../lib/auth.js'
import { body, DENIED, errorOf, EXPIRED, INVALID, MALFORMED, SECRET, setup, START } from '../fixtures/broker.js'

const decode = createVerifier({ key: deriveKey(SECRET), algorithms: ['HS256'], ignoreExpiration: true })
const claimsOf = (token: unknown): Record<string, unknown> => (decode(token as string) as { payload: Record<string, unknown> }).payload
const MINUTE = 60_000
const DAY = 24 * 60 * MINUTE

t.test('tokens: token/refresh trades a refresh token for an access token with the same rights', async (t) => {
  const { broker, token, clock, device } = setup(t)
  await device('lamp-1', 1, 1)
  const refreshToken = token({ u: 7, a: [5, 7], n: ['1'], dt: ['*'], t: 0, e: START + DAY })
  clock.advance(MINUTE)
  const reply = await broker.handle({ action: 'token/refresh', requestId: 1, refreshToken })
  t.same(Object.keys(reply), ['action', 'requestId', 'status', 'accessToken'])
  const accessToken = body(reply).accessToken as string
  t.strictSame(claimsOf(accessToken), { u: 7, a: [5, 7], n: ['1'], dt: ['*'], e: START + MINUTE + 30 * MINUTE, t: 1 },
    'same user and rights, 30 minutes from now, an access token')
  t.equal((await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on' } }, accessToken)).status, 'success', 'and it works')
  t.strictSame(errorOf(await broker.handle({ action: 'device/save', deviceId: 'x', device: { name: 'x' } }, accessToken)), DENIED, 'with no more rights')
})

t.test('tokens: token/refresh errors', async (t) => {
  const { broker, token, clock, admin } = setup(t, { accessTokenLifetime: 60 })
  const rows: Array<[string, Record<string, unknown>, { code: number, error: string }]> = [
    ['no refreshToken', {}, { code: 400, error: 'Refresh token is required' }],
    ['an empty one', { refreshToken: '' }, { code: 400, error: 'Refresh token is required' }],
    ['null', { refreshToken: null }, { code: 400, error: 'Refresh token is required' }],
    ['an object', { refreshToken: {} }, MALFORMED],
    ['an access token', { refreshToken: admin }, INVALID],
    ['a bad signature', { refreshToken: `${token({ t: 0 }).slice(0, -2)}xx` }, INVALID],
    ['garbage', { refreshToken: 'a.b.c' }, INVALID],
    ['an expired refresh token', { refreshToken: token({ t: 0, e: clock.now() - 1 }) }, EXPIRED]
  ]
  for (const [name, fields, expected] of rows) {
    const reply = await broker.handle({ action: 'token/refresh', requestId: name, ...fields })
    t.strictSame(errorOf(reply), expected, name)
    t.equal(reply.requestId, name)
  }
  const fresh = body(await broker.handle({ action: 'token/refresh', refreshToken: token({ t: 0 }) })).accessToken
  t.equal(claimsOf(fresh).e, START + 60_000, 'accessTokenLifetime sets the lifetime')
  const session = broker.session(() => {})
  t.equal((await session.handle({ action: 'token/refresh', refreshToken: token({ t: 0 }) })).status, 'success', 'a session that never authenticated may refresh')
})

t.test('tokens: token/create mints a pair; a token with every right may mint any', async (t) => {
  const { broker, admin, clock } = setup(t)
  clock.advance(MINUTE)
  const reply = await broker.handle({ action: 'token/create', requestId: 1, payload: { userId: 9, actions: ['GetDeviceCommand', 'createdevicecommand', 8], networkIds: ['1', 2], deviceTypeIds: ['*'] } }, admin)
  t.same(Object.keys(reply), ['action', 'requestId', 'status', 'accessToken', 'refreshToken'])
  const { accessToken, refreshToken } = body(reply)
  const now = START + MINUTE
  t.strictSame(claimsOf(accessToken), { u: 9, a: [5, 7, 8], n: ['1', '2'], dt: ['*'], e: now + 30 * MINUTE, t: 1 }, 'names and ids, any case; numbers as text')
  t.strictSame(claimsOf(refreshToken), { u: 9, a: [5, 7, 8], n: ['1', '2'], dt: ['*'], e: now + 180 * DAY, t: 0 }, 'a refresh token for 180 days')
  const refreshed = body(await broker.handle({ action: 'token/refresh', refreshToken })).accessToken
  t.equal(claimsOf(refreshed).u, 9, 'the refresh token refreshes')
  const timed = body(await broker.handle({ action: 'token/create', payload: { userId: 1, expiration: '2026-02-01T00:00:00Z', refreshExpiration: START + DAY } }, admin))
  t.equal(claimsOf(timed.accessToken).e, Date.parse('2026-02-01T00:00:00Z'), 'expiration')
  t.equal(claimsOf(timed.refreshToken).e, START + DAY, 'refreshExpiration')
  t.strictSame(claimsOf(timed.accessToken), { u: 1, a: [0], n: ['*'], dt: ['*'], e: Date.parse('2026-02-01T00:00:00Z'), t: 1 }, 'lists left out copy the caller\'s')
  const all = body(await broker.handle({ action: 'token/create', payload: { userId: 3, actions: ['*'] } }, admin))
  t.strictSame(claimsOf(all.accessToken).a, [0], '"*" is every action')
})

t.test('tokens: token/create grants no more than the caller has', async (t) => {
  const { broker, token, admin } = setup(t)
  const manager = token({ u: 5, a: [15, 5, 7], n: ['1', '2'], dt: ['3'] })
  const create = (payload: unknown, tok = manager): ReturnType<typeof broker.handle> => broker.handle({ action: 'token/create', payload }, tok)
  t.strictSame(claimsOf(body(await create({ userId: 5, actions: [5], networkIds: ['2'], deviceTypeIds: ['3'] })).accessToken),
    { u: 5, a: [5], n: ['2'], dt: ['3'], e: START + 30 * MINUTE, t: 1 }, 'a narrower token')
  t.strictSame(claimsOf(body(await create({})).accessToken), { u: 5, a: [15, 5, 7], n: ['1', '2'], dt: ['3'], e: START + 30 * MINUTE, t: 1 },
    'the same rights: userId defaults to the caller\'s')
  const rows: Array<[string, unknown, string?]> = [
    ['another user', { userId: 6 }],
    ['an action it lacks', { actions: [8] }],
    ['every action', { actions: ['*'] }],
    ['the client set, which holds actions it lacks', { actions: [] }],
    ['a network it lacks', { networkIds: ['3'] }],
    ['every network', { networkIds: ['*'] }],
    ['a network spelled otherwise', { networkIds: ['01'] }],
    ['a device type it lacks', { deviceTypeIds: ['4'] }],
    ['every device type', { deviceTypeIds: ['*'] }],
    ['no ManageToken', {}, token({ u: 5, a: [5], n: ['1'] })]
  ]
  for (const [name, payload, tok] of rows) t.strictSame(errorOf(await create(payload, tok ?? manager)), DENIED, name)
  const nowhere = token({ u: 5, a: [15, 5], n: undefined })
  t.strictSame(errorOf(await create({ networkIds: ['1'] }, nowhere)), DENIED, 'a token that reaches no network grants none')
  t.strictSame(claimsOf(body(await create({ networkIds: [] }, nowhere)).accessToken).n, [], 'but may mint an empty list')
  const typed = token({ u: 5, a: [15], n: ['1'], dt: ['3'] })
  t.strictSame(claimsOf(body(await create({ deviceTypeIds: null }, typed)).accessToken).dt, ['3'], 'null copies the caller\'s device types')
  t.equal((await create({ userId: 99, actions: [0], networkIds: ['*'] }, admin)).status, 'success', 'an admin may mint any')
})

t.test('tokens: token/create errors', async (t) => {
  const { broker, admin } = setup(t, { maxFilterItems: 3 })
  const rows: Array<[string, Record<string, unknown>, { code: number, error: string }]> = [
    ['no payload', {}, { code: 400, error: 'Validation failed with following violations: payload is required' }],
    ['payload a string', { payload: 'x' }, MALFORMED],
    ['actions not a list', { payload: { actions: 5 } }, MALFORMED],
    ['an unknown action name', { payload: { actions: ['Fly'] } }, { code: 400, error: 'Validation failed with following violations: actions: unknown action "Fly"' }],
    ['an unknown action id', { payload: { actions: [19] } }, { code: 400, error: 'Validation failed with following violations: actions: unknown action 19' }],
    ['a bad expiration', { payload: { expiration: 'soon' } }, MALFORMED],
    ['a userId not a number', { payload: { userId: 'me' } }, MALFORMED],
    ['too many networks', { payload: { networkIds: ['1', '2', '3', '4'] } }, { code: 400, error: 'Validation failed with following violations: networkIds must have at most 3 entries' }],
    ['too many actions', { payload: { actions: [1, 2, 3, 4] } }, { code: 400, error: 'Validation failed with following violations: actions must have at most 3 entries' }]
  ]
  for (const [name, fields, expected] of rows) {
    t.strictSame(errorOf(await broker.handle({ action: 'token/create', ...fields }, admin)), expected, name)
  }
  t.strictSame(errorOf(await broker.handle({ action: 'token/create', payload: {} })), { code: 401, error: 'Unauthorized' }, 'a token is needed')
  // @ts-expect-error `token` is no action here, so the literal fails to compile; the broker answers it all the same
  t.strictSame(errorOf(await broker.handle({ action: 'token', login: 'a', password: 'b' })), { code: 400, error: 'Unknown action requested: token' }, 'login and password are out of scope')
})

t.test('tokens: server/info answers the API version and the time, with no token', async (t) => {
  const { broker, clock } = setup(t)
  clock.advance(1234)
  const reply = await broker.handle({ action: 'server/info', requestId: 'i' })
  t.strictSame(reply, {
    action: 'server/info',
    requestId: 'i',
    status: 'success',
    info: { apiVersion: '3.5.0', serverTimestamp: '2026-01-01T00:00:01.234', restServerUrl: null, webSocketServerUrl: null }
  })
  t.same(Object.keys(reply.info as object), ['apiVersion', 'serverTimestamp', 'restServerUrl', 'webSocketServerUrl'])
})

t.test('tokens: a session whose authenticate was refused for an expired token answers Token expired after', async (t) => {
  const { broker, token, clock, admin, device } = setup(t)
  await device('lamp-1', 1, 1)
  const session = broker.session(() => {})
  const stale = token({ e: clock.now() - 1 })
  const subscribe = { action: 'command/subscribe', deviceId: 'lamp-1' }
  t.strictSame(errorOf(await session.handle(subscribe)), { code: 401, error: 'Unauthorized' }, 'before: never authenticated')
  t.strictSame(errorOf(await session.handle({ action: 'authenticate', token: stale })), EXPIRED, 'the authenticate is refused')
  t.strictSame(errorOf(await session.handle(subscribe)), EXPIRED, 'later requests say why, so a client knows to refresh')
  t.strictSame(errorOf(await session.handle({ action: 'authenticate', token: 'a.b.c' })), INVALID, 'a token refused for another reason')
  t.strictSame(errorOf(await session.handle(subscribe)), EXPIRED, 'leaves the session as it was')
  t.equal((await session.handle({ action: 'authenticate', token: admin })).status, 'success')
  t.equal((await session.handle(subscribe)).status, 'success', 'a fresh token works as ever')
  t.strictSame(errorOf(await session.handle({ action: 'authenticate', token: stale })), EXPIRED)
  t.equal((await session.handle(subscribe)).status, 'success', 'a session that holds a token keeps it')
  t.strictSame(errorOf(await broker.handle({ action: 'authenticate', token: stale })), EXPIRED, 'without a session: the same refusal, nothing kept')
})
