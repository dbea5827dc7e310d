import { BrokerError } from './errors.js'
import { describe } from './options.js'

// What every call that waits takes (`broker.invoke`, `broker.commands`, the test kit's waits):
// an AbortSignal and a timeout in ms, checked and reported the same way everywhere.

/** Throws `TypeError` unless `signal` is undefined or an AbortSignal; `who` names the call. */
export function checkSignal (who: string, signal: unknown): void {
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw new TypeError(`${who}: options.signal must be an AbortSignal, received ${describe(signal)}`)
}

/** Throws `RangeError` unless `timeout` is undefined or a finite number of ms >= 0. */
export function checkTimeout (who: string, timeout: unknown): void {
  if (timeout !== undefined && (typeof timeout !== 'number' || !Number.isFinite(timeout) || timeout < 0)) {
    throw new RangeError(`${who}: options.timeout must be a finite number of ms >= 0, received ${describe(timeout)}`)
  }
}

/** The `ERR_ABORTED` a wait rejects with once `signal` is aborted; its reason is the cause. */
export function aborted (who: string, signal: AbortSignal): BrokerError {
  return new BrokerError('ERR_ABORTED', `${who}: aborted`, { cause: signal.reason })
}
