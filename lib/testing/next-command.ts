// nextCommand(): the next command inserted for a device, as a promise.
import type { Broker } from '../broker.js'
import { describe } from '../options.js'
import type { Command } from '../schema.js'
import { checkBroker } from './kit.js'
import { waitFor, type WaitOptions } from './wait.js'

/**
 * Resolves with the next command inserted for `deviceId` (the twelve-key command, deeply
 * frozen), from any process of the broker's cluster. It listens from the moment it is called,
 * in process and without a token (as `broker.subscribe` does), so call it before the code
 * under test inserts: `const next = nextCommand(broker, 'lamp-1')`, then act, then
 * `await next`. Rejects with a `BrokerError`: `ERR_TIMEOUT` (`options.timeout` ms on the test
 * broker's manual clock: advance it), `ERR_ABORTED` (`options.signal`), `ERR_CLOSED` (the
 * broker closed, or was). Throws `TypeError`/`RangeError` for bad arguments.
 */
export function nextCommand (broker: Broker, deviceId: string, options: WaitOptions = {}): Promise<Command> {
  checkBroker('nextCommand', broker)
  if (typeof deviceId !== 'string' || deviceId === '') throw new TypeError(`nextCommand: deviceId must be a non-empty string, received ${describe(deviceId)}`)
  return waitFor('nextCommand', broker, options, (deliver) => broker.subscribe({ deviceId }, deliver))
}
