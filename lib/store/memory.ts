import sortedBtree from 'sorted-btree'
import { BrokerError } from '../errors.js'
import {
  compareCursors,
  type CommandPage, type CommandRecord, type CommandScan, type CommandUpdate, type CommitResult, type CountPage, type Cursor,
  type DeviceRecord, type ExpiringPage, type SortQuery, type SyncStore, type WriteBatch
} from './store.js'

// sorted-btree is CommonJS: Node hands an ES module its whole `module.exports`, whose `default`
// is the class.
const BTree = sortedBtree.default
type Tree<K, V> = InstanceType<typeof BTree<K, V>>

/**
 * Creates an in-memory {@link Store}: the reference implementation of the
 * store contract, and the store for unit tests. Nothing survives `close()`,
 * which the broker's `close()` calls: to test a restart, use `sqliteStore` on
 * a file. Commands are indexed in B-trees by id, by time and by device and
 * time (sorted-btree), so every scan step costs what it looks at, as in SQLite.
 */
export function memoryStore (): SyncStore {
  return new MemoryStore()
}

class MemoryStore implements SyncStore {
  readonly #devices = new Map<string, DeviceRecord>()
  readonly #byId: Tree<number, CommandRecord> = new BTree(undefined, (a, b) => a - b)
  // Records are their own keys here: their timestamp and id never change.
  readonly #byTime: Tree<Cursor, CommandRecord> = new BTree(undefined, compareCursors)
  readonly #byDevice = new Map<string, Tree<Cursor, CommandRecord>>()
  #lastId = 0
  #closed = false

  getDevice (id: string): DeviceRecord | undefined {
    this.#open()
    const device = this.#devices.get(id)
    return device === undefined ? undefined : { ...device }
  }

  saveDevice (device: DeviceRecord): void {
    this.#open()
    this.#devices.set(device.id, { ...device })
  }

  deleteDevice (id: string): boolean {
    this.#open()
    const device = this.#devices.get(id)
    if (device === undefined) return false
    this.#devices.delete(id)
    return true
  }

  deleteCommands (deviceId: string, limit: number): number {
    this.#open()
    const tree = this.#byDevice.get(deviceId)
    const removed: CommandRecord[] = []
    if (tree !== undefined) {
      for (const [, record] of tree.entries()) {
        if (removed.length >= limit) break
        removed.push(record)
      }
      for (const record of removed) this.#remove(record)
    }
    return removed.length
  }

  commit (batch: WriteBatch, now: number): CommitResult {
    this.#open()
    // Nothing below can fail: the batch is all-or-nothing without an undo log.
    const ids = batch.inserts.map((command) => {
      const record = { ...command, id: ++this.#lastId }
      this.#add(record)
      return record.id
    })
    const before = batch.updates.map((update) => this.#update(update, now))
    return { ids, before }
  }

  getCommand (id: number, now: number): CommandRecord | undefined {
    this.#open()
    const record = this.#byId.get(id)
    return record === undefined || expired(record, now) ? undefined : { ...record }
  }

  expireCommands (ids: readonly number[], now: number): CommandRecord[] {
    this.#open()
    const removed: CommandRecord[] = []
    for (const id of ids) {
      const record = this.#byId.get(id)
      if (record === undefined || record.expiresAt === null || record.expiresAt > now) continue
      this.#remove(record)
      removed.push(record)
    }
    return removed.map((record) => ({ ...record }))
  }

  scanCommands (scan: CommandScan, now: number): CommandPage {
    this.#open()
    const tree = scan.deviceId === undefined ? this.#byTime : this.#byDevice.get(scan.deviceId)
    const rows: CommandRecord[] = []
    if (tree === undefined) return { rows, next: undefined }
    const ascending = scan.order === 'ASC'
    const { after, before } = scan
    let examined = 0
    for (const record of walk(tree, ascending, scan.cursor ?? edge(ascending, after, before))) {
      if (ascending ? before !== undefined && record.timestamp >= before : after !== undefined && record.timestamp <= after) break
      examined++
      if (this.#scanned(scan, record, now)) {
        rows.push({ ...record })
        if (rows.length >= scan.take) return { rows, next: cursorOf(record) }
      }
      if (examined >= scan.examine) return { rows, next: cursorOf(record) }
    }
    return { rows, next: undefined }
  }

  sortCommands (query: SortQuery, now: number, maxWindow: number): CommandRecord[] | undefined {
    this.#open()
    const tree = this.#byDevice.get(query.deviceId)
    if (tree === undefined) return []
    const window: CommandRecord[] = []
    for (const record of walk(tree, true, edge(true, query.start, query.end))) {
      if (query.end !== undefined && record.timestamp >= query.end) break
      if (window.length >= maxWindow) return undefined
      window.push(record)
    }
    const field = query.sortField
    const sign = query.sortOrder === 'ASC' ? 1 : -1
    const rows = window.filter((record) => !expired(record, now) && this.#devices.has(record.deviceId) && named(query, record) &&
      (query.status === undefined || record.status === query.status))
    rows.sort((a, b) => sign * (compare(a[field], b[field]) || a.timestamp - b.timestamp || a.id - b.id))
    return rows.slice(query.skip, query.skip + query.take).map((record) => ({ ...record }))
  }

  countPending (deviceId: string, now: number, cursor: Cursor | undefined, examine: number): CountPage {
    this.#open()
    const tree = this.#byDevice.get(deviceId)
    let count = 0
    let examined = 0
    if (tree !== undefined) {
      for (const record of walk(tree, true, cursor ?? edge(true, undefined, undefined))) {
        examined++
        if (!record.updated && !expired(record, now)) count++
        if (examined >= examine) return { count, next: cursorOf(record) }
      }
    }
    return { count, next: undefined }
  }

  expiringCommands (afterId: number, maxId: number, examine: number): ExpiringPage {
    this.#open()
    const entries: Array<[number, number]> = []
    let examined = 0
    for (const [id, record] of this.#byId.entries(afterId + 1)) {
      if (id > maxId) break
      examined++
      if (record.expiresAt !== null) entries.push([id, record.expiresAt])
      if (examined >= examine) return { entries, next: id }
    }
    return { entries, next: undefined }
  }

  lastCommandId (): number {
    this.#open()
    return this.#lastId
  }

  close (): void {
    this.#closed = true
  }

  #update ({ id, deviceId, patch, lastUpdated }: CommandUpdate, now: number): CommandRecord | undefined {
    const record = this.#byId.get(id)
    if (record === undefined || record.deviceId !== deviceId || expired(record, now)) return undefined
    const before = { ...record }
    if (patch.status !== undefined) record.status = patch.status
    if (patch.result !== undefined) record.result = patch.result
    record.lastUpdated = lastUpdated
    record.updated = true
    return before
  }

  // Whether a scan returns this command: its filters, its time, and a device that exists.
  #scanned (scan: CommandScan, record: CommandRecord, now: number): boolean {
    if (expired(record, now) || !named(scan, record)) return false
    if (scan.status !== undefined && record.status !== scan.status) return false
    if (scan.updatedAfter !== undefined && !(record.updated && record.lastUpdated > scan.updatedAfter)) return false
    const device = this.#devices.get(record.deviceId)
    if (device === undefined) return false
    if (scan.networkIds !== undefined && (device.networkId === null || !scan.networkIds.includes(device.networkId))) return false
    if (scan.deviceTypeIds !== undefined && (device.deviceTypeId === null || !scan.deviceTypeIds.includes(device.deviceTypeId))) return false
    return true
  }

  #add (record: CommandRecord): void {
    this.#byId.set(record.id, record)
    this.#byTime.set(record, record)
    let tree = this.#byDevice.get(record.deviceId)
    if (tree === undefined) {
      tree = new BTree(undefined, compareCursors)
      this.#byDevice.set(record.deviceId, tree)
    }
    tree.set(record, record)
  }

  #remove (record: CommandRecord): void {
    this.#byId.delete(record.id)
    this.#byTime.delete(record)
    const tree = this.#byDevice.get(record.deviceId) as Tree<Cursor, CommandRecord>
    tree.delete(record)
    if (tree.size === 0) this.#byDevice.delete(record.deviceId)
  }

  #open (): void {
    if (this.#closed) throw new BrokerError('ERR_CLOSED', 'memoryStore: used after close()')
  }
}

// The commands of `tree` strictly past `from`, in order.
function * walk (tree: Tree<Cursor, CommandRecord>, ascending: boolean, from: Cursor): Generator<CommandRecord> {
  const entries = ascending ? tree.entries(from) : tree.entriesReversed(from, undefined, true)
  for (const [key, record] of entries) {
    // entries() starts at `from` itself if it is a key: strictly past means skipping it.
    if (ascending && compareCursors(key, from) === 0) continue
    yield record
  }
}

// Where a scan without a cursor starts: just outside its time window.
function edge (ascending: boolean, after: number | undefined, before: number | undefined): Cursor {
  return ascending
    ? { timestamp: after ?? -Infinity, id: Infinity }
    : { timestamp: before ?? Infinity, id: -Infinity }
}

function cursorOf (record: CommandRecord): Cursor {
  return { timestamp: record.timestamp, id: record.id }
}

function named (filter: { names?: readonly string[] | undefined, command?: string | undefined }, record: CommandRecord): boolean {
  if (filter.command !== undefined && record.command !== filter.command) return false
  return filter.names === undefined || filter.names.includes(record.command)
}

function expired (record: CommandRecord, now: number): boolean {
  return record.expiresAt !== null && record.expiresAt <= now
}

// SQLite's order of text: nulls first, then by code point (its BINARY collation compares UTF-8
// bytes, which is code point order; JS `<` compares UTF-16 units, which is not).
function compare (a: string | null, b: string | null): number {
  if (a === b) return 0
  if (a === null) return -1
  if (b === null) return 1
  for (let i = 0, j = 0; i < a.length && j < b.length;) {
    const x = a.codePointAt(i) as number
    const y = b.codePointAt(j) as number
    if (x !== y) return x < y ? -1 : 1
    i += x > 0xffff ? 2 : 1
    j += y > 0xffff ? 2 : 1
  }
  // Equal so far and a !== b: the shorter is a prefix of the longer.
  return a.length < b.length ? -1 : 1
}
