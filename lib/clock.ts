import { performance } from 'node:perf_hooks'

/**
 * The broker's only source of time. Inject one with `createBroker(store, { clock })`;
 * tests use {@link manualClock} so that nothing ever sleeps.
 *
 * `now()` is epoch milliseconds for timing: when a command expires. `date()`, if
 * given, is the wall clock in epoch milliseconds, for the times clients see
 * (`timestamp`, `lastUpdated`) and token expiry; without it `now()` serves
 * both. Timers returned by `setTimeout` must not keep the process alive (the
 * system clock `unref()`s them); `clearTimeout` must accept a handle that has
 * already fired. `elapsed()`, if given, is a fine monotonic reading in ms that
 * bounds how long one event-loop turn may spend expiring commands; without it
 * `performance.now()` serves.
 */
export interface Clock {
  now: () => number
  setTimeout: (callback: () => void, ms: number) => TimerHandle
  clearTimeout: (handle: TimerHandle) => void
  date?: () => number
  elapsed?: () => number
}

/** Whatever a clock's `setTimeout` returns; only ever passed back to its `clearTimeout`. */
export type TimerHandle = unknown

// The wall clock when this module loaded, less the monotonic clock then: `now()` reads
// epoch ms that move with the monotonic clock from there, so a step of the wall clock (an NTP
// correction, a suspended VM) neither delays nor hastens an expiry.
const origin = Date.now() - performance.now()

/**
 * The real clock. `now()` is monotonic: epoch ms at start-up, then moving with
 * `performance.now()`, so expiry never follows a wall-clock step; `date()` is
 * `Date.now()`, `elapsed()` is `performance.now()`. Timers are Node's, each
 * `unref()`'d so that a pending expiry never keeps a process alive. The
 * default clock.
 */
export const systemClock: Clock = Object.freeze({
  // Whole milliseconds, as every time the broker stores: floor keeps it from going back.
  now: (): number => Math.floor(origin + performance.now()),
  date: (): number => Date.now(),
  elapsed: (): number => performance.now(),
  setTimeout (callback: () => void, ms: number): TimerHandle {
    return setTimeout(callback, ms).unref()
  },
  clearTimeout (handle: TimerHandle): void {
    clearTimeout(handle as NodeJS.Timeout)
  }
})
