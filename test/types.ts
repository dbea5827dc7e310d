// handle() is typed per action. `npm run typecheck` holds the compile-time half: every
// `@ts-expect-error` line must fail to compile, every other line must compile. The runtime half
// checks that each action's success reply has exactly the payload keys its type names.
import t from 'tap'
import {
  createBroker, manualClock, memoryStore, signToken,
  type ActionName, type Command, type InsertedCommand, type Message, type Reply, type ReplyPayloads, type ReplyTo, type Session
} from '../lib/index.js'

const SECRET = 'dGVzdC1zZWNyZXQtb2YtdGhpcnR5LXR3by1ieXRlcyE='

/** True when A and B are the same type. */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false
/** Compiles only when given `true`: `expectType<Equal<X, Y>>(true)`. */
function expectType<T extends true> (value: T): T {
  return value
}

// Every key of every payload, once: a key missing here, or one the type lacks, fails to compile.
const PAYLOAD_KEYS: { [A in ActionName]: Record<keyof ReplyPayloads[A], true> } = {
  authenticate: {},
  'token/refresh': { accessToken: true },
  'token/create': { accessToken: true, refreshToken: true },
  'server/info': { info: true },
  'command/insert': { command: true },
  'command/update': {},
  'command/get': { command: true },
  'command/list': { commands: true },
  'command/subscribe': { subscriptionId: true },
  'command/unsubscribe': {},
  'subscription/list': { subscriptions: true },
  'device/save': {},
  'device/get': { device: true },
  'device/delete': {}
}

t.test('types: a success reply has exactly the payload keys its type names, for every action', async (t) => {
  const clock = manualClock(Date.parse('2026-01-01'))
  const broker = createBroker(memoryStore(), { secret: SECRET, clock })
  t.teardown(() => broker.close())
  const token = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'] }, { secret: SECRET, now: clock.now() })
  const refreshToken = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'], t: 0 }, { secret: SECRET, now: clock.now() })
  const session: Session = broker.session(() => {})
  const seen = new Set<string>()

  /** Sends a message, checks its success reply's keys against PAYLOAD_KEYS and returns it. */
  async function ok<M extends Message> (message: M): Promise<Extract<ReplyTo<M['action']>, { status: 'success' }>> {
    const reply = await session.handle(message, token)
    if (reply.status !== 'success') throw new Error(`${message.action} failed: ${JSON.stringify(reply)}`)
    t.strictSame(Object.keys(reply), ['action', 'requestId', 'status', ...Object.keys(PAYLOAD_KEYS[message.action])], message.action)
    seen.add(message.action)
    return reply as Extract<ReplyTo<M['action']>, { status: 'success' }>
  }

  await ok({ action: 'authenticate', token })
  const info = (await ok({ action: 'server/info' })).info
  t.equal(typeof info.apiVersion, 'string')
  const pair = await ok({ action: 'token/create', payload: { userId: 1 } })
  t.equal(typeof pair.accessToken + typeof pair.refreshToken, 'stringstring')
  t.equal(typeof (await ok({ action: 'token/refresh', refreshToken })).accessToken, 'string')
  await ok({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'Lamp', networkId: 1 } })
  const device = (await ok({ action: 'device/get', deviceId: 'lamp-1' })).device
  t.equal(device.name, 'Lamp')
  const subscriptionId: number = (await ok({ action: 'command/subscribe', deviceId: 'lamp-1' })).subscriptionId
  const inserted: InsertedCommand = (await ok({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on', lifetime: 30 } })).command
  t.strictSame(Object.keys(inserted), ['id', 'timestamp', 'lastUpdated', 'userId'])
  await ok({ action: 'command/update', deviceId: 'lamp-1', commandId: inserted.id, command: { status: 'done' } })
  const got: Command = (await ok({ action: 'command/get', deviceId: 'lamp-1', commandId: inserted.id })).command
  t.equal(got.status, 'done')
  const listed: Command[] = (await ok({ action: 'command/list', deviceId: 'lamp-1' })).commands
  t.equal(listed.length, 1)
  const [listing] = (await ok({ action: 'subscription/list' })).subscriptions
  t.equal(listing?.subscriptionId, subscriptionId)
  await ok({ action: 'command/unsubscribe', subscriptionId })
  await ok({ action: 'device/delete', deviceId: 'lamp-1' })
  t.strictSame([...seen].sort(), Object.keys(PAYLOAD_KEYS).sort(), 'every action was sent')
})

t.test('types: what compiles and what does not', async (t) => {
  const clock = manualClock(Date.parse('2026-01-01'))
  const broker = createBroker(memoryStore(), { secret: SECRET, clock })
  t.teardown(() => broker.close())
  const token = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'] }, { secret: SECRET, now: clock.now() })

  const saved = await broker.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'Lamp' } }, token)
  t.equal(saved.status, 'success')

  // A message literal resolves to its action's reply; narrowed, the payload is typed.
  const inserted = await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on' } }, token)
  expectType<Equal<typeof inserted, ReplyTo<'command/insert'>>>(true)
  t.equal(inserted.status, 'success')
  if (inserted.status === 'success') {
    expectType<Equal<typeof inserted.command, InsertedCommand>>(true)
    t.type(inserted.command.id, 'number')
    t.equal(inserted.code, undefined, 'code is typed on a success reply, and absent')
  }
  const got = await broker.handle({ action: 'command/get', deviceId: 'lamp-1', commandId: 1 }, token)
  if (got.status === 'success') expectType<Equal<typeof got.command, Command>>(true)
  else expectType<Equal<typeof got.error, string>>(true)
  t.equal(got.status, 'success')

  // A frame, `unknown`, or an object whose action is a plain string: a Reply, as before.
  const frame = await broker.handle('{"action":"server/info"}')
  expectType<Equal<typeof frame, Reply>>(true)
  const parsed: unknown = JSON.parse('{"action":"server/info"}')
  const fromUnknown = await broker.handle(parsed)
  expectType<Equal<typeof fromUnknown, Reply>>(true)
  t.equal(fromUnknown.status, 'success')
  const built = { action: String('server/info') }
  const fromString = await broker.handle(built)
  expectType<Equal<typeof fromString, Reply>>(true)
  t.equal(fromString.status, 'success')
  const any: Message = { action: 'server/info' }
  const union = await broker.handle(any)
  t.equal(union.status, 'success')

  // An unknown action in an object literal does not compile (the broker answers it all the same).
  // @ts-expect-error a typo in the action
  const typo = await broker.handle({ action: 'command/insret', deviceId: 'lamp-1', command: { command: 'on' } }, token)
  t.equal(typo.code, 400)
  // @ts-expect-error DeviceHive's notifications are not served
  t.equal((await broker.handle({ action: 'notification/insert', deviceId: 'lamp-1' }, token)).code, 400)
  // @ts-expect-error the same through a session
  t.equal((await broker.session(() => {}).handle({ action: 'device/gte', deviceId: 'lamp-1' }, token)).code, 400)

  // A known action with the wrong fields compiles as a raw message (the broker judges it), with an untyped reply.
  const wrong = await broker.handle({ action: 'command/get', deviceId: 'lamp-1' }, token)
  expectType<Equal<typeof wrong, Reply>>(true)
  t.equal(wrong.code, 400)

  // A payload key that its action's reply does not have does not compile.
  if (inserted.status === 'success') {
    // @ts-expect-error command/insert has no `commands`
    t.equal(inserted.commands, undefined)
  }
})
