import { BrokerError } from './errors.js'
import type { Store } from './store.js'

const METHODS = [
  'transaction', 'getDevice', 'saveDevice', 'deleteDevice', 'insertCommand', 'getCommand', 'updateCommand',
  'expireCommands', 'listCommands', 'commandsAfter', 'countPending', 'expiringCommands', 'lastCommandId', 'close'
] as const satisfies ReadonlyArray<keyof Store>

/**
 * Wraps a store so that whatever it throws comes out as `BrokerError`
 * `ERR_STORE`, the original in `cause`. The broker answers those with 500 and
 * reports them; anything else it catches is its own bug (`ERR_INTERNAL`).
 * Throws `TypeError` if `store` lacks a method of the {@link Store} interface.
 */
export function guardStore (store: Store): Store {
  const guarded: Record<string, unknown> = {}
  for (const name of METHODS) {
    const method = (store as unknown as Record<string, unknown> | null)?.[name]
    if (typeof method !== 'function') {
      throw new TypeError(`createBroker: store must implement the Store interface; store.${name} is ${typeof method}`)
    }
    guarded[name] = (...args: unknown[]): unknown => {
      try {
        return method.apply(store, args)
      } catch (err) {
        throw storeError(err)
      }
    }
  }
  return guarded as unknown as Store
}

function storeError (err: unknown): BrokerError {
  // A store call nested in a guarded transaction is already wrapped.
  if (err instanceof BrokerError && err.code === 'ERR_STORE') return err
  const detail = err instanceof Error ? err.message : String(err)
  return new BrokerError('ERR_STORE', `store failed: ${detail}`, { cause: err })
}
