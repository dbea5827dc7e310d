// Scenario: cross-process push latency on postgresStore. Broker A runs in a child process
// (bench/cluster-child.ts) and inserts; broker B runs in this process with a session subscribed
// to every device, so each push is timed on one clock: from the moment this process sends A
// the insert request over IPC to the moment B's session is pushed the command. First the
// maximum rate of the setup (A inserting with 1000 in flight, until B has been pushed every
// one), then a steady 20% of it, each insert sent at its own slot in time.
import { performance } from 'node:perf_hooks'
import { createBroker, postgresStore, signToken } from '../lib/index.js'
import { quantile, quick, SECRET, type Scenario } from './common.js'
import { verify, withPostgres, type Postgres } from './pg.js'

const DEVICES = 100
const PROBE = quick ? 2000 : 20_000
const DURATION_S = quick ? 1 : 10
const token = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'], e: Date.now() + 3_600_000 }, { secret: SECRET })
// Inserts are numbered across the probe and the steady run: parameters { i }.
const sentAt = new Map<number, number>()
const pushes = new Map<number, number>()
const latencies: number[] = []
let wanted: { count: number, resolve: () => void } | undefined

function pushed (i: number): void {
  const seen = (pushes.get(i) ?? 0) + 1
  pushes.set(i, seen)
  const sent = sentAt.get(i)
  if (seen === 1 && sent !== undefined) latencies.push(performance.now() - sent)
  if (wanted !== undefined && pushes.size >= wanted.count) wanted.resolve()
}

// Resolves once `count` distinct inserts have been pushed in all; fails after `ms`.
async function pushedAll (count: number, ms: number): Promise<void> {
  if (pushes.size >= count) return
  let timer: NodeJS.Timeout | undefined
  await Promise.race([
    new Promise<void>((resolve) => { wanted = { count, resolve } }),
    new Promise<void>((_resolve, reject) => {
      timer = setTimeout(() => { reject(new Error(`${pushes.size} of ${count} inserts pushed after ${ms} ms`)) }, ms)
    })
  ])
  clearTimeout(timer)
  wanted = undefined
}

await withPostgres('cluster push latency', async (db: Postgres, scenario: Scenario) => {
  const schema = db.schema('latency')
  const b = createBroker(postgresStore({ schema }), { secret: SECRET })
  const errors: string[] = []
  b.on('error', (err) => { errors.push(`${err.code}: ${err.message}`) })
  try {
    await b.ready
    for (let d = 0; d < DEVICES; d++) {
      const reply = await b.handle({ action: 'device/save', deviceId: `dev-${d}`, device: { name: `dev-${d}`, networkId: 1 } }, token)
      verify(reply.status === 'success', `device/save: ${JSON.stringify(reply)}`)
    }
    const session = b.session((push) => {
      if (push.action === 'command/insert') pushed((push.command.parameters as { i: number }).i)
    })
    await session.handle({ action: 'authenticate', token })
    const subscribed = await session.handle({ action: 'command/subscribe', networkIds: [1] })
    verify(subscribed.status === 'success', `subscribe: ${JSON.stringify(subscribed)}`)
    const a = await db.child(schema)

    // The maximum: A inserts PROBE commands, 1000 in flight, and B must be pushed every one.
    const probeStart = performance.now()
    const probe = await a.ask({ op: 'inserts', from: 0, count: PROBE, inFlight: 1000, devices: DEVICES, lifetime: 3600 }) as { ok: number }
    verify(probe.ok === PROBE, `probe: ${probe.ok} of ${PROBE} inserts succeeded`)
    await pushedAll(PROBE, 60_000)
    const maxRate = PROBE / ((performance.now() - probeStart) / 1000)

    // A steady 20% of it, each insert sent over IPC at its own slot in time, however the others fare.
    const rate = maxRate * 0.2
    const total = Math.max(1, Math.floor(rate * DURATION_S))
    let failed = 0
    let answered = 0
    const acks: number[] = []
    const start = performance.now()
    await new Promise<void>((resolve) => {
      let issued = 0
      const tick = (): void => {
        const due = Math.min(total, Math.floor(((performance.now() - start) / 1000) * rate) + 1)
        for (; issued < due; issued++) {
          const i = PROBE + issued
          sentAt.set(i, performance.now())
          void a.ask({
            op: 'handle',
            message: { action: 'command/insert', deviceId: `dev-${i % DEVICES}`, command: { command: 'set', parameters: { i }, lifetime: 3600 } }
          }).then((reply: { status: string }) => {
            acks.push(performance.now() - (sentAt.get(i) as number))
            if (reply.status !== 'success') failed++
            if (++answered === total) resolve()
          })
        }
        if (issued < total) setTimeout(tick, 1)
      }
      tick()
    })
    verify(failed === 0, `steady: ${failed} of ${total} inserts failed`)
    await pushedAll(PROBE + total, 30_000)
    // A second push of any of them would come within a few ms: give it a moment.
    await new Promise((resolve) => setTimeout(resolve, 200))
    const twice = [...pushes.values()].filter((count) => count !== 1).length
    verify(pushes.size === PROBE + total && twice === 0, `pushes: ${pushes.size} distinct of ${PROBE + total}, ${twice} more than once`)
    verify(latencies.length === total, `${latencies.length} latencies for ${total} inserts`)
    const { rows } = await db.admin.query(`SELECT count(*)::int AS n FROM "${schema}".commands`)
    verify(rows[0].n === PROBE + total, `${String(rows[0].n)} commands stored, not ${PROBE + total}`)
    verify(errors.length === 0 && a.errors.length === 0, `broker errors: ${[...errors, ...a.errors].join('; ')}`)
    await a.ask({ op: 'close' })

    latencies.sort((x, y) => x - y)
    acks.sort((x, y) => x - y)
    scenario.figure('maximum rate, insert on A to push on B, 1000 in flight', maxRate, 'inserts/s')
    scenario.figure('steady rate (20% of maximum)', rate, 'inserts/s')
    scenario.figure('p50', quantile(latencies, 0.5), 'ms')
    scenario.figure('p99', quantile(latencies, 0.99), 'ms')
    scenario.figure('max', latencies[latencies.length - 1] as number, 'ms')
    scenario.figure('A\'s reply back here (acknowledgement), p50', quantile(acks, 0.5), 'ms')
    scenario.figure('A\'s reply back here (acknowledgement), p99', quantile(acks, 0.99), 'ms')
    scenario.goal('p99 under 10 ms', quantile(latencies, 0.99), 'max', 10)
    scenario.note(`${total} inserts over ${DURATION_S} s across ${DEVICES} devices, each timed in this process from sending broker A (a child process) its request over IPC to broker B's session push here; every insert pushed exactly once`)
  } finally {
    await b.close()
  }
})
