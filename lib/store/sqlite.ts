import { statSync } from 'node:fs'
import type Database from 'better-sqlite3'
import { LRUCache } from 'lru-cache'
import { loadBetterSqlite3 } from './better-sqlite3.js'
import { startCheckpointer, type Checkpointer } from './checkpointer.js'
import { BrokerError } from '../errors.js'
import { lockFile, type FileLock } from './file-lock.js'
import { describe } from '../options.js'
import type {
  CommandPage, CommandRecord, CommandScan, CommandUpdate, CommitResult, CountPage, Cursor, DeviceRecord, ExpiringPage,
  NewCommandRecord, SortQuery, SyncStore, WriteBatch
} from './store.js'

/**
 * The store {@link sqliteStore} returns: a {@link SyncStore}, and an online backup.
 */
export interface SqliteStore extends SyncStore {
  /**
   * Copies the database to the file at `path` (created, or overwritten if it is a SQLite
   * database; any other file there makes it reject), while the store goes on
   * serving: SQLite's backup API, 256 pages (1 MiB) per step with an event-loop turn between
   * steps, so one step blocks about a millisecond. The copy is a consistent snapshot of every
   * committed write, those still in the WAL included; writes this store makes meanwhile are
   * carried into it, so it holds what was committed when the promise resolves. Resolves to the
   * pages copied (`totalPages`; `remainingPages` 0).
   *
   * Copying the `.db` file yourself is not a backup: recent commits live in the `-wal` file
   * beside it until a checkpoint copies them over, and a checkpoint running while you copy
   * leaves a torn file, half before and half after it.
   *
   * Rejects with `BrokerError` `ERR_CLOSED` on a closed store (or one closed before the copy
   * ended), and with what better-sqlite3 throws for a path it cannot write (a missing
   * directory: `TypeError`). Never give it the path of a file a store has open: the copy
   * overwrites it under that store.
   */
  backup: (path: string) => Promise<SqliteBackup>
}

/** What {@link SqliteStore.backup} copied, in pages of the database's page size. */
export interface SqliteBackup {
  totalPages: number
  remainingPages: number
}

/** Options of {@link sqliteStore}. */
export interface SqliteStoreOptions {
  /**
   * SQLite's `synchronous` setting for a file the store opens. `'full'` (default) makes a
   * committed write survive a power cut; `'normal'` survives a crashed or killed process but
   * may lose the last commits on power loss, and commits several times faster on slow disks.
   * Ignored for a `Database` passed in: its owner decides.
   */
  synchronous?: 'full' | 'normal'
  /**
   * Who checkpoints the WAL of a file the store opens. `'background'` (default): a worker
   * thread with its own connection, so checkpoint fsyncs never stall the event loop (they
   * cost milliseconds each on small disks), and which truncates the WAL of an idle store to
   * nothing; `'inline'`: SQLite's own autocheckpoint, in the committing call, and an idle
   * store's WAL stays as the last checkpoint left it (cut back to 16 MiB when it restarts).
   * Ignored for `':memory:'` and for a `Database` passed in.
   */
  checkpoint?: 'background' | 'inline'
  /**
   * Most memory, in bytes, for devices kept read (least recently used go first): the broker
   * reads a device on every request, and a cached one costs no SQLite read. Default 8 MiB
   * (`8388608`, some 17,000 devices with short names and `data`); `0` turns the cache off. A
   * device counts two bytes per character of its id (twice: key and record), name and data,
   * plus 400 for the record and the cache's bookkeeping; one larger than the whole cache is
   * never kept. The cache trusts this store to be the only writer: a device changed in the
   * file behind its back is served as it was while it stays cached.
   */
  deviceCacheBytes?: number
  /**
   * Most memory, in bytes, for SQLite's page cache of the store's connection (`PRAGMA
   * cache_size`, in whole KiB). Default 64 MiB (`67108864`); better-sqlite3's own is 16,000
   * KiB, which on a file of millions of commands misses on most of expiry's deletes (their
   * rows and index pages sit all over the file), each a read from disk in the event loop's
   * turn. Pages are kept as they are read, up to this. `0` (or under 1024) keeps
   * better-sqlite3's default. Ignored for a `Database` passed in: its owner decides.
   */
  cacheBytes?: number
}

/** The schema version this library writes (`PRAGMA user_version`). */
export const SCHEMA_VERSION = 2

/**
 * A better-sqlite3 `Database`, as far as the declarations of this package name it: the few
 * members they use, so that a consumer type-checks without better-sqlite3's types (a
 * development dependency here). `sqliteStore` checks at run time that it is one.
 */
export interface SqliteDatabase {
  readonly name: string
  readonly open: boolean
  readonly inTransaction: boolean
  prepare (source: string): unknown
  pragma (source: string, options?: { simple?: boolean }): unknown
  exec (source: string): unknown
  close (): unknown
}

const DEVICE_CACHE_BYTES = 8 * 1024 * 1024
// SQLite's page cache of the store's connection, bytes: see SqliteStoreOptions.cacheBytes.
export const CACHE_BYTES = 64 * 1024 * 1024
// The WAL's size on disk after it restarts, bytes (SQLite's default keeps it at its largest).
export const JOURNAL_SIZE_LIMIT = 16 * 1024 * 1024
// PRAGMA auto_vacuum's value for INCREMENTAL.
const INCREMENTAL = 2
// Free pages the file keeps before the store gives space back to the OS: at least RECLAIM_MIN
// (4 MiB of 4 KiB pages), and a quarter of the file, so that a hub in its steady state, whose
// expiries free the pages its inserts then take, does not shrink the file only to grow it again.
const RECLAIM_MIN = 1024
const RECLAIM_SHARE = 4
// Pages one reclaim step moves and cuts off (incremental_vacuum). Measured on this project's
// 2-core VM at a load of 4-6: the pragma 0.3 ms (median), the whole step with its commit 1.4 ms
// with synchronous 'normal', 3.5-6.4 ms with 'full' (the fsync any commit costs); 1024 pages
// took 5-15 ms, with outliers past 50 ms.
const RECLAIM_STEP = 128
// Ms between reclaim steps: a step commits (an fsync with synchronous 'full'), and the requests
// being served come first. 128 pages every 50 ms gives back up to 10 MiB/s, and writes some
// 12 MiB/s of WAL (moved pages, their parents, the pointer map), which the background
// checkpointer folds back as it goes; every 10 ms, the WAL outgrew it, and steps that met its
// restart or an inline checkpoint took 30 ms.
const RECLAIM_INTERVAL = 50
// Pages per backup step: ~1 ms each measured, with a turn of the event loop between steps.
const BACKUP_STEP = 256
// Per cached device, beyond its characters: the frozen record, string headers, and the cache's
// Map entry and array slots. Measured: ~476 bytes of heap per device with a 12-character id and
// ~25 characters of name and data, which the formula in deviceBytes() counts as 478.
const DEVICE_OVERHEAD = 400

/**
 * Creates a store ({@link SyncStore}) on SQLite through better-sqlite3: WAL journal, one
 * transaction per broker batch, every statement prepared once. Pass a file
 * path (created if missing; `':memory:'` works too) or an open better-sqlite3
 * `Database`, which the store then uses but does not close.
 *
 * A file the store opens is its alone until `close()`: the store locks
 * `<file>-lock` (created next to it, and left there), and a second store on the
 * same file, in this process or another, throws `BrokerError` `ERR_LOCKED`. The
 * lock dies with its process, however that ends. A `Database` passed in is its
 * owner's: the store takes no lock on it.
 *
 * Every write commits only if the file at the path is still the one the store
 * opened (same device and inode, checked with one `stat` per transaction, after
 * its writes and before COMMIT): once the file is deleted or replaced, writes
 * throw `BrokerError` `ERR_FILE_MOVED` and roll back, while reads keep serving
 * what the store has open. This applies to a `Database` passed in too, if it is
 * a file (but a transaction its owner opened is the owner's to check and
 * commit); `':memory:'` has neither lock nor check.
 *
 * Throws `BrokerError` `ERR_SCHEMA` for a file written by a newer version of
 * this library, and whatever better-sqlite3 throws for an unreadable file (or
 * lock file). A failed call leaves nothing open: no connection, lock or thread.
 */
export function sqliteStore (pathOrDatabase: string | SqliteDatabase, options: SqliteStoreOptions = {}): SqliteStore {
  const Sqlite = loadBetterSqlite3()
  if (typeof pathOrDatabase !== 'string' && !(pathOrDatabase instanceof Sqlite)) {
    throw new TypeError(`sqliteStore: expected a file path or a better-sqlite3 Database, received ${describe(pathOrDatabase)}`)
  }
  const { synchronous = 'full', checkpoint = 'background', deviceCacheBytes = DEVICE_CACHE_BYTES, cacheBytes = CACHE_BYTES } = options
  if (synchronous !== 'full' && synchronous !== 'normal') {
    throw new RangeError(`sqliteStore: options.synchronous must be 'full' or 'normal', received ${describe(synchronous)}`)
  }
  if (checkpoint !== 'background' && checkpoint !== 'inline') {
    throw new RangeError(`sqliteStore: options.checkpoint must be 'background' or 'inline', received ${describe(checkpoint)}`)
  }
  if (typeof deviceCacheBytes !== 'number') {
    throw new TypeError(`sqliteStore: options.deviceCacheBytes must be an integer, received ${describe(deviceCacheBytes)}`)
  }
  if (!Number.isSafeInteger(deviceCacheBytes) || deviceCacheBytes < 0) {
    throw new RangeError(`sqliteStore: options.deviceCacheBytes must be an integer from 0 to ${Number.MAX_SAFE_INTEGER}, received ${describe(deviceCacheBytes)}`)
  }
  if (typeof cacheBytes !== 'number') {
    throw new TypeError(`sqliteStore: options.cacheBytes must be an integer, received ${describe(cacheBytes)}`)
  }
  if (!Number.isSafeInteger(cacheBytes) || cacheBytes < 0) {
    throw new RangeError(`sqliteStore: options.cacheBytes must be an integer from 0 to ${Number.MAX_SAFE_INTEGER}, received ${describe(cacheBytes)}`)
  }
  const owned = typeof pathOrDatabase === 'string'
  const db = owned ? new Sqlite(pathOrDatabase) : pathOrDatabase
  let lock: FileLock | undefined
  try {
    // The file's absolute path as SQLite resolved it (URI names too): '' for ':memory:' and
    // temporary databases. Absolute: it stays right if the process changes directory.
    const file = db.prepare("SELECT file FROM pragma_database_list WHERE name = 'main'").pluck().get() as string
    // Locked before the store configures, migrates or writes the file (preparing the query above
    // read its header, no more): a store that loses the race changes nothing.
    if (owned && file !== '') lock = lockFile(`${file}-lock`, `sqliteStore: ${file}`)
    if (owned) {
      // Only a file without tables takes it (SQLite ignores it on one that has some, which keeps
      // its mode: turning it on there takes a VACUUM, a full rewrite). Before the WAL, which would
      // otherwise write the empty file's first page without it.
      if (file !== '') db.pragma('auto_vacuum = INCREMENTAL')
      db.pragma('journal_mode = WAL')
      db.pragma(`synchronous = ${synchronous}`)
      // A WAL that grew under load is cut back to this size when it restarts, in either
      // checkpoint mode (else it keeps its largest size on disk for as long as the store runs).
      db.pragma(`journal_size_limit = ${JOURNAL_SIZE_LIMIT}`)
      // Negative: a size in KiB, not in pages. Under 1 KiB keeps better-sqlite3's default, as 0 does.
      if (cacheBytes >= 1024) db.pragma(`cache_size = ${-Math.floor(cacheBytes / 1024)}`)
    }
    migrate(db)
    const background = owned && file !== '' && checkpoint === 'background'
    if (background) db.pragma('wal_autocheckpoint = 0')
    const reclaim = owned && file !== '' && db.pragma('auto_vacuum', { simple: true }) === INCREMENTAL
    // The store starts its checkpointer last, once nothing else can throw.
    const relax = owned && file !== '' && synchronous === 'full'
    return new SqliteStoreImpl(db, { owned, file, lock, deviceCacheBytes, checkpoint: background ? synchronous : undefined, reclaim, relax })
  } catch (err) {
    if (owned) db.close()
    lock?.release()
    throw err
  }
}

/** Should the background checkpointer fail, SQLite's own autocheckpoint takes over. */
export function checkpointInline (db: SqliteDatabase): void {
  if (db.open) db.pragma('wal_autocheckpoint = 1000')
}

// WAL length, in pages, past which the writer checkpoints inline (and so restarts the WAL),
// and below which it leaves checkpoints to the worker again: 64 MiB and 16 MiB of 4 KiB pages.
const WAL_LONG = 16384
const WAL_SHORT = 4096

/**
 * Keeps the WAL bounded under a writer that never pauses (a passive checkpoint in the worker
 * then never catches up): past WAL_LONG pages the writer checkpoints inline, SQLite's way,
 * until the WAL is back under WAL_SHORT.
 */
export function pace (db: SqliteDatabase, walPages: number): void {
  if (!db.open) return
  if (walPages > WAL_LONG) checkpointInline(db)
  else if (walPages < WAL_SHORT) db.pragma('wal_autocheckpoint = 0')
}

// Commands expiry may delete between two reports of the checkpointer (~6 KiB of WAL each, so
// some 24 MiB): a pass over a long WAL can take hundreds of ms, and a report that came before
// it said nothing of what was written since. 16 MiB and this stay under WAL_LONG.
const EXPIRED_PER_REPORT = 4096

/**
 * Whether writes that can wait (expiry's deletes, a deleted device's commands) should, from the
 * checkpointer's last two reports: the WAL is past WAL_SHORT, where the checkpointer hurries,
 * and not yet ready to restart. It is ready once a pass found every frame copied and the WAL as
 * long as the pass before it did (`lastWalPages`): no write came in between, so every frame
 * now in the WAL is copied, and the next write restarts it. "All copied" alone says less: a
 * pass reports the frames that were there when it began, and copies those; what the writer
 * added meanwhile keeps the WAL from restarting. Writing on then lengthened the WAL to
 * WAL_LONG, where commits checkpoint inline (50-200 ms measured in expiry of 1M commands).
 */
export function behindOn (walPages: number, copiedPages: number, lastWalPages: number): boolean {
  return walPages > WAL_SHORT && (copiedPages < walPages || walPages !== lastWalPages)
}

// Each entry upgrades the schema from version i to i + 1, inside one transaction.
// Indexes are few on purpose: every index keyed by device lands its inserts all over the
// b-tree, and on a hub's disk that is what limits write throughput (measured: ~25k rows/s
// with device+command and device+status indexes added, 60-85k without). Lists filter and sort
// by command or status within the device's (device_id, timestamp) range instead.
// commands_time serves history across devices. Expiry deletes rows in expiry order, which is
// no index's order, so each index costs a scattered page write per expiry: start-up recovery
// reads the table in id order instead of keeping an index of expiring ids (measured: 13-15 us
// a delete with one, 9.4 without).
const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
  INSERT INTO meta (key, value) VALUES ('last_command_id', 0);
  CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    data TEXT,
    network_id INTEGER,
    device_type_id INTEGER,
    is_blocked INTEGER NOT NULL
  ) WITHOUT ROWID;
  CREATE TABLE commands (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    command TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    user_id INTEGER,
    network_id INTEGER,
    device_type_id INTEGER,
    parameters TEXT,
    lifetime INTEGER,
    status TEXT,
    result TEXT,
    expires_at INTEGER,
    updated INTEGER NOT NULL
  );
  CREATE INDEX commands_device_time ON commands (device_id, timestamp);
  CREATE INDEX commands_time ON commands (timestamp);
  `,
  // Version 2: the large columns (parameters, result) last. SQLite reads a row's columns in
  // order, and a column after a large value is reached through its overflow pages: recovery's
  // (id, expires_at) and a scan's expiry check read ~15 overflow pages per 60 KB command
  // (measured: 66 ms recovery steps, 30-50 ms scan steps over such commands; 3-7 ms after).
  // A covering index for recovery would fix that one read only, and cost a write per insert and
  // expiry. Rebuilding the table is a one-time cost at the first open (~2 s per million commands).
  `
  CREATE TABLE commands_v2 (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    command TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    user_id INTEGER,
    network_id INTEGER,
    device_type_id INTEGER,
    lifetime INTEGER,
    status TEXT,
    expires_at INTEGER,
    updated INTEGER NOT NULL,
    parameters TEXT,
    result TEXT
  );
  INSERT INTO commands_v2 (id, device_id, command, timestamp, last_updated, user_id, network_id, device_type_id, lifetime,
      status, expires_at, updated, parameters, result)
    SELECT id, device_id, command, timestamp, last_updated, user_id, network_id, device_type_id, lifetime,
      status, expires_at, updated, parameters, result FROM commands ORDER BY id;
  DROP TABLE commands;
  ALTER TABLE commands_v2 RENAME TO commands;
  CREATE INDEX commands_device_time ON commands (device_id, timestamp);
  CREATE INDEX commands_time ON commands (timestamp);
  `
]

function migrate (db: Database.Database): void {
  const version = db.pragma('user_version', { simple: true }) as number
  if (version > MIGRATIONS.length) {
    throw new BrokerError('ERR_SCHEMA', `sqliteStore: the file has schema version ${version}; this version of command-broker reads up to ${MIGRATIONS.length}`)
  }
  if (version === MIGRATIONS.length) return
  db.transaction(() => {
    for (let v = version; v < MIGRATIONS.length; v++) db.exec(MIGRATIONS[v] as string)
    db.pragma(`user_version = ${MIGRATIONS.length}`)
  }).immediate()
}

// A command's columns as CommandRecord names them, of the commands table named `c`.
const COMMAND_COLUMNS = `c.id, c.command, c.timestamp, c.last_updated AS lastUpdated, c.user_id AS userId,
  c.device_id AS deviceId, c.network_id AS networkId, c.device_type_id AS deviceTypeId, c.parameters, c.lifetime, c.status,
  c.result, c.expires_at AS expiresAt, c.updated`
// The same columns in the same order, unnamed and of no named table (RETURNING takes none), for
// statements read raw: fromRaw() makes the record.
const RAW_COLUMNS = `id, command, timestamp, last_updated, user_id, device_id, network_id, device_type_id, parameters, lifetime,
  status, result, expires_at, updated`
const DEVICE_COLUMNS = 'id, name, data, network_id AS networkId, device_type_id AS deviceTypeId, is_blocked AS isBlocked'
const NOT_EXPIRED = '(c.expires_at IS NULL OR c.expires_at > @now)'
// Beyond every (timestamp, id) a command can have: an open end of a window.
const FAR = Number.MAX_SAFE_INTEGER
// Filters of a scan and a sort; a null parameter means "no such filter". Lists travel as JSON
// arrays (json_each), so one prepared statement serves any length.
const FILTERS = `
  AND (@names IS NULL OR c.command IN (SELECT value FROM json_each(@names)))
  AND (@command IS NULL OR c.command = @command)
  AND (@status IS NULL OR c.status = @status)
  AND ${NOT_EXPIRED}`
const DEVICE_FILTERS = `
  AND (@networks IS NULL OR d.network_id IN (SELECT value FROM json_each(@networks)))
  AND (@deviceTypes IS NULL OR d.device_type_id IN (SELECT value FROM json_each(@deviceTypes)))
  AND (@updatedAfter IS NULL OR (c.updated = 1 AND c.last_updated > @updatedAfter))`

type Row = Omit<CommandRecord, 'updated'> & { updated: number }
type DeviceRow = Omit<DeviceRecord, 'isBlocked'> & { isBlocked: number }
type Statement<R = unknown> = Database.Statement<unknown[], R>
type Transaction = Database.Transaction<(fn: () => unknown) => unknown>

/** What the store needs of its device cache: an LRUCache, or NO_CACHE. */
interface DeviceCache {
  get: (id: string) => Readonly<DeviceRecord> | undefined
  set: (id: string, device: Readonly<DeviceRecord>) => unknown
  delete: (id: string) => unknown
  clear: () => void
}

const NO_CACHE: DeviceCache = { get: () => undefined, set: () => {}, delete: () => {}, clear: () => {} }

// Two bytes per character: V8 keeps a string in one or two bytes per character.
function deviceBytes (device: Readonly<DeviceRecord>): number {
  return DEVICE_OVERHEAD + 2 * (2 * device.id.length + device.name.length + (device.data?.length ?? 0))
}

/** A file's identity: another file at the same path has another inode (or device). */
interface FileId { dev: number, ino: number }

function identify (file: string): FileId {
  const stat = statSync(file, { throwIfNoEntry: false })
  if (stat === undefined) {
    throw new BrokerError('ERR_FILE_MOVED', `sqliteStore: ${file} no longer exists: it was deleted or renamed under the store; nothing was written`)
  }
  return { dev: stat.dev, ino: stat.ino }
}

interface Config {
  owned: boolean
  /** Absolute path of the file, '' for a database with none. */
  file: string
  lock: FileLock | undefined
  deviceCacheBytes: number
  /** Start a background checkpointer with this `synchronous` setting; undefined: none. */
  checkpoint: 'full' | 'normal' | undefined
  /** Give free pages back to the OS (a file the store opened, in auto_vacuum INCREMENTAL). */
  reclaim: boolean
  /** Commit deletions that can be redone without an fsync (a file the store opened with synchronous 'full'). */
  relax: boolean
}

class SqliteStoreImpl implements SqliteStore {
  readonly #db: Database.Database
  readonly #owned: boolean
  readonly #file: string
  readonly #identity: FileId | undefined
  readonly #lock: FileLock | undefined
  readonly #checkpointer: Checkpointer | undefined
  // The checkpointer's last word, behindOn, and the commands expired since: see behind().
  #behind = false
  #lastWal = 0
  #expiredSince = 0
  // Nests: a savepoint inside an open transaction.
  readonly #run: Transaction
  // An outermost transaction: checks the file after fn's writes, before COMMIT.
  readonly #commit: Transaction
  readonly #getDevice: Statement<DeviceRow>
  readonly #saveDevice: Statement
  readonly #deleteDevice: Statement
  readonly #deleteCommands: Statement
  readonly #insert: Statement
  readonly #get: Statement<Row>
  readonly #getForUpdate: Statement<Row>
  readonly #update: Statement
  readonly #expire: Statement<RawRow>
  readonly #expiring: Statement<[number, number | null]>
  readonly #keepLastId: Statement
  // Scans: [all devices, one device] x [ascending, descending]. Rows reads the matches among
  // the step's `examine` index entries; a bound finds where those end (an index-only read),
  // where the next step starts when fewer than `take` matched.
  readonly #bounds: ScanStatements<[number, number]>
  readonly #rows: ScanStatements<Row>
  readonly #countPending: Statement<number>
  readonly #window: Statement<number>
  // command/list sorted by command or status: [field][order].
  readonly #sorts: Record<SortQuery['sortField'], Record<SortQuery['sortOrder'], Statement<Row>>>
  // Devices by id, frozen, least recently used evicted past deviceCacheBytes: the broker reads
  // one per request, and this file has no other writer. A save is cached only once committed:
  // inside a transaction of a passed-in Database's owner, which may yet roll back, it is not.
  readonly #devices: DeviceCache
  // Reclaim: the file's free and total pages (undefined: not reclaiming), and the next step's
  // timer while the freelist is over its share.
  readonly #pages: { free: Statement<number>, total: Statement<number> } | undefined
  #reclaiming: NodeJS.Timeout | undefined
  // synchronous NORMAL and back to FULL, around deletions that need no fsync (see #unsynced);
  // undefined: the store is not 'full', or not its own.
  readonly #relax: { normal: Statement, full: Statement } | undefined
  #lastId: number
  #closed = false

  constructor (db: Database.Database, config: Config) {
    this.#db = db
    this.#owned = config.owned
    this.#file = config.file
    this.#lock = config.lock
    this.#identity = config.file === '' ? undefined : identify(config.file)
    this.#devices = config.deviceCacheBytes === 0
      ? NO_CACHE
      : new LRUCache<string, Readonly<DeviceRecord>>({ maxSize: config.deviceCacheBytes, sizeCalculation: deviceBytes })
    this.#run = db.transaction((fn: () => unknown) => fn())
    this.#commit = db.transaction((fn: () => unknown) => {
      const result = fn()
      this.#verify()
      return result
    })
    this.#getDevice = db.prepare(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE id = ?`)
    this.#saveDevice = db.prepare(`INSERT INTO devices (id, name, data, network_id, device_type_id, is_blocked)
      VALUES (@id, @name, @data, @networkId, @deviceTypeId, @isBlocked)
      ON CONFLICT (id) DO UPDATE SET name = excluded.name, data = excluded.data, network_id = excluded.network_id,
        device_type_id = excluded.device_type_id, is_blocked = excluded.is_blocked`)
    this.#deleteDevice = db.prepare('DELETE FROM devices WHERE id = ?')
    this.#deleteCommands = db.prepare(`DELETE FROM commands WHERE id IN
      (SELECT id FROM commands INDEXED BY commands_device_time WHERE device_id = ? LIMIT ?)`)
    this.#insert = db.prepare(`INSERT INTO commands (id, device_id, command, timestamp, last_updated, user_id, network_id,
        device_type_id, parameters, lifetime, status, result, expires_at, updated)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
    this.#get = db.prepare(`SELECT ${COMMAND_COLUMNS} FROM commands c WHERE c.id = @id AND ${NOT_EXPIRED}`)
    this.#getForUpdate = db.prepare(`SELECT ${COMMAND_COLUMNS} FROM commands c
      WHERE c.id = @id AND c.device_id = @deviceId AND ${NOT_EXPIRED}`)
    this.#update = db.prepare(`UPDATE commands SET status = iif(@setStatus, @status, status),
      result = iif(@setResult, @result, result), last_updated = @lastUpdated, updated = 1 WHERE id = @id`)
    // Raw rows: the steady state deletes as many rows as it inserts, and an array per row, read
    // into one record, costs less than the object better-sqlite3 builds and toRecord copies.
    this.#expire = db.prepare(`DELETE FROM commands WHERE id = ? AND expires_at <= ? RETURNING ${RAW_COLUMNS}`).raw() as Statement<RawRow>
    this.#expiring = db.prepare(`SELECT id, expires_at FROM commands
      WHERE id > ? AND id <= ? ORDER BY id LIMIT ?`).raw() as Statement<[number, number | null]>
    // A deleted command may have held the highest id: remember it so that ids are never reused.
    this.#keepLastId = db.prepare("UPDATE meta SET value = max(value, ?) WHERE key = 'last_command_id'")
    this.#bounds = scanStatements(db, (from, device, order) => db.prepare(`SELECT c.timestamp, c.id FROM ${from}
      WHERE ${device} ${order.past} AND ${order.inside}
      ORDER BY c.timestamp ${order.name}, c.id ${order.name} LIMIT 1 OFFSET @offset`).raw() as Statement<[number, number]>)
    // The rows of a step come from the first `examine` index entries past the cursor, and only
    // then are matched: a bound on the index range in the WHERE clause alone leaves the planner
    // free to range over the whole window instead (it did: a filter matching nothing read on to
    // the end of the table in one step). Ordered by the subquery's columns, which come in index
    // order, so nothing is sorted.
    this.#rows = scanStatements(db, (from, device, order) => db.prepare(`SELECT ${COMMAND_COLUMNS}
      FROM (SELECT c.timestamp, c.id FROM ${from} WHERE ${device} ${order.past} AND ${order.inside}
          ORDER BY c.timestamp ${order.name}, c.id ${order.name} LIMIT @examine) s
        CROSS JOIN commands c ON c.id = s.id CROSS JOIN devices d ON d.id = c.device_id
      WHERE true ${FILTERS} ${DEVICE_FILTERS}
      ORDER BY s.timestamp ${order.name}, s.id ${order.name} LIMIT @take`))
    this.#countPending = db.prepare(`SELECT count(*) FROM commands c INDEXED BY commands_device_time
      WHERE c.device_id = @deviceId AND (c.timestamp, c.id) > (@timestamp, @id) AND (c.timestamp, c.id) <= (@boundTimestamp, @boundId)
        AND c.updated = 0 AND ${NOT_EXPIRED}`).pluck() as Statement<number>
    this.#window = db.prepare(`SELECT count(*) FROM (SELECT 1 FROM commands c INDEXED BY commands_device_time
      WHERE c.device_id = @deviceId AND c.timestamp > @start AND c.timestamp < @end LIMIT @limit)`).pluck() as Statement<number>
    const sort = (field: SortQuery['sortField'], order: SortQuery['sortOrder']): Statement<Row> => db.prepare(`SELECT ${COMMAND_COLUMNS}
      FROM commands c INDEXED BY commands_device_time CROSS JOIN devices d ON d.id = c.device_id
      WHERE c.device_id = @deviceId AND c.timestamp > @start AND c.timestamp < @end ${FILTERS}
      ORDER BY c.${field} ${order}, c.timestamp ${order}, c.id ${order} LIMIT @take OFFSET @skip`)
    this.#sorts = {
      command: { ASC: sort('command', 'ASC'), DESC: sort('command', 'DESC') },
      status: { ASC: sort('status', 'ASC'), DESC: sort('status', 'DESC') }
    }
    this.#pages = config.reclaim
      ? { free: db.prepare('PRAGMA freelist_count').pluck() as Statement<number>, total: db.prepare('PRAGMA page_count').pluck() as Statement<number> }
      : undefined
    this.#relax = config.relax ? { normal: db.prepare('PRAGMA synchronous = NORMAL'), full: db.prepare('PRAGMA synchronous = FULL') } : undefined
    const kept = db.prepare("SELECT value FROM meta WHERE key = 'last_command_id'").pluck().get() as number
    const highest = (db.prepare('SELECT max(id) FROM commands').pluck().get() as number | null) ?? 0
    this.#lastId = Math.max(kept, highest)
    // Last, once nothing else can throw: a failed open must not leave a thread behind.
    this.#checkpointer = config.checkpoint === undefined
      ? undefined
      : startCheckpointer(config.file, {
        synchronous: config.checkpoint,
        // Past WAL_SHORT the writer is outrunning checkpoints every 100 ms: they go back to back,
        // so that an inline checkpoint, should the WAL pass WAL_LONG, finds little left to copy
        // (it copies all that is left, in the committing call: 40 ms steps of device/delete).
        hurryPages: WAL_SHORT,
        onFailure: () => {
          // No reports come any more: nothing to wait for.
          this.#expiredSince = -Infinity
          checkpointInline(db)
        },
        onProgress: (walPages, copiedPages) => {
          this.#behind = behindOn(walPages, copiedPages, this.#lastWal)
          this.#lastWal = walPages
          this.#expiredSince = 0
          pace(db, walPages)
        }
      })
  }

  getDevice (id: string): DeviceRecord | undefined {
    this.#open()
    let device = this.#devices.get(id)
    if (device === undefined) {
      const row = this.#getDevice.get(id)
      if (row === undefined) return undefined
      device = Object.freeze({ ...row, isBlocked: row.isBlocked === 1 })
      this.#devices.set(id, device)
    }
    return device
  }

  saveDevice (device: DeviceRecord): void {
    this.#open()
    const saved = Object.freeze({ ...device })
    this.#write(() => this.#saveDevice.run({ ...saved, isBlocked: saved.isBlocked ? 1 : 0 }))
    if (this.#db.inTransaction) this.#devices.delete(saved.id)
    else this.#devices.set(saved.id, saved)
  }

  deleteDevice (id: string): boolean {
    this.#open()
    const existed = this.#write(() => this.#deleteDevice.run(id).changes > 0)
    this.#devices.delete(id)
    return existed
  }

  deleteCommands (deviceId: string, limit: number): number {
    this.#open()
    const deleted = this.#unsynced(() => {
      const deleted = this.#deleteCommands.run(deviceId, limit).changes
      if (deleted > 0) this.#keepLastId.run(this.#lastId)
      return deleted
    })
    this.#freed()
    return deleted
  }

  commit (batch: WriteBatch, now: number): CommitResult {
    this.#open()
    // One transaction, and so one fsync and one check of the file, for the whole batch.
    return this.#write(() => {
      const ids: number[] = []
      for (const command of batch.inserts) ids.push(this.#insertRow(command))
      const before: Array<CommandRecord | undefined> = []
      for (const update of batch.updates) before.push(this.#updateRow(update, now))
      return { ids, before }
    })
  }

  getCommand (id: number, now: number): CommandRecord | undefined {
    this.#open()
    const row = this.#get.get({ id, now })
    return row === undefined ? undefined : toRecord(row)
  }

  /**
   * True while the WAL is past 16 MiB and the background checkpointer has not yet found it all
   * copied twice in a row (see behindOn): the broker's expiry and device deletions then wait
   * (a tick at a time) instead of lengthening the WAL towards the 64 MiB at which a commit
   * would checkpoint inline. Always false without a background checkpointer.
   */
  behind (): boolean {
    return this.#behind || (this.#checkpointer !== undefined && this.#expiredSince >= EXPIRED_PER_REPORT)
  }

  expireCommands (ids: readonly number[], now: number): CommandRecord[] {
    this.#open()
    // In id order: ids inserted together sit together in the table and its time index, so each
    // delete finds its pages where the last one left them (the wheel hands them out by due time).
    const sorted = ids.slice().sort(byNumber)
    const removed = this.#unsynced(() => {
      const removed: CommandRecord[] = []
      for (const id of sorted) {
        const row = this.#expire.get(id, now)
        if (row !== undefined) removed.push(fromRaw(row))
      }
      this.#expiredSince += removed.length
      if (removed.length > 0) this.#keepLastId.run(this.#lastId)
      return removed
    })
    this.#freed()
    return removed
  }

  scanCommands (scan: CommandScan, now: number): CommandPage {
    this.#open()
    const ascending = scan.order === 'ASC'
    const shape = (scan.deviceId === undefined ? 0 : 2) + (ascending ? 0 : 1)
    const from = scan.cursor ?? (ascending ? { timestamp: scan.after ?? -FAR, id: FAR } : { timestamp: scan.before ?? FAR, id: -FAR })
    const window = {
      deviceId: scan.deviceId ?? null,
      timestamp: from.timestamp,
      id: from.id,
      after: scan.after ?? -FAR,
      before: scan.before ?? FAR
    }
    const bound = (this.#bounds[shape] as Statement<[number, number]>).get({ ...window, offset: scan.examine - 1 })
    const rows = (this.#rows[shape] as Statement<Row>).all({
      ...window,
      examine: scan.examine,
      now,
      names: list(scan.names),
      command: scan.command ?? null,
      status: scan.status ?? null,
      networks: list(scan.networkIds),
      deviceTypes: list(scan.deviceTypeIds),
      updatedAfter: scan.updatedAfter ?? null,
      take: scan.take
    }).map(toRecord)
    const last = rows[rows.length - 1]
    let next: Cursor | undefined
    if (rows.length >= scan.take && last !== undefined) next = { timestamp: last.timestamp, id: last.id }
    else if (bound !== undefined) next = { timestamp: bound[0], id: bound[1] }
    return { rows, next }
  }

  sortCommands (query: SortQuery, now: number, maxWindow: number): CommandRecord[] | undefined {
    this.#open()
    const window = { deviceId: query.deviceId, start: query.start ?? -FAR, end: query.end ?? FAR }
    if (this.#window.get({ ...window, limit: maxWindow + 1 }) as number > maxWindow) return undefined
    return this.#sorts[query.sortField][query.sortOrder].all({
      ...window,
      now,
      names: list(query.names),
      command: query.command ?? null,
      status: query.status ?? null,
      take: query.take,
      skip: query.skip
    }).map(toRecord)
  }

  countPending (deviceId: string, now: number, cursor: Cursor | undefined, examine: number): CountPage {
    this.#open()
    const from = cursor ?? { timestamp: -FAR, id: FAR }
    const window = { deviceId, timestamp: from.timestamp, id: from.id, after: -FAR, before: FAR }
    const bound = (this.#bounds[2] as Statement<[number, number]>).get({ ...window, offset: examine - 1 })
    const count = this.#countPending.get({
      ...window,
      boundTimestamp: bound?.[0] ?? FAR,
      boundId: bound?.[1] ?? FAR,
      now
    }) as number
    return { count, next: bound === undefined ? undefined : { timestamp: bound[0], id: bound[1] } }
  }

  expiringCommands (afterId: number, maxId: number, examine: number): ExpiringPage {
    this.#open()
    const rows = this.#expiring.all(afterId, maxId, examine)
    const entries: Array<[number, number]> = []
    for (const [id, expiresAt] of rows) if (expiresAt !== null) entries.push([id, expiresAt])
    const last = rows[rows.length - 1]
    return { entries, next: rows.length >= examine && last !== undefined ? last[0] : undefined }
  }

  lastCommandId (): number {
    this.#open()
    return this.#lastId
  }

  /** Bytes the database takes: its pages, and the WAL beside its file (none for `:memory:`). */
  size (): number {
    this.#open()
    const pages = (this.#db.pragma('page_count', { simple: true }) as number) * (this.#db.pragma('page_size', { simple: true }) as number)
    if (this.#file === '') return pages
    return pages + (statSync(`${this.#file}-wal`, { throwIfNoEntry: false })?.size ?? 0)
  }

  async backup (path: string): Promise<SqliteBackup> {
    this.#open()
    try {
      return await this.#db.backup(path, { progress: () => BACKUP_STEP })
    } catch (err) {
      if (this.#closed) throw new BrokerError('ERR_CLOSED', 'sqliteStore: closed during backup()', { cause: err })
      throw err
    }
  }

  // Closes the connection at once; resolves when the checkpointer, last to close, is done
  // (SQLite's last connection checkpoints and removes the WAL).
  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    clearTimeout(this.#reclaiming)
    this.#devices.clear()
    if (this.#owned && this.#db.open) this.#db.close()
    // The file is another store's to open from here; this one's checkpointer, still folding
    // the WAL in, is just another connection to it, which SQLite allows.
    this.#lock?.release()
    await this.#checkpointer?.close()
  }

  #insertRow (c: NewCommandRecord): number {
    const id = this.#lastId + 1
    this.#insert.run(id, c.deviceId, c.command, c.timestamp, c.lastUpdated, c.userId, c.networkId, c.deviceTypeId,
      c.parameters, c.lifetime, c.status, c.result, c.expiresAt, c.updated ? 1 : 0)
    // Advance only once the row is written: a failed insert leaves no gap.
    this.#lastId = id
    return id
  }

  #updateRow ({ id, deviceId, patch, lastUpdated }: CommandUpdate, now: number): CommandRecord | undefined {
    const row = this.#getForUpdate.get({ id, deviceId, now })
    if (row === undefined) return undefined
    this.#update.run({
      id,
      setStatus: patch.status !== undefined ? 1 : 0,
      status: patch.status ?? null,
      setResult: patch.result !== undefined ? 1 : 0,
      result: patch.result ?? null,
      lastUpdated
    })
    return toRecord(row)
  }

  #open (): void {
    if (this.#closed) throw new BrokerError('ERR_CLOSED', 'sqliteStore: used after close()')
  }

  // After a deletion: once the freelist is over its share of the file, steps give it back to the
  // OS from a timer, a few pages each, rather than in the deleting call, whose turn a million
  // freed pages would stall. SQLite reuses free pages before it grows the file, so below that
  // share they wait for the next inserts.
  #freed (): void {
    if (this.#reclaiming === undefined && this.#overFreeShare()) this.#reclaiming = setTimeout(this.#reclaimStep, RECLAIM_INTERVAL).unref()
  }

  #overFreeShare (): boolean {
    if (this.#pages === undefined) return false
    const free = this.#pages.free.get() as number
    return free > RECLAIM_MIN && free * RECLAIM_SHARE > (this.#pages.total.get() as number)
  }

  readonly #reclaimStep = (): void => {
    this.#reclaiming = undefined
    try {
      // Checked like any write (#commit): nothing goes into a file no longer at the path.
      // exec(), not a prepared run(): run() steps the pragma once, which frees one page.
      this.#write(() => this.#db.exec(`PRAGMA incremental_vacuum(${RECLAIM_STEP})`))
    } catch {
      // Nothing is lost: the pages stay free, for reuse, and the next deletion tries again.
      // What failed here (a full disk, a moved file) fails the next commit too, which reports it.
      return
    }
    this.#freed()
  }

  // Writes commit in an outermost transaction that checks the file (#commit); nested in an
  // open one, they are a savepoint (#run), and whoever opened it checks: one stat per
  // transaction, never one per row.
  #write<T>(fn: () => T): T {
    return (this.#db.inTransaction ? this.#run : this.#commit).immediate(fn) as T
  }

  // A write whose loss to a power cut costs nothing but doing it again: expiry's deletes (a
  // command expired but not yet durably deleted is found due again by start-up recovery, and
  // reads hide it meanwhile) and a deleted device's commands (invisible once the device is
  // gone; what a crash leaves is deleted before a device of the id is saved again). Under
  // synchronous 'full' it commits with NORMAL, without an fsync of its own: the WAL is written
  // in order, so the next 'full' commit, or a checkpoint, makes it durable too. The price: an
  // expiry lost to a power cut is reported a second time after the restart.
  #unsynced<T>(fn: () => T): T {
    const relax = this.#relax
    if (relax === undefined || this.#db.inTransaction) return this.#write(fn)
    relax.normal.run()
    try {
      return this.#write(fn)
    } finally {
      relax.full.run()
    }
  }

  // Called in #commit after the writes: throwing there rolls them back, so nothing is
  // acknowledged into a file that is no longer the one at the path.
  #verify (): void {
    if (this.#identity === undefined) return
    const current = identify(this.#file)
    if (current.ino !== this.#identity.ino || current.dev !== this.#identity.dev) {
      throw new BrokerError('ERR_FILE_MOVED', `sqliteStore: ${this.#file} is another file than the one the store opened: it was replaced under the store; nothing was written`)
    }
  }
}

// The four shapes of a scan statement, indexed by (one device ? 2 : 0) + (descending ? 1 : 0).
type ScanStatements<R> = readonly [Statement<R>, Statement<R>, Statement<R>, Statement<R>]

interface ScanOrder {
  readonly name: 'ASC' | 'DESC'
  /** Strictly past the cursor. */
  readonly past: string
  /** Inside the time window. */
  readonly inside: string
}

const ASCENDING: ScanOrder = {
  name: 'ASC',
  past: '(c.timestamp, c.id) > (@timestamp, @id)',
  inside: 'c.timestamp < @before'
}
const DESCENDING: ScanOrder = {
  name: 'DESC',
  past: '(c.timestamp, c.id) < (@timestamp, @id)',
  inside: 'c.timestamp > @after'
}

// Each index named: left to itself, the planner may read a device's index for a scan of all
// devices and sort what it finds, which is no longer a bounded step.
function scanStatements<R> (db: Database.Database, prepare: (from: string, device: string, order: ScanOrder) => Statement<R>): ScanStatements<R> {
  void db
  const all = 'commands c INDEXED BY commands_time'
  const one = 'commands c INDEXED BY commands_device_time'
  return [
    prepare(all, 'true AND', ASCENDING),
    prepare(all, 'true AND', DESCENDING),
    prepare(one, 'c.device_id = @deviceId AND', ASCENDING),
    prepare(one, 'c.device_id = @deviceId AND', DESCENDING)
  ]
}

// A filter list for json_each, or null for none.
function list (values: readonly unknown[] | undefined): string | null {
  return values === undefined ? null : JSON.stringify(values)
}

function toRecord (row: Row): CommandRecord {
  return { ...row, updated: row.updated === 1 }
}

// A row of RAW_COLUMNS, in their order.
type RawRow = [number, string, number, number, number | null, string, number | null, number | null, string | null,
  number | null, string | null, string | null, number | null, number]

function fromRaw (row: RawRow): CommandRecord {
  return {
    id: row[0],
    command: row[1],
    timestamp: row[2],
    lastUpdated: row[3],
    userId: row[4],
    deviceId: row[5],
    networkId: row[6],
    deviceTypeId: row[7],
    parameters: row[8],
    lifetime: row[9],
    status: row[10],
    result: row[11],
    expiresAt: row[12],
    updated: row[13] === 1
  }
}

function byNumber (a: number, b: number): number {
  return a - b
}
