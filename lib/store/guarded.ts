import { BrokerError, describeCause, isBrokerError } from '../errors.js'
import type {
  Awaitable, CommandPage, CommandRecord, CommandScan, CommitResult, CountPage, Cursor, DeviceRecord, ExpiringPage, SharedSpace,
  SortQuery, Store, WriteBatch
} from './store.js'

const METHODS = [
  'getDevice', 'saveDevice', 'deleteDevice', 'deleteCommands', 'commit', 'getCommand', 'expireCommands', 'scanCommands',
  'sortCommands', 'countPending', 'expiringCommands', 'lastCommandId', 'close'
] as const satisfies ReadonlyArray<keyof Store>

/**
 * Wraps a store so that whatever it throws or rejects with comes out as `BrokerError`
 * `ERR_STORE`, the original in `cause`. The broker answers those with 500 and reports them;
 * anything else it catches is its own bug (`ERR_INTERNAL`). A synchronous answer stays
 * synchronous. Throws `TypeError` if `store` lacks a method of the {@link Store} interface,
 * or has a `shared` that is not a {@link SharedSpace}.
 */
export function guardStore (store: Store): Store {
  for (const name of METHODS) {
    const method = (store as unknown as Record<string, unknown> | null)?.[name]
    if (typeof method !== 'function') {
      throw new TypeError(`createBroker: store must implement the Store interface; store.${name} is ${typeof method}`)
    }
  }
  const { shared } = store
  if (shared !== undefined) {
    const space = shared as unknown as Partial<SharedSpace> | null
    if (typeof space?.claimExpired !== 'function' || typeof space.bus?.subscribe !== 'function') {
      throw new TypeError('createBroker: store.shared must be undefined or a SharedSpace with claimExpired() and bus.subscribe()')
    }
  }
  return new GuardedStore(store)
}

// One plain method per call, no rest arguments: these sit on every request's path.
class GuardedStore implements Store {
  readonly #store: Store
  readonly shared: SharedSpace | undefined
  readonly size: (() => Awaitable<number>) | undefined
  readonly behind: (() => boolean) | undefined

  constructor (store: Store) {
    this.#store = store
    const { behind } = store
    this.behind = typeof behind !== 'function'
      ? undefined
      : () => {
          try { return behind.call(store) } catch (err) { throw storeError(err) }
        }
    const { size } = store
    this.size = typeof size !== 'function'
      ? undefined
      : () => {
          try { return guard(size.call(store)) } catch (err) { throw storeError(err) }
        }
    const { shared } = store
    this.shared = shared === undefined
      ? undefined
      : {
          bus: shared.bus,
          claimExpired: (now, limit) => {
            try { return guard(shared.claimExpired(now, limit)) } catch (err) { throw storeError(err) }
          }
        }
  }

  getDevice (id: string): Awaitable<DeviceRecord | undefined> {
    try { return guard(this.#store.getDevice(id)) } catch (err) { throw storeError(err) }
  }

  saveDevice (device: DeviceRecord): Awaitable<void> {
    try { return guard(this.#store.saveDevice(device)) } catch (err) { throw storeError(err) }
  }

  deleteDevice (id: string): Awaitable<boolean> {
    try { return guard(this.#store.deleteDevice(id)) } catch (err) { throw storeError(err) }
  }

  deleteCommands (deviceId: string, limit: number): Awaitable<number> {
    try { return guard(this.#store.deleteCommands(deviceId, limit)) } catch (err) { throw storeError(err) }
  }

  commit (batch: WriteBatch, now: number): Awaitable<CommitResult> {
    try { return guard(this.#store.commit(batch, now)) } catch (err) { throw storeError(err) }
  }

  getCommand (id: number, now: number): Awaitable<CommandRecord | undefined> {
    try { return guard(this.#store.getCommand(id, now)) } catch (err) { throw storeError(err) }
  }

  expireCommands (ids: readonly number[], now: number): Awaitable<CommandRecord[]> {
    try { return guard(this.#store.expireCommands(ids, now)) } catch (err) { throw storeError(err) }
  }

  scanCommands (scan: CommandScan, now: number): Awaitable<CommandPage> {
    try { return guard(this.#store.scanCommands(scan, now)) } catch (err) { throw storeError(err) }
  }

  sortCommands (query: SortQuery, now: number, maxWindow: number): Awaitable<CommandRecord[] | undefined> {
    try { return guard(this.#store.sortCommands(query, now, maxWindow)) } catch (err) { throw storeError(err) }
  }

  countPending (deviceId: string, now: number, cursor: Cursor | undefined, examine: number): Awaitable<CountPage> {
    try { return guard(this.#store.countPending(deviceId, now, cursor, examine)) } catch (err) { throw storeError(err) }
  }

  expiringCommands (afterId: number, maxId: number, examine: number): Awaitable<ExpiringPage> {
    try { return guard(this.#store.expiringCommands(afterId, maxId, examine)) } catch (err) { throw storeError(err) }
  }

  lastCommandId (): Awaitable<number> {
    try { return guard(this.#store.lastCommandId()) } catch (err) { throw storeError(err) }
  }

  close (): Awaitable<void> {
    try { return guard(this.#store.close()) } catch (err) { throw storeError(err) }
  }
}

// A promise rejects with the wrapped error; anything else passes as it is.
function guard<T> (answer: Awaitable<T>): Awaitable<T> {
  return answer instanceof Promise ? answer.catch(rethrow) : answer
}

function rethrow (err: unknown): never {
  throw storeError(err)
}

function storeError (err: unknown): BrokerError {
  // An error that went through a guard already is not wrapped twice.
  if (isBrokerError(err, 'ERR_STORE')) return err
  return new BrokerError('ERR_STORE', `store failed: ${describeCause(err)}`, { cause: err })
}
