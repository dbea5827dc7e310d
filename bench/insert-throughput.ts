// Scenario 1: insert throughput with 1,000 inserts in flight from many sessions, against
// SQLite's own limit (raw batched inserts) and against what users write without us.
import { EventEmitter } from 'node:events'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { createVerifier } from 'fast-jwt'
import { z } from 'zod'
import { createBroker, deriveKey, memoryStore, signToken, sqliteStore, type Store } from '../lib/index.js'
import { check, pool, quick, rawSqlite, Scenario, seconds, SECRET, tempDir } from './common.js'

const TOTAL = quick ? 2000 : 200_000
const IN_FLIGHT = quick ? 100 : 1000
const SESSIONS = quick ? 10 : 100
const DEVICES = quick ? 10 : 1000
const SEQUENTIAL = quick ? 500 : 20_000
// Broker and limit alternate this many times; each figure is the median of its rounds.
const ROUNDS = quick ? 1 : 3
const token = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'], e: Date.now() + 3_600_000 }, { secret: SECRET })
const dir = tempDir()
let files = 0
const file = (): string => join(dir, `db-${files++}.sqlite`)

// Every peer gets its input built before the clock starts, as the limit gets its rows.
const messages = Array.from({ length: TOTAL }, (_, i) => ({
  action: 'command/insert',
  requestId: i,
  deviceId: `dev-${i % DEVICES}`,
  command: { command: 'set', parameters: { level: i % 100 }, lifetime: 3600 }
}))
const message = (i: number): Record<string, unknown> => messages[i] as Record<string, unknown>

function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)] as number
}

function countRows (path: string): number {
  const db = new Database(path, { readonly: true })
  try {
    return db.prepare('SELECT count(*) FROM commands').pluck().get() as number
  } finally {
    db.close()
  }
}

// The broker through handle(), sessions authenticated once, `inFlight` requests at a time.
async function broker (store: Store, total: number, inFlight: number): Promise<number> {
  const broker = createBroker(store, { secret: SECRET })
  for (let d = 0; d < DEVICES; d++) {
    await broker.handle({ action: 'device/save', deviceId: `dev-${d}`, device: { name: `dev-${d}`, networkId: 1, deviceTypeId: 1 } }, token)
  }
  const sessions = Array.from({ length: Math.min(SESSIONS, inFlight) }, () => broker.session(() => {}))
  for (const session of sessions) await session.handle({ action: 'authenticate', token })
  let ok = 0
  const elapsed = await seconds(() => pool(total, inFlight, async (i) => {
    const reply = await (sessions[i % sessions.length] as typeof sessions[number]).handle(message(i))
    if (reply.status === 'success') ok++
  }))
  check(ok === total, `broker: ${ok} of ${total} inserts succeeded`)
  check(store.lastCommandId() === total, 'broker: every insert stored')
  await broker.close()
  return total / elapsed
}

// SQLite's limit: the same rows, the same table and indexes, transactions of 1,000, nothing
// else; and the same connection settings as the store, WAL checkpoints in a worker included.
async function limit (total: number): Promise<number> {
  const path = file()
  const raw = await rawSqlite(path)
  const { db, insert } = raw
  const now = Date.now()
  const rows = Array.from({ length: total }, (_, i) => [i + 1, `dev-${i % DEVICES}`, 'set', now, now, 1, 1, 1, JSON.stringify({ level: i % 100 }), 3600, null, null, now + 3_600_000, 0])
  const batch = db.transaction((from: number, to: number) => {
    for (let i = from; i < to; i++) insert.run(rows[i])
  })
  const start = performance.now()
  for (let i = 0; i < total; i += 1000) batch(i, Math.min(total, i + 1000))
  const elapsed = (performance.now() - start) / 1000
  await raw.close()
  check(countRows(path) === total, 'limit: every row stored')
  return total / elapsed
}

// What a user writes without us: zod, a fresh JWT verify per call, one autocommit INSERT per
// command, one setTimeout per command for its lifetime, an EventEmitter for fan-out; SQLite
// as better-sqlite3 opens it (WAL, NORMAL, its own autocheckpoint).
async function handRolled (total: number, inFlight: number): Promise<number> {
  const path = file()
  await sqliteStore(path, { synchronous: 'normal' }).close()
  const db = new Database(path)
  db.pragma('journal_mode = WAL')
  db.pragma('synchronous = NORMAL')
  const insert = db.prepare(`INSERT INTO commands (device_id, command, timestamp, last_updated, user_id, network_id,
    device_type_id, parameters, lifetime, status, result, expires_at, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)`)
  const remove = db.prepare('DELETE FROM commands WHERE id = ?')
  const verify = createVerifier({ key: deriveKey(SECRET), algorithms: ['HS256'] })
  const schema = z.object({
    action: z.literal('command/insert'),
    requestId: z.unknown(),
    deviceId: z.string(),
    command: z.object({
      command: z.string().min(1).max(128),
      parameters: z.unknown().optional(),
      lifetime: z.int().min(1).optional(),
      status: z.string().optional(),
      result: z.unknown().optional()
    })
  })
  const emitter = new EventEmitter()
  const timers: NodeJS.Timeout[] = []
  const handle = async (input: unknown, jwt: string): Promise<Record<string, unknown>> => {
    const claims = (verify(jwt) as { payload: { u: number, e: number } }).payload
    if (claims.e < Date.now()) return { status: 'error', code: 401 }
    const { requestId, deviceId, command } = schema.parse(input)
    const now = Date.now()
    const { lastInsertRowid } = insert.run(deviceId, command.command, now, now, claims.u, 1, 1,
      JSON.stringify(command.parameters ?? null), command.lifetime ?? null, null, null,
      command.lifetime === undefined ? null : now + command.lifetime * 1000)
    const id = Number(lastInsertRowid)
    if (command.lifetime !== undefined) timers.push(setTimeout(() => remove.run(id), command.lifetime * 1000).unref())
    emitter.emit(deviceId, { id, ...command })
    return { action: 'command/insert', requestId, status: 'success', command: { id, timestamp: new Date(now).toISOString().slice(0, 23), userId: claims.u } }
  }
  let ok = 0
  const elapsed = await seconds(() => pool(total, inFlight, async (i) => {
    const reply = await handle(message(i), token)
    if (reply.status === 'success') ok++
  }))
  for (const timer of timers) clearTimeout(timer)
  db.close()
  check(ok === total && countRows(path) === total, 'hand-rolled: every insert stored')
  return total / elapsed
}

const scenario = new Scenario('insert throughput')
const brokerRounds: number[] = []
const limitRounds: number[] = []
for (let round = 0; round < ROUNDS; round++) {
  brokerRounds.push(await broker(sqliteStore(file(), { synchronous: 'normal' }), TOTAL, IN_FLIGHT))
  limitRounds.push(await limit(TOTAL))
}
const brokerSqlite = scenario.figure('broker, SQLite (WAL, synchronous=NORMAL)', median(brokerRounds), 'inserts/s')
const raw = scenario.figure('limit: raw better-sqlite3, batches of 1000', median(limitRounds), 'rows/s')
const hand = scenario.figure('hand-rolled (see the note)', await handRolled(TOTAL, IN_FLIGHT), 'inserts/s')
scenario.figure('broker, memory store', await broker(memoryStore(), TOTAL, IN_FLIGHT), 'inserts/s')
const sequential = scenario.figure('broker, SQLite, one request in flight', await broker(sqliteStore(file(), { synchronous: 'normal' }), SEQUENTIAL, 1), 'inserts/s')
const handSequential = scenario.figure('hand-rolled, one request in flight', await handRolled(SEQUENTIAL, 1), 'inserts/s')
scenario.figure('broker (SQLite) / limit', brokerSqlite / raw, 'ratio')
scenario.figure('broker (SQLite) / hand-rolled', brokerSqlite / hand, 'ratio')
scenario.figure('broker / hand-rolled, one in flight', sequential / handSequential, 'ratio')
scenario.goal('broker reaches 0.8 of the SQLite limit', brokerSqlite / raw, 'min', 0.8)
scenario.goal('broker is 3x the hand-rolled version', brokerSqlite / hand, 'min', 3)
scenario.goal('one in flight is not slower than hand-rolled', sequential / handSequential, 'min', 1)
scenario.note(`${TOTAL} inserts, ${IN_FLIGHT} in flight from ${SESSIONS} sessions over ${DEVICES} devices, lifetime 3600 s, one token`)
scenario.note('hand-rolled: zod parse, a fresh JWT verify per call, one autocommit INSERT, one setTimeout per command, an EventEmitter')
scenario.note(`broker and limit alternate ${ROUNDS} times; medians. Rounds: broker ${brokerRounds.map(Math.round).join(', ')}; limit ${limitRounds.map(Math.round).join(', ')}`)
scenario.done()
