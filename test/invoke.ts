// broker.invoke(): insert a command, then wait for its device's first answer.
import t from 'tap'
import { createBroker, type Broker } from '../lib/broker.js'
import { manualClock } from '../lib/manual-clock.js'
import type { Command, Push } from '../lib/schema.js'
import type { Session } from '../lib/session.js'
import { errorOf, SECRET, setup, START } from './fixtures/broker.js'
import { laterStore } from './fixtures/later-store.js'
import { sharedSpace } from './fixtures/shared-store.js'
import { signToken } from '../lib/auth.js'
import { rejection } from './fixtures/throws.js'

const turns = async (n = 5): Promise<void> => { for (let i = 0; i < n; i++) await new Promise(setImmediate) }

// A device stub on `broker`: answers each command pushed to it with `answer(command)`.
async function deviceStub (broker: Broker, token: string, deviceId: string, answer: (command: Command) => Record<string, unknown> | undefined): Promise<Session> {
  const session: Session = broker.session((push: Push) => {
    const update = answer(push.command)
    if (update !== undefined) void session.handle({ action: 'command/update', deviceId, commandId: push.command.id, command: update })
  })
  await session.handle({ action: 'authenticate', token })
  const reply = await session.handle({ action: 'command/subscribe', deviceId })
  if (reply.status !== 'success') throw new Error(`subscribe failed: ${JSON.stringify(reply)}`)
  return session
}

t.test('invoke: resolves with the command as the device answered it', async (t) => {
  const { broker, admin, device } = setup(t)
  await device('lamp-1')
  await deviceStub(broker, admin, 'lamp-1', (command) => ({ status: 'done', result: { level: (command.parameters as { level: number }).level * 2 } }))
  const answered = await broker.invoke({ deviceId: 'lamp-1', command: { command: 'on', parameters: { level: 3 }, lifetime: 30 } }, admin)
  t.equal(answered.command, 'on')
  t.equal(answered.status, 'done')
  t.strictSame(answered.result, { level: 6 })
  t.ok(Object.isFrozen(answered), 'frozen')
  t.strictSame(Object.keys(answered), ['id', 'command', 'timestamp', 'lastUpdated', 'userId', 'deviceId', 'networkId', 'deviceTypeId', 'parameters', 'lifetime', 'status', 'result'])
})

t.test('invoke: answers to other commands of the device do not settle it', async (t) => {
  const { broker, admin, device, insert } = setup(t)
  await device('lamp-1')
  const other = (await insert('lamp-1', { command: 'other' }) as unknown as { command: { id: number } }).command.id
  let invoked = false
  const pending = broker.invoke({ deviceId: 'lamp-1', command: { command: 'mine' } }, admin).then((c) => { invoked = true; return c })
  await turns()
  await broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: other, command: { status: 'x' } }, admin)
  await turns()
  t.equal(invoked, false, 'still waiting')
  await broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: other + 1, command: { status: 'mine' } }, admin)
  t.equal((await pending).status, 'mine')
})

t.test('invoke: ERR_EXPIRED when the lifetime runs out first; ERR_TIMEOUT after its timeout, the command left to its lifetime', async (t) => {
  const { broker, admin, device, clock } = setup(t)
  await device('lamp-1')
  const expiring = rejection(broker.invoke({ deviceId: 'lamp-1', command: { command: 'on', lifetime: 2 } }, admin))
  await turns()
  clock.advance(2100)
  const expired = await expiring
  t.equal(expired.code, 'ERR_EXPIRED')
  t.match(expired.message, /expired before the device answered/)

  const timing = rejection(broker.invoke({ deviceId: 'lamp-1', command: { command: 'slow', lifetime: 60 } }, admin, { timeout: 500 }))
  await turns()
  clock.advance(499)
  clock.advance(1)
  const timedOut = await timing
  t.equal(timedOut.code, 'ERR_TIMEOUT')
  const listed = await broker.handle({ action: 'command/list', deviceId: 'lamp-1', command: 'slow' }, admin) as unknown as { commands: Command[] }
  t.equal(listed.commands.length, 1, 'the command stays, to its lifetime')
})

t.test('invoke: ERR_EXPIRED when the broker\'s retention runs out first for a command without a lifetime', async (t) => {
  const { broker, admin, device, clock } = setup(t, { retention: 60 })
  await device('lamp-1')
  const expiring = rejection(broker.invoke({ deviceId: 'lamp-1', command: { command: 'on' } }, admin))
  await turns()
  clock.advance(59_999)
  await turns()
  let settled = false
  void expiring.then(() => { settled = true })
  await turns()
  t.equal(settled, false, 'still waiting just before')
  clock.advance(1)
  t.equal((await expiring).code, 'ERR_EXPIRED')
})

t.test('invoke: ERR_ABORTED for a signal aborted before or while it waits', async (t) => {
  const { broker, admin, device } = setup(t)
  await device('lamp-1')
  const before = new AbortController()
  before.abort(new Error('no longer needed'))
  const early = await rejection(broker.invoke({ deviceId: 'lamp-1', command: { command: 'on' } }, admin, { signal: before.signal }))
  t.equal(early.code, 'ERR_ABORTED')
  t.match((early.cause as Error).message, /no longer needed/)
  const listed = await broker.handle({ action: 'command/list', deviceId: 'lamp-1' }, admin) as unknown as { commands: Command[] }
  t.equal(listed.commands.length, 0, 'aborted before: nothing was inserted')

  const during = new AbortController()
  const waiting = rejection(broker.invoke({ deviceId: 'lamp-1', command: { command: 'on' } }, admin, { signal: during.signal }))
  await turns()
  during.abort()
  t.equal((await waiting).code, 'ERR_ABORTED')
})

t.test('invoke: ERR_REFUSED carries the insert\'s error reply; a token that may insert but not read is refused before inserting', async (t) => {
  const { broker, admin, device, token } = setup(t)
  await device('lamp-1')
  const missing = await rejection(broker.invoke({ deviceId: 'nobody', command: { command: 'on' } }, admin))
  t.equal(missing.code, 'ERR_REFUSED')
  t.strictSame(errorOf(missing.reply as never), { code: 404, error: 'Device with such deviceId = nobody not found' })
  const bad = await rejection(broker.invoke({ deviceId: 'lamp-1', command: { command: '' } }, admin))
  t.equal(bad.reply?.code, 400)
  const writeOnly = await rejection(broker.invoke({ deviceId: 'lamp-1', command: { command: 'on' } }, token({ a: [7] })))
  t.strictSame(errorOf(writeOnly.reply as never), { code: 403, error: 'Access is denied' })
  const listed = await broker.handle({ action: 'command/list', deviceId: 'lamp-1' }, admin) as unknown as { commands: Command[] }
  t.equal(listed.commands.length, 0, 'nothing inserted')
  const unsigned = await rejection(broker.invoke({ deviceId: 'lamp-1', command: { command: 'on' } }, 'not a token'))
  t.equal(unsigned.reply?.code, 401, 'a token refused outright: the insert\'s 401')
})

t.test('invoke: ERR_CLOSED when the broker closes while it waits, or was closed', async (t) => {
  const { broker, admin, device } = setup(t)
  await device('lamp-1')
  const waiting = rejection(broker.invoke({ deviceId: 'lamp-1', command: { command: 'on' } }, admin))
  await turns()
  await broker.close()
  t.equal((await waiting).code, 'ERR_CLOSED')
  t.equal((await rejection(broker.invoke({ deviceId: 'lamp-1', command: { command: 'on' } }, admin))).code, 'ERR_CLOSED')
})

t.test('invoke: a bad request or options throw at once', async (t) => {
  const { broker, admin } = setup(t)
  t.throws(() => broker.invoke(null as never, admin), { name: 'TypeError', message: /request must be an object/ })
  t.throws(() => broker.invoke({ deviceId: '', command: { command: 'on' } }, admin), { name: 'TypeError', message: /request.deviceId must be a non-empty string/ })
  t.throws(() => broker.invoke({ deviceId: 'a', command: { command: 'on' } }, admin, null as never), { name: 'TypeError', message: /options must be an object/ })
  t.throws(() => broker.invoke({ deviceId: 'a', command: { command: 'on' } }, admin, { signal: {} as never }), { name: 'TypeError', message: /options.signal must be an AbortSignal/ })
  t.throws(() => broker.invoke({ deviceId: 'a', command: { command: 'on' } }, admin, { timeout: -1 }), { name: 'RangeError', message: /options.timeout must be a finite number/ })
})

t.test('invoke: across a cluster, with the device on another broker, even when it answers before the insert\'s reply is back', async (t) => {
  const clock = manualClock(START)
  const space = sharedSpace()
  // The invoking broker's store answers later: the device's answer can arrive first.
  const [here, there] = [createBroker(laterStore(space.node()), { secret: SECRET, clock }), createBroker(space.node(), { secret: SECRET, clock })]
  t.teardown(async () => { await here.close(); await there.close() })
  const admin = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'] }, { secret: SECRET, now: clock.now() })
  await there.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'lamp' } }, admin)
  await deviceStub(there, admin, 'lamp-1', () => ({ status: 'done', result: 'from the other process' }))
  const answered = await here.invoke({ deviceId: 'lamp-1', command: { command: 'on', lifetime: 30 } }, admin)
  t.equal(answered.result, 'from the other process')

  // The device answers while the insert's reply is held back: the answer is read from the store.
  const held = laterStore(space.node())
  const third = createBroker(held, { secret: SECRET, clock })
  t.teardown(() => third.close())
  held.hold('commit')
  const early = third.invoke({ deviceId: 'lamp-1', command: { command: 'early', lifetime: 30 } }, admin)
  const last = (): number => space.inner.lastCommandId()
  const before = last()
  while (last() === before || space.inner.getCommand(last(), clock.now())?.updated !== true) await turns(1)
  held.release('commit')
  t.equal((await early).status, 'done', 'answered before the reply was back')
})

t.test('invoke: a command gone before its reply was back (its device deleted) rejects; a read that fails rejects with ERR_STORE', async (t) => {
  const store = laterStore()
  const { broker, admin, device } = setup(t, {}, store)
  await device('lamp-1')
  store.hold('getCommand', 'call')
  const gone = rejection(broker.invoke({ deviceId: 'lamp-1', command: { command: 'on' } }, admin))
  while (store.waiting('getCommand') === 0) await turns(1)
  t.equal((await broker.handle({ action: 'device/delete', deviceId: 'lamp-1' }, admin)).status, 'success')
  store.release('getCommand')
  const err = await gone
  t.equal(err.code, 'ERR_EXPIRED')
  t.match(err.message, /was gone \(expired, or its device deleted\)/)

  await device('lamp-2')
  const failing = laterStore()
  const second = setup(t, {}, { ...failing, getCommand: () => Promise.reject(new Error('read failed')) })
  await second.device('lamp-2')
  const failed = await rejection(second.broker.invoke({ deviceId: 'lamp-2', command: { command: 'on' } }, second.admin))
  t.equal(failed.code, 'ERR_STORE')
  t.match(failed.message, /reading command \d+ back failed/)
})
