// Forged and broken tokens, end to end: each rides a valid command/insert to an existing device,
// through broker.handle (token argument) and through a session (authenticate, then insert), and
// each must be answered 401 with DeviceHive's exact error, with nothing reaching the device: no
// command stored, no subscriber or push called, no timer armed.
import { createHmac, generateKeyPairSync, sign } from 'node:crypto'
import t from 'tap'
import { deriveKey, signToken } from '../lib/auth.js'
import type { Push, Reply } from '../lib/schema.js'
import { DENIED, errorOf, EXPIRED, type Fixture, INVALID, MALFORMED, SECRET, setup, UNAUTHORIZED } from './fixtures/broker.js'
import { scanAll } from './fixtures/store-suite.js'

const KEY = deriveKey(SECRET)
const DEVICE = 'lamp-1'

function part (value: unknown): string {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url')
}

function hmac (algorithm: 'sha256' | 'sha384' | 'sha512', key: Buffer | string, input: string): string {
  return createHmac(algorithm, key).update(input).digest('base64url')
}

/** `header.payload.signature` built by hand; `signer` gets the signing input. */
function craft (header: unknown, payload: unknown, signer: (input: string) => string = (input) => hmac('sha256', KEY, input)): string {
  const input = `${part(header)}.${part(payload)}`
  return `${input}.${signer(input)}`
}

/** Replaces the character at `index` with a different base64url character. */
function flip (text: string, index: number): string {
  const i = index < 0 ? text.length + index : index
  const c = text[i] === 'A' ? 'Q' : 'A'
  return text.slice(0, i) + c + text.slice(i + 1)
}

interface World extends Fixture {
  inserted: number
  pushes: Push[]
}

async function world (t: Parameters<typeof setup>[0]): Promise<World> {
  const fixture = setup(t)
  await fixture.device(DEVICE, 1, 1)
  const w: World = { ...fixture, inserted: 0, pushes: [] }
  fixture.broker.subscribe({}, () => { w.inserted++ })
  const watcher = fixture.broker.session((push) => { w.pushes.push(push) })
  await watcher.handle({ action: 'command/subscribe', deviceId: DEVICE }, fixture.admin)
  return w
}

const insert = { action: 'command/insert', requestId: 'hostile', deviceId: DEVICE, command: { command: 'unlock', lifetime: 60 } }

t.test('auth-hostile: forged and broken tokens are refused with 401 and reach nothing', async (t) => {
  const w = await world(t)
  const now = w.clock.now()
  const claims = { u: 1, a: [0], n: ['*'], dt: ['*'], e: now + 3_600_000, t: 1 }
  const good = { payload: claims }
  const HS256 = { alg: 'HS256', typ: 'JWT' }
  const valid = craft(HS256, good)
  const [h, p, s] = valid.split('.') as [string, string, string]

  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const pem = rsa.publicKey.export({ type: 'spki', format: 'pem' }) as string
  const rs256 = (input: string): string => sign('sha256', Buffer.from(input), rsa.privateKey).toString('base64url')
  const es256 = (input: string): string => sign('sha256', Buffer.from(input), { key: ec.privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')

  // A read-only token, then its payload re-encoded with every right and the old signature kept.
  const readOnly = signToken({ u: 1, a: [3], n: ['*'], dt: ['*'] }, { secret: SECRET, now })
  const [rh, , rs] = readOnly.split('.') as [string, string, string]
  const tampered = `${rh}.${part({ payload: { u: 1, a: [0], n: ['*'], dt: ['*'], e: now + 3_600_000, t: 1 } })}.${rs}`

  // 2 MB, signed with another key: refused by signature, not by size.
  const large = craft(HS256, { payload: { ...claims, pad: 'x'.repeat(2 * 1024 * 1024) } }, (input) => hmac('sha256', 'other', input))

  const rows: Array<[string, unknown, { code: number, error: string }]> = [
    ['sanity: the hand-made token is valid', valid, { code: 0, error: 'success' }],
    ['alg none, unsigned', craft({ alg: 'none', typ: 'JWT' }, good, () => ''), INVALID],
    ['alg none, with a signature', craft({ alg: 'none', typ: 'JWT' }, good), INVALID],
    ['alg None, unsigned', craft({ alg: 'None' }, good, () => ''), INVALID],
    ['alg NONE, unsigned', craft({ alg: 'NONE' }, good, () => ''), INVALID],
    ['no alg at all', craft({ typ: 'JWT' }, good), INVALID],
    ['alg hs256 in lower case', craft({ alg: 'hs256', typ: 'JWT' }, good), INVALID],
    ['HS384 with the right key', craft({ alg: 'HS384', typ: 'JWT' }, good, (input) => hmac('sha384', KEY, input)), INVALID],
    ['HS512 with the right key', craft({ alg: 'HS512', typ: 'JWT' }, good, (input) => hmac('sha512', KEY, input)), INVALID],
    ['HS256 header, HS512 signature', craft(HS256, good, (input) => hmac('sha512', KEY, input)), INVALID],
    ['RS256 signed with a real RSA key', craft({ alg: 'RS256', typ: 'JWT' }, good, rs256), INVALID],
    ['ES256 signed with a real EC key', craft({ alg: 'ES256', typ: 'JWT' }, good, es256), INVALID],
    ['RS256 header, HMAC keyed with the RSA public key PEM', craft({ alg: 'RS256', typ: 'JWT' }, good, (input) => hmac('sha256', pem, input)), INVALID],
    ['HS256 header, HMAC keyed with the RSA public key PEM', craft(HS256, good, (input) => hmac('sha256', pem, input)), INVALID],
    ['HS256 keyed with the secret string itself, not its derived key', craft(HS256, good, (input) => hmac('sha256', SECRET, input)), INVALID],
    ['HS256 keyed with an empty key', craft(HS256, good, (input) => hmac('sha256', Buffer.alloc(0), input)), INVALID],
    ['stripped signature, trailing dot kept', `${h}.${p}.`, INVALID],
    ['stripped signature and dot', `${h}.${p}`, INVALID],
    ['altered signature (first character)', `${h}.${p}.${flip(s, 0)}`, INVALID],
    ['altered signature (a middle character)', `${h}.${p}.${flip(s, 20)}`, INVALID],
    ['signature of another token', `${h}.${p}.${readOnly.split('.')[2] as string}`, INVALID],
    ['tampered payload (a: [3] re-encoded as a: [0], old signature)', tampered, INVALID],
    ['tampered header (kid added, old signature)', `${part({ ...HS256, kid: 'x' })}.${p}.${s}`, INVALID],
    ['expired', craft(HS256, { payload: { ...claims, e: now - 1 } }), EXPIRED],
    ['expired long ago', craft(HS256, { payload: { ...claims, e: 0 } }), EXPIRED],
    ['refresh token (t: 0)', craft(HS256, { payload: { ...claims, t: 0 } }), INVALID],
    ['u absent', craft(HS256, { payload: { ...claims, u: undefined } }), INVALID],
    ['u null', craft(HS256, { payload: { ...claims, u: null } }), INVALID],
    ['e as a string', craft(HS256, { payload: { ...claims, e: String(now + 3_600_000) } }), INVALID],
    ['e null', craft(HS256, { payload: { ...claims, e: null } }), INVALID],
    ['n as numbers', craft(HS256, { payload: { ...claims, n: [1] } }), INVALID],
    ['n as a string', craft(HS256, { payload: { ...claims, n: '*' } }), INVALID],
    ['dt as a string', craft(HS256, { payload: { ...claims, dt: '*' } }), INVALID],
    ['a as strings', craft(HS256, { payload: { ...claims, a: ['0'] } }), INVALID],
    ['a as a number', craft(HS256, { payload: { ...claims, a: 0 } }), INVALID],
    ['a with a fraction', craft(HS256, { payload: { ...claims, a: [0.5] } }), INVALID],
    ['u as a string', craft(HS256, { payload: { ...claims, u: '1' } }), INVALID],
    ['t as a string', craft(HS256, { payload: { ...claims, t: '1' } }), INVALID],
    ['t as true', craft(HS256, { payload: { ...claims, t: true } }), INVALID],
    ['payload as a string', craft(HS256, { payload: JSON.stringify(claims) }), INVALID],
    ['payload as an array', craft(HS256, { payload: [claims] }), INVALID],
    ['payload null', craft(HS256, { payload: null }), INVALID],
    ['e missing', craft(HS256, { payload: { ...claims, e: undefined } }), INVALID],
    ['t missing', craft(HS256, { payload: { ...claims, t: undefined } }), INVALID],
    ['claims at the top level, not under payload', craft(HS256, claims), INVALID],
    ['claims under __proto__', craft(HS256, JSON.parse(`{"__proto__":${JSON.stringify({ payload: claims })}}`)), INVALID],
    ['payload JSON is an array', craft(HS256, [good]), INVALID],
    ['payload segment is not JSON', craft(HS256, 'not json'), INVALID],
    ['header segment is not JSON', `${part('not json')}.${p}.${hmac('sha256', KEY, `${part('not json')}.${p}`)}`, INVALID],
    ['2 MB token, signed with another key', large, INVALID],
    ['non-base64url garbage', '!!!.@@@.###', INVALID],
    ['three words', 'a.b.c', INVALID],
    ['only dots', '..', INVALID],
    ['one segment', 'abc', INVALID],
    ['extra dot at the end', `${valid}.`, INVALID],
    ['extra segment at the end', `${valid}.${s}`, INVALID],
    ['extra segment at the start', `${h}.${valid}`, INVALID],
    ['empty header segment', `.${p}.${s}`, INVALID],
    ['empty payload segment', `${h}..${s}`, INVALID],
    ['Bearer prefix', `Bearer ${valid}`, INVALID],
    ['leading space', ` ${valid}`, INVALID],
    ['trailing newline', `${valid}\n`, INVALID],
    ['null token', null, UNAUTHORIZED],
    ['empty token', '', UNAUTHORIZED],
    ['a number', 42, INVALID],
    ['an object', { token: valid }, INVALID],
    ['an array', [valid], INVALID],
    ['true', true, INVALID],
    ['a String object', Object(valid) as unknown, INVALID]
  ]

  for (const [name, token, expected] of rows) {
    const before = w.store.lastCommandId()
    const timers = w.clock.pending
    const reply = await w.broker.handle({ ...insert, requestId: name }, token)
    if (expected.code === 0) {
      t.equal(reply.status, 'success', name)
      continue
    }
    t.strictSame(errorOf(reply), expected, `${name}: ${expected.code} ${expected.error}`)
    t.same(Object.keys(reply), ['action', 'requestId', 'code', 'status', 'error'], `${name}: an error envelope`)
    // A second time: a refused token is never cached as if it had passed.
    t.strictSame(errorOf(await w.broker.handle({ ...insert, requestId: name }, token)), expected, `${name}: again`)
    // Through a session: authenticate refuses it the same way (a non-string token field is a
    // wrong JSON type: 400), and the session stays unauthenticated; one refused for having
    // expired says so to the session's later requests (README, Protocol notes).
    const session = w.broker.session(() => {})
    const auth = await session.handle({ action: 'authenticate', requestId: 1, token })
    // authenticate reads its token as Gson does: a number is its text, which is no token either.
    const authExpected = token === null || token === '' ? UNAUTHORIZED : typeof token === 'string' ? expected : typeof token === 'number' ? INVALID : MALFORMED
    t.strictSame(errorOf(auth), authExpected, `${name}: authenticate`)
    t.strictSame(errorOf(await session.handle(insert)), authExpected === EXPIRED ? EXPIRED : UNAUTHORIZED, `${name}: the session is not authenticated`)
    session.close()
    t.equal(w.store.lastCommandId(), before, `${name}: nothing stored`)
    t.equal(w.clock.pending, timers, `${name}: no timer`)
  }
  const stored = scanAll(w.store, { deviceId: DEVICE, order: 'ASC', examine: 1000, take: 1000 }, w.clock.now())
  t.equal(stored.length, 1, 'only the sanity insert reached the device')
  t.equal(w.inserted, 1, 'the subscriber heard only the sanity insert')
  t.equal(w.pushes.length, 1, 'the watching session got only the sanity insert')
  t.comment(`${rows.length - 1} hostile tokens refused`)
})

t.test('auth-hostile: a 2 MB token inside a frame is refused by the frame limit, before parsing', async (t) => {
  const w = await world(t)
  const token = 'x'.repeat(2 * 1024 * 1024)
  const frames = [
    JSON.stringify({ action: 'authenticate', requestId: 1, token }),
    JSON.stringify({ ...insert, token })
  ]
  // Counts JSON.parse calls while the broker handles the frame: a refusal by size parses nothing.
  const parse = JSON.parse
  let parsed = 0
  JSON.parse = function (this: unknown, ...args: Parameters<typeof JSON.parse>) {
    parsed++
    return parse.apply(this, args)
  } as typeof JSON.parse
  t.teardown(() => { JSON.parse = parse })
  const replies: Reply[] = []
  try {
    for (const frame of frames) {
      replies.push(await w.broker.handle(frame, w.admin))
      const session = w.broker.session(() => {})
      replies.push(await session.handle(frame))
      session.close()
    }
  } finally {
    JSON.parse = parse
  }
  for (const reply of replies) {
    t.strictSame(reply, { code: 400, status: 'error', error: 'Validation failed with following violations: message must be at most 1048576 bytes' })
  }
  t.equal(parsed, 0, 'no frame was parsed')
  t.equal(w.store.lastCommandId(), 0, 'nothing stored')
  t.equal(w.inserted, 0)
  t.equal(w.pushes.length, 0)

  // Passed as the token argument, the same 2 MB is no JWT at all: 401.
  t.strictSame(errorOf(await w.broker.handle(insert, token)), INVALID, '2 MB of x as the token argument')
  // And in a frame under the limit, the token field as a wrong type is a 400.
  t.strictSame(errorOf(await w.broker.handle(JSON.stringify({ action: 'authenticate', token: [token.slice(0, 1000)] }))), MALFORMED)
})

t.test('auth-hostile: valid tokens without the right to this device are refused with 403', async (t) => {
  const w = await world(t)
  await w.device('lamp-2', 2, 2)
  const rows: Array<[string, string]> = [
    ['another network', w.token({ n: ['2'], dt: ['*'] })],
    ['another device type', w.token({ n: ['1'], dt: ['2'] })],
    ['another network, named as a number string with a plus', w.token({ n: ['+1'], dt: ['*'] })],
    ['another network, named with a leading zero', w.token({ n: ['01'], dt: ['*'] })],
    ['no networks at all (n absent)', w.token({ n: undefined })],
    ['no action 7 (read and update only)', w.token({ a: [3, 5, 8] })],
    ['action None only', w.token({ a: [1] })],
    ['no actions (a absent)', w.token({ a: undefined })],
    ['action ids out of range', w.token({ a: [19, 32, 39, -1, 2 ** 31] })]
  ]
  for (const [name, token] of rows) {
    const before = w.store.lastCommandId()
    const reply = await w.broker.handle({ ...insert, requestId: name }, token)
    t.strictSame(errorOf(reply), DENIED, `${name}: 403`)
    const session = w.broker.session(() => {})
    t.equal((await session.handle({ action: 'authenticate', token })).status, 'success', `${name}: the token itself is valid`)
    t.strictSame(errorOf(await session.handle(insert)), DENIED, `${name}: 403 through a session`)
    session.close()
    t.equal(w.store.lastCommandId(), before, `${name}: nothing stored`)
  }
  t.equal(w.inserted, 0, 'no subscriber called')
  t.equal(w.pushes.length, 0, 'no push')
  t.comment(`${rows.length} valid tokens without the right refused with 403`)
  // The right network and type, for contrast.
  t.equal((await w.broker.handle(insert, w.token({ n: ['1'], dt: ['1'], a: [7] }))).status, 'success')
})
