// `npm run soak [-- --minutes N] [-- --fraction F | --rate R] [-- --update-every K] [-- --checkpoint inline] [-- --cache-mib M]`
// (not in CI): N minutes (default 5) of inserts, updates and expiries at F (default 0.5) of the
// measured maximum insert rate, or at R inserts/s (the steady rate bench/steady.ts found, to hold
// it for 10 minutes: `--minutes 10 --rate R`), on SQLite with the real clock. One command in K
// (default 2) is answered with command/update; every one has a lifetime of 10..60 s. Prints heap,
// RSS, file, WAL, pending and expiry lag every 30 s and fails if, once the load has reached its
// steady state (after 90 s: the longest lifetime plus a margin), the heap, the file or the pending
// set keep growing, the WAL passes 128 MiB, or expiry falls behind (its lag past 1 s).
// `--cache-mib M` sets the store's page cache (cacheBytes) to M MiB instead of its default.
import { statSync } from 'node:fs'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { createBroker, signToken, sqliteStore } from '../lib/index.js'
import { check, heapUsed, pool, seconds, SECRET, tempDir } from './common.js'

const arg = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(`--${name}`)
  return i === -1 ? fallback : process.argv[i + 1] ?? fallback
}
const MINUTES = Number(arg('minutes', '5'))
const FRACTION = Number(arg('fraction', '0.5'))
const RATE = Number(arg('rate', '0'))
const UPDATE_EVERY = Number(arg('update-every', '2'))
const CHECKPOINT = arg('checkpoint', 'background')
const CACHE_MIB = arg('cache-mib', '')
check(MINUTES > 0, '--minutes must be a positive number')
check(FRACTION > 0 && FRACTION <= 1, '--fraction must be in (0, 1]')
check(RATE >= 0, '--rate must be a positive number of inserts/s')
check(Number.isSafeInteger(UPDATE_EVERY) && UPDATE_EVERY >= 1, '--update-every must be a positive integer')
check(CHECKPOINT === 'background' || CHECKPOINT === 'inline', '--checkpoint must be background or inline')
check(CACHE_MIB === '' || Number.isSafeInteger(Number(CACHE_MIB)), '--cache-mib must be a whole number of MiB')
const DEVICES = 1000
// Lifetimes 10..60 s: commands expire all along, and the pending set stops growing after 60 s.
const lifetime = (i: number): number => 10 + (i % 51)
const SAMPLE_MS = 30_000
const WARM_UP_MS = 90_000
const token = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'], e: Date.now() + 86_400_000 }, { secret: SECRET })
const path = join(tempDir(), 'soak.db')
const bytes = (file: string): number => statSync(file, { throwIfNoEntry: false })?.size ?? 0
const store = sqliteStore(path, {
  synchronous: 'normal',
  checkpoint: CHECKPOINT as 'background' | 'inline',
  ...(CACHE_MIB === '' ? {} : { cacheBytes: Number(CACHE_MIB) * 2 ** 20 })
})
const broker = createBroker(store, { secret: SECRET })
broker.on('error', (err) => { console.error(`soak: ${err.code}: ${err.message}`); process.exitCode = 1 })
let expired = 0
broker.on('expired', () => { expired++ })
for (let d = 0; d < DEVICES; d++) {
  await broker.handle({ action: 'device/save', deviceId: `dev-${d}`, device: { name: `dev-${d}`, networkId: 1 } }, token)
}
const session = broker.session(() => {})
await session.handle({ action: 'authenticate', token })

let sent = 0
let failures = 0
let updates = 0
let inFlight = 0
const insert = async (i: number): Promise<void> => {
  inFlight++
  try {
    await insertAndUpdate(i)
  } finally {
    inFlight--
  }
}
const insertAndUpdate = async (i: number): Promise<void> => {
  const deviceId = `dev-${i % DEVICES}`
  const reply = await session.handle({ action: 'command/insert', deviceId, command: { command: 'set', parameters: { i }, lifetime: lifetime(i) } })
  if (reply.status !== 'success') {
    if (failures++ < 5) console.error(`soak: insert failed: ${JSON.stringify(reply)}`)
    return
  }
  // One command in UPDATE_EVERY is answered by its device, as a real one would.
  if (i % UPDATE_EVERY === 0) {
    const id = (reply.command as { id: number }).id
    const update = await session.handle({ action: 'command/update', deviceId, commandId: id, command: { status: 'done', result: { ok: true } } })
    if (update.status === 'success') updates++
    else if (failures++ < 5) console.error(`soak: update failed: ${JSON.stringify(update)}`)
  }
}

const probe = 20_000
const maxRate = probe / await seconds(() => pool(probe, 1000, async () => { await insert(sent++) }))
const rate = RATE > 0 ? RATE : maxRate * FRACTION
console.log(`soak: maximum ${Math.round(maxRate)} inserts/s; running ${MINUTES} min at ${Math.round(rate)}/s (${(rate / maxRate).toFixed(2)} of it), ` +
  `one in ${UPDATE_EVERY} updated, checkpoints ${CHECKPOINT}, page cache ${CACHE_MIB === '' ? 'default' : `${CACHE_MIB} MiB`}`)

interface Sample { at: number, heap: number, rss: number, file: number, wal: number, pending: number, lag: number }
const samples: Sample[] = []
// The largest expiry lag and WAL seen since the last sample, read every second.
let lag = 0
let wal = 0
let pending = 0
let nextRead = 0
const mib = (n: number): string => (n / 2 ** 20).toFixed(1)
const start = performance.now()
const end = start + MINUTES * 60_000
await new Promise<void>((resolve) => {
  let issued = 0
  let nextSample = start + SAMPLE_MS
  const tick = (): void => {
    const now = performance.now()
    const due = Math.floor(((Math.min(now, end) - start) / 1000) * rate)
    for (; issued < due; issued++) void insert(sent++)
    if (now >= nextRead) {
      nextRead = now + 1000
      wal = Math.max(wal, bytes(`${path}-wal`))
      void broker.stats().then((stats) => {
        lag = Math.max(lag, stats.expiryLag)
        pending = stats.timers
      })
    }
    if (now >= nextSample) {
      nextSample += SAMPLE_MS
      const sample = { at: now - start, heap: heapUsed(), rss: process.memoryUsage().rss, file: bytes(path), wal, pending, lag }
      lag = 0
      wal = 0
      samples.push(sample)
      console.log(`soak: ${(sample.at / 1000).toFixed(0)} s  heap ${mib(sample.heap)} MiB  rss ${mib(sample.rss)} MiB  file ${mib(sample.file)} MiB  ` +
        `WAL up to ${mib(sample.wal)} MiB  pending ${sample.pending}  expiry lag up to ${sample.lag} ms  sent ${sent}  expired ${expired}  updated ${updates}`)
    }
    if (now < end) setTimeout(tick, 1)
    else resolve()
  }
  tick()
})
// Let every request sent finish (an insert's update follows its reply) before closing.
while (inFlight > 0) await new Promise(setImmediate)
await broker.close()

check(failures === 0, `soak: ${failures} requests failed`)
const steady = samples.filter((s) => s.at >= WARM_UP_MS)
if (steady.length >= 2) {
  const first = steady[0] as typeof steady[number]
  const last = steady[steady.length - 1] as typeof steady[number]
  // Steady state: the heap, the file and the pending set may wobble, but not climb past 10%
  // (plus 8 MiB of heap, 4 MiB of file, 1000 commands); the WAL stays under twice its 64 MiB
  // journal_size_limit; expiry fires within a second of when it is due.
  const allowed = first.heap * 1.1 + 8 * 2 ** 20
  console.log(`soak: steady-state heap ${mib(first.heap)} -> ${mib(last.heap)} MiB (allowed up to ${mib(allowed)}), ` +
    `file ${mib(first.file)} -> ${mib(last.file)} MiB, pending ${first.pending} -> ${last.pending}, ` +
    `WAL up to ${mib(Math.max(...steady.map((s) => s.wal)))} MiB, expiry lag up to ${Math.max(...steady.map((s) => s.lag))} ms`)
  check(last.heap <= allowed, 'soak: the heap grows without bound after the warm-up')
  check(last.file <= first.file * 1.1 + 4 * 2 ** 20, 'soak: the file grows without bound after the warm-up')
  check(last.pending <= first.pending * 1.1 + 1000, 'soak: the pending set grows after the warm-up: expiry falls behind')
  check(steady.every((s) => s.wal <= 128 * 2 ** 20), 'soak: the WAL passed 128 MiB')
  check(steady.every((s) => s.lag <= 1000), 'soak: expiry fell more than 1 s behind')
} else {
  console.log('soak: too short to judge growth (needs at least 2 samples after the 90 s warm-up)')
}
console.log(`soak: done. sent ${sent}, expired ${expired}, updated ${updates}, failures ${failures}`)
