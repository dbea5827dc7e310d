import t from 'tap'
import { manualClock } from '../lib/manual-clock.js'

t.test('manual-clock: starts at 0 by default and at the given start otherwise', async (t) => {
  t.equal(manualClock().now(), 0)
  t.equal(manualClock(1_700_000_000_000).now(), 1_700_000_000_000)
  t.equal(manualClock(-50).now(), -50, 'a negative start is still a finite epoch time')
})

t.test('manual-clock: a non-finite start is a RangeError', async (t) => {
  for (const start of [NaN, Infinity, -Infinity]) {
    t.throws(() => manualClock(start), RangeError, `start ${String(start)}`)
    t.throws(() => manualClock(start), /start/, 'the message names start')
  }
})

t.test('manual-clock: time only moves on advance', async (t) => {
  const clock = manualClock(1000)
  t.equal(clock.now(), 1000)
  t.equal(clock.now(), 1000, 'reading does not move it')
  t.equal(clock.advance(250), 0, 'no timers fired')
  t.equal(clock.now(), 1250)
  t.equal(clock.advance(0), 0)
  t.equal(clock.now(), 1250, 'advance(0) keeps the time')
  clock.advance(0.5)
  t.equal(clock.now(), 1250.5, 'fractions are kept')
})

t.test('manual-clock: a timer fires once it is due, not before', async (t) => {
  const clock = manualClock()
  const seen: number[] = []
  clock.setTimeout(() => { seen.push(clock.now()) }, 100)
  t.equal(clock.pending, 1)
  t.equal(clock.advance(99), 0)
  t.same(seen, [], 'not due at 99')
  t.equal(clock.advance(1), 1)
  t.same(seen, [100], 'fires at exactly 100')
  t.equal(clock.pending, 0)
  t.equal(clock.advance(1000), 0, 'fires only once')
  t.same(seen, [100])
})

t.test('manual-clock: advance fires due timers in due order, reading each due time', async (t) => {
  const clock = manualClock(10)
  const seen: Array<[string, number]> = []
  clock.setTimeout(() => { seen.push(['c', clock.now()]) }, 30)
  clock.setTimeout(() => { seen.push(['a', clock.now()]) }, 5)
  clock.setTimeout(() => { seen.push(['d', clock.now()]) }, 500)
  clock.setTimeout(() => { seen.push(['b', clock.now()]) }, 20)
  t.equal(clock.advance(100), 3, 'returns how many fired')
  t.same(seen, [['a', 15], ['b', 30], ['c', 40]])
  t.equal(clock.now(), 110, 'ends at the target')
  t.equal(clock.pending, 1, 'the later one waits')
  t.equal(clock.advance(400), 1, 'a timer due exactly at the target fires')
  t.same(seen.at(-1), ['d', 510])
})

t.test('manual-clock: ties fire in insertion order', async (t) => {
  const clock = manualClock()
  const seen: number[] = []
  for (let i = 0; i < 5; i++) clock.setTimeout(() => { seen.push(i) }, 50)
  clock.setTimeout(() => { seen.push(-1) }, 49)
  t.equal(clock.advance(50), 6)
  t.same(seen, [-1, 0, 1, 2, 3, 4])
})

t.test('manual-clock: ties at the very target fire in insertion order', async (t) => {
  const clock = manualClock()
  const seen: string[] = []
  clock.setTimeout(() => { seen.push('first') }, 10)
  clock.setTimeout(() => { seen.push('second') }, 10)
  clock.setTimeout(() => { seen.push('third') }, 10)
  t.equal(clock.advance(10), 3)
  t.same(seen, ['first', 'second', 'third'])
})

t.test('manual-clock: timers set by timers fire in the same advance when due', async (t) => {
  const clock = manualClock()
  const seen: Array<[string, number]> = []
  clock.setTimeout(() => {
    seen.push(['outer', clock.now()])
    clock.setTimeout(() => {
      seen.push(['inner', clock.now()])
      clock.setTimeout(() => { seen.push(['innermost', clock.now()]) }, 0)
    }, 15)
    clock.setTimeout(() => { seen.push(['too late', clock.now()]) }, 1000)
  }, 10)
  clock.setTimeout(() => { seen.push(['between', clock.now()]) }, 20)
  t.equal(clock.advance(100), 4)
  t.same(seen, [['outer', 10], ['between', 20], ['inner', 25], ['innermost', 25]])
  t.equal(clock.pending, 1)
  t.equal(clock.now(), 100)
})

t.test('manual-clock: a zero-delay timer set by a timer runs after the ties already queued', async (t) => {
  const clock = manualClock()
  const seen: string[] = []
  clock.setTimeout(() => {
    seen.push('a')
    clock.setTimeout(() => { seen.push('a2') }, 0)
  }, 10)
  clock.setTimeout(() => { seen.push('b') }, 10)
  t.equal(clock.advance(10), 3)
  t.same(seen, ['a', 'b', 'a2'])
})

t.test('manual-clock: a zero, negative or NaN delay fires on the next advance, even advance(0)', async (t) => {
  const clock = manualClock(500)
  const seen: Array<[number, number]> = []
  clock.setTimeout(() => { seen.push([0, clock.now()]) }, 0)
  clock.setTimeout(() => { seen.push([-1, clock.now()]) }, -100)
  clock.setTimeout(() => { seen.push([NaN, clock.now()]) }, NaN)
  t.equal(clock.pending, 3)
  t.equal(clock.advance(0), 3)
  t.same(seen, [[0, 500], [-1, 500], [NaN, 500]], 'all at now, in insertion order, never in the past')
  t.equal(clock.pending, 0)
})

t.test('manual-clock: an infinite delay never fires', async (t) => {
  const clock = manualClock()
  let fired = false
  clock.setTimeout(() => { fired = true }, Infinity)
  t.equal(clock.advance(Number.MAX_SAFE_INTEGER), 0)
  t.equal(fired, false)
  t.equal(clock.pending, 1)
})

t.test('manual-clock: clearTimeout prevents firing and tolerates stale handles', async (t) => {
  const clock = manualClock()
  let fired = 0
  const a = clock.setTimeout(() => { fired++ }, 10)
  const b = clock.setTimeout(() => { fired += 100 }, 20)
  t.equal(clock.pending, 2)
  clock.clearTimeout(b)
  t.equal(clock.pending, 1)
  t.equal(clock.advance(50), 1)
  t.equal(fired, 1, 'only the uncleared timer fired')
  clock.clearTimeout(a)
  clock.clearTimeout(b)
  clock.clearTimeout(12345)
  t.equal(clock.pending, 0, 'clearing fired, cleared or unknown handles is harmless')
})

t.test('manual-clock: handles are distinct', async (t) => {
  const clock = manualClock()
  const handles = new Set<unknown>()
  for (let i = 0; i < 10; i++) handles.add(clock.setTimeout(() => {}, i))
  t.equal(handles.size, 10)
})

t.test('manual-clock: a timer can clear a later timer that is already due', async (t) => {
  const clock = manualClock()
  const seen: string[] = []
  let later: unknown
  clock.setTimeout(() => {
    seen.push('first')
    clock.clearTimeout(later)
  }, 10)
  later = clock.setTimeout(() => { seen.push('later') }, 20)
  t.equal(clock.advance(30), 1)
  t.same(seen, ['first'])
  t.equal(clock.pending, 0)
})

t.test('manual-clock: advance rejects negative, NaN and infinite ms', async (t) => {
  const clock = manualClock(7)
  let fired = false
  clock.setTimeout(() => { fired = true }, 0)
  for (const ms of [-1, -0.001, NaN, Infinity, -Infinity]) {
    t.throws(() => clock.advance(ms), RangeError, `ms ${String(ms)}`)
  }
  t.throws(() => clock.advance(-1), /ms must be/)
  t.equal(clock.now(), 7, 'time did not move')
  t.equal(fired, false, 'nothing fired')
  t.equal(clock.advance(0), 1, 'the clock still works')
})

t.test('manual-clock: re-entrant advance throws an Error', async (t) => {
  const clock = manualClock()
  let caught: unknown
  let nowInside = -1
  clock.setTimeout(() => {
    try {
      clock.advance(5)
    } catch (err) {
      caught = err
    }
    nowInside = clock.now()
  }, 10)
  t.equal(clock.advance(20), 1)
  t.type(caught, Error)
  t.notOk(caught instanceof RangeError, 'not a RangeError: the argument was fine')
  t.match((caught as Error).message, /inside a timer/)
  t.equal(nowInside, 10, 'the failed call moved no time')
  t.equal(clock.now(), 20)
  let ran = false
  clock.setTimeout(() => { ran = true }, 1)
  t.equal(clock.advance(1), 1, 'advance works again afterwards')
  t.equal(ran, true)
})

t.test('manual-clock: an exception from a timer propagates and leaves the clock usable', async (t) => {
  const clock = manualClock()
  const seen: Array<[string, number]> = []
  clock.setTimeout(() => { throw new Error('boom') }, 10)
  clock.setTimeout(() => { seen.push(['after', clock.now()]) }, 20)
  t.throws(() => clock.advance(100), /boom/)
  t.same(seen, [], 'the advance stopped at the throwing timer')
  t.equal(clock.pending, 1, 'the thrower is gone, the next one waits')
  t.equal(clock.now(), 10, 'time stays at the throwing timer: what was due after it is still due')
  t.equal(clock.advance(0), 0, 'nothing is due at 10')
  t.equal(clock.advance(100), 1, 'advancing is not stuck: the next timer fires')
  t.same(seen, [['after', 20]], 'at its own due time')
  t.equal(clock.now(), 110)
})

t.test('manual-clock: elapsed() reads 0, however time moves', async (t) => {
  const clock = manualClock(1000)
  t.equal(clock.elapsed?.(), 0)
  clock.advance(3_600_000)
  t.equal(clock.elapsed?.(), 0, 'work takes no time on a manual clock')
})
