// Brokers on one shared command space behave as one: each on its own node of a shared store
// (test/fixtures/shared-store.ts), in one process, on one manual clock. What these check holds
// whatever store carries the space; test/cluster-postgres.ts runs the same promises across
// processes on PostgreSQL.
import t, { type Test } from 'tap'
import { createBroker, type Broker } from '../lib/broker.js'
import { SWEEP_MS } from '../lib/expiry.js'
import { manualClock, type ManualClock } from '../lib/manual-clock.js'
import type { Command, Push, Reply } from '../lib/schema.js'
import type { Store } from '../lib/store/store.js'
import { body, errorOf, SECRET, START } from './fixtures/broker.js'
import { laterStore } from './fixtures/later-store.js'
import { sharedSpace } from './fixtures/shared-store.js'
import { signToken } from '../lib/auth.js'

const TICK = 100
const turns = async (n = 5): Promise<void> => { for (let i = 0; i < n; i++) await new Promise(setImmediate) }

interface Cluster {
  clock: ManualClock
  brokers: Broker[]
  admin: string
  space: ReturnType<typeof sharedSpace>
}

// Three brokers on one space; with `later`, each node answers on a later turn.
function cluster (t: Test, later: boolean, options: { maxPendingPerDevice?: number } = {}): Cluster {
  const clock = manualClock(START)
  const space = sharedSpace()
  const brokers = [0, 1, 2].map(() => {
    const node: Store = later ? laterStore(space.node()) : space.node()
    return createBroker(node, { secret: SECRET, clock, tick: TICK, ...options })
  })
  t.teardown(async () => { for (const broker of brokers) await broker.close() })
  const admin = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'] }, { secret: SECRET, now: clock.now() })
  return { clock, brokers, admin, space }
}

async function listen (broker: Broker, admin: string, filter: Record<string, unknown> = {}): Promise<Push[]> {
  const pushes: Push[] = []
  const session = broker.session((push) => { pushes.push(push) })
  const reply = await session.handle({ action: 'command/subscribe', ...filter }, admin)
  if (reply.status !== 'success') throw new Error(`subscribe failed: ${JSON.stringify(reply)}`)
  return pushes
}

function ok (reply: Reply): Record<string, any> {
  if (reply.status !== 'success') throw new Error(`request failed: ${JSON.stringify(reply)}`)
  return body(reply)
}

for (const later of [false, true]) {
  const kind = later ? 'a store that answers later' : 'a synchronous store'

  t.test(`cluster: on ${kind}, subscribe on A, insert on B, update on C: each push arrives once, everywhere`, async (t) => {
    const { brokers: [a, b, c], admin } = cluster(t, later) as Cluster & { brokers: [Broker, Broker, Broker] }
    ok(await a.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'lamp', networkId: 1 } }, admin))
    const inserts = await listen(a, admin, { deviceId: 'lamp-1' })
    const updates = await listen(a, admin, { deviceId: 'lamp-1', returnUpdatedCommands: true })
    const elsewhere = await listen(c, admin, { networkIds: [1] })
    const heard: Command[] = []
    c.subscribe({ deviceId: 'lamp-1' }, (command) => { heard.push(command) })
    const { id } = ok(await b.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on' } }, admin)).command
    ok(await c.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: id, command: { status: 'done', result: { ok: 1 } } }, admin))
    await turns()
    t.strictSame(inserts.map((p) => [p.action, p.command.id, p.command.command]), [['command/insert', id, 'on']], 'A heard the insert made on B, once')
    t.strictSame(updates.map((p) => [p.action, p.command.id, p.command.status, p.command.result]), [['command/update', id, 'done', { ok: 1 }]], 'A heard the update made on C, once')
    t.strictSame(elsewhere.map((p) => p.command.id), [id], 'C heard it by network')
    t.strictSame(heard.map((command) => command.id), [id], 'in process too')
    t.equal(ok(await a.handle({ action: 'command/get', deviceId: 'lamp-1', commandId: id }, admin)).command.status, 'done', 'A reads the update')
  })

  t.test(`cluster: on ${kind}, each command expires once, cluster-wide`, async (t) => {
    const { brokers, admin, clock } = cluster(t, later)
    ok(await brokers[0]?.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'lamp' } }, admin) as Reply)
    const listeners = await Promise.all(brokers.map((broker) => listen(broker, admin, { returnUpdatedCommands: true })))
    const expired: number[][] = brokers.map(() => [])
    brokers.forEach((broker, i) => { broker.on('expired', (command) => { expired[i]?.push(command.id) }) })
    const ids: number[] = []
    for (const [i, broker] of brokers.entries()) {
      for (let n = 0; n < 3; n++) ids.push(ok(await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: `c${i}.${n}`, lifetime: 1 } }, admin)).command.id)
    }
    clock.advance(1000 + TICK)
    await turns(10)
    clock.advance(SWEEP_MS + TICK)
    await turns(10)
    t.strictSame(expired.flat().sort((x, y) => x - y), ids, 'one `expired` event per command, on one broker')
    for (const [i, pushes] of listeners.entries()) {
      t.strictSame(pushes.map((p) => [p.command.id, p.command.status]).sort((x, y) => (x[0] as number) - (y[0] as number)),
        ids.map((id) => [id, 'expired']), `broker ${i}: one expired push per command`)
    }
  })

  t.test(`cluster: on ${kind}, a broker that stops leaves no orphans: the others claim its commands within tick + SWEEP_MS`, async (t) => {
    const { brokers: [a, b], admin, clock } = cluster(t, later) as Cluster & { brokers: [Broker, Broker, Broker] }
    ok(await a.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'lamp' } }, admin))
    const expired: number[] = []
    b.on('expired', (command) => { expired.push(command.id) })
    const pushes = await listen(b, admin, { returnUpdatedCommands: true })
    const { id } = ok(await a.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'orphan', lifetime: 2 } }, admin)).command
    // A dies before its wheel fires: the command is due at +2 s, and nobody armed it but A.
    await a.close()
    clock.advance(2000)
    await turns(10)
    t.strictSame(expired, [], 'not claimed before it is a tick overdue')
    clock.advance(TICK + SWEEP_MS)
    await turns(10)
    t.strictSame(expired, [id], 'claimed and expired by B')
    t.strictSame(pushes.map((p) => [p.command.id, p.command.status]), [[id, 'expired']])
  })

  t.test(`cluster: on ${kind}, maxPendingPerDevice holds across brokers`, async (t) => {
    const { brokers, admin } = cluster(t, later, { maxPendingPerDevice: 4 })
    ok(await brokers[0]?.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'lamp' } }, admin) as Reply)
    const replies = await Promise.all(Array.from({ length: 9 }, (_, i) =>
      (brokers[i % 3] as Broker).handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: `c${i}` } }, admin)))
    t.equal(replies.filter((reply) => reply.status === 'success').length, 4, 'four accepted, whichever broker took them')
    for (const reply of replies.filter((r) => r.status === 'error')) {
      t.strictSame(errorOf(reply), { code: 400, error: 'Validation failed with following violations: device lamp-1 has 4 pending commands, the limit is 4' })
    }
    const { id } = body(replies.find((reply) => reply.status === 'success') as Reply).command
    ok(await brokers[2]?.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: id, command: { status: 'done' } }, admin) as Reply)
    t.equal((await brokers[1]?.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'freed' } }, admin))?.status, 'success', 'an update frees a slot for everyone')
  })

  t.test(`cluster: on ${kind}, device/save and device/delete answered on one broker are seen on the others`, async (t) => {
    const { brokers: [a, b, c], admin } = cluster(t, later) as Cluster & { brokers: [Broker, Broker, Broker] }
    ok(await a.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'lamp', networkId: 1 } }, admin))
    t.equal(ok(await b.handle({ action: 'device/get', deviceId: 'lamp-1' }, admin)).device.name, 'lamp', 'B sees the save at once')
    ok(await c.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'renamed' } }, admin))
    t.equal(ok(await a.handle({ action: 'device/get', deviceId: 'lamp-1' }, admin)).device.name, 'renamed', 'A sees C\'s change')
    const pushes: Push[] = []
    const session = b.session((push) => { pushes.push(push) })
    const { subscriptionId } = ok(await session.handle({ action: 'command/subscribe', deviceId: 'lamp-1' }, admin))
    ok(await a.handle({ action: 'device/delete', deviceId: 'lamp-1' }, admin))
    t.strictSame(errorOf(await b.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'x' } }, admin)),
      { code: 404, error: 'Device with such deviceId = lamp-1 not found' }, 'B refuses a command for the deleted device')
    await turns()
    t.strictSame(ok(await session.handle({ action: 'subscription/list' }, admin)).subscriptions, [], 'the subscription B held for it ended')
    t.equal(subscriptionId > 0, true)
    t.strictSame(pushes, [])
  })
}

t.test('cluster: an insert from another broker that expired on its way is not pushed as new', async (t) => {
  const { brokers: [a, b], admin, clock, space } = cluster(t, false) as Cluster & { brokers: [Broker, Broker, Broker] }
  ok(await a.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'lamp' } }, admin))
  const pushes = await listen(b, admin)
  const commit = space.bus.publish.bind(space.bus)
  // Hold the bus a while: the command's lifetime runs out before B hears of it.
  const held: Parameters<typeof commit>[0][] = []
  space.bus.publish = (event) => { held.push(event) }
  ok(await a.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'brief', lifetime: 1 } }, admin))
  await turns()
  clock.advance(1000)
  for (const event of held) commit(event)
  t.strictSame(pushes, [], 'B does not push a command that has expired')
})
