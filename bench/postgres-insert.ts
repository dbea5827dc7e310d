// Scenario: insert throughput through the broker on postgresStore, many requests in flight so
// that group commit forms large batches, against PostgreSQL's limit for the same rows: raw `pg`
// on one connection, one `INSERT ... SELECT FROM unnest(...)` of 1000 rows per statement
// (autocommit), into an identical table (a schema the store itself created). They alternate,
// each round on fresh schemas; the figures are the medians. Then one profiled broker run:
// statements per commit, rows per commit, and where the connection time goes, by statement;
// and the broker with a larger writeBatch.
import { performance } from 'node:perf_hooks'
import pg from 'pg'
import { createBroker, postgresStore, signToken } from '../lib/index.js'
import type { DeviceRecord, NewCommandRecord } from '../lib/store/store.js'
import { pool, quick, SECRET, seconds, type Scenario } from './common.js'
import { median, verify, withPostgres, type Postgres } from './pg.js'

const TOTAL = quick ? 2000 : 100_000
const IN_FLIGHT = quick ? 200 : 1000
const SESSIONS = quick ? 10 : 100
const DEVICES = quick ? 10 : 1000
const ROUNDS = quick ? 1 : 3
const BATCH = 1000
const token = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'], e: Date.now() + 3_600_000 }, { secret: SECRET })
let schemas = 0

// Every peer gets its input built before the clock starts.
const messages = Array.from({ length: TOTAL }, (_, i) => ({
  action: 'command/insert',
  requestId: i,
  deviceId: `dev-${i % DEVICES}`,
  command: { command: 'set', parameters: { level: i % 100 }, lifetime: 3600 }
}))

/** Where a profiled run's connection time went, by statement. */
interface Profile {
  calls: Map<string, { count: number, ms: number }>
  elapsed: number
}

// A pool whose connections time each statement, by the label of its prepared name
// ('command-broker:<label>:<hash>') or the first word of its text.
function ownPool (max: number, calls: Profile['calls'] | undefined): pg.Pool {
  const profiled = new pg.Pool({ connectionString: process.env.DATABASE_URL, max })
  profiled.on('error', () => {})
  if (calls !== undefined) profiled.on('connect', (client) => {
    const query = client.query.bind(client) as (...args: unknown[]) => unknown
    ;(client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
      const config = args[0] as string | { name?: string, text?: string }
      const label = typeof config === 'string'
        ? config.split(/\s/)[0] as string
        : config.name?.split(':')[1] ?? (config.text ?? '').trim().split(/\s/)[0] as string
      const start = performance.now()
      const record = (): void => {
        const entry = calls.get(label) ?? { count: 0, ms: 0 }
        entry.count++
        entry.ms += performance.now() - start
        calls.set(label, entry)
      }
      const last = args[args.length - 1]
      if (typeof last === 'function') {
        args[args.length - 1] = (...result: unknown[]) => { record(); return (last as (...a: unknown[]) => unknown)(...result) }
        return query(...args)
      }
      const result = query(...args) as Promise<unknown>
      return result.finally(record)
    }
  })
  return profiled
}

// The broker through sessions' handle(), `IN_FLIGHT` requests at a time, on a fresh schema.
// cachedDevices, a what-if: getDevice answers from a copy in memory, to show what the
// per-request device read costs (the store reads the database every time, by design).
async function broker (db: Postgres, options: { writeBatch?: number, profile?: Profile['calls'], poolSize?: number, cachedDevices?: boolean } = {}): Promise<number> {
  const schema = db.schema(`insert_${++schemas}`)
  const own = options.profile === undefined && options.poolSize === undefined ? undefined : ownPool(options.poolSize ?? 10, options.profile)
  const real = postgresStore(own === undefined ? { schema } : { schema, pool: own })
  const devices = new Map<string, DeviceRecord | undefined>()
  const store = options.cachedDevices !== true
    ? real
    : new Proxy(real, {
      get (target, key) {
        if (key === 'getDevice') return (id: string) => devices.has(id) ? devices.get(id) : target.getDevice(id)
        const value = Reflect.get(target, key) as unknown
        return typeof value === 'function' ? value.bind(target) : value
      }
    })
  const broker = createBroker(store, { secret: SECRET, ...(options.writeBatch === undefined ? {} : { writeBatch: options.writeBatch }) })
  await broker.ready
  for (let d = 0; d < DEVICES; d++) {
    const reply = await broker.handle({ action: 'device/save', deviceId: `dev-${d}`, device: { name: `dev-${d}`, networkId: 1, deviceTypeId: 1 } }, token)
    verify(reply.status === 'success', `device/save: ${JSON.stringify(reply)}`)
    if (options.cachedDevices === true) devices.set(`dev-${d}`, await real.getDevice(`dev-${d}`))
  }
  const sessions = Array.from({ length: SESSIONS }, () => broker.session(() => {}))
  for (const session of sessions) await session.handle({ action: 'authenticate', token })
  options.profile?.clear()
  let ok = 0
  const elapsed = await seconds(() => pool(TOTAL, IN_FLIGHT, async (i) => {
    const reply = await (sessions[i % SESSIONS] as typeof sessions[number]).handle(messages[i])
    if (reply.status === 'success') ok++
  }))
  await broker.close()
  await own?.end()
  verify(ok === TOTAL, `broker: ${ok} of ${TOTAL} inserts succeeded`)
  const { rows } = await db.admin.query(`SELECT count(*)::int AS n FROM "${schema}".commands`)
  verify(rows[0].n === TOTAL, `broker: ${String(rows[0].n)} rows stored, not ${TOTAL}`)
  await db.drop(schema)
  return TOTAL / elapsed
}

// The store's write path without the broker: postgresStore.commit() of batches of 1000, one
// after another (as the write queue runs them), on devices saved beforehand.
async function storeAlone (db: Postgres, calls: Profile['calls']): Promise<number> {
  const schema = db.schema(`insert_${++schemas}`)
  const own = ownPool(10, calls)
  const store = postgresStore({ schema, pool: own })
  try {
    for (let d = 0; d < DEVICES; d++) await store.saveDevice({ id: `dev-${d}`, name: `dev-${d}`, data: null, networkId: 1, deviceTypeId: 1, isBlocked: false })
    const now = Date.now()
    const batches: NewCommandRecord[][] = []
    for (let from = 0; from < TOTAL; from += BATCH) {
      batches.push(Array.from({ length: Math.min(BATCH, TOTAL - from) }, (_, k) => {
        const i = from + k
        return {
          command: 'set', timestamp: now, lastUpdated: now, userId: 1, deviceId: `dev-${i % DEVICES}`, networkId: 1, deviceTypeId: 1,
          parameters: JSON.stringify({ level: i % 100 }), lifetime: 3600, status: null, result: null, expiresAt: now + 3_600_000, updated: false
        }
      }))
    }
    let stored = 0
    calls.clear()
    const elapsed = await seconds(async () => {
      for (const inserts of batches) {
        const { ids } = await store.commit({ inserts, updates: [], maxPending: 10_000 }, Date.now())
        stored += ids.filter((id) => id !== undefined).length
      }
    })
    verify(stored === TOTAL, `store.commit: ${stored} of ${TOTAL} stored`)
    return TOTAL / elapsed
  } finally {
    await store.close()
    await own.end()
    await db.drop(schema)
  }
}

// PostgreSQL's limit: the same rows into a table the store created, 1000 a statement.
async function limit (db: Postgres): Promise<number> {
  const schema = db.schema(`insert_${++schemas}`)
  const store = postgresStore({ schema })
  await store.lastCommandId()
  await store.close()
  const now = Date.now()
  const batches: unknown[][][] = []
  for (let from = 0; from < TOTAL; from += BATCH) {
    const rows = Array.from({ length: Math.min(BATCH, TOTAL - from) }, (_, k) => {
      const i = from + k
      return [i + 1, `dev-${i % DEVICES}`, 'set', now, now, 1, 1, 1, JSON.stringify({ level: i % 100 }), 3600, null, null, now + 3_600_000, false]
    })
    batches.push(Array.from({ length: 14 }, (_, column) => rows.map((row) => row[column])))
  }
  const insert = {
    name: 'bench-limit',
    text: `INSERT INTO "${schema}".commands (id, device_id, command, timestamp, last_updated, user_id, network_id,
        device_type_id, parameters, lifetime, status, result, expires_at, updated)
      SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[],
        $8::bigint[], $9::text[], $10::bigint[], $11::text[], $12::text[], $13::bigint[], $14::boolean[])`
  }
  const client = new pg.Client({ connectionString: process.env.DATABASE_URL })
  await client.connect()
  let elapsed
  try {
    elapsed = await seconds(async () => {
      for (const values of batches) await client.query({ ...insert, values })
    })
  } finally {
    await client.end()
  }
  const { rows } = await db.admin.query(`SELECT count(*)::int AS n FROM "${schema}".commands`)
  verify(rows[0].n === TOTAL, `limit: ${String(rows[0].n)} rows stored, not ${TOTAL}`)
  await db.drop(schema)
  return TOTAL / elapsed
}

await withPostgres('postgres insert throughput', async (db: Postgres, scenario: Scenario) => {
  const brokerRounds: number[] = []
  const limitRounds: number[] = []
  for (let round = 0; round < ROUNDS; round++) {
    brokerRounds.push(await broker(db))
    limitRounds.push(await limit(db))
  }
  const rate = scenario.figure('broker, postgresStore', median(brokerRounds), 'inserts/s')
  const raw = scenario.figure('limit: raw pg, unnest batches of 1000', median(limitRounds), 'rows/s')
  scenario.figure('broker (PostgreSQL) / limit', rate / raw, 'ratio')
  scenario.goal('broker reaches 0.7 of the PostgreSQL limit', rate / raw, 'min', 0.7)

  // One profiled run: the statements each commit takes, and the time connections spend in each.
  const calls: Profile['calls'] = new Map()
  const start = performance.now()
  const profiledRate = await broker(db, { profile: calls })
  const wall = (performance.now() - start) / 1000
  const commits = calls.get('COMMIT')?.count ?? 0
  const inTransactions = [...calls].filter(([label]) => label !== 'get-devices').reduce((sum, [, entry]) => sum + entry.count, 0)
  scenario.figure('profiled broker run', profiledRate, 'inserts/s')
  scenario.figure('commits in the profiled run', commits, 'transactions')
  scenario.figure('rows per commit', TOTAL / Math.max(1, commits), 'rows')
  scenario.figure('statements per commit (BEGIN..COMMIT)', inTransactions / Math.max(1, commits), 'statements')
  scenario.figure('device read statements per insert', (calls.get('get-devices')?.count ?? 0) / TOTAL, 'reads')
  const busy = [...calls].sort((a, b) => b[1].ms - a[1].ms)
    .map(([label, { count, ms }]) => `${label} ${count}x ${(ms / count).toFixed(2)} ms`)
  scenario.note(`profiled run (${wall.toFixed(1)} s with set-up): statement, calls, mean time on its connection: ${busy.join('; ')}`)

  const bigger = quick ? BATCH : 5000
  scenario.figure(`broker, writeBatch ${bigger}`, await broker(db, { writeBatch: bigger }), 'inserts/s')
  scenario.figure('broker, a pool of 50 connections', await broker(db, { poolSize: 50 }), 'inserts/s')
  const aloneCalls: Profile['calls'] = new Map()
  const alone = await storeAlone(db, aloneCalls)
  scenario.figure('store.commit alone, sequential batches of 1000', alone, 'inserts/s')
  scenario.figure('store.commit alone / limit', alone / raw, 'ratio')
  const spent = [...aloneCalls.values()].reduce((sum, { ms }) => sum + ms, 0)
  const shares = [...aloneCalls].sort((a, b) => b[1].ms - a[1].ms)
    .map(([label, { count, ms }]) => `${label} ${(ms / count).toFixed(2)} ms (${Math.round(100 * ms / spent)}%)`)
  scenario.note(`store.commit alone, per commit of 1000 rows: ${shares.join('; ')}`)
  scenario.figure('what-if: broker with device reads served from memory', await broker(db, { cachedDevices: true }), 'inserts/s')
  scenario.note(`${TOTAL} inserts, ${IN_FLIGHT} in flight from ${SESSIONS} sessions over ${DEVICES} devices, lifetime 3600 s; the store's own pool (node-postgres default, 10 connections); fresh schemas each round`)
  scenario.note(`broker and limit alternate ${ROUNDS} times; medians. Rounds: broker ${brokerRounds.map(Math.round).join(', ')}; limit ${limitRounds.map(Math.round).join(', ')}`)
})
