// One wait for one value, bounded by a timeout on a (manual) clock, an AbortSignal, and the
// close of a test broker. Internal: nextCommand and recordingSession's next() use it.
import type { Broker } from '../broker.js'
import { systemClock, type Clock } from '../clock.js'
import { BrokerError } from '../errors.js'
import { describe } from '../options.js'
import { aborted, checkSignal, checkTimeout } from '../waiting.js'
import { kitOf } from './kit.js'

/** How long a testing helper waits, and what may stop it. */
export interface WaitOptions {
  /** Aborting it rejects the wait with `ERR_ABORTED` (the reason in `cause`). */
  signal?: AbortSignal | undefined
  /**
   * Most milliseconds to wait, then `ERR_TIMEOUT`. Counted on the test broker's manual clock
   * (nothing happens until the test advances it), or on `clock`. Default: no limit.
   */
  timeout?: number | undefined
  /**
   * The clock `timeout` counts on, for a broker `createTestBroker` did not make. Default: the
   * test broker's clock; for any other broker, the system clock.
   */
  clock?: Clock | undefined
}

type Outcome<T> = { value: T } | { error: unknown }

/**
 * Resolves with the first value `listen` delivers. `listen` starts listening and returns
 * how to stop; it may deliver at once, or throw. Rejects with `ERR_TIMEOUT`, `ERR_ABORTED`,
 * or `ERR_CLOSED` (the test broker closed, or a function added to `closing` was called).
 * Throws `TypeError`/`RangeError` for bad options.
 */
export function waitFor<T> (who: string, broker: Broker, options: WaitOptions, listen: (deliver: (value: T) => void) => () => void, closing?: Set<() => void>): Promise<T> {
  const { signal, timeout } = check(who, options)
  const kit = kitOf(broker)
  const clock = options.clock ?? kit?.clock ?? systemClock
  if (signal?.aborted === true) return Promise.reject(aborted(who, signal))
  const sets = [kit?.closing, closing].filter((set) => set !== undefined)
  return new Promise<T>((resolve, reject) => {
    let settled = false
    let stop: (() => void) | undefined
    let timer: unknown
    const settle = (outcome: Outcome<T>): void => {
      if (settled) return
      settled = true
      stop?.()
      for (const set of sets) set.delete(onClose)
      if (timer !== undefined) clock.clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      if ('value' in outcome) resolve(outcome.value)
      else reject(outcome.error)
    }
    const onAbort = (): void => { settle({ error: aborted(who, signal as AbortSignal) }) }
    const onClose = (): void => { settle({ error: new BrokerError('ERR_CLOSED', `${who}: closed while waiting`) }) }
    signal?.addEventListener('abort', onAbort, { once: true })
    for (const set of sets) set.add(onClose)
    if (timeout !== undefined) {
      timer = clock.setTimeout(() => { settle({ error: new BrokerError('ERR_TIMEOUT', `${who}: nothing came within ${timeout} ms`) }) }, timeout)
    }
    try {
      const unlisten = listen((value) => { settle({ value }) })
      // Delivered at once: stop listening now.
      if (settled) unlisten()
      else stop = unlisten
    } catch (error) {
      settle({ error })
    }
  })
}

function check (who: string, options: WaitOptions): WaitOptions {
  if (typeof options !== 'object' || options === null) throw new TypeError(`${who}: options must be an object, received ${describe(options)}`)
  const { signal, timeout, clock } = options
  checkSignal(who, signal)
  checkTimeout(who, timeout)
  if (clock !== undefined && (typeof clock?.setTimeout !== 'function' || typeof clock.clearTimeout !== 'function')) {
    throw new TypeError(`${who}: options.clock must be a Clock (setTimeout and clearTimeout), received ${describe(clock)}`)
  }
  return options
}
