// Scenario: retention, for a hub whose clients send no lifetime. What it costs an insert (the
// same inserts without a lifetime on a broker with and without `retention`, alternated), and
// what it buys: the database a hub keeps after many retention periods, against one without it.
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { createBroker, DEFAULTS, manualClock, signToken, sqliteStore, type Broker, type Store } from '../lib/index.js'
import { check, pool, quick, Scenario, seconds, SECRET, tempDir, waitOnManualClock } from './common.js'

const TOTAL = quick ? 2000 : 200_000
const IN_FLIGHT = quick ? 100 : 1000
const DEVICES = quick ? 10 : 1000
// With and without retention alternate this many times, each going first every other round
// (the later of a pair runs on a heap the earlier left); each figure is the median of its rounds.
const ROUNDS = quick ? 1 : 6
// The database over time: WAVES waves of WAVE inserts, one every half retention period, so at
// most two waves are stored at once.
const WAVE = quick ? 1000 : 50_000
const WAVES = quick ? 4 : 10
const RETENTION = 600
const START = Date.parse('2026-01-01T00:00:00.000Z')
const dir = tempDir()
let files = 0
const file = (): string => join(dir, `db-${files++}.sqlite`)

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number

async function open (store: Store, retention: number, clock = manualClock(START)): Promise<{ broker: Broker, token: string }> {
  const broker = createBroker(store, { secret: SECRET, clock, retention })
  const token = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'], e: START + 30 * 86_400_000 }, { secret: SECRET })
  for (let d = 0; d < DEVICES; d++) {
    await broker.handle({ action: 'device/save', deviceId: `dev-${d}`, device: { name: `dev-${d}`, networkId: 1, deviceTypeId: 1 } }, token)
  }
  return { broker, token }
}

// `count` inserts without a lifetime, IN_FLIGHT at a time; checks every one succeeded.
async function insert (broker: Broker, token: string, count: number): Promise<void> {
  let ok = 0
  await pool(count, IN_FLIGHT, async (i) => {
    const reply = await broker.handle({ action: 'command/insert', deviceId: `dev-${i % DEVICES}`, command: { command: 'set', parameters: { level: i % 100 } } }, token)
    if (reply.status === 'success') ok++
  })
  check(ok === count, `${ok} of ${count} inserts succeeded`)
}

// Insert rate with or without retention (an hour: nothing expires during the run), and the
// process's CPU time per insert (every thread: the checkpointer's too), which the other
// engineers' load on this machine's two cores disturbs less than the rate.
async function rate (retention: number): Promise<{ rate: number, cpu: number }> {
  const { broker, token } = await open(sqliteStore(file(), { synchronous: 'normal' }), retention)
  const cpu = process.cpuUsage()
  const elapsed = await seconds(() => insert(broker, token, TOTAL))
  const { user, system } = process.cpuUsage(cpu)
  const { timers } = await broker.stats()
  check(timers === (retention === 0 ? 0 : TOTAL), `retention ${retention}: ${timers} commands armed, expected ${retention === 0 ? 0 : TOTAL}`)
  await broker.close()
  return { rate: TOTAL / elapsed, cpu: (user + system) / TOTAL }
}

// The database's own size, as a checkpoint leaves the file: pages counted through a connection
// of its own (which sees what is still in the WAL), free pages included. The WAL's size is
// the checkpointer's business, not retention's.
function databaseBytes (path: string): number {
  const db = new Database(path, { readonly: true })
  try {
    return (db.pragma('page_count', { simple: true }) as number) * (db.pragma('page_size', { simple: true }) as number)
  } finally {
    db.close()
  }
}

// The waves on a manual clock; resolves to the database's bytes at the end and the most it
// held after a wave, and how many commands are left (dev-0's, times the devices: every device
// gets as many).
async function waves (retention: number): Promise<{ end: number, peak: number, left: number }> {
  const clock = manualClock(START)
  const path = file()
  const { broker, token } = await open(sqliteStore(path, { synchronous: 'normal' }), retention, clock)
  let peak = 0
  for (let wave = 0; wave < WAVES; wave++) {
    await insert(broker, token, WAVE)
    // The most commands stored at once: this wave and the one before.
    peak = Math.max(peak, databaseBytes(path))
    clock.advance(RETENTION * 500)
    // Expiry runs a batch a turn, each deleted before the wheel hands out the next: wait
    // until the wheel holds only this wave (the clock moving on a tick while expiry waits for the
    // checkpointer: see waitOnManualClock).
    if (retention !== 0) await waitOnManualClock(clock, DEFAULTS.tick, async () => (await broker.stats()).timers <= WAVE, async () => (await broker.stats()).timers)
  }
  const end = databaseBytes(path)
  const left = (await broker.handle({ action: 'command/list', deviceId: 'dev-0', take: 1000 }, token) as { commands?: unknown[] }).commands?.length ?? -1
  await broker.close()
  return { end, peak, left: left * DEVICES }
}

const scenario = new Scenario('retention')
const off: Array<{ rate: number, cpu: number }> = []
const on: Array<{ rate: number, cpu: number }> = []
for (let round = 0; round < ROUNDS; round++) {
  if (round % 2 === 0) off.push(await rate(0))
  on.push(await rate(3600))
  if (round % 2 === 1) off.push(await rate(0))
}
const withoutRate = scenario.figure('inserts without a lifetime, retention off, SQLite', median(off.map((r) => r.rate)), 'inserts/s')
const withRate = scenario.figure('inserts without a lifetime, retention 3600 s, SQLite', median(on.map((r) => r.rate)), 'inserts/s')
const withoutCpu = scenario.figure('CPU per insert, retention off', median(off.map((r) => r.cpu)), 'µs')
const withCpu = scenario.figure('CPU per insert, retention 3600 s', median(on.map((r) => r.cpu)), 'µs')
scenario.figure('retention on / off, insert rate', withRate / withoutRate, 'ratio')
scenario.figure('retention on / off, CPU per insert', withCpu / withoutCpu, 'ratio')
scenario.goal('retention costs an insert at most 10% more CPU', withCpu / withoutCpu, 'max', 1.1)

const kept = await waves(RETENTION)
const forever = await waves(0)
check(kept.left === WAVE, `retention: ${kept.left} commands left, expected the last wave's ${WAVE}`)
check(forever.left === WAVES * WAVE, `no retention: ${forever.left} commands left, expected all ${WAVES * WAVE}`)
scenario.figure(`database after ${WAVES} waves, retention ${RETENTION} s`, kept.end / 2 ** 20, 'MiB')
scenario.figure(`database after ${WAVES} waves, no retention`, forever.end / 2 ** 20, 'MiB')
scenario.figure('database with retention, end / peak', kept.end / kept.peak, 'ratio')
scenario.goal('with retention, the database stays within 2x its size at the peak of stored commands', kept.end / kept.peak, 'max', 2)
scenario.note(`insert rate: ${TOTAL} inserts, ${IN_FLIGHT} in flight over ${DEVICES} devices, synchronous=NORMAL; off and on alternate ${ROUNDS} times, each first every other round; medians. Rounds (inserts/s, µs CPU each): off ${off.map((r) => `${Math.round(r.rate)} ${r.cpu.toFixed(1)}`).join(', ')}; on ${on.map((r) => `${Math.round(r.rate)} ${r.cpu.toFixed(1)}`).join(', ')}`)
scenario.note(`store: ${WAVES} waves of ${WAVE} inserts without a lifetime, one every ${RETENTION / 2} s of a manual clock; database = page_count x page_size (free pages included, the WAL not); peak ${(kept.peak / 2 ** 20).toFixed(1)} MiB`)
scenario.done()
