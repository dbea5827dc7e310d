/**
 * The broker's only source of time. Inject one with `createBroker(store, { clock })`;
 * tests use {@link manualClock} so that nothing ever sleeps.
 *
 * `now()` is epoch milliseconds. Timers returned by `setTimeout` must not keep
 * the process alive (the system clock `unref()`s them); `clearTimeout` must
 * accept a handle that has already fired.
 */
export interface Clock {
  now: () => number
  setTimeout: (callback: () => void, ms: number) => TimerHandle
  clearTimeout: (handle: TimerHandle) => void
}

/** Whatever a clock's `setTimeout` returns; only ever passed back to its `clearTimeout`. */
export type TimerHandle = unknown

/**
 * The real clock: `Date.now()` and Node's timers, each `unref()`'d so that a
 * pending expiry never keeps a process alive. The default clock.
 */
export const systemClock: Clock = Object.freeze({
  now: Date.now,
  setTimeout (callback: () => void, ms: number): TimerHandle {
    return setTimeout(callback, ms).unref()
  },
  clearTimeout (handle: TimerHandle): void {
    clearTimeout(handle as NodeJS.Timeout)
  }
})
