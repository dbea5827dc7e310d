// device/save, device/get and device/delete beyond the basics (test/broker.ts has those):
// deletion in bounded steps, and what waits for it.
import t from 'tap'
import { memoryStore } from '../../lib/store/memory.js'
import type { Reply } from '../../lib/schema.js'
import type { Store, SyncStore } from '../../lib/store/store.js'
import { STEP_EXAMINE } from '../../lib/turns.js'
import { body, CLOSED, errorOf, insertAll, overridable, setup } from '../fixtures/broker.js'
import { command, scanAll } from '../fixtures/store-suite.js'

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
  fill(inner, 'lamp-1', 2 * STEP_EXAMINE + 10)
  steps.length = 0
  t.equal((await broker.handle({ action: 'device/delete', deviceId: 'lamp-1' }, admin)).status, 'success')
  t.same(steps, [STEP_EXAMINE, STEP_EXAMINE, 10], 'three steps')
  t.equal(inner.getCommand(1, 0), undefined, 'every command is gone')
  t.equal(inner.deleteCommands('lamp-1', 10), 0)
})

t.test('devices: saving a device of an id being deleted waits for the deletion', async (t) => {
  const store = memoryStore()
  const { broker, admin, device } = setup(t, {}, store)
  await device('lamp-1')
  fill(store, 'lamp-1', 3 * STEP_EXAMINE)
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
  fill(store, 'ghost', STEP_EXAMINE + 5)
  const { broker, admin } = setup(t, {}, store)
  t.equal((await broker.handle({ action: 'device/save', deviceId: 'ghost', device: { name: 'Ghost' } }, admin)).status, 'success')
  t.equal(store.deleteCommands('ghost', 10), 0, 'they were deleted first')
  t.same(body(await broker.handle({ action: 'command/list', deviceId: 'ghost' }, admin)).commands, [])
})

t.test('devices: close() during a deletion stops it; what is left stays invisible', async (t) => {
  const store = memoryStore()
  const { broker, admin, device } = setup(t, {}, store)
  await device('lamp-1')
  fill(store, 'lamp-1', 3 * STEP_EXAMINE)
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
  fill(store, 'lamp-1', 3 * STEP_EXAMINE)
  const deleted = broker.handle({ action: 'device/delete', deviceId: 'lamp-1' }, admin)
  await new Promise(setImmediate)
  const saved: Promise<Reply> = broker.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'again' } }, admin)
  await new Promise(setImmediate)
  await broker.close()
  t.equal((await deleted).status, 'success')
  t.strictSame(errorOf(await saved), CLOSED, '503, not a write after close')
})
