import { existsSync, rmSync } from 'node:fs'
import { createRequire, syncBuiltinESMExports } from 'node:module'
import path from 'node:path'
import { MessageChannel, type MessagePort, type Worker } from 'node:worker_threads'
import Database from 'better-sqlite3'
import t, { type Test } from 'tap'
import { BrokerError } from '../../lib/errors.js'
import { sqliteStore, type SqliteStore } from '../../lib/store/sqlite.js'
import { runWriter, serve, sqliteThreadStore } from '../../lib/store/sqlite-thread.js'
import { batch, command, device, storeSuite } from '../fixtures/store-suite.js'
import { rejection } from '../fixtures/throws.js'
import { until } from '../fixtures/until.js'

const dir = t.testdir()
let files = 0
const file = (): string => path.join(dir, `thread-${++files}.db`)

storeSuite(t, 'sqlite-thread-store', () => sqliteThreadStore(file()))

// The next reply on a port.
async function reply (port: MessagePort): Promise<unknown> {
  return await new Promise((resolve) => { port.once('message', resolve) })
}

// Records the Workers started for the length of one test (worker_threads' export, swapped and
// synced into the ESM binding the store imports).
function spyWorkers (t: Test, onStart: (worker: Worker) => void = () => {}): Worker[] {
  const threads = createRequire(import.meta.url)('node:worker_threads') as typeof import('node:worker_threads')
  const Original = threads.Worker
  const started: Worker[] = []
  threads.Worker = class extends Original {
    constructor (...args: ConstructorParameters<typeof Original>) {
      super(...args)
      started.push(this)
      onStart(this)
    }
  }
  syncBuiltinESMExports()
  t.teardown(() => {
    threads.Worker = Original
    syncBuiltinESMExports()
  })
  return started
}

t.test('sqlite-thread-store: options are checked, naming the option, before a thread starts', async (t) => {
  const started = spyWorkers(t)
  const cases: Array<[unknown, unknown, typeof TypeError | typeof RangeError, RegExp]> = [
    [42, {}, TypeError, /^sqliteThreadStore: expected a file path, received number 42$/],
    [':memory:', {}, RangeError, /^sqliteThreadStore: expected the path of a file, received string ":memory:": two threads/],
    ['', {}, RangeError, /^sqliteThreadStore: expected the path of a file, received string ""/],
    [file(), { synchronous: 'off' }, RangeError, /^sqliteThreadStore: options\.synchronous must be 'full' or 'normal', received string "off"$/],
    [file(), { checkpoint: 'never' }, RangeError, /^sqliteThreadStore: options\.checkpoint must be 'background' or 'inline', received string "never"$/],
    [file(), { deviceCacheBytes: '1' }, TypeError, /^sqliteThreadStore: options\.deviceCacheBytes must be an integer, received string "1"$/],
    [file(), { deviceCacheBytes: -1 }, RangeError, /^sqliteThreadStore: options\.deviceCacheBytes must be an integer from 0 to 9007199254740991, received number -1$/],
    [file(), { deviceCacheBytes: 1.5 }, RangeError, /received number 1.5$/]
  ]
  for (const [where, options, type, message] of cases) {
    const err = await rejection(sqliteThreadStore(where as string, options as object))
    t.ok(err instanceof type, `${String(message)}: ${type.name}`)
    t.match(err.message, message)
  }
  t.equal(started.length, 0, 'no thread was started')
})

t.test('sqlite-thread-store: a read sees every write whose promise has resolved, on both connections', async (t) => {
  const filename = file()
  const store = await sqliteThreadStore(filename, { synchronous: 'normal', checkpoint: 'inline' })
  t.teardown(() => store.close())
  await store.saveDevice(device({ id: 'dev' }))
  const { ids } = await store.commit(batch({ inserts: [command({ deviceId: 'dev', command: 'a' }), command({ deviceId: 'dev', command: 'b' })] }), 0)
  t.same(ids, [1, 2], 'ids in batch order')
  t.equal(store.lastCommandId(), 2, 'lastCommandId at once, from the commit')
  t.equal(store.getCommand(2, 0)?.command, 'b', 'the main side reads it at once')
  const { before } = await store.commit(batch({ updates: [{ id: 1, deviceId: 'dev', patch: { status: 'done' }, lastUpdated: 5 }, { id: 9, deviceId: 'dev', patch: { result: '1' }, lastUpdated: 5 }] }), 0)
  t.equal(before[0]?.command, 'a', 'an update reports the command as it was')
  t.equal(before[0]?.status, null)
  t.equal(before[1], undefined, 'an unknown command: undefined')
  t.equal(store.getCommand(1, 0)?.status, 'done')
  t.ok(store.size() > 0, 'size() from the main side')
  t.equal(store.behind(), false, 'behind() at once')
  const reopened = new Database(filename, { readonly: true })
  t.equal(reopened.prepare('SELECT count(*) FROM commands').pluck().get(), 2, 'in the file')
  reopened.close()
})

t.test('sqlite-thread-store: the device cache follows the saves and deletes that go through the thread', async (t) => {
  for (const deviceCacheBytes of [undefined, 0]) {
    const store = await sqliteThreadStore(file(), deviceCacheBytes === undefined ? {} : { deviceCacheBytes })
    const first = device({ id: 'dev', name: 'first' })
    t.equal(store.getDevice('dev'), undefined)
    await store.saveDevice(first)
    t.same(store.getDevice('dev'), first, `${String(deviceCacheBytes)}: read back`)
    t.equal(store.getDevice('dev'), store.getDevice('dev'), `${String(deviceCacheBytes)}: a cached read is the same object`, { skip: deviceCacheBytes === 0 })
    const saving = store.saveDevice({ ...first, name: 'second' })
    // Before the thread has written it, the file still has the first.
    t.equal(store.getDevice('dev')?.name, 'first', 'while the save is under way: as it was')
    await saving
    t.equal(store.getDevice('dev')?.name, 'second', 'once saved: the new one, not a stale cached copy')
    t.ok(Object.isFrozen(store.getDevice('dev')), 'frozen')
    const deleting = store.deleteDevice('dev')
    store.getDevice('dev')
    t.equal(await deleting, true)
    t.equal(store.getDevice('dev'), undefined, 'once deleted: gone, though read while it was being deleted')
    t.equal(await store.deleteDevice('dev'), false)
    await store.close()
  }
})

t.test('sqlite-thread-store: expiry and deletes run on the thread and answer with records', async (t) => {
  const store = await sqliteThreadStore(file())
  t.teardown(() => store.close())
  await store.saveDevice(device({ id: 'dev' }))
  await store.commit(batch({ inserts: [command({ deviceId: 'dev', expiresAt: 10, parameters: '{"a":1}' }), command({ deviceId: 'dev', expiresAt: 10 }), command({ deviceId: 'dev' })] }), 0)
  const removed = await store.expireCommands([2, 1, 3], 10)
  t.same(removed.map((r) => [r.id, r.parameters, r.updated]), [[1, '{"a":1}', false], [2, null, false]], 'the due ones, as they were')
  t.equal(await store.deleteCommands('dev', 10), 1)
  t.equal(store.getCommand(3, 0), undefined)
})

t.test('sqlite-thread-store: a write that fails on the thread rejects with the error rebuilt, and writes nothing', async (t) => {
  const filename = file()
  const store = await sqliteThreadStore(filename)
  t.teardown(() => store.close())
  const constraint = await rejection(store.saveDevice({ ...device({ id: 'dev' }), name: null as unknown as string }))
  t.equal(constraint.name, 'SqliteError', 'the name of what the thread threw')
  t.equal(constraint.code as string, 'SQLITE_CONSTRAINT_NOTNULL', 'and its code')
  t.notOk(constraint instanceof BrokerError)
  t.equal(store.getDevice('dev'), undefined, 'nothing written')
  rmSync(filename)
  const moved = await rejection(store.commit(batch({ inserts: [command({ deviceId: 'dev' })] }), 0))
  t.ok(moved instanceof BrokerError, 'a BrokerError again')
  t.equal(moved.code, 'ERR_FILE_MOVED')
  t.equal(store.lastCommandId(), 0, 'no id given')
})

t.test('sqlite-thread-store: the file is locked while open, and a failed open leaves no thread or connection', async (t) => {
  const filename = file()
  const started = spyWorkers(t)
  const store = await sqliteThreadStore(filename)
  t.throws(() => sqliteStore(filename), { code: 'ERR_LOCKED' }, 'sqliteStore on it: ERR_LOCKED')
  const exits: Array<Promise<unknown>> = []
  const second = rejection(sqliteThreadStore(filename))
  exits.push(new Promise((resolve) => (started[1] as Worker).once('exit', resolve)))
  const err = await second
  t.ok(err instanceof BrokerError, 'a BrokerError')
  t.equal(err.code, 'ERR_LOCKED')
  await Promise.all(exits)
  t.pass('the second thread has ended')
  await store.close()
  const again = await sqliteThreadStore(filename)
  t.pass('opens once the first is closed')
  await again.close()

  const newer = file()
  const db = new Database(newer)
  db.pragma('user_version = 99')
  db.close()
  const schema = await rejection(sqliteThreadStore(newer))
  t.equal(schema.code, 'ERR_SCHEMA', 'a file of a newer version: ERR_SCHEMA')
  t.throws(() => sqliteStore(newer), { code: 'ERR_SCHEMA' }, 'its lock was let go: ERR_SCHEMA again, not ERR_LOCKED')
})

t.test('sqlite-thread-store: if the reader cannot open, the thread is closed and the open rejects', async (t) => {
  const started = spyWorkers(t)
  const Sqlite = Database as unknown as { prototype: { prepare: (source: string) => unknown } }
  const { prepare } = Sqlite.prototype
  Sqlite.prototype.prepare = function (this: Database.Database, source: string) {
    if (this.readonly) throw new Error('reader failed')
    return prepare.call(this, source)
  }
  t.teardown(() => { Sqlite.prototype.prepare = prepare })
  const filename = file()
  const err = await rejection(sqliteThreadStore(filename))
  t.equal(err.message, 'reader failed')
  t.equal(started.length, 1)
  Sqlite.prototype.prepare = prepare
  const store = await sqliteThreadStore(filename)
  t.pass('the file was let go: it opens again')
  await store.close()
})

t.test('sqlite-thread-store: a thread that fails to start rejects the open', async (t) => {
  spyWorkers(t, (worker) => {
    setImmediate(() => {
      worker.emit('error', new RangeError('no thread'))
      void worker.terminate()
    })
  })
  const err = await rejection(sqliteThreadStore(file()))
  t.equal(err.name, 'RangeError')
  t.equal(err.message, 'no thread')
})

t.test('sqlite-thread-store: a thread that dies fails the calls waiting for it and every call after', async (t) => {
  const started = spyWorkers(t)
  const store = await sqliteThreadStore(file())
  const worker = started[0] as Worker
  await store.saveDevice(device({ id: 'dev' }))
  const waiting = store.commit(batch({ inserts: [command({ deviceId: 'dev' })] }), 0)
  worker.emit('error', new Error('crashed'))
  t.equal((await rejection(waiting)).message, 'crashed', 'a waiting call rejects with what the thread died of')
  t.equal((await rejection(store.deleteCommands('dev', 1))).message, 'crashed', 'and every later call')
  await worker.terminate()
  await store.close()
  t.pass('close() still ends it')

  const other = await sqliteThreadStore(file())
  const closing = other.close()
  await (started[1] as Worker).terminate()
  await closing
  const ended = await sqliteThreadStore(file())
  await (started[2] as Worker).terminate()
  await new Promise(setImmediate)
  const err = await rejection(ended.commit(batch({}), 0))
  t.ok(err instanceof BrokerError)
  t.equal(err.code, 'ERR_STORE', 'a thread that ended: ERR_STORE')
  await ended.close()
})

t.test('sqlite-thread-store: close() ends the thread and the reader, once; calls after it fail with ERR_CLOSED', async (t) => {
  const filename = file()
  const store = await sqliteThreadStore(filename)
  await store.saveDevice(device({ id: 'dev' }))
  await store.commit(batch({ inserts: [command({ deviceId: 'dev' })] }), 0)
  const closing = store.close()
  t.equal(store.close(), closing, 'idempotent: the same promise')
  await closing
  t.notOk(existsSync(`${filename}-wal`), 'the last connection folded the WAL in and removed it')
  for (const read of [
    () => store.getDevice('dev'), () => store.getCommand(1, 0), () => store.lastCommandId(), () => store.size(),
    () => store.scanCommands({ order: 'ASC', examine: 1, take: 1 }, 0),
    () => store.sortCommands({ deviceId: 'dev', sortField: 'command', sortOrder: 'ASC', take: 1, skip: 0 }, 0, 10),
    () => store.countPending('dev', 0, undefined, 10), () => store.expiringCommands(0, 1, 10)
  ]) t.throws(read, { code: 'ERR_CLOSED' })
  for (const write of [
    () => store.commit(batch({}), 0), () => store.expireCommands([1], 0), () => store.deleteCommands('dev', 1),
    () => store.deleteDevice('dev'), () => store.saveDevice(device({ id: 'dev' }))
  ]) t.equal((await rejection(write())).code, 'ERR_CLOSED')
})

// The thread's side, in this thread over a MessageChannel.
t.test('sqlite-thread-store: runWriter opens the store and serves it, or reports why not', async (t) => {
  const filename = file()
  const behind = new SharedArrayBuffer(4)
  const { port1, port2 } = new MessageChannel()
  const opened = reply(port1)
  runWriter(port2, { file: filename, options: { synchronous: 'normal' }, behind })
  t.same(await opened, [1, 0], 'opened: the last id')
  const refused = new MessageChannel()
  const failed = reply(refused.port1)
  runWriter(refused.port2, { file: filename, options: {}, behind })
  t.match(await failed, [0, 'BrokerError', /already open/, 'ERR_LOCKED'], 'locked: the error')
  refused.port1.close()
  port1.postMessage([5])
  t.same(await reply(port1), [1, undefined], 'closed')
  port1.close()
})

t.test('sqlite-thread-store: serve says, in shared memory, when the store is behind and when it has caught up', async (t) => {
  const real = sqliteStore(':memory:')
  let behindNow = false
  const fake = {
    deleteCommands: (deviceId: string, limit: number) => real.deleteCommands(deviceId, limit),
    behind: () => behindNow,
    close: () => real.close()
  } as unknown as SqliteStore
  const flag = new Int32Array(new SharedArrayBuffer(4))
  const { port1, port2 } = new MessageChannel()
  serve(port2, fake, flag)
  port1.postMessage([2, 'dev', 1])
  t.same(await reply(port1), [1, 0])
  t.equal(flag[0], 0, 'not behind')
  behindNow = true
  port1.postMessage([2, 'dev', 1])
  await reply(port1)
  t.equal(flag[0], 1, 'behind after the call that found it so')
  port1.postMessage([2, 'dev', 1])
  await reply(port1)
  t.equal(flag[0], 1, 'still')
  behindNow = false
  await until(() => flag[0] === 0, 'the flag set back')
  t.pass('caught up: set back, unasked')
  behindNow = true
  port1.postMessage([2, 'dev', 1])
  await reply(port1)
  port1.postMessage([5])
  t.same(await reply(port1), [1, undefined], 'close while watching')
  port1.close()
  t.throws(() => real.getDevice('x'), { code: 'ERR_CLOSED' })
})

t.test('sqlite-thread-store: serve replies to a throw that is no Error', async (t) => {
  // eslint-disable-next-line no-throw-literal, @typescript-eslint/only-throw-error
  const fake = { deleteCommands: () => { throw null }, behind: () => false } as unknown as SqliteStore
  const { port1, port2 } = new MessageChannel()
  serve(port2, fake, new Int32Array(new SharedArrayBuffer(4)))
  port1.postMessage([2, 'dev', 1])
  t.same(await reply(port1), [0, 'undefined', 'undefined', undefined])
  port1.close()
  port2.close()
})
