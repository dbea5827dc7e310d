import t from 'tap'
import { BrokerError } from '../../lib/errors.js'
import { guardStore } from '../../lib/store/guarded.js'
import { memoryStore } from '../../lib/store/memory.js'
import type { Store } from '../../lib/store/store.js'
import { command, device } from '../fixtures/store-suite.js'

const METHODS: Array<keyof Store> = [
  'transaction', 'getDevice', 'saveDevice', 'deleteDevice', 'deleteCommands', 'insertCommand', 'getCommand', 'updateCommand',
  'expireCommands', 'scanCommands', 'sortCommands', 'countPending', 'expiringCommands', 'lastCommandId', 'close'
]

// A store whose every method throws `error`.
function failing (error: unknown): Store {
  const store: Record<string, () => never> = {}
  for (const name of METHODS) store[name] = () => { throw error }
  return store as unknown as Store
}

function caught (fn: () => unknown): unknown {
  try {
    fn()
  } catch (err) {
    return err
  }
  return undefined
}

t.test('guarded-store: results pass through', async (t) => {
  const inner = memoryStore()
  const store = guardStore(inner)
  t.not(store, inner, 'a new object')
  store.saveDevice(device({ id: 'dev' }))
  t.strictSame(store.getDevice('dev'), device({ id: 'dev' }))
  const id = store.insertCommand(command({ deviceId: 'dev', expiresAt: 10 }))
  t.equal(inner.getCommand(id, 0)?.id, id, 'calls reach the wrapped store')
  t.equal(store.getCommand(id, 0)?.id, id)
  t.equal(store.updateCommand(id, 'dev', { status: 'x' }, 2, 0)?.status, null)
  t.equal(store.scanCommands({ deviceId: 'dev', order: 'ASC', examine: 5, take: 5 }, 0).rows[0]?.status, 'x')
  t.equal(store.sortCommands({ deviceId: 'dev', sortField: 'status', sortOrder: 'ASC', take: 5, skip: 0 }, 0, 5)?.[0]?.status, 'x')
  t.strictSame(store.countPending('dev', 0, undefined, 5), { count: 0, next: undefined })
  t.strictSame(store.expiringCommands(0, 10, 10), { entries: [[id, 10]], next: undefined })
  t.equal(store.lastCommandId(), id)
  t.equal(store.transaction(() => store.expireCommands([id], 10).length), 1)
  t.equal(store.deleteDevice('dev'), true)
  t.equal(store.deleteCommands('dev', 5), 0)
  t.equal(store.transaction(() => 'value'), 'value', 'transaction returns what fn returns')
  store.close()
  t.equal((caught(() => inner.lastCommandId()) as BrokerError | undefined)?.code, 'ERR_CLOSED', 'close reaches the wrapped store')
})

t.test('guarded-store: arguments and this are passed on', async (t) => {
  const calls: Array<[string, unknown[]]> = []
  const inner: Record<string, unknown> = { marker: 'inner' }
  for (const name of METHODS) {
    inner[name] = function (this: Record<string, unknown>, ...args: unknown[]) {
      calls.push([name, args])
      return this.marker
    }
  }
  const store = guardStore(inner as unknown as Store)
  const scan = { names: ['a'], order: 'ASC' as const, examine: 2, take: 3 }
  t.equal(store.scanCommands(scan, 4) as unknown, 'inner', 'called on the wrapped store')
  t.strictSame(calls, [['scanCommands', [scan, 4]]])
  t.equal(calls[0]?.[1][0], scan, 'the same object')
})

t.test('guarded-store: whatever a method throws becomes ERR_STORE with cause', async (t) => {
  for (const thrown of [new Error('disk I/O error'), new TypeError('bad'), 'a string', 42, undefined, null]) {
    const store = guardStore(failing(thrown))
    const calls: Array<[keyof Store, () => unknown]> = [
      ['transaction', () => store.transaction(() => 1)],
      ['getDevice', () => store.getDevice('d')],
      ['saveDevice', () => { store.saveDevice(device({ id: 'd' })) }],
      ['deleteDevice', () => store.deleteDevice('d')],
      ['deleteCommands', () => store.deleteCommands('d', 1)],
      ['insertCommand', () => store.insertCommand(command())],
      ['getCommand', () => store.getCommand(1, 0)],
      ['updateCommand', () => store.updateCommand(1, 'd', {}, 0, 0)],
      ['expireCommands', () => store.expireCommands([1], 0)],
      ['scanCommands', () => store.scanCommands({ order: 'ASC', examine: 1, take: 1 }, 0)],
      ['sortCommands', () => store.sortCommands({ deviceId: 'd', sortField: 'command', sortOrder: 'ASC', take: 1, skip: 0 }, 0, 1)],
      ['countPending', () => store.countPending('d', 0, undefined, 1)],
      ['expiringCommands', () => store.expiringCommands(0, 1, 1)],
      ['lastCommandId', () => store.lastCommandId()],
      ['close', () => { store.close() }]
    ]
    t.equal(calls.length, METHODS.length)
    for (const [name, call] of calls) {
      const err = caught(call)
      const label = `${name} throwing ${String(thrown)}`
      t.ok(err instanceof BrokerError, `${label}: BrokerError`)
      t.equal((err as BrokerError).code, 'ERR_STORE', `${label}: ERR_STORE`)
      t.equal((err as BrokerError).cause, thrown, `${label}: the original is the cause`)
      t.ok('cause' in (err as BrokerError), `${label}: cause is set even when it is ${String(thrown)}`)
      t.equal((err as BrokerError).message,
        `store failed: ${thrown instanceof Error ? thrown.message : String(thrown)}`, `${label}: message`)
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
})

t.test('guarded-store: does not double-wrap', async (t) => {
  const inner = guardStore(memoryStore())
  const store = guardStore(inner)
  const original = new Error('inner failure')
  const err = caught(() => store.transaction(() => inner.transaction(() => { throw original })))
  t.ok(err instanceof BrokerError)
  t.equal((err as BrokerError).code, 'ERR_STORE')
  t.equal((err as BrokerError).cause, original, 'the cause is the original error, not another ERR_STORE')

  const once = guardStore(failing(new Error('boom')))
  const nested = guardStore(memoryStore())
  const err2 = caught(() => nested.transaction(() => once.getDevice('d'))) as BrokerError
  t.equal(err2.code, 'ERR_STORE')
  t.equal(err2.message, 'store failed: boom', 'a store call failing inside a guarded transaction is wrapped once')
  t.notOk(err2.cause instanceof BrokerError, 'its cause is the original error')
  t.equal((err2.cause as Error).message, 'boom')

  const already = new BrokerError('ERR_STORE', 'already wrapped', { cause: original })
  const passed = caught(() => guardStore(failing(already)).lastCommandId())
  t.equal(passed, already, 'an ERR_STORE error is rethrown as is')
})

t.test('guarded-store: rolls back and reports a throw inside a transaction', async (t) => {
  const store = guardStore(memoryStore())
  const err = caught(() => store.transaction(() => {
    store.saveDevice(device({ id: 'dev' }))
    throw new RangeError('broker bug')
  })) as BrokerError
  t.equal(err.code, 'ERR_STORE')
  t.ok(err.cause instanceof RangeError)
  t.equal(store.getDevice('dev'), undefined, 'the write was rolled back')
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
