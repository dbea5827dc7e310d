// Scenario: a bounded file. N commands inserted and expired through the broker, each with the
// same lifetime, at a steady rate on a manual clock (so that a run of simulated minutes takes
// seconds): pending commands climb to RATE x LIFETIME, stay there, then fall to none. Reports the
// database file at that peak, its largest while the hub stays at it, and once every command has
// expired and the store has gone idle, with the WAL beside it reported apart. Two stores side by
// side, driven second by second in turn: a new file (auto_vacuum INCREMENTAL, free pages past a
// quarter of the file given back) and a file from before that (auto_vacuum NONE, which SQLite
// keeps for a file that already has tables: free pages are reused, never given back).
// Run with --expose-gc (bench/run.ts does).
import { statSync } from 'node:fs'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import Database from 'better-sqlite3'
import { createBroker, DEFAULTS, manualClock, signToken, sqliteStore, type Broker, type ManualClock } from '../lib/index.js'
import { check, pool, quick, Scenario, SECRET, tempDir, waitOnManualClock } from './common.js'

const N = quick ? 20_000 : 1_000_000
/** Inserts per simulated second, and the lifetime of each command (s): the peak is their product. */
const RATE = quick ? 200 : 2000
const LIFETIME = quick ? 20 : 60
/** The broker's tick (its default): how far the clock moves while expiry waits, a step at a time. */
const TICK = DEFAULTS.tick
const PEAK = RATE * LIFETIME
const SECONDS = N / RATE
const DEVICES = 100
const START = Date.parse('2026-01-01T00:00:00.000Z')
// Some 300 bytes of parameters: a small command, as most are.
const PAD = 'x'.repeat(250)
const MiB = 1024 * 1024
const dir = tempDir()
const scenario = new Scenario('bounded file')

interface Hub {
  label: string
  file: string
  broker: Broker
  clock: ManualClock
  token: string
  /** A read-only connection of its own: the file's pages as committed, without touching the store's. */
  reader: Database.Database
  expired: number
  /** Seconds spent inserting and expiring (this hub's share of the run). */
  busy: number
  peak: number
  peakWal: number
  largest: number
  largestWal: number
  /** Ms the clock was moved on while expiry waited for the checkpointer; see waitExpired(). */
  drift: number
}

async function open (label: string, oldFile: boolean): Promise<Hub> {
  const file = join(dir, `${label}.db`)
  if (oldFile) {
    // A table before the store's first open: SQLite then keeps auto_vacuum NONE, as in a file
    // written before this version.
    const db = new Database(file)
    db.exec('CREATE TABLE older (x)')
    db.close()
  }
  const clock = manualClock(START)
  const broker = createBroker(sqliteStore(file, { synchronous: 'normal' }), { secret: SECRET, clock })
  const token = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'], e: START + 30 * 86_400_000 }, { secret: SECRET })
  for (let d = 0; d < DEVICES; d++) {
    await broker.handle({ action: 'device/save', deviceId: `dev-${d}`, device: { name: `dev-${d}`, networkId: 1 } }, token)
  }
  const hub: Hub = {
    label, file, broker, clock, token, reader: new Database(file, { readonly: true }), expired: 0, busy: 0, peak: 0, peakWal: 0, largest: 0, largestWal: 0, drift: 0
  }
  broker.on('expired', () => { hub.expired++ })
  const autoVacuum = hub.reader.pragma('auto_vacuum', { simple: true })
  check(autoVacuum === (oldFile ? 0 : 2), `${label}: auto_vacuum ${String(autoVacuum)}`)
  return hub
}

/** The database file as committed (its pages, once checkpointed), and the WAL file on disk. */
function sizes (hub: Hub): { file: number, wal: number } {
  const pages = (hub.reader.pragma('page_count', { simple: true }) as number) * (hub.reader.pragma('page_size', { simple: true }) as number)
  return { file: pages, wal: statSync(`${hub.file}-wal`, { throwIfNoEntry: false })?.size ?? 0 }
}

// Expiry waits, asking again a tick later, while the store is behind its checkpointer
// (store.behind()); on a manual clock that tick never comes by itself. So while no expiry
// arrives for a while, the hub's clock moves on a tick (and real time 10 ms, for the
// checkpointer), as a real hub's would; second() takes that drift off its next advance, so the
// run's simulated seconds stay whole. A drift can bring the next second's commands due early:
// at least `expected` have expired, never fewer.
async function waitExpired (hub: Hub, expected: number): Promise<void> {
  hub.drift += await waitOnManualClock(hub.clock, TICK, () => hub.expired >= expected, () => hub.expired)
  check(hub.expired >= expected && hub.expired <= N, `${hub.label}: ${hub.expired} expired, expected ${expected}`)
}

/** One simulated second: RATE inserts, then the clock a second on and the expiries it brings. */
async function second (hub: Hub, s: number): Promise<void> {
  const start = performance.now()
  let ok = 0
  await pool(RATE, 1000, async (i) => {
    const n = s * RATE + i
    const reply = await hub.broker.handle({
      action: 'command/insert', deviceId: `dev-${n % DEVICES}`, command: { command: 'set', parameters: { n, pad: PAD }, lifetime: LIFETIME }
    }, hub.token)
    if (reply.status === 'success') ok++
  })
  check(ok === RATE, `${hub.label}: ${ok} of ${RATE} inserts succeeded`)
  if (s === LIFETIME - 1) {
    // Every command inserted so far is pending, and none has expired yet: the peak.
    const at = sizes(hub)
    hub.peak = at.file
    hub.peakWal = at.wal
  }
  // A second on, less what waiting for expiry moved the clock on already.
  const step = Math.max(0, 1000 - hub.drift)
  hub.drift -= 1000 - step
  hub.clock.advance(step)
  // Commands inserted in second k expire when the clock reaches k + LIFETIME.
  await waitExpired(hub, RATE * Math.max(0, s + 2 - LIFETIME))
  hub.busy += (performance.now() - start) / 1000
  if (s >= LIFETIME - 1) {
    const now = sizes(hub)
    hub.largest = Math.max(hub.largest, now.file)
    hub.largestWal = Math.max(hub.largestWal, now.wal)
  }
}

interface End { file: number, wal: number, settle: number, longest: number }

/**
 * Every command expired; then waits (up to a minute) until the store is idle: no free pages left
 * to give back, no WAL. `longest`: the longest event-loop block meanwhile (the gap between turns
 * of a probe that asks for one all along), which the steps giving pages back cause.
 */
async function drain (hub: Hub, reclaims: boolean): Promise<End> {
  const start = performance.now()
  hub.clock.advance((LIFETIME + 1) * 1000)
  await waitExpired(hub, N)
  check(hub.expired === N, `${hub.label}: ${hub.expired} of ${N} expired`)
  let longest = 0
  let last = performance.now()
  let probing = true
  const probe = (): void => {
    const now = performance.now()
    longest = Math.max(longest, now - last)
    last = now
    if (probing) setImmediate(probe)
  }
  setImmediate(probe)
  const deadline = Date.now() + 60_000
  const settled = (): boolean => {
    const free = hub.reader.pragma('freelist_count', { simple: true }) as number
    const total = hub.reader.pragma('page_count', { simple: true }) as number
    const given = !reclaims || free <= 1024 || free * 4 <= total
    return given && sizes(hub).wal === 0 && statSync(hub.file).size === sizes(hub).file
  }
  while (!settled() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
  probing = false
  check(settled(), `${hub.label}: still not idle a minute after the last expiry`)
  return { ...sizes(hub), settle: (performance.now() - start) / 1000, longest }
}

const hubs = [await open('incremental', false), await open('none', true)]
// Side by side: each second, each hub in turn, the first alternating, so that load from others
// on this shared machine falls on both.
for (let s = 0; s < SECONDS; s++) {
  for (const hub of s % 2 === 0 ? hubs : [...hubs].reverse()) await second(hub, s)
}
const ends = [await drain(hubs[0] as Hub, true), await drain(hubs[1] as Hub, false)]

for (const [i, hub] of hubs.entries()) {
  const end = ends[i] as End
  const name = i === 0 ? 'new file (auto_vacuum INCREMENTAL)' : 'file from before (auto_vacuum NONE)'
  scenario.figure(`${name}: database file at the peak of ${PEAK.toLocaleString('en-US')} pending`, hub.peak / MiB, 'MiB')
  scenario.figure(`${name}: largest database file at the peak`, hub.largest / MiB, 'MiB')
  scenario.figure(`${name}: database file once all ${N.toLocaleString('en-US')} expired, idle`, end.file / MiB, 'MiB')
  scenario.figure(`${name}: largest / peak`, hub.largest / hub.peak, 'ratio')
  scenario.figure(`${name}: end / peak`, end.file / hub.peak, 'ratio')
  scenario.figure(`${name}: WAL at the peak`, hub.peakWal / MiB, 'MiB')
  scenario.figure(`${name}: largest WAL`, hub.largestWal / MiB, 'MiB')
  scenario.figure(`${name}: WAL once idle`, end.wal / MiB, 'MiB')
  scenario.figure(`${name}: inserting and expiring`, hub.busy, 's')
  scenario.figure(`${name}: from the last expiry to idle`, end.settle, 's')
  scenario.figure(`${name}: longest event-loop block meanwhile`, end.longest, 'ms')
  await hub.broker.close()
  hub.reader.close()
}
const [incremental, none] = hubs as [Hub, Hub]
scenario.figure('time inserting and expiring, INCREMENTAL / NONE', incremental.busy / none.busy, 'ratio')
scenario.goal('database file no larger than 2x its size at the peak (new file)', Math.max(incremental.largest, (ends[0] as End).file) / incremental.peak, 'max', 2)
scenario.note(`${N} commands of ~300 bytes over ${DEVICES} devices, ${RATE}/s simulated, lifetime ${LIFETIME} s: a peak of ${PEAK} pending; synchronous 'normal', background checkpoints; file = page_count x page_size (what the file is once checkpointed)`)
scenario.done()
