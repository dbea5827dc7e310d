// command/insert and command/list beyond the basics (test/broker.ts and test/session.ts have
// those): the pending count loaded over turns, and lists read a bounded step per turn.
import t from 'tap'
import { memoryStore } from '../../lib/store/memory.js'
import type { Command } from '../../lib/schema.js'
import type { Store, SyncStore } from '../../lib/store/store.js'
import { STEP_EXAMINE } from '../../lib/turns.js'
import { body, CLOSED, errorOf, insertAll, overridable, setup, START } from '../fixtures/broker.js'
import { command } from '../fixtures/store-suite.js'
import { laterStore } from '../fixtures/later-store.js'

// `n` commands of `deviceId` put straight into the store, a millisecond apart from START.
function fill (store: SyncStore, deviceId: string, n: number, fields: Parameters<typeof command>[0] = {}): void {
  insertAll(store, Array.from({ length: n }, (_, i) => command({ deviceId, timestamp: START + i, ...fields })))
}

t.test('commands: the first insert of a device with many commands waits for its count, loaded over turns', async (t) => {
  const inner = memoryStore()
  let counted = 0
  const store: Store = { ...overridable(inner), countPending: (...args) => { counted++; return inner.countPending(...args) } }
  const { broker, admin, device } = setup(t, { maxPendingPerDevice: 5 * STEP_EXAMINE }, store)
  await device('lamp-1')
  fill(inner, 'lamp-1', 5 * STEP_EXAMINE - 2)
  const replies = await Promise.all([1, 2, 3].map((i) => broker.handle({ action: 'command/insert', requestId: i, deviceId: 'lamp-1', command: { command: `c${i}` } }, admin)))
  t.same(replies.map((reply) => reply.status), ['success', 'success', 'error'], 'counted: room for two more')
  t.same(replies.map((reply) => (reply.command as { id?: number } | undefined)?.id), [5 * STEP_EXAMINE - 1, 5 * STEP_EXAMINE, undefined], 'in the order they came')
  t.ok(counted >= 2, `the count took ${counted} steps`)
})

t.test('commands: an insert waiting for its count is refused 503 if the broker closes meanwhile', async (t) => {
  const inner = memoryStore()
  const { broker, admin, device } = setup(t, {}, inner)
  await device('lamp-1')
  fill(inner, 'lamp-1', 5 * STEP_EXAMINE)
  const reply = broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'late' } }, admin)
  await broker.close()
  t.strictSame(errorOf(await reply), CLOSED)
})

t.test('commands: command/list reads a bounded step per turn, skipping past rows it need not return', async (t) => {
  const inner = memoryStore()
  const takes: number[] = []
  const store: Store = { ...overridable(inner), scanCommands: (scan, now) => { takes.push(scan.take); return inner.scanCommands(scan, now) } }
  const { broker, admin, device } = setup(t, {}, store)
  await device('lamp-1')
  fill(inner, 'lamp-1', 3 * STEP_EXAMINE, { command: 'common' })
  fill(inner, 'lamp-1', 3, { command: 'rare', timestamp: START + 3 * STEP_EXAMINE + 1 })
  const reply = await broker.handle({ action: 'command/list', deviceId: 'lamp-1', command: 'rare', skip: 1 }, admin)
  t.same((body(reply).commands as Command[]).map((c) => c.id), [3 * STEP_EXAMINE + 2, 3 * STEP_EXAMINE + 3], 'found past three steps of other commands')
  t.ok(takes.length >= 4, `${takes.length} steps`)
  t.ok(takes[0] as number < 10, `the first step takes no more than the largest rows allow (${takes[0]})`)
  const all = await broker.handle({ action: 'command/list', deviceId: 'lamp-1', take: 1000 }, admin)
  t.equal((body(all).commands as Command[]).length, 1000)
  t.ok(Math.max(...takes) > 100, 'once rows are seen to be small, a step takes more of them')
  const closing = broker.handle({ action: 'command/list', deviceId: 'lamp-1', command: 'none' }, admin)
  await new Promise(setImmediate)
  await broker.close()
  t.strictSame(errorOf(await closing), CLOSED, 'a list the broker closed under is answered 503')
})

t.test('commands: on a store that answers later, a session\'s writes queue in its order, and its reads see them', async (t) => {
  const store = laterStore()
  const { broker, admin, device } = setup(t, {}, store)
  await device('lamp-1')
  const session = broker.session(() => {})
  await session.handle({ action: 'authenticate', token: admin })
  store.hold('getDevice')
  const first = session.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'first' } })
  const second = session.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'second' } })
  const list = session.handle({ action: 'command/list', deviceId: 'lamp-1' })
  for (let i = 0; i < 5; i++) await new Promise(setImmediate)
  t.equal(store.waiting('getDevice'), 1, 'the second insert waits for the first to queue before it reads anything')
  store.release('getDevice')
  const ids = [body(await first).command.id, body(await second).command.id]
  t.ok(ids[0] < ids[1], 'ids in the session\'s order')
  t.strictSame((body(await list).commands as Command[]).map((c) => c.command), ['first', 'second'], 'the list sees both')
  t.equal(body(await session.handle({ action: 'command/get', deviceId: 'lamp-1', commandId: ids[1] })).command.command, 'second')
})

t.test('commands: on a store that answers later, get, update, list sorted and a device\'s first count work', async (t) => {
  const store = laterStore()
  const { broker, admin, device, insert } = setup(t, { maxPendingPerDevice: 2 }, store)
  await device('lamp-1')
  const { id } = body(await insert('lamp-1', { command: 'a' })).command
  t.equal((await insert('lamp-1', { command: 'b' })).status, 'success')
  t.strictSame(errorOf(await insert('lamp-1', { command: 'c' })), { code: 400, error: 'Validation failed with following violations: device lamp-1 has 2 pending commands, the limit is 2' })
  t.equal((await broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: id, command: { status: 'done' } }, admin)).status, 'success')
  t.equal(body(await broker.handle({ action: 'command/get', deviceId: 'lamp-1', commandId: id }, admin)).command.status, 'done')
  t.strictSame(errorOf(await broker.handle({ action: 'command/get', deviceId: 'lamp-1', commandId: 999 }, admin)), { code: 404, error: 'Command with id = 999 not found' })
  const sorted = body(await broker.handle({ action: 'command/list', deviceId: 'lamp-1', sortField: 'command', sortOrder: 'DESC' }, admin)).commands as Command[]
  t.strictSame(sorted.map((c) => c.command), ['b', 'a'])
  t.equal((await insert('lamp-1', { command: 'c' })).status, 'success', 'the update freed a slot')
  t.ok(store.ran.countPending >= 1, 'the count was loaded through the store')
})

t.test('commands: with retention, a command inserted without a lifetime expires after it, keeping its null lifetime', async (t) => {
  // Retention longer than maxLifetime: it bounds what clients ask for, not what the hub keeps.
  const { broker, admin, device, insert, clock } = setup(t, { maxLifetime: 30, retention: 60 })
  const expired: Command[] = []
  const updates: Command[] = []
  broker.on('expired', (c) => { expired.push(c) })
  broker.subscribe({ returnUpdatedCommands: true }, (c) => { updates.push(c) })
  await device('lamp-1')
  await insert('lamp-1', { command: 'kept' })
  const kept = body(await broker.handle({ action: 'command/get', deviceId: 'lamp-1', commandId: 1 }, admin)).command as Command
  t.equal(kept.lifetime, null, 'a reader sees what the client sent: no lifetime')
  await insert('lamp-1', { command: 'short', lifetime: 20 })
  await insert('lamp-1', { command: 'answered' })
  t.equal((await broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: 3, command: { status: 'done' } }, admin)).status, 'success')
  const get = async (commandId: number): Promise<unknown> => {
    const reply = await broker.handle({ action: 'command/get', deviceId: 'lamp-1', commandId }, admin)
    return reply.status === 'success' ? (reply.command as Command).command : errorOf(reply)
  }

  clock.advance(20_000)
  t.same(expired.map((c) => c.command), ['short'], 'a command with a lifetime keeps it')
  clock.advance(39_999)
  t.equal(await get(1), 'kept', 'still there just before retention ends')
  t.equal(await get(3), 'answered', 'an update does not extend retention, nor end it')
  clock.advance(1)
  t.strictSame(await get(1), { code: 404, error: 'Command with id = 1 not found' }, 'gone once it ends, as an expired command is')
  t.strictSame(await get(3), { code: 404, error: 'Command with id = 3 not found' }, 'an updated command goes too')
  const listed = body(await broker.handle({ action: 'command/list', deviceId: 'lamp-1' }, admin)).commands as Command[]
  t.same(listed, [], 'and leaves the list')
  t.same(expired.map((c) => [c.command, c.lifetime]), [['short', 20], ['kept', null]], 'reported like an expiry (the updated one is not), lifetime still null')
  t.same(updates.filter((c) => c.status === 'expired').map((c) => c.id), [2, 1], 'and pushed to update subscribers with status "expired"')
})

t.test('commands: without retention (the default), a command without a lifetime is kept', async (t) => {
  const { broker, token, device, insert, clock } = setup(t)
  await device('lamp-1')
  await insert('lamp-1', { command: 'kept' })
  clock.advance(10 * 365 * 86_400_000)
  // A token of ten years later: the first has run out by then.
  t.equal((await broker.handle({ action: 'command/get', deviceId: 'lamp-1', commandId: 1 }, token())).status, 'success', 'ten years later')
  t.equal((await broker.stats()).timers, 0, 'it was never armed')
})
