import type { ErrorReply } from './schema.js'

/**
 * The in-process error: every error this library throws or reports on the
 * broker's `error` event is a `BrokerError` with a stable string `code`, so
 * callers branch on `err.code`, never on message text. Misused options are the
 * exception: they throw plain `TypeError`/`RangeError` at construction time.
 */
export class BrokerError extends Error {
  override readonly name = 'BrokerError'
  /** Stable machine-readable code; see {@link BrokerErrorCode}. */
  readonly code: BrokerErrorCode
  /** With `ERR_REFUSED`: the error reply the request got. */
  readonly reply?: ErrorReply

  constructor (code: BrokerErrorCode, message: string, options?: { cause?: unknown, reply?: ErrorReply }) {
    super(message, options)
    this.code = code
    if (options?.reply !== undefined) this.reply = options.reply
  }
}

/**
 * - `ERR_CLOSED`: the broker, session or store was used after `close()`.
 * - `ERR_STORE`: the store threw while reading or writing; `cause` holds the original error.
 *   The request that hit it was answered `500 Internal server error` and changed nothing.
 * - `ERR_SUBSCRIBER`: an in-process subscriber or event listener threw; `cause` holds what it threw.
 * - `ERR_PUSH`: a session's `push` callback threw; `cause` holds what it threw.
 * - `ERR_SCHEMA`: the SQLite file, or the PostgreSQL schema, was written by a newer, incompatible
 *   version of this library.
 * - `ERR_IDS_EXHAUSTED`: `postgresStore()` has handed out command id 2^53 - 1, the last a JS number
 *   holds exactly; it refuses further inserts (the batch is rolled back) rather than reuse or
 *   round one.
 * - `ERR_LOCKED`: `sqliteStore()` was given a file that another live store holds, in this
 *   process or another. The lock dies with its holder: once that store is closed, or its
 *   process has ended in any way, the file opens.
 * - `ERR_FILE_MOVED`: the SQLite file was deleted, or another file put in its place, under a
 *   running store. Writes are refused from then on (through a broker: 500, and `ERR_STORE` with
 *   this as `cause`), since the file they would go to is no longer the one at the path.
 * - `ERR_EXPIRED`: `broker.invoke()`: the command's lifetime ran out before its device answered.
 * - `ERR_TIMEOUT`: `broker.invoke()`: its `timeout` passed first; the command stays, to its lifetime.
 * - `ERR_ABORTED`: `broker.invoke()`: its `signal` was aborted (the reason in `cause`); the command stays.
 * - `ERR_REFUSED`: `broker.invoke()`: the insert was refused; `reply` holds DeviceHive's error reply.
 * - `ERR_OVERFLOW`: a `broker.commands()` stream's consumer fell `bufferSize` commands behind.
 * - `ERR_INTERNAL`: a bug in this library; the request was answered `500 Internal server error`.
 */
export type BrokerErrorCode =
  | 'ERR_CLOSED'
  | 'ERR_STORE'
  | 'ERR_SUBSCRIBER'
  | 'ERR_PUSH'
  | 'ERR_SCHEMA'
  | 'ERR_IDS_EXHAUSTED'
  | 'ERR_LOCKED'
  | 'ERR_FILE_MOVED'
  | 'ERR_EXPIRED'
  | 'ERR_TIMEOUT'
  | 'ERR_ABORTED'
  | 'ERR_REFUSED'
  | 'ERR_OVERFLOW'
  | 'ERR_INTERNAL'

/**
 * A DeviceHive error reply in the making: thrown inside request handling and
 * turned into `{code, status: "error", error}` by the dispatcher. Not an
 * `Error`: it carries no stack, so rejecting hostile input stays cheap.
 */
export class ProtocolError {
  readonly code: number
  readonly error: string

  constructor (code: number, error: string) {
    this.code = code
    this.error = error
  }
}

/**
 * What a thrown value says about itself, for an error message: an Error's
 * message, a string as it is, else its type. Never throws, whatever was thrown
 * (an object without a prototype, a Proxy, a getter that throws): reporting a
 * failure must not become one.
 */
export function describeCause (cause: unknown): string {
  try {
    if (cause instanceof Error) return String(cause.message)
    if (typeof cause === 'string') return cause
    if (cause === null || (typeof cause !== 'object' && typeof cause !== 'function')) return String(cause)
    return typeof cause === 'function' ? 'a function' : 'an object'
  } catch {
    return 'a value that cannot be described'
  }
}

/**
 * Whether `value` is a `BrokerError` with this code. Never throws: `instanceof`
 * on a Proxy whose prototype trap throws would.
 */
export function isBrokerError (value: unknown, code: BrokerErrorCode): value is BrokerError {
  try {
    return value instanceof BrokerError && value.code === code
  } catch {
    return false
  }
}
