/** Earliest and latest epoch ms whose UTC year has four digits (0000..9999), the wire's range. */
export const MIN_TIMESTAMP = -62167219200000
export const MAX_TIMESTAMP = 253402300799999

/**
 * Formats epoch ms the way DeviceHive writes times: `yyyy-MM-ddTHH:mm:ss.SSS`,
 * UTC, always three fractional digits, no zone suffix.
 */
export function formatTimestamp (ms: number): string {
  // Commands accepted together share their millisecond: format each distinct one once.
  if (ms !== lastMs) {
    // toISOString is `yyyy-MM-ddTHH:mm:ss.SSSZ` for years 0..9999; drop the `Z`.
    lastText = new Date(ms).toISOString().slice(0, 23)
    lastMs = ms
  }
  return lastText
}

let lastMs = NaN
let lastText = ''

// yyyy-MM-dd, optionally followed by T (or space) HH:mm, :ss, fraction, and a zone.
const ISO = /^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?([Zz]|[+-]\d{2}(?::?\d{2})?)?)?$/
const INTEGER = /^-?\d{1,16}$/

/**
 * Reads a client timestamp leniently: ISO-8601 with or without zone (no zone
 * means UTC) and with or without seconds and fraction, date-only
 * `yyyy-MM-dd`, or a number or numeric string of epoch ms. Returns epoch ms,
 * or undefined for anything else, including impossible dates (`02-30`) and
 * times outside years 0000..9999. Fractions finer than ms are truncated.
 */
export function parseTimestamp (value: unknown): number | undefined {
  let ms: number
  if (typeof value === 'number') {
    ms = Math.floor(value)
  } else if (typeof value !== 'string') {
    return undefined
  } else if (INTEGER.test(value)) {
    ms = Number(value)
  } else {
    const m = ISO.exec(value)
    if (m === null) return undefined
    const year = Number(m[1])
    const month = Number(m[2])
    const day = Number(m[3])
    const hour = m[4] === undefined ? 0 : Number(m[4])
    const minute = m[5] === undefined ? 0 : Number(m[5])
    const second = m[6] === undefined ? 0 : Number(m[6])
    const millis = m[7] === undefined ? 0 : Number(m[7].slice(0, 3).padEnd(3, '0'))
    if (month < 1 || month > 12 || day < 1 || day > daysIn(year, month) || hour > 23 || minute > 59 || second > 59) {
      return undefined
    }
    const offset = zoneOffset(m[8])
    if (offset === undefined) return undefined
    const date = new Date(0)
    // setUTCFullYear, unlike Date.UTC, does not map years 0..99 to 1900..1999.
    date.setUTCFullYear(year, month - 1, day)
    date.setUTCHours(hour, minute, second, millis)
    ms = date.getTime() - offset
  }
  return ms >= MIN_TIMESTAMP && ms <= MAX_TIMESTAMP ? ms : undefined
}

function daysIn (year: number, month: number): number {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31
}

// Offset of a zone designator in ms (what to subtract from local time to get UTC).
function zoneOffset (zone: string | undefined): number | undefined {
  if (zone === undefined || zone === 'Z' || zone === 'z') return 0
  const sign = zone[0] === '-' ? -1 : 1
  const hours = Number(zone.slice(1, 3))
  const minutes = zone.length > 3 ? Number(zone.slice(-2)) : 0
  if (hours > 23 || minutes > 59) return undefined
  return sign * (hours * 60 + minutes) * 60_000
}
