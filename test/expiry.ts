// Expiry: the timer wheel and start-up recovery, through the broker.
import t from 'tap'
import type { BrokerError } from '../lib/errors.js'
import { memoryStore } from '../lib/store/memory.js'
import type { Command } from '../lib/schema.js'
import type { Store } from '../lib/store/store.js'
import { insertAll, insertOne, overridable, setup, START } from './fixtures/broker.js'
import { command, device } from './fixtures/store-suite.js'

t.test('expiry: a command of a deleted device expires unreported, even when its deletion failed', async (t) => {
  const inner = memoryStore()
  let failing = false
  const store: Store = {
    ...overridable(inner),
    deleteCommands: (...args) => {
      if (failing) throw new Error('disk full')
      return inner.deleteCommands(...args)
    }
  }
  const { broker, admin, device: save, insert, clock } = setup(t, {}, store)
  const errors: BrokerError[] = []
  const expired: Command[] = []
  const updates: Command[] = []
  broker.on('error', (err) => { errors.push(err) })
  broker.on('expired', (c) => { expired.push(c) })
  broker.subscribe({ returnUpdatedCommands: true }, (c) => { updates.push(c) })
  await save('lamp-1')
  await insert('lamp-1', { command: 'on', lifetime: 5 })
  failing = true
  t.equal((await broker.handle({ action: 'device/delete', deviceId: 'lamp-1' }, admin)).status, 'success',
    'the device is gone: the reply says so')
  t.equal(errors[0]?.code, 'ERR_STORE', 'the failed deletion of its commands is reported')
  t.match(errors[0]?.message, /deleting the commands of device lamp-1 failed; they stay invisible/)
  t.equal(inner.getCommand(1, clock.now())?.command, 'on', 'the command is still stored')
  clock.advance(5100)
  t.same(expired, [], 'it expires without an expired event')
  t.same(updates, [], 'or a push')
  t.equal(inner.getCommand(1, 0), undefined, 'and is gone')
})

t.test('expiry: a listener that closes the broker during start-up recovery stops it there', async (t) => {
  const store = memoryStore()
  store.saveDevice(device({ id: 'lamp-1' }))
  for (let i = 0; i < 5; i++) insertOne(store, command({ deviceId: 'lamp-1', expiresAt: START - 1000 }))
  const { broker } = setup(t, {}, store)
  let closing: Promise<void> | undefined
  const expired: number[] = []
  broker.on('expired', (c) => {
    expired.push(c.id)
    closing ??= broker.close()
  })
  const report = await broker.ready
  await closing
  t.same(expired, [1], 'the first expiry was reported, and none after the close')
  t.equal(report.rearmed, 0, 'ready settles with what recovery had done when the broker closed')
})

t.test('expiry: recovery steps through a million ids of commands without a lifetime in bounded steps', async (t) => {
  const inner = memoryStore()
  const steps: number[] = []
  const store: Store = { ...overridable(inner), expiringCommands: (...args) => { steps.push(args[2]); return inner.expiringCommands(...args) } }
  inner.saveDevice(device({ id: 'lamp-1' }))
  insertAll(inner, Array.from({ length: 5000 }, () => command({ deviceId: 'lamp-1' })))
  insertOne(inner, command({ deviceId: 'lamp-1', expiresAt: START + 1000 }))
  const { broker } = setup(t, { expiryBatch: 1000 }, store)
  t.strictSame(await broker.ready, { expired: 0, rearmed: 1 })
  t.equal(steps.length, 6, 'six steps of 1000 ids, one per turn, though only one command expires')
  t.ok(steps.every((examine) => examine === 1000))
})
