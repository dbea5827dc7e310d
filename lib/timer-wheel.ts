import { systemClock, type Clock, type TimerHandle } from './clock.js'
import { Pacer, stopwatch, TURN_MS } from './turns.js'

/** Options of {@link TimerWheel}. */
export interface TimerWheelOptions {
  /**
   * Receives the keys that fell due, in due-tick order, in pieces sized to
   * fit the turn's time budget (see `turnMs`; at most `batch` per call). Must
   * not throw: an exception ends the turn's firing and is rethrown from the
   * timer callback after the wheel has re-armed itself.
   */
  onExpire: (keys: number[]) => void
  /** Source of time. Default: {@link systemClock}. */
  clock?: Clock
  /** Resolution in ms: an entry fires at most one tick after its time. Default 100. */
  tick?: number
  /**
   * Slots in one revolution, a power of two. Entries further away than
   * `slots * tick` wait in their slot for later revolutions. Default 4096.
   */
  slots?: number
  /**
   * Most keys fired per event-loop turn (so at most this many per `onExpire`
   * call). When more are due, the rest follow on later turns through
   * `setImmediate`, so a burst never blocks the event loop in one piece, even
   * when a manual clock jumps hours ahead in one `advance()`. Default 1000.
   */
  batch?: number
  /**
   * Most milliseconds one event-loop turn spends firing, `onExpire` included,
   * read from `clock.elapsed` (else `performance.now()`): once spent, the rest
   * follows on later turns, however cheap or dear each key is. The first
   * pieces of a burst are small (64 keys) and grow while they fit. An
   * `onExpire` that returns before its work is done (on a store that answers
   * later) is bounded by `batch` alone. Default {@link TURN_MS} (5).
   */
  turnMs?: number
  /**
   * Asked before each piece: while it returns true, the wheel fires nothing and asks again a
   * tick later (entries wait, later than their tick). For a consumer that must not write now,
   * such as a store behind on its upkeep. Default: never holds.
   */
  hold?: () => boolean
}

/**
 * A hashed timer wheel: many pending deadlines, one native timer.
 *
 * Entries are `(key, at)` pairs of numbers, stored in parallel arrays in the
 * slot of the tick boundary at or after them (`ceil(at / tick) mod slots`), so
 * an entry costs two array elements instead of a `Timeout` object and a
 * closure. One timer, from the injected clock, is armed for the next boundary
 * whose slot holds entries. An entry never fires before `at` (each is checked
 * against `clock.now()`), and at most one tick after it when the event loop is
 * free; an `at` on a boundary fires exactly on time.
 *
 * Footgun: `cancel` needs the same `at` that `add` was given, and keys are
 * not deduplicated: adding a key twice fires it twice.
 */
export class TimerWheel {
  readonly #onExpire: (keys: number[]) => void
  readonly #clock: Clock
  readonly #tick: number
  readonly #mask: number
  readonly #batch: number
  readonly #pacer: Pacer
  readonly #hold: () => boolean
  // Parallel arrays per slot; a slot is undefined while empty, so an idle wheel holds no arrays.
  readonly #keys: Array<number[] | undefined>
  readonly #ats: Array<number[] | undefined>
  // Entries whose tick was already behind the cursor when added: due now, fired first.
  #lateKeys: number[] = []
  #lateAts: number[] = []
  #size = 0
  #lag = 0
  // Tick k is the boundary at k * tick ms and holds the entries with ceil(at / tick) === k.
  // Invariant: every entry of a tick before #cursor has fired, and #cursor * tick > the last
  // `now` a run has seen, or #cursor is where a run out of budget stopped.
  #cursor: number
  #timer: TimerHandle | undefined
  #armedAt = Infinity
  #immediate: NodeJS.Immediate | undefined
  // Keys that may still fire in this event-loop turn; #turnEnd refills it on the next turn.
  #budget: number
  #turnEnd: NodeJS.Immediate | undefined
  #running = false
  #closed = false
  readonly #onTimer = (): void => {
    this.#timer = undefined
    this.#armedAt = Infinity
    this.#run()
  }

  readonly #onImmediate = (): void => {
    this.#immediate = undefined
    this.#run()
  }

  // Scheduled before any continuation of the same turn, so a continuation starts refilled.
  readonly #onTurnEnd = (): void => {
    this.#turnEnd = undefined
    this.#budget = this.#batch
  }

  constructor (options: TimerWheelOptions) {
    const { onExpire, clock = systemClock, tick = 100, slots = 4096, batch = 1000, turnMs = TURN_MS, hold = never } = options
    if (typeof onExpire !== 'function') {
      throw new TypeError(`TimerWheel: onExpire must be a function, received ${typeof onExpire}`)
    }
    if (!Number.isInteger(tick) || tick < 1) {
      throw new RangeError(`TimerWheel: tick must be an integer >= 1 (ms), received ${String(tick)}`)
    }
    if (!Number.isInteger(slots) || slots < 1 || slots > 2 ** 24 || (slots & (slots - 1)) !== 0) {
      throw new RangeError(`TimerWheel: slots must be a power of two between 1 and 2^24, received ${String(slots)}`)
    }
    if (!Number.isInteger(batch) || batch < 1) {
      throw new RangeError(`TimerWheel: batch must be an integer >= 1, received ${String(batch)}`)
    }
    if (typeof hold !== 'function') {
      throw new TypeError(`TimerWheel: hold must be a function, received ${typeof hold}`)
    }
    if (typeof turnMs !== 'number' || !(turnMs > 0) || !Number.isFinite(turnMs)) {
      throw new RangeError(`TimerWheel: turnMs must be a finite number > 0 (ms), received ${String(turnMs)}`)
    }
    this.#onExpire = onExpire
    this.#clock = clock
    this.#tick = tick
    this.#mask = slots - 1
    this.#batch = batch
    this.#budget = batch
    this.#pacer = new Pacer(stopwatch(clock), batch, turnMs)
    this.#hold = hold
    this.#keys = new Array<number[] | undefined>(slots).fill(undefined)
    this.#ats = new Array<number[] | undefined>(slots).fill(undefined)
    this.#cursor = Math.floor(clock.now() / tick) + 1
  }

  /** Entries added and neither fired nor cancelled. */
  get size (): number {
    return this.#size
  }

  /** How late (ms) the most overdue entry of the last firing fired: a tick at most while the loop keeps up. 0 before any. */
  get lag (): number {
    return this.#lag
  }

  /**
   * Schedules `key` to be handed to `onExpire` once `clock.now() >= at`.
   * `at` is epoch ms and may be in the past (then it fires within a tick).
   * Throws `RangeError` for a non-finite `at`, `Error` after `close()`.
   */
  add (key: number, at: number): void {
    if (this.#closed) throw new Error('TimerWheel: add() after close()')
    if (!Number.isFinite(at)) throw new RangeError(`TimerWheel: at must be a finite number, received ${String(at)}`)
    const tick = Math.ceil(at / this.#tick)
    let fireAt: number
    if (tick < this.#cursor) {
      this.#lateKeys.push(key)
      this.#lateAts.push(at)
      fireAt = at
    } else {
      // `&` keeps the low 32 bits of the tick number, which is all `tick mod slots` needs.
      const slot = tick & this.#mask
      const keys = this.#keys[slot]
      if (keys === undefined) {
        this.#keys[slot] = [key]
        this.#ats[slot] = [at]
      } else {
        keys.push(key)
        ;(this.#ats[slot] as number[]).push(at)
      }
      fireAt = tick * this.#tick
    }
    this.#size++
    if (fireAt < this.#armedAt && !this.#running && this.#immediate === undefined) this.#arm(fireAt)
  }

  /**
   * Removes one entry with this `key` and `at` (the `at` it was added with).
   * Returns whether one was found. O(entries in its slot).
   */
  cancel (key: number, at: number): boolean {
    if (this.#closed || !Number.isFinite(at)) return false
    const slot = Math.ceil(at / this.#tick) & this.#mask
    const keys = this.#keys[slot]
    if (keys !== undefined && removeEntry(keys, this.#ats[slot] as number[], key, at)) {
      if (keys.length === 0) this.#freeSlot(slot)
      this.#size--
      return true
    }
    if (removeEntry(this.#lateKeys, this.#lateAts, key, at)) {
      this.#size--
      return true
    }
    return false
  }

  /** Drops every entry and stops the timer; nothing fires afterwards. Idempotent. */
  close (): void {
    this.#closed = true
    this.#disarm()
    if (this.#immediate !== undefined) clearImmediate(this.#immediate)
    if (this.#turnEnd !== undefined) clearImmediate(this.#turnEnd)
    this.#immediate = undefined
    this.#turnEnd = undefined
    this.#keys.fill(undefined)
    this.#ats.fill(undefined)
    this.#lateKeys = []
    this.#lateAts = []
    this.#size = 0
  }

  #run (): void {
    if (this.#closed) return
    const now = this.#clock.now()
    const nowTick = Math.floor(now / this.#tick)
    const earliest = { at: now }
    let budget = this.#budget
    let outOfTime = false
    let held = false
    // The first run of a turn starts the turn's time budget (a continuation comes after
    // #onTurnEnd, which ends the last).
    if (this.#turnEnd === undefined) this.#pacer.begin()
    // While running (onExpire included), add() only files entries; the end of the run arms.
    this.#running = true
    try {
      // Ticks up to nowTick have passed. Ticks further back than one revolution share their
      // slots with later ones: visiting the last `slots` ticks visits every slot once, and the
      // per-entry check fires whatever is due, whichever revolution it belongs to.
      if (nowTick - this.#cursor > this.#mask) this.#cursor = nowTick - this.#mask
      while (budget > 0) {
        if (this.#hold()) {
          held = true
          break
        }
        const room = Math.min(budget, this.#pacer.size)
        const due = this.#collect(now, nowTick, room, earliest)
        if (due.length === 0) break
        budget -= due.length
        this.#budget = budget
        this.#size -= due.length
        this.#lag = now - earliest.at
        this.#turnEnd ??= setImmediate(this.#onTurnEnd)
        this.#pacer.run(due.length, () => { this.#onExpire(due) })
        if (this.#closed) break
        // Checked before the test below: a turn may hold many runs (a timer's callback re-arms
        // it for the next boundary, and a manual clock fires it again at once), each one short.
        if (this.#pacer.spent) {
          outOfTime = true
          break
        }
        // A short piece took everything due.
        if (due.length < room) break
      }
    } finally {
      this.#running = false
      if (this.#closed) {
        // close() was called from onExpire: stay closed.
      } else if (held) {
        // What is due stays due: ask again a tick from now.
        this.#arm(now + this.#tick)
      } else if (budget === 0 || outOfTime) {
        // Out of budget for this turn: more may be due. Yield to I/O, then carry on where the
        // cursor stopped. No timer is armed meanwhile; the continuation arms one when done.
        this.#immediate ??= setImmediate(this.#onImmediate)
      } else {
        this.#armNext()
      }
    }
  }

  // Takes up to `room` due keys: the late entries first, then the slots from the cursor up to
  // nowTick. The cursor stays on a slot that may still hold due entries.
  #collect (now: number, nowTick: number, room: number, earliest: { at: number }): number[] {
    const due: number[] = []
    room = fire(this.#lateKeys, this.#lateAts, now, room, due, earliest)
    while (room > 0 && this.#cursor <= nowTick) {
      const slot = this.#cursor & this.#mask
      const keys = this.#keys[slot]
      if (keys !== undefined) {
        room = fire(keys, this.#ats[slot] as number[], now, room, due, earliest)
        if (keys.length === 0) this.#freeSlot(slot)
      }
      if (room === 0) break
      this.#cursor++
    }
    return due
  }

  // Arms for the late entries, else for the first non-empty slot from the cursor. An empty
  // wheel scans every slot once and arms nothing: that happens once, when a run empties it.
  #armNext (): void {
    if (this.#lateKeys.length > 0) {
      // Late entries are normally due already; if the clock stepped back, wait for them.
      let earliest = Infinity
      for (const at of this.#lateAts) if (at < earliest) earliest = at
      this.#arm(earliest)
      return
    }
    for (let tick = this.#cursor, end = this.#cursor + this.#mask; tick <= end; tick++) {
      if (this.#keys[tick & this.#mask] !== undefined) {
        this.#arm(tick * this.#tick)
        return
      }
    }
  }

  #arm (fireAt: number): void {
    this.#disarm()
    this.#armedAt = fireAt
    // Node's timers take at most 2^31 - 1 ms; a farther entry just wakes the wheel early, once.
    this.#timer = this.#clock.setTimeout(this.#onTimer, Math.min(Math.max(0, fireAt - this.#clock.now()), MAX_DELAY))
  }

  #disarm (): void {
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer)
    this.#timer = undefined
    this.#armedAt = Infinity
  }

  #freeSlot (slot: number): void {
    this.#keys[slot] = undefined
    this.#ats[slot] = undefined
  }
}

const MAX_DELAY = 2 ** 31 - 1
const never = (): boolean => false

// Moves up to `budget` entries with at <= now from the parallel arrays into `due`,
// swapping each with the last element so removal is O(1). Returns the budget left.
function fire (keys: number[], ats: number[], now: number, budget: number, due: number[], earliest: { at: number }): number {
  let i = 0
  while (i < keys.length && budget > 0) {
    const at = ats[i] as number
    if (at <= now) {
      if (at < earliest.at) earliest.at = at
      due.push(keys[i] as number)
      const last = keys.length - 1
      keys[i] = keys[last] as number
      ats[i] = ats[last] as number
      keys.pop()
      ats.pop()
      budget--
    } else {
      i++
    }
  }
  return budget
}

function removeEntry (keys: number[], ats: number[], key: number, at: number): boolean {
  for (let i = 0; i < keys.length; i++) {
    if (keys[i] === key && ats[i] === at) {
      const last = keys.length - 1
      keys[i] = keys[last] as number
      ats[i] = ats[last] as number
      keys.pop()
      ats.pop()
      return true
    }
  }
  return false
}
