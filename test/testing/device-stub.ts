// deviceStub(): a device that answers each command it is sent with a command/update.
import t from 'tap'
import { createBroker } from '../../lib/broker.js'
import { BrokerError } from '../../lib/errors.js'
import type { Command, Device } from '../../lib/schema.js'
import { memoryStore } from '../../lib/store/memory.js'
import { deviceStub } from '../../lib/testing/device-stub.js'
import { createTestBroker } from '../../lib/testing/test-broker.js'
import { SECRET } from '../fixtures/broker.js'
import { rejection } from '../fixtures/throws.js'

t.test('deviceStub: saves the missing device, answers each command with what answer() returns, and records them', async (t) => {
  const { broker, clock, tokens } = await createTestBroker()
  t.teardown(() => broker.close())
  const stub = await deviceStub(broker, {
    deviceId: 'lamp-1',
    device: { name: 'Lamp', networkId: 7 },
    answer: (command) => command.command === 'skip' ? undefined : { status: 'done', result: { got: command.command } }
  })
  const saved = await broker.handle({ action: 'device/get', deviceId: 'lamp-1' }, tokens.admin)
  t.match(saved.device as Device, { id: 'lamp-1', name: 'Lamp', networkId: 7 }, 'saved with the fields given')
  const answered = await broker.invoke({ deviceId: 'lamp-1', command: { command: 'on' } }, tokens.client)
  t.match(answered, { status: 'done', result: { got: 'on' } })
  const skipping = broker.invoke({ deviceId: 'lamp-1', command: { command: 'skip' } }, tokens.client, { timeout: 10 }).catch((err: BrokerError) => err.code)
  while (stub.commands.length < 2) await new Promise(setImmediate)
  await new Promise(setImmediate)
  clock.advance(10)
  t.equal(await skipping, 'ERR_TIMEOUT', 'undefined leaves it unanswered')
  t.strictSame(stub.commands.map((command) => command.command), ['on', 'skip'])
  t.equal(stub.commands[0]?.userId, 2)
  t.strictSame(stub.errors, [])
  t.equal(stub.session.closed, false)
  await stub.close()
  t.equal(stub.session.closed, true)
})

t.test('deviceStub: an existing device is left as it is; an async answer is awaited, and close() waits for it', async (t) => {
  const { broker, tokens } = await createTestBroker()
  t.teardown(() => broker.close())
  await broker.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'Original', deviceTypeId: 4 } }, tokens.admin)
  let release: () => void = () => {}
  const gate = new Promise<void>((resolve) => { release = resolve })
  const stub = await deviceStub(broker, { deviceId: 'lamp-1', answer: async () => { await gate; return { status: 'late' } } })
  t.match((await broker.handle({ action: 'device/get', deviceId: 'lamp-1' }, tokens.admin)).device, { name: 'Original', deviceTypeId: 4 })
  const inserted = await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on' } }, tokens.client)
  const id = (inserted.command as Command).id
  await new Promise(setImmediate)
  const closing = stub.close()
  release()
  await closing
  const got = await broker.handle({ action: 'command/get', deviceId: 'lamp-1', commandId: id }, tokens.client)
  t.equal((got.command as Command).status, 'late', 'the answer under way was sent before the close')
})

t.test('deviceStub: an answer that throws, or an update refused, is kept in errors and close() rejects with the first', async (t) => {
  const { broker, tokens } = await createTestBroker()
  t.teardown(() => broker.close())
  const failure = new Error('the device broke')
  const stub = await deviceStub(broker, {
    deviceId: 'lamp-1',
    answer: (command) => {
      if (command.command === 'throw') throw failure
      return { status: 'x'.repeat(70_000) }
    }
  })
  await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'throw' } }, tokens.client)
  await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'big' } }, tokens.client)
  for (let i = 0; i < 10 && stub.errors.length < 2; i++) await new Promise(setImmediate)
  t.equal(stub.errors[0], failure)
  const refused = stub.errors[1] as BrokerError
  t.equal(refused.code, 'ERR_REFUSED')
  t.match(refused.message, /^deviceStub: the update of command \d+ was refused: 400 /)
  await t.rejects(stub.close(), failure)
})

t.test('deviceStub: on another broker, with its token; ERR_REFUSED for each step refused', async (t) => {
  const broker = createBroker(memoryStore(), { secret: SECRET })
  t.teardown(() => broker.close())
  const { tokens } = await createTestBroker({ secret: SECRET })
  const answer = (): { status: string } => ({ status: 'ok' })
  const stub = await deviceStub(broker, { deviceId: 'lamp-1', token: tokens.admin, answer })
  t.equal((await broker.invoke({ deviceId: 'lamp-1', command: { command: 'on' } }, tokens.client)).status, 'ok')
  await stub.close()

  const get = await rejection(deviceStub(broker, { deviceId: 'lamp-2', token: tokens.device, answer }))
  t.equal(get.code, 'ERR_REFUSED')
  t.equal(get.message, 'deviceStub: device/get failed: 403 Access is denied')
  const save = await rejection(deviceStub(broker, { deviceId: 'lamp-2', token: tokens.client, answer }))
  t.equal(save.message, 'deviceStub: device/save failed: 403 Access is denied')
  t.equal(save.reply?.code, 403)
  const own = await createTestBroker()
  t.teardown(() => own.broker.close())
  const auth = await rejection(deviceStub(own.broker, { deviceId: 'lamp-3', token: 'not a token', answer }))
  t.equal(auth.message, 'deviceStub: authenticate failed: 401 Invalid credentials')
  const subscribe = await rejection(deviceStub(own.broker, { deviceId: 'lamp-3', token: own.tokens.sign({ a: [8] }), answer }))
  t.equal(subscribe.message, 'deviceStub: command/subscribe failed: 403 Access is denied')
})

t.test('deviceStub: bad options throw at once, naming the option', async (t) => {
  const { broker } = await createTestBroker()
  t.teardown(() => broker.close())
  const answer = (): undefined => undefined
  t.throws(() => deviceStub(null as never, { deviceId: 'a', answer }), { name: 'TypeError', message: 'deviceStub: broker must be a Broker, received null' })
  t.throws(() => deviceStub(broker, null as never), { name: 'TypeError', message: 'deviceStub: options must be an object, received null' })
  t.throws(() => deviceStub(broker, 'x' as never), { name: 'TypeError', message: /options must be an object/ })
  t.throws(() => deviceStub(broker, { deviceId: '', answer }), { name: 'TypeError', message: /options.deviceId must be a non-empty string/ })
  t.throws(() => deviceStub(broker, { deviceId: 1 as never, answer }), { name: 'TypeError', message: /options.deviceId must be a non-empty string, received number 1/ })
  t.throws(() => deviceStub(broker, { deviceId: 'a', answer: {} as never }), { name: 'TypeError', message: /options.answer must be a function, received Object/ })
  t.throws(() => deviceStub(broker, { deviceId: 'a', answer, token: 1 as never }), { name: 'TypeError', message: /options.token must be a string/ })
  t.throws(() => deviceStub(broker, { deviceId: 'a', answer, device: 'x' as never }), { name: 'TypeError', message: /options.device must be an object, received string/ })
  t.throws(() => deviceStub(broker, { deviceId: 'a', answer, device: null as never }), { name: 'TypeError', message: /options.device must be an object, received null/ })
  const other = createBroker(memoryStore(), { secret: SECRET })
  t.teardown(() => other.close())
  t.throws(() => deviceStub(other, { deviceId: 'a', answer }), { name: 'TypeError', message: 'deviceStub: options.token is required on a broker createTestBroker did not make' })
})
