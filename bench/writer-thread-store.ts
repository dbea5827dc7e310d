// The writer-thread store that bench/writer-thread.ts (and bench/steady.ts --thread) measure:
// issue 11, item 4, "use the second core". A prototype kept for the measurement, not shipped in
// lib/: measured side by side on this 2-core machine it did not gain enough to carry its cost
// (see the scenario's notes and bench/writer-thread.ts). What it does:
// - writes (commit, expiry, deletes, device saves) go to a worker thread that opens an ordinary
//   sqliteStore (lock, schema, background checkpointer) and serves them over its port, one
//   message per call, commands as flat arrays of their fields (cloned ~4x faster than objects);
// - reads run on the main thread, synchronously, through a read-only connection to the same
//   WAL file (a sqliteStore on a passed-in Database, without cache), with the device cache on
//   the main side kept in step with the saves and deletes sent to the thread;
// - store.behind() reads a flag the thread keeps in shared memory.
// The worker is eval'd CommonJS that import()s this module by its URL: the .js from dist/, or
// the .ts under a loader whose flags the worker inherits.
import { openSync, readSync } from 'node:fs'
import { resolve as resolvePath } from 'node:path'
import { type MessagePort, Worker } from 'node:worker_threads'
import { LRUCache } from 'lru-cache'
import { loadBetterSqlite3 } from '../lib/store/better-sqlite3.js'
import { BrokerError, type BrokerErrorCode } from '../lib/errors.js'
import { describe } from '../lib/options.js'
import { sqliteStore, type SqliteStore, type SqliteStoreOptions } from '../lib/store/sqlite.js'
import type {
  CommandPage, CommandRecord, CommandScan, CommitResult, CountPage, Cursor, DeviceRecord, ExpiringPage, SortQuery, Store,
  WriteBatch
} from '../lib/store/store.js'

/** Options of {@link sqliteThreadStore}: those of `sqliteStore`, applied by the writer thread's store. */
export type SqliteThreadStoreOptions = SqliteStoreOptions

/**
 * The store {@link sqliteThreadStore} resolves to: a {@link Store} whose writes answer with a
 * promise (they run on the writer thread) and whose reads answer at once (on the main thread).
 */
export interface SqliteThreadStore extends Store {
  getDevice: (id: string) => DeviceRecord | undefined
  getCommand: (id: number, now: number) => CommandRecord | undefined
  scanCommands: (scan: CommandScan, now: number) => CommandPage
  sortCommands: (query: SortQuery, now: number, maxWindow: number) => CommandRecord[] | undefined
  countPending: (deviceId: string, now: number, cursor: Cursor | undefined, examine: number) => CountPage
  expiringCommands: (afterId: number, maxId: number, examine: number) => ExpiringPage
  lastCommandId: () => number
  size: () => number
  behind: () => boolean
  saveDevice: (device: DeviceRecord) => Promise<void>
  deleteDevice: (id: string) => Promise<boolean>
  deleteCommands: (deviceId: string, limit: number) => Promise<number>
  commit: (batch: WriteBatch, now: number) => Promise<CommitResult>
  expireCommands: (ids: readonly number[], now: number) => Promise<CommandRecord[]>
  close: () => Promise<void>
}

// Requests to the writer thread: [op, ...arguments]. One message per call, never one per row;
// commands travel as flat arrays of their fields, which structured clone copies faster than
// as many objects.
const COMMIT = 0
const EXPIRE = 1
const DELETE_COMMANDS = 2
const DELETE_DEVICE = 3
const SAVE_DEVICE = 4
const CLOSE = 5
type Request =
  | [typeof COMMIT, unknown[], unknown[], number]
  | [typeof EXPIRE, readonly number[], number]
  | [typeof DELETE_COMMANDS, string, number]
  | [typeof DELETE_DEVICE, string]
  | [typeof SAVE_DEVICE, DeviceRecord]
  | [typeof CLOSE]

// Replies, in request order (a port keeps it): [1, value] or [0, name, message, code].
type Reply = [1, unknown] | [0, string, string, unknown]
// Ms between looks at a store that is behind, on the thread.
const BEHIND_POLL = 5

// Fields per command in a flat array: a NewCommandRecord's 13 (INSERT_FIELDS), a CommandRecord's 14.
const INSERT_FIELDS = 13
const RECORD_FIELDS = 14
// Fields per update: id, deviceId, has status, status, has result, result, lastUpdated.
const UPDATE_FIELDS = 7

// The worker's source, as CommonJS for `eval: true`: it imports this very module (the .ts
// under a test runner's loader, whose flags the worker inherits, the .js from dist/) and
// hands it the port. A failed import is reported like a failed open.
const BOOTSTRAP = `
const { parentPort, workerData } = require('node:worker_threads')
import(workerData.url).then((m) => { m.runWriter(parentPort, workerData) }, (err) => {
  parentPort.postMessage([0, String(err && err.name), String(err && err.message), undefined])
  parentPort.close()
})
`

// What sqliteStore() returns: size() and behind() always there.
type FullSqliteStore = SqliteStore & { size: () => number, behind: () => boolean }

/** What the writer thread is started with. */
export interface WriterData {
  file: string
  options: SqliteStoreOptions
  /** One Int32 the thread sets to 1 while its store is behind (see `Store.behind`), else 0. */
  behind: SharedArrayBuffer
}

/**
 * The writer thread's side: opens `sqliteStore(data.file, data.options)`, says so on `port`
 * (`[1, lastCommandId]`, or the error), then serves it there. Exported so that it can run
 * in-process over a `MessageChannel`; the worker runs nothing else.
 */
export function runWriter (port: MessagePort, data: WriterData): void {
  let store: SqliteStore
  try {
    store = sqliteStore(data.file, data.options)
  } catch (err) {
    port.postMessage(failure(err))
    port.close()
    return
  }
  port.postMessage([1, store.lastCommandId()])
  serve(port, store, new Int32Array(data.behind))
}

/**
 * Serves `store`'s writes on `port`, one reply per request, in order, until a close request,
 * after which it closes the store, replies and closes the port. Exported to run in-process over a MessageChannel.
 */
export function serve (port: MessagePort, sqlite: SqliteStore, behind: Int32Array): void {
  // sqliteStore() always has size() and behind().
  const store = sqlite as FullSqliteStore
  // What store.behind() says, in memory the main side reads at once (behind[0], 1 or 0): after
  // every call, and every BEHIND_POLL ms while it says so, as the main side then holds expiry
  // back and sends nothing after which it would learn that it has caught up.
  let watching: NodeJS.Timeout | undefined
  const watch = (): void => {
    if (store.behind()) return
    Atomics.store(behind, 0, 0)
    clearInterval(watching)
    watching = undefined
  }
  port.on('message', (request: Request) => {
    if (request[0] === CLOSE) {
      clearInterval(watching)
      void Promise.resolve(store.close()).then(() => {
        port.postMessage([1, undefined])
        port.close()
      })
      return
    }
    let reply: Reply
    try {
      reply = [1, run(store, request)]
    } catch (err) {
      reply = failure(err)
    }
    port.postMessage(reply)
    if (watching === undefined && store.behind()) {
      Atomics.store(behind, 0, 1)
      watching = setInterval(watch, BEHIND_POLL).unref()
    }
  })
}

function run (store: FullSqliteStore, request: Exclude<Request, [typeof CLOSE]>): unknown {
  switch (request[0]) {
    case COMMIT: {
      const [, flatInserts, flatUpdates, now] = request
      const inserts = []
      for (let i = 0; i < flatInserts.length; i += INSERT_FIELDS) inserts.push(insertOf(flatInserts, i))
      const updates = []
      for (let i = 0; i < flatUpdates.length; i += UPDATE_FIELDS) {
        const patch: { status?: string | null, result?: string | null } = {}
        if (flatUpdates[i + 2] === 1) patch.status = flatUpdates[i + 3] as string | null
        if (flatUpdates[i + 4] === 1) patch.result = flatUpdates[i + 5] as string | null
        updates.push({ id: flatUpdates[i] as number, deviceId: flatUpdates[i + 1] as string, patch, lastUpdated: flatUpdates[i + 6] as number })
      }
      const { ids, before } = store.commit({ inserts, updates, maxPending: Infinity }, now)
      const flatBefore: unknown[] = []
      for (const record of before) flatten(flatBefore, record)
      return [ids, flatBefore]
    }
    case EXPIRE: {
      const flat: unknown[] = []
      for (const record of store.expireCommands(request[1], request[2])) flatten(flat, record)
      return flat
    }
    case DELETE_COMMANDS:
      return store.deleteCommands(request[1], request[2])
    case DELETE_DEVICE:
      return store.deleteDevice(request[1])
    case SAVE_DEVICE:
      return store.saveDevice(request[1])
  }
}

function failure (err: unknown): Reply {
  // Object(): a thrown null or string has no fields, not a TypeError here.
  const e = Object(err) as { name?: unknown, message?: unknown, code?: unknown }
  return [0, String(e.name), String(e.message), e.code]
}

// The error a reply carries, as the main side throws it: a BrokerError with its code again
// (structured clone would not keep the class), else an Error with the original's name,
// message and code.
function rebuild (reply: [0, string, string, unknown]): Error {
  const [, name, message, code] = reply
  if (name === 'BrokerError') return new BrokerError(code as BrokerErrorCode, message)
  return Object.assign(new Error(message), { name, code })
}

function insertOf (flat: unknown[], i: number): Omit<CommandRecord, 'id'> {
  return {
    command: flat[i] as string,
    timestamp: flat[i + 1] as number,
    lastUpdated: flat[i + 2] as number,
    userId: flat[i + 3] as number | null,
    deviceId: flat[i + 4] as string,
    networkId: flat[i + 5] as number | null,
    deviceTypeId: flat[i + 6] as number | null,
    parameters: flat[i + 7] as string | null,
    lifetime: flat[i + 8] as number | null,
    status: flat[i + 9] as string | null,
    result: flat[i + 10] as string | null,
    expiresAt: flat[i + 11] as number | null,
    updated: flat[i + 12] as boolean
  }
}

// A record, or undefined as RECORD_FIELDS holes led by id 0 (ids are positive).
function flatten (flat: unknown[], r: CommandRecord | undefined): void {
  if (r === undefined) {
    flat.push(0, null, null, null, null, null, null, null, null, null, null, null, null, null)
    return
  }
  flat.push(r.id, r.command, r.timestamp, r.lastUpdated, r.userId, r.deviceId, r.networkId, r.deviceTypeId, r.parameters,
    r.lifetime, r.status, r.result, r.expiresAt, r.updated)
}

function recordAt (flat: unknown[], i: number): CommandRecord | undefined {
  if (flat[i] === 0) return undefined
  return {
    id: flat[i] as number,
    command: flat[i + 1] as string,
    timestamp: flat[i + 2] as number,
    lastUpdated: flat[i + 3] as number,
    userId: flat[i + 4] as number | null,
    deviceId: flat[i + 5] as string,
    networkId: flat[i + 6] as number | null,
    deviceTypeId: flat[i + 7] as number | null,
    parameters: flat[i + 8] as string | null,
    lifetime: flat[i + 9] as number | null,
    status: flat[i + 10] as string | null,
    result: flat[i + 11] as string | null,
    expiresAt: flat[i + 12] as number | null,
    updated: flat[i + 13] as boolean
  }
}

// The calling thread's CPU time, ms (Linux: its scheduler statistics); 0 elsewhere.
const schedstat = ((): number | undefined => {
  try {
    return openSync('/proc/thread-self/schedstat', 'r')
  } catch {
    return undefined
  }
})()
const statBuffer = Buffer.alloc(128)
function threadCpu (): number {
  if (schedstat === undefined) return 0
  const length = readSync(schedstat, statBuffer, 0, statBuffer.length, 0)
  return Number(statBuffer.toString('latin1', 0, length).split(' ')[0]) / 1e6
}

/** CPU the main thread has spent in postMessage to writer threads (cloning requests), ms: the crossing's cost on the main side. */
export const crossing = { ms: 0 }

const DEVICE_CACHE_BYTES = 8 * 1024 * 1024
const DEVICE_OVERHEAD = 400

function deviceBytes (device: Readonly<DeviceRecord>): number {
  return DEVICE_OVERHEAD + 2 * (2 * device.id.length + device.name.length + (device.data?.length ?? 0))
}

/**
 * Opens a SQLite store whose writes run on a thread of their own: a worker thread opens
 * `sqliteStore(path, options)` (lock, schema, background checkpointer and all) and runs every
 * commit, expiry, delete and device save there, while the main thread reads the same WAL file
 * through a read-only connection of its own, synchronously. While the thread commits one
 * batch, the broker gathers the next: validation, auth and fan-out keep the main thread and
 * SQLite's work (and its fsyncs) takes a second core.
 *
 * A read sees every write whose promise has resolved. Devices read are cached on the main
 * side as `sqliteStore` caches them (`deviceCacheBytes`), and kept consistent with the saves
 * and deletes this store sends. `path` must be a file (`':memory:'` cannot be shared by two
 * connections); options are those of `sqliteStore` and are checked the same way. Resolves
 * once both sides are open; rejects with what `sqliteStore` throws (`ERR_LOCKED`,
 * `ERR_SCHEMA`...), leaving no thread or connection behind. Errors of writes come back as
 * they were thrown on the thread: a `BrokerError` with its `code`, or an `Error` with the
 * `name`, `message` and `code` of the original.
 */
export async function sqliteThreadStore (path: string, options: SqliteThreadStoreOptions = {}): Promise<SqliteThreadStore> {
  if (typeof path !== 'string') throw new TypeError(`sqliteThreadStore: expected a file path, received ${describe(path)}`)
  if (path === '' || path === ':memory:') {
    throw new RangeError(`sqliteThreadStore: expected the path of a file, received ${describe(path)}: two threads cannot share a database in memory`)
  }
  const { synchronous = 'full', checkpoint = 'background', deviceCacheBytes = DEVICE_CACHE_BYTES } = options
  if (synchronous !== 'full' && synchronous !== 'normal') {
    throw new RangeError(`sqliteThreadStore: options.synchronous must be 'full' or 'normal', received ${describe(synchronous)}`)
  }
  if (checkpoint !== 'background' && checkpoint !== 'inline') {
    throw new RangeError(`sqliteThreadStore: options.checkpoint must be 'background' or 'inline', received ${describe(checkpoint)}`)
  }
  if (typeof deviceCacheBytes !== 'number') {
    throw new TypeError(`sqliteThreadStore: options.deviceCacheBytes must be an integer, received ${describe(deviceCacheBytes)}`)
  }
  if (!Number.isSafeInteger(deviceCacheBytes) || deviceCacheBytes < 0) {
    throw new RangeError(`sqliteThreadStore: options.deviceCacheBytes must be an integer from 0 to ${Number.MAX_SAFE_INTEGER}, received ${describe(deviceCacheBytes)}`)
  }
  const Sqlite = loadBetterSqlite3()
  const file = resolvePath(path)
  const data: WriterData = { file, options: { synchronous, checkpoint, deviceCacheBytes: 0 }, behind: new SharedArrayBuffer(4) }
  const worker = new Worker(BOOTSTRAP, { eval: true, workerData: { url: import.meta.url, ...data } })
  const exited = new Promise<void>((resolve) => { worker.once('exit', () => { resolve() }) })
  const opened = await new Promise<Reply>((resolve) => {
    worker.once('message', resolve)
    // An exit before any message: the thread could not start (its error comes as 'error').
    worker.once('error', (err) => { resolve(failure(err)) })
  })
  worker.removeAllListeners('message')
  worker.removeAllListeners('error')
  if (opened[0] !== 1) {
    await exited
    throw rebuild(opened as [0, string, string, unknown])
  }
  let reader: SqliteStore
  try {
    const db = new Sqlite(file, { readonly: true, fileMustExist: true })
    try {
      reader = sqliteStore(db, { deviceCacheBytes: 0 })
    } catch (err) {
      db.close()
      throw err
    }
  } catch (err) {
    worker.postMessage([CLOSE])
    await exited
    throw err
  }
  return new SqliteThreadStoreImpl(worker, exited, reader, opened[1] as number, deviceCacheBytes, new Int32Array(data.behind))
}

// A call waiting for its reply: what to make of the value, and the promise's settlers.
interface Waiting {
  kind: number
  resolve: (value: never) => void
  reject: (err: Error) => void
}

class SqliteThreadStoreImpl implements SqliteThreadStore {
  readonly #worker: Worker
  readonly #exited: Promise<void>
  // The read-only connection's store: only its read methods are called.
  readonly #reader: FullSqliteStore
  readonly #devices: LRUCache<string, Readonly<DeviceRecord>> | undefined
  // Calls sent and not answered, in the order they were sent (replies come in that order).
  readonly #waiting: Waiting[] = []
  #head = 0
  #lastId: number
  readonly #behind: Int32Array
  #closed: Promise<void> | undefined
  // Set when the thread died: every call fails with it from then on.
  #dead: Error | undefined

  constructor (worker: Worker, exited: Promise<void>, reader: SqliteStore, lastId: number, deviceCacheBytes: number, behind: Int32Array) {
    this.#behind = behind
    this.#worker = worker
    this.#exited = exited
    this.#reader = reader as FullSqliteStore
    this.#lastId = lastId
    this.#devices = deviceCacheBytes === 0
      ? undefined
      : new LRUCache<string, Readonly<DeviceRecord>>({ maxSize: deviceCacheBytes, sizeCalculation: deviceBytes })
    // The one 'message' listener, added before unref(): adding one refs the worker again. The
    // worker is ref()'d only while calls wait for it, so an idle store keeps no process alive
    // and a pending call is never lost to a process that exits under it.
    worker.on('message', (reply: Reply) => { this.#answer(reply) })
    worker.on('error', (err) => { this.#die(err) })
    void exited.then(() => { this.#die(new BrokerError('ERR_STORE', 'sqliteThreadStore: the writer thread ended')) })
    worker.unref()
  }

  getDevice (id: string): DeviceRecord | undefined {
    this.#open()
    if (this.#devices === undefined) return this.#reader.getDevice(id)
    let device = this.#devices.get(id)
    if (device === undefined) {
      device = this.#reader.getDevice(id)
      if (device === undefined) return undefined
      this.#devices.set(id, device)
    }
    return device
  }

  async saveDevice (device: DeviceRecord): Promise<void> {
    const saved = Object.freeze({ ...device })
    // Dropped now, and set once written: a read meanwhile sees the file, which still has the
    // device as it was, and that is what it caches until then.
    this.#devices?.delete(saved.id)
    await this.#call([SAVE_DEVICE, saved], SAVE_DEVICE)
    this.#devices?.set(saved.id, saved)
  }

  async deleteDevice (id: string): Promise<boolean> {
    this.#devices?.delete(id)
    try {
      return await this.#call([DELETE_DEVICE, id], DELETE_DEVICE)
    } finally {
      this.#devices?.delete(id)
    }
  }

  deleteCommands (deviceId: string, limit: number): Promise<number> {
    return this.#call([DELETE_COMMANDS, deviceId, limit], DELETE_COMMANDS)
  }

  commit (batch: WriteBatch, now: number): Promise<CommitResult> {
    const inserts: unknown[] = []
    for (const c of batch.inserts) {
      inserts.push(c.command, c.timestamp, c.lastUpdated, c.userId, c.deviceId, c.networkId, c.deviceTypeId, c.parameters,
        c.lifetime, c.status, c.result, c.expiresAt, c.updated)
    }
    const updates: unknown[] = []
    for (const { id, deviceId, patch, lastUpdated } of batch.updates) {
      const hasStatus = patch.status !== undefined
      const hasResult = patch.result !== undefined
      updates.push(id, deviceId, hasStatus ? 1 : 0, hasStatus ? patch.status : null, hasResult ? 1 : 0, hasResult ? patch.result : null, lastUpdated)
    }
    return this.#call([COMMIT, inserts, updates, now], COMMIT)
  }

  getCommand (id: number, now: number): CommandRecord | undefined {
    this.#open()
    return this.#reader.getCommand(id, now)
  }

  expireCommands (ids: readonly number[], now: number): Promise<CommandRecord[]> {
    return this.#call([EXPIRE, ids, now], EXPIRE)
  }

  scanCommands (scan: CommandScan, now: number): CommandPage {
    this.#open()
    return this.#reader.scanCommands(scan, now)
  }

  sortCommands (query: SortQuery, now: number, maxWindow: number): CommandRecord[] | undefined {
    this.#open()
    return this.#reader.sortCommands(query, now, maxWindow)
  }

  countPending (deviceId: string, now: number, cursor: Cursor | undefined, examine: number): CountPage {
    this.#open()
    return this.#reader.countPending(deviceId, now, cursor, examine)
  }

  expiringCommands (afterId: number, maxId: number, examine: number): ExpiringPage {
    this.#open()
    return this.#reader.expiringCommands(afterId, maxId, examine)
  }

  /** The highest id assigned: the thread's at open, then the highest of each commit's. */
  lastCommandId (): number {
    this.#open()
    return this.#lastId
  }

  size (): number {
    this.#open()
    return this.#reader.size()
  }

  /** What the thread's store says, as the thread last wrote it to shared memory. */
  behind (): boolean {
    return Atomics.load(this.#behind, 0) === 1
  }

  // Closes the reader at once (it is the main side's), then the thread's store, which
  // checkpoints and removes the WAL as the file's last connection.
  close (): Promise<void> {
    this.#closed ??= (async () => {
      this.#devices?.clear()
      await this.#reader.close()
      if (this.#dead === undefined) await this.#call([CLOSE], CLOSE, true)
      // Kept alive until the thread has ended (its reply unref()'d it).
      this.#worker.ref()
      await this.#exited
    })()
    return this.#closed
  }

  #open (): void {
    if (this.#closed !== undefined) throw new BrokerError('ERR_CLOSED', 'sqliteThreadStore: used after close()')
  }

  #call<T>(request: Request, kind: number, closing = false): Promise<T> {
    if (!closing) this.#open()
    if (this.#dead !== undefined) return Promise.reject(this.#dead)
    if (this.#head === this.#waiting.length) this.#worker.ref()
    const promise = new Promise<T>((resolve, reject) => {
      this.#waiting.push({ kind, resolve: resolve as (value: never) => void, reject })
    })
    const before = threadCpu()
    this.#worker.postMessage(request)
    crossing.ms += threadCpu() - before
    return promise
  }

  #answer (reply: Reply): void {
    const waiting = this.#waiting[this.#head++] as Waiting
    if (this.#head === this.#waiting.length) {
      this.#waiting.length = 0
      this.#head = 0
      this.#worker.unref()
    }
    if (reply[0] === 0) {
      waiting.reject(rebuild(reply))
      return
    }
    waiting.resolve(this.#decode(waiting.kind, reply[1]) as never)
  }

  #decode (kind: number, value: unknown): unknown {
    if (kind === COMMIT) {
      const [ids, flatBefore] = value as [number[], unknown[]]
      for (const id of ids) if (id > this.#lastId) this.#lastId = id
      const before = []
      for (let i = 0; i < flatBefore.length; i += RECORD_FIELDS) before.push(recordAt(flatBefore, i))
      return { ids, before }
    }
    if (kind === EXPIRE) {
      const flat = value as unknown[]
      const removed = []
      for (let i = 0; i < flat.length; i += RECORD_FIELDS) removed.push(recordAt(flat, i) as CommandRecord)
      return removed
    }
    return value
  }

  #die (err: Error): void {
    if (this.#dead !== undefined) return
    this.#dead = err
    const waiting = this.#waiting.splice(this.#head)
    this.#head = 0
    this.#waiting.length = 0
    // A close under way resolves: the thread, and so the store, has ended.
    for (const w of waiting) {
      if (w.kind === CLOSE) w.resolve(undefined as never)
      else w.reject(err)
    }
  }
}
