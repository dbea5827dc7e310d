// Scenario 2: latency of handle() for an insert at a steady 20% of the measured maximum rate.
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { createBroker, signToken, sqliteStore } from '../lib/index.js'
import { check, pool, quantile, quick, Scenario, seconds, SECRET, tempDir } from './common.js'

const DEVICES = 100
const PROBE = quick ? 2000 : 50_000
const DURATION_S = quick ? 0.5 : 10
const token = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'], e: Date.now() + 3_600_000 }, { secret: SECRET })
const store = sqliteStore(join(tempDir(), 'latency.db'), { synchronous: 'normal' })
const broker = createBroker(store, { secret: SECRET })
for (let d = 0; d < DEVICES; d++) {
  await broker.handle({ action: 'device/save', deviceId: `dev-${d}`, device: { name: `dev-${d}`, networkId: 1 } }, token)
}
const session = broker.session(() => {})
await session.handle({ action: 'authenticate', token })
const insert = (i: number): Record<string, unknown> => ({
  action: 'command/insert', requestId: i, deviceId: `dev-${i % DEVICES}`, command: { command: 'set', parameters: { i }, lifetime: 3600 }
})

// The maximum: 1,000 in flight.
let sent = 0
const maxRate = PROBE / await seconds(() => pool(PROBE, 1000, async () => { await session.handle(insert(sent++)) }))

// A steady 20% of it: each insert is sent at its own slot in time, however the others fare.
const rate = maxRate * 0.2
const total = Math.floor(rate * DURATION_S)
const latencies: number[] = []
let failed = 0
const start = performance.now()
await new Promise<void>((resolve) => {
  let issued = 0
  let settled = 0
  const tick = (): void => {
    const due = Math.min(total, Math.floor(((performance.now() - start) / 1000) * rate))
    for (; issued < due; issued++) {
      const began = performance.now()
      void session.handle(insert(sent++)).then((reply) => {
        latencies.push(performance.now() - began)
        if (reply.status !== 'success') failed++
        if (++settled === total) resolve()
      })
    }
    if (issued < total) setTimeout(tick, 1)
  }
  tick()
})
latencies.sort((a, b) => a - b)
check(failed === 0 && latencies.length === total, `latency: ${failed} of ${total} inserts failed`)
check(store.lastCommandId() === sent, 'latency: every insert stored')
await broker.close()

const scenario = new Scenario('latency')
scenario.figure('maximum rate, 1000 in flight', maxRate, 'inserts/s')
scenario.figure('steady rate (20% of maximum)', rate, 'inserts/s')
scenario.figure('p50', quantile(latencies, 0.5), 'ms')
scenario.figure('p99', quantile(latencies, 0.99), 'ms')
scenario.figure('max', latencies[latencies.length - 1] as number, 'ms')
scenario.goal('p99 under 2 ms', quantile(latencies, 0.99), 'max', 2)
scenario.note(`${total} inserts over ${DURATION_S} s on SQLite (WAL, synchronous=NORMAL), each timed from its handle() call to its reply`)
scenario.done()
