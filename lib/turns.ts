import type { CommandRecord } from './store/store.js'

/**
 * Resolves on the next event-loop turn, after pending I/O: long work awaits it between
 * bounded steps, so no request or timer waits behind it for long.
 */
export function nextTurn (): Promise<void> {
  return new Promise((resolve) => { setImmediate(resolve) })
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
