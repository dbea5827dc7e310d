import t, { type Test } from 'tap'
import { LocalBus } from '../../lib/bus/bus.js'
import { BrokerError } from '../../lib/errors.js'
import { guardStore } from '../../lib/store/guarded.js'
import { memoryStore } from '../../lib/store/memory.js'
import type { CommandRecord, SharedSpace, Store } from '../../lib/store/store.js'
import { batch, command, device } from '../fixtures/store-suite.js'
import { overridable } from '../fixtures/broker.js'

const METHODS: Array<keyof Store> = [
  'getDevice', 'saveDevice', 'deleteDevice', 'deleteCommands', 'commit', 'getCommand', 'expireCommands', 'scanCommands',
  'sortCommands', 'countPending', 'expiringCommands', 'lastCommandId', 'close'
]

const bus = new LocalBus()
const record: CommandRecord = { id: 1, ...command({ expiresAt: 5 }) }

// A store whose every method answers what `answer` gives (and so throws what it throws), with
// a shared space whose claimExpired does the same when `shared`.
function made (answer: () => unknown, shared = false): Store {
  const store: Record<string, unknown> = {}
  for (const name of METHODS) store[name] = answer
  if (shared) store.shared = { bus, claimExpired: answer }
  return store as unknown as Store
}

// A store whose every method answers undefined, with `shared` as given.
function sharing (shared: unknown): Store {
  return { ...made(() => undefined), shared } as unknown as Store
}

// A store whose every method throws `error`.
function failing (error: unknown, shared = false): Store {
  return made(() => { throw error }, shared)
}

// A store whose every method answers with a promise that rejects with `error`.
function rejecting (error: unknown, shared = false): Store {
  return made(async () => { throw error }, shared)
}

// Every method of `store`, and claimExpired if it is shared, called with plausible arguments.
function calls (store: Store): Array<[string, () => unknown]> {
  const list: Array<[string, () => unknown]> = [
    ['getDevice', () => store.getDevice('d')],
    ['saveDevice', () => store.saveDevice(device({ id: 'd' }))],
    ['deleteDevice', () => store.deleteDevice('d')],
    ['deleteCommands', () => store.deleteCommands('d', 1)],
    ['commit', () => store.commit(batch({ inserts: [command()] }), 0)],
    ['getCommand', () => store.getCommand(1, 0)],
    ['expireCommands', () => store.expireCommands([1], 0)],
    ['scanCommands', () => store.scanCommands({ order: 'ASC', examine: 1, take: 1 }, 0)],
    ['sortCommands', () => store.sortCommands({ deviceId: 'd', sortField: 'command', sortOrder: 'ASC', take: 1, skip: 0 }, 0, 1)],
    ['countPending', () => store.countPending('d', 0, undefined, 1)],
    ['expiringCommands', () => store.expiringCommands(0, 1, 1)],
    ['lastCommandId', () => store.lastCommandId()],
    ['close', () => store.close()]
  ]
  const { shared } = store
  if (shared !== undefined) list.push(['shared.claimExpired', () => shared.claimExpired(0, 1)])
  return list
}

function caught (fn: () => unknown): unknown {
  try {
    fn()
  } catch (err) {
    return err
  }
  return undefined
}

// What the promise `answer` rejected with; a failure if it is not a promise or resolves.
async function rejection (t: Test, answer: unknown, label: string): Promise<unknown> {
  if (!(answer instanceof Promise)) {
    t.fail(`${label}: a promise`)
    return undefined
  }
  try {
    await answer
  } catch (err) {
    return err
  }
  t.fail(`${label}: rejects`)
  return undefined
}

function isStoreError (t: Test, err: unknown, thrown: unknown, label: string): void {
  t.ok(err instanceof BrokerError, `${label}: BrokerError`)
  t.equal((err as BrokerError | undefined)?.code, 'ERR_STORE', `${label}: ERR_STORE`)
  t.equal((err as BrokerError | undefined)?.cause, thrown, `${label}: the original is the cause`)
  t.ok(err instanceof Error && 'cause' in err, `${label}: cause is set even when it is ${String(thrown)}`)
  t.equal((err as BrokerError | undefined)?.message,
    `store failed: ${thrown instanceof Error ? thrown.message : String(thrown)}`, `${label}: message`)
}

t.test('guarded-store: results pass through, a synchronous answer synchronously', async (t) => {
  const inner = memoryStore()
  const store = guardStore(inner)
  t.not(store, inner, 'a new object')
  t.equal(store.shared, undefined, 'an unshared store stays unshared')
  const answers: unknown[] = []
  const sync = <T>(answer: T): T => {
    answers.push(answer)
    return answer
  }
  t.equal(sync(store.saveDevice(device({ id: 'dev' }))), undefined)
  t.strictSame(sync(store.getDevice('dev')), device({ id: 'dev' }))
  const committed = sync(store.commit(batch({ inserts: [command({ deviceId: 'dev', expiresAt: 10 })] }), 0))
  t.strictSame(committed, { ids: [1], before: [] })
  const id = 1
  t.equal(inner.getCommand(id, 0)?.id, id, 'calls reach the wrapped store')
  t.equal((await sync(store.getCommand(id, 0)))?.id, id)
  const updated = sync(store.commit(batch({ updates: [{ id, deviceId: 'dev', patch: { status: 'x' }, lastUpdated: 2 }] }), 0))
  t.equal((await updated).before[0]?.status, null)
  t.equal((await sync(store.scanCommands({ deviceId: 'dev', order: 'ASC', examine: 5, take: 5 }, 0))).rows[0]?.status, 'x')
  t.equal((await sync(store.sortCommands({ deviceId: 'dev', sortField: 'status', sortOrder: 'ASC', take: 5, skip: 0 }, 0, 5)))?.[0]?.status, 'x')
  t.strictSame(sync(store.countPending('dev', 0, undefined, 5)), { count: 0, next: undefined })
  t.strictSame(sync(store.expiringCommands(0, 10, 10)), { entries: [[id, 10]], next: undefined })
  t.equal(sync(store.lastCommandId()), id)
  t.equal((await sync(store.expireCommands([id], 10))).length, 1)
  t.equal(sync(store.deleteDevice('dev')), true)
  t.equal(sync(store.deleteCommands('dev', 5)), 0)
  t.equal(sync(store.close()), undefined)
  t.equal(answers.length, 14, 'every method was called')
  t.equal(answers.filter((answer) => answer instanceof Promise).length, 0, 'no answer of a synchronous store became a promise')
  t.equal((caught(() => inner.lastCommandId()) as BrokerError | undefined)?.code, 'ERR_CLOSED', 'close reaches the wrapped store')
})

t.test('guarded-store: a promise passes through as a promise of the same value', async (t) => {
  const value = { marker: 'answer' }
  const store = guardStore(made(async () => value, true))
  for (const [name, call] of calls(store)) {
    const answer = call()
    t.ok(answer instanceof Promise, `${name}: a promise`)
    t.equal(await answer, value, `${name}: resolves to what the store resolved to`)
  }
})

t.test('guarded-store: arguments and this are passed on', async (t) => {
  const seen: Array<[string, unknown[], unknown]> = []
  const inner: Record<string, unknown> = { marker: 'inner' }
  for (const name of METHODS) {
    inner[name] = function (this: Record<string, unknown>, ...args: unknown[]) {
      seen.push([name, args, this])
      return this.marker
    }
  }
  const space = {
    bus,
    marker: 'space',
    claimExpired (this: Record<string, unknown>, ...args: unknown[]) {
      seen.push(['claimExpired', args, this])
      return this.marker
    }
  }
  inner.shared = space
  const store = guardStore(inner as unknown as Store)
  const scan = { names: ['a'], order: 'ASC' as const, examine: 2, take: 3 }
  t.equal(store.scanCommands(scan, 4) as unknown, 'inner', 'called on the wrapped store')
  t.strictSame(seen, [['scanCommands', [scan, 4], inner]])
  t.equal(seen[0]?.[1][0], scan, 'the same object')
  const writes = batch({ inserts: [command()] })
  t.equal(store.commit(writes, 7) as unknown, 'inner')
  t.equal(seen[1]?.[1][0], writes, 'commit gets the batch itself')
  t.equal(seen[1]?.[1][1], 7, 'and now')
  t.equal(store.shared?.claimExpired(9, 3) as unknown, 'space', 'claimExpired is called on the shared space')
  t.strictSame(seen[2], ['claimExpired', [9, 3], space])
})

t.test('guarded-store: shared is passed through, its bus as it is and claimExpired guarded', async (t) => {
  const claimed = [record]
  const space: SharedSpace = { bus, claimExpired: () => claimed }
  const store = guardStore(sharing(space))
  t.ok(store.shared, 'a shared store stays shared')
  t.equal(store.shared?.bus, bus, 'the same bus')
  t.equal(store.shared?.claimExpired(0, 1), claimed, 'claimExpired answers what the store answers, synchronously')
  const inner = new Error('connection lost')
  const throwing = guardStore(sharing({ bus, claimExpired: () => { throw inner } }))
  isStoreError(t, caught(() => throwing.shared?.claimExpired(0, 1)), inner, 'claimExpired throwing')
  const rejected = guardStore(sharing({ bus, claimExpired: async () => { throw inner } }))
  isStoreError(t, await rejection(t, rejected.shared?.claimExpired(0, 1), 'claimExpired'), inner, 'claimExpired rejecting')
})

t.test('guarded-store: whatever a method throws becomes ERR_STORE with cause, thrown at once', async (t) => {
  for (const thrown of [new Error('disk I/O error'), new TypeError('bad'), 'a string', 42, undefined, null]) {
    const store = guardStore(failing(thrown, true))
    const list = calls(store)
    t.equal(list.length, METHODS.length + 1)
    for (const [name, call] of list) isStoreError(t, caught(call), thrown, `${name} throwing ${String(thrown)}`)
  }
})

t.test('guarded-store: whatever a promise rejects with becomes a rejection with ERR_STORE and cause', async (t) => {
  for (const thrown of [new Error('connection terminated'), new TypeError('bad'), 'a string', 42, undefined, null]) {
    const store = guardStore(rejecting(thrown, true))
    const list = calls(store)
    t.equal(list.length, METHODS.length + 1)
    for (const [name, call] of list) {
      const label = `${name} rejecting with ${String(thrown)}`
      let answer: unknown
      t.doesNotThrow(() => { answer = call() }, `${label}: does not throw`)
      isStoreError(t, await rejection(t, answer, label), thrown, label)
    }
  }
})

t.test('guarded-store: other BrokerErrors are wrapped too', async (t) => {
  const inner = memoryStore()
  inner.close()
  const err = caught(() => guardStore(inner).lastCommandId())
  t.ok(err instanceof BrokerError)
  t.equal((err as BrokerError).code, 'ERR_STORE', 'ERR_CLOSED from the store is a store failure')
  t.equal(((err as BrokerError).cause as BrokerError).code, 'ERR_CLOSED')
  const closed = new BrokerError('ERR_CLOSED', 'pool closed')
  const rejected = await rejection(t, guardStore(rejecting(closed)).lastCommandId(), 'a rejected ERR_CLOSED')
  t.equal((rejected as BrokerError).code, 'ERR_STORE', 'rejected with ERR_CLOSED: a store failure too')
  t.equal((rejected as BrokerError).cause, closed)
})

t.test('guarded-store: does not double-wrap', async (t) => {
  const original = new Error('inner failure')
  const twice = guardStore(guardStore(failing(original, true)))
  for (const [name, call] of calls(twice)) {
    const err = caught(call) as BrokerError
    t.equal(err.code, 'ERR_STORE', `${name}: ERR_STORE`)
    t.equal(err.cause, original, `${name} thrown through two guards: the cause is the original error, not another ERR_STORE`)
    t.equal(err.message, 'store failed: inner failure', `${name}: wrapped once`)
  }
  const twiceAsync = guardStore(guardStore(rejecting(original, true)))
  for (const [name, call] of calls(twiceAsync)) {
    const err = await rejection(t, call(), name) as BrokerError
    t.equal(err.code, 'ERR_STORE', `${name}: ERR_STORE`)
    t.equal(err.cause, original, `${name} rejected through two guards: the cause is the original error`)
  }

  const already = new BrokerError('ERR_STORE', 'already wrapped', { cause: original })
  t.equal(caught(() => guardStore(failing(already)).lastCommandId()), already, 'a thrown ERR_STORE error is rethrown as is')
  t.equal(await rejection(t, guardStore(rejecting(already)).lastCommandId(), 'ERR_STORE'), already, 'a rejected one is passed on as is')
})

t.test('guarded-store: rejects an object lacking a method', async (t) => {
  for (const missing of METHODS) {
    const partial: Record<string, unknown> = { ...memoryStore() }
    for (const name of METHODS) partial[name] = () => undefined
    delete partial[missing]
    t.throws(() => guardStore(partial as unknown as Store), TypeError, `without ${missing}`)
    t.throws(() => guardStore(partial as unknown as Store), { message: new RegExp(`store\\.${missing} is undefined`) })
    partial[missing] = 'not a function'
    t.throws(() => guardStore(partial as unknown as Store), { name: 'TypeError', message: new RegExp(`store\\.${missing} is string`) })
  }
  for (const bad of [null, undefined, 42, 'store', {}]) {
    t.throws(() => guardStore(bad as unknown as Store), TypeError, `${String(bad)} is not a store`)
  }
})

t.test('guarded-store: rejects a shared that is not a SharedSpace', async (t) => {
  const message = 'createBroker: store.shared must be undefined or a SharedSpace with claimExpired() and bus.subscribe()'
  const claimExpired = (): CommandRecord[] => []
  const bad: Array<[string, unknown]> = [
    ['null', null],
    ['a number', 42],
    ['an empty object', {}],
    ['without claimExpired', { bus }],
    ['claimExpired not a function', { bus, claimExpired: 'soon' }],
    ['without a bus', { claimExpired }],
    ['a null bus', { bus: null, claimExpired }],
    ['a bus without subscribe', { bus: {}, claimExpired }],
    ['subscribe not a function', { bus: { subscribe: true }, claimExpired }]
  ]
  for (const [label, shared] of bad) {
    t.throws(() => guardStore(sharing(shared)), { name: 'TypeError', message }, `shared: ${label}`)
  }
  t.equal(guardStore(sharing(undefined)).shared, undefined, 'shared: undefined is not shared')
  t.ok(guardStore(sharing({ bus, claimExpired })).shared, 'a bus and claimExpired make a shared space')
})

t.test('guarded-store: size() is passed on when the store has one, guarded like the rest', async (t) => {
  const inner = memoryStore()
  t.equal(guardStore(inner).size, undefined, 'none when the store has none')
  const own = { ...overridable(inner), size (): number { return this === own ? 42 : -1 } }
  t.equal(guardStore(own).size?.(), 42, 'called on the store, not the guard')
  const failure = new Error('stat failed')
  const throwing = guardStore({ ...overridable(inner), size: () => { throw failure } })
  t.throws(() => throwing.size?.(), { code: 'ERR_STORE', cause: failure })
  const rejecting = guardStore({ ...overridable(inner), size: () => Promise.reject(failure) } as Store)
  await t.rejects(rejecting.size?.() as Promise<number>, { code: 'ERR_STORE', cause: failure })
})

t.test('guarded-store: behind() is passed on when the store has one, guarded like the rest', async (t) => {
  const inner = memoryStore()
  t.equal(guardStore(inner).behind, undefined, 'none when the store has none')
  const own = { ...overridable(inner), behind (): boolean { return this === own } }
  t.equal(guardStore(own).behind?.(), true, 'called on the store, not the guard')
  const failure = new Error('no answer')
  const throwing = guardStore({ ...overridable(inner), behind: () => { throw failure } })
  t.throws(() => throwing.behind?.(), { code: 'ERR_STORE', cause: failure })
})
