// What the testing helpers share: what createTestBroker knows about the brokers it made (the
// defaults the other helpers take from it), and their checks and errors. Internal.
import { Broker } from '../broker.js'
import type { ManualClock } from '../manual-clock.js'
import { BrokerError } from '../errors.js'
import { describe } from '../options.js'
import type { ErrorReply } from '../schema.js'

/** A test broker's defaults, and the waits to end when it closes. */
export interface Kit {
  readonly clock: ManualClock
  readonly tokens: { readonly admin: string, readonly client: string, readonly device: string }
  /** Called once the broker has closed: each rejects a wait with ERR_CLOSED. */
  readonly closing: Set<() => void>
}

const kits = new WeakMap<Broker, Kit>()

/** Remembers what `createTestBroker` made `broker` with. */
export function register (broker: Broker, kit: Kit): void {
  kits.set(broker, kit)
}

/** The kit of a broker `createTestBroker` made; undefined for any other broker. */
export function kitOf (broker: Broker): Kit | undefined {
  return kits.get(broker)
}

/** Throws a `TypeError` unless `broker` is a `Broker`. */
export function checkBroker (who: string, broker: unknown): asserts broker is Broker {
  if (!(broker instanceof Broker)) throw new TypeError(`${who}: broker must be a Broker, received ${describe(broker)}`)
}

/** `ERR_REFUSED` for a request the broker answered with an error. */
export function refused (what: string, reply: ErrorReply): BrokerError {
  return new BrokerError('ERR_REFUSED', `${what}: ${reply.code} ${reply.error}`, { reply })
}
