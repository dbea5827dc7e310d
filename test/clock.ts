import t from 'tap'
import { systemClock } from '../lib/clock.js'
import { performance } from 'node:perf_hooks'

t.test('clock: the system clock reads epoch ms, and date() reads Date.now', async (t) => {
  const before = Date.now()
  const now = systemClock.now()
  const date = systemClock.date?.() as number
  const after = Date.now()
  t.ok(Number.isInteger(now), 'whole milliseconds')
  // now() started at Date.now() and moved with the monotonic clock: within a few ms of it here.
  t.ok(Math.abs(now - before) < 1000, `now() ${now} is close to Date.now() ${before}`)
  t.ok(date >= before && date <= after, 'date() is Date.now()')
})

t.test('clock: now() does not follow a step of the wall clock; date() does', async (t) => {
  const realNow = Date.now
  const before = systemClock.now()
  Date.now = () => realNow() - 3_600_000
  try {
    const stepped = systemClock.now()
    t.ok(stepped >= before, 'an hour back on the wall clock: now() still moves forward')
    t.ok((systemClock.date?.() as number) < before - 3_000_000, 'date() went back with the wall clock')
    Date.now = () => realNow() + 3_600_000
    t.ok(systemClock.now() - before < 60_000, 'an hour forward: now() does not jump')
  } finally {
    Date.now = realNow
  }
})

t.test('clock: system timers are unref()d and can be cleared', async (t) => {
  const handle = systemClock.setTimeout(() => { t.fail('cleared timer fired') }, 10_000) as NodeJS.Timeout
  t.equal(handle.hasRef(), false, 'does not keep the process alive')
  systemClock.clearTimeout(handle)
  systemClock.clearTimeout(handle)
  t.pass('clearing twice is harmless')
})

t.test('clock: the system clock\'s elapsed() is performance.now()', async (t) => {
  const before = performance.now()
  const elapsed = systemClock.elapsed?.() as number
  t.ok(elapsed >= before && elapsed <= performance.now(), 'between two readings of performance.now()')
})
