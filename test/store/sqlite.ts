import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { isDeepStrictEqual } from 'node:util'
import type { Worker } from 'node:worker_threads'
import Database from 'better-sqlite3'
import t, { type Test } from 'tap'
import { BrokerError } from '../../lib/errors.js'
import { lockFile } from '../../lib/store/file-lock.js'
import { behindOn, checkpointInline, pace, SCHEMA_VERSION, sqliteStore, type SqliteStoreOptions } from '../../lib/store/sqlite.js'
import type { DeviceRecord, SyncStore } from '../../lib/store/store.js'
import { batch, command, device, insertSync, scanAll, storeSuite, updateSync } from '../fixtures/store-suite.js'
import { expectError as expectOptionError, rejection, thrown } from '../fixtures/throws.js'
import { until } from '../fixtures/until.js'

const dir = t.testdir()
let files = 0
const file = (): string => path.join(dir, `store-${++files}.db`)

storeSuite(t, 'sqlite-store', () => sqliteStore(file()))

// Records the databases the store opens and the SQL it prepares, by wrapping
// better-sqlite3's prototype methods for the length of one test.
function spy (t: Test): { databases: Database.Database[], sql: string[], closed: Database.Database[] } {
  const proto = Database.prototype
  const { prepare, close } = proto
  const seen = { databases: [] as Database.Database[], sql: [] as string[], closed: [] as Database.Database[] }
  proto.prepare = function (this: Database.Database, source: string) {
    if (!seen.databases.includes(this)) seen.databases.push(this)
    seen.sql.push(source)
    return prepare.call(this, source)
  } as typeof prepare
  proto.close = function (this: Database.Database) {
    seen.closed.push(this)
    return close.call(this)
  }
  t.teardown(() => {
    proto.prepare = prepare
    proto.close = close
  })
  return seen
}

function expectError (t: Test, fn: () => unknown, code: string, message: string): void {
  let caught: unknown
  try {
    fn()
  } catch (err) {
    caught = err
  }
  t.ok(caught instanceof BrokerError, `${message}: a BrokerError`)
  t.equal((caught as BrokerError | undefined)?.code, code, `${message}: ${code}`)
}

t.test('sqlite-store: WAL and the synchronous setting are applied', async (t) => {
  const seen = spy(t)
  for (const [option, expected] of [[undefined, 2], ['full', 2], ['normal', 1]] as const) {
    const filename = file()
    const opened = seen.databases.length
    const store = option === undefined ? sqliteStore(filename) : sqliteStore(filename, { synchronous: option })
    t.equal(seen.databases.length, opened + 1, 'one connection')
    const db = seen.databases[opened] as Database.Database
    t.equal(db.name, filename)
    t.equal(db.pragma('journal_mode', { simple: true }), 'wal', `${option ?? 'default'}: WAL journal`)
    t.equal(db.pragma('synchronous', { simple: true }), expected, `${option ?? 'default'}: synchronous = ${expected}`)
    store.close()
    t.equal(db.open, false, 'close() closes the database the store opened')
    const reader = new Database(filename, { readonly: true })
    t.equal(reader.pragma('journal_mode', { simple: true }), 'wal', 'the file stays in WAL mode')
    reader.close()
  }
})

t.test('sqlite-store: data survives closing and reopening the file', async (t) => {
  const filename = file()
  const first = sqliteStore(filename)
  const saved = device({ id: 'dev', name: 'kept', data: '{"__proto__":{"x":1}}', networkId: 3, deviceTypeId: 4, isBlocked: true })
  first.saveDevice(saved)
  const input = command({
    deviceId: 'dev', command: 'go', timestamp: 10, userId: 5, networkId: 3, deviceTypeId: 4,
    parameters: '{"p":"é😀"}', lifetime: 30, status: 'new', result: '1', expiresAt: 40, updated: false
  })
  const id = insertSync(first, input)
  const forever = insertSync(first, command({ deviceId: 'dev', timestamp: 20 }))
  updateSync(first, forever, 'dev', { status: 'done' }, 25, 0)
  first.saveDevice(device({ id: 'gone' }))
  insertSync(first, command({ deviceId: 'gone' }))
  first.deleteDevice('gone')
  first.deleteCommands('gone', 10)
  await first.close()

  const second = sqliteStore(filename)
  t.teardown(() => { second.close() })
  t.strictSame(second.getDevice('dev'), saved, 'the device')
  t.strictSame(second.getCommand(id, 0), { id, ...input }, 'the command')
  t.strictSame(second.getCommand(forever, 0), { id: forever, ...command({ deviceId: 'dev', timestamp: 20 }), status: 'done', lastUpdated: 25, updated: true },
    'the update')
  t.equal(second.getDevice('gone'), undefined, 'the deleted device')
  t.equal(second.deleteCommands('gone', 10), 0, 'and its deleted commands')
  t.strictSame(second.expiringCommands(0, second.lastCommandId(), 10), { entries: [[id, 40]], next: undefined }, 'expiring commands can be recovered')
  t.strictSame(second.countPending('dev', 0, undefined, 10), { count: 1, next: undefined })
  t.equal(second.lastCommandId(), forever + 1)
})

t.test('sqlite-store: expireCommands deletes in id order, whatever order the ids come in, and returns each command whole', async (t) => {
  const store = sqliteStore(file())
  const a = insertSync(store, command({ deviceId: 'a', expiresAt: 30, parameters: '{"a":1}' }))
  const b = insertSync(store, command({ deviceId: 'b', expiresAt: 10, status: 'new', result: '{"b":2}' }))
  const c = insertSync(store, command({ deviceId: 'c', expiresAt: 20 }))
  updateSync(store, b, 'b', { status: 'done' }, 5, 0)
  const before = [a, b, c].map((id) => store.getCommand(id, 0))
  // Due order, as the timer wheel hands them out: b, c, a.
  const ids = [b, c, a]
  t.strictSame(store.expireCommands(ids, 30), before, 'every field of each, the update included, in id order')
  t.strictSame(ids, [b, c, a], 'the caller\'s array is left as it was')
  t.equal(store.getCommand(a, 0), undefined, 'and they are gone')
  store.close()
})

t.test('sqlite-store: ids are never reused across a reopen', async (t) => {
  const cases: Array<[string, (store: SyncStore, id: number, low: number) => void]> = [
    ['expired', (store, id) => { t.equal(store.expireCommands([id], 100).length, 1) }],
    ['device deleted', (store) => { t.equal(store.deleteCommands('top', 10), 1) }],
    ['expired with every other command', (store, id, low) => { t.equal(store.expireCommands([id, low], 100).length, 2) }]
  ]
  for (const [label, remove] of cases) {
    const filename = file()
    const first = sqliteStore(filename)
    // One batch: the highest id is its last insert's.
    const ids = first.commit(batch({ inserts: [command({ deviceId: 'low', expiresAt: 100 }), command({ deviceId: 'top', expiresAt: 50 })] }), 0).ids
    const highest = ids[1] as number
    t.equal(first.lastCommandId(), highest, `${label}: the batch's last insert has the highest id`)
    remove(first, highest, ids[0] as number)
    t.equal(first.getCommand(highest, 0), undefined, `${label}: the highest command is gone`)
    first.close()

    const second = sqliteStore(filename)
    t.equal(second.lastCommandId(), highest, `${label}: lastCommandId remembers the highest id`)
    const next = insertSync(second, command())
    t.ok(next > highest, `${label}: the next id is above every id ever assigned`)
    second.close()
    const third = sqliteStore(filename)
    t.equal(third.lastCommandId(), next, `${label}: and again after another reopen`)
    third.close()
  }

  // The kept id only rises: deleting a lower command later does not lower it.
  const filename = file()
  const first = sqliteStore(filename)
  const low = insertSync(first, command({ deviceId: 'low', expiresAt: 10 }))
  const high = insertSync(first, command({ deviceId: 'high', expiresAt: 10 }))
  first.deleteDevice('high')
  insertSync(first, command({ deviceId: 'x' }))
  first.deleteDevice('x')
  first.expireCommands([low], 10)
  const last = first.lastCommandId()
  t.ok(last > high)
  first.close()
  const second = sqliteStore(filename)
  t.equal(second.lastCommandId(), last, 'the highest of the deleted ids is kept')
  t.equal(second.getCommand(low, 0), undefined)
  second.close()
})

t.test('sqlite-store: the schema version is written and checked', async (t) => {
  const filename = file()
  sqliteStore(filename).close()
  const db = new Database(filename)
  t.equal(db.pragma('user_version', { simple: true }), SCHEMA_VERSION, 'PRAGMA user_version is SCHEMA_VERSION')
  t.equal(SCHEMA_VERSION, 2)
  const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").pluck().all()
  t.strictSame(tables, ['commands', 'devices', 'meta'])
  db.close()

  const reopened = sqliteStore(filename)
  insertSync(reopened, command())
  t.equal(reopened.lastCommandId(), 1, 'a file at the current version opens as is')
  reopened.close()

  const newer = new Database(filename)
  newer.pragma(`user_version = ${SCHEMA_VERSION + 1}`)
  newer.close()
  const seen = spy(t)
  expectError(t, () => sqliteStore(filename), 'ERR_SCHEMA', 'a newer file is refused')
  t.strictSame(seen.closed.map((db) => db.name).sort(), [filename, `${filename}-lock`], 'the database it opened, and its lock, were closed')
  t.ok(seen.closed.every((db) => !db.open))

  const check = new Database(filename)
  t.equal(check.pragma('user_version', { simple: true }), SCHEMA_VERSION + 1, 'the newer file is left untouched')
  t.equal(check.prepare('SELECT count(*) FROM commands').pluck().get(), 1)

  // A passed-in database of a newer version is refused, and left open for its owner.
  expectError(t, () => sqliteStore(check), 'ERR_SCHEMA', 'a newer passed-in database is refused')
  t.equal(check.open, true, 'a passed-in database is not closed')
  check.close()
})

function scanAllIds (store: SyncStore): number[] {
  return scanAll(store, { order: 'ASC' }, 0).map((record) => record.id)
}

// The schema as version 1 wrote it: parameters and result in the middle of a command's row.
const VERSION_1 = `
  CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
  INSERT INTO meta (key, value) VALUES ('last_command_id', 0);
  CREATE TABLE devices (id TEXT PRIMARY KEY, name TEXT NOT NULL, data TEXT, network_id INTEGER, device_type_id INTEGER,
    is_blocked INTEGER NOT NULL) WITHOUT ROWID;
  CREATE TABLE commands (id INTEGER PRIMARY KEY, device_id TEXT NOT NULL, command TEXT NOT NULL, timestamp INTEGER NOT NULL,
    last_updated INTEGER NOT NULL, user_id INTEGER, network_id INTEGER, device_type_id INTEGER, parameters TEXT, lifetime INTEGER,
    status TEXT, result TEXT, expires_at INTEGER, updated INTEGER NOT NULL);
  CREATE INDEX commands_device_time ON commands (device_id, timestamp);
  CREATE INDEX commands_time ON commands (timestamp);
  PRAGMA user_version = 1;
`

// A column after a large value is read through its overflow pages: recovery reads
// (id, expires_at) of every command, and scans check expiry, so the large columns come last.
t.test('sqlite-store: a version 1 file migrates, its commands intact, the large columns moved last', async (t) => {
  const filename = file()
  const old = new Database(filename)
  old.exec(VERSION_1)
  old.prepare("INSERT INTO devices VALUES ('dev', 'dev', null, 1, 2, 0)").run()
  const insert = old.prepare(`INSERT INTO commands (id, device_id, command, timestamp, last_updated, user_id, network_id, device_type_id,
    parameters, lifetime, status, result, expires_at, updated) VALUES (?, 'dev', ?, ?, ?, 7, 1, 2, ?, ?, ?, ?, ?, ?)`)
  insert.run(1, 'small', 100, 100, '{"a":1}', null, null, null, null, 0)
  insert.run(2, 'large', 200, 250, JSON.stringify({ blob: 'x'.repeat(20_000) }), 60, 'done', '{"ok":true}', 60_200, 1)
  insert.run(5, 'last', 300, 300, null, 10, null, null, 10_300, 0)
  old.prepare("UPDATE meta SET value = 9 WHERE key = 'last_command_id'").run()
  old.close()

  const store = sqliteStore(filename)
  t.equal(store.lastCommandId(), 9, 'the kept last id survives')
  t.strictSame(store.getCommand(2, 0), {
    id: 2, command: 'large', timestamp: 200, lastUpdated: 250, userId: 7, deviceId: 'dev', networkId: 1, deviceTypeId: 2,
    parameters: JSON.stringify({ blob: 'x'.repeat(20_000) }), lifetime: 60, status: 'done', result: '{"ok":true}', expiresAt: 60_200, updated: true
  }, 'every field of a command survives')
  t.strictSame(scanAllIds(store), [1, 2, 5], 'and every command, in order')
  t.strictSame(store.expiringCommands(0, 9, 10), { entries: [[2, 60_200], [5, 10_300]], next: undefined })
  t.equal(insertSync(store, command()), 10, 'new commands go on from there')
  await store.close()

  const db = new Database(filename)
  t.teardown(() => { db.close() })
  t.equal(db.pragma('user_version', { simple: true }), SCHEMA_VERSION)
  const columns = db.prepare('SELECT name FROM pragma_table_info(\'commands\')').pluck().all()
  t.strictSame(columns.slice(-2), ['parameters', 'result'], 'the large columns last')
  t.strictSame(db.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'commands' ORDER BY name").pluck().all(),
    ['commands_device_time', 'commands_time'], 'the indexes are back')
  t.strictSame(db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").pluck().all(), ['commands', 'devices', 'meta'],
    'nothing left of the rebuild')
})

t.test('sqlite-store: a new file has the large columns last', async (t) => {
  const filename = file()
  await sqliteStore(filename).close()
  const db = new Database(filename)
  t.teardown(() => { db.close() })
  t.strictSame(db.prepare('SELECT name FROM pragma_table_info(\'commands\')').pluck().all().slice(-2), ['parameters', 'result'])
})

t.test('sqlite-store: a passed-in Database is used but not closed', async (t) => {
  const filename = file()
  const db = new Database(filename)
  db.pragma('journal_mode = DELETE')
  db.pragma('synchronous = OFF')
  const store = sqliteStore(db, { synchronous: 'full' })
  t.equal(db.pragma('user_version', { simple: true }), SCHEMA_VERSION, 'the schema is created in it')
  t.equal(db.pragma('journal_mode', { simple: true }), 'delete', 'its journal mode is left alone')
  t.equal(db.pragma('synchronous', { simple: true }), 0, 'its synchronous setting is left alone')
  t.equal(db.pragma('cache_size', { simple: true }), -16000, 'and its page cache (better-sqlite3\'s default)')
  const id = insertSync(store, command({ deviceId: 'dev', command: 'via-store' }))
  t.equal(db.prepare('SELECT command FROM commands WHERE id = ?').pluck().get(id), 'via-store', 'the store writes to it')
  store.close()
  t.equal(db.open, true, 'close() leaves it open')
  expectError(t, () => store.getCommand(id, 0), 'ERR_CLOSED', 'the store is closed')
  store.close()
  const again = sqliteStore(db)
  t.equal(again.getCommand(id, 0)?.command, 'via-store', 'a new store over the same database sees the data')
  again.close()
  db.close()
})

t.test('sqlite-store: a device saved inside its owner\'s transaction that rolls back is not served from the cache', async (t) => {
  const db = new Database(':memory:')
  const store = sqliteStore(db)
  t.teardown(() => { store.close(); db.close() })
  store.saveDevice(device({ id: 'dev', name: 'before' }))
  t.equal(store.getDevice('dev')?.name, 'before')
  t.throws(db.transaction(() => {
    store.saveDevice(device({ id: 'dev', name: 'undone' }))
    throw new Error('the owner changes its mind')
  }), /changes its mind/)
  t.equal(store.getDevice('dev')?.name, 'before', 'the rolled-back save is not served')
  db.transaction(() => { store.saveDevice(device({ id: 'dev', name: 'kept' })) })()
  t.equal(store.getDevice('dev')?.name, 'kept', 'a committed one is')
})

t.test('sqlite-store: close() copes with its database already closed', async (t) => {
  const seen = spy(t)
  const store = sqliteStore(file())
  const db = seen.databases[0] as Database.Database
  db.close()
  t.doesNotThrow(() => { store.close() })
  expectError(t, () => store.lastCommandId(), 'ERR_CLOSED', 'closed')
})

t.test('sqlite-store: bad arguments throw', async (t) => {
  for (const bad of [undefined, null, 42, {}, { prepare () {} }, ['a.db']]) {
    t.throws(() => sqliteStore(bad as unknown as string), TypeError, `${JSON.stringify(bad) ?? 'undefined'} is not a path or Database`)
  }
  for (const bad of ['off', 'FULL', 'extra', 1, null]) {
    t.throws(() => sqliteStore(':memory:', { synchronous: bad as unknown as 'full' }), RangeError, `synchronous ${JSON.stringify(bad)}`)
  }
  const filename = file()
  t.throws(() => sqliteStore(filename, { synchronous: 'bogus' as 'full' }), RangeError)
  t.equal(fs.existsSync(filename), false, 'options are checked before the file is created')
  t.throws(() => sqliteStore(path.join(dir, 'missing-dir', 'x.db')), 'an unopenable path throws what better-sqlite3 throws')
})

t.test('sqlite-store: WAL checkpoints run in the background by default, inline on request', async (t) => {
  const seen = spy(t)
  const background = sqliteStore(file())
  const main = seen.databases.at(-1) as Database.Database
  t.equal(main.pragma('wal_autocheckpoint', { simple: true }), 0, 'background: the writing connection never checkpoints')
  main.prepare('CREATE TABLE IF NOT EXISTS probe (x)').run()
  const wal = `${main.name}-wal`
  t.ok(fs.existsSync(wal), 'a WAL while open')
  await background.close()
  t.notOk(fs.existsSync(wal), 'after close() resolves, the checkpointer, last to close, has folded the WAL in')
  const inline = sqliteStore(file(), { checkpoint: 'inline' })
  t.equal((seen.databases.at(-1) as Database.Database).pragma('wal_autocheckpoint', { simple: true }), 1000, 'inline: SQLite autocheckpoints')
  await inline.close()
  const memory = sqliteStore(':memory:')
  t.equal((seen.databases.at(-1) as Database.Database).pragma('wal_autocheckpoint', { simple: true }), 1000, ':memory: needs no checkpointer')
  await memory.close()
  for (const bad of ['worker', 'BACKGROUND', null, 1]) {
    t.throws(() => sqliteStore(':memory:', { checkpoint: bad as unknown as 'inline' }), RangeError, `checkpoint ${JSON.stringify(bad)}`)
  }
})

t.test('sqlite-store: if the checkpointer fails, SQLite checkpoints inline', async (t) => {
  const db = new Database(file())
  db.pragma('wal_autocheckpoint = 0')
  checkpointInline(db)
  t.equal(db.pragma('wal_autocheckpoint', { simple: true }), 1000)
  db.close()
  t.doesNotThrow(() => { checkpointInline(db) }, 'harmless once the store has closed')
})

t.test('sqlite-store: a WAL that grows too long is checkpointed inline until it is short again', async (t) => {
  const db = new Database(file())
  db.pragma('wal_autocheckpoint = 0')
  pace(db, 10_000)
  t.equal(db.pragma('wal_autocheckpoint', { simple: true }), 0, 'a moderate WAL stays with the worker')
  pace(db, 20_000)
  t.equal(db.pragma('wal_autocheckpoint', { simple: true }), 1000, 'past 64 MiB the writer checkpoints inline')
  pace(db, 10_000)
  t.equal(db.pragma('wal_autocheckpoint', { simple: true }), 1000, 'and keeps doing so while the WAL shrinks')
  pace(db, 100)
  t.equal(db.pragma('wal_autocheckpoint', { simple: true }), 0, 'under 16 MiB the worker takes over again')
  db.close()
  t.doesNotThrow(() => { pace(db, 20_000) }, 'harmless once the store has closed')
})

t.test('sqlite-store: behind while the WAL is past 16 MiB until the checkpointer finds it all copied twice in a row', async (t) => {
  t.equal(behindOn(4096, 0, 0), false, 'a WAL of 16 MiB is no backlog')
  t.equal(behindOn(4097, 4000, 3000), true, 'past it, with frames left to copy: writes that can wait should')
  // A pass reports what was there when it began: the writer may have added frames since.
  t.equal(behindOn(20_000, 20_000, 19_000), true, 'all copied, but the WAL grew since the last pass: still behind')
  t.equal(behindOn(20_000, 20_000, 20_000), false, 'all copied, and no write since the last pass: the next write restarts the WAL')
  const store = sqliteStore(file())
  t.equal(store.behind?.(), false, 'a new store is not behind')
  await store.close()
  t.equal(sqliteStore(':memory:').behind?.(), false, 'nor is a store without a checkpointer')
})

t.test('sqlite-store: behind once expiry has deleted 4096 commands since the checkpointer last reported', async (t) => {
  const store = sqliteStore(file())
  t.teardown(() => store.close())
  store.saveDevice(device({ id: 'lamp-1' }))
  const ids = store.commit(batch({ inserts: Array.from({ length: 4097 }, () => command({ deviceId: 'lamp-1', expiresAt: 10 })) }), 0).ids as number[]
  // No report can arrive within this synchronous stretch: the worker's messages wait for a turn.
  t.equal(store.expireCommands(ids.slice(0, 4095), 20).length, 4095)
  t.equal(store.behind?.(), false, '4095: not yet')
  store.expireCommands(ids.slice(4095), 20)
  t.equal(store.behind?.(), true, '4096 and more: wait for the checkpointer to report')
  const none = sqliteStore(':memory:')
  none.saveDevice(device({ id: 'lamp-1' }))
  none.expireCommands(none.commit(batch({ inserts: Array.from({ length: 5000 }, () => command({ deviceId: 'lamp-1', expiresAt: 10 })) }), 0).ids as number[], 20)
  t.equal(none.behind?.(), false, 'without a checkpointer, nothing to wait for')
})

t.test('sqlite-store: once its checkpointer has failed, a store is never behind, and checkpoints inline', async (t) => {
  const seen = spy(t)
  const dir = path.join(path.dirname(file()), `behind-${process.pid}`)
  fs.mkdirSync(dir)
  const store = sqliteStore(path.join(dir, 'x.db'))
  const main = seen.databases.at(-1) as Database.Database
  // The worker, still starting, finds no directory to open its connection in, and fails.
  fs.rmSync(dir, { recursive: true, force: true })
  for (let i = 0; i < 400 && main.pragma('wal_autocheckpoint', { simple: true }) !== 1000; i++) await new Promise((resolve) => setTimeout(resolve, 25))
  t.equal(main.pragma('wal_autocheckpoint', { simple: true }), 1000, 'SQLite checkpoints inline')
  t.equal(store.behind?.(), false, 'no report will come: nothing to wait for')
  await store.close()
})

t.test('sqlite-store: :memory: works', async (t) => {
  const a = sqliteStore(':memory:')
  const b = sqliteStore(':memory:', { synchronous: 'normal' })
  a.saveDevice(device({ id: 'dev' }))
  const id = insertSync(a, command({ deviceId: 'dev' }))
  t.equal(a.getCommand(id, 0)?.deviceId, 'dev')
  t.equal(b.getDevice('dev'), undefined, 'each :memory: store is its own database')
  t.equal(b.lastCommandId(), 0)
  a.close()
  b.close()
})

t.test('sqlite-store: every read of commands searches an index, and a scan step never sorts', async (t) => {
  const seen = spy(t)
  const filename = file()
  const store = sqliteStore(filename)
  t.teardown(() => { store.close() })
  for (let i = 0; i < 10; i++) store.saveDevice(device({ id: `d${i}`, networkId: i % 3 }))
  store.commit(batch({
    inserts: Array.from({ length: 300 }, (_, i) =>
      command({ deviceId: `d${i % 10}`, command: `c${i % 7}`, status: i % 3 === 0 ? null : `s${i % 4}`, timestamp: i }))
  }), 0)
  const db = new Database(filename)
  t.teardown(() => { db.close() })
  db.exec('ANALYZE')
  // Every statement the store prepared that reads commands, planned with its parameters bound.
  const statements = seen.sql.filter((sql) => /FROM commands|UPDATE commands/.test(sql))
  t.ok(statements.length >= 14, `${statements.length} statements read commands`)
  const params: Record<string, unknown> = {
    deviceId: 'd1', now: 0, timestamp: 0, id: 0, after: -1, before: 1e15, offset: 1023, examine: 1024, boundTimestamp: 1e15, boundId: 1e15,
    names: '["c1"]', command: 'c1', status: 's1', networks: '[1]', deviceTypes: null, updatedAfter: null, take: 10, skip: 0,
    start: 1, end: 200, limit: 11, setStatus: 1, setResult: 0, result: null, lastUpdated: 5
  }
  for (const sql of statements) {
    const used = Object.fromEntries(Object.entries(params).filter(([key]) => sql.includes(`@${key}`)))
    const positional = (sql.match(/\?/g) ?? []).map(() => 1)
    const details = (db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...positional, ...(Object.keys(used).length > 0 ? [used] : [])) as Array<{ detail: string }>)
      .map((row) => row.detail)
    const label = sql.replace(/\s+/g, ' ').slice(0, 90)
    t.notOk(details.some((d) => /\bSCAN c(ommands)?\b/.test(d) && !/USING (COVERING )?INDEX|INTEGER PRIMARY KEY/.test(d)),
      `${label}: no full table scan (${details.join('; ')})`)
    // Sorting by command or status sorts the device's rows in the window, which maxSortWindow
    // bounds: a deliberate trade-off, as indexes keyed by device cost most of the write
    // throughput (lib/store/sqlite.ts). Every other read comes in index order.
    if (!/ORDER BY c\.(command|status)/.test(sql)) {
      t.notOk(details.some((d) => d.includes('TEMP B-TREE')), `${label}: the index gives the order (${details.join('; ')})`)
    }
  }
})

// A step's rows must come from its own `examine` index entries: bounding the range in the WHERE
// clause alone let the planner range over the rest of the window, so a filter matching nothing
// read the whole table in one step. Counted where it shows: every command read is joined to its
// device, here through a temporary view (it shadows the table on this connection) that counts them.
t.test('sqlite-store: a scan step reads no more than examine commands, whatever its filters', async (t) => {
  const filename = file()
  const builder = sqliteStore(filename)
  builder.saveDevice(device({ id: 'dev', networkId: 1 }))
  builder.commit(batch({ inserts: Array.from({ length: 500 }, (_, i) => command({ timestamp: i })) }), 0)
  await builder.close()
  const db = new Database(filename)
  t.teardown(() => { db.close() })
  let joined = 0
  db.function('joined', () => ++joined)
  const store = sqliteStore(db)
  t.teardown(() => { store.close() })
  // Created after the store has prepared its statements (its writes could not prepare against
  // a view): SQLite prepares a statement again after a schema change, and then reads the view.
  db.exec('CREATE TEMP VIEW devices AS SELECT * FROM main.devices WHERE joined() > 0')
  for (const [order, deviceId] of [['ASC', undefined], ['DESC', undefined], ['ASC', 'dev'], ['DESC', 'dev']] as const) {
    joined = 0
    const page = store.scanCommands({ order, deviceId, networkIds: [2], examine: 10, take: 5 }, 0)
    t.strictSame(page.rows, [], `${order}${deviceId === undefined ? '' : ', one device'}: nothing matches`)
    t.ok(page.next !== undefined, 'and the scan goes on')
    t.ok(joined <= 10, `${order}${deviceId === undefined ? '' : ', one device'}: ${joined} commands read, of 500`)
  }
  joined = 0
  t.equal(store.scanCommands({ order: 'ASC', networkIds: [1], examine: 10, take: 5 }, 0).rows.length, 5, 'a matching filter finds its rows')
  t.ok(joined <= 5, `and reads no further (${joined})`)
})

t.test('sqlite-store: deviceCacheBytes is checked before the file is created', async (t) => {
  const filename = file()
  for (const bad of ['8', null, true, {}]) {
    expectOptionError(t, () => sqliteStore(filename, { deviceCacheBytes: bad as unknown as number }), TypeError,
      /^sqliteStore: options\.deviceCacheBytes must be an integer, received /, `deviceCacheBytes ${JSON.stringify(bad)}`)
  }
  for (const bad of [-1, 1.5, Number.NaN, Infinity, 2 ** 53]) {
    expectOptionError(t, () => sqliteStore(filename, { deviceCacheBytes: bad }), RangeError,
      `sqliteStore: options.deviceCacheBytes must be an integer from 0 to 9007199254740991, received number ${String(bad)}`, `deviceCacheBytes ${String(bad)}`)
  }
  t.equal(fs.existsSync(filename), false, 'no file was created')
  for (const good of [0, 1, Number.MAX_SAFE_INTEGER]) sqliteStore(':memory:', { deviceCacheBytes: good }).close()
})

// What each statement run did, and whether the connection was in a transaction then: the
// statements better-sqlite3 runs for a store, by wrapping Statement's run and get.
function statements (t: Test, db: Database.Database): Array<[string, boolean]> {
  const proto = Object.getPrototypeOf(db.prepare('SELECT 1')) as Database.Statement
  const { run, get } = proto
  const ran: Array<[string, boolean]> = []
  proto.run = function (this: Database.Statement, ...args: unknown[]) {
    ran.push([this.source, db.inTransaction])
    return run.apply(this, args)
  } as typeof run
  proto.get = function (this: Database.Statement, ...args: unknown[]) {
    ran.push([this.source, db.inTransaction])
    return get.apply(this, args)
  } as typeof get
  t.teardown(() => {
    proto.run = run
    proto.get = get
  })
  return ran
}

t.test('sqlite-store: under synchronous full, expiry and deleteCommands commit with NORMAL (no fsync of their own), and FULL comes back', async (t) => {
  const seen = spy(t)
  const store = sqliteStore(file())
  t.teardown(() => store.close())
  const db = seen.databases.at(-1) as Database.Database
  store.saveDevice(device({ id: 'lamp-1' }))
  const ids = store.commit(batch({ inserts: Array.from({ length: 4 }, () => command({ deviceId: 'lamp-1', expiresAt: 10 })) }), 0).ids as number[]
  const ran = statements(t, db)
  t.equal(store.expireCommands(ids.slice(0, 2), 20).length, 2)
  t.equal(store.deleteCommands('lamp-1', 10), 2)
  const pragmas = ran.filter(([sql]) => sql.startsWith('PRAGMA synchronous'))
  t.strictSame(pragmas, [
    ['PRAGMA synchronous = NORMAL', false], ['PRAGMA synchronous = FULL', false],
    ['PRAGMA synchronous = NORMAL', false], ['PRAGMA synchronous = FULL', false]
  ], 'switched outside the transaction, around each')
  const first = ran.findIndex(([sql]) => sql.startsWith('DELETE'))
  const normal = ran.findIndex(([sql]) => sql === 'PRAGMA synchronous = NORMAL')
  const full = ran.findIndex(([sql]) => sql === 'PRAGMA synchronous = FULL')
  t.ok(normal < first && first < full, `the deletes run under NORMAL: ${JSON.stringify(ran.map(([sql]) => sql.slice(0, 30)))}`)
  t.equal(db.pragma('synchronous', { simple: true }), 2, 'FULL again after')
  ran.length = 0
  store.commit(batch({ inserts: [command({ deviceId: 'lamp-1' })] }), 0)
  store.saveDevice(device({ id: 'lamp-2' }))
  t.strictSame(ran.filter(([sql]) => sql.startsWith('PRAGMA')), [], 'inserts and device writes keep FULL')
})

t.test('sqlite-store: FULL comes back after an expiry that fails', async (t) => {
  const seen = spy(t)
  const store = sqliteStore(file())
  t.teardown(() => store.close())
  const db = seen.databases.at(-1) as Database.Database
  await store.close()
  const reopened = sqliteStore(db.name)
  t.teardown(() => reopened.close())
  const mine = seen.databases.at(-1) as Database.Database
  // A deletion that throws inside the transaction: the file is gone from the path.
  fs.renameSync(db.name, `${db.name}.moved`)
  t.teardown(() => { fs.renameSync(`${db.name}.moved`, db.name) })

  expectError(t, () => reopened.deleteCommands('lamp-1', 10), 'ERR_FILE_MOVED', 'a deletion into a moved file')
  t.equal(mine.pragma('synchronous', { simple: true }), 2, 'FULL again after')
})

t.test('sqlite-store: a store with synchronous normal, or a Database passed in, never switches', async (t) => {
  const seen = spy(t)
  const normal = sqliteStore(file(), { synchronous: 'normal' })
  t.teardown(() => normal.close())
  const ran = statements(t, seen.databases.at(-1) as Database.Database)
  normal.saveDevice(device({ id: 'lamp-1' }))
  const ids = normal.commit(batch({ inserts: [command({ deviceId: 'lamp-1', expiresAt: 10 })] }), 0).ids as number[]
  normal.expireCommands(ids, 20)
  normal.deleteCommands('lamp-1', 10)
  const db = new Database(file())
  t.teardown(() => { db.close() })
  const passed = sqliteStore(db, { synchronous: 'full' })
  passed.saveDevice(device({ id: 'lamp-1' }))
  passed.expireCommands(passed.commit(batch({ inserts: [command({ deviceId: 'lamp-1', expiresAt: 10 })] }), 0).ids as number[], 20)
  passed.deleteCommands('lamp-1', 10)
  t.strictSame(ran.filter(([sql]) => sql.startsWith('PRAGMA synchronous')), [], 'no switch')
  await passed.close()
})

t.test('sqlite-store: cacheBytes sets the page cache of a file the store opens, 64 MiB by default', async (t) => {
  const seen = spy(t)
  for (const [option, expected] of [[undefined, -65536], [256 * 1024 * 1024, -262144], [1536, -1], [1023, -16000], [0, -16000]] as const) {
    const opened = seen.databases.length
    const store = option === undefined ? sqliteStore(file()) : sqliteStore(file(), { cacheBytes: option })
    t.equal((seen.databases[opened] as Database.Database).pragma('cache_size', { simple: true }), expected,
      `cacheBytes ${option ?? 'default'}: cache_size ${expected} (KiB, negative; -16000 is better-sqlite3's default)`)
    await store.close()
  }
})

t.test('sqlite-store: cacheBytes is checked before the file is created', async (t) => {
  const filename = file()
  for (const bad of ['8', null, true, {}]) {
    expectOptionError(t, () => sqliteStore(filename, { cacheBytes: bad as unknown as number }), TypeError,
      /^sqliteStore: options\.cacheBytes must be an integer, received /, `cacheBytes ${JSON.stringify(bad)}`)
  }
  for (const bad of [-1, 1.5, Number.NaN, Infinity, 2 ** 53]) {
    expectOptionError(t, () => sqliteStore(filename, { cacheBytes: bad }), RangeError,
      `sqliteStore: options.cacheBytes must be an integer from 0 to 9007199254740991, received number ${String(bad)}`, `cacheBytes ${String(bad)}`)
  }
  t.equal(fs.existsSync(filename), false, 'no file was created')
})

// The device cache at its three settings: off, smaller than a few devices, and the default.
const CACHES: Array<[string, SqliteStoreOptions]> = [
  ['no device cache', { deviceCacheBytes: 0 }],
  ['a tiny device cache', { deviceCacheBytes: 2048 }],
  ['the default device cache', {}]
]

for (const [label, options] of CACHES) {
  t.test(`sqlite-store: devices read back right with ${label}`, async (t) => {
    const filename = file()
    const store = sqliteStore(filename, options)
    t.teardown(() => store.close())
    const expected = new Map<string, DeviceRecord>()
    const save = (d: DeviceRecord): void => {
      store.saveDevice(d)
      expected.set(d.id, d)
    }
    const check = (what: string, ids: string[]): void => {
      const wrong = ids.filter((id) => {
        const read = store.getDevice(id)
        return !(read === undefined ? !expected.has(id) : Object.isFrozen(read) && isDeepStrictEqual(read, expected.get(id)))
      })
      t.strictSame(wrong, [], `${what}: every device reads back as last saved, frozen`)
    }
    const ids = Array.from({ length: 300 }, (_, i) => `dev-${i}`)
    for (const [i, id] of ids.entries()) {
      save(device({ id, name: `name ${i}`, data: i % 4 === 0 ? null : JSON.stringify('x'.repeat((i * 37) % 3000)), networkId: i, isBlocked: i % 2 === 0 }))
    }
    check('in order', ids)
    check('in reverse', [...ids].reverse())
    for (const [i, id] of ids.entries()) {
      if (i % 3 === 0) save(device({ id, name: `renamed ${i}`, data: `{"i":${i}}` }))
      if (i % 5 === 0) {
        store.deleteDevice(id)
        expected.delete(id)
      }
    }
    check('after replacing a third and deleting a fifth', ids)
    check('again', [...ids, 'never-saved'])

    // A device larger than the whole tiny cache is never kept, and never hides a later save.
    save(device({ id: 'big', data: '"small"' }))
    check('small', ['big'])
    save(device({ id: 'big', data: JSON.stringify('y'.repeat(5000)) }))
    check('grown past the tiny cache', ['big'])
    save(device({ id: 'big', data: '"small again"' }))
    check('small again', ['big'])

    // A save that fails (rolled back: the file is gone) is not served from the cache.
    const kept = device({ id: 'rolled', name: 'kept' })
    save(kept)
    check('before the failed saves', ['rolled'])
    fs.rmSync(filename)
    for (const id of ['rolled', 'rolled-new']) {
      t.equal((thrown(() => { store.saveDevice(device({ id, name: 'undone' })) }) as BrokerError | undefined)?.code, 'ERR_FILE_MOVED',
        `saving ${id} fails`)
    }
    t.equal((thrown(() => store.deleteDevice('rolled')) as BrokerError | undefined)?.code, 'ERR_FILE_MOVED', 'deleting it fails')
    check('after the failed saves and delete', ['rolled', 'rolled-new'])
  })
}

t.test('sqlite-store: the device cache holds no more than deviceCacheBytes', async (t) => {
  // Seen from outside: a device changed in the file behind the store's back is served as it
  // was while it stays cached, and read afresh once evicted. After 100 devices are saved and
  // read, then all changed behind its back, those still served as they were are the cached ones.
  // Read back from the most recently used: a hit moves nothing out, so none is missed.
  const cases: Array<[string, SqliteStoreOptions, (stale: number) => boolean]> = [
    ['off', { deviceCacheBytes: 0 }, (stale) => stale === 0],
    // Each device holds 100 characters of data, at least 100 bytes: at most 40 fit in 4096.
    ['4096 bytes', { deviceCacheBytes: 4096 }, (stale) => stale >= 1 && stale * 100 <= 4096],
    ['the default', {}, (stale) => stale === 100]
  ]
  for (const [label, options, ok] of cases) {
    const filename = file()
    const store = sqliteStore(filename, options)
    const ids = Array.from({ length: 100 }, (_, i) => `d${i}`)
    for (const id of ids) store.saveDevice(device({ id, name: 'as saved', data: JSON.stringify('x'.repeat(98)) }))
    for (const id of ids) store.getDevice(id)
    const behind = new Database(filename)
    behind.prepare("UPDATE devices SET name = 'changed behind its back'").run()
    behind.close()
    const stale = [...ids].reverse().filter((id) => store.getDevice(id)?.name === 'as saved').length
    t.ok(ok(stale), `${label}: ${stale} of 100 devices served from the cache`)
    await store.close()
  }
})

// --- ownership: one live store per file, and nothing left behind ---------------------------

const CHILD = fileURLToPath(new URL('../fixtures/sqlite-child.ts', import.meta.url))
// Generous: the child loads the TypeScript loader first, seconds on a slow machine. It only
// bounds a failure, which then fails the test instead of hanging it.
const CHILD_TIMEOUT = 60_000

interface ChildLine { open: true, id: number, codes: unknown[] }
interface Child {
  process: ChildProcess
  /** The child's line, once its store is open. */
  line: Promise<ChildLine>
  /** How it ended, once it has and its pipes are drained. */
  ended: Promise<{ code: number | null, signal: NodeJS.Signals | null, stderr: string }>
}

function startChild (args: string[]): Child {
  // tap loads .ts through --import loaders in execArgv; the child gets the same ones.
  const child = spawn(process.execPath, [...process.execArgv, CHILD, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8')
  child.stderr.setEncoding('utf8')
  child.stderr.on('data', (chunk: string) => { stderr += chunk })
  const ended = new Promise<Awaited<Child['ended']>>((resolve) => {
    child.on('close', (code, signal) => { resolve({ code, signal, stderr }) })
  })
  const line = new Promise<ChildLine>((resolve, reject) => {
    child.stdout.on('data', (chunk: string) => {
      stdout += chunk
      const end = stdout.indexOf('\n')
      if (end >= 0) resolve(JSON.parse(stdout.slice(0, end)) as ChildLine)
    })
    void ended.then(({ code, signal }) => { reject(new Error(`the child ended (code ${String(code)}, signal ${String(signal)}) without its line: ${stderr}`)) })
  })
  return { process: child, line, ended }
}

/** `promise`, or 'timed out' after `ms`: for a failure that must fail a test, not hang it. */
async function within<T> (promise: Promise<T>, ms = CHILD_TIMEOUT): Promise<T | 'timed out'> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<'timed out'>((resolve) => { timer = setTimeout(() => { resolve('timed out') }, ms) })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

t.test('sqlite-store: a second store on a file a live store holds fails with ERR_LOCKED, and leaves it be', async (t) => {
  const filename = file()
  const first = sqliteStore(filename)
  first.saveDevice(device({ id: 'dev', name: 'first' }))
  const id = insertSync(first, command({ deviceId: 'dev' }))
  const seen = spy(t)
  // The same file by other names: SQLite resolves them, and so does the lock.
  fs.mkdirSync(path.join(dir, 'sub'), { recursive: true })
  fs.symlinkSync(filename, `${filename}.link`)
  const names = [filename, path.join(dir, 'sub', '..', path.basename(filename)), path.relative(process.cwd(), filename), `${filename}.link`]
  for (const name of names) {
    const error = thrown(() => sqliteStore(name))
    t.ok(error instanceof BrokerError, `${name}: a BrokerError`)
    t.equal((error as BrokerError).code, 'ERR_LOCKED', `${name}: ERR_LOCKED`)
    t.match((error as BrokerError).message, `sqliteStore: ${filename} is already open in another store`, `${name}: the message names the file`)
  }
  t.ok(seen.databases.length >= names.length, 'each attempt opened the file')
  t.ok(seen.databases.every((db) => !db.open), 'and closed whatever it opened')
  t.notOk(seen.sql.some((sql) => /journal_mode|user_version|CREATE|INSERT|UPDATE|DELETE/i.test(sql)), 'without reading or writing it')

  first.saveDevice(device({ id: 'dev', name: 'still first' }))
  t.equal(first.getDevice('dev')?.name, 'still first', 'the first store still writes')
  t.equal(first.getCommand(id, 0)?.deviceId, 'dev', 'and reads')

  // A Database passed in is its owner's: no lock is taken on it, so this one opens.
  const db = new Database(filename)
  const passed = sqliteStore(db)
  t.equal(passed.getDevice('dev')?.name, 'still first', 'a passed-in Database takes no lock')
  passed.close()
  db.close()

  first.close()
  const second = sqliteStore(filename)
  t.equal(second.getDevice('dev')?.name, 'still first', 'once the first store is closed, the file opens')
  await second.close()
})

t.test('sqlite-store: a file held by a store in another process fails with ERR_LOCKED until that process dies', async (t) => {
  const filename = file()
  const child = startChild(['hold', filename])
  t.teardown(() => { child.process.kill('SIGKILL') })
  const line = await within(child.line)
  if (line === 'timed out') return t.fail('the child did not open its store in time')
  expectError(t, () => sqliteStore(filename), 'ERR_LOCKED', 'while the child holds it')

  child.process.kill('SIGKILL')
  const end = await within(child.ended)
  t.equal(end === 'timed out' ? end : end.signal, 'SIGKILL', 'the child was killed')
  // No wait, no cleanup: the operating system let the lock go with the process.
  const store = sqliteStore(filename)
  t.equal(store.getCommand(line.id, 0)?.command, 'hold', 'the file opens, with what the killed store committed')
  t.ok(fs.existsSync(`${filename}-lock`), 'the lock file is still there, and blocks nothing')
  await store.close()
})

t.test('sqlite-store: a store never closed, and failed opens, do not keep the process alive', async (t) => {
  const filename = file()
  // Another application's database at our schema version, without our tables: it fails late,
  // in the store's constructor, after the file is open and configured.
  const foreign = path.join(t.testdir(), 'foreign.db')
  const other = new Database(foreign)
  other.exec('CREATE TABLE theirs (x)')
  other.pragma(`user_version = ${SCHEMA_VERSION}`)
  other.close()
  const child = startChild(['leave-open', filename, foreign, '5'])
  t.teardown(() => { child.process.kill('SIGKILL') })
  const line = await within(child.line)
  if (line === 'timed out') return t.fail('the child did not open its store in time')
  t.strictSame(line.codes, ['SQLITE_ERROR', 'SQLITE_ERROR', 'SQLITE_ERROR', 'SQLITE_ERROR', 'SQLITE_ERROR'], 'the five opens of the foreign file failed')
  const end = await within(child.ended)
  t.strictSame(end === 'timed out' ? end : { code: end.code, signal: end.signal }, { code: 0, signal: null },
    'the child, its store open, ended by itself')
  const store = sqliteStore(filename)
  t.equal(store.getCommand(line.id, 0)?.command, 'leave-open', 'what it wrote was committed')
  await store.close()
})

t.test('sqlite-store: a failed open leaves no connection, lock or thread behind', async (t) => {
  const testdir = t.testdir()
  const at = (name: string): string => path.join(testdir, name)
  fs.writeFileSync(at('text.db'), 'not a database, '.repeat(200))
  const other = new Database(at('other.db'))
  other.exec('CREATE TABLE theirs (x)')
  other.pragma(`user_version = ${SCHEMA_VERSION}`)
  other.close()
  const newer = new Database(at('newer.db'))
  newer.pragma(`user_version = ${SCHEMA_VERSION + 1}`)
  newer.close()
  sqliteStore(at('junk-lock.db')).close()
  fs.writeFileSync(at('junk-lock.db-lock'), 'not a database, '.repeat(200))
  // inline: the holder starts no thread of its own.
  const holder = sqliteStore(at('held.db'), { checkpoint: 'inline' })
  t.teardown(() => holder.close())

  // Node announces each new Worker on process 'worker' (on the next tick); watch each one end.
  const exits: Array<Promise<void>> = []
  const watch = (worker: Worker): void => { exits.push(new Promise((resolve) => { worker.once('exit', () => { resolve() }) })) }
  process.on('worker', watch)
  t.teardown(() => { process.off('worker', watch) })
  const seen = spy(t)
  const cases: Array<[string, string]> = [
    ['text.db', 'SQLITE_NOTADB'], ['other.db', 'SQLITE_ERROR'], ['newer.db', 'ERR_SCHEMA'],
    ['junk-lock.db', 'SQLITE_NOTADB'], ['held.db', 'ERR_LOCKED']
  ]
  for (const [name, code] of cases) {
    for (let i = 0; i < 5; i++) {
      t.equal((thrown(() => sqliteStore(at(name))) as { code?: unknown } | undefined)?.code, code, `${name}, attempt ${i}: ${code}`)
    }
    if (name !== 'held.db' && name !== 'junk-lock.db') {
      const lock = thrown(() => { lockFile(at(`${name}-lock`), name).release() })
      t.equal(lock, undefined, `${name}: the lock was released`)
    }
  }
  t.ok(seen.databases.length >= 25, 'the attempts opened connections')
  t.ok(seen.databases.every((db) => !db.open), 'and closed every one')
  await new Promise((resolve) => { setImmediate(resolve) })
  const ended = await within(Promise.all(exits))
  t.not(ended, 'timed out', `every thread started (${exits.length}) has ended`)
  t.equal(holder.lastCommandId(), 0, 'the holder is untouched')
})

t.test('sqlite-store: a commit that fails midway writes none of its batch, and the store goes on', async (t) => {
  const store = sqliteStore(file())
  t.teardown(() => store.close())
  store.saveDevice(device({ id: 'dev' }))
  const existing = insertSync(store, command({ deviceId: 'dev', command: 'existing', expiresAt: 50 }))
  const before = store.getCommand(existing, 0)
  const inserts = [command({ deviceId: 'dev', command: 'first', expiresAt: 60 }), command({ deviceId: 'other', command: 'second', expiresAt: 60 })]
  const update = { id: existing, deviceId: 'dev', patch: { status: 'done' }, lastUpdated: 5 }
  const failing: Array<[string, Parameters<SyncStore['commit']>[0], (error: unknown) => boolean]> = [
    // SQLite refuses the last insert (NOT NULL), after the others of its transaction.
    ['an insert', batch({ inserts: [...inserts, command({ deviceId: null as unknown as string })], updates: [update] }),
      (error) => (error as { code?: unknown } | undefined)?.code === 'SQLITE_CONSTRAINT_NOTNULL'],
    // better-sqlite3 cannot bind an object: the last update fails, after the inserts and an update.
    ['an update', batch({ inserts, updates: [update, { ...update, patch: { result: {} as unknown as string } }] }),
      (error) => error instanceof TypeError]
  ]
  for (const [label, writes, expected] of failing) {
    const error = thrown(() => store.commit(writes, 0))
    t.ok(expected(error), `failing at ${label}: what SQLite threw, as it is (${String(error)})`)
    t.strictSame(store.getCommand(existing, 0), before, `failing at ${label}: no update stayed`)
    t.strictSame(store.expiringCommands(0, Number.MAX_SAFE_INTEGER, 100), { entries: [[existing, 50]], next: undefined },
      `failing at ${label}: no insert stayed`)
    t.strictSame(store.scanCommands({ order: 'ASC', examine: 10, take: 10 }, 0).rows.map((c) => c.command), ['existing'])
  }
  const after = store.commit(batch({ inserts, updates: [update] }), 0)
  t.ok(after.ids.every((id) => id !== undefined && id > existing), 'a later commit gets new ids')
  t.strictSame(after.before, [before], 'and updates')
  t.strictSame(store.scanCommands({ order: 'ASC', examine: 10, take: 10 }, 0).rows.map((c) => [c.command, c.status]), [['existing', 'done'], ['first', null]])
})

t.test('sqlite-store: in a transaction its owner opened on a passed-in Database, writes are the owner\'s to commit or undo', async (t) => {
  const db = new Database(file())
  t.teardown(() => { db.close() })
  db.pragma('journal_mode = WAL')
  const store = sqliteStore(db)
  t.teardown(() => store.close())
  store.saveDevice(device({ id: 'dev' }))
  const names = (): string[] => store.scanCommands({ deviceId: 'dev', order: 'ASC', examine: 10, take: 10 }, 0).rows.map((c) => c.command)
  const failure = new Error('the owner undoes its transaction')
  t.equal(thrown(() => db.transaction(() => {
    const { ids } = store.commit(batch({ inserts: [command({ deviceId: 'dev', command: 'undone' })] }), 0)
    t.equal(store.getCommand(ids[0] as number, 0)?.command, 'undone', 'inside it, the store reads its own write')
    throw failure
  })()), failure)
  t.strictSame(names(), [], 'the owner\'s rollback undoes the store\'s commit')
  db.transaction(() => {
    store.commit(batch({ inserts: [command({ deviceId: 'dev', command: 'kept' })] }), 0)
    store.deleteCommands('nobody', 1)
  })()
  t.strictSame(names(), ['kept'], 'the owner\'s commit commits it')
})

// --- file identity: never acknowledge into a file that is gone -----------------------------

/** Every kind of write, each expected to throw ERR_FILE_MOVED with `message`. */
function refusedWrites (t: Test, store: SyncStore, id: number, message: RegExp): void {
  // With an expiry, so that expiringCommands would show them had they been written.
  const lost = command({ deviceId: 'dev', command: 'lost', expiresAt: 60 })
  const lostUpdate = { id, deviceId: 'dev', patch: { status: 'lost', result: '"lost"' }, lastUpdated: 2 }
  const writes: Array<[string, () => unknown]> = [
    ['a commit of an insert', () => store.commit(batch({ inserts: [lost] }), 0)],
    ['a commit of an update', () => store.commit(batch({ updates: [lostUpdate] }), 0)],
    ['a commit of inserts and updates', () => store.commit(batch({ inserts: [lost, lost, { ...lost, deviceId: 'new' }], updates: [lostUpdate, lostUpdate] }), 0)],
    ['saveDevice', () => { store.saveDevice(device({ id: 'dev', name: 'lost' })) }],
    ['saveDevice of a new device', () => { store.saveDevice(device({ id: 'new', name: 'lost' })) }],
    ['expireCommands', () => store.expireCommands([id], 100)],
    ['deleteDevice', () => store.deleteDevice('dev')],
    ['deleteCommands', () => store.deleteCommands('dev', 10)]
  ]
  for (const [label, write] of writes) {
    const error = thrown(write)
    t.ok(error instanceof BrokerError, `${label}: a BrokerError`)
    t.equal((error as BrokerError | undefined)?.code, 'ERR_FILE_MOVED', `${label}: ERR_FILE_MOVED`)
    t.match((error as BrokerError | undefined)?.message, message, `${label}: says what happened`)
  }
  // Reads serve what the store has open, and show every write above rolled back.
  t.equal(store.getDevice('dev')?.name, 'before', 'reads still work; no device write stayed, nor in the cache')
  t.strictSame(store.getCommand(id, 0), { id, ...command({ deviceId: 'dev', command: 'kept', expiresAt: 50 }) }, 'no command write stayed')
  t.strictSame(store.scanCommands({ deviceId: 'dev', order: 'ASC', examine: 10, take: 10 }, 0).rows.map((c) => c.command), ['kept'])
  t.strictSame(store.countPending('dev', 0, undefined, 10), { count: 1, next: undefined })
  t.equal(store.getDevice('new'), undefined, 'no device was added')
  t.strictSame(store.countPending('new', 0, undefined, 10), { count: 0, next: undefined }, 'no command of a new device was added')
  t.strictSame(store.expiringCommands(0, Number.MAX_SAFE_INTEGER, 100), { entries: [[id, 50]], next: undefined }, 'no command was added')
}

function withData (store: SyncStore): number {
  store.saveDevice(device({ id: 'dev', name: 'before' }))
  return insertSync(store, command({ deviceId: 'dev', command: 'kept', expiresAt: 50 }))
}

t.test('sqlite-store: a file deleted under the store: every write throws ERR_FILE_MOVED and commits nothing', async (t) => {
  const filename = file()
  const store = sqliteStore(filename)
  t.teardown(() => store.close())
  const id = withData(store)
  fs.rmSync(filename)
  refusedWrites(t, store, id, new RegExp(`^sqliteStore: ${filename} no longer exists: it was deleted or renamed under the store; nothing was written$`))
})

t.test('sqlite-store: another file renamed over the store\'s: every write throws ERR_FILE_MOVED and commits nothing', async (t) => {
  const filename = file()
  const store = sqliteStore(filename)
  t.teardown(() => store.close())
  const id = withData(store)
  const copy = file()
  fs.copyFileSync(filename, copy)
  fs.renameSync(copy, filename)
  refusedWrites(t, store, id, new RegExp(`^sqliteStore: ${filename} is another file than the one the store opened: it was replaced under the store; nothing was written$`))
})

t.test('sqlite-store: a passed-in Database on a file is checked too; :memory: is not', async (t) => {
  const filename = file()
  const db = new Database(filename)
  t.teardown(() => { db.close() })
  // In WAL mode, as a store's own file is: in rollback-journal mode SQLite refuses writes to a
  // deleted file by itself (SQLITE_READONLY_DBMOVED), but not in WAL mode.
  db.pragma('journal_mode = WAL')
  const store = sqliteStore(db)
  const id = withData(store)
  fs.rmSync(filename)
  refusedWrites(t, store, id, /no longer exists/)
  store.close()
  expectError(t, () => sqliteStore(db), 'ERR_FILE_MOVED', 'a passed-in Database whose file is already gone is refused')
  t.equal(db.open, true, 'and left open for its owner')

  // Nothing to check for a database without a file: writes go on.
  const memory = sqliteStore(':memory:')
  withData(memory)
  t.strictSame(memory.commit(batch({ inserts: [command()] }), 0), { ids: [2], before: [] })
  t.equal(memory.lastCommandId(), 2)
  memory.close()
})

t.test('sqlite-store: size() is the file\'s pages and its WAL, and grows with what is stored', async (t) => {
  const filename = file()
  const store = sqliteStore(filename)
  t.teardown(() => store.close())
  const size = (s: SyncStore): number => (s.size as () => number)()
  const empty = size(store)
  t.ok(empty > 0)
  store.commit(batch({ inserts: Array.from({ length: 200 }, () => command({ parameters: JSON.stringify('x'.repeat(1000)) })) }), 0)
  t.ok(size(store) > empty + 200 * 1000, 'the rows are counted, in the file or its WAL')
  const memory = sqliteStore(':memory:')
  t.teardown(() => memory.close())
  t.ok(size(memory) > 0, ':memory: has pages and no WAL file')
  const db = new Database(file())
  db.pragma('journal_mode = DELETE')
  const rollback = sqliteStore(db)
  t.teardown(() => { rollback.close(); db.close() })
  const pages = (db.pragma('page_count', { simple: true }) as number) * (db.pragma('page_size', { simple: true }) as number)
  t.equal(size(rollback), pages, 'a passed-in database without a WAL: its pages alone')
})

t.test('sqlite-store: the WAL is cut back to journal_size_limit when it restarts, in either checkpoint mode', async (t) => {
  const seen = spy(t)
  for (const checkpoint of ['background', 'inline'] as const) {
    const store = sqliteStore(file(), { checkpoint })
    t.equal((seen.databases.at(-1) as Database.Database).pragma('journal_size_limit', { simple: true }), 16 * 1024 * 1024, checkpoint)
    await store.close()
  }
  const db = new Database(':memory:')
  const passed = sqliteStore(db)
  t.equal(db.pragma('journal_size_limit', { simple: true }), -1, 'a passed-in Database keeps its owner\'s setting')
  passed.close()
  db.close()
})

// What an idle inline store holds: SQLite's autocheckpoint copies the WAL back after a commit,
// and the next write restarts the WAL, cutting it back to the limit.
t.test('sqlite-store: inline checkpoints: after a burst past the limit, the next write cuts the WAL back to it', async (t) => {
  const filename = file()
  const store = sqliteStore(filename, { checkpoint: 'inline', synchronous: 'normal' })
  t.teardown(() => store.close())
  const big = JSON.stringify('x'.repeat(100_000))
  store.commit(batch({ inserts: Array.from({ length: 200 }, () => command({ parameters: big })) }), 0)
  const wal = `${filename}-wal`
  t.ok(fs.statSync(wal).size > 16 * 1024 * 1024, `the burst grew the WAL past the limit: ${fs.statSync(wal).size} bytes`)
  insertSync(store, command())
  t.ok(fs.statSync(wal).size <= 16 * 1024 * 1024, `then one small write: ${fs.statSync(wal).size} bytes`)
})

t.test('sqlite-store: background checkpoints: an idle store\'s WAL is truncated to nothing', async (t) => {
  const filename = file()
  const store = sqliteStore(filename, { synchronous: 'normal' })
  t.teardown(() => store.close())
  store.commit(batch({ inserts: Array.from({ length: 500 }, () => command({ parameters: JSON.stringify('x'.repeat(10_000)) })) }), 0)
  const wal = `${filename}-wal`
  t.ok(fs.statSync(wal).size > 5_000_000, 'a burst of writes grew the WAL')
  await until(() => fs.statSync(wal).size === 0, 'the idle WAL to be truncated', 20_000)
  t.equal(store.size?.(), fs.statSync(filename).size, 'the store holds its file alone')
  t.ok(Array.from({ length: 500 }, (_, i) => store.getCommand(i + 1, 0)).every((c) => c !== undefined), 'with every command in it')
})

t.test('sqlite-store: a new file is in auto_vacuum INCREMENTAL; a file with tables, a passed-in Database and :memory: keep their mode', async (t) => {
  const seen = spy(t)
  const fresh = sqliteStore(file())
  t.equal((seen.databases.at(-1) as Database.Database).pragma('auto_vacuum', { simple: true }), 2, 'a new file')
  await fresh.close()
  const old = file()
  const db = new Database(old)
  db.exec('CREATE TABLE before_upgrade (x)')
  db.close()
  const existing = sqliteStore(old)
  t.equal((seen.databases.at(-1) as Database.Database).pragma('auto_vacuum', { simple: true }), 0, 'a file that already has tables')
  await existing.close()
  const passedDb = new Database(file())
  const passed = sqliteStore(passedDb)
  t.equal(passedDb.pragma('auto_vacuum', { simple: true }), 0, 'a passed-in Database')
  passed.close()
  passedDb.close()
  const memory = sqliteStore(':memory:')
  t.equal((seen.databases.at(-1) as Database.Database).pragma('auto_vacuum', { simple: true }), 0, ':memory:')
  memory.close()
})

// 3000 commands of 4 KB: some 3000 overflow pages, all free once they have expired.
function fillAndExpire (store: SyncStore): void {
  const inserts = Array.from({ length: 3000 }, (_, i) => command({ deviceId: 'dev', parameters: JSON.stringify('x'.repeat(4000)), expiresAt: i }))
  store.saveDevice(device({ id: 'dev' }))
  store.commit(batch({ inserts }), 0)
}

function pages (db: Database.Database): { free: number, total: number } {
  return { free: db.pragma('freelist_count', { simple: true }) as number, total: db.pragma('page_count', { simple: true }) as number }
}

t.test('sqlite-store: once expiries free over a quarter of the file, the free pages go back to the OS, a few per step', async (t) => {
  const seen = spy(t)
  const store = sqliteStore(file(), { synchronous: 'normal' })
  t.teardown(() => store.close())
  const db = seen.databases.at(-1) as Database.Database
  fillAndExpire(store)
  const full = pages(db)
  t.ok(full.total > 3000 && full.free < 100, `the commands fill the file: ${JSON.stringify(full)}`)
  const ids = Array.from({ length: 3000 }, (_, i) => i + 1)
  t.equal(store.expireCommands(ids.slice(0, 500), 10_000).length, 500)
  t.ok(pages(db).free < 1024, 'a freelist under RECLAIM_MIN is left for reuse')
  t.equal(store.expireCommands(ids.slice(500), 10_000).length, 2500)
  const freed = pages(db)
  t.ok(freed.free > 2500, `expiring them freed their pages, in the expiring call: ${JSON.stringify(freed)}`)
  await until(() => pages(db).free <= 1024, 'the free pages to be given back')
  const after = pages(db)
  t.ok(after.total < freed.total - 1500, `the file shrank: ${JSON.stringify(after)} from ${JSON.stringify(freed)}`)
  t.equal(store.getCommand(1, 0), undefined, 'what was expired stays gone')
  insertSync(store, command({ deviceId: 'dev' }))
  t.equal(store.countPending('dev', 0, undefined, 10).count, 1, 'and the store goes on')
})

t.test('sqlite-store: deleting a device\'s commands gives free pages back too; a quarter of the file stays free for reuse', async (t) => {
  const seen = spy(t)
  const store = sqliteStore(file(), { synchronous: 'normal' })
  t.teardown(() => store.close())
  const db = seen.databases.at(-1) as Database.Database
  // Half kept, so that the file stays large: the freelist shrinks to a quarter of it, not to RECLAIM_MIN.
  for (let round = 0; round < 4; round++) fillAndExpire(store)
  let deleted = 0
  while (deleted < 6000) deleted += store.deleteCommands('dev', 1000)
  const freed = pages(db)
  t.ok(freed.free * 4 > freed.total, `deleting freed over a quarter of the file: ${JSON.stringify(freed)}`)
  await until(() => pages(db).free * 4 <= pages(db).total, 'the free pages past a quarter of the file to be given back')
  const after = pages(db)
  t.ok(after.free > 1024, `a quarter of the file stays free: ${JSON.stringify(after)}`)
  t.equal(store.countPending('dev', -1, undefined, 100_000).count, 6000, 'the rest is intact')
})

t.test('sqlite-store: a reclaim step that fails rolls back and stops quietly, and the next deletion starts again', async (t) => {
  const seen = spy(t)
  const filename = file()
  const store = sqliteStore(filename, { synchronous: 'normal' })
  t.teardown(() => store.close())
  const db = seen.databases.at(-1) as Database.Database
  fillAndExpire(store)
  let steps = 0
  const { exec } = Database.prototype
  Database.prototype.exec = function (this: Database.Database, source: string) {
    if (source.includes('incremental_vacuum')) steps++
    return exec.call(this, source)
  } as typeof exec
  t.teardown(() => { Database.prototype.exec = exec })
  store.expireCommands(Array.from({ length: 3000 }, (_, i) => i + 1), 10_000)
  const freed = pages(db)
  // Moved before the first step's timer fires: the step's commit fails its check of the file.
  const moved = `${filename}.moved`
  fs.renameSync(filename, moved)
  await until(() => steps > 0, 'a reclaim step to run')
  t.equal(pages(db).free, freed.free, 'it was rolled back: nothing reclaimed into a file no longer at the path')
  fs.renameSync(moved, filename)
  t.equal(store.deleteCommands('dev', 1), 0, 'the store goes on')
  await until(() => pages(db).free <= 1024, 'the next deletion to start reclaiming again')
  t.ok(steps > 1, `reclaimed in steps: ${steps}`)
})

t.test('sqlite-store: backup() copies a consistent snapshot while writes go on, WAL included', async (t) => {
  const filename = file()
  const store = sqliteStore(filename, { synchronous: 'normal' })
  t.teardown(() => store.close())
  store.saveDevice(device({ id: 'dev' }))
  // Some 1000 pages, several backup steps, much of it still in the WAL.
  store.commit(batch({ inserts: Array.from({ length: 1000 }, (_, i) => command({ deviceId: 'dev', parameters: JSON.stringify('x'.repeat(3000 + i)) })) }), 0)
  t.ok(fs.statSync(`${filename}-wal`).size > 0, 'commits are in the WAL')
  const target = path.join(dir, 'backup.db')
  let copied = false
  const backup = store.backup(target).finally(() => { copied = true })
  let writes = 0
  while (!copied) {
    insertSync(store, command({ deviceId: 'dev', command: `during-${writes++}` }))
    await new Promise(setImmediate)
  }
  const result = await backup
  t.ok(writes > 1, `writes went on during the backup: ${writes}`)
  t.ok(result.totalPages > 256 && result.remainingPages === 0, `copied in steps: ${JSON.stringify(result)}`)
  const expected = scanAll(store, { order: 'ASC' }, 0)
  const copy = sqliteStore(target)
  t.teardown(() => copy.close())
  t.strictSame(scanAll(copy, { order: 'ASC' }, 0), expected, 'the copy holds every command committed before it resolved, as stored')
  t.equal(copy.lastCommandId(), store.lastCommandId())
  t.strictSame(copy.getDevice('dev'), store.getDevice('dev'))
})

t.test('sqlite-store: backup() rejects for a path it cannot write, and with ERR_CLOSED on a closed store', async (t) => {
  const store = sqliteStore(file())
  store.commit(batch({ inserts: Array.from({ length: 500 }, () => command({ parameters: JSON.stringify('x'.repeat(10_000)) })) }), 0)
  const bad = await rejection(store.backup(path.join(dir, 'missing-dir', 'backup.db')))
  t.type(bad, TypeError, 'a missing directory: better-sqlite3\'s TypeError')
  const during = store.backup(path.join(dir, 'interrupted.db'))
  const closing = store.close()
  const interrupted = await rejection(during)
  t.ok(interrupted instanceof BrokerError && interrupted.code === 'ERR_CLOSED', 'a store closed before the copy ended: ERR_CLOSED')
  t.ok(interrupted.cause instanceof Error, 'with what better-sqlite3 threw as its cause')
  await closing
  const closed = await rejection(store.backup(path.join(dir, 'late.db')))
  t.ok(closed instanceof BrokerError && closed.code === 'ERR_CLOSED', 'a closed store: ERR_CLOSED')
})
