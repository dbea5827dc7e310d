// Faults in the store: a SQLite file that turns read-only, a store whose methods throw, and a
// store whose group commit throws. Each failed request is answered
// 500 `Internal server error`, reported once on `error` as ERR_STORE with the store's own error
// as `cause`, and changes nothing: no command, no timer, no subscriber call, no push. Once the
// store heals, the same request succeeds and is delivered.
import fs from 'node:fs'
import path from 'node:path'
import Database from 'better-sqlite3'
import t, { type Test } from 'tap'
import { BrokerError } from '../lib/errors.js'
import { memoryStore } from '../lib/store/memory.js'
import type { Push, Reply } from '../lib/schema.js'
import type { Session } from '../lib/session.js'
import { sqliteStore } from '../lib/store/sqlite.js'
import type { CommandRecord, SyncStore } from '../lib/store/store.js'
import { body, errorOf, type Fixture, INTERNAL, insertAll, setup, START } from './fixtures/broker.js'
import { scanAll } from './fixtures/store-suite.js'

const TICK = 100
const RETRY_MS = 1000
const dir = t.testdir()
let files = 0
const file = (): string => path.join(dir, `faults-${++files}.db`)

type Method = Exclude<keyof SyncStore, 'close' | 'shared'>

/** A store that throws `error` from the methods in `fail`, or from the `nth` call of one. */
interface Faulty {
  store: SyncStore
  inner: SyncStore
  fail: Set<Method>
  /** Throw from call number `call` (1-based, counted from when this is set) of `method`, once. */
  nth: { method: Method, call: number } | undefined
  error: Error
}

function faulty (inner: SyncStore): Faulty {
  const f: Faulty = { store: inner, inner, fail: new Set(), nth: undefined, error: new Error('disk on fire') }
  let calls = 0
  f.store = new Proxy(inner, {
    get (target, name) {
      const value = Reflect.get(target, name) as unknown
      if (typeof value !== 'function') return value
      return (...args: unknown[]) => {
        if (f.fail.has(name as Method)) throw f.error
        if (f.nth !== undefined && f.nth.method === name && ++calls === f.nth.call) {
          f.nth = undefined
          calls = 0
          throw f.error
        }
        return (value as (...a: unknown[]) => unknown).apply(target, args)
      }
    }
  })
  return f
}

interface World extends Fixture {
  faults: Faulty
  errors: BrokerError[]
  inserts: Command[]
  updates: Command[]
  expired: Command[]
  pushes: Push[]
  /** A session subscribed to inserts and updates of every device: it counts pushes. */
  watcher: Session
  /** A command of lamp-1 without a lifetime, for updates and gets. */
  commandId: number
}
type Command = { id: number, status: string | null }

async function world (t: Test, inner: SyncStore = memoryStore(), options: Parameters<typeof setup>[1] = {}): Promise<World> {
  const faults = faulty(inner)
  const fixture = setup(t, { tick: TICK, ...options }, faults.store)
  const w: World = { ...fixture, faults, errors: [], inserts: [], updates: [], expired: [], pushes: [], watcher: undefined as unknown as Session, commandId: 0 }
  fixture.broker.on('error', (err) => { w.errors.push(err) })
  fixture.broker.on('expired', (command) => { w.expired.push(command) })
  fixture.broker.subscribe({}, (command) => { w.inserts.push(command) })
  fixture.broker.subscribe({ returnUpdatedCommands: true }, (command) => { w.updates.push(command) })
  await fixture.broker.ready
  await fixture.device('lamp-1', 1, 1)
  await fixture.device('victim', 1, 1)
  w.commandId = body(await fixture.insert('lamp-1', { command: 'target' })).command.id as number
  w.watcher = fixture.broker.session((push) => { w.pushes.push(push) })
  for (const returnUpdatedCommands of [false, true]) {
    body(await w.watcher.handle({ action: 'command/subscribe', returnUpdatedCommands }, fixture.admin))
  }
  w.inserts.length = 0
  return w
}

/** What a refused request must leave alone, read from the inner store (the faulty one may throw). */
function state (w: World): string {
  const now = w.clock.now()
  const list = (deviceId: string): CommandRecord[] =>
    scanAll(w.faults.inner, { deviceId, order: 'ASC', examine: 1000, take: 1000 }, now)
  return JSON.stringify({
    lastCommandId: w.faults.inner.lastCommandId(),
    commands: ['lamp-1', 'victim', 'fresh'].map(list),
    expiring: w.faults.inner.expiringCommands(0, Number.MAX_SAFE_INTEGER, 1e6),
    devices: ['lamp-1', 'victim', 'fresh'].map((id) => w.faults.inner.getDevice(id) ?? null),
    timers: w.clock.pending,
    heard: [w.inserts.length, w.updates.length, w.expired.length, w.pushes.length]
  })
}

let faults = 0

/** Checks a reply is the 500 of a store failure, reported once as ERR_STORE with `cause`. */
function refused (t: Test, w: World, reply: Reply, cause: unknown, label: string): void {
  faults++
  t.strictSame(errorOf(reply), INTERNAL, `${label}: 500 Internal server error`)
  t.equal(w.errors.length, 1, `${label}: reported once`)
  const [error] = w.errors.splice(0)
  t.ok(error instanceof BrokerError, `${label}: a BrokerError`)
  t.equal(error?.code, 'ERR_STORE', `${label}: ERR_STORE`)
  if (cause instanceof Function) t.ok(cause(error?.cause), `${label}: cause is the store's error`)
  else t.equal(error?.cause, cause, `${label}: cause is the store's error`)
}

// --- (a) a SQLite file that becomes read-only ------------------------------------------------

t.test('broker-faults: a SQLite file turned read-only answers writes 500, changes nothing, and recovers', async (t) => {
  const db = new Database(file())
  db.pragma('journal_mode = WAL')
  t.teardown(() => { db.close() })
  const w = await world(t, sqliteStore(db))
  const readonly = (cause: unknown): boolean => cause instanceof Error && (cause as { code?: unknown }).code === 'SQLITE_READONLY'
  const rows = (): number => db.prepare('SELECT count(*) FROM commands').pluck().get() as number
  const devices = (): unknown => db.prepare('SELECT * FROM devices ORDER BY id').all()

  t.equal(w.clock.pending, 0, 'no timer to begin with')
  const before = state(w)
  const storedRows = rows()
  const storedDevices = devices()
  db.pragma('query_only = ON')

  refused(t, w, await w.insert('lamp-1', { command: 'on', lifetime: 30 }), readonly, 'insert')
  refused(t, w, await w.broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: w.commandId, command: { status: 'done' } }, w.admin), readonly, 'update')
  refused(t, w, await w.broker.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'renamed', networkId: 1, deviceTypeId: 1 } }, w.admin), readonly, 'device/save')
  refused(t, w, await w.broker.handle({ action: 'device/delete', deviceId: 'victim' }, w.admin), readonly, 'device/delete')
  // Several writes in one group commit fail together, with one report.
  const burst = await Promise.all([1, 2, 3].map((i) => w.insert('lamp-1', { command: `burst-${i}`, lifetime: 5 })))
  for (const reply of burst) t.strictSame(errorOf(reply), INTERNAL, 'a burst insert: 500')
  faults += burst.length
  t.equal(w.errors.splice(0).length, 1, 'one report for the burst')
  t.equal(w.clock.pending, 0, 'no timer armed for a failed write')
  t.equal(rows(), storedRows, 'no command written to the file')
  t.strictSame(devices(), storedDevices, 'no device written to the file')
  t.equal(state(w), before, 'nothing changed')
  t.equal(body(await w.broker.handle({ action: 'command/get', deviceId: 'lamp-1', commandId: w.commandId }, w.admin)).command.status, null, 'reads still work')

  db.pragma('query_only = OFF')
  const reply = await w.insert('lamp-1', { command: 'on', lifetime: 30 })
  const id = body(reply).command.id as number
  t.strictSame(w.inserts.map((c) => c.id), [id], 'the next insert is delivered')
  t.equal(w.pushes.length, 1, 'and pushed')
  t.equal(w.clock.pending, 1, 'and its timer armed')
  body(await w.broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: w.commandId, command: { status: 'done' } }, w.admin))
  t.strictSame(w.updates.map((c) => [c.id, c.status]), [[w.commandId, 'done']], 'the next update is delivered')

  // Expiry while read-only is reported and retried; the command stays until it can go.
  db.pragma('query_only = ON')
  w.clock.advance(30_000 + TICK)
  t.equal(w.errors.length, 1, 'expiry failed and was reported')
  t.equal(w.errors.splice(0)[0]?.code, 'ERR_STORE')
  t.equal(w.expired.length, 0, 'no expired event yet')
  t.equal(db.prepare('SELECT count(*) FROM commands WHERE id = ?').pluck().get(id), 1, 'the row is still in the file')
  t.strictSame(errorOf(await w.broker.handle({ action: 'command/get', deviceId: 'lamp-1', commandId: id }, w.admin)),
    { code: 404, error: `Command with id = ${id} not found` }, 'but clients no longer see it')
  db.pragma('query_only = OFF')
  w.clock.advance(RETRY_MS + TICK)
  t.strictSame(w.expired.map((c) => c.id), [id], 'retried: expired once')
  t.equal(db.prepare('SELECT count(*) FROM commands WHERE id = ?').pluck().get(id), 0, 'and gone from the file')
  t.strictSame(w.errors, [])
})

// --- (b) a store whose methods throw ----------------------------------------------------------

interface Row {
  name: string
  fail: Method[]
  /** Runs with the store healthy, before the fault is set. */
  prepare?: (w: World) => Promise<void>
  request: (w: World) => Promise<Reply>
  /** After healing: checks the same request, sent again, worked. */
  healed: (t: Test, w: World, reply: Reply) => void | Promise<void>
}

const rows: Row[] = [
  {
    name: 'insert (commit throws)',
    fail: ['commit'],
    request: (w) => w.insert('lamp-1', { command: 'on', lifetime: 30 }),
    healed: (t, w, reply) => {
      t.strictSame(w.inserts.map((c) => c.id), [body(reply).command.id], 'delivered')
      t.equal(w.pushes.length, 1, 'pushed')
      t.equal(w.clock.pending, 1, 'its timer armed')
    }
  },
  {
    name: 'insert (countPending throws)',
    fail: ['countPending'],
    prepare: async (w) => { await w.device('fresh', 1, 1) },
    request: (w) => w.insert('fresh', { command: 'on', lifetime: 30 }),
    healed: (t, w) => { t.equal(w.inserts.length, 1, 'delivered') }
  },
  {
    name: 'update (commit throws)',
    fail: ['commit'],
    request: (w) => w.broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: w.commandId, command: { status: 'done', result: 1 } }, w.admin),
    healed: (t, w) => {
      t.strictSame(w.updates.map((c) => [c.id, c.status]), [[w.commandId, 'done']], 'delivered')
      t.equal(w.pushes.length, 1, 'pushed')
    }
  },
  {
    name: 'update (getDevice throws)',
    fail: ['getDevice'],
    request: (w) => w.broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: w.commandId, command: { status: 'done' } }, w.admin),
    healed: (t, w) => { t.equal(w.updates.length, 1, 'delivered') }
  },
  {
    name: 'get (getCommand throws)',
    fail: ['getCommand'],
    request: (w) => w.broker.handle({ action: 'command/get', deviceId: 'lamp-1', commandId: w.commandId }, w.admin),
    healed: (t, w, reply) => { t.equal(body(reply).command.id, w.commandId) }
  },
  {
    name: 'list (scanCommands throws)',
    fail: ['scanCommands'],
    request: (w) => w.broker.handle({ action: 'command/list', deviceId: 'lamp-1' }, w.admin),
    healed: (t, w, reply) => { t.strictSame(body(reply).commands.map((c: Command) => c.id), [w.commandId]) }
  },
  {
    name: 'device/get (getDevice throws)',
    fail: ['getDevice'],
    request: (w) => w.broker.handle({ action: 'device/get', deviceId: 'lamp-1' }, w.admin),
    healed: (t, _w, reply) => { t.equal(body(reply).device.id, 'lamp-1') }
  },
  {
    name: 'list sorted by status (sortCommands throws)',
    fail: ['sortCommands'],
    request: (w) => w.broker.handle({ action: 'command/list', deviceId: 'lamp-1', sortField: 'status' }, w.admin),
    healed: (t, w, reply) => { t.strictSame(body(reply).commands.map((c: Command) => c.id), [w.commandId]) }
  },
  {
    name: 'device/save (saveDevice throws)',
    fail: ['saveDevice'],
    request: (w) => w.broker.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'renamed', networkId: 2, deviceTypeId: 1 } }, w.admin),
    healed: (t, w) => { t.equal(w.faults.inner.getDevice('lamp-1')?.name, 'renamed') }
  },
  {
    name: 'device/delete (deleteDevice throws)',
    fail: ['deleteDevice'],
    prepare: async (w) => {
      body(await w.insert('victim', { command: 'doomed', lifetime: 60 }))
      w.inserts.length = 0
      w.pushes.length = 0
    },
    request: (w) => w.broker.handle({ action: 'device/delete', deviceId: 'victim' }, w.admin),
    healed: (t, w) => {
      t.equal(w.faults.inner.getDevice('victim'), undefined, 'deleted')
      t.strictSame(w.faults.inner.expiringCommands(0, Number.MAX_SAFE_INTEGER, 100), { entries: [], next: undefined }, 'with its command')
      w.clock.advance(60_000 + TICK)
      t.strictSame(w.expired, [], 'whose timer fires on nothing')
    }
  },
  {
    name: 'subscribe with history (scanCommands throws)',
    fail: ['scanCommands'],
    request: (w) => w.watcher.handle({ action: 'command/subscribe', requestId: 's', deviceId: 'lamp-1', timestamp: START - 1 }, w.admin),
    healed: async (t, w, reply) => {
      const id = body(reply).subscriptionId as number
      await new Promise(setImmediate)
      t.strictSame(w.pushes.filter((p) => p.subscriptionId === id).map((p) => p.command.id), [w.commandId], 'history pushed')
    }
  }
]

t.test('broker-faults: a store that throws fails each request with 500 ERR_STORE and changes nothing', async (t) => {
  for (const row of rows) {
    await t.test(row.name, async (t) => {
      const w = await world(t)
      if (row.prepare !== undefined) await row.prepare(w)
      const subscriptions = JSON.stringify(await w.watcher.handle({ action: 'subscription/list' }, w.admin))
      const before = state(w)
      for (const method of row.fail) w.faults.fail.add(method)
      refused(t, w, await row.request(w), w.faults.error, row.name)
      t.equal(state(w), before, 'nothing changed: no command, no timer, no subscriber, no push')
      t.equal(JSON.stringify(await w.watcher.handle({ action: 'subscription/list' }, w.admin)), subscriptions, 'no subscription added')
      w.faults.fail.clear()
      const reply = await row.request(w)
      t.equal(reply.status, 'success', 'healed: the same request succeeds')
      await row.healed(t, w, reply)
      t.strictSame(w.errors, [], 'nothing else reported')
    })
  }
})

t.test('broker-faults: expiry in a throwing store is reported, retried, and reported expired once', async (t) => {
  const w = await world(t)
  const id = body(await w.insert('lamp-1', { command: 'short', lifetime: 2 })).command.id as number
  w.faults.fail.add('expireCommands')
  w.clock.advance(2000 + TICK)
  t.equal(w.errors.length, 1, 'the failed expiry is reported')
  const [error] = w.errors.splice(0)
  t.equal(error?.code, 'ERR_STORE')
  t.equal(error?.cause, w.faults.error)
  t.strictSame(w.expired, [], 'no expired event for a command still stored')
  t.strictSame(w.faults.inner.expiringCommands(0, Number.MAX_SAFE_INTEGER, 10), { entries: [[id, START + 2000]], next: undefined }, 'still stored')
  // Still failing at the retry: reported again, retried again.
  w.clock.advance(RETRY_MS)
  t.equal(w.errors.splice(0).length, 1, 'the retry failed and was reported')
  w.faults.fail.clear()
  w.clock.advance(RETRY_MS)
  t.strictSame(w.expired.map((c) => c.id), [id], 'the next retry expired it, once')
  t.strictSame(w.faults.inner.expiringCommands(0, Number.MAX_SAFE_INTEGER, 10), { entries: [], next: undefined }, 'gone')
  w.clock.advance(10 * RETRY_MS)
  t.equal(w.expired.length, 1, 'and never again')
  t.strictSame(w.errors, [])
})

t.test('broker-faults: start-up recovery in a throwing store is reported and retried', async (t) => {
  const inner = memoryStore()
  inner.saveDevice({ id: 'lamp-1', name: 'lamp-1', data: null, networkId: 1, deviceTypeId: 1, isBlocked: false })
  const record = { command: 'c', timestamp: START - 10_000, lastUpdated: START - 10_000, userId: 1, deviceId: 'lamp-1', networkId: 1, deviceTypeId: 1, parameters: null, lifetime: 5, status: null, result: null, updated: false }
  const [due, pending] = insertAll(inner, [{ ...record, expiresAt: START - 5000 }, { ...record, lifetime: 20, expiresAt: START + 10_000 }]) as [number, number]
  const faults = faulty(inner)
  faults.fail.add('expiringCommands')
  const w = setup(t, { tick: TICK }, faults.store)
  const errors: BrokerError[] = []
  const expired: number[] = []
  w.broker.on('error', (err) => { errors.push(err) })
  w.broker.on('expired', (command) => { expired.push(command.id) })
  let report: unknown
  void w.broker.ready.then((r) => { report = r })
  await new Promise(setImmediate)
  await new Promise(setImmediate)
  t.equal(errors.length, 1, 'the failed recovery is reported')
  t.equal(errors[0]?.code, 'ERR_STORE')
  t.equal(errors[0]?.cause, faults.error)
  t.equal(report, undefined, 'ready waits')
  // Requests are served meanwhile, and the due command is already invisible.
  t.strictSame(errorOf(await w.broker.handle({ action: 'command/get', deviceId: 'lamp-1', commandId: due }, w.admin)),
    { code: 404, error: `Command with id = ${due} not found` })
  faults.fail.clear()
  w.clock.advance(RETRY_MS)
  t.strictSame(await w.broker.ready, { expired: 1, rearmed: 1 }, 'the retry recovered')
  t.strictSame(expired, [due], 'the due command was reported expired')
  w.clock.advance(10_000)
  t.strictSame(expired, [due, pending], 'the pending one was re-armed and fired')
  t.equal(errors.length, 1, 'nothing else reported')
})

t.test('broker-faults: failed inserts do not use up maxPendingPerDevice', async (t) => {
  const w = await world(t, memoryStore(), { maxPendingPerDevice: 3 })
  // lamp-1 already holds one pending command (the target).
  w.faults.fail.add('commit')
  for (let i = 0; i < 5; i++) t.strictSame(errorOf(await w.insert('lamp-1', { command: `fail-${i}` })), INTERNAL)
  faults += 5
  t.equal(w.errors.splice(0).length, 5)
  w.faults.fail.clear()
  for (let i = 0; i < 2; i++) t.equal((await w.insert('lamp-1', { command: `ok-${i}` })).status, 'success', `insert ${i + 2} of 3`)
  t.match(errorOf(await w.insert('lamp-1', { command: 'over' })), { code: 400, error: /^Validation failed with following violations: / }, 'the fourth is over the limit')
})

// --- (c) a group commit that throws -------------------------------------------------------

const stores: Array<[string, () => SyncStore]> = [
  ['memory', () => memoryStore()],
  ['sqlite', () => sqliteStore(file())]
]

for (const [kind, make] of stores) {
  t.test(`broker-faults: a ${kind} group commit that throws fails every write of it, and nothing of it is seen`, async (t) => {
    const w = await world(t, make())
    const list = (): string[] => scanAll(w.faults.inner, { deviceId: 'lamp-1', order: 'ASC', examine: 1000, take: 1000 }, w.clock.now()).map((c) => c.command)
    const target = (): unknown => w.faults.inner.getCommand(w.commandId, w.clock.now())
    const original = JSON.stringify(target())

    // Five inserts in one turn share one commit; it throws: none of them stays.
    w.faults.nth = { method: 'commit', call: 1 }
    const replies = await Promise.all([0, 1, 2, 3, 4].map((i) => w.insert('lamp-1', { command: `batch-${i}`, lifetime: 30 })))
    for (const [i, reply] of replies.entries()) t.strictSame(errorOf(reply), INTERNAL, `insert ${i}: 500`)
    faults += replies.length
    t.equal(w.errors.length, 1, 'one report for the batch')
    t.equal(w.errors.splice(0)[0]?.cause, w.faults.error)
    t.strictSame(list(), ['target'], 'no insert of the batch stays')
    t.equal(w.clock.pending, 0, 'no timer')
    t.equal(w.inserts.length + w.pushes.length, 0, 'no subscriber, no push')

    // Inserts and an update in one turn, one commit; it throws: the update fails with them.
    w.faults.nth = { method: 'commit', call: 1 }
    const mixed = await Promise.all([
      w.insert('lamp-1', { command: 'mixed-0' }),
      w.broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: w.commandId, command: { status: 'done' } }, w.admin),
      w.insert('lamp-1', { command: 'mixed-1' })
    ])
    for (const reply of mixed) t.strictSame(errorOf(reply), INTERNAL)
    faults += mixed.length
    t.equal(w.errors.splice(0).length, 1, 'one report')
    t.strictSame(list(), ['target'], 'no insert of the batch stays')
    t.equal(JSON.stringify(target()), original, 'the update is undone')
    t.equal(w.inserts.length + w.updates.length + w.pushes.length, 0, 'no subscriber, no push')

    // Healthy again: the next batch commits whole.
    const healed = await Promise.all([0, 1, 2].map((i) => w.insert('lamp-1', { command: `healed-${i}`, lifetime: 30 })))
    t.ok(healed.every((reply) => reply.status === 'success'), 'the next batch commits')
    t.strictSame(list(), ['target', 'healed-0', 'healed-1', 'healed-2'])
    t.equal(w.inserts.length, 3, 'and is delivered')
    t.equal(w.clock.pending, 1, 'with its timers')
    t.strictSame(w.errors, [])
  })

  t.test(`broker-faults: with writeBatch, only the ${kind} commit that threw fails`, async (t) => {
    const w = await world(t, make(), { writeBatch: 2 })
    const list = (): string[] => scanAll(w.faults.inner, { deviceId: 'lamp-1', order: 'ASC', examine: 1000, take: 1000 }, w.clock.now()).map((c) => c.command)
    // Five inserts split into [0, 1], [2, 3], [4]; the second commit, [2, 3], throws.
    w.faults.nth = { method: 'commit', call: 2 }
    const replies = await Promise.all([0, 1, 2, 3, 4].map((i) => w.insert('lamp-1', { command: `split-${i}` })))
    t.strictSame(replies.map((reply) => reply.status), ['success', 'success', 'error', 'error', 'success'])
    t.strictSame(errorOf(replies[2] as Reply), INTERNAL)
    t.strictSame(errorOf(replies[3] as Reply), INTERNAL)
    faults += 2
    t.strictSame(list(), ['target', 'split-0', 'split-1', 'split-4'], 'exactly the failed transaction is missing')
    t.strictSame(w.inserts.map((c) => c.id), [0, 1, 4].map((i) => body(replies[i] as Reply).command.id), 'exactly the committed ones are delivered')
    t.equal(w.errors.splice(0).length, 1, 'one report')
  })
}

// --- (d) a SQLite file deleted under the broker ----------------------------------------------

t.test('broker-faults: a SQLite file deleted under the broker answers writes 500, acknowledges none, and serves reads', async (t) => {
  const filename = file()
  const w = await world(t, sqliteStore(filename))
  const moved = (cause: unknown): boolean => cause instanceof BrokerError && cause.code === 'ERR_FILE_MOVED'
  const before = state(w)
  fs.rmSync(filename)

  refused(t, w, await w.insert('lamp-1', { command: 'on', lifetime: 30 }), moved, 'insert')
  refused(t, w, await w.broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: w.commandId, command: { status: 'done' } }, w.admin), moved, 'update')
  refused(t, w, await w.broker.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'renamed', networkId: 1, deviceTypeId: 1 } }, w.admin), moved, 'device/save')
  refused(t, w, await w.broker.handle({ action: 'device/delete', deviceId: 'victim' }, w.admin), moved, 'device/delete')
  const burst = await Promise.all([1, 2, 3].map((i) => w.insert('lamp-1', { command: `burst-${i}` })))
  for (const reply of burst) t.strictSame(errorOf(reply), INTERNAL, 'a burst insert: 500')
  faults += burst.length
  t.equal(w.errors.splice(0).length, 1, 'one report for the burst')
  // Ids handed out inside the rolled-back transactions are not reused (the Store contract): only
  // lastCommandId may have moved.
  const settled = (text: string): unknown => {
    const { lastCommandId, ...rest } = JSON.parse(text) as Record<string, unknown>
    return rest
  }
  t.strictSame(settled(state(w)), settled(before), 'nothing else changed, not even in what the store has open')
  t.equal(body(await w.broker.handle({ action: 'command/get', deviceId: 'lamp-1', commandId: w.commandId }, w.admin)).command.command, 'target',
    'reads are served from what the store has open')
})

t.test('broker-faults: totals', async (t) => {
  t.comment(`${faults} requests hit a store fault: every one answered 500 ERR_STORE, none changed state`)
  t.ok(faults >= 40)
})
