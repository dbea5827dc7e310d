// Scenario: the commands of a killed process expire elsewhere. Broker A, in a child process
// (bench/cluster-child.ts), inserts commands with a lifetime of 2 s in waves spread over a
// sweep period (so their due times fall at every phase of the survivor's sweep), and is
// SIGKILLed as soon as the last wave is acknowledged, before any is due. Broker B, in this
// process on the real clock, must emit `expired` for each, exactly once: it finds them by its
// sweep (lib/expiry.ts: every SWEEP_MS, the commands a tick overdue that no broker expired).
// The delay of each is from its due time (its timestamp, A's wall clock, plus its lifetime) to
// B's `expired` event (Date.now(); one machine, one wall clock).
import { performance } from 'node:perf_hooks'
import { createBroker, postgresStore, signToken } from '../lib/index.js'
import { SWEEP_MS } from '../lib/expiry.js'
import { quantile, quick, SECRET, type Scenario } from './common.js'
import { verify, withPostgres, type Postgres } from './pg.js'

const DEVICES = 100
const TICK = 100
const LIFETIME_S = 2
const WAVES = quick ? 2 : 10
const PER_WAVE = quick ? 50 : 200
const WAVE_GAP_MS = SWEEP_MS / WAVES
// A query's worth of room on top of tick + SWEEP_MS.
const BOUND = TICK + SWEEP_MS + 100
const token = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'], e: Date.now() + 3_600_000 }, { secret: SECRET })
const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

await withPostgres('cluster expiry of a killed process', async (db: Postgres, scenario: Scenario) => {
  const schema = db.schema('expiry')
  const b = createBroker(postgresStore({ schema }), { secret: SECRET, tick: TICK })
  const errors: string[] = []
  const expired = new Map<number, number[]>()
  b.on('error', (err) => { errors.push(`${err.code}: ${err.message}`) })
  b.on('expired', (command) => {
    const at = Date.now()
    expired.set(command.id, [...expired.get(command.id) ?? [], at])
  })
  try {
    await b.ready
    for (let d = 0; d < DEVICES; d++) {
      const reply = await b.handle({ action: 'device/save', deviceId: `dev-${d}`, device: { name: `dev-${d}`, networkId: 1 } }, token)
      verify(reply.status === 'success', `device/save: ${JSON.stringify(reply)}`)
    }
    const a = await db.child(schema)
    let childExpired = 0
    a.onExpired = () => { childExpired++ }

    // Waves of inserts on A, WAVE_GAP_MS apart, each waited for; then SIGKILL at once.
    const due = new Map<number, number>()
    const first = performance.now()
    for (let wave = 0; wave < WAVES; wave++) {
      const next = first + wave * WAVE_GAP_MS
      const wait = next - performance.now()
      if (wait > 0) await sleep(wait)
      const { ok, acks } = await a.ask({
        op: 'inserts', from: wave * PER_WAVE, count: PER_WAVE, inFlight: PER_WAVE, devices: DEVICES, lifetime: LIFETIME_S
      }) as { ok: number, acks: Array<[number, number, string]> }
      verify(ok === PER_WAVE, `wave ${wave}: ${ok} of ${PER_WAVE} inserts succeeded`)
      for (const [, id, timestamp] of acks) due.set(id, Date.parse(`${timestamp}Z`) + LIFETIME_S * 1000)
    }
    a.kill()
    const killedAt = Date.now()
    const total = WAVES * PER_WAVE
    verify(due.size === total, `${due.size} distinct ids acknowledged, not ${total}`)
    const firstDue = Math.min(...due.values())
    const lastDue = Math.max(...due.values())
    verify(killedAt < firstDue - 100, `A was killed ${killedAt - firstDue + 100} ms too late: it could have expired some itself`)
    await new Promise((resolve) => { if (a.process.exitCode !== null || a.process.signalCode !== null) resolve(undefined); else a.process.once('exit', resolve) })

    // Every one must expire on B: wait for the last to be a bound overdue, and a sweep more.
    const deadline = lastDue + BOUND + 5000
    while (expired.size < total && Date.now() < deadline) await sleep(20)
    // A second report would come by the next sweep.
    await sleep(SWEEP_MS + TICK)
    const missing = [...due.keys()].filter((id) => !expired.has(id))
    const twice = [...expired.values()].filter((ats) => ats.length > 1).length
    const strangers = [...expired.keys()].filter((id) => !due.has(id)).length
    verify(missing.length === 0, `${missing.length} of ${total} commands never expired on B (e.g. ${missing.slice(0, 5).join(', ')})`)
    verify(twice === 0 && strangers === 0 && childExpired === 0, `${twice} expired more than once, ${strangers} unknown ids, ${childExpired} expired by A`)
    const { rows } = await db.admin.query(`SELECT count(*)::int AS n FROM "${schema}".commands`)
    verify(rows[0].n === 0, `${String(rows[0].n)} commands left in the store`)
    verify(errors.length === 0, `broker errors: ${errors.join('; ')}`)

    const delays = [...due].map(([id, at]) => (expired.get(id) as number[])[0] as number - at).sort((x, y) => x - y)
    scenario.figure('delay from due to expired on B, p50', quantile(delays, 0.5), 'ms')
    scenario.figure('delay from due to expired on B, max', delays[delays.length - 1] as number, 'ms')
    scenario.figure('delay from due to expired on B, min', delays[0] as number, 'ms')
    scenario.figure('expected bound: tick + SWEEP_MS', TICK + SWEEP_MS, 'ms')
    scenario.goal(`every orphan expired within tick + SWEEP_MS + 100 ms (${BOUND} ms)`, delays[delays.length - 1] as number, 'max', BOUND)
    scenario.note(`${total} commands of lifetime ${LIFETIME_S} s inserted on A in ${WAVES} waves ${WAVE_GAP_MS} ms apart, A SIGKILLed ${firstDue - killedAt} ms before the first was due; B (this process, tick ${TICK} ms) expired each exactly once`)
  } finally {
    await b.close()
  }
})
