import fc from 'fast-check'
import t from 'tap'
import { MAX_TIMESTAMP, MIN_TIMESTAMP, formatTimestamp, parseTimestamp } from '../lib/timestamp.js'

const SHAPE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}$/

// An independent oracle: Date.parse of a full ISO string with an explicit Z.
function utc (iso: string): number {
  const ms = Date.parse(`${iso}Z`)
  if (Number.isNaN(ms)) throw new Error(`bad oracle input ${iso}`)
  return ms
}

t.test('timestamp: the range constants are years 0000 to 9999', async (t) => {
  t.equal(MIN_TIMESTAMP, utc('0000-01-01T00:00:00.000'))
  t.equal(MAX_TIMESTAMP, utc('9999-12-31T23:59:59.999'))
})

t.test('timestamp: formats yyyy-MM-ddTHH:mm:ss.SSS without a zone', async (t) => {
  t.equal(formatTimestamp(utc('2026-11-25T09:39:49.123')), '2026-11-25T09:39:49.123')
  t.equal(formatTimestamp(0), '1970-01-01T00:00:00.000')
  t.equal(formatTimestamp(-1), '1969-12-31T23:59:59.999', 'before the epoch')
  t.equal(formatTimestamp(utc('2026-01-02T03:04:05.000')), '2026-01-02T03:04:05.000', 'zero padded, three zero digits')
  t.equal(formatTimestamp(utc('2026-01-02T03:04:05.007')), '2026-01-02T03:04:05.007', 'one significant digit of ms')
  t.equal(formatTimestamp(utc('2026-01-02T03:04:05.070')), '2026-01-02T03:04:05.070', 'trailing zero of ms kept')
})

t.test('timestamp: formats the year 0000 and 9999 edges', async (t) => {
  t.equal(formatTimestamp(MIN_TIMESTAMP), '0000-01-01T00:00:00.000')
  t.equal(formatTimestamp(MAX_TIMESTAMP), '9999-12-31T23:59:59.999')
  t.equal(formatTimestamp(utc('0099-06-01T12:00:00.000')), '0099-06-01T12:00:00.000', 'two-digit year padded')
  t.equal(formatTimestamp(utc('0001-01-01T00:00:00.001')), '0001-01-01T00:00:00.001')
})

t.test('timestamp: parses ISO without a zone as UTC', async (t) => {
  t.equal(parseTimestamp('2026-11-25T09:39:49.123'), utc('2026-11-25T09:39:49.123'))
  t.equal(parseTimestamp('2026-11-25t09:39:49.123'), utc('2026-11-25T09:39:49.123'), 'lower-case t')
  t.equal(parseTimestamp('2026-11-25T09:39:49'), utc('2026-11-25T09:39:49.000'), 'without ms')
  t.equal(parseTimestamp('2026-11-25T09:39'), utc('2026-11-25T09:39:00.000'), 'without seconds')
})

t.test('timestamp: parses ISO with a Z', async (t) => {
  t.equal(parseTimestamp('2026-11-25T09:39:49.123Z'), utc('2026-11-25T09:39:49.123'))
  t.equal(parseTimestamp('2026-11-25T09:39:49.123z'), utc('2026-11-25T09:39:49.123'), 'lower-case z')
  t.equal(parseTimestamp('2026-11-25T09:39:49Z'), utc('2026-11-25T09:39:49.000'), 'without ms')
  t.equal(parseTimestamp('2026-11-25T09:39Z'), utc('2026-11-25T09:39:00.000'), 'without seconds')
})

t.test('timestamp: parses zone offsets', async (t) => {
  const at = utc('2026-11-25T07:39:49.000')
  t.equal(parseTimestamp('2026-11-25T09:39:49+02:00'), at, '+02:00')
  t.equal(parseTimestamp('2026-11-25T09:39:49+0200'), at, '+0200')
  t.equal(parseTimestamp('2026-11-25T09:39:49+02'), at, '+02')
  t.equal(parseTimestamp('2026-11-25T09:39:49.123+02:00'), at + 123, 'with ms')
  t.equal(parseTimestamp('2026-11-25T09:39:49-05'), utc('2026-11-25T14:39:49.000'), '-05')
  t.equal(parseTimestamp('2026-11-25T09:39:49-05:30'), utc('2026-11-25T15:09:49.000'), '-05:30')
  t.equal(parseTimestamp('2026-11-25T09:39:49+05:45'), utc('2026-11-25T03:54:49.000'), '+05:45')
  t.equal(parseTimestamp('2026-11-25T09:39:49+00:00'), utc('2026-11-25T09:39:49.000'), '+00:00')
  t.equal(parseTimestamp('2026-11-25T09:39:49-00:00'), utc('2026-11-25T09:39:49.000'), '-00:00')
  t.equal(parseTimestamp('2026-11-25T09:39+01:00'), utc('2026-11-25T08:39:00.000'), 'without seconds')
  t.equal(parseTimestamp('2026-01-01T00:30:00+01:00'), utc('2025-12-31T23:30:00.000'), 'crosses back into the previous year')
  t.equal(parseTimestamp('2026-12-31T23:30:00-01:00'), utc('2027-01-01T00:30:00.000'), 'crosses into the next year')
  t.equal(parseTimestamp('2026-11-25T09:39:49+23:59'), utc('2026-11-24T09:40:49.000'), 'largest offset')
})

t.test('timestamp: parses fractions of one to three digits', async (t) => {
  const base = utc('2026-11-25T09:39:49.000')
  t.equal(parseTimestamp('2026-11-25T09:39:49.1'), base + 100, 'one digit')
  t.equal(parseTimestamp('2026-11-25T09:39:49.12'), base + 120, 'two digits')
  t.equal(parseTimestamp('2026-11-25T09:39:49.012'), base + 12, 'leading zero')
  t.equal(parseTimestamp('2026-11-25T09:39:49.000'), base, 'zero')
  t.equal(parseTimestamp('2026-11-25T09:39:49,5'), base + 500, 'comma as the decimal sign')
})

t.test('timestamp: truncates a fraction longer than three digits', async (t) => {
  const base = utc('2026-11-25T09:39:49.000')
  t.equal(parseTimestamp('2026-11-25T09:39:49.1234'), base + 123, 'four digits')
  t.equal(parseTimestamp('2026-11-25T09:39:49.123999'), base + 123, 'microseconds, not rounded up')
  t.equal(parseTimestamp('2026-11-25T09:39:49.999999999Z'), base + 999, 'nanoseconds, not rounded into the next second')
  t.equal(parseTimestamp('2026-11-25T09:39:49.0009'), base, 'sub-ms only')
})

t.test('timestamp: parses date-only as midnight UTC', async (t) => {
  t.equal(parseTimestamp('2026-11-25'), utc('2026-11-25T00:00:00.000'))
  t.equal(parseTimestamp('1970-01-01'), 0)
})

t.test('timestamp: parses a space as the date-time separator', async (t) => {
  t.equal(parseTimestamp('2026-11-25 09:39:49.123'), utc('2026-11-25T09:39:49.123'))
  t.equal(parseTimestamp('2026-11-25 09:39:49+02:00'), utc('2026-11-25T07:39:49.000'), 'with an offset')
})

t.test('timestamp: reads a number as epoch ms', async (t) => {
  t.equal(parseTimestamp(0), 0)
  t.equal(parseTimestamp(1_764_063_589_123), 1_764_063_589_123)
  t.equal(parseTimestamp(-1_000), -1_000, 'negative')
  t.equal(parseTimestamp(MIN_TIMESTAMP), MIN_TIMESTAMP)
  t.equal(parseTimestamp(MAX_TIMESTAMP), MAX_TIMESTAMP)
})

t.test('timestamp: reads a numeric string as epoch ms', async (t) => {
  t.equal(parseTimestamp('0'), 0)
  t.equal(parseTimestamp('1764063589123'), 1_764_063_589_123)
  t.equal(parseTimestamp('-1000'), -1_000, 'negative')
  t.equal(parseTimestamp('2026'), 2026, 'a bare year is epoch ms, not a year')
  t.equal(parseTimestamp('00001000'), 1_000, 'leading zeros')
  t.equal(parseTimestamp(String(MIN_TIMESTAMP)), MIN_TIMESTAMP)
  t.equal(parseTimestamp(String(MAX_TIMESTAMP)), MAX_TIMESTAMP)
})

t.test('timestamp: rejects numeric strings that are not integers', async (t) => {
  for (const value of ['1e3', '0x10', '+5', ' 5', '5 ', '--5', '-', '1_000', '12345678901234567']) {
    t.equal(parseTimestamp(value), undefined, JSON.stringify(value))
  }
})

t.test('timestamp: rejects February 30', async (t) => {
  t.equal(parseTimestamp('2026-02-30'), undefined)
  t.equal(parseTimestamp('2024-02-30T00:00:00Z'), undefined, 'in a leap year too')
})

t.test('timestamp: accepts February 29 only in leap years', async (t) => {
  t.equal(parseTimestamp('2024-02-29'), utc('2024-02-29T00:00:00.000'), '2024, divisible by 4')
  t.equal(parseTimestamp('2000-02-29'), utc('2000-02-29T00:00:00.000'), '2000, divisible by 400')
  t.equal(parseTimestamp('0000-02-29'), utc('0000-02-29T00:00:00.000'), 'year 0000, divisible by 400')
  t.equal(parseTimestamp('2026-02-29'), undefined, '2026')
  t.equal(parseTimestamp('2023-02-29T12:00:00'), undefined, '2023')
  t.equal(parseTimestamp('1900-02-29'), undefined, '1900, divisible by 100')
  t.equal(parseTimestamp('2100-02-29'), undefined, '2100, divisible by 100')
  t.equal(parseTimestamp('2026-02-28'), utc('2026-02-28T00:00:00.000'), 'February 28')
})

t.test('timestamp: rejects impossible days and months', async (t) => {
  for (const month of ['04', '06', '09', '11']) {
    t.equal(parseTimestamp(`2026-${month}-31`), undefined, `${month}-31`)
    t.equal(parseTimestamp(`2026-${month}-30`), utc(`2026-${month}-30T00:00:00.000`), `${month}-30`)
  }
  for (const month of ['01', '03', '05', '07', '08', '10', '12']) {
    t.equal(parseTimestamp(`2026-${month}-31`), utc(`2026-${month}-31T00:00:00.000`), `${month}-31`)
    t.equal(parseTimestamp(`2026-${month}-32`), undefined, `${month}-32`)
  }
  t.equal(parseTimestamp('2026-01-00'), undefined, 'day 0')
  t.equal(parseTimestamp('2026-00-10'), undefined, 'month 0')
  t.equal(parseTimestamp('2026-13-01'), undefined, 'month 13')
})

t.test('timestamp: rejects hour 24, minute 60 and second 60', async (t) => {
  t.equal(parseTimestamp('2026-11-25T24:00:00'), undefined, 'hour 24')
  t.equal(parseTimestamp('2026-11-25T23:60:00'), undefined, 'minute 60')
  t.equal(parseTimestamp('2026-11-25T23:59:60'), undefined, 'second 60')
  t.equal(parseTimestamp('2026-11-25T23:59:59.999'), utc('2026-11-25T23:59:59.999'), 'the last ms of the day')
})

t.test('timestamp: rejects bad zone offsets', async (t) => {
  for (const zone of ['+24:00', '+24', '-24:00', '+02:60', '+0260', '+2:00', '+02:0', '+020', '+02:00:00', '02:00', 'UTC', 'GMT', 'Z+01:00', '+', 'ZZ']) {
    t.equal(parseTimestamp(`2026-11-25T09:39:49${zone}`), undefined, zone)
  }
})

t.test('timestamp: rejects strings that are not timestamps', async (t) => {
  for (const value of [
    '', ' ', 'garbage', 'now', '2026-11', '2026-1-5', '26-11-25', '2026/11/25', '2026-11-25T',
    '2026-11-25T09', '2026-11-25T9:39', '2026-11-25T09:39:4', '2026-11-25T09:39:49.', '2026-11-25T09:39:49.1234567890',
    ' 2026-11-25', '2026-11-25 ', '2026-11-25Z', '2026-11-25X09:39', '+2026-11-25', '-2026-11-25', '12026-11-25',
    'Wed, 25 Nov 2026 09:39:49 GMT', '1.5', '١٢٣'
  ]) {
    t.equal(parseTimestamp(value), undefined, JSON.stringify(value))
  }
})

t.test('timestamp: rejects values that are neither strings nor numbers', async (t) => {
  const values: Array<[string, unknown]> = [
    ['undefined', undefined], ['null', null], ['object', {}], ['array', []], ['array of a number', [5]],
    ['true', true], ['false', false], ['Date', new Date(0)], ['bigint', 5n], ['symbol', Symbol('x')],
    ['String object', Object('2026-11-25')], ['function', () => 0]
  ]
  for (const [what, value] of values) t.equal(parseTimestamp(value), undefined, what)
})

t.test('timestamp: rejects NaN and infinities', async (t) => {
  t.equal(parseTimestamp(Number.NaN), undefined, 'NaN')
  t.equal(parseTimestamp(Number.POSITIVE_INFINITY), undefined, 'Infinity')
  t.equal(parseTimestamp(Number.NEGATIVE_INFINITY), undefined, '-Infinity')
  t.equal(parseTimestamp('NaN'), undefined, 'the string NaN')
  t.equal(parseTimestamp('Infinity'), undefined, 'the string Infinity')
})

t.test('timestamp: rejects times just outside MIN_TIMESTAMP and MAX_TIMESTAMP', async (t) => {
  t.equal(parseTimestamp(MIN_TIMESTAMP - 1), undefined, 'number before MIN')
  t.equal(parseTimestamp(MAX_TIMESTAMP + 1), undefined, 'number after MAX')
  t.equal(parseTimestamp(String(MIN_TIMESTAMP - 1)), undefined, 'string before MIN')
  t.equal(parseTimestamp(String(MAX_TIMESTAMP + 1)), undefined, 'string after MAX')
  t.equal(parseTimestamp(Number.MAX_SAFE_INTEGER), undefined, 'far future')
  t.equal(parseTimestamp(-Number.MAX_SAFE_INTEGER), undefined, 'far past')
  t.equal(parseTimestamp('9999999999999999'), undefined, '16 digits')
})

t.test('timestamp: ISO times at the edges of years 0000..9999', async (t) => {
  t.equal(parseTimestamp('0000-01-01T00:00:00.000'), MIN_TIMESTAMP, 'first ms of 0000')
  t.equal(parseTimestamp('0000-01-01'), MIN_TIMESTAMP, 'date-only 0000')
  t.equal(parseTimestamp('9999-12-31T23:59:59.999'), MAX_TIMESTAMP, 'last ms of 9999')
  t.equal(parseTimestamp('9999-12-31T23:59:59.999Z'), MAX_TIMESTAMP, 'last ms of 9999 with Z')
  t.equal(parseTimestamp('0000-01-01T00:30:00+00:30'), MIN_TIMESTAMP, 'an offset landing exactly on MIN')
  t.equal(parseTimestamp('9999-12-31T22:59:59.999-01:00'), MAX_TIMESTAMP, 'an offset landing exactly on MAX')
  t.equal(parseTimestamp('0000-01-01T00:00:00+00:01'), undefined, 'an offset pushing before 0000')
  t.equal(parseTimestamp('0000-01-01T00:00:00.000+01'), undefined, 'an hour before 0000')
  t.equal(parseTimestamp('9999-12-31T23:59:59.999-00:01'), undefined, 'an offset pushing past 9999')
  t.equal(parseTimestamp('9999-12-31T23:30:00-01:00'), undefined, 'an hour into 10000')
})

t.test('timestamp: years 0000..0099 are not mapped to the 1900s', async (t) => {
  t.equal(parseTimestamp('0000-06-15'), utc('0000-06-15T00:00:00.000'), 'year 0')
  t.equal(parseTimestamp('0001-01-01T00:00:00Z'), utc('0001-01-01T00:00:00.000'), 'year 1')
  t.equal(parseTimestamp('0050-03-04T05:06:07.089'), utc('0050-03-04T05:06:07.089'), 'year 50')
  t.equal(parseTimestamp('0099-12-31T23:59:59.999'), utc('0099-12-31T23:59:59.999'), 'year 99')
  t.equal(formatTimestamp(parseTimestamp('0099-06-01') ?? Number.NaN), '0099-06-01T00:00:00.000', 'formats back to 0099')
  t.ok((parseTimestamp('0070-01-01') ?? 0) < utc('0100-01-01T00:00:00.000'), 'year 70 is before year 100')
})

t.test('timestamp: format then parse round-trips every ms in range', async (t) => {
  const ms = fc.bigInt({ min: BigInt(MIN_TIMESTAMP), max: BigInt(MAX_TIMESTAMP) }).map(Number)
  t.doesNotThrow(() => {
    fc.assert(fc.property(ms, (ms) => {
      const text = formatTimestamp(ms)
      return SHAPE.test(text) && parseTimestamp(text) === ms
    }), { numRuns: 1000 })
  }, 'parseTimestamp(formatTimestamp(ms)) === ms, in the wire shape')
})

t.test('timestamp: a numeric string round-trips every ms in range', async (t) => {
  const ms = fc.bigInt({ min: BigInt(MIN_TIMESTAMP), max: BigInt(MAX_TIMESTAMP) }).map(Number)
  t.doesNotThrow(() => {
    fc.assert(fc.property(ms, (ms) => parseTimestamp(String(ms)) === ms && parseTimestamp(ms) === ms), { numRuns: 1000 })
  }, 'parseTimestamp(String(ms)) === ms')
})
