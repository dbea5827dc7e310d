// Scenario 3: 1,000,000 pending commands with lifetimes spread over 1..3600 s: memory per
// pending command, the timer wheel's bytes per entry against one setTimeout per command,
// expiring them all when the clock jumps an hour (rate, and the longest event-loop block), and
// a start-up recovery that finds all 1,000,000 due (a restart after an outage). Both stores.
// Run with --expose-gc (bench/run.ts does).
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import {
  createBroker, manualClock, memoryStore, signToken, sqliteStore, TimerWheel,
  type Broker, type NewCommandRecord, type Store, type SyncStore
} from '../lib/index.js'
import { benchClock, check, type BenchClock, heapUsed, pool, probeTurns, quick, Scenario, SECRET, tempDir, type Blocks } from './common.js'

const N = quick ? 10_000 : 1_000_000
const DEVICES = 1000
const START = Date.parse('2026-01-01T00:00:00.000Z')
// Lifetimes 1..3600 s, spread evenly and reproducibly.
const lifetime = (i: number): number => 1 + ((i * 7919) % 3600)
const scenario = new Scenario('pending commands and expiry')

// The expiry structure alone: our wheel against one setTimeout per command.
{
  const clock = manualClock(START)
  const before = heapUsed()
  const wheel = new TimerWheel({ clock, onExpire: () => {} })
  for (let i = 0; i < N; i++) wheel.add(i + 1, START + lifetime(i) * 1000)
  const wheelBytes = (heapUsed() - before) / N
  check(wheel.size === N, 'wheel holds every entry')
  wheel.close()

  const timersBefore = heapUsed()
  const timers: NodeJS.Timeout[] = new Array(N)
  const noop = (): void => {}
  for (let i = 0; i < N; i++) timers[i] = setTimeout(noop, lifetime(i) * 1000).unref()
  const timerBytes = (heapUsed() - timersBefore) / N
  for (const timer of timers) clearTimeout(timer)
  scenario.figure('timer wheel, bytes per entry', wheelBytes, 'B')
  scenario.figure('one setTimeout per command, bytes per entry', timerBytes, 'B')
  scenario.figure('wheel / setTimeout', wheelBytes / timerBytes, 'ratio')
  scenario.goal('wheel under half of setTimeout per entry', wheelBytes / timerBytes, 'max', 0.5)
}

// The whole broker: heap per pending command (memory store), then expire them all (SQLite,
// the store a hub runs on, and memory).
async function fill (store: Store): Promise<{ broker: Broker, clock: BenchClock, heap: number }> {
  const clock = benchClock(START)
  const token = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'], e: START + 86_400_000 }, { secret: SECRET })
  const broker = createBroker(store, { secret: SECRET, clock, maxPendingPerDevice: N })
  for (let d = 0; d < DEVICES; d++) {
    await broker.handle({ action: 'device/save', deviceId: `dev-${d}`, device: { name: `dev-${d}`, networkId: 1 } }, token)
  }
  const before = heapUsed()
  let ok = 0
  await pool(N, 1000, async (i) => {
    const reply = await broker.handle({
      action: 'command/insert', deviceId: `dev-${i % DEVICES}`, command: { command: 'set', parameters: { i }, lifetime: lifetime(i) }
    }, token)
    if (reply.status === 'success') ok++
  })
  check(ok === N, `expiry: ${ok} of ${N} inserts succeeded`)
  return { broker, clock, heap: (heapUsed() - before) / N }
}

// Jumps the clock past every lifetime (an hour, as after the process was suspended) and waits
// for every expiry, probing the event loop all along.
async function expireAll (broker: Broker, clock: BenchClock): Promise<Blocks & { rate: number }> {
  let expired = 0
  broker.on('expired', () => { expired++ })
  heapUsed()
  const start = performance.now()
  const probe = probeTurns()
  clock.advance(3_600_000)
  const stop = clock.follow()
  while (expired < N) await new Promise(setImmediate)
  stop()
  const blocks = probe.stop()
  const elapsed = (performance.now() - start) / 1000
  check(expired === N, `expiry: ${expired} of ${N} reported`)
  await broker.close()
  return { ...blocks, rate: N / elapsed }
}

// N commands stored as a broker would have (through the store's own commit), then a broker
// started an hour later: its start-up recovery finds all of them due and expires them.
async function recoverAll (open: () => SyncStore, reopen: ((store: SyncStore) => Promise<SyncStore>) | undefined): Promise<Blocks & { rate: number }> {
  let store = open()
  for (let d = 0; d < DEVICES; d++) store.saveDevice({ id: `dev-${d}`, name: `dev-${d}`, data: null, networkId: 1, deviceTypeId: 1, isBlocked: false })
  for (let from = 0; from < N; from += 10_000) {
    const batch: NewCommandRecord[] = []
    for (let i = from; i < Math.min(N, from + 10_000); i++) {
      batch.push({
        command: 'set', timestamp: START, lastUpdated: START, userId: 1, deviceId: `dev-${i % DEVICES}`, networkId: 1, deviceTypeId: 1,
        parameters: `{"i":${i}}`, lifetime: lifetime(i), status: null, result: null, expiresAt: START + lifetime(i) * 1000, updated: false
      })
    }
    store.commit({ inserts: batch, updates: [], maxPending: Infinity }, START)
  }
  if (reopen !== undefined) store = await reopen(store)
  heapUsed()
  const start = performance.now()
  const probe = probeTurns()
  const clock = benchClock(START + 3_600_000)
  const stop = clock.follow()
  const broker = createBroker(store, { secret: SECRET, clock, maxPendingPerDevice: N })
  let expired = 0
  broker.on('expired', () => { expired++ })
  const report = await broker.ready
  stop()
  const blocks = probe.stop()
  const elapsed = (performance.now() - start) / 1000
  check(report.expired === N && report.rearmed === 0 && expired === N, `recovery: expired ${report.expired} (${expired} reported), re-armed ${report.rearmed}, of ${N}`)
  await broker.close()
  return { ...blocks, rate: N / elapsed }
}

const describe = (b: Blocks): string => `longest turn ${b.longest.toFixed(1)} ms (of it GC ${b.gc.toFixed(1)}; wall ${b.wall.toFixed(1)}, eld ${b.delayMax.toFixed(1)}), ${b.waited.toFixed(0)} ms waiting for a CPU, ${b.turns} turns`

const memory = await fill(memoryStore())
scenario.figure('broker on the memory store, heap per pending command', memory.heap, 'B')
const fromMemory = await expireAll(memory.broker, memory.clock)
console.error(`expiry: memory store, an hour's jump: ${describe(fromMemory)}`)
const file = join(tempDir(), 'expiry.db')
const sqlite = await fill(sqliteStore(file, { synchronous: 'normal' }))
scenario.figure('broker on SQLite, heap per pending command', sqlite.heap, 'B')
const fromSqlite = await expireAll(sqlite.broker, sqlite.clock)
console.error(`expiry: SQLite, an hour's jump: ${describe(fromSqlite)}`)
const recoveredMemory = await recoverAll(() => memoryStore(), undefined)
console.error(`expiry: memory store, recovery of ${N} due: ${describe(recoveredMemory)}`)
const recoverFile = join(tempDir(), 'recover.db')
const recoveredSqlite = await recoverAll(() => sqliteStore(recoverFile, { synchronous: 'normal' }), async (store) => {
  await store.close()
  return sqliteStore(recoverFile, { synchronous: 'normal' })
})
console.error(`expiry: SQLite, recovery of ${N} due: ${describe(recoveredSqlite)}`)
scenario.figure('expired, SQLite', fromSqlite.rate, 'commands/s')
scenario.figure('longest event-loop block while expiring, SQLite', fromSqlite.longest, 'ms')
scenario.figure('expired, memory store', fromMemory.rate, 'commands/s')
scenario.figure('longest event-loop block while expiring, memory store', fromMemory.longest, 'ms')
scenario.figure('recovery expiring all, SQLite', recoveredSqlite.rate, 'commands/s')
scenario.figure('longest event-loop block in recovery, SQLite', recoveredSqlite.longest, 'ms')
scenario.figure('recovery expiring all, memory store', recoveredMemory.rate, 'commands/s')
scenario.figure('longest event-loop block in recovery, memory store', recoveredMemory.longest, 'ms')
scenario.goal('longest block expiring under 20 ms (SQLite)', fromSqlite.longest, 'max', 20)
scenario.goal('longest block expiring under 20 ms (memory store)', fromMemory.longest, 'max', 20)
scenario.goal('longest block in recovery under 20 ms (SQLite)', recoveredSqlite.longest, 'max', 20)
scenario.goal('longest block in recovery under 20 ms (memory store)', recoveredMemory.longest, 'max', 20)
scenario.note(`${N} commands, lifetimes 1..3600 s over ${DEVICES} devices; heap measured after gc(); expiry in pieces that fit a 5 ms turn budget (at most expiryBatch, default 1000, a turn)`)
scenario.note('longest block: the longest gap between turns of a setImmediate probe, less the time the main thread waited for a CPU meanwhile (/proc/thread-self/schedstat; GC and I/O waits count)')
scenario.note('the memory store\'s longest block includes V8 collecting a heap of ~300 B per pending command; on SQLite the heap holds only the wheel')
scenario.done()
