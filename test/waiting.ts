// The checks every call that waits shares: its signal and its timeout.
import t from 'tap'
import { aborted, checkSignal, checkTimeout } from '../lib/waiting.js'

t.test('waiting: checkSignal takes undefined or an AbortSignal, and names the call otherwise', async (t) => {
  t.doesNotThrow(() => { checkSignal('x.wait', undefined) })
  t.doesNotThrow(() => { checkSignal('x.wait', new AbortController().signal) })
  t.throws(() => { checkSignal('x.wait', {}) }, { name: 'TypeError', message: /^x\.wait: options\.signal must be an AbortSignal, received / })
})

t.test('waiting: checkTimeout takes undefined or finite ms >= 0', async (t) => {
  for (const ok of [undefined, 0, 1.5, 60_000]) t.doesNotThrow(() => { checkTimeout('x.wait', ok) }, String(ok))
  for (const bad of [-1, Infinity, NaN, '5', null]) {
    t.throws(() => { checkTimeout('x.wait', bad) }, { name: 'RangeError', message: /^x\.wait: options\.timeout must be a finite number of ms >= 0, received / }, String(bad))
  }
})

t.test('waiting: aborted is ERR_ABORTED with the signal\'s reason as cause', async (t) => {
  const controller = new AbortController()
  const reason = new Error('stop')
  controller.abort(reason)
  const error = aborted('x.wait', controller.signal)
  t.equal(error.code, 'ERR_ABORTED')
  t.equal(error.message, 'x.wait: aborted')
  t.equal(error.cause, reason)
})
