import { BrokerError, describeCause, isBrokerError } from '../errors.js'
import type {
  CommandPage, CommandPatch, CommandRecord, CommandScan, CountPage, Cursor, DeviceRecord, ExpiringPage, NewCommandRecord,
  SortQuery, Store
} from './store.js'

const METHODS = [
  'transaction', 'getDevice', 'saveDevice', 'deleteDevice', 'deleteCommands', 'insertCommand', 'getCommand', 'updateCommand',
  'expireCommands', 'scanCommands', 'sortCommands', 'countPending', 'expiringCommands', 'lastCommandId', 'close'
] as const satisfies ReadonlyArray<keyof Store>

/**
 * Wraps a store so that whatever it throws comes out as `BrokerError`
 * `ERR_STORE`, the original in `cause`. The broker answers those with 500 and
 * reports them; anything else it catches is its own bug (`ERR_INTERNAL`).
 * Throws `TypeError` if `store` lacks a method of the {@link Store} interface.
 */
export function guardStore (store: Store): Store {
  for (const name of METHODS) {
    const method = (store as unknown as Record<string, unknown> | null)?.[name]
    if (typeof method !== 'function') {
      throw new TypeError(`createBroker: store must implement the Store interface; store.${name} is ${typeof method}`)
    }
  }
  return new GuardedStore(store)
}

// One plain method per call, no rest arguments: these sit on every request's path.
class GuardedStore implements Store {
  readonly #store: Store

  constructor (store: Store) {
    this.#store = store
  }

  transaction<T>(fn: () => T): T {
    try { return this.#store.transaction(fn) } catch (err) { throw storeError(err) }
  }

  getDevice (id: string): DeviceRecord | undefined {
    try { return this.#store.getDevice(id) } catch (err) { throw storeError(err) }
  }

  saveDevice (device: DeviceRecord): void {
    try { this.#store.saveDevice(device) } catch (err) { throw storeError(err) }
  }

  deleteDevice (id: string): boolean {
    try { return this.#store.deleteDevice(id) } catch (err) { throw storeError(err) }
  }

  deleteCommands (deviceId: string, limit: number): number {
    try { return this.#store.deleteCommands(deviceId, limit) } catch (err) { throw storeError(err) }
  }

  insertCommand (command: NewCommandRecord): number {
    try { return this.#store.insertCommand(command) } catch (err) { throw storeError(err) }
  }

  getCommand (id: number, now: number): CommandRecord | undefined {
    try { return this.#store.getCommand(id, now) } catch (err) { throw storeError(err) }
  }

  updateCommand (id: number, deviceId: string, patch: CommandPatch, lastUpdated: number, now: number): CommandRecord | undefined {
    try { return this.#store.updateCommand(id, deviceId, patch, lastUpdated, now) } catch (err) { throw storeError(err) }
  }

  expireCommands (ids: readonly number[], now: number): CommandRecord[] {
    try { return this.#store.expireCommands(ids, now) } catch (err) { throw storeError(err) }
  }

  scanCommands (scan: CommandScan, now: number): CommandPage {
    try { return this.#store.scanCommands(scan, now) } catch (err) { throw storeError(err) }
  }

  sortCommands (query: SortQuery, now: number, maxWindow: number): CommandRecord[] | undefined {
    try { return this.#store.sortCommands(query, now, maxWindow) } catch (err) { throw storeError(err) }
  }

  countPending (deviceId: string, now: number, cursor: Cursor | undefined, examine: number): CountPage {
    try { return this.#store.countPending(deviceId, now, cursor, examine) } catch (err) { throw storeError(err) }
  }

  expiringCommands (afterId: number, maxId: number, examine: number): ExpiringPage {
    try { return this.#store.expiringCommands(afterId, maxId, examine) } catch (err) { throw storeError(err) }
  }

  lastCommandId (): number {
    try { return this.#store.lastCommandId() } catch (err) { throw storeError(err) }
  }

  close (): void | Promise<void> {
    try { return this.#store.close() } catch (err) { throw storeError(err) }
  }
}

function storeError (err: unknown): BrokerError {
  // A store call nested in a guarded transaction is already wrapped.
  if (isBrokerError(err, 'ERR_STORE')) return err
  return new BrokerError('ERR_STORE', `store failed: ${describeCause(err)}`, { cause: err })
}
