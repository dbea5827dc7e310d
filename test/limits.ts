import t from 'tap'
import { ProtocolError } from '../lib/errors.js'
import { checkFilterList, checkText, exceedsBytes, jsonDepth, MAX_NAME_LENGTH, serialiseJson } from '../lib/limits.js'

const LIMITS = { maxPayloadBytes: 16, maxJsonDepth: 2, maxFilterItems: 3 }

t.test('limits: jsonDepth counts nesting outside strings, escapes included', async (t) => {
  t.equal(jsonDepth('1'), 0)
  t.equal(jsonDepth('"[{"'), 0)
  t.equal(jsonDepth('[]'), 1)
  t.equal(jsonDepth('[[1],{"a":[2]}]'), 3)
  t.equal(jsonDepth('["\\"[[[", {"k":"\\\\"}]'), 2, 'an escaped quote does not end the string; an escaped backslash does not escape the quote')
  t.equal(jsonDepth('[' .repeat(10_000) + ']'.repeat(10_000)), 10_000, 'no recursion: any depth')
})

t.test('limits: serialiseJson keeps null and absent as null and serialises the rest', async (t) => {
  t.equal(serialiseJson('p', undefined, LIMITS), null)
  t.equal(serialiseJson('p', null, LIMITS), null)
  t.equal(serialiseJson('p', { a: [1] }, LIMITS), '{"a":[1]}')
})

t.test('limits: serialiseJson answers 400 for too large, too deep, or not JSON', async (t) => {
  const error = (fn: () => unknown): unknown => { try { fn() } catch (err) { return err } return undefined }
  t.strictSame(error(() => serialiseJson('p', 10n, LIMITS)), new ProtocolError(400, 'Malformed Json received.'))
  t.strictSame(error(() => serialiseJson('p', () => 1, LIMITS)), new ProtocolError(400, 'Malformed Json received.'))
  t.strictSame(error(() => serialiseJson('p', 'x'.repeat(15), LIMITS)),
    new ProtocolError(400, 'Validation failed with following violations: p must be at most 16 bytes when serialised'))
  t.equal(serialiseJson('p', 'x'.repeat(14), LIMITS), `"${'x'.repeat(14)}"`, 'exactly 16 bytes')
  t.strictSame(error(() => serialiseJson('p', [[[1]]], LIMITS)),
    new ProtocolError(400, 'Validation failed with following violations: p must nest arrays and objects at most 2 deep'))
  t.equal(serialiseJson('p', [[1]], LIMITS), '[[1]]', 'exactly 2 deep')
})

t.test('limits: checkText and exceedsBytes count UTF-8 bytes', async (t) => {
  t.equal(checkText('status', 'x'.repeat(16), LIMITS), 'x'.repeat(16))
  t.throws(() => checkText('status', '€'.repeat(6), LIMITS), { code: 400, error: 'Validation failed with following violations: status must be at most 16 bytes' })
  t.equal(exceedsBytes('€'.repeat(5), 16), false, '15 bytes')
  t.equal(exceedsBytes('€'.repeat(5) + 'ab', 16), true, '17 bytes')
  t.equal(exceedsBytes('😀'.repeat(4), 16), false, 'four surrogate pairs are 16 bytes')
})

t.test('limits: checkFilterList bounds the entries, the names, and drops repeats', async (t) => {
  t.strictSame(checkFilterList('networkIds', [1, 2, 1, 3], { ...LIMITS, maxFilterItems: 4 }), [1, 2, 3])
  t.throws(() => checkFilterList('networkIds', [1, 2, 3, 4], LIMITS), { code: 400, error: 'Validation failed with following violations: networkIds must have at most 3 entries' })
  t.strictSame(checkFilterList('names', ['x'.repeat(MAX_NAME_LENGTH)], LIMITS), ['x'.repeat(MAX_NAME_LENGTH)])
  t.throws(() => checkFilterList('names', ['x'.repeat(MAX_NAME_LENGTH + 1)], LIMITS), { code: 400, error: 'Validation failed with following violations: names entries must be at most 128 characters' })
})
