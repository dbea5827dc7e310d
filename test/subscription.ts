// A subscription's life: history replayed a bounded step per turn after the reply, live
// events waiting meanwhile and delivered after, without what the history already sent.
import t from 'tap'
import type { BrokerError } from '../lib/errors.js'
import { memoryStore } from '../lib/store/memory.js'
import type { Push } from '../lib/schema.js'
import type { Store } from '../lib/store/store.js'
import { STEP_EXAMINE } from '../lib/turns.js'
import { body, errorOf, insertAll, INTERNAL, overridable, setup, START } from './fixtures/broker.js'
import { laterStore } from './fixtures/later-store.js'
import { command } from './fixtures/store-suite.js'

const turn = (): Promise<void> => new Promise(setImmediate)
// Three scan steps' worth of commands, ten ms apart; two of them named 'rare'.
const COUNT = 3 * STEP_EXAMINE
const RARE = [Math.floor(STEP_EXAMINE / 2), Math.floor(2.5 * STEP_EXAMINE)]

async function world (t: Parameters<typeof setup>[0], options: Parameters<typeof setup>[1] = {}, wrap: (inner: Store) => Store = (inner) => inner): Promise<ReturnType<typeof setup> & { pushes: Push[], session: ReturnType<ReturnType<typeof setup>['broker']['session']> }> {
  const inner = memoryStore()
  const w = setup(t, options, wrap(inner))
  await w.device('lamp-1')
  insertAll(inner, Array.from({ length: COUNT }, (_, i) =>
    command({ deviceId: 'lamp-1', command: RARE.includes(i) ? 'rare' : 'common', timestamp: START + 10 * i })))
  const pushes: Push[] = []
  const session = w.broker.session((push) => { pushes.push(push) })
  body(await session.handle({ action: 'authenticate', token: w.admin }))
  return { ...w, pushes, session }
}

t.test('subscription: history comes over several turns, then what came meanwhile, without repeats', async (t) => {
  const w = await world(t)
  const reply = await w.session.handle({ action: 'command/subscribe', deviceId: 'lamp-1', names: ['rare'], timestamp: START - 1 })
  const id = body(reply).subscriptionId as number
  t.same(w.pushes, [], 'nothing before the reply is out')
  // Live while the replay is under way: it lands beyond where the replay has read, so the
  // replay finds it too. It is pushed once.
  const live = await w.insert('lamp-1', { command: 'rare', timestamp: new Date(START + 10 * COUNT - 5).toISOString() })
  for (let i = 0; i < 5; i++) await turn()
  t.same(w.pushes.map((push) => [push.subscriptionId, push.command.timestamp]), [
    [id, new Date(START + 10 * (RARE[0] as number)).toISOString().slice(0, 23)],
    [id, new Date(START + 10 * (RARE[1] as number)).toISOString().slice(0, 23)],
    [id, new Date(START + 10 * COUNT - 5).toISOString().slice(0, 23)]
  ], 'the two in history, in order, then the live one, once')
  t.equal(w.pushes[2]?.command.id, body(live).command.id)
})

t.test('subscription: live events that outrun the replay end it where it is', async (t) => {
  const w = await world(t, { maxHistory: 2 })
  const id = body(await w.session.handle({ action: 'command/subscribe', deviceId: 'lamp-1', names: ['rare'], timestamp: START - 1, limit: 2 })).subscriptionId as number
  // Two live commands arrive while the replay is after its first step: maxHistory of them.
  await Promise.all([w.insert('lamp-1', { command: 'rare', timestamp: START }), w.insert('lamp-1', { command: 'rare', timestamp: START })])
  for (let i = 0; i < 5; i++) await turn()
  t.same(w.pushes.map((push) => [push.subscriptionId, push.command.id]), [
    [id, (RARE[0] as number) + 1],
    [id, COUNT + 1],
    [id, COUNT + 2]
  ], 'what the replay had sent, then the two live ones; the rest of the history is dropped')
})

t.test('subscription: a replay the store fails after the reply is reported, and the subscription goes on live', async (t) => {
  let scans = 0
  const w = await world(t, {}, (inner) => ({
    ...overridable(inner),
    scanCommands: (...args) => {
      if (++scans === 2) throw new Error('unreadable')
      return inner.scanCommands(...args)
    }
  }))
  const errors: BrokerError[] = []
  w.broker.on('error', (err) => { errors.push(err) })
  const id = body(await w.session.handle({ action: 'command/subscribe', deviceId: 'lamp-1', names: ['rare'], timestamp: START - 1 })).subscriptionId as number
  for (let i = 0; i < 3; i++) await turn()
  t.equal(errors.length, 1, 'reported once')
  t.equal(errors[0]?.code, 'ERR_STORE')
  t.equal(errors[0]?.message, `replaying the history of subscription ${id} failed; it goes on live: unreadable`)
  await w.insert('lamp-1', { command: 'rare' })
  t.same(w.pushes.map((push) => push.command.id), [(RARE[0] as number) + 1, COUNT + 1], 'the first step\'s history, then live')
})

t.test('subscription: unsubscribing or closing during a replay stops it', async (t) => {
  const w = await world(t)
  const id = body(await w.session.handle({ action: 'command/subscribe', deviceId: 'lamp-1', names: ['rare'], timestamp: START - 1 })).subscriptionId as number
  body(await w.session.handle({ action: 'command/unsubscribe', subscriptionId: id }))
  for (let i = 0; i < 5; i++) await turn()
  t.same(w.pushes.map((push) => push.command.id), [(RARE[0] as number) + 1], 'the first step\'s push, sent with the reply; the rest never ran')
  w.pushes.length = 0
  body(await w.session.handle({ action: 'command/subscribe', deviceId: 'lamp-1', names: ['rare'], timestamp: START - 1 }))
  w.session.close()
  for (let i = 0; i < 5; i++) await turn()
  t.same(w.pushes, [], 'closed as the reply came: nothing is pushed to a closed session, and the replay stops')
})

t.test('subscription: a push that closes its own session during a replay ends it there', async (t) => {
  // With limit 2 the push that closes is the replay's last; without, more history follows.
  for (const limit of [2, undefined]) {
    const w = await world(t)
    const pushes: Push[] = []
    const session = w.broker.session((push) => {
      pushes.push(push)
      // The second history push comes from a later step, straight from the replay.
      if (pushes.length === 2) session.close()
    })
    body(await session.handle({ action: 'command/subscribe', deviceId: 'lamp-1', names: ['rare'], timestamp: START - 1, limit }, w.admin))
    await w.insert('lamp-1', { command: 'rare', timestamp: START - 10 })
    for (let i = 0; i < 5; i++) await turn()
    t.equal(pushes.length, 2, `limit ${limit}: nothing after the close, not the live command that waited`)
    t.equal(session.closed, true)
  }
})

t.test('subscription: history comes from the networks the filter names, or else those the token reaches', async (t) => {
  const w = setup(t)
  for (const network of [1, 2, 3]) {
    await w.device(`lamp-${network}`, network, 1)
    body(await w.insert(`lamp-${network}`, { command: `in-${network}`, timestamp: new Date(START + network).toISOString() }))
  }
  const history = async (token: string, networkIds: number[] | undefined): Promise<string[]> => {
    const pushes: Push[] = []
    const session = w.broker.session((push) => { pushes.push(push) })
    body(await session.handle({ action: 'command/subscribe', networkIds, timestamp: START - 1 }, token))
    await turn()
    session.close()
    return pushes.map((push) => push.command.command as string)
  }
  const narrow = w.token({ n: ['2', '3'] })
  t.same(await history(narrow, [2]), ['in-2'], 'a filter and a token (which must reach what it names): the filter')
  t.same(await history(narrow, undefined), ['in-2', 'in-3'], 'no filter: what the token reaches')
  t.same(await history(w.admin, [1, 3]), ['in-1', 'in-3'], 'a filter and every network: what the filter names')
  t.same(await history(w.admin, undefined), ['in-1', 'in-2', 'in-3'], 'neither: everything')
})

t.test('subscription: on a store that answers later, it registers first, buffers, reads history, then drops what history sent', async (t) => {
  const store = laterStore()
  const { broker, admin, device, insert } = setup(t, {}, store)
  await device('lamp-1')
  const ids = [body(await insert('lamp-1', { command: 'a' })).command.id, body(await insert('lamp-1', { command: 'b' })).command.id]
  const pushes: Push[] = []
  const session = broker.session((push) => { pushes.push(push) })
  store.hold('scanCommands', 'call')
  const reply = session.handle({ action: 'command/subscribe', deviceId: 'lamp-1', timestamp: START - 1 }, admin)
  while (store.waiting('scanCommands') === 0) await turn()
  // Committed while the history read waits: heard live and buffered; the read finds it too.
  ids.push(body(await insert('lamp-1', { command: 'c' })).command.id)
  for (let i = 0; i < 3; i++) await turn()
  t.strictSame(pushes, [], 'nothing before the reply')
  store.release('scanCommands')
  const id = body(await reply).subscriptionId as number
  for (let i = 0; i < 5; i++) await turn()
  t.strictSame(pushes.map((push) => [push.subscriptionId, push.command.id]), ids.map((commandId) => [id, commandId]), 'each once, in order')
  ids.push(body(await insert('lamp-1', { command: 'd' })).command.id)
  await turn()
  t.strictSame(pushes.map((push) => push.command.id), ids, 'then live')
})

t.test('subscription: on a store that answers later, a history read that fails answers 500 and leaves nothing registered', async (t) => {
  const inner = memoryStore()
  let failing = false
  const store = laterStore({ ...overridable(inner), scanCommands: (...args) => { if (failing) throw new Error('gone'); return inner.scanCommands(...args) } })
  const { broker, admin, device, insert } = setup(t, {}, store)
  await device('lamp-1')
  const errors: BrokerError[] = []
  broker.on('error', (err) => { errors.push(err) })
  const pushes: Push[] = []
  const session = broker.session((push) => { pushes.push(push) })
  failing = true
  t.strictSame(errorOf(await session.handle({ action: 'command/subscribe', deviceId: 'lamp-1', timestamp: START - 1 }, admin)), INTERNAL)
  t.equal(errors[0]?.code, 'ERR_STORE')
  t.strictSame(body(await session.handle({ action: 'subscription/list' }, admin)).subscriptions, [], 'not registered')
  await insert('lamp-1', { command: 'a' })
  await turn()
  t.strictSame(pushes, [], 'and nothing pushed')
})

t.test('subscription: on a store that answers later, a replay over several steps ends when the subscription does', async (t) => {
  const store = laterStore()
  const { broker, admin, device } = setup(t, {}, store)
  await device('lamp-1')
  insertAll(store.inner, Array.from({ length: 3 * STEP_EXAMINE }, (_, i) => command({ deviceId: 'lamp-1', timestamp: START + i })))
  const pushes: Push[] = []
  const session = broker.session((push) => { pushes.push(push) })
  t.equal((await session.handle({ action: 'command/subscribe', deviceId: 'lamp-1', timestamp: START - 1, limit: 0 }, admin)).status, 'success')
  store.hold('scanCommands')
  while (store.waiting('scanCommands') === 0) await turn()
  const sent = pushes.length
  session.close()
  store.release('scanCommands')
  for (let i = 0; i < 5; i++) await turn()
  t.equal(pushes.length, sent, 'the step that answered after the end sent nothing')
  t.ok(sent > 0 && sent < 3 * STEP_EXAMINE)
})
