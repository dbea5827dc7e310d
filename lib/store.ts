/**
 * The persistence seam. The broker calls these methods synchronously and
 * batches its writes inside `transaction()`; an implementation must make a
 * transaction all-or-nothing, and must never hand out an object it may still
 * change (return a copy, or a frozen object it never changes again): the
 * broker may hold what it receives. `memoryStore()` is the reference
 * implementation; `test/fixtures/store-suite.ts` is the contract, run
 * unchanged against every store.
 *
 * Times are epoch milliseconds. JSON values (`data`, `parameters`, `result`)
 * cross this interface as JSON text, so a store never shares a live object
 * with a caller. Reads take `now` and hide commands whose `expiresAt <= now`:
 * an expired command is gone for clients even before its timer has fired.
 */
export interface Store {
  /** Runs `fn` atomically: if it throws, every write it made is undone and the error rethrown. */
  transaction: <T>(fn: () => T) => T

  getDevice: (id: string) => DeviceRecord | undefined
  /** Creates or replaces the device with this id. */
  saveDevice: (device: DeviceRecord) => void
  /** Deletes the device and all its commands. Returns the deleted commands that had an expiry. */
  deleteDevice: (id: string) => ExpiryRef[]

  /** Stores a command and returns its id: a positive integer, never reused, increasing per call. */
  insertCommand: (command: NewCommandRecord) => number
  /** The command, unless it does not exist or has expired at `now`. */
  getCommand: (id: number, now: number) => CommandRecord | undefined
  /**
   * Sets `status` and/or `result` (each only if the key is present in `patch`), sets
   * `lastUpdated` and marks the command updated. Only touches a command of `deviceId` that has
   * not expired at `now`; returns it as it was before the change, or undefined if there is none.
   */
  updateCommand: (id: number, deviceId: string, patch: CommandPatch, lastUpdated: number, now: number) => CommandRecord | undefined
  /** Deletes those of `ids` whose `expiresAt <= now` and returns them as they were. */
  expireCommands: (ids: readonly number[], now: number) => CommandRecord[]
  /** One page of a device's commands, filtered, sorted and paged as `query` says. */
  listCommands: (query: CommandQuery, now: number) => CommandRecord[]
  /**
   * Commands with `timestamp > after` matching `filter`, in ascending timestamp order (then id),
   * at most `limit` of them after `accept` has kept them. `accept` lets the caller apply checks
   * the store cannot (permissions) without the store stopping short of `limit`.
   */
  commandsAfter: (filter: CommandFilter, after: number, limit: number, now: number, accept: (command: CommandRecord) => boolean) => CommandRecord[]
  /** Commands of the device that were never updated and have not expired at `now`. */
  countPending: (deviceId: string, now: number) => number
  /**
   * Recovery paging: up to `limit` `[id, expiresAt]` pairs of commands that have an expiry,
   * with `afterId < id <= maxId`, in id order.
   */
  expiringCommands: (afterId: number, maxId: number, limit: number) => Array<[id: number, expiresAt: number]>
  /** The highest id ever assigned, 0 if none. */
  lastCommandId: () => number

  /**
   * Releases everything the store holds (statements, file handles, threads). Idempotent.
   * The store is closed on return; a returned promise settles when background work has ended.
   */
  close: () => void | Promise<void>
}

/** A device as stored. `data` is JSON text or null. */
export interface DeviceRecord {
  id: string
  name: string
  data: string | null
  networkId: number | null
  deviceTypeId: number | null
  isBlocked: boolean
}

/** A command as stored. `parameters`/`result` are JSON text or null; times are epoch ms. */
export interface CommandRecord {
  id: number
  command: string
  timestamp: number
  lastUpdated: number
  userId: number | null
  deviceId: string
  networkId: number | null
  deviceTypeId: number | null
  parameters: string | null
  lifetime: number | null
  status: string | null
  result: string | null
  /** When the command expires (epoch ms), or null if it never does. */
  expiresAt: number | null
  /** Whether a `command/update` has touched it. */
  updated: boolean
}

/** What `insertCommand` takes: a command before the store assigns its id. */
export type NewCommandRecord = Omit<CommandRecord, 'id'>

/** The two fields `command/update` may change. A missing key leaves the field as it is. */
export interface CommandPatch {
  status?: string | null
  result?: string | null
}

/** Identifies a command's timer in the expiry wheel. */
export interface ExpiryRef {
  id: number
  expiresAt: number
}

/** Which commands a subscription or history query covers; an absent field matches all. */
export interface CommandFilter {
  deviceId?: string | undefined
  networkIds?: readonly number[] | undefined
  deviceTypeIds?: readonly number[] | undefined
  names?: readonly string[] | undefined
}

/** `command/list` as the store receives it, after validation and defaults. */
export interface CommandQuery {
  deviceId: string
  /** Exclusive lower bound on `timestamp`. */
  start?: number | undefined
  /** Exclusive upper bound on `timestamp`. */
  end?: number | undefined
  command?: string | undefined
  status?: string | undefined
  sortField: 'timestamp' | 'command' | 'status'
  sortOrder: 'ASC' | 'DESC'
  take: number
  skip: number
}

/** Whether a command falls under a filter (absent fields match everything). */
export function matches (filter: CommandFilter, record: CommandRecord): boolean {
  if (filter.deviceId !== undefined && filter.deviceId !== record.deviceId) return false
  if (filter.networkIds !== undefined && (record.networkId === null || !filter.networkIds.includes(record.networkId))) return false
  if (filter.deviceTypeIds !== undefined && (record.deviceTypeId === null || !filter.deviceTypeIds.includes(record.deviceTypeId))) return false
  if (filter.names !== undefined && !filter.names.includes(record.command)) return false
  return true
}

// Empty lists mean "no filter", as absent ones do.
export function normalizeFilter (filter: {
  deviceId?: string | undefined
  networkIds?: readonly number[] | undefined
  deviceTypeIds?: readonly number[] | undefined
  names?: readonly string[] | undefined
}): CommandFilter {
  const result: CommandFilter = {}
  if (filter.deviceId !== undefined) result.deviceId = filter.deviceId
  if (filter.networkIds !== undefined && filter.networkIds.length > 0) result.networkIds = [...filter.networkIds]
  if (filter.deviceTypeIds !== undefined && filter.deviceTypeIds.length > 0) result.deviceTypeIds = [...filter.deviceTypeIds]
  if (filter.names !== undefined && filter.names.length > 0) result.names = [...filter.names]
  return result
}
