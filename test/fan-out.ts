import t from 'tap'
import { CommandEvent, FanOut, type Subscriber } from '../lib/fan-out.js'
import type { CommandRecord } from '../lib/store.js'

function record (fields: Partial<CommandRecord> = {}): CommandRecord {
  return {
    id: 1, command: 'on', timestamp: 0, lastUpdated: 0, userId: 1, deviceId: 'a', networkId: 1, deviceTypeId: 10,
    parameters: '{"x":1}', lifetime: null, status: null, result: null, expiresAt: null, updated: false, ...fields
  }
}

function collector (filter: Subscriber['filter'], updates = false): Subscriber & { seen: number[] } {
  const seen: number[] = []
  return { filter, updates, seen, deliver: (event) => { seen.push(event.record.id) } }
}

t.test('fan-out: an event reaches each matching subscriber once, through its most selective key', async (t) => {
  const fanOut = new FanOut(() => t.fail('no errors expected'))
  const byDevice = collector({ deviceId: 'a' })
  const byNetworks = collector({ networkIds: [1, 1, 2] })
  const byTypes = collector({ deviceTypeIds: [10, 10] })
  const all = collector({})
  const deviceAndName = collector({ deviceId: 'a', names: ['off'] })
  const other = collector({ deviceId: 'b' })
  for (const s of [byDevice, byNetworks, byTypes, all, deviceAndName, other]) fanOut.add(s)
  fanOut.publish(record(), false)
  fanOut.publish(record({ id: 2, networkId: null, deviceTypeId: null }), false)
  t.same(byDevice.seen, [1, 2])
  t.same(byNetworks.seen, [1])
  t.same(byTypes.seen, [1])
  t.same(all.seen, [1, 2])
  t.same(deviceAndName.seen, [])
  t.same(other.seen, [])
})

t.test('fan-out: inserts and updates are separate', async (t) => {
  const fanOut = new FanOut(() => {})
  const inserts = collector({})
  const updates = collector({}, true)
  t.equal(fanOut.has(false), false)
  fanOut.add(inserts)
  t.equal(fanOut.has(false), true)
  t.equal(fanOut.has(true), false)
  fanOut.add(updates)
  fanOut.publish(record(), false)
  fanOut.publish(record({ id: 2 }), true)
  t.same(inserts.seen, [1])
  t.same(updates.seen, [2])
  t.equal(fanOut.size, 2)
})

t.test('fan-out: removing is idempotent and drops empty keys', async (t) => {
  const fanOut = new FanOut(() => {})
  const a = collector({ deviceId: 'a' })
  const remove = fanOut.add(a)
  const removeUpdates = fanOut.add(collector({ networkIds: [1] }, true))
  remove()
  remove()
  removeUpdates()
  t.equal(fanOut.size, 0)
  t.equal(fanOut.has(false), false)
  t.equal(fanOut.has(true), false)
  fanOut.publish(record(), false)
  t.same(a.seen, [])
})

t.test('fan-out: a subscriber that throws is reported and the others still run', async (t) => {
  const errors: unknown[] = []
  const fanOut = new FanOut((err) => errors.push(err))
  const broken: Subscriber = { filter: {}, updates: false, deliver: () => { throw new Error('broken') } }
  const after = collector({})
  fanOut.add(broken)
  fanOut.add(after)
  fanOut.publish(record(), false)
  t.same(after.seen, [1])
  t.equal((errors[0] as Error).message, 'broken')
})

t.test('fan-out: the wire command is built once, deeply frozen and shared', async (t) => {
  const event = new CommandEvent(record())
  const command = event.command
  t.equal(event.command, command, 'built once')
  t.ok(Object.isFrozen(command))
  t.ok(Object.isFrozen(command.parameters))
  t.same(command.parameters, { x: 1 })
})
