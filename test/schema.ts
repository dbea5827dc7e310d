import t from 'tap'
import fc from 'fast-check'
import { bool, deviceBody, deviceError, insertBody, insertError, int, malformed, parse, readInsertBody, readUpdateBody, text, timestamp, updateBody } from '../lib/schema.js'

const issuesOf = (schema: typeof insertBody | typeof deviceBody, value: unknown): Parameters<typeof insertError>[0] => {
  const result = schema.safeParse(value)
  if (result.success) throw new Error('expected a failed parse')
  return result.error.issues
}

t.test('schema: types only; unknown keys are stripped, JSON values pass through untouched', async (t) => {
  const parameters = { deep: [1, { x: null }] }
  const parsed = insertBody.parse({ command: 'on', parameters, id: 5, deviceId: 'x', extra: true })
  t.strictSame(Object.keys(parsed).sort(), ['command', 'parameters'])
  t.equal(parsed.parameters, parameters, 'the same value, not a copy: the broker serialises it')
  t.strictSame(updateBody.parse({ status: 'done', command: 'ignored', timestamp: 'not even a date' }), { status: 'done' })
})

t.test('schema: timestamps are read into epoch ms, anything else is an issue', async (t) => {
  t.equal(timestamp.parse('2026-01-01'), Date.UTC(2026, 0, 1))
  t.equal(timestamp.safeParse('soon').success, false)
})

t.test('schema: insert issues map to DeviceHive errors, a wrong type first', async (t) => {
  const name = { code: 400, error: 'Field cannot be empty. The length of command should not be more than 128 symbols.' }
  const lifetime = { code: 400, error: 'Validation failed with following violations: lifetime must be an integer from 1 to 60 (seconds)' }
  const malformedJson = { code: 400, error: 'Malformed Json received.' }
  t.match(insertError(issuesOf(insertBody, { command: '' }), 60), name)
  t.match(insertError(issuesOf(insertBody, { command: 'on', lifetime: 0 }), 60), lifetime)
  t.match(insertError(issuesOf(insertBody, { command: 'on', lifetime: 2.5 }), 60), lifetime)
  t.match(insertError([], 60), lifetime, 'no issues: the lifetime was above the maximum')
  t.match(insertError(issuesOf(insertBody, { command: 'on', lifetime: 'x' }), 60), malformedJson)
  t.match(insertError(issuesOf(insertBody, { command: '', status: {} }), 60), malformedJson, 'a wrong type beats a bad name')
  t.match(insertError(issuesOf(insertBody, { command: '', lifetime: 0 }), 60), name, 'a bad name beats a bad lifetime')
})

t.test('schema: device issues map to DeviceHive errors', async (t) => {
  t.match(deviceError(issuesOf(deviceBody, { name: '' })), { code: 400, error: 'Field cannot be empty. The length of name should not be more than 128 symbols.' })
  t.match(deviceError(issuesOf(deviceBody, { name: 'x', networkId: 'one' })), { code: 400, error: 'Malformed Json received.' })
})

t.test('schema: parse returns the data or throws what explain picks', async (t) => {
  t.strictSame(parse(updateBody, { status: null }, malformed), { status: null })
  t.throws(() => parse(updateBody, { status: [] }, malformed), { code: 400, error: 'Malformed Json received.' })
})

t.test('schema: text, int and bool read JSON types as Gson does', async (t) => {
  t.equal(text.parse(5), '5', 'a number is its decimal text')
  t.equal(text.parse(-1.5), '-1.5')
  t.equal(text.safeParse(Number.NaN).success, false, 'not a finite number: not text')
  t.equal(text.safeParse(true).success, false, 'a boolean is not text')
  t.equal(int.parse('42'), 42, 'a numeric string is that number')
  t.equal(int.parse('-7'), -7)
  t.equal(int.safeParse('4.2').success, false, 'not an integer')
  t.equal(int.safeParse('12345678901234567').success, false, 'longer than a safe integer')
  t.equal(int.safeParse('0x10').success, false)
  t.equal(bool.parse('true'), true)
  t.equal(bool.parse('false'), false)
  t.equal(bool.safeParse('yes').success, false)
  t.equal(bool.safeParse(1).success, false)
})

t.test('schema: readInsertBody reads what insertBody accepts, as it reads it, and leaves the rest to it', async (t) => {
  const keys = ['command', 'timestamp', 'parameters', 'lifetime', 'status', 'result'] as const
  const fields = (body: Record<string, unknown>): unknown[] => keys.map((key) => body[key])
  const parameters = { deep: [1, { x: null }] }
  const bodies: unknown[] = [
    { command: 'on' },
    { command: 'on', parameters, result: 'r', status: 'done', lifetime: 30, timestamp: '2026-01-01T10:00:00.5Z', extra: 1 },
    { command: 42, status: 7, lifetime: '60', timestamp: 1_767_225_600_000 },
    { command: 'on', status: null, lifetime: null, timestamp: null, parameters: null, result: null },
    { command: 'x'.repeat(128) },
    // What only insertBody may answer, with its issue.
    null, 'on', [], [{ command: 'on' }], {}, { command: null }, { command: '' }, { command: 'x'.repeat(129) }, { command: {} },
    { command: Number.NaN }, { command: 'on', timestamp: 'soon' }, { command: 'on', timestamp: {} },
    { command: 'on', lifetime: 0 }, { command: 'on', lifetime: 2.5 }, { command: 'on', lifetime: 'x' }, { command: 'on', lifetime: '-1' },
    { command: 'on', lifetime: 2 ** 53 }, { command: 'on', lifetime: true }, { command: 'on', status: {} }, { command: 'on', status: Infinity }
  ]
  for (const body of bodies) {
    const read = readInsertBody(body)
    const parsed = insertBody.safeParse(body)
    if (read === undefined) {
      t.equal(parsed.success, false, `left to zod: ${JSON.stringify(body)}`)
    } else {
      t.ok(parsed.success, `read: ${JSON.stringify(body)}`)
      t.strictSame(fields(read), fields(parsed.data as Record<string, unknown>), `as zod reads it: ${JSON.stringify(body)}`)
    }
  }
  const read = readInsertBody({ command: 'on', parameters }) as { parameters: unknown }
  t.equal(read.parameters, parameters, 'the same value, not a copy: the broker serialises it')
})

t.test('schema: readUpdateBody reads what updateBody accepts, as it reads it, and leaves the rest to it', async (t) => {
  const bodies: unknown[] = [
    { status: 'done', result: { ok: true }, command: 'ignored' }, { status: 5 }, { status: null, result: null }, {},
    null, 'done', [], { status: {} }, { status: Number.NaN }, { status: false }
  ]
  for (const body of bodies) {
    const read = readUpdateBody(body)
    const parsed = updateBody.safeParse(body)
    if (read === undefined) {
      t.equal(parsed.success, false, `left to zod: ${JSON.stringify(body)}`)
    } else {
      t.ok(parsed.success, `read: ${JSON.stringify(body)}`)
      const data = parsed.data as Record<string, unknown>
      t.strictSame([read.status, read.result], [data.status, data.result], `as zod reads it: ${JSON.stringify(body)}`)
    }
  }
})

// Whatever a client sends: each key drawn from values of every JSON type, the tricky ones
// (numeric strings, timestamps, lengths at the bounds) made likely.
const anyValue = fc.oneof(
  fc.constantFrom(undefined, null, true, false, 'true', '', '0', '1', '-1', '60', ' 5', '1e3', '0x10', Number.NaN, Infinity, -0,
    0, 1, 2.5, 2 ** 53, 'x'.repeat(128), 'x'.repeat(129), '2026-01-01T10:00:00.5Z', '2026-13-01T00:00:00Z'),
  fc.string(), fc.integer(), fc.double(), fc.array(fc.integer(), { maxLength: 2 }), fc.dictionary(fc.string({ maxLength: 3 }), fc.integer(), { maxKeys: 2 })
)
const anyBody = fc.oneof(
  fc.record({ command: anyValue, timestamp: anyValue, parameters: anyValue, lifetime: anyValue, status: anyValue, result: anyValue }, { requiredKeys: [] }),
  anyValue
)

t.test('schema: readInsertBody and readUpdateBody never read a body otherwise than zod (property)', async (t) => {
  const keys = ['command', 'timestamp', 'parameters', 'lifetime', 'status', 'result'] as const
  let read = 0
  fc.assert(fc.property(anyBody, (body) => {
    const insert = readInsertBody(body)
    if (insert !== undefined) {
      read++
      const parsed = insertBody.safeParse(body)
      if (!parsed.success) return false
      const data = parsed.data as Record<string, unknown>
      if (!keys.every((key) => Object.is((insert as Record<string, unknown>)[key], data[key]))) return false
    }
    const update = readUpdateBody(body)
    if (update === undefined) return true
    const parsed = updateBody.safeParse(body)
    return parsed.success && Object.is(update.status, parsed.data.status) && Object.is(update.result, parsed.data.result)
  }), { numRuns: 20_000 })
  t.ok(read > 100, `the fast path was taken (${read} of 20,000)`)
})
