// Scenario 7: no request or timer turn blocks the event loop for more than 20 ms, on a store of
// 1,000,000 commands: history replay, command/list (large rows, a filter that matches nothing, a
// deep skip), refused inserts, device/delete, a mass disconnect, start-up recovery, and an hour's
// gap (a suspended process) over which many commands fell due. Each case reports the longest event-loop block while it runs and its
// total time, and checks the broker's answer. Default limits; SQLite (synchronous 'normal') and
// the memory store. Run with --expose-gc (bench/run.ts does).
//
// The longest block is the longest gap between consecutive turns of a probe that asks for a turn
// all along (setImmediate, re-armed from itself): what a request arriving meanwhile would wait,
// garbage collection included. A perf_hooks.monitorEventLoopDelay histogram (resolution 1 ms)
// runs alongside as a cross-check; its max is printed next to the probe's, never used for a goal.
import { monitorEventLoopDelay, performance, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks'
import { writeFileSync } from 'node:fs'
import { Session } from 'node:inspector/promises'
import { join } from 'node:path'
import {
  createBroker, formatTimestamp, memoryStore, signToken, sqliteStore,
  type Broker, type NewCommandRecord, type Push, type Reply, type Session as BrokerSession, type Store, type SyncStore
} from '../lib/index.js'
import { benchClock, check, heapUsed, quick, runQueueWait, Scenario, SECRET, tempDir } from './common.js'

// --- sizes ---------------------------------------------------------------------------------
const N = quick ? 30_000 : 1_000_000
/** Regular devices dev-0..dev-(DEVICES-1), in networks 1..10. */
const DEVICES = quick ? 100 : 1000
/** One device with this many commands, PENDING of them pending (the default maxPendingPerDevice). */
const HUGE = quick ? 12_000 : 400_000
const PENDING = 10_000
/** The device that device/delete removes, and its commands. */
const DOOMED = quick ? 2_000 : 80_000
/** Large commands, ~60 KB of parameters each, on one device, consecutive ids. */
const BIG = quick ? 100 : 2_000
const BIG_PARAMETERS = JSON.stringify({ blob: 'x'.repeat(60_000) })
/** Commands named 'rare' (on regular devices) and commands of the lone device of network 500. */
const RARE = 10
const LONELY = 10
const LONELY_NETWORK = 500
/** How far command/list skips on the huge device. */
const SKIP = quick ? 5_000 : 100_000
/** Sessions, and subscriptions each, for the mass disconnect. */
const SESSIONS = quick ? 100 : 10_000
const SUBSCRIPTIONS = 100
/** Refused inserts, all in flight at once. */
const REFUSED = 1000
/** Lifetimes: every command has one; a regular command in five falls due at SHORT_LIFETIME. */
const LONG_LIFETIME = 604_800
const SHORT_LIFETIME = 3600
const GOAL_MS = 20

// The broker runs on a manual clock so that nothing falls due until case 7 says so; every other
// case runs in real time (the clock only decides expiry and token checks).
const START = Date.parse('2026-06-01T00:00:00.000Z')
// Command timestamps: one millisecond apart, all before START; (timestamp, id) order is id order.
const T0 = START - N - 60_000

// --- the layout of the N commands ----------------------------------------------------------
const REGULAR = 0
const HUGE_DEVICE = 1
const DOOMED_DEVICE = 2
const RARE_COMMAND = 3
const LONELY_DEVICE = 4
const BIG_DEVICE = 5

/** Which group the command at index i (id i + 1) belongs to, and the ids a case expects back. */
interface Layout {
  owner: Uint8Array
  rareIds: number[]
  lonelyIds: number[]
  bigIds: number[]
  hugeIds: number[]
  /** Regular commands with SHORT_LIFETIME. */
  shortLived: number
  withLifetime: number
}

// A small seeded generator (mulberry32): the same layout every run.
function random (seed: number): () => number {
  let a = seed
  return () => {
    a = (a + 0x6d2b79f5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function layout (): Layout {
  const owner = new Uint8Array(N)
  const bigFrom = Math.floor(0.3 * N) + 7
  const special = new Map<number, number>()
  // The rare commands end the table (the last is the last command): awaiting all of them
  // awaits the whole replay. The lone device's sit between them.
  for (let k = 0; k < RARE; k++) special.set(Math.floor(((k + 1) * N) / RARE) - 1, RARE_COMMAND)
  for (let k = 0; k < LONELY; k++) special.set(Math.floor(((k + 0.5) * N) / LONELY), LONELY_DEVICE)
  const free: number[] = []
  for (let i = 0; i < N; i++) {
    if (i >= bigFrom && i < bigFrom + BIG) owner[i] = BIG_DEVICE
    else if (special.has(i)) owner[i] = special.get(i) as number
    else free.push(i)
  }
  // The huge and the doomed device's commands, scattered at random among the regular ones.
  const codes = new Uint8Array(free.length)
  codes.fill(HUGE_DEVICE, 0, HUGE)
  codes.fill(DOOMED_DEVICE, HUGE, HUGE + DOOMED)
  const next = random(7)
  for (let j = codes.length - 1; j > 0; j--) {
    const k = Math.floor(next() * (j + 1))
    const t = codes[j] as number
    codes[j] = codes[k] as number
    codes[k] = t
  }
  for (let j = 0; j < free.length; j++) owner[free[j] as number] = codes[j] as number
  const result: Layout = { owner, rareIds: [], lonelyIds: [], bigIds: [], hugeIds: [], shortLived: 0, withLifetime: N }
  let regular = 0
  for (let i = 0; i < N; i++) {
    switch (owner[i]) {
      case RARE_COMMAND: result.rareIds.push(i + 1); break
      case LONELY_DEVICE: result.lonelyIds.push(i + 1); break
      case BIG_DEVICE: result.bigIds.push(i + 1); break
      case HUGE_DEVICE: result.hugeIds.push(i + 1); break
      case REGULAR: if (regular++ % 5 === 0) result.shortLived++
    }
  }
  return result
}

const plan = layout()

// --- building a store through its own methods ---------------------------------------------
function build (store: SyncStore): void {
  {
    for (let d = 0; d < DEVICES; d++) {
      store.saveDevice({ id: `dev-${d}`, name: `dev-${d}`, data: null, networkId: (d % 10) + 1, deviceTypeId: 1, isBlocked: false })
    }
    for (const id of ['huge', 'doomed', 'big']) store.saveDevice({ id, name: id, data: null, networkId: 1, deviceTypeId: 1, isBlocked: false })
    store.saveDevice({ id: 'lonely', name: 'lonely', data: null, networkId: LONELY_NETWORK, deviceTypeId: 1, isBlocked: false })
  }
  let regular = 0
  let huge = 0
  let rare = 0
  const record = (i: number): NewCommandRecord => {
    const timestamp = T0 + i
    let deviceId: string
    let command = 'common'
    let parameters: string | null = `{"i":${i}}`
    let lifetime = LONG_LIFETIME
    let updated = false
    switch (plan.owner[i]) {
      case REGULAR:
        deviceId = `dev-${regular % DEVICES}`
        if (regular++ % 5 === 0) lifetime = SHORT_LIFETIME
        break
      case RARE_COMMAND:
        deviceId = `dev-${(rare++ * 37) % DEVICES}`
        command = 'rare'
        break
      case HUGE_DEVICE:
        deviceId = 'huge'
        // PENDING of them pending, spread evenly; the rest answered by the device.
        updated = Math.floor(((huge + 1) * PENDING) / HUGE) === Math.floor((huge * PENDING) / HUGE)
        huge++
        break
      case DOOMED_DEVICE: deviceId = 'doomed'; break
      case LONELY_DEVICE: deviceId = 'lonely'; break
      default:
        deviceId = 'big'
        parameters = BIG_PARAMETERS
    }
    const networkId = deviceId === 'lonely' ? LONELY_NETWORK : deviceId.startsWith('dev-') ? (Number(deviceId.slice(4)) % 10) + 1 : 1
    return {
      command,
      timestamp,
      lastUpdated: updated ? timestamp + 1 : timestamp,
      userId: 1,
      deviceId,
      networkId,
      deviceTypeId: 1,
      parameters,
      lifetime,
      status: updated ? 'done' : null,
      result: updated ? '{"ok":true}' : null,
      // As if each had been accepted at its timestamp (on the broker's clock), so expiries spread as they would.
      expiresAt: START - (N - i) + lifetime * 1000,
      updated
    }
  }
  for (let from = 0; from < N; from += 10_000) {
    const batch: NewCommandRecord[] = []
    for (let i = from; i < Math.min(N, from + 10_000); i++) batch.push(record(i))
    store.commit({ inserts: batch, updates: [], maxPending: Infinity }, 0)
  }
  check(store.lastCommandId() === N, `build: ${store.lastCommandId()} of ${N} commands stored`)
  check(huge === HUGE, 'build: the huge device got its commands')
}

// --- measuring -----------------------------------------------------------------------------
const arg = (name: string): string | undefined => process.argv.includes(`--${name}`) ? process.argv[process.argv.indexOf(`--${name}`) + 1] : undefined
/** `--store sqlite` or `--store memory` runs one store only (to run a case again); default both. */
const only = arg('store')
check(only === undefined || only === 'sqlite' || only === 'memory', '--store must be sqlite or memory')
/** `--profile DIR` writes a V8 CPU profile of each measured case into DIR (it slows them down). */
const profileDir = arg('profile')
/** Cases that leave the store as they found it run this often; their figures are the medians. */
const REPEATS = 3

interface Measured<T> {
  value: T
  /**
   * The longest turn, ms: the longest gap between probe turns, less the time the main thread
   * spent waiting for a CPU meanwhile (see {@link runQueueWait}). What decides the goal.
   */
  longest: number
  /** The longest gap between probe turns, ms, as the wall clock saw it. */
  wall: number
  /** monitorEventLoopDelay's max, ms (cross-check; wall clock). */
  delayMax: number
  total: number
  turns: number
  /** Garbage collection inside the longest turn, ms (V8's pauses, as perf_hooks reports them). */
  gc: number
  /** Time the main thread waited for a CPU over the whole case, ms. */
  waited: number
}

let inspector: Session | undefined
let profiles = 0

/**
 * Runs `fn` (awaited) with the probe on. The heap is collected first, so no case pays for the
 * garbage of the setup before it.
 */
async function measure<T> (label: string, fn: () => T | Promise<T>): Promise<Measured<T>> {
  heapUsed()
  if (profileDir !== undefined) {
    if (inspector === undefined) {
      inspector = new Session()
      inspector.connect()
      await inspector.post('Profiler.enable')
      await inspector.post('Profiler.setSamplingInterval', { interval: 100 })
    }
    await inspector.post('Profiler.start')
  }
  const profiled = performance.now()
  const histogram = monitorEventLoopDelay({ resolution: 1 })
  const pauses: PerformanceEntry[] = []
  const observer = new PerformanceObserver((list) => { pauses.push(...list.getEntries()) })
  observer.observe({ entryTypes: ['gc'] })
  let longest = 0
  let longestFrom = 0
  let wall = 0
  let turns = 0
  let probing = true
  const startWait = runQueueWait()
  const start = performance.now()
  let last = start
  let lastWait = startWait
  const turn = (): void => {
    const now = performance.now()
    const waited = runQueueWait()
    const gap = now - last
    wall = Math.max(wall, gap)
    if (gap - (waited - lastWait) > longest) {
      longest = gap - (waited - lastWait)
      longestFrom = last
    }
    last = performance.now()
    lastWait = waited
  }
  const probe = (): void => {
    turn()
    turns++
    if (probing) setImmediate(probe)
  }
  setImmediate(probe)
  histogram.enable()
  const value = await fn()
  const end = performance.now()
  turn()
  probing = false
  histogram.disable()
  pauses.push(...observer.takeRecords())
  observer.disconnect()
  if (inspector !== undefined && profileDir !== undefined) {
    const { profile } = await inspector.post('Profiler.stop')
    const file = join(profileDir, `${String(++profiles).padStart(2, '0')}-${label.replace(/[^A-Za-z0-9]+/g, '-').slice(0, 80)}.cpuprofile`)
    writeFileSync(file, JSON.stringify(profile))
    // Where to look in it: the longest turn, on the clock of the profile's timestamps
    // (CLOCK_MONOTONIC, µs), which process.hrtime reads too.
    const offset = Number(process.hrtime.bigint() / 1000n) - performance.now() * 1000
    const from = Math.round(longestFrom * 1000 + offset)
    console.error(`stalls: ${file}: longest turn at ${from}..${from + Math.round(longest * 1000)} µs (profile clock), ${(longestFrom - profiled).toFixed(0)} ms after Profiler.start`)
  }
  // The part of the longest turn V8 spent collecting garbage.
  let gc = 0
  for (const pause of pauses) {
    gc += Math.max(0, Math.min(pause.startTime + pause.duration, longestFrom + longest) - Math.max(pause.startTime, longestFrom))
  }
  return { value, longest, wall, delayMax: histogram.max / 1e6, total: end - start, turns, gc, waited: runQueueWait() - startWait }
}

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number

/**
 * Measures a case that changes nothing REPEATS times, `verify`ing each answer; returns the run
 * whose longest block is the median, with every run's longest block. A run that the machine's
 * other load happened to stretch does not decide the figure alone, nor does the first, colder one.
 */
async function repeated<T> (label: string, fn: () => T | Promise<T>, verify: (value: T) => void): Promise<Measured<T> & { runs: number[] }> {
  const runs: Array<Measured<T>> = []
  for (let r = 0; r < REPEATS; r++) {
    const m = await measure(`${label} ${r + 1}`, fn)
    verify(m.value)
    runs.push(m)
  }
  const longest = median(runs.map((m) => m.longest))
  const chosen = runs.find((m) => m.longest === longest) as Measured<T>
  return { ...chosen, runs: runs.map((m) => m.longest) }
}

const scenario = new Scenario('stalls')
const rows: string[][] = [['store', 'case', 'longest turn ms', 'wall gap', 'of it GC', 'eld max', 'CPU wait', 'total ms', 'turns', 'runs (longest turn, ms)']]

function report (store: string, name: string, m: Measured<unknown> & { runs?: number[] }, goal = true): void {
  scenario.figure(`${store}: ${name}, longest turn`, m.longest, 'ms')
  scenario.figure(`${store}: ${name}, longest wall-clock gap`, m.wall, 'ms')
  scenario.figure(`${store}: ${name}, total`, m.total, 'ms')
  if (goal) scenario.goal(`${store}: ${name}: longest block (ms)`, m.longest, 'max', GOAL_MS)
  const runs = m.runs?.map((r) => r.toFixed(1)).join(' / ') ?? 'once'
  rows.push([store, name + (goal ? '' : ' (no goal)'), m.longest.toFixed(1), m.wall.toFixed(1), m.gc.toFixed(1), m.delayMax.toFixed(1), m.waited.toFixed(0),
    m.total.toFixed(0), String(m.turns), runs])
  console.error(`stalls: ${store}: ${name}: longest turn ${m.longest.toFixed(1)} ms (wall ${m.wall.toFixed(1)}, GC ${m.gc.toFixed(1)}, eld ${m.delayMax.toFixed(1)}; ` +
    `runs ${runs}), total ${m.total.toFixed(0)} ms (${m.waited.toFixed(0)} waiting for a CPU), ${m.turns} turns`)
}

function isError (reply: Reply, code: number, pattern: RegExp): boolean {
  return reply.status === 'error' && (reply as { code?: number }).code === code && pattern.test(String((reply as { error?: string }).error))
}

// --- the cases -----------------------------------------------------------------------------
async function run (name: string, open: () => SyncStore, reopen: (() => SyncStore) | undefined): Promise<void> {
  const first = open()
  let store: Store = first
  const built = performance.now()
  build(first)
  console.error(`stalls: ${name}: built ${N} commands in ${((performance.now() - built) / 1000).toFixed(1)} s`)
  if (reopen !== undefined) {
    await store.close()
    store = undefined as unknown as Store
  }
  const clock = benchClock(START)
  const token = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'], e: START + 86_400_000 }, { secret: SECRET, now: START })
  let broker: Broker | undefined

  // 6. Start-up recovery: every command re-armed, none due. For SQLite the store is opened
  // (a file of N commands) inside the measurement too, as at a restart.
  const recovery = await measure(`${name} recovery`, async () => {
    if (reopen !== undefined) store = reopen()
    broker = createBroker(store, { secret: SECRET, clock })
    return await broker.ready
  })
  check(recovery.value.rearmed === plan.withLifetime && recovery.value.expired === 0,
    `${name}: recovery re-armed ${recovery.value.rearmed} of ${plan.withLifetime}, expired ${recovery.value.expired}`)
  report(name, `start-up recovery of ${N} commands`, recovery)
  const b = broker as unknown as Broker
  let errors = 0
  b.on('error', (err) => { if (errors++ < 5) console.error(`stalls: ${name}: broker error ${err.code}: ${err.message}`) })

  // 1. History replay: the whole table scanned for a few matches; done when the last arrives.
  {
    const pushes = new Map<number, Push[]>()
    let wanted = -1
    let expected = 0
    let arrived: (() => void) | undefined
    const session = b.session((push) => {
      let list = pushes.get(push.subscriptionId)
      if (list === undefined) pushes.set(push.subscriptionId, list = [])
      list.push(push)
      if (push.subscriptionId === wanted && list.length === expected) arrived?.()
    })
    check((await session.handle({ action: 'authenticate', token })).status === 'success', 'authenticate')
    check(plan.rareIds.length === RARE && plan.lonelyIds.length === LONELY, 'layout: rare and lonely commands')
    const replay = async (filter: Record<string, unknown>, ids: number[], what: string): Promise<void> => {
      const m = await repeated(`${name} ${what}`, async () => {
        expected = ids.length
        const done = new Promise<void>((resolve) => { arrived = resolve })
        const reply = await session.handle({ action: 'command/subscribe', timestamp: formatTimestamp(T0 - 1000), ...filter })
        check(reply.status === 'success', `${what}: subscribe answered ${JSON.stringify(reply)}`)
        wanted = (reply as unknown as { subscriptionId: number }).subscriptionId
        if ((pushes.get(wanted)?.length ?? 0) < expected) await done
        return wanted
      }, (id) => {
        const got = (pushes.get(id) ?? []).map((push) => push.command.id)
        check(JSON.stringify(got) === JSON.stringify(ids), `${what}: replayed ${JSON.stringify(got)}, expected ${JSON.stringify(ids)}`)
      })
      report(name, what, m)
      check((await session.handle({ action: 'command/unsubscribe' })).status === 'success', `${what}: unsubscribe`)
    }
    await replay({ names: ['rare'] }, plan.rareIds, `history replay, names matching ${RARE} of ${N}`)
    await replay({ networkIds: [LONELY_NETWORK] }, plan.lonelyIds, `history replay, networkIds matching ${LONELY} of ${N}`)
    session.close()
  }

  // 2. command/list: large rows, a filter that matches nothing, a deep skip.
  {
    const list = (msg: Record<string, unknown>): Promise<Reply> => b.handle({ action: 'command/list', ...msg }, token)
    const listed = (reply: Reply): number[] => ((reply as { commands?: Array<{ id: number }> }).commands ?? []).map((c) => c.id)
    report(name, `command/list take 1000 of ${BIG} 60 KB rows (400, over maxReplyBytes)`, await repeated(`${name} list big 1000`,
      () => list({ deviceId: 'big', take: 1000 }),
      (reply) => { check(isError(reply, 400, /reply would be larger/), `list take 1000 of 60 KB rows answered ${JSON.stringify(reply).slice(0, 300)}`) }))
    report(name, 'command/list take 20 of 60 KB rows', await repeated(`${name} list big 20`,
      () => list({ deviceId: 'big', take: 20 }),
      (reply) => {
        const commands = (reply as { commands?: Array<{ parameters: { blob: string } }> }).commands ?? []
        check(reply.status === 'success' && JSON.stringify(listed(reply)) === JSON.stringify(plan.bigIds.slice(0, 20)) &&
          commands.every((c) => c.parameters.blob.length === 60_000), `list take 20 of 60 KB rows answered ${JSON.stringify(reply).slice(0, 300)}`)
      }))
    report(name, `command/list, command filter matching none of ${HUGE}`, await repeated(`${name} list none`,
      () => list({ deviceId: 'huge', command: 'no-such-command' }),
      (reply) => { check(reply.status === 'success' && listed(reply).length === 0, `list with a filter matching nothing answered ${JSON.stringify(reply).slice(0, 300)}`) }))
    report(name, `command/list skip ${SKIP} of ${HUGE}`, await repeated(`${name} list skip`,
      () => list({ deviceId: 'huge', skip: SKIP }),
      (reply) => { check(reply.status === 'success' && JSON.stringify(listed(reply)) === JSON.stringify(plan.hugeIds.slice(SKIP, SKIP + 20)), `list skip ${SKIP} answered ${JSON.stringify(reply).slice(0, 300)}`) }))
  }

  // 3. Refused inserts: a device at its pending limit. The first loads its count over turns.
  {
    const lastId = store.lastCommandId()
    const insert = { action: 'command/insert', deviceId: 'huge', command: { command: 'more', lifetime: 60 } }
    const refused = (reply: Reply): boolean => isError(reply, 400, new RegExp(`has ${PENDING} pending commands`))
    const first = await measure(`${name} first insert`, () => b.handle(insert, token))
    check(refused(first.value), `first insert on a device at its limit answered ${JSON.stringify(first.value)}`)
    report(name, `first insert on a device with ${HUGE} commands, ${PENDING} pending (count loaded; 400)`, first)
    report(name, `${REFUSED} inserts at once, all refused (400)`, await repeated(`${name} refused`,
      () => Promise.all(Array.from({ length: REFUSED }, () => b.handle(insert, token))),
      (replies) => { check(replies.every(refused), `${replies.filter((r) => !refused(r)).length} of ${REFUSED} inserts were not refused`) }))
    check(store.lastCommandId() === lastId, 'refused inserts stored nothing')
  }

  // 4. device/delete of a device with many commands (their timers armed by recovery). Its steps
  // wait a tick at a time while the store is behind: the clock follows real time meanwhile
  // (nothing falls due within the minutes it may take: the earliest is 43 min away).
  {
    const m = await measure(`${name} delete`, async () => {
      const stop = clock.follow()
      try {
        return await b.handle({ action: 'device/delete', deviceId: 'doomed' }, token)
      } finally {
        stop()
      }
    })
    check(m.value.status === 'success', `device/delete answered ${JSON.stringify(m.value)}`)
    check(isError(await b.handle({ action: 'device/get', deviceId: 'doomed' }, token), 404, /not found/), 'the deleted device is gone')
    check(store.deleteCommands('doomed', 1) === 0, 'device/delete left commands of the device behind')
    report(name, `device/delete of a device with ${DOOMED} commands`, m)
  }

  // 7. A gap of an hour, as after the process was suspended: the clock jumps an hour, and every
  // command with SHORT_LIFETIME (a regular one in five) has fallen due over it.
  {
    let expired = 0
    let all: (() => void) | undefined
    const done = new Promise<void>((resolve) => { all = resolve })
    b.on('expired', () => { if (++expired === plan.shortLived) all?.() })
    const m = await measure(`${name} expiry`, async () => {
      clock.advance(SHORT_LIFETIME * 1000)
      const stop = clock.follow()
      if (expired < plan.shortLived) await done
      stop()
    })
    check(expired === plan.shortLived, `expiry: ${expired} of ${plan.shortLived} reported`)
    report(name, `an hour's gap: ${plan.shortLived} commands fallen due at once`, m)
  }

  // 5. Mass disconnect: SESSIONS sessions of SUBSCRIPTIONS subscriptions each, all closed at once.
  {
    const heapBefore = heapUsed()
    let pushed = 0
    const sessions: BrokerSession[] = []
    const subscribed = performance.now()
    for (let s = 0; s < SESSIONS; s++) {
      const session = b.session(() => { pushed++ })
      sessions.push(session)
      const replies: Array<Promise<Reply>> = [session.handle({ action: 'authenticate', token })]
      for (let k = 0; k < SUBSCRIPTIONS; k++) {
        const filter = k % 3 === 0 ? { deviceId: `dev-${(s * SUBSCRIPTIONS + k) % DEVICES}` } : k % 3 === 1 ? { networkIds: [(k % 10) + 1] } : {}
        replies.push(session.handle({ action: 'command/subscribe', ...filter }))
      }
      for (const reply of await Promise.all(replies)) check(reply.status === 'success', `subscribe answered ${JSON.stringify(reply)}`)
    }
    const subscribing = (performance.now() - subscribed) / 1000
    const heapSubscribed = heapUsed()
    const closes: number[] = []
    let closing = 0
    const m = await measure(`${name} disconnect`, async () => {
      // As a gateway whose connections all drop: every close in one event-loop turn.
      const began = performance.now()
      for (const session of sessions) {
        const before = performance.now()
        session.close()
        closes.push(performance.now() - before)
      }
      closing = performance.now() - began
      // Then a second more, probed too: a broker may leave part of the teardown to later turns.
      await new Promise((resolve) => setTimeout(resolve, 1000))
    })
    m.total = closing
    check(sessions.every((session) => session.closed), 'every session closed')
    // Nothing is delivered to a closed session, and the subscriptions are gone from the heap.
    const reply = await b.handle({ action: 'command/insert', deviceId: 'dev-1', command: { command: 'after-close' } }, token)
    check(reply.status === 'success', `insert after the disconnect answered ${JSON.stringify(reply)}`)
    check(pushed === 0, `${pushed} pushes reached closed sessions`)
    sessions.length = 0
    // The subscriptions must leave the heap: at once, or within ten seconds of later turns.
    let heapAfter = heapUsed()
    for (let waited = 0; heapAfter - heapBefore >= 32 * 2 ** 20 && waited < 10_000; waited += 500) {
      await new Promise((resolve) => setTimeout(resolve, 500))
      heapAfter = heapUsed()
    }
    closes.sort((x, y) => y - x)
    report(name, `mass disconnect: ${SESSIONS} sessions x ${SUBSCRIPTIONS} subscriptions closed in one turn`, m)
    scenario.figure(`${name}: mass disconnect, longest single session.close() (wall clock)`, closes[0] ?? 0, 'ms')
    scenario.figure(`${name}: mass disconnect, session.close() calls over 5 ms (wall clock)`, closes.filter((t) => t > 5).length, 'calls')
    scenario.figure(`${name}: subscribing ${SESSIONS * SUBSCRIPTIONS} (setup)`, subscribing, 's')
    scenario.figure(`${name}: heap per subscription`, (heapSubscribed - heapBefore) / (SESSIONS * SUBSCRIPTIONS), 'B')
    scenario.figure(`${name}: heap left after the disconnect`, (heapAfter - heapBefore) / 2 ** 20, 'MiB')
    console.error(`stalls: ${name}: slowest session.close() calls (wall clock) ${closes.slice(0, 5).map((t) => t.toFixed(1)).join(', ')} ms (${closes.filter((t) => t > 5).length} over 5 ms); ` +
      `subscribing took ${subscribing.toFixed(1)} s; heap ${(heapBefore / 2 ** 20).toFixed(0)} -> ${(heapSubscribed / 2 ** 20).toFixed(0)} -> ${(heapAfter / 2 ** 20).toFixed(0)} MiB`)
    check(heapAfter - heapBefore < 32 * 2 ** 20, `mass disconnect: ${((heapAfter - heapBefore) / 2 ** 20).toFixed(0)} MiB of heap kept after every session closed`)
  }

  check(errors === 0, `${name}: the broker reported ${errors} errors`)
  await b.close()
}

const dir = tempDir()
const file = join(dir, 'stalls.db')
if (only !== 'memory') await run('SQLite', () => sqliteStore(file, { synchronous: 'normal' }), () => sqliteStore(file, { synchronous: 'normal' }))
if (only !== 'sqlite') await run('memory', () => memoryStore(), undefined)

const widths = rows[0]?.map((_, column) => Math.max(...rows.map((row) => row[column]?.length ?? 0))) ?? []
for (const row of rows) console.error(row.map((cell, column) => column >= 2 ? cell.padStart(widths[column] ?? 0) : cell.padEnd(widths[column] ?? 0)).join('  '))
scenario.note(`${N} commands (1 ms apart) in one store: ${HUGE} on one device (${PENDING} pending), ${DOOMED} on the device deleted, ${BIG} of ~60 KB on one device (consecutive ids), ${RARE} named 'rare', ${LONELY} on the one device of network ${LONELY_NETWORK}, the rest over ${DEVICES} devices; every command has a lifetime (1 in 5 regular ones ${SHORT_LIFETIME} s)`)
scenario.note(`longest turn: the longest gap between turns of a setImmediate probe, less the time the main thread waited for a CPU meanwhile (/proc/thread-self/schedstat; GC and I/O waits count), gc() before each case; cases that change nothing run ${REPEATS} times and report the median run; default limits; manual clock (only the hour's-gap case moves it: an hour, then on with real time); SQLite synchronous=normal, reopened before recovery`)
scenario.note('mass disconnect closes every session in one turn, as a gateway whose connections all drop at once, and probes a second more (its total is the closing turn); refused inserts are all issued in one turn')
scenario.done()
