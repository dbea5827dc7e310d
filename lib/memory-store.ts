import { BrokerError } from './errors.js'
import {
  matches,
  type CommandFilter, type CommandPatch, type CommandQuery, type CommandRecord, type DeviceRecord, type ExpiryRef,
  type NewCommandRecord, type Store
} from './store.js'

/**
 * Creates an in-memory {@link Store}: the reference implementation of the
 * store contract, and the store for unit tests. Nothing survives `close()`,
 * which the broker's `close()` calls: to test a restart, use `sqliteStore` on
 * a file. Lists and history scan the device's (or every) command: fine for
 * tests and small hubs; use `sqliteStore` for large histories.
 */
export function memoryStore (): Store {
  return new MemoryStore()
}

class MemoryStore implements Store {
  readonly #devices = new Map<string, DeviceRecord>()
  // Map iteration is insertion order, and ids only grow, so this is id order.
  readonly #commands = new Map<number, CommandRecord>()
  readonly #byDevice = new Map<string, Set<number>>()
  #lastId = 0
  // The undo log of the outermost open transaction, or undefined outside one.
  #undo: Undo[] | undefined
  // Recovery pages continue from where the previous one stopped, keeping paging O(n) overall.
  #page: { afterId: number, rest: Iterator<CommandRecord> } | undefined
  #closed = false

  transaction<T>(fn: () => T): T {
    this.#open()
    // A nested transaction shares the outer undo log and undoes only its own part of it,
    // as SQLite's savepoints do.
    const outer = this.#undo
    const undo: Undo[] = outer ?? []
    const mark = undo.length
    this.#undo = undo
    let result: T
    try {
      result = fn()
    } catch (err) {
      for (let i = undo.length - 1; i >= mark; i--) this.#revert(undo[i] as Undo)
      undo.length = mark
      this.#undo = outer
      throw err
    }
    this.#undo = outer
    return result
  }

  getDevice (id: string): DeviceRecord | undefined {
    this.#open()
    const device = this.#devices.get(id)
    return device === undefined ? undefined : { ...device }
  }

  saveDevice (device: DeviceRecord): void {
    this.#open()
    const previous = this.#devices.get(device.id)
    this.#devices.set(device.id, { ...device })
    this.#undo?.push({ op: 'device', id: device.id, device: previous, commands: [] })
  }

  deleteDevice (id: string): ExpiryRef[] {
    this.#open()
    const device = this.#devices.get(id)
    const ids = this.#byDevice.get(id)
    const removed: ExpiryRef[] = []
    const records: CommandRecord[] = []
    if (ids !== undefined) {
      for (const commandId of ids) {
        const record = this.#commands.get(commandId) as CommandRecord
        records.push(record)
        this.#commands.delete(commandId)
        if (record.expiresAt !== null) removed.push({ id: commandId, expiresAt: record.expiresAt })
      }
      this.#byDevice.delete(id)
    }
    this.#devices.delete(id)
    this.#undo?.push({ op: 'device', id, device, commands: records })
    return removed
  }

  insertCommand (command: NewCommandRecord): number {
    this.#open()
    const id = ++this.#lastId
    this.#commands.set(id, { ...command, id })
    let ids = this.#byDevice.get(command.deviceId)
    if (ids === undefined) {
      ids = new Set()
      this.#byDevice.set(command.deviceId, ids)
    }
    ids.add(id)
    // The id stays consumed on rollback: ids are never reused, gaps are allowed.
    this.#undo?.push({ op: 'insert', id })
    return id
  }

  getCommand (id: number, now: number): CommandRecord | undefined {
    this.#open()
    const record = this.#commands.get(id)
    return record === undefined || expired(record, now) ? undefined : { ...record }
  }

  updateCommand (id: number, deviceId: string, patch: CommandPatch, lastUpdated: number, now: number): CommandRecord | undefined {
    this.#open()
    const record = this.#commands.get(id)
    if (record === undefined || record.deviceId !== deviceId || expired(record, now)) return undefined
    const before = { ...record }
    if (patch.status !== undefined) record.status = patch.status
    if (patch.result !== undefined) record.result = patch.result
    record.lastUpdated = lastUpdated
    record.updated = true
    this.#undo?.push({ op: 'update', record, before })
    // The undo log keeps `before`: hand out a copy.
    return { ...before }
  }

  expireCommands (ids: readonly number[], now: number): CommandRecord[] {
    this.#open()
    const removed: CommandRecord[] = []
    for (const id of ids) {
      const record = this.#commands.get(id)
      if (record === undefined || record.expiresAt === null || record.expiresAt > now) continue
      this.#remove(id)
      removed.push(record)
    }
    if (removed.length > 0) this.#undo?.push({ op: 'restore', commands: removed })
    return removed.map((record) => ({ ...record }))
  }

  listCommands (query: CommandQuery, now: number): CommandRecord[] {
    this.#open()
    const ids = this.#byDevice.get(query.deviceId)
    if (ids === undefined) return []
    const rows: CommandRecord[] = []
    for (const id of ids) {
      const record = this.#commands.get(id) as CommandRecord
      if (expired(record, now)) continue
      if (query.start !== undefined && !(record.timestamp > query.start)) continue
      if (query.end !== undefined && !(record.timestamp < query.end)) continue
      if (query.command !== undefined && record.command !== query.command) continue
      if (query.status !== undefined && record.status !== query.status) continue
      rows.push(record)
    }
    const field = query.sortField
    const sign = query.sortOrder === 'ASC' ? 1 : -1
    rows.sort((a, b) => sign * (compare(a[field], b[field]) || compare(a.timestamp, b.timestamp) || a.id - b.id))
    return rows.slice(query.skip, query.skip + query.take).map((record) => ({ ...record }))
  }

  commandsAfter (filter: CommandFilter, after: number, limit: number, now: number, accept: (command: CommandRecord) => boolean): CommandRecord[] {
    this.#open()
    const candidates: CommandRecord[] = []
    const scope = filter.deviceId === undefined ? this.#commands.keys() : (this.#byDevice.get(filter.deviceId) ?? [])
    for (const id of scope) {
      const record = this.#commands.get(id) as CommandRecord
      if (record.timestamp > after && !expired(record, now) && matches(filter, record)) candidates.push(record)
    }
    candidates.sort((a, b) => a.timestamp - b.timestamp || a.id - b.id)
    const rows: CommandRecord[] = []
    for (const record of candidates) {
      if (rows.length >= limit) break
      const copy = { ...record }
      if (accept(copy)) rows.push(copy)
    }
    return rows
  }

  countPending (deviceId: string, now: number): number {
    this.#open()
    let count = 0
    for (const id of this.#byDevice.get(deviceId) ?? []) {
      const record = this.#commands.get(id) as CommandRecord
      if (!record.updated && !expired(record, now)) count++
    }
    return count
  }

  expiringCommands (afterId: number, maxId: number, limit: number): Array<[number, number]> {
    this.#open()
    if (limit <= 0) return []
    let rest: Iterator<CommandRecord>
    if (this.#page !== undefined && this.#page.afterId === afterId) {
      rest = this.#page.rest
    } else {
      rest = this.#commands.values()
    }
    this.#page = undefined
    const page: Array<[number, number]> = []
    let last = afterId
    for (let next = rest.next(); !next.done; next = rest.next()) {
      const record = next.value
      if (record.id <= afterId) continue
      if (record.id > maxId) return page
      last = record.id
      if (record.expiresAt !== null) page.push([record.id, record.expiresAt])
      if (page.length >= limit) {
        this.#page = { afterId: last, rest }
        return page
      }
    }
    return page
  }

  lastCommandId (): number {
    this.#open()
    return this.#lastId
  }

  close (): void {
    this.#closed = true
    this.#page = undefined
  }

  #revert (undo: Undo): void {
    switch (undo.op) {
      case 'device':
        if (undo.device === undefined) this.#devices.delete(undo.id)
        else this.#devices.set(undo.id, undo.device)
        if (undo.commands.length > 0) this.#restore(undo.commands)
        break
      case 'insert':
        this.#remove(undo.id)
        break
      case 'update':
        Object.assign(undo.record, undo.before)
        break
      case 'restore':
        this.#restore(undo.commands)
    }
  }

  #remove (id: number): void {
    const record = this.#commands.get(id) as CommandRecord
    this.#commands.delete(id)
    const ids = this.#byDevice.get(record.deviceId) as Set<number>
    ids.delete(id)
    if (ids.size === 0) this.#byDevice.delete(record.deviceId)
  }

  // Puts removed commands back. Their ids are lower than ids assigned since, so re-adding them
  // would break the Map's id order: rebuild it instead. Runs on rollback only.
  #restore (records: CommandRecord[]): void {
    const all = [...this.#commands.values(), ...records].sort((a, b) => a.id - b.id)
    this.#commands.clear()
    this.#byDevice.clear()
    for (const record of all) {
      this.#commands.set(record.id, record)
      let ids = this.#byDevice.get(record.deviceId)
      if (ids === undefined) {
        ids = new Set()
        this.#byDevice.set(record.deviceId, ids)
      }
      ids.add(record.id)
    }
    this.#page = undefined
  }

  #open (): void {
    if (this.#closed) throw new BrokerError('ERR_CLOSED', 'memoryStore: used after close()')
  }
}

// One entry of a transaction's undo log, replayed backwards on rollback.
type Undo =
  | { op: 'device', id: string, device: DeviceRecord | undefined, commands: CommandRecord[] }
  | { op: 'insert', id: number }
  | { op: 'update', record: CommandRecord, before: CommandRecord }
  | { op: 'restore', commands: CommandRecord[] }

function expired (record: CommandRecord, now: number): boolean {
  return record.expiresAt !== null && record.expiresAt <= now
}

// SQLite's order: nulls first, numbers by value, text by code point (its BINARY collation
// compares UTF-8 bytes, which is code point order; JS `<` compares UTF-16 units, which is not).
function compare (a: string | number | null, b: string | number | null): number {
  if (a === b) return 0
  if (a === null) return -1
  if (b === null) return 1
  if (typeof a === 'number' || typeof b === 'number') return a < b ? -1 : 1
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
