import { ProtocolError } from './errors.js'
import { MALFORMED_JSON, validationFailed } from './messages.js'

// The bounds every client-supplied value is held to, and the 400s that enforce them: whatever a
// client sends is either bounded here, by the frame size, or by a schema (names, ids).

/** The configured bounds a request's values are checked against. */
export interface ValueLimits {
  /** Most UTF-8 bytes of a serialised value or a string. */
  readonly maxPayloadBytes: number
  /** Deepest nesting of arrays and objects in a value; a scalar is depth 0. */
  readonly maxJsonDepth: number
  /** Most entries in a filter list. */
  readonly maxFilterItems: number
}

/** The longest command name (DeviceHive's): a longer `names` entry could never match. */
export const MAX_NAME_LENGTH = 128

/**
 * Serialises a client's JSON value (`parameters`, `result`, device `data`) for the store,
 * or throws the 400 to answer: `Malformed Json received.` for what JSON cannot hold, `Validation
 * failed ...` naming `name` when it is too large or too deep. Null and absent stay null.
 */
export function serialiseJson (name: string, value: unknown, limits: ValueLimits): string | null {
  if (value === undefined || value === null) return null
  let text: string | undefined
  try {
    text = JSON.stringify(value)
  } catch {
    // BigInt, a cycle, nesting deeper than the stack: not JSON.
    throw new ProtocolError(400, MALFORMED_JSON)
  }
  if (text === undefined) throw new ProtocolError(400, MALFORMED_JSON)
  const { maxPayloadBytes, maxJsonDepth } = limits
  if (exceedsBytes(text, maxPayloadBytes)) {
    throw new ProtocolError(400, validationFailed(`${name} must be at most ${maxPayloadBytes} bytes when serialised`))
  }
  // Checked on the text, after the size: one linear pass, no recursion, bounded by the size.
  // Each level takes an opening and a closing character, so a text of at most twice the
  // limit cannot nest deeper than it: the small values of most requests skip the pass.
  if (text.length > 2 * maxJsonDepth && jsonDepth(text) > maxJsonDepth) {
    throw new ProtocolError(400, validationFailed(`${name} must nest arrays and objects at most ${maxJsonDepth} deep`))
  }
  return text
}

/** Checks a client's free-text string (a command's `status`) against `maxPayloadBytes`. */
export function checkText (name: string, text: string, limits: ValueLimits): string {
  if (exceedsBytes(text, limits.maxPayloadBytes)) {
    throw new ProtocolError(400, validationFailed(`${name} must be at most ${limits.maxPayloadBytes} bytes`))
  }
  return text
}

/** Whether `text` takes more than `limit` bytes in UTF-8; only counts when it might. */
export function exceedsBytes (text: string, limit: number): boolean {
  // A UTF-16 unit is at most three UTF-8 bytes (a surrogate pair, two units, is four).
  return text.length > limit || (text.length * 3 > limit && Buffer.byteLength(text) > limit)
}

const QUOTE = 0x22
const BACKSLASH = 0x5c
const OPEN_BRACE = 0x7b
const OPEN_BRACKET = 0x5b
const CLOSE_BRACE = 0x7d
const CLOSE_BRACKET = 0x5d

/** The deepest nesting of arrays and objects in valid JSON text (0 for a scalar). */
export function jsonDepth (text: string): number {
  let depth = 0
  let deepest = 0
  let inString = false
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (inString) {
      if (c === BACKSLASH) i++
      else if (c === QUOTE) inString = false
    } else if (c === QUOTE) {
      inString = true
    } else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      if (++depth > deepest) deepest = depth
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      depth--
    }
  }
  return deepest
}

/**
 * Checks a filter list (`networkIds`, `deviceTypeIds`, `names`) against `maxFilterItems`, and
 * each name against {@link MAX_NAME_LENGTH}. Returns the list without repeats.
 */
export function checkFilterList<T extends number | string> (name: string, list: readonly T[], limits: ValueLimits): T[] {
  if (list.length > limits.maxFilterItems) {
    throw new ProtocolError(400, validationFailed(`${name} must have at most ${limits.maxFilterItems} entries`))
  }
  for (const item of list) {
    if (typeof item === 'string' && item.length > MAX_NAME_LENGTH) {
      throw new ProtocolError(400, validationFailed(`${name} entries must be at most ${MAX_NAME_LENGTH} characters`))
    }
  }
  return [...new Set(list)]
}
