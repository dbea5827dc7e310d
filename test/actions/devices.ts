// device/save, device/get and device/delete beyond the basics (test/broker.ts has those):
// deletion in bounded steps, and what waits for it.
import t from 'tap'
import { memoryStore } from '../../lib/store/memory.js'
import type { Reply } from '../../lib/schema.js'
import type { Store, SyncStore } from '../../lib/store/store.js'
import { DELETE_STEP } from '../../lib/turns.js'
import { body, CLOSED, errorOf, insertAll, overridable, setup } from '../fixtures/broker.js'
import { command, scanAll } from '../fixtures/store-suite.js'
import { laterStore } from '../fixtures/later-store.js'

// `n` commands of `deviceId` put straight into the store.
function fill (store: SyncStore, deviceId: string, n: number): void {
  insertAll(store, Array.from({ length: n }, (_, i) => command({ deviceId, timestamp: i })))
}

t.test('devices: device/delete deletes the commands a bounded step per turn, before it replies', async (t) => {
  const inner = memoryStore()
  const steps: number[] = []
  const store: Store = { ...overridable(inner), deleteCommands: (...args) => { const n = inner.deleteCommands(...args); steps.push(n); return n } }
  const { broker, admin, device } = setup(t, {}, store)
  await device('lamp-1')
  fill(inner, 'lamp-1', 2 * DELETE_STEP + 10)
  steps.length = 0
  t.equal((await broker.handle({ action: 'device/delete', deviceId: 'lamp-1' }, admin)).status, 'success')
  t.same(steps, [DELETE_STEP, DELETE_STEP, 10], 'three steps')
  t.equal(inner.getCommand(1, 0), undefined, 'every command is gone')
  t.equal(inner.deleteCommands('lamp-1', 10), 0)
})

t.test('devices: saving a device of an id being deleted waits for the deletion', async (t) => {
  const store = memoryStore()
  const { broker, admin, device } = setup(t, {}, store)
  await device('lamp-1')
  fill(store, 'lamp-1', 3 * DELETE_STEP)
  const order: string[] = []
  const deleted = broker.handle({ action: 'device/delete', deviceId: 'lamp-1' }, admin).then((reply) => { order.push('delete'); return reply })
  const saved = broker.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'again' } }, admin).then((reply) => { order.push('save'); return reply })
  t.equal((await deleted).status, 'success')
  t.equal((await saved).status, 'success')
  t.same(order, ['delete', 'save'], 'the save came after the deletion')
  t.equal(store.getDevice('lamp-1')?.name, 'again')
  t.same(scanAll(store, { deviceId: 'lamp-1', order: 'ASC' }, 0), [], 'the new device has none of the old commands')
})

t.test('devices: a new device gets none of the commands an interrupted deletion left', async (t) => {
  const store = memoryStore()
  // As a crash in the middle of a device/delete leaves them: commands of an id with no device.
  fill(store, 'ghost', DELETE_STEP + 5)
  const { broker, admin } = setup(t, {}, store)
  t.equal((await broker.handle({ action: 'device/save', deviceId: 'ghost', device: { name: 'Ghost' } }, admin)).status, 'success')
  t.equal(store.deleteCommands('ghost', 10), 0, 'they were deleted first')
  t.same(body(await broker.handle({ action: 'command/list', deviceId: 'ghost' }, admin)).commands, [])
})

t.test('devices: close() during a deletion stops it; what is left stays invisible', async (t) => {
  const store = memoryStore()
  const { broker, admin, device } = setup(t, {}, store)
  await device('lamp-1')
  fill(store, 'lamp-1', 3 * DELETE_STEP)
  const deleted = broker.handle({ action: 'device/delete', deviceId: 'lamp-1' }, admin)
  await new Promise(setImmediate)
  const closing = broker.close()
  t.equal((await deleted).status, 'success', 'the device was deleted')
  await closing
})

t.test('devices: a request that waited for a deletion is refused if the broker closed meanwhile', async (t) => {
  const store = memoryStore()
  const { broker, admin, device } = setup(t, {}, store)
  await device('lamp-1')
  fill(store, 'lamp-1', 3 * DELETE_STEP)
  const deleted = broker.handle({ action: 'device/delete', deviceId: 'lamp-1' }, admin)
  await new Promise(setImmediate)
  const saved: Promise<Reply> = broker.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'again' } }, admin)
  await new Promise(setImmediate)
  await broker.close()
  t.equal((await deleted).status, 'success')
  t.strictSame(errorOf(await saved), CLOSED, '503, not a write after close')
})

t.test('devices: on a store that answers later, a save or delete commits after the writes queued before it', async (t) => {
  const store = laterStore()
  const { broker, admin, device } = setup(t, {}, store)
  await device('lamp-1')
  store.hold('commit', 'call')
  const insert = broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'before-delete' } }, admin)
  while (store.waiting('commit') === 0) await new Promise(setImmediate)
  const deleted = broker.handle({ action: 'device/delete', deviceId: 'lamp-1' }, admin)
  await new Promise(setImmediate)
  t.equal(store.ran.deleteDevice, 0, 'the delete waits for the commit in flight')
  store.release('commit')
  t.equal((await insert).status, 'success', 'the insert queued first committed')
  t.equal((await deleted).status, 'success')
  t.strictSame(store.inner.scanCommands({ order: 'ASC', examine: 100, take: 100 }, 0).rows, [], 'and was deleted with its device')
})

t.test('devices: on a store that answers later, a write whose device read overlapped a delete reads again, and is refused', async (t) => {
  const store = laterStore()
  const { broker, admin, device, insert } = setup(t, {}, store)
  await device('lamp-1')
  const { id } = body(await insert('lamp-1', { command: 'first' })).command
  store.hold('getDevice')
  const late = broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'late' } }, admin)
  const update = broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: id, command: { status: 'x' } }, admin)
  const deleted = broker.handle({ action: 'device/delete', deviceId: 'lamp-1' }, admin)
  await new Promise(setImmediate)
  t.equal(store.waiting('getDevice'), 3, 'all three read the device, and wait')
  // The delete's read answers first: it deletes while the others hold a read from before.
  store.release('getDevice', 'last')
  t.equal((await deleted).status, 'success')
  store.release('getDevice')
  t.strictSame(errorOf(await late), { code: 404, error: 'Device with such deviceId = lamp-1 not found' }, 'the insert read the device again: it is gone')
  t.strictSame(errorOf(await update), { code: 404, error: 'Device with such deviceId = lamp-1 not found' }, 'so did the update')
  t.strictSame(store.inner.scanCommands({ order: 'ASC', examine: 100, take: 100 }, 0).rows, [], 'no orphan command')
})

t.test('devices: on a store that answers later, a write of a device being deleted waits for the delete, then is refused', async (t) => {
  const store = laterStore()
  const { broker, admin, device } = setup(t, {}, store)
  await device('lamp-1')
  store.hold('deleteDevice', 'call')
  const deleted = broker.handle({ action: 'device/delete', deviceId: 'lamp-1' }, admin)
  while (store.waiting('deleteDevice') === 0) await new Promise(setImmediate)
  const late = broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'late' } }, admin)
  for (let i = 0; i < 5; i++) await new Promise(setImmediate)
  t.equal(store.waiting('deleteDevice'), 1, 'the delete is under way')
  store.release('deleteDevice')
  t.equal((await deleted).status, 'success')
  t.strictSame(errorOf(await late), { code: 404, error: 'Device with such deviceId = lamp-1 not found' })
})

t.test('devices: on a store that answers later, save, get and delete work, and a new device of an id purges what a cut-short delete left', async (t) => {
  const store = laterStore()
  const { broker, admin, device } = setup(t, {}, store)
  await device('lamp-1')
  t.equal(body(await broker.handle({ action: 'device/get', deviceId: 'lamp-1' }, admin)).device.name, 'lamp-1')
  t.equal((await broker.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'renamed' } }, admin)).status, 'success')
  t.equal(store.inner.getDevice('lamp-1')?.name, 'renamed')
  // Commands of a device that no longer exists, as a crash mid-delete leaves them.
  insertAll(store.inner, Array.from({ length: DELETE_STEP + 1 }, (_, i) => command({ deviceId: 'ghost', timestamp: i })))
  t.equal((await broker.handle({ action: 'device/save', deviceId: 'ghost', device: { name: 'ghost' } }, admin)).status, 'success')
  t.strictSame(scanAll(store.inner, { deviceId: 'ghost', order: 'ASC', examine: 10_000, take: 10_000 }, 0), [], 'the new device starts with none')
  t.equal((await broker.handle({ action: 'device/save', deviceId: 'fresh', device: { name: 'fresh' } }, admin)).status, 'success', 'a new id with nothing to purge')
  t.equal((await broker.handle({ action: 'device/delete', deviceId: 'ghost' }, admin)).status, 'success')
  t.equal(store.inner.getDevice('ghost'), undefined)
})

t.test('devices: device/delete waits a tick at a time between steps while the store is behind, then goes on', async (t) => {
  const inner = memoryStore()
  let behind = false
  let asked = 0
  const steps: number[] = []
  const store: Store = {
    ...overridable(inner),
    behind: () => { asked++; return behind },
    deleteCommands: (...args) => { const n = inner.deleteCommands(...args); steps.push(n); behind = true; return n }
  }
  const { broker, admin, device, clock } = setup(t, {}, store)
  await device('lamp-1')
  fill(inner, 'lamp-1', 2 * DELETE_STEP + 10)
  steps.length = 0
  let reply: Reply | undefined
  void broker.handle({ action: 'device/delete', deviceId: 'lamp-1' }, admin).then((r) => { reply = r })
  for (let i = 0; i < 5; i++) await new Promise(setImmediate)
  t.same(steps, [DELETE_STEP], 'one step, then the store was behind: the next waits')
  t.equal(reply, undefined, 'and so does the reply')
  const before = asked
  clock.advance(100)
  for (let i = 0; i < 5; i++) await new Promise(setImmediate)
  t.ok(asked > before, 'it asks again a tick later')
  t.same(steps, [DELETE_STEP], 'still behind: still waiting')
  behind = false
  clock.advance(100)
  for (let i = 0; i < 5; i++) await new Promise(setImmediate)
  t.same(steps, [DELETE_STEP, DELETE_STEP], 'caught up: the next step')
  behind = false
  clock.advance(100)
  for (let i = 0; i < 5; i++) await new Promise(setImmediate)
  t.same(steps, [DELETE_STEP, DELETE_STEP, 10], 'and the last')
  t.equal(reply?.status, 'success', 'then the reply')
  t.equal(inner.deleteCommands('lamp-1', 10), 0, 'every command is gone')
})

t.test('devices: close() ends a deletion waiting for a store that is behind', async (t) => {
  const inner = memoryStore()
  let steps = 0
  const store: Store = { ...overridable(inner), behind: () => true, deleteCommands: (...args) => { steps++; return inner.deleteCommands(...args) } }
  const { broker, admin, device, clock } = setup(t, {}, store)
  await device('lamp-1')
  fill(inner, 'lamp-1', 2 * DELETE_STEP)
  steps = 0
  const deleted = broker.handle({ action: 'device/delete', deviceId: 'lamp-1' }, admin)
  for (let i = 0; i < 5; i++) await new Promise(setImmediate)
  t.equal(clock.pending > 0, true, 'waiting on a tick')
  await broker.close()
  t.equal((await deleted).status, 'success', 'the device was deleted; the rest of its commands stay invisible')
  t.equal(steps, 1, 'one step was done')
  t.equal(clock.pending, 0, 'no timer left behind')
})

t.test('devices: a store that fails to say whether it is behind is reported, and the deletion goes on', async (t) => {
  const inner = memoryStore()
  const store: Store = { ...overridable(inner), behind: () => { throw new Error('no idea') } }
  const { broker, admin, device } = setup(t, {}, store)
  const errors: string[] = []
  broker.on('error', (err) => { errors.push(`${err.code}: ${err.message}`) })
  await device('lamp-1')
  fill(inner, 'lamp-1', DELETE_STEP + 1)
  t.equal((await broker.handle({ action: 'device/delete', deviceId: 'lamp-1' }, admin)).status, 'success')
  t.equal(inner.deleteCommands('lamp-1', 10), 0, 'every command is gone')
  t.match(errors[0], /^ERR_STORE: asking the store whether it is behind failed; deleting anyway/)
})
