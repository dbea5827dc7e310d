// Scenario 2: latency of handle() for an insert at a steady 20% of the measured maximum rate,
// against raw better-sqlite3 committing the same rows at the same pace side by side (the disk's
// own cost), and on the memory store. Broker, raw and memory rounds alternate; each figure is
// the median of its rounds, and the spread of the ratio across rounds is a figure of its own.
// `--rounds N` (default 3) and `--seconds S` (per round, default 8) change the run. Last, the
// bytes allocated per insert on the memory store are sampled (V8's sampling heap profiler).
import { Session as Inspector } from 'node:inspector/promises'
import { join } from 'node:path'
import { monitorEventLoopDelay, performance, PerformanceObserver } from 'node:perf_hooks'
import { createBroker, memoryStore, signToken, sqliteStore, type Store } from '../lib/index.js'
import { check, pool, quantile, quick, rawSqlite, Scenario, seconds, SECRET, tempDir } from './common.js'

const arg = (name: string, fallback: number): number => {
  const i = process.argv.indexOf(`--${name}`)
  const value = i === -1 ? fallback : Number(process.argv[i + 1])
  check(Number.isFinite(value) && value > 0, `--${name} must be a positive number`)
  return value
}
const DEVICES = 100
const PROBE = quick ? 2000 : 50_000
const DURATION_S = arg('seconds', quick ? 0.5 : 8)
const ROUNDS = arg('rounds', quick ? 1 : 3)
const token = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'], e: Date.now() + 3_600_000 }, { secret: SECRET })
const dir = tempDir()
let files = 0
const file = (): string => join(dir, `latency-${files++}.db`)
const parameters = (i: number): string => JSON.stringify({ i })

/** One paced round: each insert's latency (ms) and where the time went. */
interface Round {
  p50: number
  p99: number
  max: number
  /** Mean ms per commit, and writes per commit (broker only). */
  commitMs: number
  batch: number
  /** Share of the round's wall time spent in garbage collection. */
  gc: number
  /** The longest single GC pause, ms. */
  gcMax: number
  /** The event loop's p99 delay, ms. */
  loopP99: number
}

// Calls `issue(n)` for each insert at its own slot in time at `rate`/s, however the others fare,
// and resolves once `settled` has been called for all of them. GC time and event-loop delay are
// recorded meanwhile.
async function paced (rate: number, issue: (n: number, settled: (ms: number) => void) => void): Promise<Omit<Round, 'commitMs' | 'batch'>> {
  const total = Math.floor(rate * DURATION_S)
  const latencies: number[] = []
  let gcMs = 0
  let gcMax = 0
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      gcMs += entry.duration
      gcMax = Math.max(gcMax, entry.duration)
    }
  })
  observer.observe({ entryTypes: ['gc'] })
  const loop = monitorEventLoopDelay({ resolution: 1 })
  loop.enable()
  const start = performance.now()
  await new Promise<void>((resolve) => {
    let issued = 0
    const settled = (ms: number): void => {
      latencies.push(ms)
      if (latencies.length === total) resolve()
    }
    const tick = (): void => {
      const due = Math.min(total, Math.floor(((performance.now() - start) / 1000) * rate))
      for (; issued < due; issued++) issue(issued, settled)
      if (issued < total) setTimeout(tick, 1)
    }
    tick()
  })
  const elapsed = performance.now() - start
  loop.disable()
  observer.disconnect()
  latencies.sort((a, b) => a - b)
  check(latencies.length === total, `latency: ${latencies.length} of ${total} inserts settled`)
  return {
    p50: quantile(latencies, 0.5),
    p99: quantile(latencies, 0.99),
    max: latencies[latencies.length - 1] as number,
    gc: gcMs / elapsed,
    gcMax,
    loopP99: loop.percentile(99) / 1e6
  }
}

async function openBroker (store: Store): Promise<{ broker: ReturnType<typeof createBroker>, session: ReturnType<ReturnType<typeof createBroker>['session']> }> {
  const broker = createBroker(store, { secret: SECRET })
  for (let d = 0; d < DEVICES; d++) {
    await broker.handle({ action: 'device/save', deviceId: `dev-${d}`, device: { name: `dev-${d}`, networkId: 1 } }, token)
  }
  const session = broker.session(() => {})
  await session.handle({ action: 'authenticate', token })
  return { broker, session }
}

const insert = (i: number): Record<string, unknown> => ({
  action: 'command/insert', requestId: i, deviceId: `dev-${i % DEVICES}`, command: { command: 'set', parameters: { i }, lifetime: 3600 }
})

// The broker's maximum: 1,000 in flight.
async function maximum (): Promise<number> {
  const { broker, session } = await openBroker(sqliteStore(file(), { synchronous: 'normal' }))
  let sent = 0
  const rate = PROBE / await seconds(() => pool(PROBE, 1000, async () => { await session.handle(insert(sent++)) }))
  await broker.close()
  return rate
}

// The broker at `rate`, each insert timed from its handle() call to its reply.
async function brokerRound (store: Store, rate: number): Promise<Round> {
  const { broker, session } = await openBroker(store)
  let failed = 0
  const round = await paced(rate, (n, settled) => {
    const began = performance.now()
    void session.handle(insert(n)).then((reply) => {
      if (reply.status !== 'success') failed++
      settled(performance.now() - began)
    })
  })
  const { commits } = await broker.stats()
  check(failed === 0, `latency: ${failed} inserts failed`)
  check(store.lastCommandId() === Math.floor(rate * DURATION_S), 'latency: every insert stored')
  await broker.close()
  return { ...round, commitMs: commits.totalMs / commits.count, batch: commits.writes / commits.count }
}

// Raw better-sqlite3 at `rate`: the same table, indexes, rows and connection settings as the
// store (its background checkpointer included). The inserts issued in one event-loop turn are
// committed together at the next, as the broker's group commit does; each timed from its issue
// to its commit.
async function rawRound (rate: number): Promise<Round> {
  const path = file()
  const raw = await rawSqlite(path)
  const { db, insert: statement } = raw
  let id = 0
  let commits = 0
  let commitMs = 0
  let queued: Array<{ n: number, began: number, settled: (ms: number) => void }> = []
  const commit = db.transaction((now: number) => {
    for (const { n } of queued) statement.run(++id, `dev-${n % DEVICES}`, 'set', now, now, 1, 1, null, parameters(n), 3600, null, null, now + 3_600_000, 0)
  })
  const flush = (): void => {
    const started = performance.now()
    commit(Date.now())
    const done = performance.now()
    commits++
    commitMs += done - started
    const settling = queued
    queued = []
    for (const { began, settled } of settling) settled(done - began)
  }
  const round = await paced(rate, (n, settled) => {
    if (queued.length === 0) setImmediate(flush)
    queued.push({ n, began: performance.now(), settled })
  })
  const rows = db.prepare('SELECT count(*) FROM commands').pluck().get() as number
  await raw.close()
  check(rows === id && id === Math.floor(rate * DURATION_S), 'latency: raw: every insert stored')
  return { ...round, commitMs: commitMs / commits, batch: id / commits }
}

const median = (values: readonly number[]): number => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)] as number
}
const spread = (values: readonly number[]): number => (Math.max(...values) - Math.min(...values)) / median(values)

const maxRate = await maximum()
const rate = maxRate * 0.2
const brokers: Round[] = []
const raws: Round[] = []
const memories: Round[] = []
for (let round = 0; round < ROUNDS; round++) {
  brokers.push(await brokerRound(sqliteStore(file(), { synchronous: 'normal' }), rate))
  raws.push(await rawRound(rate))
  memories.push(await brokerRound(memoryStore(), rate))
  const [b, r, m] = [brokers[round], raws[round], memories[round]] as [Round, Round, Round]
  console.error(`latency: round ${round + 1}: p99 broker ${b.p99.toFixed(2)} ms, raw ${r.p99.toFixed(2)} ms, memory ${m.p99.toFixed(2)} ms; ` +
    `commit broker ${b.commitMs.toFixed(2)} ms x ${b.batch.toFixed(1)}, raw ${r.commitMs.toFixed(2)} ms x ${r.batch.toFixed(1)}; ` +
    `GC ${(b.gc * 100).toFixed(1)}% / ${(r.gc * 100).toFixed(1)}%, longest pause ${b.gcMax.toFixed(1)} / ${r.gcMax.toFixed(1)} ms; loop p99 ${b.loopP99.toFixed(2)} / ${r.loopP99.toFixed(2)} ms`)
}
// Bytes allocated per insert on the memory store, objects collected since included: what the
// GC clears per request, whose pauses make the memory store's tail. Inserts go in bursts of 50,
// each awaited, after a warm-up; V8 samples an allocation every 1 KiB on average.
async function allocatedPerInsert (): Promise<number> {
  const { broker, session } = await openBroker(memoryStore())
  const BURST = 50
  let n = 0
  const bursts = async (count: number): Promise<void> => {
    for (let b = 0; b < count / BURST; b++) {
      const replies = await Promise.all(Array.from({ length: BURST }, () => session.handle(insert(n++))))
      check(replies.every((reply) => reply.status === 'success'), 'latency: every sampled insert succeeded')
    }
  }
  const inserts = quick ? 2000 : 20_000
  await bursts(inserts / 4)
  const inspector = new Inspector()
  inspector.connect()
  await inspector.post('HeapProfiler.startSampling', { samplingInterval: 1024, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true })
  await bursts(inserts)
  const { profile } = await inspector.post('HeapProfiler.stopSampling')
  inspector.disconnect()
  await broker.close()
  let bytes = 0
  const walk = (node: typeof profile.head): void => {
    bytes += node.selfSize
    for (const child of node.children) walk(child)
  }
  walk(profile.head)
  return bytes / inserts
}
const allocated = await allocatedPerInsert()

const of = (rounds: Round[], key: keyof Round): number => median(rounds.map((r) => r[key]))
const ratios = brokers.map((b, i) => b.p99 / (raws[i] as Round).p99)

const scenario = new Scenario('latency')
scenario.figure('maximum rate, 1000 in flight', maxRate, 'inserts/s')
scenario.figure('steady rate (20% of maximum)', rate, 'inserts/s')
scenario.figure('broker, SQLite: p50', of(brokers, 'p50'), 'ms')
const p99 = scenario.figure('broker, SQLite: p99', of(brokers, 'p99'), 'ms')
scenario.figure('broker, SQLite: max', of(brokers, 'max'), 'ms')
scenario.figure('raw better-sqlite3, same pace: p50', of(raws, 'p50'), 'ms')
const rawP99 = scenario.figure('raw better-sqlite3, same pace: p99', of(raws, 'p99'), 'ms')
const ratio = scenario.figure('broker / raw p99', median(ratios), 'ratio')
const ratioSpread = scenario.figure('broker / raw p99: spread across rounds ((max-min)/median)', ROUNDS > 1 ? spread(ratios) : 0, 'ratio')
scenario.figure('broker, memory store: p50', of(memories, 'p50'), 'ms')
const memoryP99 = scenario.figure('broker, memory store: p99', of(memories, 'p99'), 'ms')
scenario.figure('broker, SQLite: mean commit', of(brokers, 'commitMs'), 'ms')
scenario.figure('broker, SQLite: writes per commit', of(brokers, 'batch'), 'writes')
scenario.figure('raw: mean commit', of(raws, 'commitMs'), 'ms')
scenario.figure('broker, memory store: bytes allocated per insert (sampled)', allocated, 'bytes')
scenario.figure('broker, SQLite: time in GC', of(brokers, 'gc') * 100, '%')
scenario.figure('broker, SQLite: longest GC pause', of(brokers, 'gcMax'), 'ms')
scenario.figure('broker, memory store: time in GC', of(memories, 'gc') * 100, '%')
scenario.figure('broker, memory store: longest GC pause', of(memories, 'gcMax'), 'ms')
scenario.figure('broker, SQLite: event-loop delay p99', of(brokers, 'loopP99'), 'ms')
scenario.figure('raw: event-loop delay p99', of(raws, 'loopP99'), 'ms')
scenario.goal('broker p99 within 1.5x of raw better-sqlite3', ratio, 'max', 1.5)
scenario.goal('broker / raw repeats within 10% across rounds', ratioSpread, 'max', 0.1)
scenario.goal('memory store p99 under 2 ms', memoryP99, 'max', 2)
scenario.note(`${Math.floor(rate * DURATION_S)} inserts over ${DURATION_S} s per round on SQLite (WAL, synchronous=NORMAL), each timed from its handle() call to its reply; ` +
  `raw: the same rows committed per event-loop turn, timed from issue to commit. SQLite p99 ${p99.toFixed(2)} ms vs raw ${rawP99.toFixed(2)} ms`)
scenario.note(`${ROUNDS} rounds of broker, raw and memory alternating; medians. Broker/raw p99 per round: ${ratios.map((r) => r.toFixed(2)).join(', ')}`)
scenario.done()
