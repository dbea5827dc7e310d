import type { Bus } from '../bus/bus.js'

/** A value, or a promise of it: a store answers synchronously (memory, SQLite) or not (PostgreSQL). */
export type Awaitable<T> = T | Promise<T>

/**
 * The persistence seam. Every method may answer at once or with a promise: the broker takes
 * a synchronous answer on the spot (no promise per call on SQLite's fast path) and awaits a
 * promise. An implementation must make each call all-or-nothing, and must never hand out an
 * object it may still change (return a copy, or a frozen object it never changes again): the
 * broker may hold what it receives. `memoryStore()` is the reference implementation;
 * `lib/testing/store-suite.ts` (`storeSuite` of `command-broker/testing`) is the contract, run unchanged against every store.
 *
 * Times are epoch milliseconds. JSON values (`data`, `parameters`, `result`) cross this
 * interface as JSON text, so a store never shares a live object with a caller. Reads take
 * `now` and hide commands whose `expiresAt <= now`: an expired command is gone for clients
 * even before its timer has fired.
 *
 * A store whose command space other processes share (PostgreSQL) says so with `shared`: its
 * brokers then hear of every write, theirs included, from its bus, and it enforces
 * `maxPending` itself.
 */
export interface Store {
  getDevice: (id: string) => Awaitable<DeviceRecord | undefined>
  /** Creates or replaces the device with this id. */
  saveDevice: (device: DeviceRecord) => Awaitable<void>
  /**
   * Deletes the device, not its commands: those are invisible from then on (every read of
   * commands skips a device that does not exist) until `deleteCommands` removes them, in
   * bounded steps. Returns whether the device existed.
   */
  deleteDevice: (id: string) => Awaitable<boolean>
  /** Deletes at most `limit` commands of `deviceId` (any), and returns how many it deleted. */
  deleteCommands: (deviceId: string, limit: number) => Awaitable<number>

  /**
   * Commits a batch of writes atomically: every insert, then every update in order (an
   * update of an id repeated in the batch sees the one before it). Each insert gets an id: a
   * positive integer, never reused, increasing in batch order. A store with `shared` refuses
   * an insert that would give its device more than `batch.maxPending` pending commands (see
   * `countPending`) and gives it no id; a store without may ignore `maxPending`, since the
   * broker then counts for it. An update sets `status` and/or `result` (each only if its key
   * is present in `patch`), sets `lastUpdated` and marks the command updated; it touches only
   * a command of `deviceId` that has not expired at `now`, and reports the command as it was
   * before, or undefined if there was none. If the commit fails, nothing of it is written.
   */
  commit: (batch: WriteBatch, now: number) => Awaitable<CommitResult>
  /** The command, unless it does not exist or has expired at `now`. */
  getCommand: (id: number, now: number) => Awaitable<CommandRecord | undefined>
  /**
   * Deletes those of `ids` whose `expiresAt <= now` and returns them as they were. Of two
   * callers (two processes on a shared store), only one gets each command.
   */
  expireCommands: (ids: readonly number[], now: number) => Awaitable<CommandRecord[]>
  /**
   * One bounded step of a scan in (timestamp, id) order: looks at no more than `scan.examine`
   * commands and returns the matching ones (see {@link CommandScan}), no more than `scan.take`.
   */
  scanCommands: (scan: CommandScan, now: number) => Awaitable<CommandPage>
  /**
   * A device's commands sorted by `command` or `status` (then timestamp, then id, all in
   * `sortOrder`), filtered and paged as `query` says; or undefined, having looked at no more
   * than `maxWindow + 1` commands, when more than `maxWindow` fall in the time window.
   */
  sortCommands: (query: SortQuery, now: number, maxWindow: number) => Awaitable<CommandRecord[] | undefined>
  /**
   * One bounded step of counting a device's pending commands (never updated, not expired at
   * `now`): looks at no more than `examine` of them in (timestamp, id) order after `cursor`.
   */
  countPending: (deviceId: string, now: number, cursor: Cursor | undefined, examine: number) => Awaitable<CountPage>
  /**
   * One bounded step of start-up recovery: looks at no more than `examine` commands with
   * `afterId < id <= maxId`, in id order, and returns `[id, expiresAt]` of those that expire.
   */
  expiringCommands: (afterId: number, maxId: number, examine: number) => Awaitable<ExpiringPage>
  /** The highest id ever assigned, 0 if none. */
  lastCommandId: () => Awaitable<number>

  /**
   * Releases everything the store holds (statements, connections, file handles, threads, its
   * bus). Idempotent. The store is closed on return; a returned promise settles when
   * background work has ended.
   */
  close: () => Awaitable<void>

  /** Optional: the bytes the store takes where it keeps its data (a file and its WAL, a schema's tables), for `broker.stats()`. */
  size?: (() => Awaitable<number>) | undefined

  /**
   * Optional, answered at once: whether writes that can wait should, because the store is
   * behind on upkeep that the next write would otherwise do in the caller's turn (SQLite: a
   * WAL longer than its background checkpointer has folded back, which a writer past the
   * limit checkpoints inline, for hundreds of ms). The broker's expiry, and the deletion of a
   * deleted device's commands, wait a tick at a time while it says so (`device/delete`'s reply
   * waits with it); other requests never wait for it. Footgun: a store that says so for good
   * stops expiry and device deletions (reads still hide what is due or deleted).
   */
  behind?: (() => boolean) | undefined

  /** Present when other processes share this command space; see {@link SharedSpace}. */
  readonly shared?: SharedSpace | undefined
}

/**
 * What a store shared by several processes adds: every broker on it is one cluster. Its
 * writes (`commit`, `expireCommands`, `claimExpired`, `deleteDevice`) publish their events on
 * `bus` as part of the write, so each reaches every broker, the writer's own included.
 */
export interface SharedSpace {
  /** The events of every write to this command space. */
  readonly bus: Bus
  /**
   * Deletes up to `limit` commands that were due at `now` and that no broker has expired,
   * whoever inserted them (a process that died leaves its commands to the others), and
   * returns them as they were. Of two callers, only one gets each command.
   */
  claimExpired: (now: number, limit: number) => Awaitable<CommandRecord[]>
}

/** The synchronous form of a store: every answer at once. `memoryStore()` and `sqliteStore()` are this. */
export type SyncStore = {
  [K in Exclude<keyof Store, 'close' | 'shared' | 'size' | 'behind'>]: Store[K] extends (...args: infer A) => Awaitable<infer R> ? (...args: A) => R : never
} & Pick<Store, 'close' | 'shared' | 'behind'> & { size?: (() => number) | undefined }

/** The writes of one group commit. */
export interface WriteBatch {
  readonly inserts: readonly NewCommandRecord[]
  readonly updates: readonly CommandUpdate[]
  /** `maxPendingPerDevice`: a shared store refuses an insert past it. */
  readonly maxPending: number
}

/** One `command/update` in a batch. */
export interface CommandUpdate {
  readonly id: number
  /** The device the command must belong to. */
  readonly deviceId: string
  readonly patch: CommandPatch
  /** The wall-clock time the update sets. */
  readonly lastUpdated: number
}

/** What a commit did: an id per insert (undefined: refused), the state before each update. */
export interface CommitResult {
  readonly ids: ReadonlyArray<number | undefined>
  readonly before: ReadonlyArray<CommandRecord | undefined>
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

/** An insert of a batch: a command before the store assigns its id. */
export type NewCommandRecord = Omit<CommandRecord, 'id'>

/** The two fields `command/update` may change. A missing key leaves the field as it is. */
export interface CommandPatch {
  status?: string | null
  result?: string | null
}

/** A position in (timestamp, id) order. */
export interface Cursor {
  timestamp: number
  id: number
}

/**
 * One step of a scan over commands in (timestamp, id) order, `ASC` or `DESC`: of one device's
 * commands or of all, within the open time window (`after`, `before`), strictly past `cursor`
 * (or from the window's edge without one). The step looks at the first `examine` commands in
 * that order, whatever they hold, and returns those that match every filter given, have not
 * expired at `now` and whose device exists, no more than `take`. Filters on `networkIds` and
 * `deviceTypeIds` read the device as it is now, not the copy the command was stored with.
 */
export interface CommandScan {
  deviceId?: string | undefined
  order: 'ASC' | 'DESC'
  /** Exclusive lower bound on `timestamp`. */
  after?: number | undefined
  /** Exclusive upper bound on `timestamp`. */
  before?: number | undefined
  cursor?: Cursor | undefined
  /** The command's name is one of these. */
  names?: readonly string[] | undefined
  /** The command's name is this. */
  command?: string | undefined
  status?: string | undefined
  /** The device's network is one of these (a device in no network never matches). */
  networkIds?: readonly number[] | undefined
  /** The device's type is one of these (a device of no type never matches). */
  deviceTypeIds?: readonly number[] | undefined
  /** Only commands that were updated, with `lastUpdated` after this. */
  updatedAfter?: number | undefined
  /** Most commands looked at, >= 1. */
  examine: number
  /** Most commands returned, >= 1. */
  take: number
}

/** What one step of a scan found, and where the next step starts. */
export interface CommandPage {
  rows: CommandRecord[]
  /**
   * The last command returned if `take` were returned, else the last one looked at; undefined
   * when the scan has looked at everything. (It may be set when nothing remains: the next
   * step then finds nothing and says so.)
   */
  next: Cursor | undefined
}

/** `command/list` sorted by `command` or `status`, after validation and defaults. */
export interface SortQuery {
  deviceId: string
  /** Exclusive lower bound on `timestamp`. */
  start?: number | undefined
  /** Exclusive upper bound on `timestamp`. */
  end?: number | undefined
  names?: readonly string[] | undefined
  command?: string | undefined
  status?: string | undefined
  sortField: 'command' | 'status'
  sortOrder: 'ASC' | 'DESC'
  take: number
  skip: number
}

/** One step of `countPending`. */
export interface CountPage {
  count: number
  /** Where the next step starts; undefined when the device's commands have all been looked at. */
  next: Cursor | undefined
}

/** One step of `expiringCommands`. */
export interface ExpiringPage {
  entries: Array<[id: number, expiresAt: number]>
  /** The last id looked at, where the next step starts; undefined when none is left up to `maxId`. */
  next: number | undefined
}

/** Orders commands by (timestamp, id), as every scan does. */
export function compareCursors (a: Cursor, b: Cursor): number {
  if (a.timestamp !== b.timestamp) return a.timestamp < b.timestamp ? -1 : 1
  return a.id === b.id ? 0 : a.id < b.id ? -1 : 1
}
