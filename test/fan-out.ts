import t from 'tap'
import { CommandEvent, FanOut, matches, type Subscriber, type SubscriptionFilter } from '../lib/fan-out.js'
import type { CommandRecord } from '../lib/store/store.js'

function record (fields: Partial<CommandRecord> = {}): CommandRecord {
  return {
    id: 1, command: 'on', timestamp: 0, lastUpdated: 0, userId: 1, deviceId: 'a', networkId: 1, deviceTypeId: 10,
    parameters: '{"x":1}', lifetime: null, status: null, result: null, expiresAt: null, updated: false, ...fields
  }
}

/** An event for a record, its device where the record says (or where `device` says). */
function event (fields: Partial<CommandRecord> = {}, device?: { networkId: number | null, deviceTypeId: number | null }): CommandEvent {
  const r = record(fields)
  return new CommandEvent('insert', r, device ?? { networkId: r.networkId, deviceTypeId: r.deviceTypeId })
}

function collector (filter: SubscriptionFilter, updates = false): Subscriber & { seen: number[] } {
  const seen: number[] = []
  return { filter, updates, seen, deliver: (e) => { seen.push(e.record.id) } }
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
  fanOut.publish(event(), false)
  fanOut.publish(event({ id: 2, networkId: null, deviceTypeId: null }), false)
  t.same(byDevice.seen, [1, 2])
  t.same(byNetworks.seen, [1])
  t.same(byTypes.seen, [1])
  t.same(all.seen, [1, 2])
  t.same(deviceAndName.seen, [])
  t.same(other.seen, [])
})

t.test('fan-out: routing follows where the device is now, not the copy on the command', async (t) => {
  const fanOut = new FanOut(() => t.fail('no errors expected'))
  const oldNetwork = collector({ networkIds: [1] })
  const newNetwork = collector({ networkIds: [2] })
  const newType = collector({ deviceTypeIds: [20] })
  for (const s of [oldNetwork, newNetwork, newType]) fanOut.add(s)
  fanOut.publish(event({ networkId: 1, deviceTypeId: 10 }, { networkId: 2, deviceTypeId: 20 }), false)
  t.same(oldNetwork.seen, [])
  t.same(newNetwork.seen, [1])
  t.same(newType.seen, [1])
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
  fanOut.publish(event(), false)
  fanOut.publish(event({ id: 2 }), true)
  t.same(inserts.seen, [1])
  t.same(updates.seen, [2])
  t.equal(fanOut.size, 2)
})

t.test('fan-out: removing is idempotent and drops empty keys', async (t) => {
  const fanOut = new FanOut(() => {})
  const a = collector({ deviceId: 'a' })
  const remove = fanOut.add(a)
  const removeUpdates = fanOut.add(collector({ networkIds: [1] }, true))
  const removeTypes = fanOut.add(collector({ deviceTypeIds: [10] }))
  remove()
  remove()
  removeUpdates()
  removeTypes()
  t.equal(fanOut.size, 0)
  t.equal(fanOut.has(false), false)
  t.equal(fanOut.has(true), false)
  t.strictSame(fanOut.forDevice('a'), [], 'the device key is gone')
  fanOut.publish(event(), false)
  t.same(a.seen, [])
})

t.test('fan-out: a subscriber that throws is reported and the others still run', async (t) => {
  const errors: unknown[] = []
  const fanOut = new FanOut((err) => errors.push(err))
  const broken: Subscriber = { filter: {}, updates: false, deliver: () => { throw new Error('broken') } }
  const after = collector({})
  fanOut.add(broken)
  fanOut.add(after)
  fanOut.publish(event(), false)
  t.same(after.seen, [1])
  t.equal((errors[0] as Error).message, 'broken')
})

t.test('fan-out: a subscriber added or removed while an event is delivered', async (t) => {
  const fanOut = new FanOut(() => t.fail('no errors expected'))
  const late = collector({})
  const doomed = collector({})
  const adder: Subscriber = { filter: {}, updates: false, deliver: () => { fanOut.add(late); removeDoomed() } }
  fanOut.add(adder)
  const removeDoomed = fanOut.add(doomed)
  fanOut.publish(event(), false)
  t.same(late.seen, [], 'one added during a publish does not receive that event')
  t.same(doomed.seen, [], 'one removed before its turn does not receive it')
  fanOut.publish(event({ id: 2 }), false)
  t.same(late.seen, [2], 'it receives the next')
})

t.test('fan-out: removals during a publish, of the one delivering and of the ones after it', async (t) => {
  const fanOut = new FanOut(() => t.fail('no errors expected'))
  const seen: string[] = []
  const removers = new Map<string, () => void>()
  const subscriber = (name: string, filter: SubscriptionFilter, then?: () => void): void => {
    removers.set(name, fanOut.add({ filter, updates: false, deliver: () => { seen.push(name); then?.() } }))
  }
  const remove = (...names: string[]) => () => { for (const name of names) removers.get(name)?.() }
  // Everything: a removes itself and the two after it; d then runs, and e removes d (done) and f.
  subscriber('a', {}, remove('a', 'b', 'c'))
  subscriber('b', {})
  subscriber('c', {})
  subscriber('d', {})
  subscriber('e', {}, remove('d', 'f'))
  subscriber('f', {})
  subscriber('g', {})
  fanOut.publish(event(), false)
  t.same(seen, ['a', 'd', 'e', 'g'])
  t.equal(fanOut.size, 2)
  // A device's bucket emptied during a publish, and filled again: the new one waits for the next.
  seen.length = 0
  subscriber('x', { deviceId: 'a' }, () => {
    remove('x', 'y')()
    subscriber('z', { deviceId: 'a' })
  })
  subscriber('y', { deviceId: 'a' })
  fanOut.publish(event({ id: 2 }), false)
  t.same(seen, ['x', 'e', 'g'])
  seen.length = 0
  fanOut.publish(event({ id: 3 }), false)
  t.same(seen, ['z', 'e', 'g'])
  t.strictSame(fanOut.forDevice('a').length, 1, 'only z is filed under the device')
  remove('z', 'e', 'g')()
  t.equal(fanOut.size, 0)
  t.strictSame(fanOut.forDevice('a'), [], 'and its bucket is gone')
  // A subscriber of several networks leaves each of them.
  subscriber('n', { networkIds: [1, 2] })
  remove('n')()
  fanOut.publish(event({ id: 4 }), false)
  fanOut.publish(event({ id: 5 }, { networkId: 2, deviceTypeId: null }), false)
  t.same(seen, ['z', 'e', 'g'], 'nothing after the last removal')
})

t.test('fan-out: forDevice finds the subscribers made for a device, of both kinds', async (t) => {
  const fanOut = new FanOut(() => {})
  const a = collector({ deviceId: 'a' })
  const aUpdates = collector({ deviceId: 'a' }, true)
  fanOut.add(a)
  fanOut.add(aUpdates)
  fanOut.add(collector({ deviceId: 'b' }))
  fanOut.add(collector({ networkIds: [1] }))
  t.strictSame(fanOut.forDevice('a'), [a, aUpdates])
  t.strictSame(fanOut.forDevice('nobody'), [])
})

t.test('fan-out: adding and removing cost the same whatever else is subscribed', async (t) => {
  // 200,000 subscribers on one key: removing each unlinks its node, not a search of a list.
  const fanOut = new FanOut(() => {})
  const removers = Array.from({ length: 200_000 }, () => fanOut.add({ filter: {}, updates: false, deliver: () => {} }))
  for (const remove of removers) remove()
  t.equal(fanOut.size, 0, 'all added and removed (a quadratic removal would not finish in the test timeout)')
})

t.test('fan-out: the wire command is built once, deeply frozen and shared', async (t) => {
  const e = event()
  const command = e.command
  t.equal(e.command, command, 'built once')
  t.ok(Object.isFrozen(command))
  t.ok(Object.isFrozen(command.parameters))
  t.same(command.parameters, { x: 1 })
})

t.test('fan-out: matches', async (t) => {
  const placed = event({ deviceId: 'dev', command: 'go' }, { networkId: 3, deviceTypeId: 7 })
  const loose = event({ deviceId: 'dev', command: 'go' }, { networkId: null, deviceTypeId: null })
  t.equal(matches({}, placed), true, 'an empty filter matches everything')
  t.equal(matches({}, loose), true)
  t.equal(matches({ deviceId: undefined, networkIds: undefined, deviceTypeIds: undefined, names: undefined }, loose), true, 'undefined fields are absent')
  t.equal(matches({ deviceId: 'dev' }, placed), true)
  t.equal(matches({ deviceId: 'Dev' }, placed), false, 'device ids are case-sensitive')
  t.equal(matches({ networkIds: [3] }, placed), true)
  t.equal(matches({ networkIds: [1, 2] }, placed), false)
  t.equal(matches({ networkIds: [3] }, loose), false, 'a device in no network matches no list')
  t.equal(matches({ deviceTypeIds: [7] }, placed), true)
  t.equal(matches({ deviceTypeIds: [3] }, placed), false, 'not confused with the network')
  t.equal(matches({ deviceTypeIds: [7] }, loose), false)
  t.equal(matches({ names: ['stop', 'go'] }, placed), true)
  t.equal(matches({ names: ['Go', 'go '] }, placed), false, 'exact names only')
  t.equal(matches({ deviceId: 'dev', networkIds: [99], deviceTypeIds: [99] }, placed), true, 'with a device, networks and types do not filter')
  t.equal(matches({ deviceId: 'dev', names: ['stop'] }, placed), false, 'names still do')
  t.equal(matches({ networkIds: [3], deviceTypeIds: [8] }, placed), false, 'every field must match')
})
