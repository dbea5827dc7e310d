import { performance } from 'node:perf_hooks'
import type { Clock } from './clock.js'
import type { Core } from './core.js'
import type { CommandRecord } from './store/store.js'

/**
 * Resolves on the next event-loop turn, after pending I/O: long work awaits it between
 * bounded steps, so no request or timer waits behind it for long.
 */
export function nextTurn (): Promise<void> {
  return new Promise((resolve) => { setImmediate(resolve) })
}

/**
 * Whether the store asks writes that can wait to wait (`Store.behind`: SQLite's WAL is ahead of
 * its background checkpointer). A store that fails to say is reported (`ERR_STORE`, with
 * `goingOn`: what the caller does instead), and the work goes on.
 */
export function held (core: Pick<Core, 'store' | 'fail'>, goingOn: string): boolean {
  try {
    return core.store.behind?.() === true
  } catch (err) {
    core.fail('ERR_STORE', `asking the store whether it is behind failed; ${goingOn}`, err)
    return false
  }
}

/**
 * Resolves a tick (`options.tick`) later on the broker's clock, or at once when the broker
 * closes: work that waits for the store while `held` does not hold up close().
 */
export function nextTick (core: Pick<Core, 'clock' | 'options' | 'closers'>): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      core.closers.delete(done)
      core.clock.clearTimeout(timer)
      resolve()
    }
    const timer = core.clock.setTimeout(done, core.options.tick)
    core.closers.add(done)
  })
}

/**
 * Milliseconds of work one event-loop turn may do on a job that has much to do at once
 * (expiring a burst of due commands, start-up recovery) before it yields. A few: well under
 * the 20 ms that a request may wait behind a turn, with room left for garbage collection.
 */
export const TURN_MS = 5

// Items in the first piece a Pacer hands out, before it has timed any: about 3 ms of SQLite
// deletes, whose rows and index pages sit all over a large file.
const FIRST_PIECE = 64

/**
 * Cuts a job into pieces that fit a turn's time budget: each piece is as large as the pieces
 * before it say fits in half of `turnMs`, judged by the last one's cost per item, and at most
 * twice the last. A count alone cannot bound a turn: expiring 1000 commands takes 2 ms on
 * the memory store and 45 ms on a large SQLite file, and more while its WAL is long.
 *
 * Time is read from `elapsed` (ms, monotonic; a manual clock's stands still within a turn,
 * so there only the counts bound a turn). Footgun: a piece that returns a promise is timed
 * only until it returns, so on a store that answers later only `max` bounds a turn.
 */
export class Pacer {
  readonly #elapsed: () => number
  readonly #turnMs: number
  readonly #max: number
  #size: number
  #started = 0

  /** `max`: the most items of a piece; `turnMs`: the turn's budget (default {@link TURN_MS}). */
  constructor (elapsed: () => number, max: number, turnMs = TURN_MS) {
    this.#elapsed = elapsed
    this.#turnMs = turnMs
    this.#max = max
    this.#size = Math.min(max, FIRST_PIECE)
  }

  /** Starts a turn's budget. */
  begin (): void {
    this.#started = this.#elapsed()
  }

  /** Whether the turn's budget is spent. */
  get spent (): boolean {
    return this.#elapsed() - this.#started >= this.#turnMs
  }

  /** Items the next piece may take: 1..max. */
  get size (): number {
    return this.#size
  }

  /** Runs a piece of `items` items and learns its cost per item for the pieces after it. */
  run<T> (items: number, piece: () => T): T {
    const from = this.#elapsed()
    try {
      return piece()
    } finally {
      const ms = this.#elapsed() - from
      // Aim a piece at half the budget: room for a second, and for the odd slow one.
      const fits = ms > 0 ? Math.floor((this.#turnMs / 2) * items / ms) : Infinity
      this.#size = Math.max(1, Math.min(this.#max, 2 * this.#size, fits))
    }
  }
}

/** What a {@link Pacer} reads time from: the clock's `elapsed()`, else `performance.now()`. */
export function stopwatch (clock: Clock): () => number {
  const { elapsed } = clock
  return elapsed === undefined ? () => performance.now() : () => elapsed.call(clock)
}

/** Commands a scan step looks at, matching or not, in one event-loop turn. */
export const STEP_EXAMINE = 1024

/**
 * Commands one step of deleting a device's commands deletes, in one transaction and one
 * event-loop turn. Smaller than a scan step: a delete writes every index of every row, and a
 * step of 1024 took 30 ms on SQLite when the WAL had outgrown its checkpointer.
 */
export const DELETE_STEP = 256

// What the rows of one scan step may add up to, and how many there may be at most.
const STEP_BYTES = 1 << 20
const STEP_ROWS = 256
// A command's keys, timestamps, ids and punctuation on the wire, beyond its strings.
const FIXED_BYTES = 256

/** About how many bytes a command takes on the wire: exact for its text, generous for the rest. */
export function wireBytes (record: CommandRecord): number {
  return FIXED_BYTES + Buffer.byteLength(record.command) + Buffer.byteLength(record.deviceId) +
    (record.parameters === null ? 0 : Buffer.byteLength(record.parameters)) +
    (record.result === null ? 0 : Buffer.byteLength(record.result)) +
    (record.status === null ? 0 : Buffer.byteLength(record.status))
}

/**
 * How many rows the next scan step may return: as many as fit in a megabyte, judged by the
 * rows seen so far, and by the largest a row may be until one has been seen. A step reads
 * rows the store has to copy out and parse: this keeps it short whatever the rows hold.
 */
export class StepSize {
  readonly #largest: number
  #bytes = 0
  #rows = 0

  /** `largestRow`: the most bytes a command may take on the wire under the broker's limits. */
  constructor (largestRow: number) {
    this.#largest = largestRow
  }

  /** Rows the next step may return, 1..256. */
  get take (): number {
    const perRow = this.#rows === 0 ? this.#largest : Math.max(1, Math.ceil(this.#bytes / this.#rows))
    return Math.max(1, Math.min(STEP_ROWS, Math.floor(STEP_BYTES / perRow)))
  }

  /** Counts a row that a step returned; returns its size on the wire. */
  saw (record: CommandRecord): number {
    const bytes = wireBytes(record)
    this.#bytes += bytes
    this.#rows++
    return bytes
  }
}

/** The most bytes one command may take on the wire: a name, a status and two JSON values at their limits. */
export function largestCommand (maxPayloadBytes: number): number {
  return FIXED_BYTES + 128 * 3 + 48 + 3 * maxPayloadBytes
}
