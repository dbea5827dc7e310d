// Scenario: what observability (the diagnostics_channel channels and the commit bookkeeping
// behind broker.stats()) costs insert throughput when no one listens, against the same broker
// with that work really skipped (lib/diagnostics.ts's internal `observing` switch), and what
// listening on every channel costs.
//
// On a 2-core machine shared with other work, whole runs side by side differ by 20% and more
// from the load alone, far more than the cost measured. So one broker serves short chunks of
// inserts with the switch changed between chunks, the variants in turn in a rotating order:
// each round sees about the same load, store size and heap. Each ratio is the median of its
// rounds' ratios. A control, the baseline run again as if it were another variant, shows how
// far from 1 a ratio of two identical brokers lands: the noise of the measurement. The goal is
// judged on time less what the main thread spent waiting for a CPU that other processes held
// (as bench/stalls.ts judges its own): that halves the spread of the round ratios under load,
// and leaves in what the broker does itself, GC and I/O waits included. Plain wall-clock
// ratios and ratios per CPU second are reported beside it.
//
// Listening runs last, after every no-listener round: subscribing switches a channel's
// prototype, which leaves the code that reads `hasSubscribers` polymorphic from then on. A
// process that never subscribes never pays that, so the no-listener rounds must not either.
import diagnosticsChannel from 'node:diagnostics_channel'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { setObserving } from '../lib/diagnostics.js'
import { createBroker, memoryStore, signToken, sqliteStore, type Store } from '../lib/index.js'
import { check, pool, quick, runQueueWait, Scenario, SECRET, tempDir } from './common.js'

const IN_FLIGHT = quick ? 100 : 1000
const SESSIONS = quick ? 10 : 100
const DEVICES = quick ? 10 : 1000
// Inserts per chunk: two group commits of 1000 with 1000 in flight. One in flight, each
// insert is a commit of its own, so the per-commit bookkeeping is per insert.
const CHUNK = quick ? 500 : 2000
const SEQUENTIAL_CHUNK = quick ? 100 : 1000
const ROUNDS = quick ? 2 : 150
const LISTENING_ROUNDS = quick ? 2 : 60
const CHANNELS = ['insert', 'update', 'expire', 'push', 'error'].map((name) => `command-broker:${name}`)
const token = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'], e: Date.now() + 3_600_000 }, { secret: SECRET })
const dir = tempDir()
let files = 0

/** baseline: observing off; control: the same again; unobserved: on, no subscriber; listening: a no-op subscriber on every channel. */
type Variant = 'baseline' | 'control' | 'unobserved' | 'listening'

// Every chunk's input is built before the clock starts, as in bench/insert-throughput.ts.
const messages = Array.from({ length: CHUNK }, (_, i) => ({
  action: 'command/insert',
  requestId: i,
  deviceId: `dev-${i % DEVICES}`,
  command: { command: 'set', parameters: { level: i % 100 }, lifetime: 3600 }
}))

function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)] as number
}

// The orders rounds run `variants` in, in turn: each variant comes at each place equally often,
// before and after each other.
function orders (variants: Variant[]): Variant[][] {
  return variants.flatMap((_, shift) => {
    const order = variants.map((_, i) => variants[(i + shift) % variants.length] as Variant)
    return [order, [...order].reverse()]
  })
}

interface Rates {
  /** Inserts per second of wall time, per round. */
  wall: number[]
  /**
   * Inserts per second of wall time less the time the main thread waited for a CPU (taken by
   * other processes), per round: the rate with a core of its own. I/O waits and GC still count.
   */
  own: number[]
  /** Inserts per second of the process's CPU time (every thread), per round. */
  cpu: number[]
}

// One broker on a fresh store; `rounds` rounds of one chunk per variant, `inFlight` requests at a time.
async function compare (variants: Variant[], rounds: number, open: () => Store, chunk: number, inFlight: number): Promise<Map<Variant, Rates>> {
  const broker = createBroker(open(), { secret: SECRET })
  for (let d = 0; d < DEVICES; d++) {
    await broker.handle({ action: 'device/save', deviceId: `dev-${d}`, device: { name: `dev-${d}`, networkId: 1, deviceTypeId: 1 } }, token)
  }
  const sessions = Array.from({ length: Math.min(SESSIONS, inFlight) }, () => broker.session(() => {}))
  for (const session of sessions) await session.handle({ action: 'authenticate', token })
  let heard = 0
  const listener = (): void => { heard++ }
  const rates = new Map(variants.map((variant) => [variant, { wall: [], own: [], cpu: [] } as Rates]))
  const rotation = orders(variants)
  for (let round = 0; round < rounds; round++) {
    for (const variant of rotation[round % rotation.length] as Variant[]) {
      if (variant === 'listening') for (const name of CHANNELS) diagnosticsChannel.subscribe(name, listener)
      const observed = variant === 'unobserved' || variant === 'listening'
      setObserving(observed)
      const counted = (await broker.stats()).commits.writes
      const heardBefore = heard
      let ok = 0
      const cpu = process.cpuUsage()
      const waited = runQueueWait()
      const start = performance.now()
      try {
        await pool(chunk, inFlight, async (i) => {
          const reply = await (sessions[i % sessions.length] as typeof sessions[number]).handle(messages[i] as Record<string, unknown>)
          if (reply.status === 'success') ok++
        })
      } finally {
        setObserving(true)
        if (variant === 'listening') for (const name of CHANNELS) diagnosticsChannel.unsubscribe(name, listener)
      }
      const elapsed = (performance.now() - start) / 1000
      const own = elapsed - (runQueueWait() - waited) / 1000
      const used = process.cpuUsage(cpu)
      check(ok === chunk, `${variant}: ${ok} of ${chunk} inserts succeeded`)
      // The baseline must really skip the work, and the others must really do it.
      const writes = (await broker.stats()).commits.writes - counted
      check(writes === (observed ? chunk : 0), `${variant}: ${writes} of ${chunk} writes counted by stats()`)
      check(heard - heardBefore === (variant === 'listening' ? chunk : 0), `${variant}: the insert channel heard ${heard - heardBefore} of ${chunk}`)
      const rate = rates.get(variant) as Rates
      rate.wall.push(chunk / elapsed)
      rate.own.push(chunk / own)
      rate.cpu.push(chunk / ((used.user + used.system) / 1e6))
    }
  }
  await broker.close()
  return rates
}

// Each round's rate of `variant` over the baseline's in the same round.
function roundRatios (rates: Map<Variant, Rates>, variant: Variant, kind: keyof Rates): number[] {
  const baseline = (rates.get('baseline') as Rates)[kind]
  return (rates.get(variant) as Rates)[kind].map((rate, round) => rate / (baseline[round] as number))
}

// Their median: the figure.
function ratio (rates: Map<Variant, Rates>, variant: Variant, kind: keyof Rates): number {
  return median(roundRatios(rates, variant, kind))
}

// Their middle half, for a note: how much one round says.
function spread (rates: Map<Variant, Rates>, variant: Variant, kind: keyof Rates): string {
  const sorted = roundRatios(rates, variant, kind).sort((a, b) => a - b)
  const at = (q: number): string => (sorted[Math.floor(q * (sorted.length - 1))] as number).toFixed(2)
  return `${at(0.25)}..${at(0.75)}`
}

const scenario = new Scenario('observability')
const cases: Array<{ name: string, open: () => Store, chunk: number, inFlight: number, goal: boolean }> = [
  { name: 'SQLite', open: () => sqliteStore(join(dir, `db-${files++}.sqlite`), { synchronous: 'normal' }), chunk: CHUNK, inFlight: IN_FLIGHT, goal: true },
  { name: 'memory store', open: () => memoryStore(), chunk: CHUNK, inFlight: IN_FLIGHT, goal: true },
  { name: 'memory store, one in flight', open: () => memoryStore(), chunk: SEQUENTIAL_CHUNK, inFlight: 1, goal: false }
]
for (const { name, open, chunk, inFlight, goal } of cases) {
  const rates = await compare(['baseline', 'control', 'unobserved'], ROUNDS, open, chunk, inFlight)
  scenario.figure(`${name}: baseline (observability skipped)`, median((rates.get('baseline') as Rates).wall), 'inserts/s')
  scenario.figure(`${name}: no one listening`, median((rates.get('unobserved') as Rates).wall), 'inserts/s')
  scenario.figure(`${name}: no one listening / baseline`, ratio(rates, 'unobserved', 'wall'), 'ratio')
  scenario.figure(`${name}: control (baseline / baseline: the noise)`, ratio(rates, 'control', 'wall'), 'ratio')
  const unobserved = scenario.figure(`${name}: no one listening / baseline, less waits for a CPU`, ratio(rates, 'unobserved', 'own'), 'ratio')
  scenario.figure(`${name}: control, less waits for a CPU`, ratio(rates, 'control', 'own'), 'ratio')
  scenario.figure(`${name}: no one listening / baseline, per CPU second`, ratio(rates, 'unobserved', 'cpu'), 'ratio')
  for (const kind of ['wall', 'own'] as const) {
    scenario.note(`${name}: middle half of the round ratios, ${kind === 'wall' ? 'wall clock' : 'less waits for a CPU'}: no one listening ${spread(rates, 'unobserved', kind)}, control ${spread(rates, 'control', kind)}`)
  }
  if (goal) scenario.goal(`${name}: observability with no one listening costs < 5% of inserts`, unobserved, 'min', 0.95)
}
for (const { name, open, chunk, inFlight } of cases) {
  const rates = await compare(['baseline', 'listening'], LISTENING_ROUNDS, open, chunk, inFlight)
  scenario.figure(`${name}: a subscriber on every channel / baseline`, ratio(rates, 'listening', 'wall'), 'ratio')
  scenario.figure(`${name}: a subscriber on every channel / baseline, less waits for a CPU`, ratio(rates, 'listening', 'own'), 'ratio')
  scenario.figure(`${name}: a subscriber on every channel / baseline, per CPU second`, ratio(rates, 'listening', 'cpu'), 'ratio')
}
scenario.note(`chunks of ${CHUNK} inserts, ${IN_FLIGHT} in flight from ${SESSIONS} sessions over ${DEVICES} devices (one in flight: chunks of ${SEQUENTIAL_CHUNK}), lifetime 3600 s; ${ROUNDS} rounds of baseline, control and no one listening, then ${LISTENING_ROUNDS} of baseline and listening, in rotating order, one broker per store and phase; medians of the round ratios`)
scenario.note('baseline and control: lib/diagnostics.ts observing off (no channel checks, no commit timings or counts); listening: a no-op subscriber on all five channels')
scenario.done()
