// Scenario 5: open a SQLite file holding 1,000,000 pending commands; time until the broker
// answers its first insert, against the time to SELECT count(*) that table.
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import Database from 'better-sqlite3'
import { createBroker, signToken, sqliteStore } from '../lib/index.js'
import { check, quick, Scenario, SECRET, tempDir } from './common.js'

const PENDING = quick ? 10_000 : 1_000_000
const DEVICES = 1000
const file = join(tempDir(), 'restart.db')

// Build the file: the store's schema, then rows written raw (fast), all pending for an hour.
await sqliteStore(file, { synchronous: 'normal' }).close()
{
  const db = new Database(file)
  db.pragma('journal_mode = WAL')
  db.pragma('synchronous = OFF')
  const now = Date.now()
  const device = db.prepare('INSERT INTO devices (id, name, data, network_id, device_type_id, is_blocked) VALUES (?, ?, NULL, 1, 1, 0)')
  const insert = db.prepare(`INSERT INTO commands (id, device_id, command, timestamp, last_updated, user_id, network_id,
    device_type_id, parameters, lifetime, status, result, expires_at, updated) VALUES (?, ?, 'set', ?, ?, 1, 1, 1, '{}', 3600, NULL, NULL, ?, 0)`)
  db.transaction(() => {
    for (let d = 0; d < DEVICES; d++) device.run(`dev-${d}`, `dev-${d}`)
    for (let i = 1; i <= PENDING; i++) insert.run(i, `dev-${i % DEVICES}`, now, now, now + 600_000 + (i % 3_000_000))
  })()
  db.pragma('wal_checkpoint(TRUNCATE)')
  db.close()
}

function count (): number {
  const start = performance.now()
  const db = new Database(file, { readonly: true })
  const rows = db.prepare('SELECT count(*) FROM commands').pluck().get() as number
  db.close()
  check(rows === PENDING, `restart: count(*) saw ${rows}`)
  return performance.now() - start
}

count() // the file is in the OS cache for both measurements
const counted = count()

const token = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'], e: Date.now() + 3_600_000 }, { secret: SECRET })
const start = performance.now()
const broker = createBroker(sqliteStore(file, { synchronous: 'normal' }), { secret: SECRET })
const reply = await broker.handle({ action: 'command/insert', deviceId: 'dev-1', command: { command: 'first', lifetime: 60 } }, token)
const firstInsert = performance.now() - start
check(reply.status === 'success', `restart: first insert answered ${JSON.stringify(reply)}`)
const report = await broker.ready
const recovered = performance.now() - start
check(report.rearmed === PENDING && report.expired === 0, `restart: recovery re-armed ${report.rearmed} of ${PENDING}`)
await broker.close()

const scenario = new Scenario('restart')
scenario.figure('SELECT count(*) on a fresh connection', counted, 'ms')
scenario.figure('createBroker() to its first insert answered', firstInsert, 'ms')
scenario.figure('first insert / count(*)', firstInsert / counted, 'ratio')
scenario.figure('until every pending command is re-armed (ready)', recovered, 'ms')
scenario.note(`${PENDING} pending commands in the file; recovery re-arms them in pages of expiryBatch (1000) per event-loop turn while requests are served`)
scenario.done()
