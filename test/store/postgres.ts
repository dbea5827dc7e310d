import pg from 'pg'
import t from 'tap'
import type { BusEvent } from '../../lib/bus/bus.js'
import { POSTGRES_SCHEMA_VERSION, postgresStore } from '../../lib/store/postgres.js'
import type { CommandRecord, NewCommandRecord, Store, WriteBatch } from '../../lib/store/store.js'
import { postgres, until } from '../fixtures/postgres.js'
import { command, device, storeSuite } from '../fixtures/store-suite.js'
import { expectError } from '../fixtures/throws.js'

const fixture = await postgres(t)

if (fixture !== undefined) {
  const { admin } = fixture
  const stores: Store[] = []
  t.teardown(async () => { for (const store of stores) await store.close() })

  // A store on a schema of its own (or the one given), closed at the end of the file.
  const open = (schema = fixture.schema(), pool?: pg.Pool): Store => {
    const store = postgresStore(pool === undefined ? { schema } : { schema, pool })
    stores.push(store)
    return store
  }
  // The contract, unchanged: a store on a schema of its own each time.
  storeSuite(t, 'postgres-store', () => open())

  const batch = (inserts: NewCommandRecord[], updates: WriteBatch['updates'] = [], maxPending = 1000): WriteBatch =>
    ({ inserts, updates, maxPending })

  // A pool whose connections count their statements and fail the ones `fail` picks.
  const spied = (fail: (text: string) => Error | undefined = () => undefined): { pool: pg.Pool, texts: string[] } => {
    const texts: string[] = []
    const pool = fixture.pool()
    pool.on('connect', (client) => {
      const query = client.query.bind(client) as (...args: unknown[]) => unknown
      client.query = ((config: unknown, ...rest: unknown[]) => {
        const text = typeof config === 'string' ? config : (config as { text: string }).text
        texts.push(text)
        const error = fail(text)
        if (error !== undefined) return Promise.reject(error)
        return query(config, ...rest)
      }) as typeof client.query
    })
    return { pool, texts }
  }

  t.test('creates its schema, tables and version; several stores migrate one schema at once', async (t) => {
    const schema = fixture.schema()
    const many = Array.from({ length: 6 }, () => open(schema))
    t.strictSame(await Promise.all(many.map(async (store) => await store.lastCommandId())), [0, 0, 0, 0, 0, 0], 'every store is ready')
    const { rows } = await admin.query(`SELECT value FROM "${schema}".meta WHERE key = 'schema_version'`)
    t.equal(Number(rows[0].value), POSTGRES_SCHEMA_VERSION)
    const tables = await admin.query('SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1', [schema])
    t.strictSame(tables.rows.map((r) => r.table_name), ['commands', 'devices', 'events', 'meta', 'pending'])
    const ids = await Promise.all(many.map(async (store, i) => (await store.commit(batch([command({ deviceId: `d${i}` })]), 0)).ids[0]))
    t.equal(new Set(ids).size, 6, 'one command space, one sequence')
  })

  t.test('an existing empty schema is used; a schema of a newer version is refused', async (t) => {
    const empty = fixture.schema()
    await admin.query(`CREATE SCHEMA "${empty}"`)
    const store = open(empty)
    await store.saveDevice(device({ id: 'dev' }))
    t.equal((await store.getDevice('dev'))?.id, 'dev')

    const newer = fixture.schema()
    await admin.query(`CREATE SCHEMA "${newer}"; CREATE TABLE "${newer}".meta (key text PRIMARY KEY, value bigint NOT NULL);
      INSERT INTO "${newer}".meta VALUES ('schema_version', ${POSTGRES_SCHEMA_VERSION + 1})`)
    const refused = open(newer)
    await t.rejects(async () => await refused.getDevice('dev'), { name: 'BrokerError', code: 'ERR_SCHEMA', message: /version 2; this version of command-broker reads up to 1/ })
    await t.rejects(refused.shared?.bus.ready as Promise<void>, { code: 'ERR_SCHEMA' }, 'the bus does not start either')
    await t.rejects(async () => await refused.commit(batch([command()]), 0), { code: 'ERR_SCHEMA' })
    const tables = await admin.query('SELECT count(*)::int AS n FROM information_schema.tables WHERE table_schema = $1', [newer])
    t.equal(tables.rows[0].n, 1, 'nothing was created')
  })

  t.test('size() is what the schema\'s tables take, and grows with them', async (t) => {
    const store = open()
    const size = async (): Promise<number> => await (store.size?.() as Promise<number>)
    const empty = await size()
    t.ok(empty > 0, 'its tables and indexes take pages')
    await store.saveDevice({ id: 'dev', name: 'dev', data: null, networkId: null, deviceTypeId: null, isBlocked: false })
    await store.commit(batch(Array.from({ length: 500 }, () => command({ parameters: JSON.stringify('x'.repeat(2000)) }))), 0)
    t.ok(await size() > empty, 'grows')
  })

  t.test('ids are numbers from a sequence, and none above 2^53 - 1', async (t) => {
    const schema = fixture.schema()
    const store = open(schema)
    const { ids } = await store.commit(batch([command(), command()]), 0)
    t.strictSame(ids, [1, 2])
    await admin.query(`SELECT setval('"${schema}".command_ids', ${Number.MAX_SAFE_INTEGER - 1})`)
    const last = await store.commit(batch([command()]), 0)
    t.strictSame(last.ids, [Number.MAX_SAFE_INTEGER], 'the last safe id is handed out')
    t.equal((await store.getCommand(Number.MAX_SAFE_INTEGER, 0))?.id, Number.MAX_SAFE_INTEGER, 'and read back as a number')
    t.equal(await store.lastCommandId(), Number.MAX_SAFE_INTEGER)
    await t.rejects(async () => await store.commit(batch([command({ deviceId: 'other' })], [{ id: 1, deviceId: 'dev', patch: { status: 'x' }, lastUpdated: 5 }]), 0),
      { name: 'BrokerError', code: 'ERR_IDS_EXHAUSTED' })
    t.equal((await store.getCommand(1, 0))?.status, null, 'the whole batch rolled back')
    t.equal((await store.countPending('other', 0, undefined, 10)).count, 0)
    const { rows } = await admin.query(`SELECT count(*)::int AS n FROM "${schema}".pending WHERE device_id = 'other' AND count > 0`)
    t.equal(rows[0].n, 0, 'the pending count rolled back')
  })

  t.test('a batch is a fixed number of statements, whatever its size', async (t) => {
    const { pool, texts } = spied()
    const store = open(fixture.schema(), pool)
    await store.saveDevice(device({ id: 'dev' }))
    await store.commit(batch([command()]), 0) // creates the device's pending row
    const count = async (b: WriteBatch): Promise<number> => {
      texts.length = 0
      await store.commit(b, 0)
      return texts.length
    }
    const one = await count(batch([command()]))
    const many = await count(batch(Array.from({ length: 500 }, () => command())))
    t.equal(many, one, `${one} statements for 1 insert or 500`)
    t.ok(one <= 7, 'BEGIN, locks, ids, insert, count, events, COMMIT')
    const ids = Array.from({ length: 300 }, (_, i) => i + 1)
    const updateOne = await count(batch([], [{ id: 1, deviceId: 'dev', patch: { status: 'a' }, lastUpdated: 1 }]))
    const updateMany = await count(batch([], ids.map((id) => ({ id, deviceId: 'dev', patch: { status: 'b' }, lastUpdated: 2 }))))
    t.equal(updateMany, updateOne, `${updateOne} statements for 1 update or 300`)
    t.equal(await count(batch([], [])), 0, 'an empty batch is no transaction at all')
  })

  t.test('commit: inserts get increasing ids, updates see the one before, refused ones nothing', async (t) => {
    const store = open()
    const events: BusEvent[] = []
    store.shared?.bus.subscribe((event) => { events.push(event) })
    await store.shared?.bus.ready
    await store.saveDevice(device({ id: 'dev', networkId: 4, deviceTypeId: 5 }))
    const first = await store.commit(batch([command({ command: 'a' }), command({ command: 'b' }), command({ deviceId: 'ghost' })]), 0)
    t.strictSame(first.ids, [1, 2, 3])
    const second = await store.commit(batch([], [
      { id: 1, deviceId: 'dev', patch: { status: 'one' }, lastUpdated: 10 },
      { id: 2, deviceId: 'dev', patch: { result: '"r"' }, lastUpdated: 11 },
      { id: 1, deviceId: 'dev', patch: { result: '1', status: null }, lastUpdated: 12 },
      { id: 1, deviceId: 'other', patch: { status: 'x' }, lastUpdated: 13 },
      { id: 99, deviceId: 'dev', patch: {}, lastUpdated: 14 },
      { id: 3, deviceId: 'ghost', patch: { status: 'g' }, lastUpdated: 15 }
    ]), 0)
    t.strictSame(second.before.map((r) => r === undefined ? undefined : [r.id, r.status, r.result, r.updated]),
      [[1, null, null, false], [2, null, null, false], [1, 'one', null, true], undefined, undefined, [3, null, null, false]])
    t.strictSame(await store.getCommand(1, 0), { id: 1, ...command({ command: 'a' }), status: null, result: '1', lastUpdated: 12, updated: true })
    t.equal((await store.countPending('dev', 0, undefined, 10)).count, 0)
    // A marker, whose event comes last: whatever was to come before it has come.
    await store.commit(batch([command({ command: 'marker' })]), 0)
    await until(() => events.some((e) => e.type === 'insert' && e.record.command === 'marker'), 'the marker')
    t.strictSame(events.map((e) => e.type === 'device-deleted' ? e.type : [e.type, e.record.id, e.record.status, e.networkId, e.deviceTypeId]), [
      ['insert', 1, null, 4, 5], ['insert', 2, null, 4, 5], ['update', 1, 'one', 4, 5], ['update', 2, null, 4, 5], ['update', 1, null, 4, 5],
      ['insert', 4, null, 4, 5]
    ], 'no event for a device that does not exist; updates in batch order')
  })

  t.test('maxPending holds across two stores committing at once', async (t) => {
    const schema = fixture.schema()
    const a = open(schema)
    const b = open(schema)
    await a.saveDevice(device({ id: 'dev' }))
    const max = 10
    const results = await Promise.all(Array.from({ length: 16 }, async (_, i) =>
      await (i % 2 === 0 ? a : b).commit({ inserts: [command(), command(), command({ deviceId: `other${i % 3}` })], updates: [], maxPending: max }, 0)))
    const accepted = results.flatMap((r) => r.ids.slice(0, 2)).filter((id) => id !== undefined)
    t.equal(accepted.length, max, 'exactly maxPending went in')
    t.ok(results.every((r) => r.ids[2] !== undefined), 'other devices have their own counts')
    t.equal((await b.countPending('dev', 0, undefined, 100)).count, max)
    const refused = await a.commit({ inserts: [command()], updates: [], maxPending: max }, 0)
    t.strictSame(refused.ids, [undefined], 'full')
    const notPending = await a.commit({ inserts: [command({ updated: true }), command({ expiresAt: 5 })], updates: [], maxPending: max }, 10)
    t.ok(notPending.ids.every((id) => id !== undefined), 'an updated or already expired insert is not pending, and always goes in')
    await b.commit(batch([], [{ id: accepted[0] as number, deviceId: 'dev', patch: { status: 'done' }, lastUpdated: 1 }]), 0)
    t.strictSame((await a.commit({ inserts: [command(), command()], updates: [], maxPending: max }, 0)).ids.map((id) => id !== undefined),
      [false, false], 'at 0 the command expiring at 5 is pending: the update made room for it')
    t.strictSame((await a.commit({ inserts: [command(), command()], updates: [], maxPending: max }, 10)).ids.map((id) => id !== undefined),
      [true, false], 'at 10 it is not: room for one')
  })

  t.test('maxPending: a command that has expired, not yet deleted, is not pending', async (t) => {
    const store = open()
    const max = 3
    const { ids } = await store.commit({ inserts: [command({ expiresAt: 50 }), command({ expiresAt: 60 }), command()], updates: [], maxPending: max }, 0)
    t.strictSame((await store.commit({ inserts: [command()], updates: [], maxPending: max }, 49)).ids, [undefined], 'full at 49')
    t.strictSame((await store.commit({ inserts: [command(), command()], updates: [], maxPending: max }, 50)).ids.map((id) => id !== undefined),
      [true, false], 'one expired at 50 makes room for one')
    t.strictSame((await store.commit({ inserts: [command()], updates: [], maxPending: max }, 60)).ids.map((id) => id !== undefined), [true])
    t.strictSame((await store.commit({ inserts: [command({ deviceId: 'fresh' })], updates: [], maxPending: max }, 60)).ids.length, 1)
    t.strictSame((await store.expireCommands(ids as number[], 100)).map((r) => r.id), [ids[0], ids[1]])
    t.equal((await store.countPending('dev', 100, undefined, 100)).count, 3)
  })

  t.test('expireCommands and claimExpired on two stores: each command goes to one caller once', async (t) => {
    const schema = fixture.schema()
    const a = open(schema)
    const b = open(schema)
    const heard: number[] = []
    b.shared?.bus.subscribe((event) => { if (event.type === 'expire') heard.push(event.record.id) })
    await b.shared?.bus.ready
    await a.saveDevice(device({ id: 'dev' }))
    await a.saveDevice(device({ id: 'dev2' }))
    const inserts = Array.from({ length: 300 }, (_, i) => command({ deviceId: i % 2 === 0 ? 'dev' : 'dev2', expiresAt: 10 + (i % 7), updated: i % 10 === 0 }))
    const { ids } = await a.commit(batch(inserts), 0)
    const all = ids as number[]
    const got: number[] = []
    const expire = async (store: Store, from: number): Promise<void> => {
      for (let i = from; i < all.length; i += 25) got.push(...(await store.expireCommands(all.slice(i, i + 50), 100)).map((r) => r.id))
    }
    const claim = async (store: Store): Promise<void> => {
      for (;;) {
        const claimed = await store.shared?.claimExpired(100, 20) as CommandRecord[]
        got.push(...claimed.map((r) => r.id))
        if (claimed.length === 0) return
      }
    }
    await Promise.all([expire(a, 0), expire(b, 10), claim(a), claim(b), claim(a)])
    t.equal(got.length, all.length, 'every command was returned once')
    t.strictSame([...new Set(got)].sort((x, y) => x - y), all)
    const pending = all.filter((_, i) => i % 10 !== 0)
    await until(() => heard.length >= pending.length, 'the expire events')
    t.strictSame([...heard].sort((x, y) => x - y), pending, 'one expire event per never-updated command')
    t.equal((await a.countPending('dev', 0, undefined, 1000)).count, 0)
    const { rows } = await admin.query(`SELECT sum(count)::int AS n FROM "${schema}".pending`)
    t.equal(rows[0].n, 0, 'the pending counts are back to zero')
    t.strictSame(await b.shared?.claimExpired(100, 10), [], 'nothing left')
  })

  t.test('an expiry of a command whose device is gone publishes nothing', async (t) => {
    const schema = fixture.schema()
    const store = open(schema)
    const events: BusEvent[] = []
    store.shared?.bus.subscribe((event) => { events.push(event) })
    await store.shared?.bus.ready
    await store.saveDevice(device({ id: 'dev' }))
    const { ids } = await store.commit(batch([command({ expiresAt: 5 }), command({ expiresAt: 5 })]), 0)
    t.equal(await store.deleteDevice('dev'), true)
    t.equal(await store.deleteDevice('dev'), false, 'once')
    const { rows } = await admin.query(`SELECT count FROM "${schema}".pending WHERE device_id = 'dev'`)
    t.equal(rows[0].count, 0, 'the pending count is reset with the device')
    t.equal((await store.expireCommands(ids as number[], 10)).length, 2)
    await store.saveDevice(device({ id: 'marker' }))
    await store.commit(batch([command({ deviceId: 'marker' })]), 0)
    await until(() => events.some((e) => e.type === 'insert' && e.record.deviceId === 'marker'), 'the marker')
    t.strictSame(events.map((e) => e.type), ['insert', 'insert', 'device-deleted', 'insert'])
    t.equal(await store.deleteCommands('dev', 10), 0)
  })

  t.test('deleteCommands deletes at most limit, and keeps the pending count', async (t) => {
    const schema = fixture.schema()
    const store = open(schema)
    await store.commit(batch([command(), command(), command({ updated: true }), command(), command({ deviceId: 'keep' })]), 0)
    t.equal(await store.deleteCommands('dev', 2), 2, 'the first two, both pending')
    t.equal((await store.countPending('dev', 0, undefined, 100)).count, 1)
    const count = async (): Promise<number> => (await admin.query(`SELECT count FROM "${schema}".pending WHERE device_id = 'dev'`)).rows[0].count
    t.equal(await count(), 1)
    t.equal(await store.deleteCommands('dev', 10), 2)
    t.equal(await count(), 0)
    t.equal(await store.deleteCommands('dev', 10), 0)
    t.equal((await store.countPending('keep', 0, undefined, 100)).count, 1)
  })

  t.test('a device saved or deleted on one store is seen on another at once', async (t) => {
    const schema = fixture.schema()
    const a = open(schema)
    const b = open(schema)
    t.equal(await b.getDevice('dev'), undefined)
    await a.saveDevice(device({ id: 'dev', networkId: 1 }))
    t.equal((await b.getDevice('dev'))?.networkId, 1)
    await a.saveDevice(device({ id: 'dev', networkId: 2, data: '{"a":1}', isBlocked: true }))
    t.strictSame(await b.getDevice('dev'), device({ id: 'dev', networkId: 2, data: '{"a":1}', isBlocked: true }))
    await b.deleteDevice('dev')
    t.equal(await a.getDevice('dev'), undefined)
  })

  t.test('reads: scans, sorts, counts and recovery steps', async (t) => {
    const store = open()
    await store.saveDevice(device({ id: 'dev', networkId: 1, deviceTypeId: 2 }))
    const { ids } = await store.commit(batch([
      command({ timestamp: 10, command: 'b', status: 'x' }),
      command({ timestamp: 20, command: 'a', expiresAt: 50 }),
      command({ timestamp: 30, command: 'c', status: 'y', updated: true, lastUpdated: 40 })
    ]), 0)
    const [i10, i20, i30] = ids as [number, number, number]
    await store.saveDevice(device({ id: 'tie' }))
    const tied = (await store.commit(batch([command({ deviceId: 'tie', timestamp: 10 }), command({ deviceId: 'tie', timestamp: 10 })]), 0)).ids as number[]
    for (const order of ['ASC', 'DESC'] as const) {
      const { rows } = await store.scanCommands({ deviceId: 'tie', order, examine: 10, take: 10 }, 0)
      const expected = [...tied]
      t.strictSame(rows.map((r) => r.id), order === 'ASC' ? expected : expected.reverse(), `ties on timestamp go by id, ${order}`)
    }
    t.strictSame(await store.scanCommands({ deviceId: 'tie', order: 'ASC', examine: 10, take: 1 }, 0),
      { rows: [await store.getCommand(tied[0] as number, 0)], next: { timestamp: 10, id: tied[0] } }, 'take reached: next is the last row')
    const scan = async (fields: object, now = 0): Promise<unknown> => await store.scanCommands({ order: 'ASC', examine: 10, take: 10, ...fields }, now)
    t.strictSame(((await scan({ deviceId: 'dev', networkIds: [1], deviceTypeIds: [2], names: ['a', 'b'] })) as { rows: CommandRecord[] }).rows.map((r) => r.id), [i10, i20])
    t.strictSame(await scan({ deviceId: 'dev', examine: 2, take: 10, command: 'c' }), { rows: [], next: { timestamp: 20, id: i20 } }, 'a step that finds nothing says where to go on')
    t.strictSame(((await scan({ order: 'DESC', examine: 2, take: 10, status: 'y', updatedAfter: 39 })) as { rows: CommandRecord[], next: unknown }).next,
      { timestamp: 20, id: i20 })
    t.strictSame(((await scan({ order: 'DESC', before: 30, after: 10 }, 50)) as { rows: CommandRecord[] }).rows, [], 'expired')
    t.strictSame((await store.sortCommands({ deviceId: 'dev', sortField: 'command', sortOrder: 'DESC', take: 2, skip: 1 }, 0, 3))?.map((r) => r.id), [i10, i20])
    t.equal(await store.sortCommands({ deviceId: 'dev', sortField: 'status', sortOrder: 'ASC', take: 2, skip: 0 }, 0, 2), undefined)
    t.strictSame(await store.sortCommands({ deviceId: 'dev', sortField: 'status', sortOrder: 'ASC', take: 2, skip: 0, status: 'none' }, 0, 3), [])
    t.strictSame(await store.countPending('dev', 0, { timestamp: 10, id: i10 }, 1), { count: 1, next: { timestamp: 20, id: i20 } })
    t.strictSame(await store.countPending('nobody', 0, undefined, 1), { count: 0, next: undefined })
    t.strictSame(await store.expiringCommands(0, i30, 2), { entries: [[i20, 50]], next: i20 })
    t.strictSame(await store.expiringCommands(i20, i30, 2), { entries: [], next: undefined })
    t.strictSame(await store.expireCommands([], 100), [])
    t.strictSame(await store.commit(batch([], []), 0), { ids: [], before: [] })
  })

  t.test('a failed statement rolls the batch back; a connection whose ROLLBACK fails is discarded', async (t) => {
    const { pool } = spied((text) => text.includes('nextval') ? new Error('injected: nextval') : undefined)
    const store = open(fixture.schema(), pool)
    await t.rejects(async () => await store.commit(batch([command()]), 0), { message: 'injected: nextval' }, 'an error of pg propagates as it is')
    t.equal(await store.lastCommandId(), 0)

    const broken = spied((text) => text === 'ROLLBACK' || text.includes('pg_notify') ? new Error(`injected: ${text.slice(0, 9)}`) : undefined)
    const brokenStore = open(fixture.schema(), broken.pool)
    await brokenStore.saveDevice(device({ id: 'dev' }))
    const before = broken.pool.totalCount
    await t.rejects(async () => await brokenStore.commit(batch([command()]), 0), { message: 'injected: WITH e AS' })
    t.equal(broken.pool.totalCount, before - 1, 'the connection was dropped')
    t.equal(await brokenStore.lastCommandId(), 1, 'the store goes on with another connection')
    t.equal(await brokenStore.getCommand(1, 0), undefined, 'nothing was written')
  })

  t.test('device reads asked for together are one statement, and fail together', async (t) => {
    const pool = fixture.pool()
    const store = open(fixture.schema(), pool)
    await store.saveDevice(device({ id: 'dev' }))
    const [a, b, none] = await Promise.all([store.getDevice('dev'), store.getDevice('dev'), store.getDevice('other')])
    t.equal(a?.id, 'dev')
    t.not(a, b, 'each caller its own copy')
    t.strictSame(a, b)
    t.equal(none, undefined)
    await pool.end()
    const failed = await Promise.allSettled([store.getDevice('dev'), store.getDevice('other')])
    t.strictSame(failed.map((result) => result.status), ['rejected', 'rejected'], 'every call of a failed read rejects')
  })

  t.test('device reads asked for while one is under way are made by one statement once it is answered', async (t) => {
    const pool = fixture.pool()
    const store = open(fixture.schema(), pool)
    await store.saveDevice(device({ id: 'dev' }))
    await store.saveDevice(device({ id: 'two' }))
    // The first device read waits at the pool until the second has been asked for: no
    // dependence on how long a round trip takes.
    const query = pool.query.bind(pool) as (...args: unknown[]) => Promise<unknown>
    let release!: () => void
    const gate = new Promise<void>((resolve) => { release = resolve })
    let reads = 0
    pool.query = (async (...args: unknown[]) => {
      if (reads++ === 0) await gate
      return await query(...args)
    }) as unknown as typeof pool.query
    t.teardown(() => { pool.query = query as unknown as typeof pool.query })
    const first = store.getDevice('dev')
    await until(() => reads === 1, 'the first read to reach the pool')
    const second = [store.getDevice('two'), store.getDevice('none')]
    await new Promise((resolve) => setImmediate(resolve))
    t.equal(reads, 1, 'asked for while the first is under way: not read yet')
    release()
    t.equal((await first)?.id, 'dev')
    const [two, none] = await Promise.all(second)
    t.equal(two?.id, 'two')
    t.equal(none, undefined)
    t.equal(reads, 2, 'both answered by one more statement')
  })

  t.test('close is idempotent, ends its own pool only, and every method fails after it', async (t) => {
    const own = postgresStore({ schema: fixture.schema() })
    await own.lastCommandId()
    const closing = own.close()
    t.equal(own.close(), closing, 'a second close is the first')
    await closing
    const calls: Array<[string, () => Promise<unknown>]> = [
      ['getDevice', async () => await own.getDevice('dev')],
      ['saveDevice', async () => { await own.saveDevice(device({ id: 'dev' })) }],
      ['deleteDevice', async () => await own.deleteDevice('dev')],
      ['deleteCommands', async () => await own.deleteCommands('dev', 1)],
      ['commit', async () => await own.commit(batch([command()]), 0)],
      ['getCommand', async () => await own.getCommand(1, 0)],
      ['expireCommands', async () => await own.expireCommands([1], 0)],
      ['claimExpired', async () => await own.shared?.claimExpired(0, 1)],
      ['scanCommands', async () => await own.scanCommands({ order: 'ASC', examine: 1, take: 1 }, 0)],
      ['sortCommands', async () => await own.sortCommands({ deviceId: 'dev', sortField: 'command', sortOrder: 'ASC', take: 1, skip: 0 }, 0, 1)],
      ['countPending', async () => await own.countPending('dev', 0, undefined, 1)],
      ['expiringCommands', async () => await own.expiringCommands(0, 1, 1)],
      ['lastCommandId', async () => await own.lastCommandId()]
    ]
    for (const [name, call] of calls) await t.rejects(call(), { name: 'BrokerError', code: 'ERR_CLOSED' }, name)

    const pool = fixture.pool()
    const borrowed = postgresStore({ schema: fixture.schema(), pool })
    await borrowed.lastCommandId()
    await borrowed.close()
    t.equal((await pool.query('SELECT 1 AS one')).rows[0].one, 1, 'a pool passed in stays open')

    const early = postgresStore({ schema: fixture.schema() })
    await early.close()
    await t.rejects(early.shared?.bus.ready as Promise<void>, { code: 'ERR_CLOSED' }, 'closed before its bus listened')
  })

  t.test('with no options it reads DATABASE_URL, else the PG* variables', async (t) => {
    const saved = process.env.DATABASE_URL
    t.teardown(() => { if (saved === undefined) delete process.env.DATABASE_URL; else process.env.DATABASE_URL = saved })
    const schema = fixture.schema()
    process.env.DATABASE_URL = 'postgres://nobody@127.0.0.1:1/none'
    const wrong = postgresStore({ schema })
    await t.rejects(async () => await wrong.lastCommandId(), /ECONNREFUSED|connect/, 'DATABASE_URL is used')
    await wrong.close()
    delete process.env.DATABASE_URL
    const store = postgresStore()
    stores.push(store)
    t.type(await store.lastCommandId(), 'number', 'the default schema, on the PG* server')
    await admin.query('DROP SCHEMA IF EXISTS command_broker CASCADE')
  })

  t.test('options are checked', async (t) => {
    const pool = fixture.pool()
    const cases: Array<[unknown, typeof TypeError, string]> = [
      [null, TypeError, 'postgresStore: options must be an object, received null'],
      ['postgres://x', TypeError, 'postgresStore: options must be an object, received string "postgres://x"'],
      [{ connectionString: 5 }, TypeError, 'postgresStore: options.connectionString must be a string, received number 5'],
      [{ pool: {} }, TypeError, 'postgresStore: options.pool must be a pg Pool, received Object'],
      [{ pool, connectionString: 'postgres://x' }, TypeError, 'postgresStore: options.pool and options.connectionString exclude each other, received both'],
      [{ schema: 7 }, TypeError, 'postgresStore: options.schema must be a string, received number 7'],
      [{ schema: 'Upper' }, RangeError, 'postgresStore: options.schema must be a lowercase identifier of 1 to 56 characters (a-z, 0-9, _; not starting with a digit or pg_), received string "Upper"'],
      [{ schema: '' }, RangeError, /received string ""/ as unknown as string],
      [{ schema: '1abc' }, RangeError, /received string "1abc"/ as unknown as string],
      [{ schema: 'pg_catalog' }, RangeError, /received string "pg_catalog"/ as unknown as string],
      [{ schema: 'a"; DROP' }, RangeError, /received string "a\\"; DROP"/ as unknown as string],
      [{ schema: 'a'.repeat(57) }, RangeError, /lowercase identifier/ as unknown as string]
    ]
    for (const [options, type, message] of cases) {
      expectError(t, () => postgresStore(options as never), type, message, JSON.stringify(options === null ? null : Object.keys(options as object)))
    }
    const longest = postgresStore({ schema: 'a'.repeat(56), pool })
    t.equal(await longest.lastCommandId(), 0, 'the longest name works, its channel too')
    await longest.shared?.bus.ready
    await longest.close()
    await admin.query(`DROP SCHEMA "${'a'.repeat(56)}" CASCADE`)
  })
}
