import t from 'tap'
import { performance } from 'node:perf_hooks'
import fc from 'fast-check'
import { TimerWheel, type TimerWheelOptions } from '../lib/timer-wheel.js'
import { manualClock, type ManualClock } from '../lib/manual-clock.js'
import type { Clock, TimerHandle } from '../lib/clock.js'

interface Firing {
  key: number
  now: number
}

type WheelSettings = Omit<TimerWheelOptions, 'onExpire' | 'clock'>

// A wheel on a manual clock that records every key handed out, with the time it was handed out.
function setup (settings: WheelSettings = {}, start = 0): {
  clock: ManualClock
  wheel: TimerWheel
  fired: Firing[]
  calls: number[][]
  keys: () => number[]
} {
  const clock = manualClock(start)
  const fired: Firing[] = []
  const calls: number[][] = []
  const wheel = new TimerWheel({
    ...settings,
    clock,
    onExpire (keys) {
      calls.push([...keys])
      for (const key of keys) fired.push({ key, now: clock.now() })
    }
  })
  return { clock, wheel, fired, calls, keys: () => fired.map((f) => f.key).sort((a, b) => a - b) }
}

// A clock whose wall time can be stepped (like Date.now under NTP) while its timers keep
// counting real elapsed time (like Node's monotonic timers).
function steppableClock (start = 0): { clock: Clock, base: ManualClock, step: (ms: number) => void } {
  const base = manualClock(0)
  let offset = start
  return {
    base,
    step (ms) { offset += ms },
    clock: {
      now: () => base.now() + offset,
      // Like the manual clock under it, work takes no time: only counts bound a turn, so a
      // test that advances many times in one turn is not cut short by the machine's speed.
      elapsed: () => 0,
      setTimeout: (callback, ms) => base.setTimeout(callback, ms),
      clearTimeout: (handle) => { base.clearTimeout(handle) }
    }
  }
}

const turn = async (): Promise<void> => { await new Promise(setImmediate) }

t.test('timer-wheel: fires each timer once', async (t) => {
  const { clock, wheel, fired, keys } = setup({ tick: 10 })
  const ats = [5, 10, 11, 25, 25, 99, 100, 250, 1000]
  ats.forEach((at, i) => { wheel.add(i, at) })
  t.equal(wheel.size, ats.length)
  for (let i = 0; i < 120; i++) clock.advance(10)
  t.same(keys(), ats.map((_, i) => i), 'every key exactly once')
  t.equal(fired.length, ats.length)
  t.equal(wheel.size, 0)
  clock.advance(100_000)
  t.equal(fired.length, ats.length, 'nothing fires again')
})

t.test('timer-wheel: lag is how late the most overdue entry of the last firing fired', async (t) => {
  const { clock, wheel, fired } = setup({ tick: 10 })
  t.equal(wheel.lag, 0, 'none before a firing')
  wheel.add(1, 25)
  clock.advance(100)
  t.equal(wheel.lag, (fired[0]?.now as number) - 25, 'when it fired, less when it was due')
  t.ok(wheel.lag <= 10, 'within a tick')
  // Entries already overdue when added fire at the next tick, as late as they were.
  wheel.add(2, clock.now() - 500)
  wheel.add(3, clock.now() - 200)
  clock.advance(10)
  t.ok(wheel.lag >= 500, 'the most overdue one counts')
})

t.test('timer-wheel: a key added twice fires twice', async (t) => {
  const { clock, wheel, keys } = setup({ tick: 10 })
  wheel.add(7, 30)
  wheel.add(7, 30)
  wheel.add(7, 55)
  t.equal(wheel.size, 3)
  clock.advance(30)
  t.same(keys(), [7, 7])
  clock.advance(30)
  t.same(keys(), [7, 7, 7])
})

t.test('timer-wheel: never fires early', async (t) => {
  const { clock, wheel, fired } = setup({ tick: 100 })
  const ats = new Map<number, number>()
  for (let at = 0; at <= 1000; at += 7) {
    ats.set(at, at)
    wheel.add(at, at + 0.5)
  }
  const problems: string[] = []
  let before = 0
  while (clock.now() < 1200) {
    clock.advance(1)
    for (const { key, now } of fired.slice(before)) {
      if (now < key + 0.5) problems.push(`key ${key} fired at ${now}, before ${key + 0.5}`)
      ats.delete(key)
    }
    for (const at of ats.keys()) {
      // Due but unfired: only allowed until its tick boundary.
      if (clock.now() >= Math.ceil((at + 0.5) / 100) * 100) problems.push(`key ${at} still pending at ${clock.now()}`)
    }
    before = fired.length
  }
  t.same(problems, [])
  t.equal(fired.length, 143)
  t.equal(ats.size, 0, 'all fired')
})

t.test('timer-wheel: an at on a tick boundary fires exactly on time', async (t) => {
  const { clock, wheel, fired } = setup({ tick: 100 }, 1000)
  wheel.add(1, 1300)
  wheel.add(2, 1100)
  clock.advance(99)
  t.same(fired, [], 'not at 1099')
  clock.advance(1)
  t.same(fired, [{ key: 2, now: 1100 }])
  clock.advance(199)
  t.equal(fired.length, 1)
  clock.advance(1)
  t.same(fired, [{ key: 2, now: 1100 }, { key: 1, now: 1300 }])
})

t.test('timer-wheel: an at on a tick boundary fires on time even in one long advance', async (t) => {
  const { clock, wheel, fired } = setup({ tick: 10, slots: 8 })
  for (const at of [20, 40, 80, 160, 640]) wheel.add(at, at)
  clock.advance(10_000)
  t.same(fired, [20, 40, 80, 160, 640].map((at) => ({ key: at, now: at })))
})

t.test('timer-wheel: at most one tick late', async (t) => {
  const tick = 10
  const { clock, wheel, fired } = setup({ tick, slots: 16 })
  const ats: number[] = []
  for (let at = 1; at < 500; at += 3.25) ats.push(at)
  ats.forEach((at, i) => { wheel.add(i, at) })
  clock.advance(600)
  t.equal(fired.length, ats.length)
  for (const { key, now } of fired) {
    const at = ats[key] as number
    t.ok(now >= at && now - at < tick, `at ${at} fired at ${now}`)
    t.equal(now, Math.ceil(at / tick) * tick, 'on the next tick boundary')
  }
})

t.test('timer-wheel: an earlier entry re-arms the timer', async (t) => {
  const { clock, wheel, fired } = setup({ tick: 10 })
  wheel.add(1, 1000)
  wheel.add(2, 100)
  wheel.add(3, 50)
  t.equal(clock.pending, 1)
  clock.advance(50)
  t.same(fired, [{ key: 3, now: 50 }])
  clock.advance(50)
  t.same(fired.at(-1), { key: 2, now: 100 })
  clock.advance(900)
  t.same(fired.at(-1), { key: 1, now: 1000 })
})

t.test('timer-wheel: entries in the past fire within a tick, on the next advance', async (t) => {
  const { clock, wheel, fired } = setup({ tick: 100 }, 10_000)
  wheel.add(1, 500)
  wheel.add(2, 9_999)
  wheel.add(3, 10_000)
  wheel.add(4, -3)
  t.equal(fired.length, 0, 'nothing fires synchronously from add')
  clock.advance(0)
  t.same(fired.map((f) => f.key).sort(), [1, 2, 3, 4])
  t.ok(fired.every((f) => f.now === 10_000), 'fired at the current time')
})

t.test('timer-wheel: entries behind the cursor go to the late list and fire at once', async (t) => {
  const { clock, wheel, fired } = setup({ tick: 100 })
  wheel.add(1, 250)
  clock.advance(300)
  t.same(fired, [{ key: 1, now: 300 }])
  // The cursor has moved past tick 3 now: these are behind it.
  wheel.add(2, 300)
  wheel.add(3, 120)
  wheel.add(4, 350) // ahead of the cursor: waits for 400
  clock.advance(0)
  t.same(fired.slice(1).map((f) => f.key).sort(), [2, 3])
  t.ok(fired.slice(1).every((f) => f.now === 300))
  clock.advance(99)
  t.equal(fired.length, 3)
  clock.advance(1)
  t.same(fired.at(-1), { key: 4, now: 400 })
})

t.test('timer-wheel: an entry in the past but ahead of the cursor still fires within a tick of its at', async (t) => {
  const { clock, wheel, fired } = setup({ tick: 100 }, 150)
  wheel.add(1, 120) // tick 2 is not behind the cursor: fires on the boundary at 200
  clock.advance(49)
  t.same(fired, [])
  clock.advance(1)
  t.same(fired, [{ key: 1, now: 200 }])
})

t.test('timer-wheel: add rejects a non-finite at', async (t) => {
  const { wheel, clock } = setup()
  for (const at of [NaN, Infinity, -Infinity]) {
    t.throws(() => { wheel.add(1, at) }, RangeError, `at ${String(at)}`)
  }
  t.throws(() => { wheel.add(1, NaN) }, /at must be a finite number/)
  t.equal(wheel.size, 0)
  t.equal(clock.pending, 0, 'nothing armed')
})

t.test('timer-wheel: cancel prevents firing', async (t) => {
  const { clock, wheel, fired } = setup({ tick: 10 })
  wheel.add(1, 50)
  wheel.add(2, 50)
  wheel.add(3, 55)
  t.equal(wheel.cancel(1, 50), true)
  t.equal(wheel.size, 2)
  t.equal(wheel.cancel(1, 50), false, 'only once')
  t.equal(wheel.cancel(3, 54), false, 'needs the same at')
  t.equal(wheel.cancel(99, 55), false, 'unknown key')
  t.equal(wheel.cancel(3, NaN), false, 'non-finite at')
  t.equal(wheel.cancel(3, Infinity), false)
  t.equal(wheel.size, 2)
  clock.advance(100)
  t.same(fired.map((f) => f.key).sort(), [2, 3])
  t.equal(wheel.cancel(2, 50), false, 'a fired entry cannot be cancelled')
})

t.test('timer-wheel: cancel removes only one of two equal entries', async (t) => {
  const { clock, wheel, fired } = setup({ tick: 10 })
  wheel.add(4, 20)
  wheel.add(4, 20)
  t.equal(wheel.cancel(4, 20), true)
  t.equal(wheel.size, 1)
  clock.advance(20)
  t.same(fired, [{ key: 4, now: 20 }])
})

t.test('timer-wheel: cancel of the only entry leaves the stale timer harmless', async (t) => {
  const { clock, wheel, fired } = setup({ tick: 10 })
  wheel.add(1, 30)
  t.equal(wheel.cancel(1, 30), true)
  t.equal(wheel.size, 0)
  clock.advance(1000)
  t.same(fired, [])
  t.equal(clock.pending, 0, 'not re-armed with nothing left')
})

t.test('timer-wheel: cancel works on late entries', async (t) => {
  const { clock, wheel, fired } = setup({ tick: 10 })
  wheel.add(9, 200)
  clock.advance(200)
  t.same(fired, [{ key: 9, now: 200 }])
  // The last run saw 200: ticks up to 20 are behind the cursor.
  wheel.add(1, 150)
  wheel.add(2, 150)
  wheel.add(3, 20)
  t.equal(wheel.cancel(1, 150), true)
  t.equal(wheel.cancel(3, 20), true)
  t.equal(wheel.cancel(3, 20), false)
  t.equal(wheel.size, 1)
  clock.advance(0)
  t.same(fired.slice(1), [{ key: 2, now: 200 }])
})

t.test('timer-wheel: entries beyond one revolution wait for their own', async (t) => {
  // 8 slots of 10 ms: one revolution is 80 ms. All of these share slot 3.
  const { clock, wheel, fired } = setup({ tick: 10, slots: 8 })
  wheel.add(1, 25)
  wheel.add(2, 105)
  wheel.add(3, 825)
  wheel.add(4, 185)
  const seen: Firing[] = []
  for (let i = 0; i < 100; i++) {
    clock.advance(10)
    seen.push(...fired.splice(0))
    t.ok(clock.pending <= 1)
  }
  t.same(seen, [
    { key: 1, now: 30 },
    { key: 2, now: 110 },
    { key: 4, now: 190 },
    { key: 3, now: 830 }
  ])
})

t.test('timer-wheel: a far entry fires on time when added after a long idle spell', async (t) => {
  // The cursor is many revolutions behind when the first entry arrives.
  const { clock, wheel, fired } = setup({ tick: 10, slots: 8 })
  clock.advance(10_000)
  wheel.add(1, 10_005)
  wheel.add(2, 10_170)
  wheel.add(3, 5_000) // in the past but ahead of the stale cursor
  clock.advance(0)
  t.same(fired, [{ key: 3, now: 10_000 }])
  clock.advance(10)
  t.same(fired.at(-1), { key: 1, now: 10_010 })
  clock.advance(1000)
  t.same(fired.at(-1), { key: 2, now: 10_170 })
})

t.test('timer-wheel: a jump of many revolutions fires everything due in one run', async (t) => {
  const { clock, base, step } = steppableClock()
  const calls: number[][] = []
  const wheel = new TimerWheel({ clock, tick: 10, slots: 4, onExpire: (keys) => { calls.push(keys) } })
  for (let i = 0; i < 40; i++) wheel.add(i, i * 37)
  wheel.add(40, 2_000_000)
  // Wall time leaps far ahead of the armed timer (as after a suspend): one run sees all of it.
  step(1_000_000)
  base.advance(0)
  t.equal(calls.length, 1, 'one call')
  t.same(calls[0]?.sort((a, b) => a - b), Array.from({ length: 40 }, (_, i) => i), 'everything due fired')
  t.equal(wheel.size, 1, 'the entry still in the future waits')
  t.equal(base.pending, 1)
})

t.test('timer-wheel: a burst is handed out in batches', async (t) => {
  const { clock, wheel, calls } = setup({ tick: 10, batch: 3 })
  for (let i = 0; i < 10; i++) wheel.add(i, 50)
  clock.advance(50)
  t.same(calls.map((c) => c.length), [3], 'only one batch synchronously')
  t.equal(wheel.size, 7)
  t.equal(clock.pending, 0, 'no clock timer while a continuation is queued')
  await turn()
  t.same(calls.map((c) => c.length), [3, 3])
  await turn()
  await turn()
  t.same(calls.map((c) => c.length), [3, 3, 3, 1])
  t.same(calls.flat().sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
  t.equal(wheel.size, 0)
  await turn()
  t.equal(calls.length, 4, 'no more calls')
  t.equal(clock.pending, 0)
})

t.test('timer-wheel: a batch boundary inside the late list and across slots loses nothing', async (t) => {
  const { clock, wheel, calls } = setup({ tick: 10, batch: 2 })
  wheel.add(100, 10)
  clock.advance(10)
  calls.length = 0
  for (let i = 0; i < 3; i++) wheel.add(i, 5) // late
  for (let i = 3; i < 6; i++) wheel.add(i, 20 + i) // tick 3 and 4 slots
  clock.advance(40)
  for (let i = 0; i < 5 && wheel.size > 0; i++) await turn()
  t.same(calls.flat().sort((a, b) => a - b), [0, 1, 2, 3, 4, 5])
  t.ok(calls.every((c) => c.length <= 2), 'at most batch keys per call')
  t.equal(wheel.size, 0)
})

t.test('timer-wheel: a burst of exactly one batch makes no empty call', async (t) => {
  const { clock, wheel, calls } = setup({ tick: 10, batch: 4 })
  for (let i = 0; i < 4; i++) wheel.add(i, 10)
  wheel.add(9, 200)
  clock.advance(10)
  t.same(calls.map((c) => [...c].sort()), [[0, 1, 2, 3]])
  t.equal(clock.pending, 0)
  await turn()
  t.equal(calls.length, 1, 'no empty call')
  t.equal(clock.pending, 1, 're-armed for the later entry')
  clock.advance(190)
  t.same(calls.at(-1), [9])
})

t.test('timer-wheel: the default batch is 1000, in pieces from 64 that double while they fit', async (t) => {
  const { clock, wheel, calls } = setup({ tick: 10 })
  for (let i = 0; i < 1001; i++) wheel.add(i, 10)
  clock.advance(10)
  // A manual clock's elapsed() stands still: every piece fits, and only the count ends the turn.
  t.same(calls.map((c) => c.length), [64, 128, 256, 512, 40])
  await turn()
  t.same(calls.map((c) => c.length), [64, 128, 256, 512, 40, 1])
})

// A manual clock whose elapsed() moves only when onExpire says: each key costs `cost.ms`.
function pricedSetup (costMs: number, settings: WheelSettings = {}): { clock: ManualClock, wheel: TimerWheel, calls: number[][], elapsed: () => number, cost: { ms: number } } {
  const clock = manualClock(0)
  let elapsed = 0
  const cost = { ms: costMs }
  const calls: number[][] = []
  const wheel = new TimerWheel({
    ...settings,
    clock: Object.assign(clock, { elapsed: () => elapsed }),
    onExpire (keys) {
      calls.push([...keys])
      elapsed += keys.length * cost.ms
    }
  })
  return { clock, wheel, calls, elapsed: () => elapsed, cost }
}

t.test('timer-wheel: a turn stops firing once its time budget is spent, and the rest follows', async (t) => {
  // 0.1 ms a key: 64 keys take 6.4 ms, over the default 5 ms budget.
  const { clock, wheel, calls } = pricedSetup(0.1, { tick: 10 })
  for (let i = 0; i < 200; i++) wheel.add(i, 10)
  clock.advance(10)
  t.same(calls.map((c) => c.length), [64], 'one piece, then the budget is spent')
  t.equal(wheel.size, 136)
  t.equal(clock.pending, 0, 'no clock timer while a continuation is queued')
  await turn()
  // The next pieces are sized to half the budget: 2.5 ms at 0.1 ms a key.
  t.same(calls.map((c) => c.length), [64, 25, 25])
  while (wheel.size > 0) await turn()
  t.same(calls.flat().sort((a, b) => a - b), Array.from({ length: 200 }, (_, i) => i), 'every key once')
  t.ok(calls.slice(1, -1).every((c) => c.length === 25), 'pieces of 25 after the first')
})

t.test('timer-wheel: an hour-long jump fires over many turns, each within its time budget', async (t) => {
  // A clock suspended for an hour with 36,000 entries due over it, 1 ms of work per 10 keys.
  const { clock, wheel, calls, elapsed } = pricedSetup(0.1, { tick: 100, turnMs: 4 })
  for (let i = 0; i < 36_000; i++) wheel.add(i, (i + 1) * 100)
  clock.advance(3_600_000)
  let turns = 1
  let before = elapsed()
  let longest = before
  while (wheel.size > 0) {
    await turn()
    turns++
    longest = Math.max(longest, elapsed() - before)
    before = elapsed()
  }
  t.equal(calls.flat().length, 36_000, 'everything fired')
  t.ok(turns >= 36_000 * 0.1 / 4, `spread over ${turns} turns`)
  // A turn may start one last piece, of half the budget, just before the budget runs out.
  t.ok(longest <= 6 + 1e-9, `no turn worked past the budget and one piece (longest ${longest} ms)`)
})

t.test('timer-wheel: pieces grow back after slow ones, doubling, up to the batch', async (t) => {
  const { clock, wheel, calls, cost } = pricedSetup(0.1, { tick: 10, batch: 300 })
  for (let i = 0; i < 1000; i++) wheel.add(i, 10)
  clock.advance(10)
  await turn()
  t.same(calls.map((c) => c.length), [64, 25, 25], 'slow keys: small pieces')
  cost.ms = 0
  await turn()
  t.same(calls.slice(3).map((c) => c.length), [25, 50, 100, 125], 'free keys: pieces double, up to the batch a turn')
  await turn()
  t.same(calls.slice(7).map((c) => c.length), [300], 'a whole batch in one piece')
})

t.test('timer-wheel: a turn budget that is not a positive finite number throws', async (t) => {
  const clock = manualClock()
  for (const turnMs of [0, -1, NaN, Infinity, '5']) {
    t.throws(() => new TimerWheel({ clock, onExpire: () => {}, turnMs: turnMs as number }), RangeError, `turnMs ${String(turnMs)}`)
    t.throws(() => new TimerWheel({ clock, onExpire: () => {}, turnMs: turnMs as number }), /TimerWheel: turnMs must be a finite number > 0 \(ms\), received/)
  }
  t.doesNotThrow(() => new TimerWheel({ clock, onExpire: () => {}, turnMs: 0.5 }))
})

t.test('timer-wheel: without clock.elapsed the budget is timed by performance.now()', async (t) => {
  const { clock: base } = setup()
  const calls: number[] = []
  const clock: Clock = { now: () => base.now(), setTimeout: (f, ms) => base.setTimeout(f, ms), clearTimeout: (h) => { base.clearTimeout(h) } }
  const wheel = new TimerWheel({
    clock,
    tick: 10,
    turnMs: 1,
    onExpire (keys) {
      calls.push(keys.length)
      // Real work of 2 ms: over the budget whatever the machine.
      const until = performance.now() + 2
      while (performance.now() < until);
    }
  })
  for (let i = 0; i < 10; i++) wheel.add(i, 10)
  base.advance(10)
  t.same(calls, [10], 'one piece, then out of time')
  t.equal(wheel.size, 0)
})

t.test('timer-wheel: the default tick is 100 ms', async (t) => {
  const { clock, wheel, fired } = setup()
  wheel.add(1, 1)
  clock.advance(99)
  t.same(fired, [])
  clock.advance(1)
  t.same(fired, [{ key: 1, now: 100 }])
})

t.test('timer-wheel: the default slots are 4096', async (t) => {
  // With tick 1, entries at 1 and 8193 share slot 1 of a 4096-slot wheel, which wakes once per
  // revolution for the far one: at 1, 4097 and 8193. 2048 slots would wake 5 times, 8192 twice.
  let wakes = 0
  const base = manualClock()
  const clock: Clock = {
    now: base.now,
    setTimeout: (cb, ms) => base.setTimeout(() => { wakes++; cb() }, ms),
    clearTimeout: base.clearTimeout
  }
  const fired: number[] = []
  const wheel = new TimerWheel({ clock, tick: 1, onExpire: (keys) => { fired.push(...keys) } })
  wheel.add(1, 1)
  wheel.add(2, 8193)
  base.advance(1)
  t.same(fired, [1])
  base.advance(8191)
  t.same(fired, [1])
  t.equal(wakes, 2, 'one more wake within the first revolution')
  base.advance(1)
  t.same(fired, [1, 2])
  t.equal(wakes, 3)
})

t.test('timer-wheel: the default clock is the system clock', async (t) => {
  const wheel = new TimerWheel({ onExpire: () => { t.fail('must not fire') } })
  wheel.add(1, Date.now() + 60_000)
  t.equal(wheel.size, 1)
  t.equal(wheel.cancel(1, Date.now() - 10_000_000), false)
  wheel.close()
  t.equal(wheel.size, 0)
})

t.test('timer-wheel: keeps only one clock timer armed', async (t) => {
  const { clock, wheel, fired } = setup({ tick: 10, slots: 16 })
  let key = 0
  const live: Array<[number, number]> = []
  // Deterministic spread: past, boundary, near, beyond a revolution; descending and ascending.
  const offsets = [500, 400, 300, 37, 20, 10, 0, -5, -200, 1000, 161, 3, 1]
  for (let round = 0; round < 20; round++) {
    for (const offset of offsets) {
      const at = clock.now() + offset + (round % 3)
      wheel.add(key, at)
      live.push([key++, at])
      t.ok(clock.pending <= 1, `after add, ${clock.pending} armed`)
    }
    if (round % 2 === 0) {
      const [k, at] = live.splice(round % live.length, 1)[0] as [number, number]
      wheel.cancel(k, at)
      t.ok(clock.pending <= 1, 'after cancel')
    }
    clock.advance(round * 7)
    t.ok(clock.pending <= 1, 'after advance')
    if (wheel.size > 0) t.equal(clock.pending, 1, 'armed whenever entries wait')
  }
  clock.advance(10_000)
  t.equal(wheel.size, 0)
  t.equal(clock.pending, 0)
  t.ok(fired.length > 0)
})

t.test('timer-wheel: close() leaves nothing armed', async (t) => {
  const { clock, wheel, fired } = setup({ tick: 10 })
  wheel.add(1, 20)
  wheel.add(2, 5000)
  clock.advance(0)
  wheel.add(3, -1)
  t.equal(clock.pending, 1)
  wheel.close()
  t.equal(clock.pending, 0, 'the clock timer is cleared')
  t.equal(wheel.size, 0)
  clock.advance(10_000)
  t.same(fired, [], 'nothing fires after close')
  t.throws(() => { wheel.add(4, 100) }, /after close/)
  t.equal(wheel.cancel(2, 5000), false)
  wheel.close()
  t.equal(wheel.size, 0, 'close is idempotent')
  t.equal(clock.pending, 0)
})

t.test('timer-wheel: close() drops a pending batch continuation', async (t) => {
  const { clock, wheel, calls } = setup({ tick: 10, batch: 2 })
  for (let i = 0; i < 5; i++) wheel.add(i, 10)
  clock.advance(10)
  t.equal(calls.length, 1)
  wheel.close()
  await turn()
  await turn()
  t.equal(calls.length, 1, 'the continuation never ran')
  t.equal(clock.pending, 0)
})

t.test('timer-wheel: a timer callback that arrives after close() does nothing', async (t) => {
  // A clock that never really clears: it hands back the callbacks so they can be run late.
  const callbacks: Array<() => void> = []
  const cleared: TimerHandle[] = []
  const clock: Clock = {
    now: () => 1000,
    setTimeout: (cb) => callbacks.push(cb) - 1,
    clearTimeout: (handle) => { cleared.push(handle) }
  }
  const fired: number[] = []
  const wheel = new TimerWheel({ clock, onExpire: (keys) => { fired.push(...keys) } })
  wheel.add(1, 1000)
  t.equal(callbacks.length, 1)
  wheel.close()
  t.same(cleared, [0], 'close cleared the armed timer')
  callbacks[0]?.()
  t.same(fired, [], 'a late callback fires nothing')
})

t.test('timer-wheel: bad options throw naming the option', async (t) => {
  const clock = manualClock()
  const onExpire = (): void => {}
  const bad = (options: unknown): TimerWheelOptions => options as TimerWheelOptions
  t.throws(() => new TimerWheel(bad({ clock })), TypeError)
  t.throws(() => new TimerWheel(bad({ clock })), /onExpire must be a function, received undefined/)
  t.throws(() => new TimerWheel(bad({ clock, onExpire: 'x' })), /onExpire.*string/)
  for (const tick of [0, -1, 1.5, NaN, Infinity, '100']) {
    t.throws(() => new TimerWheel(bad({ clock, onExpire, tick })), RangeError, `tick ${String(tick)}`)
    t.throws(() => new TimerWheel(bad({ clock, onExpire, tick })), /tick must be/)
  }
  for (const slots of [0, -2, 3, 6, 12, 1.5, NaN, Infinity, 2 ** 25, '8']) {
    t.throws(() => new TimerWheel(bad({ clock, onExpire, slots })), RangeError, `slots ${String(slots)}`)
    t.throws(() => new TimerWheel(bad({ clock, onExpire, slots })), /slots must be/)
  }
  for (const batch of [0, -1, 2.5, NaN, Infinity, '5']) {
    t.throws(() => new TimerWheel(bad({ clock, onExpire, batch })), RangeError, `batch ${String(batch)}`)
    t.throws(() => new TimerWheel(bad({ clock, onExpire, batch })), /batch must be/)
  }
  for (const slots of [1, 2, 1024, 2 ** 20]) {
    t.doesNotThrow(() => new TimerWheel({ clock, onExpire, slots }), `slots ${slots} is fine`)
  }
  t.doesNotThrow(() => new TimerWheel({ clock, onExpire, tick: 1, batch: 1 }))
  t.equal(clock.pending, 0, 'constructing arms nothing')
})

t.test('timer-wheel: a single slot still fires everything on time', async (t) => {
  const { clock, wheel, fired } = setup({ tick: 5, slots: 1 })
  for (const at of [3, 5, 42, 17]) wheel.add(at, at)
  clock.advance(100)
  t.same(fired, [{ key: 3, now: 5 }, { key: 5, now: 5 }, { key: 17, now: 20 }, { key: 42, now: 45 }])
})

t.test('timer-wheel: negative times and a negative start work', async (t) => {
  const { clock, wheel, fired } = setup({ tick: 10, slots: 8 }, -1000)
  wheel.add(1, -995)
  wheel.add(2, -1000)
  wheel.add(3, -5)
  wheel.add(4, 0)
  clock.advance(1000)
  t.same(fired, [{ key: 2, now: -1000 }, { key: 1, now: -990 }, { key: 3, now: 0 }, { key: 4, now: 0 }])
})

t.test('timer-wheel: epoch-sized times work', async (t) => {
  const start = Date.UTC(2026, 0, 1)
  const { clock, wheel, fired } = setup({ tick: 100 }, start)
  wheel.add(1, start + 30_000)
  wheel.add(2, start + 1_000_000)
  wheel.add(3, start + 250)
  clock.advance(2_000_000)
  t.same(fired, [
    { key: 3, now: start + 300 },
    { key: 1, now: start + 30_000 },
    { key: 2, now: start + 1_000_000 }
  ])
})

t.test('timer-wheel: a clock stepping backwards never fires early', async (t) => {
  const { clock, base, step } = steppableClock(0)
  const fired: Firing[] = []
  const wheel = new TimerWheel({ clock, tick: 100, onExpire: (keys) => { fired.push(...keys.map((key) => ({ key, now: clock.now() }))) } })
  wheel.add(1, 1000)
  base.advance(900)
  step(-500) // wall clock reads 400 while the timer still has 100 ms to go
  base.advance(100)
  t.equal(clock.now(), 500)
  t.same(fired, [], 'the timer woke at 500 and found nothing due')
  t.equal(base.pending, 1, 're-armed')
  base.advance(499)
  t.same(fired, [])
  base.advance(1)
  t.same(fired, [{ key: 1, now: 1000 }])
})

t.test('timer-wheel: after a step back, entries behind the cursor wait for their at', async (t) => {
  const { clock, base, step } = steppableClock(0)
  const fired: Firing[] = []
  const wheel = new TimerWheel({ clock, tick: 100, slots: 16, onExpire: (keys) => { fired.push(...keys.map((key) => ({ key, now: clock.now() }))) } })
  wheel.add(0, 1000)
  base.advance(1000)
  t.same(fired, [{ key: 0, now: 1000 }])
  step(-800) // reads 200; the cursor is at tick 11
  wheel.add(1, 500)
  wheel.add(2, 700)
  wheel.add(3, 600)
  wheel.add(4, 1150) // ahead of the cursor: its slot
  wheel.add(5, 2650) // more than a revolution (1600 ms) ahead: slot 11, visited at 1100 first
  t.equal(base.pending, 1)
  base.advance(299)
  t.same(fired.slice(1), [], 'not at 499')
  base.advance(1)
  t.same(fired.slice(1), [{ key: 1, now: 500 }], 'exactly at its at')
  t.equal(wheel.cancel(2, 700), true, 'a late entry can be cancelled while it waits')
  base.advance(100)
  t.same(fired.slice(2), [{ key: 3, now: 600 }])
  base.advance(600)
  t.same(fired.slice(3), [{ key: 4, now: 1200 }])
  base.advance(10_000)
  t.same(fired.slice(4), [{ key: 5, now: 2700 }])
  t.equal(wheel.size, 0)
})

t.test('timer-wheel: a step back during a batched burst loses nothing', async (t) => {
  const { clock, base, step } = steppableClock(0)
  const fired: Firing[] = []
  const wheel = new TimerWheel({ clock, tick: 10, slots: 8, batch: 2, onExpire: (keys) => { fired.push(...keys.map((key) => ({ key, now: clock.now() }))) } })
  for (let i = 0; i < 6; i++) wheel.add(i, 30 + i * 10)
  base.advance(30)
  t.same(fired, [{ key: 0, now: 30 }])
  await turn() // a new event-loop turn: a full batch is available again
  step(1000) // wall time leaps: everything is due at once, in batches
  base.advance(10)
  t.equal(fired.length, 3)
  step(-1030) // and back to 10, while the continuation is queued
  await turn()
  await turn()
  t.ok(fired.every(({ key, now }) => now >= 30 + key * 10), 'never early')
  t.equal(fired.length, 3, 'nothing more is due at 10')
  t.equal(wheel.size, 3, 'the rest waits')
  t.equal(base.pending, 1, 'armed')
  base.advance(2000)
  await turn()
  t.same(fired.map((f) => f.key).sort(), [0, 1, 2, 3, 4, 5])
  t.ok(fired.every(({ key, now }) => now >= 30 + key * 10), 'never early')
})

t.test('timer-wheel: an onExpire that throws', async (t) => {
  t.test('re-arms the wheel before the error surfaces from advance()', async (t) => {
    const clock = manualClock()
    const fired: Firing[] = []
    let throws = true
    const wheel = new TimerWheel({
      clock,
      tick: 10,
      onExpire (keys) {
        fired.push(...keys.map((key) => ({ key, now: clock.now() })))
        if (throws) throw new Error('boom')
      }
    })
    wheel.add(1, 10)
    wheel.add(2, 50)
    t.throws(() => clock.advance(10), /boom/)
    t.same(fired, [{ key: 1, now: 10 }], 'the keys were handed out')
    t.equal(wheel.size, 1, 'and count as fired')
    t.equal(clock.pending, 1, 'the wheel re-armed itself')
    throws = false
    clock.advance(40)
    t.same(fired, [{ key: 1, now: 10 }, { key: 2, now: 50 }], 'the next entry fires on time')
    t.equal(wheel.cancel(1, 10), false, 'the thrown batch is not retried')
  })

  t.test('re-arms with a continuation when out of budget', async (t) => {
    const clock = manualClock()
    const calls: number[][] = []
    const wheel = new TimerWheel({
      clock,
      tick: 10,
      batch: 2,
      onExpire (keys) {
        calls.push(keys)
        if (calls.length === 1) throw new Error('boom')
      }
    })
    for (let i = 0; i < 5; i++) wheel.add(i, 10)
    t.throws(() => clock.advance(10), /boom/)
    t.equal(calls.length, 1)
    await turn()
    await turn()
    t.same(calls.flat().sort(), [0, 1, 2, 3, 4], 'the rest followed')
    t.equal(wheel.size, 0)
  })

  t.test('with nothing left, leaves nothing armed', async (t) => {
    const clock = manualClock()
    const wheel = new TimerWheel({ clock, tick: 10, onExpire () { throw new Error('boom') } })
    wheel.add(1, 10)
    t.throws(() => clock.advance(10), /boom/)
    t.equal(wheel.size, 0)
    t.equal(clock.pending, 0)
    wheel.add(2, 20)
    t.equal(clock.pending, 1, 'the wheel still arms for new entries')
    t.throws(() => clock.advance(10), /boom/)
  })
})

t.test('timer-wheel: onExpire can add re-entrantly', async (t) => {
  const clock = manualClock()
  const fired: Firing[] = []
  const wheel: TimerWheel = new TimerWheel({
    clock,
    tick: 10,
    onExpire (keys) {
      for (const key of keys) {
        fired.push({ key, now: clock.now() })
        if (key === 1) {
          wheel.add(10, clock.now()) // due now: fires in the same advance, at the same time
          wheel.add(11, clock.now() - 1000) // long past
          wheel.add(12, clock.now() + 25)
          wheel.add(13, clock.now() + 1)
          t.equal(clock.pending, 0, 'add arms nothing while onExpire runs')
        }
      }
    }
  })
  wheel.add(1, 20)
  wheel.add(2, 40)
  clock.advance(100)
  t.same(fired, [
    { key: 1, now: 20 },
    { key: 10, now: 20 },
    { key: 11, now: 20 },
    { key: 13, now: 30 },
    { key: 2, now: 40 },
    { key: 12, now: 50 }
  ], 'each fired once, never early, on time')
  t.equal(wheel.size, 0)
})

t.test('timer-wheel: onExpire can add during a batch continuation', async (t) => {
  const clock = manualClock()
  const keys: number[] = []
  const wheel: TimerWheel = new TimerWheel({
    clock,
    tick: 10,
    batch: 2,
    onExpire (batch) {
      keys.push(...batch)
      if (batch.includes(3)) wheel.add(100, clock.now())
    }
  })
  for (let i = 0; i < 5; i++) wheel.add(i, 10)
  clock.advance(10)
  wheel.add(200, 10) // while the continuation is queued: arms nothing
  t.equal(clock.pending, 0)
  for (let i = 0; i < 5; i++) await turn()
  t.same(keys.sort((a, b) => a - b), [0, 1, 2, 3, 4, 100, 200])
  t.equal(wheel.size, 0)
})

t.test('timer-wheel: onExpire can cancel re-entrantly', async (t) => {
  const clock = manualClock()
  const fired: number[] = []
  const results: boolean[] = []
  const wheel: TimerWheel = new TimerWheel({
    clock,
    tick: 10,
    onExpire (keys) {
      fired.push(...keys)
      if (keys.includes(1)) {
        results.push(wheel.cancel(2, 10)) // handed out in this very call
        results.push(wheel.cancel(3, 35)) // still waiting
        results.push(wheel.cancel(4, 10_000)) // a revolution away
      }
    }
  })
  wheel.add(1, 10)
  wheel.add(2, 10)
  wheel.add(3, 35)
  wheel.add(4, 10_000)
  wheel.add(5, 35)
  clock.advance(20_000)
  t.same(results, [false, true, true])
  t.same(fired.sort(), [1, 2, 5])
  t.equal(wheel.size, 0)
})

t.test('timer-wheel: onExpire can close re-entrantly', async (t) => {
  t.test('from a timer run', async (t) => {
    const clock = manualClock()
    const fired: number[] = []
    const wheel: TimerWheel = new TimerWheel({
      clock,
      tick: 10,
      onExpire (keys) {
        fired.push(...keys)
        wheel.close()
      }
    })
    wheel.add(1, 10)
    wheel.add(2, 20)
    clock.advance(100)
    t.same(fired, [1])
    t.equal(clock.pending, 0, 'not re-armed')
    t.equal(wheel.size, 0)
    t.throws(() => { wheel.add(3, 200) }, /after close/)
  })

  t.test('from a run that is out of budget', async (t) => {
    const clock = manualClock()
    const calls: number[][] = []
    const wheel: TimerWheel = new TimerWheel({
      clock,
      tick: 10,
      batch: 2,
      onExpire (keys) {
        calls.push(keys)
        wheel.close()
      }
    })
    for (let i = 0; i < 5; i++) wheel.add(i, 10)
    clock.advance(10)
    await turn()
    await turn()
    t.equal(calls.length, 1, 'no continuation after close')
    t.equal(clock.pending, 0)
  })
})

// ---------------------------------------------------------------------------------------------
// Randomised comparison against a reference model.

type Op =
  | { kind: 'add', rel: number, boundary: boolean }
  | { kind: 'cancel', pick: number, variant: 'live' | 'wrong-at' | 'unknown' }
  | { kind: 'advance', ms: number, toBoundary: boolean, drain: boolean }

interface Entry {
  key: number
  at: number
  addedAt: number
  cancelled: boolean
}

const opArb = (tick: number, slots: number): fc.Arbitrary<Op> => {
  const rev = tick * slots
  return fc.oneof(
    { weight: 5, arbitrary: fc.record({ kind: fc.constant('add' as const), rel: fc.integer({ min: -2 * rev, max: 4 * rev }), boundary: fc.constant(false) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('add' as const), rel: fc.double({ min: -rev, max: 3 * rev, noNaN: true }), boundary: fc.constant(false) }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('add' as const), rel: fc.integer({ min: -3, max: 3 * slots }), boundary: fc.constant(true) }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('cancel' as const), pick: fc.nat(), variant: fc.constantFrom('live' as const, 'live' as const, 'wrong-at' as const, 'unknown' as const) }) },
    {
      weight: 4,
      arbitrary: fc.record({
        kind: fc.constant('advance' as const),
        ms: fc.oneof(
          fc.constant(0),
          fc.integer({ min: 1, max: tick }),
          fc.integer({ min: 1, max: 2 * rev }),
          fc.constantFrom(10 * rev, 1_000_000)
        ),
        toBoundary: fc.boolean(),
        drain: fc.oneof(fc.constant(true), fc.constant(true), fc.constant(false))
      })
    }
  )
}

const scenarioArb = fc
  .record({
    tick: fc.constantFrom(1, 3, 10),
    slots: fc.constantFrom(1, 2, 8, 16),
    batch: fc.constantFrom(1, 2, 3, 1_000_000),
    start: fc.oneof(fc.constant(0), fc.integer({ min: -10_000, max: 10_000 }), fc.constant(Date.UTC(2026, 0, 1)))
  })
  .chain((s) => fc.record({
    tick: fc.constant(s.tick),
    slots: fc.constant(s.slots),
    batch: fc.constant(s.batch),
    start: fc.constant(s.start),
    ops: fc.array(opArb(s.tick, s.slots), { maxLength: 80, size: 'max' })
  }))

t.test('timer-wheel: behaves like a simple reference model', async (t) => {
  await fc.assert(
    fc.asyncProperty(scenarioArb, async ({ tick, slots, batch, start, ops }) => {
      const unlimited = batch > 1000
      const clock = manualClock(start)
      const entries: Entry[] = []
      const firedAt = new Map<number, number>()
      const problems: string[] = []
      const wheel = new TimerWheel({
        clock,
        tick,
        slots,
        batch,
        onExpire (keys) {
          if (keys.length > batch) problems.push(`a call with ${keys.length} keys, batch ${batch}`)
          if (keys.length === 0) problems.push('an empty call')
          for (const key of keys) {
            if (firedAt.has(key)) problems.push(`key ${key} fired twice`)
            firedAt.set(key, clock.now())
          }
        }
      })
      // The first tick boundary at or after `at`. Where at / tick underflows (at = 5e-324 gives
      // tick 0, before `at`), that is the next boundary: the wheel may wait for it, a tick at most.
      const boundaryOf = (at: number): number => {
        const boundary = Math.ceil(at / tick) * tick
        return boundary < at ? boundary + tick : boundary
      }
      const live = (): Entry[] => entries.filter((e) => !e.cancelled && !firedAt.has(e.key))
      let continuation = false // a batch continuation may be queued
      const drain = async (): Promise<void> => {
        for (let i = 0; i < 10_000; i++) {
          const before = firedAt.size
          await turn()
          if (firedAt.size === before && !(wheel.size > 0 && clock.pending === 0)) {
            continuation = false
            return
          }
        }
        throw new Error('the wheel never settled')
      }

      for (const op of ops) {
        const now = clock.now()
        if (op.kind === 'add') {
          const at = op.boundary ? (Math.floor(now / tick) + op.rel) * tick : now + op.rel
          const key = entries.length
          entries.push({ key, at, addedAt: now, cancelled: false })
          wheel.add(key, at)
        } else if (op.kind === 'cancel') {
          let expected = false
          let key = -1 - op.pick
          let at = now
          const target = entries.length > 0 ? entries[op.pick % entries.length] : undefined
          if (target !== undefined && op.variant !== 'unknown') {
            key = target.key
            at = op.variant === 'live' ? target.at : target.at + tick * slots + 0.5
            expected = op.variant === 'live' && !target.cancelled && !firedAt.has(target.key)
          }
          const got = wheel.cancel(key, at)
          if (got !== expected) problems.push(`cancel(${key}, ${at}) returned ${String(got)}`)
          if (got && target !== undefined) target.cancelled = true
        } else {
          const waiting = live()
          let ms = op.ms
          if (op.toBoundary) ms += (Math.ceil((now + ms) / tick) * tick) - (now + ms)
          clock.advance(ms)
          if (!unlimited) continuation = true
          if (op.drain) await drain()
          if (!continuation) {
            // Everything waiting before this advance whose deadline has come must have fired.
            for (const e of waiting) {
              const deadline = Math.max(boundaryOf(e.at), e.addedAt)
              if (deadline <= clock.now() && !firedAt.has(e.key)) {
                problems.push(`key ${e.key} (at ${e.at}, added ${e.addedAt}) unfired at ${clock.now()}`)
              }
            }
            // On a tick boundary, exactly those with at <= now have fired.
            if (clock.now() % tick === 0) {
              for (const e of waiting) {
                if (firedAt.has(e.key) !== (e.at <= clock.now())) problems.push(`key ${e.key} (at ${e.at}) wrong at boundary ${clock.now()}`)
              }
            }
            if (wheel.size > 0 && clock.pending !== 1) problems.push(`${wheel.size} waiting but ${clock.pending} timers armed`)
          }
        }
        // Checks after every step.
        if (clock.pending > 1) problems.push(`${clock.pending} clock timers armed`)
        for (const e of entries) {
          const when = firedAt.get(e.key)
          if (when === undefined) continue
          if (e.cancelled) problems.push(`cancelled key ${e.key} fired`)
          if (when < e.at) problems.push(`key ${e.key} fired at ${when}, before its at ${e.at}`)
          if (unlimited && when > Math.max(boundaryOf(e.at), e.addedAt)) {
            problems.push(`key ${e.key} (at ${e.at}, added ${e.addedAt}) fired late at ${when}`)
          }
        }
        for (const key of firedAt.keys()) {
          if (entries[key] === undefined) problems.push(`unknown key ${key} fired`)
        }
        if (wheel.size !== live().length) problems.push(`size ${wheel.size}, model ${live().length}`)
        if (problems.length > 0) break
      }

      // Finally let everything run out.
      if (problems.length === 0) {
        await drain()
        clock.advance(5 * tick * slots + 1_000)
        await drain()
        const left = live()
        if (left.length > 0) problems.push(`never fired: ${left.map((e) => e.key).join(', ')}`)
        if (wheel.size !== 0) problems.push(`size ${wheel.size} at the end`)
        if (clock.pending !== 0) problems.push(`${clock.pending} timers armed at the end`)
      }
      wheel.close()
      if (problems.length > 0) throw new Error(problems.slice(0, 5).join('\n'))
    }),
    { numRuns: 1000 }
  )
  t.pass('1000 random scenarios matched the model')
})

t.test('timer-wheel: a stepping clock never fires early and loses nothing', async (t) => {
  type StepOp = { kind: 'add', rel: number } | { kind: 'cancel', pick: number } | { kind: 'run', ms: number } | { kind: 'step', ms: number }
  const stepOp: fc.Arbitrary<StepOp> = fc.oneof(
    { weight: 4, arbitrary: fc.record({ kind: fc.constant('add' as const), rel: fc.integer({ min: -100, max: 400 }) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('cancel' as const), pick: fc.nat() }) },
    { weight: 3, arbitrary: fc.record({ kind: fc.constant('run' as const), ms: fc.integer({ min: 0, max: 200 }) }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('step' as const), ms: fc.integer({ min: -500, max: 500 }) }) }
  )
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(1, 2, 1000), fc.constantFrom(1, 4, 16), fc.array(stepOp, { maxLength: 50, size: 'max' }), async (batch, slots, ops) => {
      const { clock, base, step } = steppableClock(0)
      const entries: Entry[] = []
      const firedAt = new Map<number, number>()
      const problems: string[] = []
      const wheel = new TimerWheel({
        clock,
        tick: 10,
        slots,
        batch,
        onExpire (keys) {
          for (const key of keys) {
            const e = entries[key]
            if (firedAt.has(key)) problems.push(`key ${key} fired twice`)
            if (e === undefined || e.cancelled) problems.push(`key ${key} should not fire`)
            else if (clock.now() < e.at) problems.push(`key ${key} fired at ${clock.now()}, before ${e.at}`)
            firedAt.set(key, clock.now())
          }
        }
      })
      for (const op of ops) {
        if (op.kind === 'add') {
          entries.push({ key: entries.length, at: clock.now() + op.rel, addedAt: clock.now(), cancelled: false })
          wheel.add(entries.length - 1, clock.now() + op.rel)
        } else if (op.kind === 'cancel' && entries.length > 0) {
          const e = entries[op.pick % entries.length] as Entry
          const expected = !e.cancelled && !firedAt.has(e.key)
          if (wheel.cancel(e.key, e.at) !== expected) problems.push(`cancel(${e.key}) disagreed`)
          e.cancelled ||= expected
        } else if (op.kind === 'run') {
          base.advance(op.ms)
          await turn()
        } else if (op.kind === 'step') {
          step(op.ms)
        }
        if (base.pending > 1) problems.push(`${base.pending} timers armed`)
        if (problems.length > 0) break
      }
      // Hold the wall clock steady and let time pass: everything left must fire.
      const left = (): Entry[] => entries.filter((e) => !e.cancelled && !firedAt.has(e.key))
      for (let i = 0; i < 100 && problems.length === 0 && left().length > 0; i++) {
        base.advance(500)
        await turn()
        await turn()
      }
      if (problems.length === 0 && left().length > 0) problems.push(`never fired: ${left().map((e) => `${e.key}@${e.at}`).join(', ')} at ${clock.now()}`)
      if (problems.length === 0 && wheel.size !== 0) problems.push(`size ${wheel.size} at the end`)
      wheel.close()
      if (problems.length > 0) throw new Error(problems.slice(0, 5).join('\n'))
    }),
    { numRuns: 300 }
  )
  t.pass('300 random stepping scenarios held')
})

t.test('timer-wheel: a manual clock jumping many boundaries still fires at most a batch per turn', async (t) => {
  const { clock, wheel, calls } = setup({ tick: 10, batch: 3 })
  // Ten boundaries with one entry each: advance() fires boundary after boundary synchronously.
  for (let i = 1; i <= 10; i++) wheel.add(i, i * 10)
  clock.advance(100)
  t.equal(calls.flat().length, 3, 'the first turn stops after one batch')
  await turn()
  t.equal(calls.flat().length, 6)
  await turn()
  await turn()
  await turn()
  t.same(calls.flat().sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'the rest follow, a batch a turn')
  t.ok(calls.every((keys) => keys.length <= 3))
})

t.test('timer-wheel: an entry beyond a 32-bit timer delay arms no overflowing timer', async (t) => {
  const delays: number[] = []
  const clock = manualClock()
  const spy = { ...clock, setTimeout: (callback: () => void, ms: number) => { delays.push(ms); return clock.setTimeout(callback, ms) } }
  const fired: number[] = []
  const wheel = new TimerWheel({ clock: spy, tick: 100, onExpire: (keys) => { fired.push(...keys) } })
  const far = 30 * 86_400_000
  wheel.add(1, far)
  t.ok(delays.every((ms) => ms <= 2 ** 31 - 1), 'every delay fits a 32-bit signed integer')
  clock.advance(2 ** 31 - 1)
  t.same(fired, [], 'waking early fires nothing')
  clock.advance(far - (2 ** 31 - 1))
  t.same(fired, [1], 'fires on time')
})

t.test('timer-wheel: while hold() says so, nothing fires; the wheel asks again a tick later', async (t) => {
  let holding = true
  let asked = 0
  const clock = manualClock(0)
  const calls: number[][] = []
  const wheel = new TimerWheel({
    clock,
    tick: 10,
    batch: 2,
    hold: () => { asked++; return holding },
    onExpire: (keys) => { calls.push([...keys]) }
  })
  for (let i = 0; i < 5; i++) wheel.add(i, 10)
  clock.advance(10)
  t.same(calls, [], 'held: nothing fired')
  t.equal(asked, 1)
  t.equal(clock.pending, 1, 'a timer to ask again')
  clock.advance(9)
  t.equal(asked, 1, 'not before a tick has passed')
  clock.advance(1)
  t.equal(asked, 2, 'asked again a tick later')
  t.same(calls, [])
  holding = false
  clock.advance(10)
  t.same(calls.map((c) => c.length), [2], 'released: fires again, a batch a turn')
  holding = true
  await turn()
  t.equal(calls.length, 1, 'held between turns of a burst too')
  t.equal(wheel.size, 3)
  holding = false
  clock.advance(10)
  await turn()
  t.same(calls.flat().sort(), [0, 1, 2, 3, 4], 'every key once')
})

t.test('timer-wheel: hold must be a function', async (t) => {
  t.throws(() => new TimerWheel({ clock: manualClock(), onExpire: () => {}, hold: true as unknown as () => boolean }),
    new TypeError('TimerWheel: hold must be a function, received boolean'))
})
