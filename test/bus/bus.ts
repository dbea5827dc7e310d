import t from 'tap'
import { LocalBus, type Bus, type BusEvent } from '../../lib/bus/bus.js'

const EVENT: BusEvent = { type: 'device-deleted', deviceId: 'lamp-1' }

t.test('bus: a LocalBus delivers each event to every listener at once, in the order they subscribed', async (t) => {
  const bus = new LocalBus()
  const heard: string[] = []
  const stopA = bus.subscribe(() => { heard.push('a') })
  bus.subscribe(() => { heard.push('b') })
  bus.publish(EVENT)
  t.strictSame(heard, ['a', 'b'])
  stopA()
  bus.publish(EVENT)
  t.strictSame(heard, ['a', 'b', 'b'], 'an unsubscribed listener hears nothing more')
  t.equal((bus as Bus).ready, undefined, 'ready at once')
})

t.test('bus: a listener that throws goes to its onError, and the others still hear the event', async (t) => {
  const bus = new LocalBus()
  const errors: unknown[] = []
  const heard: BusEvent[] = []
  const failure = new Error('listener failed')
  bus.subscribe(() => { throw failure }, (err) => { errors.push(err) })
  bus.subscribe((event) => { heard.push(event) })
  bus.publish(EVENT)
  t.strictSame(errors, [failure])
  t.strictSame(heard, [EVENT])
})

t.test('bus: without onError, what a listener throws comes out of publish', async (t) => {
  const bus = new LocalBus()
  bus.subscribe(() => { throw new Error('unreported') })
  t.throws(() => { bus.publish(EVENT) }, /unreported/)
})

t.test('bus: a listener that unsubscribes another while an event is delivered does not change that delivery', async (t) => {
  const bus = new LocalBus()
  const heard: string[] = []
  let stopB = (): void => {}
  bus.subscribe(() => { heard.push('a'); stopB() })
  stopB = bus.subscribe(() => { heard.push('b') })
  bus.publish(EVENT)
  bus.publish(EVENT)
  t.strictSame(heard, ['a', 'b', 'a'])
})
