import t from 'tap'
import { performance } from 'node:perf_hooks'
import { manualClock } from '../lib/manual-clock.js'
import { Pacer, stopwatch, TURN_MS } from '../lib/turns.js'

// A stopwatch that moves only when a test says.
function watch (): { read: () => number, spend: (ms: number) => void } {
  let now = 0
  return { read: () => now, spend: (ms) => { now += ms } }
}

t.test('turns: a pacer starts with pieces of 64, or max if smaller', async (t) => {
  t.equal(new Pacer(() => 0, 1000).size, 64)
  t.equal(new Pacer(() => 0, 10).size, 10)
})

t.test('turns: a pacer sizes the next piece to half the budget at the last piece\'s cost per item', async (t) => {
  const clock = watch()
  const pacer = new Pacer(clock.read, 1000, 10)
  pacer.begin()
  t.equal(pacer.run(64, () => { clock.spend(6.4); return 'done' }), 'done', 'returns what the piece returns')
  t.equal(pacer.size, 50, '0.1 ms an item: 5 ms is 50 items')
  t.equal(pacer.spent, false, '6.4 of 10 ms')
  pacer.run(50, () => { clock.spend(5) })
  t.equal(pacer.spent, true, '11.4 of 10 ms')
  pacer.begin()
  t.equal(pacer.spent, false, 'a new turn, a new budget')
  pacer.run(50, () => { clock.spend(50) })
  t.equal(pacer.size, 5, 'slower: 1 ms an item')
  pacer.run(5, () => { clock.spend(500) })
  t.equal(pacer.size, 1, 'never under one item, however slow')
})

t.test('turns: a pacer grows pieces at most twofold, up to max', async (t) => {
  const clock = watch()
  const pacer = new Pacer(clock.read, 300)
  pacer.run(64, () => { clock.spend(0.001) })
  t.equal(pacer.size, 128, 'cheap: doubled')
  pacer.run(128, () => {})
  t.equal(pacer.size, 256, 'free (no time passed): doubled')
  pacer.run(256, () => {})
  t.equal(pacer.size, 300, 'capped at max')
})

t.test('turns: a piece that throws still teaches the pacer its cost, and the error goes on', async (t) => {
  const clock = watch()
  const pacer = new Pacer(clock.read, 1000)
  t.throws(() => pacer.run(64, () => { clock.spend(64); throw new Error('boom') }), /boom/)
  t.equal(pacer.size, 2, '1 ms an item: 2.5 ms is 2 items')
})

t.test('turns: the default budget is TURN_MS, 5 ms', async (t) => {
  t.equal(TURN_MS, 5)
  const clock = watch()
  const pacer = new Pacer(clock.read, 1000)
  pacer.begin()
  clock.spend(4.9)
  t.equal(pacer.spent, false)
  clock.spend(0.1)
  t.equal(pacer.spent, true)
})

t.test('turns: a stopwatch reads the clock\'s elapsed(), else performance.now()', async (t) => {
  t.equal(stopwatch(manualClock(5000))(), 0, 'a manual clock\'s')
  const clock = { now: () => 0, setTimeout: () => 0, clearTimeout: () => {}, count: 0, elapsed () { return ++this.count } }
  const read = stopwatch(clock)
  t.equal(read(), 1, 'called on the clock')
  t.equal(read(), 2)
  const before = performance.now()
  const real = stopwatch({ now: () => 0, setTimeout: () => 0, clearTimeout: () => {} })()
  t.ok(real >= before && real <= performance.now(), 'performance.now() without one')
})
