import { BrokerError } from '../errors.js'
import type {
  CommandPatch, CommandRecord, CommandScan, CommandUpdate, CommitResult, DeviceRecord, NewCommandRecord, SortQuery, Store,
  WriteBatch
} from '../store/store.js'

/**
 * The part of a test framework's test object that {@link storeSuite} uses: tap's `Test`
 * (tap 21) fits it as it is. Declared here so that this package depends on tap
 * neither at run time nor for its types.
 */
export interface SuiteTest {
  test (name: string, fn: (t: SuiteTest) => Promise<void>): unknown
  teardown (fn: () => unknown): void
  ok (value: unknown, ...message: [] | [string]): unknown
  notOk (value: unknown, ...message: [] | [string]): unknown
  equal (found: unknown, wanted: unknown, ...message: [] | [string]): unknown
  not (found: unknown, notWanted: unknown, ...message: [] | [string]): unknown
  strictSame (found: unknown, wanted: unknown, ...message: [] | [string]): unknown
  notSame (found: unknown, notWanted: unknown, ...message: [] | [string]): unknown
  throws (fn: () => unknown, wanted: typeof Error, ...message: [] | [string]): unknown
  resolves (fn: () => Promise<unknown>, ...message: [] | [string]): unknown
}

/**
 * The abstract test suite of the {@link Store} contract (see `lib/store/store.ts`). It runs
 * unchanged against every store, synchronous (memory, SQLite) or not (PostgreSQL): every
 * call is awaited, which takes an answer given at once as it is and a promise once it settles.
 * `open` must return a new, empty store each time it is called (for a shared store, a command
 * space nobody else uses). Every subtest closes the store it opened, and awaits the close.
 *
 * Writes of commands go through `commit`: `insert` and `update` below are batches of one,
 * with no `maxPending` limit. `maxPending` itself is tested on every store, but only in part:
 * a store with `shared` must refuse an insert past it, while a store without may ignore it
 * (its broker counts for it). So on every store the test checks that inserts within the
 * limit get ids, that a slot freed by an update or an expiry is usable, and that an insert is
 * stored if and only if it got an id; it expects refusals only when `store.shared` is set.
 *
 * The transactions of the old contract (nesting, rollback) are gone with `transaction()`:
 * a store makes each call all-or-nothing by itself, and how a failing commit writes nothing
 * is each store's own test (SQLite: test/store/sqlite.ts).
 */
export function storeSuite (t: SuiteTest, name: string, open: () => Store | Promise<Store>): void {
  const test = (title: string, fn: (t: SuiteTest, store: Store) => Promise<void>): void => {
    t.test(`${name}: ${title}`, async (t) => {
      const store = await open()
      t.teardown(async () => { await store.close() })
      await fn(t, store)
    })
  }

  test('devices are saved, replaced, read and deleted', async (t, store) => {
    t.equal(await store.getDevice('dev'), undefined, 'an unknown device is undefined')
    const first = device({ id: 'dev' })
    await store.saveDevice(first)
    t.strictSame(await store.getDevice('dev'), first, 'reads back what was saved')

    const replaced: DeviceRecord = {
      id: 'dev', name: 'renamed', data: '{"a":[1,2]}', networkId: 7, deviceTypeId: 9, isBlocked: true
    }
    await store.saveDevice(replaced)
    t.strictSame(await store.getDevice('dev'), replaced, 'saving the same id replaces every field')
    await store.saveDevice({ ...replaced, data: null, networkId: null, deviceTypeId: null, isBlocked: false })
    t.strictSame(await store.getDevice('dev'), { ...replaced, data: null, networkId: null, deviceTypeId: null, isBlocked: false },
      'fields can be set back to null and false')

    const other = device({ id: 'other', name: 'other' })
    await store.saveDevice(other)
    t.equal(await store.deleteDevice('dev'), true, 'deleting a device says it existed')
    t.equal(await store.getDevice('dev'), undefined, 'the deleted device is gone')
    t.strictSame(await store.getDevice('other'), other, 'other devices are kept')
    t.equal(await store.deleteDevice('nobody'), false, 'deleting an unknown device is harmless')
    t.strictSame(await store.getDevice('other'), other)

    // Ids are compared exactly: no case folding or normalisation.
    await store.saveDevice(device({ id: 'Other', name: 'upper' }))
    await store.saveDevice(device({ id: 'é', name: 'composed' }))
    await store.saveDevice(device({ id: 'e\u0301', name: 'decomposed' }))
    t.equal((await store.getDevice('other'))?.name, 'other')
    t.equal((await store.getDevice('Other'))?.name, 'upper')
    t.equal((await store.getDevice('é'))?.name, 'composed')
    t.equal((await store.getDevice('e\u0301'))?.name, 'decomposed')
  })

  test('devices are copied in and out', async (t, store) => {
    const saved = device({ id: 'dev', data: '{"v":1}' })
    await store.saveDevice(saved)
    saved.name = 'changed after save'
    saved.isBlocked = true
    const read = await store.getDevice('dev') as DeviceRecord
    t.equal(read.name, 'device', 'mutating the saved object does not change the store')
    t.equal(read.isBlocked, false)
    // A store hands out a copy or a frozen object; either way the caller cannot change it.
    if (Object.isFrozen(read)) {
      t.throws(() => { read.name = 'changed after read' }, TypeError, 'a frozen read cannot be changed')
    } else {
      read.name = 'changed after read'
      read.data = null
      t.not(await store.getDevice('dev'), await store.getDevice('dev'), 'every unfrozen read is a new object')
    }
    t.strictSame(await store.getDevice('dev'), device({ id: 'dev', data: '{"v":1}' }), 'mutating a read object does not change the store')
  })

  test('commands round-trip every field', async (t, store) => {
    const full: NewCommandRecord = {
      command: 'full',
      timestamp: 1_700_000_000_123,
      lastUpdated: 1_700_000_000_456,
      userId: 42,
      deviceId: 'dev',
      networkId: 3,
      deviceTypeId: 4,
      parameters: '{"p":[1,"two",null]}',
      lifetime: 60,
      status: 'running',
      result: '"ok"',
      expiresAt: 1_700_000_060_123,
      updated: true
    }
    const bare = command({ command: 'bare', deviceId: 'dev' })
    const fullId = await insert(store, full)
    const bareId = await insert(store, bare)
    t.strictSame(await store.getCommand(fullId, 0), { id: fullId, ...full }, 'every field is stored')
    t.strictSame(await store.getCommand(bareId, 0), { id: bareId, ...bare }, 'nulls and false are stored')
    t.equal(await store.getCommand(bareId + 1000, 0), undefined, 'an unknown id is undefined')
  })

  test('JSON text is opaque and __proto__ round-trips', async (t, store) => {
    const proto = '{"__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}}}'
    const spaced = '{ "b" : 1,\n  "a" : 2 }'
    await store.saveDevice(device({ id: 'dev', data: proto }))
    t.equal((await store.getDevice('dev'))?.data, proto, 'device data is kept byte for byte')
    await store.saveDevice(device({ id: 'spaced', data: spaced }))
    t.equal((await store.getDevice('spaced'))?.data, spaced, 'whitespace and key order are kept')
    await store.saveDevice(device({ id: 'null-text', data: 'null' }))
    t.equal((await store.getDevice('null-text'))?.data, 'null', "the text 'null' is not null")

    const id = await insert(store, command({ deviceId: 'dev', parameters: proto, result: spaced }))
    const got = await store.getCommand(id, 0) as CommandRecord
    t.equal(got.parameters, proto)
    t.equal(got.result, spaced)
    t.equal((await list(store, 'dev', 0))[0]?.parameters, proto)
    t.equal((await scanEvery(store, { order: 'ASC' }, 0))[0]?.parameters, proto)
    const before = await update(store, id, 'dev', { result: proto }, 2, 0) as CommandRecord
    t.equal(before.result, spaced)
    t.equal((await store.getCommand(id, 0))?.result, proto)
    t.equal((await store.getCommand(id, 0))?.parameters, proto)
    t.equal(Object.getPrototypeOf(got), Object.prototype, 'records are plain objects')
    t.equal(({} as Record<string, unknown>).polluted, undefined, 'Object.prototype is not polluted')
  })

  test('commands are copied in and out', async (t, store) => {
    await store.saveDevice(device({ id: 'dev' }))
    const input = command({ deviceId: 'dev', status: 'new', expiresAt: 100 })
    const inserts = [input]
    const id = idOf((await store.commit(batch({ inserts }), 0)).ids[0])
    input.status = 'changed after insert'
    input.deviceId = 'elsewhere'
    inserts.push(command({ command: 'pushed after the commit' }))
    const original = { id, ...command({ deviceId: 'dev', status: 'new', expiresAt: 100 }) }
    t.strictSame(await store.getCommand(id, 0), original, 'mutating the inserted object or its batch does not change the store')
    t.equal(await store.lastCommandId(), id, 'nor adds to it')

    // A store hands out a copy or a frozen object; a frozen one is left alone here.
    const mutate = (record: CommandRecord | undefined): void => {
      t.ok(record, 'a record was returned')
      if (record === undefined || Object.isFrozen(record)) return
      record.status = 'mutated'
      record.timestamp = -1
      record.updated = !record.updated
    }
    mutate(await store.getCommand(id, 0))
    mutate((await list(store, 'dev', 0))[0])
    mutate((await scanEvery(store, { order: 'DESC' }, 0))[0])
    mutate((await store.sortCommands({ deviceId: 'dev', sortField: 'status', sortOrder: 'ASC', take: 10, skip: 0 }, 0, 10))?.[0])
    t.strictSame(await store.getCommand(id, 0), original, 'mutating read objects does not change the store')

    const patch: CommandPatch = { status: 'done' }
    const updates: CommandUpdate[] = [{ id, deviceId: 'dev', patch, lastUpdated: 5 }]
    const result = await store.commit(batch({ updates }), 0)
    t.strictSame(result.before, [original], 'commit returns the command as it was before the update')
    patch.status = 'changed after commit'
    patch.result = '"added after commit"'
    updates.push({ id, deviceId: 'dev', patch: { status: 'pushed after commit' }, lastUpdated: 6 })
    mutate(result.before[0])
    const updated = { ...original, status: 'done', lastUpdated: 5, updated: true }
    t.strictSame(await store.getCommand(id, 0), updated, 'mutating the patch, the batch or the returned before does not change the store')
    t.not(await store.getCommand(id, 0), await store.getCommand(id, 0), 'every read is a new object')

    // The next update's before is the stored command, not the object handed out last time.
    t.strictSame(await update(store, id, 'dev', { result: '1' }, 7, 0), updated, 'a later update sees the store, not a mutated before')
    const current = { ...updated, result: '1', lastUpdated: 7 }

    const expired = await store.expireCommands([id], 100)
    t.strictSame(expired, [current])
    mutate(expired[0])
    t.strictSame(await store.expireCommands([id], 100), [], 'the expired command is gone')
  })

  test('ids increase in batch order and are never reused', async (t, store) => {
    t.equal(await store.lastCommandId(), 0, 'an empty store has assigned no id')
    const ids: number[] = []
    for (let i = 0; i < 5; i++) {
      ids.push(await insert(store, command({ deviceId: i % 2 === 0 ? 'a' : 'b', expiresAt: 100 + i })))
      t.equal(await store.lastCommandId(), ids[ids.length - 1], 'lastCommandId is the id just assigned')
    }
    t.ok(ids.every(isId), 'ids are positive integers')
    t.ok(increasing(ids), 'ids increase per commit')

    const inserts = [
      command({ deviceId: 'c', command: 'first', expiresAt: 200 }),
      command({ deviceId: 'b', command: 'second', expiresAt: 200 }),
      command({ deviceId: 'c', command: 'third', expiresAt: 200 })
    ]
    const batched = (await store.commit(batch({ inserts }), 0)).ids
    t.equal(batched.length, 3, 'an id per insert')
    t.ok(batched.every(isId), 'positive integers')
    t.ok(increasing([ids[4] as number, ...batched as number[]]), 'increasing in batch order, above every earlier id')
    const names = await Promise.all(batched.map(async (id) => (await store.getCommand(id as number, 0))?.command))
    t.strictSame(names, ['first', 'second', 'third'], 'each id is its insert\'s')
    t.equal(await store.lastCommandId(), batched[2], 'lastCommandId is the last id of the batch')

    const highest = batched[2] as number
    t.strictSame((await store.expireCommands([highest], 1000)).map((c) => c.id), [highest], 'the highest command expires')
    t.equal(await store.lastCommandId(), highest, 'lastCommandId remembers an id whose command is gone')
    const afterExpiry = await insert(store, command({ deviceId: 'c' }))
    t.ok(afterExpiry > highest, 'the id of an expired command is not reused')

    t.equal(await store.deleteCommands('c', 10), 2, 'device c had two commands')
    t.equal(await store.lastCommandId(), afterExpiry)
    const afterDelete = await insert(store, command({ deviceId: 'a' }))
    t.ok(afterDelete > afterExpiry, 'the id of a deleted command is not reused')

    t.equal(await store.deleteCommands('a', 10), 4, 'device a had four commands')
    t.equal(await store.deleteCommands('b', 10), 3, 'device b had three')
    t.equal(await store.lastCommandId(), afterDelete, 'lastCommandId survives deleting every command')
    const afterEmpty = (await store.commit(batch({ inserts: [command(), command()] }), 0)).ids
    t.ok(afterEmpty.every(isId) && increasing([afterDelete, ...afterEmpty as number[]]), 'ids keep growing when the store holds no command')
    t.equal(await store.lastCommandId(), afterEmpty[1])

    t.strictSame(await store.commit(batch(), 0), { ids: [], before: [] }, 'an empty batch')
    t.strictSame(await store.commit(batch({ updates: [{ id: afterDelete, deviceId: 'a', patch: {}, lastUpdated: 1 }] }), 0),
      { ids: [], before: [undefined] }, 'a batch of updates only')
    t.equal(await store.lastCommandId(), afterEmpty[1], 'assign no id')

    // The broker hands in its records with a placeholder id of 0: the store assigns its own.
    const placeholders = [{ ...command({ command: 'p1' }), id: 0 }, { ...command({ command: 'p2' }), id: 0 }]
    const given = (await store.commit(batch({ inserts: placeholders }), 0)).ids as number[]
    t.ok(given.every(isId) && increasing([afterEmpty[1] as number, ...given]), 'an insert that carries an id gets a new one')
    t.strictSame(await Promise.all(given.map(async (id) => (await store.getCommand(id, 0))?.command)), ['p1', 'p2'])
  })

  test('getCommand hides expired commands', async (t, store) => {
    const expiring = await insert(store, command({ expiresAt: 100 }))
    const forever = await insert(store, command({ expiresAt: null }))
    t.equal((await store.getCommand(expiring, 99))?.id, expiring, 'visible before expiresAt')
    t.equal(await store.getCommand(expiring, 100), undefined, 'hidden at expiresAt')
    t.equal(await store.getCommand(expiring, 101), undefined, 'hidden after expiresAt')
    t.equal((await store.getCommand(expiring, 0))?.id, expiring, 'hiding does not delete')
    t.equal((await store.getCommand(forever, Number.MAX_SAFE_INTEGER))?.id, forever, 'a null expiry never expires')
    t.equal(await store.getCommand(0, 0), undefined)
    t.equal(await store.getCommand(-1, 0), undefined)
  })

  test('commit: an update changes only the keys present', async (t, store) => {
    const input = command({ deviceId: 'dev', status: 'new', result: null, lastUpdated: 1, expiresAt: 100 })
    const id = await insert(store, input)
    let current: CommandRecord = { id, ...input }

    const step = async (patch: CommandPatch, lastUpdated: number, expected: Partial<CommandRecord>, message: string): Promise<void> => {
      const before = await update(store, id, 'dev', patch, lastUpdated, 50)
      t.strictSame(before, current, `${message}: returns the command as it was before`)
      current = { ...current, ...expected, lastUpdated, updated: true }
      t.strictSame(await store.getCommand(id, 0), current, `${message}: stores the change`)
    }
    await step({ status: 'running' }, 10, { status: 'running' }, 'status only')
    await step({ result: '{"progress":1}' }, 20, { result: '{"progress":1}' }, 'result only')
    await step({}, 30, {}, 'empty patch')
    await step({ status: null }, 40, { status: null }, 'status set to null')
    await step({ status: 'done', result: '"finished"' }, 50, { status: 'done', result: '"finished"' }, 'both')
    await step({ result: null }, 60, { result: null }, 'result set to null')
    t.equal((await store.getCommand(id, 0))?.status, 'done', 'clearing result keeps status')

    t.equal(await update(store, id + 1000, 'dev', { status: 'x' }, 70, 50), undefined, 'unknown id')
    t.equal(await update(store, id, 'other', { status: 'x' }, 70, 50), undefined, 'another device\'s command')
    t.equal(await update(store, id, 'dev', { status: 'x' }, 70, 100), undefined, 'expired at now')
    t.equal(await update(store, id, 'dev', { status: 'x' }, 70, 101), undefined, 'expired before now')
    t.strictSame(await store.getCommand(id, 0), current, 'refused updates change nothing')
    t.equal(await countAll(store, 'dev', 0), 0, 'an updated command is not pending')

    const fresh = await insert(store, command({ deviceId: 'dev', updated: false }))
    t.equal((await store.getCommand(fresh, 0))?.updated, false)
    await update(store, fresh, 'dev', {}, 5, Number.MAX_SAFE_INTEGER)
    t.equal((await store.getCommand(fresh, 0))?.updated, true, 'a null expiry can be updated at any time')
  })

  test('commit: updates of one id in a batch apply in order, each seeing the one before', async (t, store) => {
    const input = command({ deviceId: 'dev', status: 'new', lastUpdated: 1 })
    const id = await insert(store, input)
    const other = await insert(store, command({ deviceId: 'dev', command: 'other' }))
    const original: CommandRecord = { id, ...input }
    const otherOriginal = await store.getCommand(other, 0)
    const updates: CommandUpdate[] = [
      { id, deviceId: 'dev', patch: { status: 'running' }, lastUpdated: 10 },
      { id: other, deviceId: 'dev', patch: { status: 'between' }, lastUpdated: 15 },
      { id, deviceId: 'dev', patch: { result: '1' }, lastUpdated: 20 },
      { id, deviceId: 'dev', patch: { status: 'done' }, lastUpdated: 30 },
      { id, deviceId: 'dev', patch: { status: null, result: '2' }, lastUpdated: 25 }
    ]
    const result = await store.commit(batch({ updates }), 0)
    t.strictSame(result, {
      ids: [],
      before: [
        original,
        otherOriginal,
        { ...original, status: 'running', lastUpdated: 10, updated: true },
        { ...original, status: 'running', result: '1', lastUpdated: 20, updated: true },
        { ...original, status: 'done', result: '1', lastUpdated: 30, updated: true }
      ]
    }, 'a before per update, in batch order')
    t.strictSame(await store.getCommand(id, 0), { ...original, status: null, result: '2', lastUpdated: 25, updated: true },
      'the last update wins, lastUpdated included (it is set, not maximised)')
    t.equal((await store.getCommand(other, 0))?.status, 'between', 'an update of another id in between applies too')
  })

  test('commit: updates of another device\'s, an expired or an unknown command give undefined and change nothing', async (t, store) => {
    const fixture = await seed(store)
    const before = await snapshot(store, fixture)
    const unknown = Math.max(...fixture.ids) + 1000
    const refused: CommandUpdate[] = [
      { id: fixture.pending, deviceId: 'other', patch: { status: 'x' }, lastUpdated: 99 },
      { id: fixture.other, deviceId: 'keep', patch: { result: '1' }, lastUpdated: 99 },
      // fixture.expiring expires at 500 (commit at 500).
      { id: fixture.expiring, deviceId: 'keep', patch: { status: 'x' }, lastUpdated: 99 },
      { id: unknown, deviceId: 'keep', patch: { status: 'x' }, lastUpdated: 99 },
      { id: 0, deviceId: 'keep', patch: {}, lastUpdated: 99 },
      { id: -1, deviceId: 'keep', patch: {}, lastUpdated: 99 }
    ]
    t.strictSame(await store.commit(batch({ updates: refused }), 500), { ids: [], before: refused.map(() => undefined) }, 'undefined each')
    t.strictSame(await snapshot(store, fixture), before, 'nothing changed')
    t.strictSame(await store.commit(batch({ updates: refused.slice(2, 3) }), 501), { ids: [], before: [undefined] }, 'expired before now')
    t.strictSame(await snapshot(store, fixture), before, 'nothing changed')

    // Mixed with an update that applies: only that one does.
    const pendingBefore = await store.getCommand(fixture.pending, 0)
    const mixed = await store.commit(batch({
      updates: [refused[0] as CommandUpdate, { id: fixture.pending, deviceId: 'keep', patch: { status: 'done' }, lastUpdated: 7 }, refused[2] as CommandUpdate]
    }), 500)
    t.strictSame(mixed, { ids: [], before: [undefined, pendingBefore, undefined] }, 'a refused update does not stop the others')
    const after = await snapshot(store, fixture)
    t.strictSame((await store.getCommand(fixture.pending, 0))?.status, 'done')
    t.strictSame(await store.getCommand(fixture.other, 0), before.commands[5], 'the other device\'s command is untouched')
    t.strictSame(await store.getCommand(fixture.expiring, 0), before.commands[1], 'the expired command is untouched')
    t.notSame(after, before, 'the accepted update is visible')
  })

  test('commit: inserts and updates in one batch', async (t, store) => {
    await store.saveDevice(device({ id: 'dev' }))
    await store.saveDevice(device({ id: 'other' }))
    const existing = await insert(store, command({ deviceId: 'dev', status: 'new', timestamp: 5 }))
    const existingBefore = await store.getCommand(existing, 0)
    const inserts = [command({ deviceId: 'dev', command: 'x', timestamp: 10 }), command({ deviceId: 'other', command: 'y', timestamp: 20 })]
    const result = await store.commit(batch({
      inserts,
      updates: [
        { id: existing, deviceId: 'dev', patch: { status: 'done' }, lastUpdated: 5 },
        { id: existing, deviceId: 'other', patch: { status: 'wrong device' }, lastUpdated: 6 }
      ]
    }), 0)
    t.equal(result.ids.length, 2, 'an id per insert')
    t.ok(result.ids.every(isId) && increasing([existing, ...result.ids as number[]]), 'in batch order')
    t.strictSame(result.before, [existingBefore, undefined], 'a before per update')
    t.strictSame(await store.getCommand(result.ids[0] as number, 0), { id: result.ids[0], ...inserts[0] }, 'the first insert')
    t.strictSame(await store.getCommand(result.ids[1] as number, 0), { id: result.ids[1], ...inserts[1] }, 'the second')
    t.strictSame(await store.getCommand(existing, 0), { ...existingBefore, status: 'done', lastUpdated: 5, updated: true }, 'the update')
    t.strictSame((await list(store, 'dev', 0)).map((r) => r.command), ['cmd', 'x'])
    t.equal(await countAll(store, 'dev', 0), 1, 'the insert is pending, the updated command no longer')
    t.equal(await countAll(store, 'other', 0), 1)
  })

  test('commit: maxPending (enforced by a shared store)', async (t, store) => {
    const shared = store.shared !== undefined
    await store.saveDevice(device({ id: 'dev' }))
    await store.saveDevice(device({ id: 'elsewhere' }))
    // The commands of 'dev' stored so far, by name (timestamps follow names: list order).
    const stored: string[] = []
    let timestamp = 0
    const pending = (name: string, expiresAt: number | null = null, deviceId = 'dev'): NewCommandRecord =>
      command({ deviceId, command: name, expiresAt, timestamp: ++timestamp })
    // Commits at `now` with maxPending 3; `accepted[i]`: whether insert i must get an id. On a
    // shared store the others must not; on any store an insert is stored iff it got an id.
    const commit = async (now: number, inserts: NewCommandRecord[], accepted: boolean[], label: string): Promise<CommitResult> => {
      const result = await store.commit(batch({ inserts, maxPending: 3 }), now)
      t.equal(result.ids.length, inserts.length, `${label}: an entry per insert`)
      for (const [i, insert] of inserts.entries()) {
        const id = result.ids[i]
        if (accepted[i] === true) t.ok(isId(id), `${label}: ${insert.command} gets an id`)
        else if (shared) t.equal(id, undefined, `${label}: ${insert.command} is refused`)
        if (id !== undefined && insert.deviceId === 'dev') stored.push(insert.command)
      }
      t.ok(increasing(result.ids.filter(isId)), `${label}: the ids given increase in batch order`)
      t.strictSame((await list(store, 'dev', 0)).map((r) => r.command), stored, `${label}: an insert is stored if and only if it got an id`)
      return result
    }

    const first = await commit(0, [pending('p1'), pending('p2', 100)], [true, true], 'two of three')
    await commit(0, [pending('p3', 200), pending('p4'), pending('q1', null, 'elsewhere')], [true, false, true],
      'a batch that crosses maxPending, its own inserts counted; another device counted apart')
    t.equal(await countAll(store, 'elsewhere', 0), 1)
    await commit(0, [pending('p5')], [false], 'at maxPending')

    // An update frees a slot (in a commit of its own: a batch inserts before it updates).
    t.ok(await update(store, first.ids[0] as number, 'dev', { status: 'seen' }, 1, 0), 'p1 updated')
    await commit(0, [pending('p6'), pending('p7')], [true, false], 'an updated command is not pending')

    // Expiry frees slots: a command expired at `now` no longer counts, deleted or not yet.
    await commit(99, [pending('p8')], [false], 'p2 not yet expired')
    t.equal((await store.expireCommands([first.ids[1] as number], 100)).length, 1, 'p2 expired')
    stored.splice(stored.indexOf('p2'), 1)
    await commit(100, [pending('p9'), pending('p10')], [true, false], 'an expired and deleted command is not pending')
    await commit(200, [pending('p11'), pending('p12')], [true, false], 'nor one expired at now, before it is deleted')

    // Without a limit (Infinity), nothing is refused.
    const free = await store.commit(batch({ inserts: [pending('p13'), pending('p14')] }), 0)
    t.ok(free.ids.every(isId), 'maxPending Infinity refuses nothing')
  })

  test('expireCommands deletes only what is due', async (t, store) => {
    await store.saveDevice(device({ id: 'dev' }))
    const a = await insert(store, command({ deviceId: 'dev', command: 'a', expiresAt: 100 }))
    const b = await insert(store, command({ deviceId: 'dev', command: 'b', expiresAt: 200 }))
    const c = await insert(store, command({ deviceId: 'dev', command: 'c', expiresAt: null }))
    const d = await insert(store, command({ deviceId: 'other', command: 'd', expiresAt: 50 }))
    await update(store, a, 'dev', { status: 'seen' }, 7, 0)
    const aBefore = await store.getCommand(a, 0) as CommandRecord
    const dBefore = await store.getCommand(d, 0) as CommandRecord

    t.strictSame(await store.expireCommands([], 1000), [], 'no ids, nothing expires')
    t.strictSame(await store.expireCommands([a, b, c, d], 99), [dBefore], 'only commands whose expiresAt <= now')
    t.strictSame(await store.expireCommands([a, b, c, 9999, -1], 100), [aBefore],
      'returns them as they were, ignoring null expiries and unknown ids')
    t.strictSame(await store.expireCommands([a, d], 1000), [], 'an expired command is gone')
    t.equal(await store.getCommand(a, 0), undefined, 'deleted, not only hidden')
    t.equal(await store.getCommand(d, 0), undefined)
    t.equal((await store.getCommand(b, 0))?.command, 'b', 'a command due later is kept')
    t.equal((await store.getCommand(c, Number.MAX_SAFE_INTEGER))?.command, 'c', 'a null-expiry command is kept')
    t.strictSame(await expiringAll(store, 0, Number.MAX_SAFE_INTEGER, 100), [[b, 200]], 'expired commands leave recovery')
    t.strictSame((await list(store, 'dev', 0)).map((r) => r.id), [b, c])
    t.strictSame((await store.expireCommands([c, b], Number.MAX_SAFE_INTEGER)).map((r) => r.id), [b])
    t.strictSame((await list(store, 'dev', 0)).map((r) => r.id), [c])
  })

  test('scanCommands filters, and reads the device as it is now', async (t, store) => {
    await store.saveDevice(device({ id: 'dev', networkId: 1, deviceTypeId: 10 }))
    await store.saveDevice(device({ id: 'other', networkId: 2, deviceTypeId: 20 }))
    await store.saveDevice(device({ id: 'loose' }))
    const ids: Record<string, number> = {}
    const add = async (key: string, fields: Partial<NewCommandRecord>): Promise<void> => {
      ids[key] = await insert(store, command({ deviceId: 'dev', ...fields }))
    }
    await add('t10', { timestamp: 10, command: 'go', status: null })
    await add('t20', { timestamp: 20, command: 'go', status: 'done', updated: true, lastUpdated: 25 })
    await add('t30', { timestamp: 30, command: 'stop', status: 'done', updated: true, lastUpdated: 90 })
    await add('t40', { timestamp: 40, command: 'go', status: 'failed', expiresAt: 500 })
    await add('t50', { timestamp: 50, command: 'go', status: 'done', expiresAt: 100 })
    await add('o20', { deviceId: 'other', timestamp: 20, command: 'go', status: 'done' })
    await add('l15', { deviceId: 'loose', timestamp: 15, command: 'stop' })
    await add('gone', { deviceId: 'never-saved', timestamp: 12, command: 'go' })
    const byId = new Map(Object.entries(ids).map(([k, v]) => [v, k]))
    const scan = async (fields: Partial<CommandScan>, now = 0): Promise<string[]> =>
      (await scanEvery(store, { order: 'ASC', ...fields }, now)).map((r) => byId.get(r.id) as string)
    const dev = async (fields: Partial<CommandScan>, now = 0): Promise<string[]> => await scan({ deviceId: 'dev', ...fields }, now)

    t.strictSame(await scan({}), ['t10', 'l15', 't20', 'o20', 't30', 't40', 't50'], 'every device, by time; a command whose device is gone never')
    t.strictSame(await dev({}), ['t10', 't20', 't30', 't40', 't50'], 'one device')
    t.strictSame(await dev({}, 100), ['t10', 't20', 't30', 't40'], 'hides commands expired at now')
    t.strictSame(await dev({}, 99), ['t10', 't20', 't30', 't40', 't50'])
    t.strictSame(await dev({ after: 20 }), ['t30', 't40', 't50'], 'after is exclusive')
    t.strictSame(await dev({ before: 30 }), ['t10', 't20'], 'before is exclusive')
    t.strictSame(await dev({ after: 10, before: 40 }), ['t20', 't30'])
    t.strictSame(await dev({ after: 20, before: 20 }), [], 'an empty window')
    t.strictSame(await dev({ order: 'DESC' }), ['t50', 't40', 't30', 't20', 't10'], 'descending')
    t.strictSame(await dev({ order: 'DESC', after: 10, before: 50 }), ['t40', 't30', 't20'], 'descending within a window')
    t.strictSame(await dev({ command: 'go' }), ['t10', 't20', 't40', 't50'], 'command')
    t.strictSame(await dev({ command: 'Go' }), [], 'command is case-sensitive')
    t.strictSame(await dev({ names: ['stop'] }), ['t30'], 'names')
    t.strictSame(await dev({ names: ['stop', 'go'], command: 'go' }), ['t10', 't20', 't40', 't50'], 'names and command both apply')
    t.strictSame(await dev({ names: [] }), [], 'an empty names list matches nothing')
    t.strictSame(await dev({ status: 'done' }), ['t20', 't30', 't50'], 'status')
    t.strictSame(await dev({ status: '' }), [], 'a status filter never matches a null status')
    t.strictSame(await dev({ updatedAfter: 20 }), ['t20', 't30'], 'updatedAfter: updated, lastUpdated after it')
    t.strictSame(await dev({ updatedAfter: 25 }), ['t30'], 'updatedAfter is exclusive')
    t.strictSame(await scan({ networkIds: [1] }), ['t10', 't20', 't30', 't40', 't50'], 'networkIds read the device')
    t.strictSame(await scan({ networkIds: [2, 1], names: ['go'] }), ['t10', 't20', 'o20', 't40', 't50'])
    t.strictSame(await scan({ networkIds: [] }), [], 'an empty list matches nothing')
    t.strictSame(await scan({ deviceTypeIds: [20] }), ['o20'], 'deviceTypeIds')
    t.strictSame(await scan({ networkIds: [1, 2], deviceTypeIds: [10] }), ['t10', 't20', 't30', 't40', 't50'])
    t.strictSame(await scan({ names: ['stop'] }), ['l15', 't30'], 'a device in no network passes when no network is asked for')
    t.strictSame(await scan({ networkIds: [1, 2], names: ['stop'] }), ['t30'], 'and never matches networkIds')
    t.strictSame(await dev({ after: 10, before: 50, command: 'go', status: 'done' }), ['t20'], 'every filter')
    t.strictSame(await scan({ deviceId: 'nobody' }), [], 'an unknown device has no commands')
    t.strictSame(await scan({ deviceId: 'never-saved' }), [], 'nor does one whose device is gone')

    // The device moves: the stored copy of its network does not count, where it is now does.
    await store.saveDevice(device({ id: 'dev', networkId: 2, deviceTypeId: 20 }))
    t.strictSame(await scan({ networkIds: [1] }), [], 'moved out of network 1')
    t.strictSame(await scan({ networkIds: [2], deviceTypeIds: [20], names: ['stop'] }), ['t30'], 'moved into network 2')
    t.strictSame((await store.getCommand(ids.t30 as number, 0))?.networkId, null, 'the command keeps what it was stored with')
    await store.deleteDevice('dev')
    t.strictSame(await scan({}), ['l15', 'o20'], 'a deleted device\'s commands are invisible before they are deleted')
  })

  test('scanCommands looks at no more than examine, returns no more than take, and says where to go on', async (t, store) => {
    await store.saveDevice(device({ id: 'p', networkId: 1 }))
    await store.saveDevice(device({ id: 'q', networkId: 2 }))
    // Timestamps with ties, unrelated to ids; some expired; a filter that rejects most rows.
    const now = 100
    const records = Array.from({ length: 300 }, (_, i) => command({
      deviceId: i % 4 === 0 ? 'q' : 'p',
      command: i % 5 === 0 ? 'x' : 'y',
      timestamp: (i * 7) % 50,
      expiresAt: i % 11 === 0 ? 50 : null
    }))
    // One batch: its ids are in batch order.
    const { ids } = await store.commit(batch({ inserts: records }), 0)
    const stored: CommandRecord[] = records.map((record, i) => ({ id: idOf(ids[i]), ...record }))
    const visible = (deviceId?: string): CommandRecord[] => stored
      .filter((r) => (r.expiresAt === null || r.expiresAt > now) && (deviceId === undefined || r.deviceId === deviceId))
      .sort((x, y) => x.timestamp - y.timestamp || x.id - y.id)

    for (const deviceId of [undefined, 'p']) {
      for (const order of ['ASC', 'DESC'] as const) {
        const expected = order === 'ASC' ? visible(deviceId) : visible(deviceId).reverse()
        const label = `${deviceId ?? 'all'} ${order}`
        for (const [examine, take] of [[1, 1], [7, 3], [7, 100], [64, 5], [1000, 1000]] as const) {
          const got: CommandRecord[] = []
          let cursor
          let steps = 0
          for (;;) {
            const page = await store.scanCommands({ deviceId, order, cursor, examine, take }, now)
            t.ok(page.rows.length <= take, `${label} (${examine}, ${take}): no more than take`)
            got.push(...page.rows)
            steps++
            if (page.next === undefined) break
            cursor = page.next
          }
          t.strictSame(got.map((r) => r.id), expected.map((r) => r.id), `${label}, examine ${examine}, take ${take}: every visible command once, in order`)
          const scope = deviceId === undefined ? stored.length : stored.filter((r) => r.deviceId === deviceId).length
          t.ok(steps <= Math.ceil(scope / Math.min(examine, take)) + 1, `${label}: ${steps} steps`)
        }
      }
    }

    // A filter that matches one command in three hundred: each step still looks at no more than examine.
    const rare = stored.filter((r) => r.deviceId === 'q' && r.command === 'x' && r.expiresAt === null)
      .sort((x, y) => x.timestamp - y.timestamp || x.id - y.id)
    let cursor
    const found: number[] = []
    let steps = 0
    do {
      const page = await store.scanCommands({ order: 'ASC', networkIds: [2], names: ['x'], cursor, examine: 10, take: 10 }, now)
      found.push(...page.rows.map((r) => r.id))
      cursor = page.next
      steps++
    } while (cursor !== undefined)
    t.strictSame(found, rare.map((r) => r.id), 'a rare match is found across many steps')
    t.ok(steps >= 30, `looking at 10 per step takes ${steps} steps over 300 commands`)

    const first = await store.scanCommands({ order: 'ASC', examine: 1000, take: 3 }, now)
    t.strictSame(first.rows.map((r) => r.id), visible().slice(0, 3).map((r) => r.id), 'take stops a step early')
    t.strictSame(first.next, { timestamp: first.rows[2]?.timestamp, id: first.rows[2]?.id }, 'and next is the last row returned')
    const after = await store.scanCommands({ order: 'ASC', cursor: { timestamp: 20, id: 0 }, examine: 1000, take: 1000 }, now)
    t.strictSame(after.rows.map((r) => r.id), visible().filter((r) => r.timestamp >= 20).map((r) => r.id), 'a cursor is exclusive')
  })

  test('sortCommands sorts a window by command or status, in code point order', async (t, store) => {
    await store.saveDevice(device({ id: 'dev' }))
    // Strings chosen so that UTF-16 order (JS `<`) and code point order disagree:
    // '\uffff' sorts before '😀' (U+1F600) by code point, after it by UTF-16 unit.
    const rows: Array<Pick<NewCommandRecord, 'command' | 'status' | 'timestamp'>> = [
      { command: 'b', status: 'x', timestamp: 30 },
      { command: 'a', status: null, timestamp: 20 },
      { command: 'é', status: 'é', timestamp: 10 },
      { command: '日本', status: '😀b', timestamp: 10 },
      { command: '😀', status: '\uffff', timestamp: 40 },
      { command: '\uffff', status: '😀a', timestamp: 5 },
      { command: 'ab', status: 'x', timestamp: 30 },
      { command: 'a', status: 'x', timestamp: 20 },
      { command: 'B', status: null, timestamp: 25 },
      { command: 'b', status: 'x', timestamp: 30 },
      { command: '😀', status: '😀a', timestamp: 1 },
      { command: 'z', status: '', timestamp: 20 },
      { command: '😀!', status: '日本', timestamp: 20 },
      { command: 'a', status: 'x', timestamp: 15 }
    ]
    const stored: CommandRecord[] = []
    for (const row of rows) {
      const record = command({ deviceId: 'dev', ...row })
      stored.push({ id: await insert(store, record), ...record })
    }
    await insert(store, command({ deviceId: 'other', command: 'a' }))
    const base: SortQuery = { deviceId: 'dev', sortField: 'command', sortOrder: 'ASC', take: 100, skip: 0 }
    const sorted = async (query: Partial<SortQuery>, maxWindow = 100): Promise<CommandRecord[]> =>
      (await store.sortCommands({ ...base, ...query }, 0, maxWindow)) ?? []

    t.strictSame((await sorted({})).map((r) => r.command),
      ['B', 'a', 'a', 'a', 'ab', 'b', 'b', 'z', 'é', '日本', '\uffff', '😀', '😀', '😀!'], 'commands in code point order')
    t.strictSame((await sorted({ sortField: 'status' })).map((r) => r.status),
      [null, null, '', 'x', 'x', 'x', 'x', 'x', 'é', '日本', '\uffff', '😀a', '😀a', '😀b'], 'statuses in code point order, nulls first')
    t.strictSame((await sorted({ sortField: 'status', sortOrder: 'DESC' })).map((r) => r.status),
      ['😀b', '😀a', '😀a', '\uffff', '日本', 'é', 'x', 'x', 'x', 'x', 'x', '', null, null], 'descending statuses, nulls last')

    for (const sortField of ['command', 'status'] as const) {
      for (const sortOrder of ['ASC', 'DESC'] as const) {
        const sign = sortOrder === 'ASC' ? 1 : -1
        const expected = [...stored]
          .sort((x, y) => sign * (order(x[sortField], y[sortField]) || x.timestamp - y.timestamp || x.id - y.id))
          .map((r) => r.id)
        t.strictSame((await sorted({ sortField, sortOrder })).map((r) => r.id), expected, `${sortField} ${sortOrder}, ties by timestamp then id in the same direction`)
        const paged: number[] = []
        for (let skip = 0; skip < stored.length; skip += 4) paged.push(...(await sorted({ sortField, sortOrder, take: 4, skip })).map((r) => r.id))
        t.strictSame(paged, expected, `${sortField} ${sortOrder} in pages of 4`)
        t.strictSame((await sorted({ sortField, sortOrder, command: 'a' })).map((r) => r.id),
          expected.filter((id) => stored.find((r) => r.id === id)?.command === 'a'), `${sortField} ${sortOrder} with a filter`)
        t.strictSame((await sorted({ sortField, sortOrder, names: ['a', 'b'], status: 'x' })).map((r) => r.id),
          expected.filter((id) => { const r = stored.find((s) => s.id === id) as CommandRecord; return (r.command === 'a' || r.command === 'b') && r.status === 'x' }),
          `${sortField} ${sortOrder} with names and status`)
        t.strictSame((await sorted({ sortField, sortOrder, start: 10, end: 30 })).map((r) => r.id),
          expected.filter((id) => { const r = stored.find((s) => s.id === id) as CommandRecord; return r.timestamp > 10 && r.timestamp < 30 }),
          `${sortField} ${sortOrder} within a window`)
      }
    }
    t.equal((await store.sortCommands(base, 0, 14))?.length, 14, 'a window of exactly maxWindow is sorted')
    t.equal(await store.sortCommands(base, 0, 13), undefined, 'a larger one is refused')
    t.equal((await store.sortCommands({ ...base, start: 1, end: 30 }, 0, 9))?.length, 9, 'the window is start..end')
    t.strictSame(await store.sortCommands({ ...base, deviceId: 'nobody' }, 0, 1), [], 'an unknown device has none')
    const expiring = await insert(store, command({ deviceId: 'dev', command: 'a', timestamp: 3, expiresAt: 50 }))
    t.ok((await sorted({})).some((r) => r.id === expiring))
    t.notOk((await store.sortCommands(base, 50, 100))?.some((r) => r.id === expiring), 'an expired command is hidden')
    await store.deleteDevice('dev')
    t.strictSame(await store.sortCommands(base, 0, 100), [], 'a deleted device\'s commands are invisible')
  })

  test('countPending counts never-updated, unexpired commands, a bounded step at a time', async (t, store) => {
    t.equal(await countAll(store, 'dev', 0), 0, 'none for an unknown device')
    const a = await insert(store, command({ deviceId: 'dev', expiresAt: 100, timestamp: 5 }))
    await insert(store, command({ deviceId: 'dev', expiresAt: 200, timestamp: 5 }))
    const c = await insert(store, command({ deviceId: 'dev', expiresAt: null, timestamp: 1 }))
    await insert(store, command({ deviceId: 'dev', updated: true }))
    await insert(store, command({ deviceId: 'other' }))
    for (const examine of [1, 2, 3, 100]) {
      t.equal(await countAll(store, 'dev', 0, examine), 3, `examining ${examine} at a time`)
    }
    t.equal(await countAll(store, 'dev', 99), 3)
    t.equal(await countAll(store, 'dev', 100), 2, 'expired at now is not pending')
    t.equal(await countAll(store, 'dev', 200), 1)
    t.equal(await countAll(store, 'other', 0), 1)
    const step = await store.countPending('dev', 0, undefined, 2)
    t.strictSame(step, { count: 2, next: { timestamp: 5, id: a } }, 'the first step of two: c (t 1), then a (t 5)')
    await update(store, c, 'dev', {}, 5, 0)
    t.equal(await countAll(store, 'dev', 0), 2, 'an updated command is not pending')
    await store.expireCommands([a], 100)
    t.equal(await countAll(store, 'dev', 0), 1, 'an expired command is not pending')
    await store.deleteCommands('dev', 100)
    t.equal(await countAll(store, 'dev', 0), 0)
    t.equal(await countAll(store, 'other', 0), 1)
  })

  test('expiringCommands steps through ids, looking at no more than examine', async (t, store) => {
    const MAX = Number.MAX_SAFE_INTEGER
    const expiring: Array<[number, number]> = []
    // One batch: ids[n] is the id of the command numbered n + 1 below.
    const records = Array.from({ length: 20 }, (_, n) => {
      const i = n + 1
      return command({ deviceId: i % 2 === 0 ? 'a' : 'b', expiresAt: i % 3 === 0 ? null : 1000 - i })
    })
    const { ids } = await store.commit(batch({ inserts: records }), 0)
    for (const [n, record] of records.entries()) {
      if (record.expiresAt !== null) expiring.push([idOf(ids[n]), record.expiresAt])
    }
    const maxId = await store.lastCommandId()
    t.equal(maxId, ids[19], 'the last id of the batch')
    t.equal(expiring.length, 14)
    t.strictSame(await store.expiringCommands(0, MAX, 100), { entries: expiring, next: undefined }, 'every command with an expiry, in id order')
    t.strictSame(await store.expiringCommands(0, 0, 100), { entries: [], next: undefined }, 'nothing at or below id 0')
    const id = (i: number): number => (expiring[i] as [number, number])[0]
    t.strictSame(await expiringAll(store, id(2), MAX, 100), expiring.slice(3), 'afterId is exclusive')
    t.strictSame(await expiringAll(store, 0, id(4), 100), expiring.slice(0, 5), 'maxId is inclusive')
    t.strictSame(await expiringAll(store, id(1), id(4), 100), expiring.slice(2, 5))
    t.strictSame(await expiringAll(store, id(5), id(5), 10), [], 'an empty range')
    // The first three commands: two expire, the third (i = 3) does not; the step looked at three.
    const third = idOf(ids[2])
    t.strictSame(await store.expiringCommands(0, MAX, 3), { entries: expiring.slice(0, 2), next: third }, 'examine counts every command looked at')
    t.strictSame(await store.expiringCommands(id(1), MAX, 1), { entries: [], next: third }, 'a step may find none and go on')
    for (const examine of [1, 2, 5, 20]) {
      t.strictSame(await expiringAll(store, 0, maxId, examine), expiring, `steps of ${examine} cover every expiring command once`)
    }

    // Deleting between steps: the next continues after the previous one, without the deleted.
    const first = await store.expiringCommands(0, maxId, 6)
    t.strictSame(first.entries, expiring.slice(0, 4))
    t.equal((await store.expireCommands([id(4), id(5), id(1)], 1000)).length, 3)
    await store.deleteCommands('b', 100)
    const later = await insert(store, command({ deviceId: 'c', expiresAt: 5 }))
    const onA = new Set(ids.filter((_, n) => (n + 1) % 2 === 0))
    const remaining = expiring.filter(([i]) => i !== id(4) && i !== id(5) && i !== id(1) && onA.has(i))
    t.strictSame(await expiringAll(store, first.next as number, maxId, 4), remaining.filter(([i]) => i > (first.next as number)),
      'expired and deleted commands are skipped')
    t.strictSame(await expiringAll(store, 0, MAX, 2), [...remaining, [later, 5]], 'a later command is included when maxId allows')
  })

  test('deleteDevice removes the device; deleteCommands its commands, a bounded number at a time', async (t, store) => {
    await store.saveDevice(device({ id: 'dev' }))
    await store.saveDevice(device({ id: 'keep' }))
    const e1 = await insert(store, command({ deviceId: 'dev', timestamp: 30, expiresAt: 100 }))
    const n1 = await insert(store, command({ deviceId: 'dev', timestamp: 20, expiresAt: null }))
    const e2 = await insert(store, command({ deviceId: 'dev', timestamp: 10, expiresAt: 200, updated: true }))
    const e3 = await insert(store, command({ deviceId: 'dev', timestamp: 40, expiresAt: 50 }))
    const kept = await insert(store, command({ deviceId: 'keep', expiresAt: 100 }))

    t.equal(await store.deleteDevice('dev'), true, 'the device existed')
    t.equal(await store.getDevice('dev'), undefined)
    t.strictSame(await list(store, 'dev', 0), [], 'its commands are invisible to scans at once')
    t.strictSame((await scanEvery(store, { order: 'ASC' }, 0)).map((r) => r.id), [kept])
    t.strictSame(await store.sortCommands({ deviceId: 'dev', sortField: 'command', sortOrder: 'ASC', take: 10, skip: 0 }, 0, 10), [])
    t.equal(await store.deleteDevice('dev'), false, 'deleting again finds no device')

    t.equal(await store.deleteCommands('dev', 3), 3, 'at most limit commands go')
    t.equal(await store.deleteCommands('dev', 3), 1, 'then the rest')
    t.equal(await store.deleteCommands('dev', 3), 0, 'then none')
    for (const id of [e1, n1, e2, e3]) t.equal(await store.getCommand(id, 0), undefined, `command ${id} is deleted`)
    t.equal(await countAll(store, 'dev', 0), 0)
    t.strictSame(await expiringAll(store, 0, Number.MAX_SAFE_INTEGER, 100), [[kept, 100]])
    t.strictSame(await store.expireCommands([e1, e2, e3], 1000), [], 'nothing left to expire')
    t.equal(await update(store, n1, 'dev', { status: 'x' }, 1, 0), undefined)
    t.ok(await store.getDevice('keep'), 'other devices are kept')
    t.equal((await store.getCommand(kept, 0))?.id, kept)

    const orphan = await insert(store, command({ deviceId: 'orphan', expiresAt: 7 }))
    t.equal(await store.deleteCommands('orphan', 10), 1, 'commands go even without a device record')
    t.equal(await store.getCommand(orphan, 0), undefined)

    await store.saveDevice(device({ id: 'dev' }))
    const fresh = await insert(store, command({ deviceId: 'dev' }))
    t.strictSame((await list(store, 'dev', 0)).map((r) => r.id), [fresh], 'the device id can be reused')
  })

  test('close is idempotent and the store is unusable afterwards', async (t, store) => {
    await insert(store, command())
    await store.close()
    await t.resolves(async () => { await store.close() }, 'closing twice is harmless')
    const calls: Array<[keyof Store, () => unknown]> = [
      ['getDevice', () => store.getDevice('dev')],
      ['saveDevice', () => store.saveDevice(device({ id: 'dev' }))],
      ['deleteDevice', () => store.deleteDevice('dev')],
      ['deleteCommands', () => store.deleteCommands('dev', 1)],
      ['commit', () => store.commit(batch({ inserts: [command()] }), 0)],
      ['commit', () => store.commit(batch({ updates: [{ id: 1, deviceId: 'dev', patch: {}, lastUpdated: 0 }] }), 0)],
      ['commit', () => store.commit(batch(), 0)],
      ['getCommand', () => store.getCommand(1, 0)],
      ['expireCommands', () => store.expireCommands([1], 0)],
      ['scanCommands', () => store.scanCommands({ order: 'ASC', examine: 1, take: 1 }, 0)],
      ['sortCommands', () => store.sortCommands({ deviceId: 'dev', sortField: 'command', sortOrder: 'ASC', take: 1, skip: 0 }, 0, 1)],
      ['countPending', () => store.countPending('dev', 0, undefined, 1)],
      ['expiringCommands', () => store.expiringCommands(0, 1, 1)],
      ['lastCommandId', () => store.lastCommandId()]
    ]
    for (const [method, call] of calls) {
      // Thrown at once or rejected: either is a failure of the call.
      const caught = await failure(call)
      t.ok(caught instanceof BrokerError, `${method} fails with a BrokerError after close`)
      t.equal((caught as BrokerError | undefined)?.code, 'ERR_CLOSED', `${method}: ERR_CLOSED`)
    }
  })
}

/** A device with defaults. */
export function device (fields: Partial<DeviceRecord> & Pick<DeviceRecord, 'id'>): DeviceRecord {
  return { name: 'device', data: null, networkId: null, deviceTypeId: null, isBlocked: false, ...fields }
}

/** A command with defaults: device 'dev', never expires, never updated. */
export function command (fields: Partial<NewCommandRecord> = {}): NewCommandRecord {
  return {
    command: 'cmd',
    timestamp: 1000,
    lastUpdated: 1000,
    userId: null,
    deviceId: 'dev',
    networkId: null,
    deviceTypeId: null,
    parameters: null,
    lifetime: null,
    status: null,
    result: null,
    expiresAt: null,
    updated: false,
    ...fields
  }
}

/** A write batch: no inserts, no updates and no maxPending limit unless given. */
export function batch (fields: Partial<WriteBatch> = {}): WriteBatch {
  return { inserts: [], updates: [], maxPending: Infinity, ...fields }
}

/** Inserts one command, in a commit of its own at `now`, and returns its id. */
export async function insert (store: Store, record: NewCommandRecord, now = 0): Promise<number> {
  return idOf((await store.commit(batch({ inserts: [record] }), now)).ids[0])
}

/** Updates one command, in a commit of its own at `now`; returns it as it was, or undefined. */
export async function update (store: Store, id: number, deviceId: string, patch: CommandPatch, lastUpdated: number, now: number): Promise<CommandRecord | undefined> {
  return (await store.commit(batch({ updates: [{ id, deviceId, patch, lastUpdated }] }), now)).before[0]
}

// Every command a scan finds, following its steps to the end.
async function scanEvery (store: Store, scan: Omit<CommandScan, 'examine' | 'take'>, now: number): Promise<CommandRecord[]> {
  const rows: CommandRecord[] = []
  let cursor = scan.cursor
  for (;;) {
    const page = await store.scanCommands({ examine: 3, take: 2, ...scan, cursor }, now)
    rows.push(...page.rows)
    if (page.next === undefined) return rows
    cursor = page.next
  }
}

// An id given for an insert that must not be refused (no maxPending).
function idOf (id: number | undefined): number {
  if (id === undefined) throw new Error('the store refused an insert without a maxPending limit')
  return id
}

function isId (id: number | undefined): id is number {
  return Number.isSafeInteger(id) && (id as number) > 0
}

function increasing (ids: ReadonlyArray<number | undefined>): boolean {
  return ids.every((id, i) => i === 0 || (id as number) > (ids[i - 1] as number))
}

// What a call threw or rejected with, or undefined if it answered.
async function failure (call: () => unknown): Promise<unknown> {
  try {
    await call()
  } catch (err) {
    return err
  }
  return undefined
}

// Every command of a device by time.
async function list (store: Store, deviceId: string, now: number): Promise<CommandRecord[]> {
  return await scanEvery(store, { deviceId, order: 'ASC' }, now)
}

// A device's whole pending count, `examine` commands a step.
async function countAll (store: Store, deviceId: string, now: number, examine = 2): Promise<number> {
  let count = 0
  let cursor
  for (;;) {
    const page = await store.countPending(deviceId, now, cursor, examine)
    count += page.count
    if (page.next === undefined) return count
    cursor = page.next
  }
}

// Every expiring command in (afterId, maxId], `examine` a step.
async function expiringAll (store: Store, afterId: number, maxId: number, examine: number): Promise<Array<[number, number]>> {
  const entries: Array<[number, number]> = []
  let from = afterId
  for (;;) {
    const page = await store.expiringCommands(from, maxId, examine)
    entries.push(...page.entries)
    if (page.next === undefined) return entries
    from = page.next
  }
}

// The order SQLite gives text: nulls first, then UTF-8 bytes, which is code point order.
function order (a: string | null, b: string | null): number {
  if (a === null || b === null) return a === b ? 0 : a === null ? -1 : 1
  return Buffer.compare(Buffer.from(a), Buffer.from(b))
}

interface Seeded {
  devices: string[]
  ids: number[]
  pending: number
  expiring: number
  other: number
}

// Devices 'keep' (with commands), 'doomed' (three commands), 'other' and an 'orphan'
// command whose device was never saved.
async function seed (store: Store): Promise<Seeded> {
  await store.saveDevice(device({ id: 'keep', name: 'v1', data: '{"v":1}', networkId: 1 }))
  await store.saveDevice(device({ id: 'doomed' }))
  await store.saveDevice(device({ id: 'other' }))
  const pending = await insert(store, command({ deviceId: 'keep', timestamp: 10, status: 'new' }))
  const expiring = await insert(store, command({ deviceId: 'keep', timestamp: 20, expiresAt: 500 }))
  const doomedA = await insert(store, command({ deviceId: 'doomed', timestamp: 5, expiresAt: 600 }))
  const doomedB = await insert(store, command({ deviceId: 'doomed', timestamp: 30, expiresAt: 700, updated: true }))
  const doomedC = await insert(store, command({ deviceId: 'doomed', timestamp: 30 }))
  const other = await insert(store, command({ deviceId: 'other', timestamp: 15, expiresAt: 400 }))
  const orphan = await insert(store, command({ deviceId: 'orphan', timestamp: 25, expiresAt: 800 }))
  return {
    devices: ['keep', 'doomed', 'other', 'orphan', 'new'],
    ids: [pending, expiring, doomedA, doomedB, doomedC, other, orphan],
    pending,
    expiring,
    other
  }
}

interface Snapshot {
  devices: Array<DeviceRecord | null>
  commands: Array<CommandRecord | null>
  lists: CommandRecord[][]
  pending: number[]
  history: CommandRecord[]
  expiring: Array<[number, number]>
}

// Everything a reader can observe about the seeded data.
async function snapshot (store: Store, seeded: Seeded): Promise<Snapshot> {
  const shot: Snapshot = { devices: [], commands: [], lists: [], pending: [], history: [], expiring: [] }
  for (const id of seeded.devices) {
    shot.devices.push((await store.getDevice(id)) ?? null)
    shot.lists.push(await list(store, id, 0))
    shot.pending.push(await countAll(store, id, 0))
  }
  for (const id of seeded.ids) shot.commands.push((await store.getCommand(id, 0)) ?? null)
  shot.history = await scanEvery(store, { order: 'ASC' }, 0)
  shot.expiring = await expiringAll(store, 0, Number.MAX_SAFE_INTEGER, 1000)
  return shot
}
