// Scenario 4: insert throughput with 10,000 subscribers on other devices against none: an
// insert must not touch the handlers of other devices.
import { join } from 'node:path'
import { createBroker, memoryStore, signToken, sqliteStore, type Store } from '../lib/index.js'
import { check, heapUsed, pool, quick, Scenario, seconds, SECRET, tempDir } from './common.js'

const TOTAL = quick ? 2000 : 100_000
const SUBSCRIBERS = quick ? 1000 : 10_000
const DEVICES = 100
const ROUNDS = quick ? 1 : 3
const token = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'], e: Date.now() + 3_600_000 }, { secret: SECRET })
const dir = tempDir()
let files = 0

async function run (store: Store, subscribers: number): Promise<number> {
  // Start each run from a collected heap, so no run pays for the garbage of the one before.
  heapUsed()
  const broker = createBroker(store, { secret: SECRET })
  for (let d = 0; d < DEVICES; d++) {
    await broker.handle({ action: 'device/save', deviceId: `dev-${d}`, device: { name: `dev-${d}`, networkId: 1, deviceTypeId: 1 } }, token)
  }
  let touched = 0
  for (let s = 0; s < subscribers; s++) broker.subscribe({ deviceId: `other-${s}` }, () => { touched++ })
  const session = broker.session(() => {})
  await session.handle({ action: 'authenticate', token })
  let ok = 0
  const elapsed = await seconds(() => pool(TOTAL, 1000, async (i) => {
    const reply = await session.handle({ action: 'command/insert', deviceId: `dev-${i % DEVICES}`, command: { command: 'set', parameters: { i } } })
    if (reply.status === 'success') ok++
  }))
  check(ok === TOTAL && store.lastCommandId() === TOTAL, 'fan-out: every insert stored')
  check(touched === 0, `fan-out: ${touched} handlers of other devices ran`)
  await broker.close()
  return TOTAL / elapsed
}

function median (values: number[]): number {
  return [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number
}

const scenario = new Scenario('fan-out isolation')
for (const [name, open] of [
  ['SQLite', () => sqliteStore(join(dir, `fan-${files++}.db`), { synchronous: 'normal' })],
  ['memory', () => memoryStore()]
] as const) {
  const none: number[] = []
  const many: number[] = []
  // Alternate which goes first, so neither always runs on a warmer process.
  for (let round = 0; round < ROUNDS; round++) {
    if (round % 2 === 0) {
      none.push(await run(open(), 0))
      many.push(await run(open(), SUBSCRIBERS))
    } else {
      many.push(await run(open(), SUBSCRIBERS))
      none.push(await run(open(), 0))
    }
  }
  scenario.figure(`${name}, no subscribers`, median(none), 'inserts/s')
  scenario.figure(`${name}, ${SUBSCRIBERS} subscribers on other devices`, median(many), 'inserts/s')
  scenario.figure(`${name}, with / without`, median(many) / median(none), 'ratio')
  scenario.goal(`${name}: within 10% with ${SUBSCRIBERS} subscribers elsewhere`, median(many) / median(none), 'min', 0.9)
}
scenario.note(`${TOTAL} inserts over ${DEVICES} devices, 1000 in flight; runs alternate (and swap order), ${ROUNDS} each, medians, gc() before each; no handler of another device ran`)
scenario.done()
