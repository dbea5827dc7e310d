// Expiry: the timer wheel and start-up recovery, through the broker.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import type { BrokerError } from '../lib/errors.js'
import { memoryStore } from '../lib/store/memory.js'
import { sqliteStore } from '../lib/store/sqlite.js'
import type { Command } from '../lib/schema.js'
import type { CommandRecord, Store } from '../lib/store/store.js'
import { body, insertAll, insertOne, overridable, setup, START } from './fixtures/broker.js'
import { command, device } from './fixtures/store-suite.js'
import { laterStore } from './fixtures/later-store.js'
import { sharedSpace } from './fixtures/shared-store.js'
import { SWEEP_MS } from '../lib/expiry.js'
import { manualClock } from '../lib/manual-clock.js'

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

t.test('expiry: after a restart on SQLite, retention is expired or re-armed as set at insert, whatever the new broker\'s', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'command-broker-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const file = join(dir, 'hub.db')
  const before = setup(t, {}, sqliteStore(file))
  await before.device('lamp-1')
  await before.insert('lamp-1', { command: 'old' })
  await before.broker.close()
  const retained = setup(t, { retention: 60 }, sqliteStore(file))
  await retained.insert('lamp-1', { command: 'due' })
  retained.clock.advance(30_000)
  await retained.insert('lamp-1', { command: 'kept' })
  await retained.broker.close()

  // 70 s after the start, a broker without retention opens the file.
  const { broker, admin, clock } = setup(t, {}, sqliteStore(file), START + 70_000)
  const expired: Command[] = []
  broker.on('expired', (c) => { expired.push(c) })
  t.strictSame(await broker.ready, { expired: 1, rearmed: 1 })
  t.same(expired.map((c) => [c.command, c.lifetime]), [['due', null]], 'what fell due meanwhile expired and was reported')
  clock.advance(19_999)
  t.equal(expired.length, 1)
  clock.advance(1)
  t.same(expired.map((c) => c.command), ['due', 'kept'], 'the rest expires on time')
  t.equal((await broker.handle({ action: 'command/get', deviceId: 'lamp-1', commandId: 1 }, admin)).status, 'success',
    'a command inserted while retention was 0 is kept')
})

const turns = async (n = 5): Promise<void> => { for (let i = 0; i < n; i++) await new Promise(setImmediate) }

t.test('expiry: recovery expires what fell due in pieces within a turn\'s time budget, over many turns', async (t) => {
  // Work is timed by the clock's elapsed(), which here moves 0.1 ms for each command expired.
  let elapsed = 0
  let turn = 0
  const perTurn = new Map<number, number>()
  const inner = memoryStore()
  const store: Store = {
    ...overridable(inner),
    expireCommands: (ids, now) => {
      elapsed += ids.length * 0.1
      perTurn.set(turn, (perTurn.get(turn) ?? 0) + ids.length)
      return inner.expireCommands(ids, now)
    }
  }
  inner.saveDevice(device({ id: 'lamp-1' }))
  // 3000 commands due while the broker was down, 0.1 ms each: 50 fill a turn's budget of 5 ms.
  // And 10 still pending.
  insertAll(inner, Array.from({ length: 3000 }, () => command({ deviceId: 'lamp-1', expiresAt: START - 1000 })))
  insertAll(inner, Array.from({ length: 10 }, () => command({ deviceId: 'lamp-1', expiresAt: START + 1000 })))
  let probing = true
  const probe = (): void => { turn++; if (probing) setImmediate(probe) }
  setImmediate(probe)
  const { broker } = setup(t, { expiryBatch: 1000, clock: Object.assign(manualClock(START), { elapsed: () => elapsed }) }, store)
  let reported = 0
  broker.on('expired', () => { reported++ })
  t.strictSame(await broker.ready, { expired: 3000, rearmed: 10 })
  probing = false
  t.equal(reported, 3000, 'each reported')
  const most = Math.max(...perTurn.values())
  // The first piece is 64; later ones are sized to half the budget (25), and a turn may start
  // one more just before its 5 ms are spent: 7.5 ms at most.
  t.ok(most <= 75, `at most 75 a turn (${most})`)
  t.ok(perTurn.size >= 3000 / 75, `spread over ${perTurn.size} turns`)
  t.equal(inner.lastCommandId(), 3010)
})

t.test('expiry: on a store that answers later, recovery, expiry and its reports work, and a failed expiry is retried', async (t) => {
  const base = memoryStore()
  let failing = false
  const inner = { ...overridable(base), expireCommands: (ids: readonly number[], now: number) => { if (failing) throw new Error('busy'); return base.expireCommands(ids, now) } }
  inner.saveDevice(device({ id: 'lamp-1' }))
  const [due, later] = insertAll(inner, [
    command({ deviceId: 'lamp-1', expiresAt: START - 1000 }),
    command({ deviceId: 'lamp-1', expiresAt: START + 5000 }),
    command({ deviceId: 'gone', expiresAt: START - 1000 })
  ]) as [number, number]
  const store = laterStore(inner)
  const { broker, insert, clock } = setup(t, {}, store)
  const expired: number[] = []
  const updates: Array<[number, string | null]> = []
  const errors: BrokerError[] = []
  broker.on('expired', (c) => { expired.push(c.id) })
  broker.on('error', (err) => { errors.push(err) })
  broker.subscribe({ returnUpdatedCommands: true }, (c) => { updates.push([c.id, c.status]) })
  t.strictSame(await broker.ready, { expired: 2, rearmed: 1 }, 'the due two expired (one of a device that is gone), one re-armed')
  t.strictSame(expired, [due], 'reported only for a device that exists')
  const { id } = body(await insert('lamp-1', { command: 'on', lifetime: 2 })).command
  failing = true
  clock.advance(2100)
  await turns()
  t.equal(errors[0]?.code, 'ERR_STORE', 'the failed expiry is reported')
  failing = false
  clock.advance(1000)
  await turns()
  clock.advance(3000)
  await turns()
  t.strictSame(expired, [due, id, later], 'retried, then the re-armed one too')
  t.strictSame(updates, [[due, 'expired'], [id, 'expired'], [later, 'expired']])
})

t.test('expiry: on a store that answers later, recovery that fails is retried, and close() during a wait stops it', async (t) => {
  const base = memoryStore()
  let failing = true
  const inner = { ...overridable(base), lastCommandId: () => { if (failing) throw new Error('down'); return base.lastCommandId() } }
  const store = laterStore(inner)
  const { broker, clock } = setup(t, {}, store)
  const errors: BrokerError[] = []
  broker.on('error', (err) => { errors.push(err) })
  await turns()
  t.match(errors[0]?.message, /start-up recovery failed; retrying/)
  failing = false
  clock.advance(1000)
  t.strictSame(await broker.ready, { expired: 0, rearmed: 0 })

  const again = laterStore(memoryStore())
  again.hold('lastCommandId')
  const second = setup(t, {}, again)
  await turns()
  await second.broker.close()
  again.release('lastCommandId')
  t.strictSame(await second.broker.ready, { expired: 0, rearmed: 0 }, 'ready settles at close, with nothing done')
  await turns()
})

t.test('expiry: on a store that answers later, device reads of expired commands that fail are reported', async (t) => {
  const base = memoryStore()
  let failing = false
  const inner = { ...overridable(base), getDevice: (id: string) => { if (failing) throw new Error('down'); return base.getDevice(id) } }
  const store = laterStore(inner)
  const { broker, insert, device: save, clock } = setup(t, {}, store)
  await save('lamp-1')
  await insert('lamp-1', { command: 'on', lifetime: 1 })
  const errors: BrokerError[] = []
  const expired: Command[] = []
  broker.on('error', (err) => { errors.push(err) })
  broker.on('expired', (c) => { expired.push(c) })
  failing = true
  clock.advance(1100)
  await turns()
  t.match(errors[0]?.message, /reading the devices of expired commands failed; they expired unreported/)
  t.strictSame(expired, [])
})

t.test('expiry: a shared store\'s bus that fails to start is reported, and ready still settles', async (t) => {
  const node = sharedSpace().node()
  const failure = new Error('no LISTEN')
  const bus = { subscribe: () => () => {}, ready: Promise.reject(failure) }
  const errors: BrokerError[] = []
  const { broker } = setup(t, {}, { ...node, shared: { ...node.shared as NonNullable<typeof node.shared>, bus } })
  broker.on('error', (err) => { errors.push(err) })
  t.strictSame(await broker.ready, { expired: 0, rearmed: 0 })
  t.match(errors[0]?.message, /the store's event bus failed to start: no LISTEN/)
})

t.test('expiry: a shared store\'s sweep that throws is reported, and the next sweep claims what is overdue', async (t) => {
  const space = sharedSpace()
  const node = space.node()
  const shared = node.shared as NonNullable<typeof node.shared>
  let failing = false
  const store = { ...node, shared: { ...shared, claimExpired: (now: number, limit: number) => { if (failing) throw new Error('claim failed'); return shared.claimExpired(now, limit) as CommandRecord[] } } }
  // A command nobody armed: put there by a process that is gone.
  space.inner.saveDevice(device({ id: 'lamp-1' }))
  const [orphan] = insertAll(space.inner, [command({ deviceId: 'lamp-1', expiresAt: START + 500 })])
  const { broker, clock } = setup(t, { expiryBatch: 1 }, store)
  const errors: BrokerError[] = []
  const expired: number[] = []
  broker.on('error', (err) => { errors.push(err) })
  broker.on('expired', (c) => { expired.push(c.id) })
  await broker.ready
  failing = true
  clock.advance(SWEEP_MS)
  t.match(errors[0]?.message, /sweeping for overdue commands failed; retrying: claim failed/)
  failing = false
  clock.advance(SWEEP_MS)
  await turns()
  t.strictSame(expired, [orphan], 'claimed at the next sweep')
})

t.test('expiry: a device read of an expired command that throws at once is reported', async (t) => {
  const inner = memoryStore()
  let failing = false
  const store: Store = { ...overridable(inner), getDevice: (id) => { if (failing) throw new Error('down'); return inner.getDevice(id) } }
  const { broker, insert, device: save, clock } = setup(t, {}, store)
  await save('lamp-1')
  await insert('lamp-1', { command: 'on', lifetime: 1 })
  const errors: BrokerError[] = []
  broker.on('error', (err) => { errors.push(err) })
  failing = true
  clock.advance(1100)
  t.match(errors[0]?.message, /reading the devices of expired commands failed; they expired unreported: down/)
})

t.test('expiry: whatever answers after close() (an expiry, a recovery step, a sweep) does nothing', async (t) => {
  // An expiry in flight.
  const store = laterStore()
  const first = setup(t, {}, store)
  await first.device('lamp-1')
  await first.insert('lamp-1', { command: 'on', lifetime: 1 })
  const expired: number[] = []
  first.broker.on('expired', (c) => { expired.push(c.id) })
  store.hold('expireCommands')
  first.clock.advance(1100)
  while (store.waiting('expireCommands') === 0) await turns(1)
  await first.broker.close()
  store.release('expireCommands')
  await turns()
  t.strictSame(expired, [], 'an expiry answered after close() reports nothing')

  // A recovery step in flight.
  const recovering = laterStore()
  recovering.inner.saveDevice(device({ id: 'lamp-1' }))
  insertAll(recovering.inner, [command({ deviceId: 'lamp-1', expiresAt: START + 60_000 })])
  recovering.hold('expiringCommands')
  const second = setup(t, {}, recovering)
  while (recovering.waiting('expiringCommands') === 0) await turns(1)
  await second.broker.close()
  recovering.release('expiringCommands')
  await turns()
  t.strictSame(await second.broker.ready, { expired: 0, rearmed: 0 }, 'a recovery step answered after close() arms nothing')
  t.equal(second.clock.pending, 0, 'no timer')

  // A sweep in flight.
  const node = sharedSpace().node()
  const shared = node.shared as NonNullable<typeof node.shared>
  let answer: (records: CommandRecord[]) => void = () => {}
  let claims = 0
  const third = setup(t, {}, { ...node, shared: { ...shared, claimExpired: () => { claims++; return new Promise<CommandRecord[]>((resolve) => { answer = resolve }) } } })
  await third.broker.ready
  third.clock.advance(SWEEP_MS)
  t.equal(claims, 1, 'a sweep is claiming')
  await third.broker.close()
  answer([])
  await turns()
  t.equal(third.clock.pending, 0, 'a sweep answered after close() schedules nothing')
})

t.test('expiry: while the store is behind, recovery and the wheel wait a tick at a time, then go on', async (t) => {
  const inner = memoryStore()
  let behind = true
  let asked = 0
  const store: Store = { ...overridable(inner), behind: () => { asked++; return behind } }
  inner.saveDevice(device({ id: 'lamp-1' }))
  insertAll(inner, Array.from({ length: 3 }, () => command({ deviceId: 'lamp-1', expiresAt: START - 1000 })))
  const { broker, clock, insert } = setup(t, {}, store)
  const expired: number[] = []
  broker.on('expired', (c) => { expired.push(c.id) })
  let ready = false
  void broker.ready.then(() => { ready = true })
  await turns()
  t.equal(ready, false, 'recovery waits')
  t.same(expired, [])
  const before = asked
  clock.advance(100)
  t.ok(asked > before, 'and asks again a tick later')
  behind = false
  clock.advance(100)
  t.strictSame(await broker.ready, { expired: 3, rearmed: 0 })
  t.same(expired, [1, 2, 3])
  behind = true
  t.equal((await insert('lamp-1', { command: 'on', lifetime: 1 })).status, 'success')
  clock.advance(1500)
  await turns()
  t.same(expired, [1, 2, 3], 'the wheel holds a due command too')
  behind = false
  clock.advance(100)
  await turns()
  t.same(expired, [1, 2, 3, 4], 'and expires it a tick after the store caught up')
})

t.test('expiry: a store that fails to say whether it is behind is reported, and expiry goes on', async (t) => {
  const inner = memoryStore()
  const store: Store = { ...overridable(inner), behind: () => { throw new Error('no idea') } }
  const { broker, clock, device: save, insert } = setup(t, {}, store)
  const errors: BrokerError[] = []
  const expired: number[] = []
  broker.on('error', (err) => { errors.push(err) })
  broker.on('expired', (c) => { expired.push(c.id) })
  await save('lamp-1')
  await insert('lamp-1', { command: 'on', lifetime: 1 })
  clock.advance(1000)
  await turns()
  t.same(expired, [1])
  t.equal(errors[0]?.code, 'ERR_STORE')
  t.match(errors[0]?.message, /asking the store whether it is behind failed; expiring anyway/)
})
