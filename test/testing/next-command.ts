// nextCommand(): the next command inserted for a device, as a promise.
import t from 'tap'
import { createBroker } from '../../lib/broker.js'
import { memoryStore } from '../../lib/store/memory.js'
import { nextCommand } from '../../lib/testing/next-command.js'
import { createTestBroker } from '../../lib/testing/test-broker.js'
import { SECRET } from '../fixtures/broker.js'
import { rejection } from '../fixtures/throws.js'

t.test('nextCommand: resolves with the next command inserted for the device, not another device\'s', async (t) => {
  const { broker, tokens } = await createTestBroker()
  t.teardown(() => broker.close())
  for (const deviceId of ['lamp-1', 'lamp-2']) await broker.handle({ action: 'device/save', deviceId, device: { name: deviceId } }, tokens.admin)
  const next = nextCommand(broker, 'lamp-1')
  await broker.handle({ action: 'command/insert', deviceId: 'lamp-2', command: { command: 'other' } }, tokens.client)
  await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on', parameters: { level: 3 } } }, tokens.client)
  await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'off' } }, tokens.client)
  const command = await next
  t.match(command, { command: 'on', deviceId: 'lamp-1', parameters: { level: 3 }, userId: 2 })
  t.ok(Object.isFrozen(command))
})

t.test('nextCommand: ERR_TIMEOUT when the manual clock passes its timeout; ERR_ABORTED; ERR_CLOSED', async (t) => {
  const { broker, clock } = await createTestBroker()
  const timing = rejection(nextCommand(broker, 'lamp-1', { timeout: 1000 }))
  clock.advance(1000)
  t.equal((await timing).code, 'ERR_TIMEOUT')
  const controller = new AbortController()
  const aborting = rejection(nextCommand(broker, 'lamp-1', { signal: controller.signal }))
  controller.abort()
  t.equal((await aborting).code, 'ERR_ABORTED')
  const closing = rejection(nextCommand(broker, 'lamp-1'))
  await broker.close()
  t.equal((await closing).code, 'ERR_CLOSED')
  const closed = await rejection(nextCommand(broker, 'lamp-1'))
  t.equal(closed.code, 'ERR_CLOSED', 'on a closed broker')
})

t.test('nextCommand: works on any broker', async (t) => {
  const broker = createBroker(memoryStore(), { secret: SECRET })
  t.teardown(() => broker.close())
  const { tokens } = await createTestBroker({ secret: SECRET })
  await broker.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'lamp' } }, tokens.admin)
  const next = nextCommand(broker, 'lamp-1')
  await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on' } }, tokens.admin)
  t.equal((await next).command, 'on')
})

t.test('nextCommand: bad arguments throw at once', async (t) => {
  const { broker } = await createTestBroker()
  t.teardown(() => broker.close())
  t.throws(() => nextCommand({} as never, 'lamp-1'), { name: 'TypeError', message: 'nextCommand: broker must be a Broker, received Object' })
  t.throws(() => nextCommand(broker, ''), { name: 'TypeError', message: 'nextCommand: deviceId must be a non-empty string, received string ""' })
  t.throws(() => nextCommand(broker, 5 as never), { name: 'TypeError', message: /deviceId must be a non-empty string, received number 5/ })
  t.throws(() => nextCommand(broker, 'lamp-1', { timeout: -1 }), { name: 'RangeError', message: /nextCommand: options.timeout/ })
})
