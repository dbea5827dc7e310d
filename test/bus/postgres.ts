import pg from 'pg'
import t from 'tap'
import type { BusEvent } from '../../lib/bus/bus.js'
import { PostgresBus } from '../../lib/bus/postgres.js'
import { postgresStore } from '../../lib/store/postgres.js'
import type { NewCommandRecord, Store } from '../../lib/store/store.js'
import { postgres, until } from '../fixtures/postgres.js'
import { command, device } from '../fixtures/store-suite.js'

const fixture = await postgres(t)

if (fixture !== undefined) {
  const { admin } = fixture
  const closers: Array<() => Promise<void>> = []
  t.teardown(async () => { for (const close of closers.reverse()) await close() })

  const open = (schema: string, pool?: pg.Pool): Store => {
    const store = postgresStore(pool === undefined ? { schema } : { schema, pool })
    closers.push(async () => { await store.close() })
    return store
  }
  const bus = (store: Store): PostgresBus => store.shared?.bus as PostgresBus
  const insert = async (store: Store, inserts: NewCommandRecord[]): Promise<number[]> =>
    (await store.commit({ inserts, updates: [], maxPending: 1e9 }, 0)).ids as number[]

  // What a listener heard, by the sequence of commands it names, and the errors of the bus.
  const listen = (target: { subscribe: PostgresBus['subscribe'] }): { events: BusEvent[], errors: unknown[] } => {
    const heard = { events: [] as BusEvent[], errors: [] as unknown[] }
    target.subscribe((event) => { heard.events.push(event) }, (error) => { heard.errors.push(error) })
    return heard
  }
  const ids = (events: BusEvent[]): number[] => events.flatMap((e) => e.type === 'device-deleted' ? [] : [e.record.id])
  // Writes a marker command and waits until `heard` has it: everything written before it has come.
  let markers = 0
  const mark = async (store: Store, heard: { events: BusEvent[] }): Promise<void> => {
    const name = `marker-${++markers}`
    await store.saveDevice(device({ id: 'marker' }))
    await insert(store, [command({ deviceId: 'marker', command: name })])
    await until(() => heard.events.some((e) => e.type === 'insert' && e.record.command === name), name)
  }
  const listeners = async (schema: string): Promise<number[]> =>
    (await admin.query('SELECT pid FROM pg_stat_activity WHERE application_name = $1', [`${schema}:listen`])).rows.map((r) => r.pid as number)
  const database = async (): Promise<string> => (await admin.query('SELECT current_database() AS d')).rows[0].d
  // Two stores on one schema: `a` as the test's user, `b` on a role of its own that a test can
  // lock out (NOLOGIN) to cut b's connections without touching a's. Dropped at the end.
  const twoStores = async (schema: string): Promise<{ role: string, a: Store, b: Store }> => {
    const role = `${schema}_r`
    await admin.query(`CREATE ROLE "${role}" LOGIN SUPERUSER`)
    const a = open(schema)
    await a.lastCommandId()
    const b = open(schema, fixture.pool({ user: role, database: await database() }))
    closers.unshift(async () => {
      await admin.query(`REASSIGN OWNED BY "${role}" TO CURRENT_USER`)
      await admin.query(`DROP ROLE "${role}"`)
    })
    return { role, a, b }
  }
  const terminate = async (pids: number[]): Promise<void> => { for (const pid of pids) await admin.query('SELECT pg_terminate_backend($1)', [pid]) }

  t.test('events of one store reach another store\'s bus once each, in commit order per device', async (t) => {
    const schema = fixture.schema()
    const a = open(schema)
    const b = open(schema)
    const heard = listen(bus(b))
    await bus(b).ready
    for (const id of ['d0', 'd1', 'd2']) await a.saveDevice(device({ id, networkId: 7 }))
    const written = (await Promise.all(Array.from({ length: 30 }, async (_, i) =>
      await insert(i % 3 === 0 ? b : a, [command({ deviceId: `d${i % 3}` }), command({ deviceId: `d${(i + 1) % 3}` })])))).flat()
    const updates = written.slice(0, 10).map((id) => ({ id, deviceId: '', patch: { status: 'done' }, lastUpdated: 5 }))
    for (const update of updates) update.deviceId = (await a.getCommand(update.id, 0))?.deviceId as string
    await a.commit({ inserts: [], updates, maxPending: 100 }, 0)
    await mark(a, heard)
    const commands = heard.events.filter((e) => e.type !== 'device-deleted' && e.record.deviceId !== 'marker')
    t.equal(commands.length, written.length + updates.length, 'every insert and update, once')
    t.strictSame([...new Set(ids(commands.filter((e) => e.type === 'insert')))].sort((x, y) => x - y), [...written].sort((x, y) => x - y))
    for (const device of ['d0', 'd1', 'd2']) {
      const inserted = ids(commands.filter((e) => e.type === 'insert' && e.record.deviceId === device))
      t.strictSame(inserted, [...inserted].sort((x, y) => x - y), `${device}: inserts in commit order, which is id order`)
    }
    t.ok(commands.every((e) => e.type !== 'device-deleted' && e.networkId === 7), 'with the device\'s network')
  })

  t.test('an event larger than a NOTIFY goes by reference and arrives whole', async (t) => {
    const schema = fixture.schema()
    const a = open(schema)
    const b = open(schema)
    const heard = listen(bus(b))
    await bus(b).ready
    await a.saveDevice(device({ id: 'dev' }))
    const parameters = JSON.stringify({ big: 'é'.repeat(5000) })
    const [small, big, after] = await insert(a, [command(), command({ parameters }), command()]) as [number, number, number]
    await mark(a, heard)
    t.strictSame(ids(heard.events).slice(0, 3), [small, big, after], 'in order, around the large one')
    const got = heard.events[1]
    t.equal(got?.type === 'insert' ? got.record.parameters : undefined, parameters, 'whole')
    t.strictSame(heard.errors, [])
  })

  t.test('a reference to an event no longer in the table is reported, and skipped', async (t) => {
    const schema = fixture.schema()
    const store = open(schema)
    const heard = listen(bus(store))
    await bus(store).ready
    await admin.query('SELECT pg_notify($1, $2)', [`${schema}.events`, '999999999'])
    await until(() => heard.errors.length > 0, 'the report')
    t.match(heard.errors[0], { code: 'ERR_STORE', message: /event 999999999 was pruned/ })
    await mark(store, heard)
    t.equal(heard.events.length, 1, 'only the marker')
  })

  t.test('a killed LISTEN connection reconnects, and catches up with nothing lost or twice', async (t) => {
    const schema = fixture.schema()
    const { role, a, b } = await twoStores(schema)
    const heard = listen(bus(b))
    // A bus of its own that remembers two events: its catch-up starts after what it forgot.
    const small = new PostgresBus({ pool: fixture.pool(), schema, window: 2 })
    closers.push(async () => { await small.close() })
    const smallHeard = listen(small)
    await Promise.all([bus(b).ready, small.ready])
    await a.saveDevice(device({ id: 'dev' }))
    const before = await insert(a, [command(), command(), command()])
    await mark(a, heard)
    await until(() => smallHeard.events.length === 4, 'the small bus')

    // The outage: b's role may not log in, its LISTEN connections are killed.
    await admin.query(`ALTER ROLE "${role}" NOLOGIN`)
    await terminate(await listeners(schema))
    await until(() => heard.errors.length >= 2, 'the loss and a failed reconnection')
    t.match(heard.errors[0], { code: '57P01' }, 'the loss is reported')
    const during = await insert(a, Array.from({ length: 1100 }, (_, i) => command({ parameters: i === 500 ? JSON.stringify('x'.repeat(9000)) : null })))
    await admin.query(`ALTER ROLE "${role}" LOGIN`)
    await mark(a, heard)
    await until(() => smallHeard.events.length >= 4 + during.length + 1, 'the small bus to catch up')

    const expected = [...before, ...during]
    for (const [name, events] of [['b', heard.events], ['small', smallHeard.events]] as const) {
      const got = ids(events.filter((e) => e.type === 'insert' && e.record.deviceId === 'dev'))
      t.strictSame(got, expected, `${name}: every event once, in order, across the outage`)
    }
    t.equal((await listeners(schema)).length, 3, 'a, b and the small bus listen again')
  })

  t.test('a failed read of an event restarts the connection, which catches up', async (t) => {
    const schema = fixture.schema()
    const { role, a, b } = await twoStores(schema)
    const heard = listen(bus(b))
    await bus(b).ready
    await a.saveDevice(device({ id: 'dev' }))
    await admin.query(`ALTER ROLE "${role}" NOLOGIN`)
    // b's pool loses its connections and cannot open one; its LISTEN connection stays.
    const idle = await admin.query("SELECT pid FROM pg_stat_activity WHERE usename = $1 AND application_name <> $2", [role, `${schema}:listen`])
    await terminate(idle.rows.map((r) => r.pid as number))
    const [big] = await insert(a, [command({ parameters: JSON.stringify('y'.repeat(9000)) })])
    await until(() => heard.errors.length >= 2, 'the failed read, and the connection it ends')
    await admin.query(`ALTER ROLE "${role}" LOGIN`)
    await mark(a, heard)
    t.strictSame(ids(heard.events.filter((e) => e.type === 'insert' && e.record.deviceId === 'dev')), [big], 'the event was read again, once')
  })

  t.test('a listener that throws is the listener\'s problem', async (t) => {
    const schema = fixture.schema()
    const store = open(schema)
    const errors: unknown[] = []
    const warnings: Error[] = []
    const onWarning = (warning: Error): void => { warnings.push(warning) }
    process.on('warning', onWarning)
    t.teardown(() => { process.off('warning', onWarning) })
    const boom = new Error('boom')
    bus(store).subscribe(() => { throw boom }, (error) => { errors.push(error) })
    const stop = bus(store).subscribe(() => { throw 'a string' }) // eslint-disable-line @typescript-eslint/only-throw-error
    const stop2 = bus(store).subscribe(() => { throw boom })
    const heard = listen(bus(store))
    await bus(store).ready
    await mark(store, heard)
    await until(() => warnings.length >= 2, 'the warnings')
    t.strictSame(errors, [boom], 'onError hears its listener\'s throw')
    t.equal(warnings.find((w) => w === boom), boom, 'without onError, a warning')
    t.match(warnings.map((w) => w.message), [/a listener threw a string/], 'a thrown non-Error is described')
    stop()
    stop2()
    await mark(store, heard)
    t.equal(errors.length, 2, 'the others still hear')
  })

  t.test('events are pruned after their retention', async (t) => {
    const schema = fixture.schema()
    const store = open(schema)
    await store.saveDevice(device({ id: 'dev' }))
    await insert(store, [command(), command()])
    const count = async (): Promise<number> => (await admin.query(`SELECT count(*)::int AS n FROM "${schema}".events`)).rows[0].n
    t.equal(await count(), 2)
    t.equal(await bus(store).prune(), 0, 'nothing is five minutes old')
    const pool = fixture.pool()
    const pruner = new PostgresBus({ pool, schema, retention: 0, pruneInterval: 10 })
    closers.push(async () => { await pruner.close() })
    const heard = listen(pruner)
    await pruner.ready
    await until(async () => await count() === 0, 'the prune')
    await pool.end()
    await until(() => heard.errors.length > 0, 'a failed prune reported')
    t.match(heard.errors[0], /pool after calling end/)
  })

  t.test('close stops reconnecting, and ends what a reconnection opened', async (t) => {
    const schema = fixture.schema()
    const setup = postgresStore({ schema })
    await setup.lastCommandId()
    await setup.close()
    const watcher = new PostgresBus({ pool: fixture.pool(), schema })
    const heard = listen(watcher)
    await watcher.ready
    t.equal((await listeners(schema)).length, 1)

    // Closed while its reconnection's LISTEN is under way.
    const query = pg.Client.prototype.query
    let closing: Promise<void> | undefined
    t.teardown(() => { pg.Client.prototype.query = query })
    pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
      const result = (query as (...a: unknown[]) => unknown).apply(this, args)
      if (closing === undefined && typeof args[0] === 'string' && args[0].startsWith('LISTEN')) {
        return (result as Promise<unknown>).then((value) => {
          closing = watcher.close()
          return value
        })
      }
      return result
    } as typeof query
    await terminate(await listeners(schema))
    await until(() => closing !== undefined, 'the reconnection')
    await closing
    t.equal(watcher.close(), closing, 'close twice is once')
    pg.Client.prototype.query = query
    t.match(heard.errors, [{ code: '57P01' }])
    await until(async () => (await listeners(schema)).length === 0, 'the reconnection to end')

    // Closed while it waits to reconnect.
    const stopping = open(schema)
    const stoppingHeard = listen(bus(stopping))
    await bus(stopping).ready
    await terminate(await listeners(schema))
    await until(() => stoppingHeard.errors.length > 0, 'the loss')
    await stopping.close()
    await new Promise((resolve) => setTimeout(resolve, 300))
    t.equal((await listeners(schema)).length, 0, 'the closed bus never came back')
  })

  t.test('a bus that cannot connect rejects ready', async (t) => {
    const pool = new pg.Pool({ host: '127.0.0.1', port: 1 })
    const broken = new PostgresBus({ pool, schema: 'nowhere' })
    await t.rejects(broken.ready, /ECONNREFUSED/)
    await broken.close()
    await pool.end()
  })
}
