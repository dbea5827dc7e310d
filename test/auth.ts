import { createHmac, generateKeyPairSync, sign } from 'node:crypto'
import { createVerifier } from 'fast-jwt'
import t, { type Test } from 'tap'
import {
  Action,
  Authenticator,
  allows,
  canSee,
  compileGrant,
  deriveKey,
  resolveKey,
  signToken,
  type ActionId,
  type Grant,
  type TokenClaims
} from '../lib/auth.js'
import { ProtocolError } from '../lib/errors.js'
import { expectError, thrown } from './fixtures/throws.js'

// DeviceHive's JWT_SECRET=devicehive, base64-decoded leniently.
const DH_KEY = Buffer.from([0x75, 0xeb, 0xe2, 0x71, 0xe8, 0x62])
const NOW = Date.UTC(2026, 10, 25, 9, 39, 49, 123)
const LATER = NOW + 3_600_000
const ALL_IDS = Array.from({ length: 19 }, (_, id) => id as ActionId)
const CLIENT_SET = new Set([2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 15, 16, 17])



function expectProtocolError (t: Test, fn: () => unknown, code: number, error: string, what: string): void {
  const caught = thrown(fn)
  t.ok(caught instanceof ProtocolError, `${what}: throws a ProtocolError`)
  const { code: actualCode, error: actualError } = (caught ?? {}) as Partial<ProtocolError>
  t.strictSame({ code: actualCode, error: actualError }, { code, error }, `${what}: ${code} ${error}`)
}

function part (value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url')
}

function hmac (algorithm: 'sha256' | 'sha384' | 'sha512', key: Buffer, input: string): string {
  return createHmac(algorithm, key).update(input).digest('base64url')
}

/** A JWT built by hand: `header.payload.signature`, HMAC over the 6-byte key unless told otherwise. */
function craft (header: unknown, payload: unknown, algorithm: 'sha256' | 'sha384' | 'sha512' = 'sha256', key: Buffer = DH_KEY): string {
  const input = `${part(header)}.${part(payload)}`
  return `${input}.${hmac(algorithm, key, input)}`
}

function claims (extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { u: 1, a: [0], n: ['*'], dt: ['*'], e: LATER, t: 1, ...extra }
}

function decodePart (token: string, index: number): string {
  return Buffer.from(token.split('.')[index] ?? '', 'base64url').toString('utf8')
}

// What a grant reaches and allows, without the claims it was compiled from.
function reach (grant: Grant): Omit<Grant, 'claims'> {
  const { claims: _claims, ...rest } = grant
  return rest
}

function grantOf (partial: Partial<Omit<TokenClaims, 'e' | 't'>>): Grant {
  return compileGrant({ u: 1, ...partial, e: LATER, t: 1 })
}

t.test('auth: deriveKey turns devicehive into the 6 bytes DeviceHive signs with', async (t) => {
  const key = deriveKey('devicehive')
  t.ok(Buffer.isBuffer(key), 'returns a Buffer')
  t.strictSame([...key], [0x75, 0xeb, 0xe2, 0x71, 0xe8, 0x62])
})

t.test('auth: deriveKey decodes complete base64 groups, padding included', async (t) => {
  t.equal(deriveKey('YWJj').toString('latin1'), 'abc')
  t.equal(deriveKey('YWI=').toString('latin1'), 'ab')
  t.equal(deriveKey('YQ==').toString('latin1'), 'a')
  t.equal(deriveKey('aGVsbG8gd29ybGQ=').toString('latin1'), 'hello world')
  t.strictSame([...deriveKey('+/+/')], [0xfb, 0xff, 0xbf], '+ and / are base64 characters')
})

t.test('auth: deriveKey drops characters outside the base64 alphabet', async (t) => {
  t.strictSame(deriveKey('de-vi.ce hi!ve'), DH_KEY, 'punctuation and spaces')
  t.strictSame(deriveKey('device_hive'), DH_KEY, 'base64url _ is not in the alphabet')
  t.strictSame(deriveKey('dev-ice-hive'), DH_KEY, 'base64url - is not in the alphabet')
  t.strictSame(deriveKey('\tdevicehive\n'), DH_KEY, 'whitespace')
  t.strictSame(deriveKey('dévicehive'), deriveKey('dvicehive'), 'non-ASCII letters')
  t.strictSame(deriveKey('Y€W€J€j'), Buffer.from('abc'), 'multi-byte characters')
})

t.test('auth: deriveKey drops an incomplete trailing group of four', async (t) => {
  t.strictSame(deriveKey('devicehi'), DH_KEY, 'exactly two groups')
  t.strictSame(deriveKey('devicehiv'), DH_KEY, 'one character over')
  t.strictSame(deriveKey('devicehive'), DH_KEY, 'two characters over')
  t.strictSame(deriveKey('devicehiveX'), DH_KEY, 'three characters over')
  t.equal(deriveKey('devicehiveXY').length, 9, 'a third complete group adds three bytes')
  t.strictSame(deriveKey('d.e.v.i.c.e.h.i.v.e'), DH_KEY, 'the group count is taken after dropping')
})

t.test('auth: deriveKey may return an empty key', async (t) => {
  for (const secret of ['', 'abc', '!!!!', '-_-_', '....----', '€€€€']) {
    const key = deriveKey(secret)
    t.ok(Buffer.isBuffer(key), `${JSON.stringify(secret)} gives a Buffer`)
    t.equal(key.length, 0, `${JSON.stringify(secret)} gives no bytes`)
  }
})

t.test('auth: resolveKey derives a secret', async (t) => {
  t.strictSame(resolveKey({ secret: 'devicehive' }, 'who'), DH_KEY)
  t.strictSame(resolveKey({ secret: 'devicehive', key: undefined }, 'who'), DH_KEY, 'an undefined key is absent')
})

t.test('auth: resolveKey copies a raw key', async (t) => {
  const raw = new Uint8Array([1, 2, 3])
  const key = resolveKey({ key: raw }, 'who')
  t.ok(Buffer.isBuffer(key), 'returns a Buffer')
  t.strictSame([...key], [1, 2, 3])
  raw[0] = 9
  t.equal(key[0], 1, 'later changes to the caller\'s bytes do not reach the key')
  t.strictSame(resolveKey({ key: DH_KEY, secret: undefined }, 'who'), DH_KEY, 'a Buffer is a Uint8Array')
})

t.test('auth: resolveKey refuses both secret and key', async (t) => {
  expectError(t, () => resolveKey({ secret: 'devicehive', key: DH_KEY }, 'who'), TypeError, 'who: pass options.secret or options.key, not both')
})

t.test('auth: resolveKey refuses neither secret nor key', async (t) => {
  expectError(t, () => resolveKey({}, 'who'), TypeError, /^who: options\.secret .*or options\.key .*is required$/)
  expectError(t, () => resolveKey({ secret: undefined, key: undefined }, 'who'), TypeError, /is required/)
})

t.test('auth: resolveKey refuses a secret that is not a string', async (t) => {
  expectError(t, () => resolveKey({ secret: 5 }, 'who'), TypeError, /^who: options\.secret must be a string.*received number$/)
  expectError(t, () => resolveKey({ secret: null }, 'who'), TypeError, /^who: options\.secret must be a string.*received object$/)
  expectError(t, () => resolveKey({ secret: DH_KEY }, 'who'), TypeError, /^who: options\.secret must be a string/)
})

t.test('auth: resolveKey refuses a key that is not a Uint8Array', async (t) => {
  expectError(t, () => resolveKey({ key: 'devicehive' }, 'who'), TypeError, /^who: options\.key must be a Uint8Array, received string$/)
  expectError(t, () => resolveKey({ key: [1, 2, 3] }, 'who'), TypeError, /^who: options\.key must be a Uint8Array, received object$/)
  expectError(t, () => resolveKey({ key: new ArrayBuffer(4) }, 'who'), TypeError, /options\.key/)
})

t.test('auth: resolveKey refuses a secret that decodes to nothing', async (t) => {
  expectError(t, () => resolveKey({ secret: '' }, 'who'), RangeError, /^who: options\.secret must base64-decode to at least one byte.*with 0 characters/)
  expectError(t, () => resolveKey({ secret: 'abc' }, 'who'), RangeError, /^who: options\.secret .*with 3 characters that decodes to none$/)
  expectError(t, () => resolveKey({ secret: '!!!!!!' }, 'who'), RangeError, /options\.secret/)
})

t.test('auth: resolveKey refuses an empty key', async (t) => {
  expectError(t, () => resolveKey({ key: new Uint8Array(0) }, 'who'), RangeError, 'who: options.key must hold at least one byte, received an empty key')
})

t.test('auth: signToken writes an HS256 JWT with the claims under payload, in DeviceHive\'s order', async (t) => {
  const token = signToken({ dt: ['*'], n: ['*'], a: [0], u: 1, t: 1, e: LATER }, { secret: 'devicehive', allowWeakKey: true })
  const parts = token.split('.')
  t.equal(parts.length, 3, 'three parts')
  const header = JSON.parse(decodePart(token, 0)) as Record<string, unknown>
  t.equal(header.alg, 'HS256', 'header alg')
  const payloadText = decodePart(token, 1)
  t.equal(payloadText, `{"payload":{"u":1,"a":[0],"n":["*"],"dt":["*"],"e":${LATER},"t":1}}`, 'exact payload, no iat')
  const payload = JSON.parse(payloadText) as { payload: Record<string, unknown> }
  t.strictSame(Object.keys(payload), ['payload'])
  t.strictSame(Object.keys(payload.payload), ['u', 'a', 'n', 'dt', 'e', 't'])
})

t.test('auth: signToken defaults t to 1 and e to an hour after now', async (t) => {
  const token = signToken({ u: 7, a: [5], n: ['1'], dt: ['2'] }, { secret: 'devicehive', allowWeakKey: true, now: NOW })
  const { payload } = JSON.parse(decodePart(token, 1)) as { payload: Record<string, unknown> }
  t.strictSame(payload, { u: 7, a: [5], n: ['1'], dt: ['2'], e: NOW + 3_600_000, t: 1 })
  t.strictSame(Object.keys(payload), ['u', 'a', 'n', 'dt', 'e', 't'])
})

t.test('auth: signToken counts the default expiry from the real time without now', async (t) => {
  const before = Date.now()
  const token = signToken({ u: 1 }, { secret: 'devicehive', allowWeakKey: true })
  const after = Date.now()
  const { payload } = JSON.parse(decodePart(token, 1)) as { payload: { e: number, t: number } }
  t.ok(payload.e >= before + 3_600_000 && payload.e <= after + 3_600_000, 'e is now + 1h')
  t.equal(payload.t, 1)
})

t.test('auth: signToken keeps explicit e and t, and leaves absent claims out', async (t) => {
  const token = signToken({ u: 3, e: 123, t: 0 }, { secret: 'devicehive', allowWeakKey: true, now: NOW })
  t.equal(decodePart(token, 1), '{"payload":{"u":3,"e":123,"t":0}}')
  const nullLists = signToken({ u: 3, a: null, n: null, e: 5 }, { secret: 'devicehive', allowWeakKey: true })
  t.equal(decodePart(nullLists, 1), '{"payload":{"u":3,"a":null,"n":null,"e":5,"t":1}}', 'null lists are kept, as DeviceHive writes them')
})

t.test('auth: signToken refuses claims of the wrong type', async (t) => {
  const options = { secret: 'devicehive', allowWeakKey: true, now: NOW }
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ['n of numbers', { n: [1] }, /^signToken: claim n\.0: /],
    ['a of strings', { a: ['x'] }, /^signToken: claim a\.0: /],
    ['a of fractions', { a: [1.5] }, /^signToken: claim a\.0: /],
    ['dt as a string', { dt: '*' }, /^signToken: claim dt: /],
    ['e as a string', { e: 'x' }, /^signToken: claim e: /],
    ['u as a string', { u: 'x' }, /^signToken: claim u: /],
    ['u absent', { u: undefined }, /^signToken: claim u: /],
    ['u null', { u: null }, /^signToken: claim u: /],
    ['t as a string', { t: '1' }, /^signToken: claim t: /]
  ]
  for (const [what, bad, message] of cases) {
    const error = thrown(() => signToken({ u: 1, ...bad } as never, options))
    t.ok(error instanceof TypeError, `${what}: TypeError`)
    t.match((error as Error | undefined)?.message, message, `${what}: names the claim`)
  }
})

t.test('auth: signToken refuses bad key options', async (t) => {
  expectError(t, () => signToken({ u: 1 }, { secret: 'devicehive', key: DH_KEY } as never), TypeError, /^signToken: pass options\.secret or options\.key, not both$/)
  expectError(t, () => signToken({ u: 1 }, {} as never), TypeError, /^signToken: .*is required$/)
  expectError(t, () => signToken({ u: 1 }, { secret: '!!' }), RangeError, /^signToken: options\.secret/)
})

t.test('auth: signToken with secret devicehive verifies with the 6 derived bytes', async (t) => {
  const verify = createVerifier({ key: Buffer.from([0x75, 0xeb, 0xe2, 0x71, 0xe8, 0x62]), algorithms: ['HS256'] })
  const fromSecret = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'] }, { secret: 'devicehive', allowWeakKey: true, now: NOW })
  t.strictSame(verify(fromSecret), { payload: { u: 1, a: [0], n: ['*'], dt: ['*'], e: LATER, t: 1 } })
  const fromKey = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'] }, { key: DH_KEY, allowWeakKey: true, now: NOW })
  t.strictSame(verify(fromKey), verify(fromSecret), 'a raw key of the same bytes verifies too')
  t.equal(fromKey, fromSecret, 'the same bytes give the same token')
  const wrongKey = createVerifier({ key: Buffer.from('devicehive'), algorithms: ['HS256'] })
  t.throws(() => wrongKey(fromSecret), 'the secret string itself is not the key')
})

t.test('auth: Authenticator accepts a token DeviceHive signed', async (t) => {
  // As DeviceHive 3.x writes it: header without typ, claims under payload, HS256 over the decoded secret.
  const token = craft({ alg: 'HS256' }, { payload: { u: 1, a: [0], n: ['*'], dt: ['*'], e: LATER, t: 1 } })
  const grant = new Authenticator(deriveKey('devicehive'), 10).grant(token, NOW)
  t.equal(grant.userId, 1)
  t.equal(grant.expiresAt, LATER)
  t.equal(grant.allDevices, true)
  t.ok(ALL_IDS.every((id) => allows(grant, id)), 'every action')
  const viaResolve = new Authenticator(resolveKey({ secret: 'devicehive' }, 'test'), 10).grant(token, NOW)
  t.strictSame(viaResolve, grant, 'same through resolveKey')
})

t.test('auth: Authenticator accepts what signToken signs', async (t) => {
  const token = signToken({ u: 3, a: [7], n: ['4'], dt: ['5'] }, { secret: 'devicehive', allowWeakKey: true, now: NOW })
  const grant = new Authenticator(DH_KEY, 10).grant(token, NOW)
  t.strictSame(grant, compileGrant({ u: 3, a: [7], n: ['4'], dt: ['5'], e: LATER, t: 1 }))
})

t.test('auth: Authenticator answers Unauthorized without a token', async (t) => {
  const auth = new Authenticator(DH_KEY, 10)
  for (const token of [undefined, null, '']) {
    expectProtocolError(t, () => auth.grant(token, NOW), 401, 'Unauthorized', JSON.stringify(token) ?? 'undefined')
  }
})

t.test('auth: Authenticator refuses a token that is not a string', async (t) => {
  const auth = new Authenticator(DH_KEY, 10)
  for (const token of [0, 5, false, true, {}, [], ['a.b.c'], Buffer.from('x')]) {
    expectProtocolError(t, () => auth.grant(token, NOW), 401, 'Invalid credentials', String(token))
  }
})

t.test('auth: Authenticator refuses garbage', async (t) => {
  const auth = new Authenticator(DH_KEY, 10)
  for (const token of ['garbage', 'a.b.c', '..', 'a.b', ' ', 'Bearer x.y.z', `${part({ alg: 'HS256' })}.!!!.sig`]) {
    expectProtocolError(t, () => auth.grant(token, NOW), 401, 'Invalid credentials', token)
  }
})

t.test('auth: refuses alg none', async (t) => {
  const auth = new Authenticator(DH_KEY, 10)
  const unsigned = `${part({ alg: 'none' })}.${part({ payload: claims() })}.`
  expectProtocolError(t, () => auth.grant(unsigned, NOW), 401, 'Invalid credentials', 'alg none, empty signature')
  const noneWithTyp = `${part({ alg: 'none', typ: 'JWT' })}.${part({ payload: claims() })}.`
  expectProtocolError(t, () => auth.grant(noneWithTyp, NOW), 401, 'Invalid credentials', 'alg none with typ')
  const noneSigned = craft({ alg: 'none' }, { payload: claims() })
  expectProtocolError(t, () => auth.grant(noneSigned, NOW), 401, 'Invalid credentials', 'alg none with an HMAC signature')
})

t.test('auth: refuses HS384 and HS512 signed with the right key', async (t) => {
  const auth = new Authenticator(DH_KEY, 10)
  const hs384 = craft({ alg: 'HS384' }, { payload: claims() }, 'sha384')
  expectProtocolError(t, () => auth.grant(hs384, NOW), 401, 'Invalid credentials', 'HS384')
  const hs512 = craft({ alg: 'HS512' }, { payload: claims() }, 'sha512')
  expectProtocolError(t, () => auth.grant(hs512, NOW), 401, 'Invalid credentials', 'HS512')
  // The same claims under HS256 do pass, so only the algorithm was wrong.
  t.equal(auth.grant(craft({ alg: 'HS256' }, { payload: claims() }), NOW).userId, 1, 'HS256 control')
})

t.test('auth: refuses RS256', async (t) => {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const input = `${part({ alg: 'RS256', typ: 'JWT' })}.${part({ payload: claims() })}`
  const token = `${input}.${sign('sha256', Buffer.from(input), privateKey).toString('base64url')}`
  expectProtocolError(t, () => new Authenticator(DH_KEY, 10).grant(token, NOW), 401, 'Invalid credentials', 'RS256')
})

t.test('auth: refuses a bad or stripped signature', async (t) => {
  const auth = new Authenticator(DH_KEY, 10)
  const good = craft({ alg: 'HS256' }, { payload: claims() })
  const [header, payload, signature] = good.split('.') as [string, string, string]
  const flipped = signature.slice(0, 5) + (signature[5] === 'A' ? 'B' : 'A') + signature.slice(6)
  expectProtocolError(t, () => auth.grant(`${header}.${payload}.${flipped}`, NOW), 401, 'Invalid credentials', 'one character changed')
  expectProtocolError(t, () => auth.grant(`${header}.${payload}.`, NOW), 401, 'Invalid credentials', 'empty signature')
  expectProtocolError(t, () => auth.grant(`${header}.${payload}`, NOW), 401, 'Invalid credentials', 'no signature part')
  expectProtocolError(t, () => auth.grant(`${header}.${payload}.${signature.slice(0, 20)}`, NOW), 401, 'Invalid credentials', 'truncated signature')
  const otherKey = craft({ alg: 'HS256' }, { payload: claims() }, 'sha256', Buffer.from('devicehive'))
  expectProtocolError(t, () => auth.grant(otherKey, NOW), 401, 'Invalid credentials', 'signed with the secret string, not the derived key')
  t.equal(auth.grant(good, NOW).userId, 1, 'the untouched token passes')
})

t.test('auth: refuses a tampered payload', async (t) => {
  const auth = new Authenticator(DH_KEY, 10)
  const [header, , signature] = craft({ alg: 'HS256' }, { payload: claims({ a: [5] }) }).split('.') as [string, string, string]
  const tampered = `${header}.${part({ payload: claims({ a: [0] }) })}.${signature}`
  expectProtocolError(t, () => auth.grant(tampered, NOW), 401, 'Invalid credentials', 'widened actions')
})

t.test('auth: refuses a refresh token', async (t) => {
  const auth = new Authenticator(DH_KEY, 10)
  expectProtocolError(t, () => auth.grant(craft({ alg: 'HS256' }, { payload: claims({ t: 0 }) }), NOW), 401, 'Invalid credentials', 'hand-made t: 0')
  const signed = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'], t: 0 }, { secret: 'devicehive', allowWeakKey: true, now: NOW })
  expectProtocolError(t, () => auth.grant(signed, NOW), 401, 'Invalid credentials', 'signToken t: 0')
})

t.test('auth: refuses a token missing e or t', async (t) => {
  const auth = new Authenticator(DH_KEY, 10)
  const { e: _e, ...noExpiry } = claims()
  const { t: _t, ...noType } = claims()
  expectProtocolError(t, () => auth.grant(craft({ alg: 'HS256' }, { payload: noExpiry }), NOW), 401, 'Invalid credentials', 'no e')
  expectProtocolError(t, () => auth.grant(craft({ alg: 'HS256' }, { payload: noType }), NOW), 401, 'Invalid credentials', 'no t')
})

t.test('auth: refuses claims of the wrong type', async (t) => {
  const auth = new Authenticator(DH_KEY, 10)
  const cases: Array<[string, Record<string, unknown>]> = [
    ['n of numbers', { n: [1] }],
    ['n as a string', { n: '*' }],
    ['dt of numbers', { dt: [2] }],
    ['a of strings', { a: ['x'] }],
    ['a of fractions', { a: [0.5] }],
    ['e as a string', { e: 'x' }],
    ['e as a numeric string', { e: String(LATER) }],
    ['u as a string', { u: 'x' }],
    ['t as a string', { t: '1' }],
    ['u absent', { u: undefined }],
    ['u null', { u: null }],
    ['t as true', { t: true }]
  ]
  for (const [what, bad] of cases) {
    expectProtocolError(t, () => auth.grant(craft({ alg: 'HS256' }, { payload: claims(bad) }), NOW), 401, 'Invalid credentials', what)
  }
})

t.test('auth: refuses claims that are not under payload', async (t) => {
  const auth = new Authenticator(DH_KEY, 10)
  expectProtocolError(t, () => auth.grant(craft({ alg: 'HS256' }, claims()), NOW), 401, 'Invalid credentials', 'claims at the top level')
  expectProtocolError(t, () => auth.grant(craft({ alg: 'HS256' }, { payload: null }), NOW), 401, 'Invalid credentials', 'payload null')
  expectProtocolError(t, () => auth.grant(craft({ alg: 'HS256' }, { payload: JSON.stringify(claims()) }), NOW), 401, 'Invalid credentials', 'payload as a JSON string')
  expectProtocolError(t, () => auth.grant(craft({ alg: 'HS256' }, [claims()]), NOW), 401, 'Invalid credentials', 'JWT payload an array')
})

t.test('auth: answers Token expired once e is before now, not at now', async (t) => {
  const auth = new Authenticator(DH_KEY, 0)
  const token = craft({ alg: 'HS256' }, { payload: claims({ e: NOW }) })
  t.equal(auth.grant(token, NOW).expiresAt, NOW, 'e === now is still valid')
  t.equal(auth.grant(token, NOW - 1_000).expiresAt, NOW, 'valid before e')
  expectProtocolError(t, () => auth.grant(token, NOW + 1), 401, 'Token expired', 'one ms after e')
  expectProtocolError(t, () => auth.grant(token, NOW + 86_400_000), 401, 'Token expired', 'a day after e')
})

t.test('auth: checks a bad signature before expiry', async (t) => {
  const auth = new Authenticator(DH_KEY, 10)
  const forged = craft({ alg: 'HS256' }, { payload: claims({ e: NOW - 1 }) }, 'sha256', Buffer.from('other'))
  expectProtocolError(t, () => auth.grant(forged, NOW), 401, 'Invalid credentials', 'expired and forged')
})

t.test('auth: a repeated token returns the same compiled grant', async (t) => {
  const auth = new Authenticator(DH_KEY, 10)
  const token = craft({ alg: 'HS256' }, { payload: claims() })
  const first = auth.grant(token, NOW)
  t.equal(auth.grant(token, NOW), first, 'same object')
  t.equal(auth.grant(token, NOW + 1), first, 'same object at a later time')
})

t.test('auth: the grant cache drops the least recently used token', async (t) => {
  const auth = new Authenticator(DH_KEY, 2)
  const [a, b, c] = [1, 2, 3].map((u) => craft({ alg: 'HS256' }, { payload: claims({ u }) })) as [string, string, string]
  const grantA = auth.grant(a, NOW)
  const grantB = auth.grant(b, NOW)
  t.equal(auth.grant(a, NOW), grantA, 'a is cached and now the most recently used')
  const grantC = auth.grant(c, NOW)
  t.equal(auth.grant(a, NOW), grantA, 'a survived the insertion of c')
  t.equal(auth.grant(c, NOW), grantC, 'c is cached')
  const grantB2 = auth.grant(b, NOW)
  t.not(grantB2, grantB, 'b, least recently used, was evicted and recompiled')
  t.strictSame(grantB2, grantB, 'to an equal grant')
  t.not(auth.grant(a, NOW), grantA, 'then a, least recently used, was evicted in turn')
  t.equal(auth.grant(b, NOW), grantB2, 'b stays cached')
})

t.test('auth: a cache size of 0 caches nothing', async (t) => {
  const auth = new Authenticator(DH_KEY, 0)
  const token = craft({ alg: 'HS256' }, { payload: claims() })
  const first = auth.grant(token, NOW)
  const second = auth.grant(token, NOW)
  t.not(second, first, 'compiled again')
  t.strictSame(second, first, 'to an equal grant')
})

t.test('auth: expiry is checked on a cached token', async (t) => {
  const auth = new Authenticator(DH_KEY, 10)
  const token = craft({ alg: 'HS256' }, { payload: claims({ e: NOW }) })
  const grant = auth.grant(token, NOW)
  t.equal(auth.grant(token, NOW), grant, 'cached')
  expectProtocolError(t, () => auth.grant(token, NOW + 1), 401, 'Token expired', 'cached and expired')
  t.equal(auth.grant(token, NOW), grant, 'still cached, valid at its own time')
})

t.test('auth: invalid tokens are not cached', async (t) => {
  const auth = new Authenticator(DH_KEY, 10)
  const refresh = craft({ alg: 'HS256' }, { payload: claims({ t: 0 }) })
  expectProtocolError(t, () => auth.grant(refresh, NOW), 401, 'Invalid credentials', 'first time')
  expectProtocolError(t, () => auth.grant(refresh, NOW), 401, 'Invalid credentials', 'second time')
})

t.test('auth: a: [0] grants every action', async (t) => {
  const grant = grantOf({ a: [0] })
  for (const id of ALL_IDS.slice(1)) t.ok(allows(grant, id), `action ${id}`)
  for (const name of Object.keys(Action) as Array<keyof typeof Action>) t.ok(allows(grant, Action[name]), name)
  t.equal(grantOf({ a: [3, 0] }).actions, grant.actions, '0 after another id')
  t.equal(grantOf({ a: [0, 3] }).actions, grant.actions, '0 before another id')
})

t.test('auth: a: [] grants exactly the client set', async (t) => {
  const grant = grantOf({ a: [] })
  for (const id of ALL_IDS) t.equal(allows(grant, id), CLIENT_SET.has(id), `action ${id}`)
})

t.test('auth: a absent grants nothing', async (t) => {
  const grant = grantOf({ n: ['*'] })
  t.equal(grant.actions, 0)
  for (const id of ALL_IDS) t.notOk(allows(grant, id), `action ${id}`)
})

t.test('auth: a lists exactly the actions it names', async (t) => {
  const grant = grantOf({ a: [5, 7] })
  for (const id of ALL_IDS) t.equal(allows(grant, id), id === 5 || id === 7, `action ${id}`)
})

t.test('auth: unknown action ids are ignored', async (t) => {
  const grant = grantOf({ a: [19, -1, 31, 32, 100, 7] })
  for (const id of ALL_IDS) t.equal(allows(grant, id), id === 7, `action ${id}`)
  t.strictSame(grantOf({ a: [19, 20, -5] }).actions, 0, 'only unknown ids: nothing')
})

t.test('auth: compileGrant copies user id, expiry and the claims', async (t) => {
  const grant = compileGrant({ u: 9, a: [5], e: 42, t: 1 })
  t.equal(grant.userId, 9)
  t.equal(grant.expiresAt, 42)
  t.strictSame(grant.claims, { u: 9, a: [5], e: 42, t: 1 })
  t.ok(Object.isFrozen(grant.claims), 'the claims are frozen')
  t.strictSame(compileGrant({ u: 9, a: null, n: null, dt: null, e: 42, t: 1 }), { ...compileGrant({ u: 9, e: 42, t: 1 }), claims: { u: 9, a: null, n: null, dt: null, e: 42, t: 1 } },
    'null lists read as absent ones')
})

t.test('auth: n absent sees no device at all', async (t) => {
  for (const grant of [grantOf({ a: [0] }), grantOf({ a: [0], dt: ['*'] }), grantOf({ a: [0], dt: ['1'] })]) {
    t.equal(grant.networks, null, 'networks null')
    t.equal(grant.allDevices, false, 'not all devices')
    t.notOk(canSee(grant, 1, 1), 'network 1, type 1')
    t.notOk(canSee(grant, null, null), 'null network and type')
    t.notOk(canSee(grant, 0, null), 'network 0')
  }
})

t.test('auth: n * with dt absent sees every device', async (t) => {
  const grant = grantOf({ n: ['*'] })
  t.equal(grant.networks, '*')
  t.equal(grant.deviceTypes, '*')
  t.equal(grant.allDevices, true)
  for (const [n, dt] of [[1, 1], [null, null], [5, null], [null, 5], [0, 0]] as Array<[number | null, number | null]>) {
    t.ok(canSee(grant, n, dt), `network ${n}, type ${dt}`)
  }
  t.equal(grantOf({ n: ['*'], dt: ['*'] }).allDevices, true, 'explicit dt *')
  t.equal(grantOf({ n: ['1', '*'], dt: ['*', '2'] }).allDevices, true, '* among ids')
  t.equal(grantOf({ n: ['*'], dt: ['2'] }).allDevices, false, 'dt restricted')
  t.equal(grantOf({ n: ['2'] }).allDevices, false, 'n restricted')
})

t.test('auth: dt absent is the same as dt *', async (t) => {
  t.strictSame(reach(grantOf({ n: ['3'] })), reach(grantOf({ n: ['3'], dt: ['*'] })))
  t.strictSame(reach(grantOf({ n: ['*'] })), reach(grantOf({ n: ['*'], dt: ['*'] })))
})

t.test('auth: network ids compare as canonical integers', async (t) => {
  const five = grantOf({ n: ['5'] })
  t.strictSame(five.networks, new Set([5]))
  t.ok(canSee(five, 5, 1), 'sees network 5')
  t.notOk(canSee(five, 50, 1), 'not network 50')
  t.notOk(canSee(five, 15, 1), 'not network 15')
  t.notOk(canSee(five, 0, 1), 'not network 0')
  for (const id of ['05', 'x', '5.0', ' 5', '5 ', '+5', '0x5', '5e0', '']) {
    const grant = grantOf({ n: [id] })
    t.strictSame(grant.networks, new Set(), `${JSON.stringify(id)} is dropped`)
    t.notOk(canSee(grant, 5, 1), `${JSON.stringify(id)} never matches network 5`)
  }
  t.notOk(canSee(grantOf({ n: ['-0'] }), 0, 1), '"-0" never matches network 0')
  t.ok(canSee(grantOf({ n: ['0'] }), 0, 1), '"0" matches network 0')
  t.ok(canSee(grantOf({ n: ['-3'] }), -3, 1), 'negative ids compare too')
  t.notOk(canSee(grantOf({ n: ['9007199254740993'] }), 9007199254740992, 1), 'unsafe integers never match')
  const several = grantOf({ n: ['1', '05', '7'] })
  t.strictSame(several.networks, new Set([1, 7]), 'good ids kept beside a bad one')
})

t.test('auth: device type ids compare as canonical integers', async (t) => {
  const grant = grantOf({ n: ['*'], dt: ['3', '04'] })
  t.strictSame(grant.deviceTypes, new Set([3]))
  t.ok(canSee(grant, 1, 3), 'type 3')
  t.ok(canSee(grant, null, 3), 'type 3 in a null network, with n *')
  t.notOk(canSee(grant, 1, 4), 'type 4 was given as "04"')
  t.notOk(canSee(grant, 1, 30), 'type 30')
})

t.test('auth: both dimensions must match', async (t) => {
  const grant = grantOf({ n: ['1'], dt: ['2'] })
  t.ok(canSee(grant, 1, 2), 'network 1, type 2')
  t.notOk(canSee(grant, 1, 3), 'right network, wrong type')
  t.notOk(canSee(grant, 2, 2), 'wrong network, right type')
  t.notOk(canSee(grant, 2, 1), 'both swapped')
})

t.test('auth: a null network or type is visible only to * of that dimension', async (t) => {
  const networkOnly = grantOf({ n: ['1'], dt: ['*'] })
  t.notOk(canSee(networkOnly, null, 2), 'null network with n ["1"]')
  t.ok(canSee(networkOnly, 1, null), 'null type with dt *')
  const typeOnly = grantOf({ n: ['*'], dt: ['2'] })
  t.ok(canSee(typeOnly, null, 2), 'null network with n *')
  t.notOk(canSee(typeOnly, 1, null), 'null type with dt ["2"]')
  t.notOk(canSee(grantOf({ n: ['1'], dt: ['2'] }), null, null), 'both null, both restricted')
  t.ok(canSee(grantOf({ n: ['*'], dt: ['*'] }), null, null), 'both null, both *')
})

t.test('auth: an empty n or dt sees nothing', async (t) => {
  t.notOk(canSee(grantOf({ n: [] }), 1, 1), 'n []')
  t.notOk(canSee(grantOf({ n: ['*'], dt: [] }), 1, 1), 'dt []')
  t.equal(grantOf({ n: [] }).allDevices, false)
})
