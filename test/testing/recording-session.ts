// recordingSession(): a session whose pushes a test awaits one by one.
import t from 'tap'
import { createBroker } from '../../lib/broker.js'
import { memoryStore } from '../../lib/store/memory.js'
import { recordingSession } from '../../lib/testing/recording-session.js'
import { createTestBroker } from '../../lib/testing/test-broker.js'
import { SECRET } from '../fixtures/broker.js'
import { rejection } from '../fixtures/throws.js'

t.test('recordingSession: next() takes the pushes one by one, buffered or still to come', async (t) => {
  const { broker, tokens } = await createTestBroker()
  t.teardown(() => broker.close())
  await broker.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'lamp' } }, tokens.admin)
  const client = await recordingSession(broker)
  const subscribed = await client.handle({ action: 'command/subscribe', deviceId: 'lamp-1' })
  t.equal(subscribed.status, 'success', 'authenticated with tokens.client')
  const insert = (command: string): Promise<unknown> => broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command } }, tokens.admin)
  await insert('one')
  await insert('two')
  t.equal(client.pushes.length, 2, 'recorded as they came')
  t.equal((await client.next()).command.command, 'one')
  t.equal((await client.next()).command.command, 'two', 'a buffered push at once')
  const [third, fourth] = [client.next(), client.next()]
  await insert('three')
  await insert('four')
  t.equal((await third).command.command, 'three', 'waiting next() calls take pushes in order')
  t.equal((await fourth).command.command, 'four')
  t.strictSame(client.pushes.map((push) => push.command.command), ['one', 'two', 'three', 'four'])
  t.equal(client.pushes[0]?.action, 'command/insert')
  t.equal(client.pushes[0]?.subscriptionId, subscribed.subscriptionId)
})

t.test('recordingSession: ERR_TIMEOUT on the manual clock leaves the next push to the next call; ERR_ABORTED', async (t) => {
  const { broker, clock, tokens } = await createTestBroker()
  t.teardown(() => broker.close())
  await broker.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'lamp' } }, tokens.admin)
  const client = await recordingSession(broker, tokens.admin)
  await client.handle({ action: 'command/subscribe', deviceId: 'lamp-1' })
  const timing = rejection(client.next({ timeout: 50 }))
  clock.advance(50)
  t.equal((await timing).code, 'ERR_TIMEOUT')
  const controller = new AbortController()
  const aborting = rejection(client.next({ signal: controller.signal }))
  controller.abort()
  t.equal((await aborting).code, 'ERR_ABORTED')
  await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'kept' } }, tokens.admin)
  t.equal((await client.next()).command.command, 'kept', 'not lost to the waits that ended')
})

t.test('recordingSession: ERR_CLOSED when it or its broker closes, or was closed with nothing left', async (t) => {
  const { broker, tokens } = await createTestBroker()
  await broker.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'lamp' } }, tokens.admin)
  const client = await recordingSession(broker)
  await client.handle({ action: 'command/subscribe', deviceId: 'lamp-1' })
  await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'left' } }, tokens.admin)
  const waiting = rejection((async () => { await client.next(); return await client.next() })())
  await new Promise(setImmediate)
  client.close()
  t.ok(client.session.closed)
  t.equal((await waiting).code, 'ERR_CLOSED')
  const closed = await rejection(client.next())
  t.equal(closed.code, 'ERR_CLOSED')
  t.equal(closed.message, 'recordingSession.next: the session is closed')

  const other = await recordingSession(broker)
  const pending = rejection(other.next())
  await broker.close()
  t.equal((await pending).code, 'ERR_CLOSED', 'the broker closed')
})

t.test('recordingSession: on another broker, unauthenticated without a token', async (t) => {
  const broker = createBroker(memoryStore(), { secret: SECRET })
  t.teardown(() => broker.close())
  const bare = await recordingSession(broker)
  t.equal((await bare.handle({ action: 'command/subscribe', deviceId: 'lamp-1' })).code, 401)
  const { tokens } = await createTestBroker({ secret: SECRET })
  const signed = await recordingSession(broker, tokens.client)
  t.equal((await signed.handle({ action: 'subscription/list' })).status, 'success')
})

t.test('recordingSession: ERR_REFUSED for a token authenticate refuses; bad arguments throw', async (t) => {
  const { broker } = await createTestBroker()
  t.teardown(() => broker.close())
  const err = await rejection(recordingSession(broker, 'not a token'))
  t.equal(err.code, 'ERR_REFUSED')
  t.equal(err.message, 'recordingSession: authenticate failed: 401 Invalid credentials')
  t.equal(err.reply?.code, 401)
  t.throws(() => recordingSession({} as never), { name: 'TypeError', message: 'recordingSession: broker must be a Broker, received Object' })
  t.throws(() => recordingSession(broker, 5 as never), { name: 'TypeError', message: 'recordingSession: token must be a string, received number 5' })
  const client = await recordingSession(broker)
  t.throws(() => client.next({ timeout: -1 }), { name: 'RangeError', message: /recordingSession.next: options.timeout/ })
})
