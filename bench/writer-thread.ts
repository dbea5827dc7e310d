// Scenario: the writer thread (issue 11, item 4, "use the second core"). Burst inserts, 1,000 in
// flight, through the broker on sqliteStore (everything on the main thread) and on the
// prototype sqliteThreadStore of ./writer-thread-store.ts (SQLite's writes on a worker thread,
// reads on the main thread), against raw single-threaded better-sqlite3 doing the same inserts in
// batches of 1,000 (insert-throughput's limit): alternating, in rounds, medians. For each broker
// side also the CPU the main thread spends per command (its own scheduler statistics), the CPU
// of the whole process, what postMessage (cloning the batches) costs the main thread, and the
// writes per group commit. Then the longest event-loop block while the broker expires many
// commands that all fall due at once, on both. `--rounds N` (default 3).
//
// Why the thread store is not in lib/ (what this measures): it takes ~60% of the main thread's
// CPU off it, but the broker's group commit keeps one flush in flight and settles a flush's
// requests only once it has committed; with requests that wait for their reply (a closed loop,
// as here), every request in flight is in the flush the thread is committing, so the two
// threads take turns instead of overlapping (writes per commit = everything in flight). The sum
// of the two threads' CPU is the single thread's plus the crossing, so the rate stays near
// sqliteStore's. Overlap needs a second flush in flight (the store answers in order, so it would
// be safe) and flushes cut at writeBatch; on a 2-core machine that other processes load, the
// second core is not there to take it either.
import { openSync, readSync } from 'node:fs'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import Database from 'better-sqlite3'
import { createBroker, signToken, sqliteStore, type Store } from '../lib/index.js'
import { crossing, sqliteThreadStore } from './writer-thread-store.js'
import { benchClock, check, pool, probeTurns, quick, rawSqlite, runQueueWait, Scenario, seconds, SECRET, tempDir } from './common.js'

const TOTAL = quick ? 2000 : 200_000
const IN_FLIGHT = quick ? 100 : 1000
const SESSIONS = quick ? 10 : 100
const DEVICES = quick ? 10 : 1000
const ROUNDS = (() => {
  const i = process.argv.indexOf('--rounds')
  return i === -1 ? (quick ? 1 : 3) : Number(process.argv[i + 1])
})()
const EXPIRE = quick ? 5000 : 200_000
const START = Date.parse('2026-01-01T00:00:00.000Z')
const token = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'], e: Date.now() + 86_400_000 }, { secret: SECRET })
const dir = tempDir()
let files = 0
const file = (): string => join(dir, `db-${files++}.sqlite`)

const messages = Array.from({ length: TOTAL }, (_, i) => ({
  action: 'command/insert',
  requestId: i,
  deviceId: `dev-${i % DEVICES}`,
  command: { command: 'set', parameters: { level: i % 100 }, lifetime: 3600 }
}))

function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)] as number
}

// The main thread's CPU time so far, ms (Linux: /proc/thread-self/schedstat); NaN elsewhere.
const schedstat = ((): number | undefined => {
  try {
    return openSync('/proc/thread-self/schedstat', 'r')
  } catch {
    return undefined
  }
})()
const buffer = Buffer.alloc(128)
function mainCpu (): number {
  if (schedstat === undefined) return NaN
  const length = readSync(schedstat, buffer, 0, buffer.length, 0)
  return Number(buffer.toString('latin1', 0, length).split(' ')[0]) / 1e6
}
function processCpu (): number {
  const { user, system } = process.cpuUsage()
  return (user + system) / 1000
}

interface Run {
  rate: number
  /** Main-thread CPU in postMessage per command (cloning the batches), µs; 0 for sqliteStore. */
  clone: number
  /** Main thread CPU per command, µs. */
  main: number
  /** Whole process CPU per command, µs. */
  all: number
  /** Writes per group commit. */
  batch: number
  /** Share of the run the main thread was on a CPU, and waited for one (others had them). */
  busy: number
  waited: number
}

async function broker (store: Store): Promise<Run> {
  const broker = createBroker(store, { secret: SECRET })
  for (let d = 0; d < DEVICES; d++) {
    await broker.handle({ action: 'device/save', deviceId: `dev-${d}`, device: { name: `dev-${d}`, networkId: 1, deviceTypeId: 1 } }, token)
  }
  const sessions = Array.from({ length: SESSIONS }, () => broker.session(() => {}))
  for (const session of sessions) await session.handle({ action: 'authenticate', token })
  let ok = 0
  const main0 = mainCpu()
  const all0 = processCpu()
  const clone0 = crossing.ms
  const wait0 = runQueueWait()
  const elapsed = await seconds(() => pool(TOTAL, IN_FLIGHT, async (i) => {
    const reply = await (sessions[i % SESSIONS] as typeof sessions[number]).handle(messages[i] as Record<string, unknown>)
    if (reply.status === 'success') ok++
  }))
  const main = (mainCpu() - main0) * 1000 / TOTAL
  const all = (processCpu() - all0) * 1000 / TOTAL
  const clone = (crossing.ms - clone0) * 1000 / TOTAL
  const busy = (mainCpu() - main0) / (elapsed * 1000)
  const waited = (runQueueWait() - wait0) / (elapsed * 1000)
  check(ok === TOTAL, `broker: ${ok} of ${TOTAL} inserts succeeded`)
  check(await store.lastCommandId() === TOTAL, 'broker: every insert stored')
  const { commits } = await broker.stats()
  await broker.close()
  return { rate: TOTAL / elapsed, main, all, clone, batch: commits.writes / commits.count, busy, waited }
}

function countRows (path: string): number {
  const db = new Database(path, { readonly: true })
  try {
    return db.prepare('SELECT count(*) FROM commands').pluck().get() as number
  } finally {
    db.close()
  }
}

// insert-throughput's limit: the same rows, transactions of 1,000, nothing else.
async function limit (): Promise<number> {
  const path = file()
  const raw = await rawSqlite(path)
  const { db, insert } = raw
  const now = Date.now()
  const rows = Array.from({ length: TOTAL }, (_, i) => [i + 1, `dev-${i % DEVICES}`, 'set', now, now, 1, 1, 1, JSON.stringify({ level: i % 100 }), 3600, null, null, now + 3_600_000, 0])
  const batch = db.transaction((from: number, to: number) => {
    for (let i = from; i < to; i++) insert.run(rows[i])
  })
  const start = performance.now()
  for (let i = 0; i < TOTAL; i += 1000) batch(i, Math.min(TOTAL, i + 1000))
  const elapsed = (performance.now() - start) / 1000
  await raw.close()
  check(countRows(path) === TOTAL, 'limit: every row stored')
  return TOTAL / elapsed
}

// Inserts EXPIRE commands, jumps the clock past their lifetimes and waits for every expiry,
// probing the event loop all along: the longest block, ms (less the time other processes
// kept the thread off the CPU).
async function expireAll (store: Store): Promise<{ longest: number, rate: number }> {
  const clock = benchClock(START)
  const broker = createBroker(store, { secret: SECRET, clock, maxPendingPerDevice: EXPIRE })
  for (let d = 0; d < DEVICES; d++) {
    await broker.handle({ action: 'device/save', deviceId: `dev-${d}`, device: { name: `dev-${d}`, networkId: 1 } }, token)
  }
  await pool(EXPIRE, 1000, async (i) => {
    await broker.handle({ action: 'command/insert', deviceId: `dev-${i % DEVICES}`, command: { command: 'set', parameters: { i }, lifetime: 1 + (i % 60) } }, token)
  })
  let expired = 0
  broker.on('expired', () => { expired++ })
  const start = performance.now()
  const probe = probeTurns()
  clock.advance(3_600_000)
  const stop = clock.follow()
  while (expired < EXPIRE) await new Promise(setImmediate)
  stop()
  const blocks = probe.stop()
  const elapsed = (performance.now() - start) / 1000
  await broker.close()
  return { longest: blocks.longest, rate: EXPIRE / elapsed }
}

const scenario = new Scenario('writer thread')
const direct: Run[] = []
const threaded: Run[] = []
const limits: number[] = []
for (let round = 0; round < ROUNDS; round++) {
  direct.push(await broker(sqliteStore(file(), { synchronous: 'normal' })))
  threaded.push(await broker(await sqliteThreadStore(file(), { synchronous: 'normal' })))
  limits.push(await limit())
}
const pick = (runs: Run[], key: keyof Run): number => median(runs.map((r) => r[key]))
const rawRate = scenario.figure('limit: raw better-sqlite3, one thread, batches of 1000', median(limits), 'rows/s')
const directRate = scenario.figure('broker, sqliteStore', pick(direct, 'rate'), 'inserts/s')
const threadRate = scenario.figure('broker, sqliteThreadStore', pick(threaded, 'rate'), 'inserts/s')
scenario.figure('sqliteStore: main-thread CPU per insert', pick(direct, 'main'), 'µs')
scenario.figure('sqliteThreadStore: main-thread CPU per insert', pick(threaded, 'main'), 'µs')
scenario.figure('sqliteThreadStore: of which postMessage (clone) per insert', pick(threaded, 'clone'), 'µs')
scenario.figure('sqliteStore: process CPU per insert', pick(direct, 'all'), 'µs')
scenario.figure('sqliteThreadStore: process CPU per insert', pick(threaded, 'all'), 'µs')
scenario.figure('sqliteStore: main thread on a CPU, share of the run', pick(direct, 'busy'), 'ratio')
scenario.figure('sqliteStore: main thread waiting for a CPU, share of the run', pick(direct, 'waited'), 'ratio')
scenario.figure('sqliteThreadStore: main thread on a CPU, share of the run', pick(threaded, 'busy'), 'ratio')
scenario.figure('sqliteThreadStore: main thread waiting for a CPU, share of the run', pick(threaded, 'waited'), 'ratio')
scenario.figure('sqliteThreadStore: writes per group commit', pick(threaded, 'batch'), 'writes')
scenario.figure('thread / sqliteStore', threadRate / directRate, 'ratio')
scenario.figure('thread / limit', threadRate / rawRate, 'ratio')
scenario.figure('sqliteStore / limit', directRate / rawRate, 'ratio')
const directExpiry = await expireAll(sqliteStore(file(), { synchronous: 'normal' }))
const threadExpiry = await expireAll(await sqliteThreadStore(file(), { synchronous: 'normal' }))
scenario.figure(`sqliteStore: longest block expiring ${EXPIRE} at once`, directExpiry.longest, 'ms')
scenario.figure(`sqliteThreadStore: longest block expiring ${EXPIRE} at once`, threadExpiry.longest, 'ms')
scenario.figure('sqliteStore: expiry rate', directExpiry.rate, 'commands/s')
scenario.figure('sqliteThreadStore: expiry rate', threadExpiry.rate, 'commands/s')
scenario.goal('broker on the writer thread reaches the single-threaded raw limit', threadRate / rawRate, 'min', 1)
scenario.goal('no block over 20 ms expiring many at once, writer thread', threadExpiry.longest, 'max', 20)
scenario.note(`${TOTAL} inserts, ${IN_FLIGHT} in flight from ${SESSIONS} sessions over ${DEVICES} devices; synchronous=NORMAL`)
scenario.note('sqliteThreadStore is a prototype in bench/ (./writer-thread-store.ts), measured here for issue 11 item 4; see the header of bench/writer-thread.ts')
scenario.note(`the three sides alternate ${ROUNDS} times; medians. Rounds: sqliteStore ${direct.map((r) => Math.round(r.rate)).join(', ')}; ` +
  `thread ${threaded.map((r) => Math.round(r.rate)).join(', ')}; limit ${limits.map(Math.round).join(', ')}`)
scenario.done()
