import t from 'tap'
import { systemClock } from '../lib/clock.js'

t.test('clock: the system clock reads Date.now', async (t) => {
  const before = Date.now()
  const now = systemClock.now()
  t.ok(now >= before && now <= Date.now())
})

t.test('clock: system timers are unref()d and can be cleared', async (t) => {
  const handle = systemClock.setTimeout(() => { t.fail('cleared timer fired') }, 10_000) as NodeJS.Timeout
  t.equal(handle.hasRef(), false, 'does not keep the process alive')
  systemClock.clearTimeout(handle)
  systemClock.clearTimeout(handle)
  t.pass('clearing twice is harmless')
})
