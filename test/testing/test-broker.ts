// createTestBroker(): a broker on a memory store and a manual clock, with its tokens.
import t from 'tap'
import { Broker } from '../../lib/broker.js'
import { signToken } from '../../lib/auth.js'
import type { Command, Reply } from '../../lib/schema.js'
import { createTestBroker, TEST_START } from '../../lib/testing/test-broker.js'
import { SECRET } from '../fixtures/broker.js'

const ok = (reply: Reply): string => reply.status === 'success' ? 'success' : `${reply.code} ${reply.error}`

t.test('createTestBroker: a ready broker on a manual clock at TEST_START, with a fresh secret each time', async (t) => {
  const { broker, clock, tokens, secret } = await createTestBroker()
  t.teardown(() => broker.close())
  t.ok(broker instanceof Broker)
  t.equal(TEST_START, Date.parse('2026-01-01T00:00:00.000Z'))
  t.equal(clock.now(), TEST_START)
  t.equal(Buffer.from(secret, 'base64').length, 32, 'a 32-byte secret')
  const other = await createTestBroker()
  t.teardown(() => other.broker.close())
  t.not(other.secret, secret)
  t.equal(ok(await other.broker.handle({ action: 'device/get', deviceId: 'x' }, tokens.admin)), '401 Invalid credentials', 'tokens are keyed to their own broker')
  t.ok(Object.isFrozen(tokens))
})

t.test('createTestBroker: the admin token does everything; the memory store starts empty', async (t) => {
  const { broker, tokens } = await createTestBroker()
  t.teardown(() => broker.close())
  t.equal(ok(await broker.handle({ action: 'device/get', deviceId: 'lamp-1' }, tokens.admin)), '404 Device with such deviceId = lamp-1 not found')
  t.equal(ok(await broker.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'lamp' } }, tokens.admin)), 'success')
  t.equal(ok(await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on' } }, tokens.admin)), 'success')
  t.equal(ok(await broker.handle({ action: 'device/delete', deviceId: 'lamp-1' }, tokens.admin)), 'success')
})

t.test('createTestBroker: the client token inserts, gets, lists and subscribes to commands and gets devices, and nothing else', async (t) => {
  const { broker, tokens } = await createTestBroker()
  t.teardown(() => broker.close())
  await broker.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'lamp' } }, tokens.admin)
  const client = tokens.client
  const inserted = await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on' } }, client)
  t.equal(ok(inserted), 'success')
  const command = inserted.command as { id: number, userId: number }
  t.equal(command.userId, 2, 'user 2')
  t.equal(ok(await broker.handle({ action: 'command/get', deviceId: 'lamp-1', commandId: command.id }, client)), 'success')
  t.equal(ok(await broker.handle({ action: 'command/list', deviceId: 'lamp-1' }, client)), 'success')
  t.equal(ok(await broker.handle({ action: 'device/get', deviceId: 'lamp-1' }, client)), 'success')
  const session = broker.session(() => {})
  t.equal(ok(await session.handle({ action: 'command/subscribe', deviceId: 'lamp-1' }, client)), 'success')
  t.equal(ok(await broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: command.id, command: { status: 'x' } }, client)), '403 Access is denied')
  t.equal(ok(await broker.handle({ action: 'device/save', deviceId: 'lamp-2', device: { name: 'x' } }, client)), '403 Access is denied')
  t.equal(ok(await broker.handle({ action: 'device/delete', deviceId: 'lamp-1' }, client)), '403 Access is denied')
})

t.test('createTestBroker: the device token gets, updates and subscribes to commands, and nothing else', async (t) => {
  const { broker, tokens } = await createTestBroker()
  t.teardown(() => broker.close())
  await broker.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'lamp' } }, tokens.admin)
  const id = ((await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on' } }, tokens.admin)).command as Command).id
  const device = tokens.device
  t.equal(ok(await broker.handle({ action: 'command/get', deviceId: 'lamp-1', commandId: id }, device)), 'success')
  t.equal(ok(await broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: id, command: { status: 'done' } }, device)), 'success')
  const session = broker.session(() => {})
  t.equal(ok(await session.handle({ action: 'command/subscribe', deviceId: 'lamp-1' }, device)), 'success')
  t.equal(ok(await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on' } }, device)), '403 Access is denied')
  t.equal(ok(await broker.handle({ action: 'device/get', deviceId: 'lamp-1' }, device)), '403 Access is denied')
})

t.test('createTestBroker: tokens last a year of the test clock; sign() makes others over the admin\'s claims', async (t) => {
  const { broker, clock, tokens } = await createTestBroker({ start: 1_000_000 })
  t.teardown(() => broker.close())
  t.equal(clock.now(), 1_000_000, 'start')
  const info = { action: 'device/get', deviceId: 'nobody' }
  const seen = '404 Device with such deviceId = nobody not found'
  const short = tokens.sign({ e: clock.now() + 1000 })
  const reader = tokens.sign({ a: [5] })
  await broker.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'lamp' } }, tokens.admin)
  t.equal(ok(await broker.handle({ action: 'command/list', deviceId: 'lamp-1' }, reader)), 'success')
  t.equal(ok(await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on' } }, reader)), '403 Access is denied')
  t.equal(ok(await broker.handle(info, short)), seen)
  clock.advance(1001)
  t.equal(ok(await broker.handle(info, short)), '401 Token expired')
  clock.advance(364 * 24 * 3_600_000)
  t.equal(ok(await broker.handle(info, tokens.client)), seen, 'a day before the year is out')
  clock.advance(24 * 3_600_000)
  t.equal(ok(await broker.handle(info, tokens.client)), '401 Token expired')
})

t.test('createTestBroker: a given secret, and other broker options', async (t) => {
  const { broker, tokens, secret } = await createTestBroker({ secret: SECRET, broker: { maxLifetime: 60 } })
  t.teardown(() => broker.close())
  t.equal(secret, SECRET)
  const mine = signToken({ u: 9, a: [0], n: ['*'], dt: ['*'] }, { secret: SECRET, now: TEST_START })
  t.equal(ok(await broker.handle({ action: 'command/list', deviceId: 'nobody' }, mine)), '404 Device with such deviceId = nobody not found')
  await broker.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'lamp' } }, tokens.admin)
  const long = await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on', lifetime: 61 } }, tokens.admin)
  t.equal(long.code, 400, 'maxLifetime applies')
  const weak = await createTestBroker({ secret: 'devicehive', broker: { allowWeakKey: true } })
  t.teardown(() => weak.broker.close())
  t.equal(ok(await weak.broker.handle({ action: 'command/list', deviceId: 'nobody' }, weak.tokens.device)), '404 Device with such deviceId = nobody not found', 'a weak key signs too when allowed')
})

t.test('createTestBroker: bad options throw, naming the option', async (t) => {
  t.throws(() => createTestBroker(null as never), { name: 'TypeError', message: 'createTestBroker: options must be an object, received null' })
  t.throws(() => createTestBroker({ clock: 1 } as never), { name: 'TypeError', message: 'createTestBroker: unknown option clock (known: start, secret, broker)' })
  t.throws(() => createTestBroker({ start: '2026' as never }), { name: 'TypeError', message: /options.start must be a number of epoch ms, received string/ })
  t.throws(() => createTestBroker({ start: Infinity }), { name: 'RangeError', message: /options.start must be finite, received number Infinity/ })
  t.throws(() => createTestBroker({ secret: 5 as never }), { name: 'TypeError', message: /options.secret must be a string/ })
  t.throws(() => createTestBroker({ secret: 'short' }), { name: 'RangeError', message: /at least 32 bytes/ })
  t.throws(() => createTestBroker({ broker: 'x' as never }), { name: 'TypeError', message: /options.broker must be an object, received string/ })
  t.throws(() => createTestBroker({ broker: null as never }), { name: 'TypeError', message: /options.broker must be an object, received null/ })
  for (const key of ['secret', 'key', 'clock']) {
    t.throws(() => createTestBroker({ broker: { [key]: 1 } as never }), { name: 'TypeError', message: `createTestBroker: options.broker.${key} is not for the test broker to take` })
  }
  t.throws(() => createTestBroker({ broker: { tick: -1 } }), { name: 'RangeError', message: /tick/ })
})

t.test('createTestBroker: broker.close() is idempotent and ends everything', async (t) => {
  const { broker, tokens } = await createTestBroker()
  await broker.close()
  await broker.close()
  t.equal(ok(await broker.handle({ action: 'device/get', deviceId: 'x' }, tokens.admin)), '503 Broker is closed')
})
