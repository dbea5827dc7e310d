// `npm run soak [-- --minutes N] [-- --fraction F] [-- --checkpoint inline]` (not in CI):
// N minutes (default 5) of inserts, updates and expiries at F (default 0.5) of the measured
// maximum insert rate, on SQLite with the real clock. Prints heap and RSS every 30 s and fails
// if the heap keeps growing once the load has reached steady state, or if expiry falls behind.
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
const CHECKPOINT = arg('checkpoint', 'background')
check(MINUTES > 0, '--minutes must be a positive number')
check(FRACTION > 0 && FRACTION <= 1, '--fraction must be in (0, 1]')
check(CHECKPOINT === 'background' || CHECKPOINT === 'inline', '--checkpoint must be background or inline')
const DEVICES = 1000
// Lifetimes 10..60 s: commands expire all along, and the pending set stops growing after 60 s.
const lifetime = (i: number): number => 10 + (i % 51)
const SAMPLE_MS = 30_000
const WARM_UP_MS = 90_000
const token = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'], e: Date.now() + 86_400_000 }, { secret: SECRET })
const store = sqliteStore(join(tempDir(), 'soak.db'), { synchronous: 'normal', checkpoint: CHECKPOINT as 'background' | 'inline' })
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
  // Every third command is answered by its device, as a real one would.
  if (i % 3 === 0) {
    const id = (reply.command as { id: number }).id
    const update = await session.handle({ action: 'command/update', deviceId, commandId: id, command: { status: 'done', result: { ok: true } } })
    if (update.status === 'success') updates++
    else if (failures++ < 5) console.error(`soak: update failed: ${JSON.stringify(update)}`)
  }
}

const probe = 20_000
const maxRate = probe / await seconds(() => pool(probe, 1000, async () => { await insert(sent++) }))
const rate = maxRate * FRACTION
console.log(`soak: maximum ${Math.round(maxRate)} inserts/s; running ${MINUTES} min at ${Math.round(rate)}/s (${FRACTION} of it), checkpoints ${CHECKPOINT}`)

const samples: Array<{ at: number, heap: number, rss: number }> = []
const start = performance.now()
const end = start + MINUTES * 60_000
await new Promise<void>((resolve) => {
  let issued = 0
  let nextSample = start + SAMPLE_MS
  const tick = (): void => {
    const now = performance.now()
    const due = Math.floor(((Math.min(now, end) - start) / 1000) * rate)
    for (; issued < due; issued++) void insert(sent++)
    if (now >= nextSample) {
      nextSample += SAMPLE_MS
      const sample = { at: now - start, heap: heapUsed(), rss: process.memoryUsage().rss }
      samples.push(sample)
      console.log(`soak: ${(sample.at / 1000).toFixed(0)} s  heap ${(sample.heap / 2 ** 20).toFixed(1)} MiB  rss ${(sample.rss / 2 ** 20).toFixed(1)} MiB  sent ${sent}  expired ${expired}  updated ${updates}`)
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
  // Steady state: the heap may wobble with the pending set, but not climb past 10% + 8 MiB.
  const allowed = first.heap * 1.1 + 8 * 2 ** 20
  console.log(`soak: steady-state heap ${(first.heap / 2 ** 20).toFixed(1)} -> ${(last.heap / 2 ** 20).toFixed(1)} MiB (allowed up to ${(allowed / 2 ** 20).toFixed(1)})`)
  check(last.heap <= allowed, 'soak: the heap grows without bound after the warm-up')
} else {
  console.log('soak: too short to judge heap growth (needs at least 2 samples after the 90 s warm-up)')
}
console.log(`soak: done. sent ${sent}, expired ${expired}, updated ${updates}, failures ${failures}`)
