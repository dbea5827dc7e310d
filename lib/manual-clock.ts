import type { Clock, TimerHandle } from './clock.js'

/**
 * A {@link Clock} that only moves when told to: `advance(ms)` runs, in due
 * order and synchronously, every timer that falls due, with `now()` reading
 * each timer's own due time while it runs. For tests: no sleeps, no flakiness.
 * Its `elapsed()` always reads 0: work takes no time on it, so only counts
 * (`expiryBatch`), never the machine's speed, decide how much work a turn does.
 * To bound turns by real time on a manual clock (a benchmark), assign it an
 * `elapsed` of `() => performance.now()`.
 */
export interface ManualClock extends Clock {
  /**
   * Moves time forward by `ms` (>= 0) and fires what falls due, including
   * timers those timers set. Returns how many timers fired. Throws
   * `RangeError` for a negative or non-finite `ms`, and `Error` when called
   * from inside one of this clock's own timers.
   */
  advance: (ms: number) => number
  /** Timers set and neither fired nor cleared. */
  readonly pending: number
}

interface ManualTimer {
  readonly due: number
  readonly callback: () => void
}

/**
 * Creates a {@link ManualClock} reading `start` (epoch ms, default 0).
 *
 * @example
 * const clock = manualClock(Date.parse('2026-01-01'))
 * const broker = createBroker(memoryStore(), { secret, clock })
 * clock.advance(30_000) // fires whatever expires in the next 30 s
 */
export function manualClock (start = 0): ManualClock {
  if (!Number.isFinite(start)) {
    throw new RangeError(`manualClock: start must be a finite number of epoch milliseconds, received ${String(start)}`)
  }
  let now = start
  let nextId = 1
  let advancing = false
  // Map iteration is insertion order, so equal due times fire in the order they were set.
  const timers = new Map<number, ManualTimer>()

  function earliest (limit: number): number | undefined {
    let bestId: number | undefined
    let bestDue = limit
    for (const [id, timer] of timers) {
      if (timer.due < bestDue || (timer.due === bestDue && bestId === undefined)) {
        bestId = id
        bestDue = timer.due
      }
    }
    return bestId
  }

  return {
    now: () => now,
    elapsed: () => 0,
    setTimeout (callback: () => void, ms: number): TimerHandle {
      const id = nextId++
      // Like Node, a negative or NaN delay means "as soon as possible".
      timers.set(id, { due: now + (ms > 0 ? ms : 0), callback })
      return id
    },
    clearTimeout (handle: TimerHandle): void {
      timers.delete(handle as number)
    },
    advance (ms: number): number {
      if (!(ms >= 0) || !Number.isFinite(ms)) {
        throw new RangeError(`manualClock.advance: ms must be a finite number >= 0, received ${String(ms)}`)
      }
      if (advancing) {
        throw new Error('manualClock.advance: called from inside a timer of the same clock')
      }
      advancing = true
      const target = now + ms
      let fired = 0
      try {
        for (let id = earliest(target); id !== undefined; id = earliest(target)) {
          const timer = timers.get(id) as ManualTimer
          timers.delete(id)
          // Timers set in the past (due < now) still see time move forward only.
          if (timer.due > now) now = timer.due
          fired++
          timer.callback()
        }
        now = target
      } finally {
        // A timer that threw leaves time at its own due time: what is still due fires next.
        advancing = false
      }
      return fired
    },
    get pending (): number {
      return timers.size
    }
  }
}
