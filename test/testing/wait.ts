// waitFor(): one value, or a timeout on the clock, an abort, or the close of a test broker.
import t from 'tap'
import { createBroker } from '../../lib/broker.js'
import { manualClock } from '../../lib/manual-clock.js'
import { memoryStore } from '../../lib/store/memory.js'
import { createTestBroker } from '../../lib/testing/test-broker.js'
import { waitFor } from '../../lib/testing/wait.js'
import { SECRET } from '../fixtures/broker.js'
import { rejection } from '../fixtures/throws.js'

// A listener that delivers when told, and says whether it is still listening.
function source<T> (): { listen: (deliver: (value: T) => void) => () => void, send: (value: T) => void, listening: () => boolean } {
  let target: ((value: T) => void) | undefined
  return {
    listen: (deliver) => { target = deliver; return () => { target = undefined } },
    send: (value) => { target?.(value) },
    listening: () => target !== undefined
  }
}

t.test('wait: resolves with the first value delivered, then stops listening', async (t) => {
  const { broker } = await createTestBroker()
  t.teardown(() => broker.close())
  const from = source<number>()
  const waiting = waitFor('who', broker, { timeout: 10 }, from.listen)
  t.ok(from.listening())
  from.send(1)
  t.equal(await waiting, 1)
  t.notOk(from.listening(), 'stopped')
})

t.test('wait: a value delivered at once settles it, and listening stops at once', async (t) => {
  const { broker } = await createTestBroker()
  t.teardown(() => broker.close())
  let stopped = false
  t.equal(await waitFor('who', broker, {}, (deliver) => { deliver('now'); deliver('again'); return () => { stopped = true } }), 'now')
  t.ok(stopped)
})

t.test('wait: ERR_TIMEOUT on the test broker\'s manual clock, and only when it is advanced', async (t) => {
  const { broker, clock } = await createTestBroker()
  t.teardown(() => broker.close())
  const from = source<number>()
  const waiting = rejection(waitFor('who', broker, { timeout: 100 }, from.listen))
  clock.advance(99)
  t.ok(from.listening(), 'still waiting at 99 ms')
  clock.advance(1)
  const err = await waiting
  t.equal(err.code, 'ERR_TIMEOUT')
  t.equal(err.message, 'who: nothing came within 100 ms')
  t.notOk(from.listening())
  t.equal(clock.pending, 0, 'no timer left')
  from.send(1)
})

t.test('wait: a value clears its timer', async (t) => {
  const { broker, clock } = await createTestBroker()
  t.teardown(() => broker.close())
  const from = source<number>()
  const waiting = waitFor('who', broker, { timeout: 100 }, from.listen)
  t.equal(clock.pending, 1)
  from.send(2)
  t.equal(await waiting, 2)
  t.equal(clock.pending, 0)
})

t.test('wait: on another broker, the clock given, else the system clock', async (t) => {
  const broker = createBroker(memoryStore(), { secret: SECRET })
  t.teardown(() => broker.close())
  const clock = manualClock()
  const from = source<number>()
  const timing = rejection(waitFor('who', broker, { timeout: 5, clock }, from.listen))
  clock.advance(5)
  t.equal((await timing).code, 'ERR_TIMEOUT')
  // The system clock: settled long before its 60 s.
  const waiting = waitFor('who', broker, { timeout: 60_000 }, from.listen)
  from.send(3)
  t.equal(await waiting, 3)
})

t.test('wait: ERR_ABORTED for a signal aborted before or while it waits', async (t) => {
  const { broker } = await createTestBroker()
  t.teardown(() => broker.close())
  const before = new AbortController()
  before.abort(new Error('gone'))
  const from = source<number>()
  const early = await rejection(waitFor('who', broker, { signal: before.signal }, from.listen))
  t.equal(early.code, 'ERR_ABORTED')
  t.equal(early.message, 'who: aborted')
  t.equal((early.cause as Error).message, 'gone')
  t.notOk(from.listening(), 'never listened')
  const during = new AbortController()
  const waiting = rejection(waitFor('who', broker, { signal: during.signal }, from.listen))
  during.abort()
  t.equal((await waiting).code, 'ERR_ABORTED')
  t.notOk(from.listening())
  const resolved = new AbortController()
  const served = waitFor('who', broker, { signal: resolved.signal }, from.listen)
  from.send(4)
  t.equal(await served, 4)
  resolved.abort()
})

t.test('wait: ERR_CLOSED when the test broker closes, or a closing set is called', async (t) => {
  const { broker } = await createTestBroker()
  const from = source<number>()
  const waiting = rejection(waitFor('who', broker, {}, from.listen))
  await broker.close()
  const err = await waiting
  t.equal(err.code, 'ERR_CLOSED')
  t.equal(err.message, 'who: closed while waiting')

  const other = createBroker(memoryStore(), { secret: SECRET })
  t.teardown(() => other.close())
  const closing = new Set<() => void>()
  const mine = rejection(waitFor('who', other, {}, from.listen, closing))
  t.equal(closing.size, 1)
  for (const close of [...closing]) close()
  t.equal((await mine).code, 'ERR_CLOSED')
  t.equal(closing.size, 0, 'the wait left the set')
})

t.test('wait: a listen that throws rejects with what it threw', async (t) => {
  const { broker } = await createTestBroker()
  t.teardown(() => broker.close())
  const failure = new Error('cannot listen')
  await t.rejects(waitFor('who', broker, {}, () => { throw failure }), failure)
})

t.test('wait: bad options throw at once, naming the option', async (t) => {
  const { broker } = await createTestBroker()
  t.teardown(() => broker.close())
  const listen = (): () => void => () => {}
  t.throws(() => waitFor('who', broker, null as never, listen), { name: 'TypeError', message: 'who: options must be an object, received null' })
  t.throws(() => waitFor('who', broker, 'x' as never, listen), { name: 'TypeError', message: /options must be an object/ })
  t.throws(() => waitFor('who', broker, { signal: {} as never }, listen), { name: 'TypeError', message: /options.signal must be an AbortSignal, received Object/ })
  for (const timeout of [-1, Infinity, NaN, '5']) {
    t.throws(() => waitFor('who', broker, { timeout: timeout as never }, listen), { name: 'RangeError', message: /options.timeout must be a finite number of ms >= 0/ })
  }
  for (const clock of [null, {}, { setTimeout () {} }]) {
    t.throws(() => waitFor('who', broker, { clock: clock as never }, listen), { name: 'TypeError', message: /options.clock must be a Clock/ })
  }
})
