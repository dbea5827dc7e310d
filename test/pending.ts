import t from 'tap'
import { memoryStore } from '../lib/store/memory.js'
import { PendingCounts } from '../lib/pending.js'
import type { CommandRecord, Store, SyncStore } from '../lib/store/store.js'
import { insertOne, overridable, updateOne } from './fixtures/broker.js'
import { command } from './fixtures/store-suite.js'
import { laterStore } from './fixtures/later-store.js'

const turn = (): Promise<void> => new Promise(setImmediate)

// A store with `n` pending commands of device 'dev' at timestamps 1..n (and ids 1..n).
function storeWith (n: number, fields: Partial<CommandRecord> = {}): SyncStore {
  const store = memoryStore()
  for (let i = 1; i <= n; i++) insertOne(store, command({ deviceId: 'dev', timestamp: i, ...fields }))
  return store
}

t.test('pending: a count that one step finishes is loaded at once', async (t) => {
  const counts = new PendingCounts(storeWith(3), 10)
  t.equal(counts.get('dev'), undefined, 'nothing before a load')
  const loaded = counts.load('dev', 0)
  t.notOk(loaded instanceof Promise, 'not a promise')
  t.equal((loaded as { count: number }).count, 3)
  t.equal(counts.get('dev'), loaded, 'and kept')
  t.equal((counts.load('nobody', 0) as { count: number }).count, 0, 'a device without commands counts 0')
})

t.test('pending: a long count loads a bounded step per turn, and concurrent loads share it', async (t) => {
  const inner = storeWith(10)
  const steps: number[] = []
  const store: Store = { ...overridable(inner), countPending: (...args) => { steps.push(args[3]); return inner.countPending(...args) } }
  const counts = new PendingCounts(store, 3)
  const first = counts.load('dev', 0)
  t.ok(first instanceof Promise, 'a promise')
  t.equal(counts.load('dev', 0), first, 'a second load shares it')
  t.equal(counts.get('dev'), undefined, 'not usable while loading')
  t.equal(steps.length, 1, 'one step in this turn')
  t.equal((await first).count, 10)
  t.same(steps, [3, 3, 3, 3], 'four steps of three')
  t.equal(counts.get('dev')?.count, 10)
  t.not(counts.load('dev', 0), first, 'a load after it settled starts afresh')
})

t.test('pending: while loading, a command the count has not reached is left to it', async (t) => {
  const store = storeWith(6)
  const counts = new PendingCounts(store, 2)
  const loading = counts.load('dev', 0) as Promise<{ count: number }>
  // The first step looked at timestamps 1 and 2. An update of 2 is behind the count: it
  // counted 2, so 2 leaves. An update of 5 is ahead of it: the count will see 5 updated.
  updateOne(store, 2, 'dev', { status: 'done' }, 1, 0)
  counts.uncount({ deviceId: 'dev', id: 2, timestamp: 2, expiresAt: null })
  updateOne(store, 5, 'dev', { status: 'done' }, 1, 0)
  counts.uncount({ deviceId: 'dev', id: 5, timestamp: 5, expiresAt: null })
  t.equal((await loading).count, 4, 'six, less the two updated, each once')
})

t.test('pending: uncount ignores what was never counted', async (t) => {
  const counts = new PendingCounts(storeWith(2, { expiresAt: 100 }), 10)
  counts.load('dev', 50)
  counts.uncount({ deviceId: 'dev', id: 9, timestamp: 9, expiresAt: 40 })
  t.equal(counts.get('dev')?.count, 2, 'a command expired before the count was taken')
  counts.uncount({ deviceId: 'other', id: 1, timestamp: 1, expiresAt: null })
  t.equal(counts.get('other'), undefined, 'a device never counted')
  counts.uncount({ deviceId: 'dev', id: 1, timestamp: 1, expiresAt: 100 })
  counts.uncount({ deviceId: 'dev', id: 2, timestamp: 2, expiresAt: null })
  counts.uncount({ deviceId: 'dev', id: 3, timestamp: 3, expiresAt: null })
  t.equal(counts.get('dev')?.count, 0, 'never below zero')
  counts.forget('dev')
  t.equal(counts.get('dev'), undefined, 'forgotten')
})

t.test('pending: a store that fails a load leaves nothing, and the next load tries again', async (t) => {
  const inner = storeWith(5)
  let failAt = 1
  let calls = 0
  const store: Store = {
    ...overridable(inner),
    countPending: (...args) => {
      if (++calls === failAt) throw new Error('unreadable')
      return inner.countPending(...args)
    }
  }
  const counts = new PendingCounts(store, 2)
  t.throws(() => counts.load('dev', 0), /unreadable/, 'a first step that fails throws')
  t.equal(counts.get('dev'), undefined)
  failAt = 3
  calls = 0
  await t.rejects(counts.load('dev', 0) as Promise<unknown>, /unreadable/, 'a later step that fails rejects')
  t.equal(counts.get('dev'), undefined, 'nothing kept')
  await turn()
  failAt = 0
  t.equal((await counts.load('dev', 0)).count, 5, 'the next load succeeds')
})

t.test('pending: on a store that answers later, a count of several steps loads over turns', async (t) => {
  const store = laterStore(storeWith(6))
  const counts = new PendingCounts(store, 2)
  const loading = counts.load('dev', 0)
  t.ok(loading instanceof Promise, 'a promise')
  t.equal((await loading).count, 6)
  t.equal(counts.get('dev')?.count, 6)
  t.equal(store.ran.countPending, 4, 'three steps of two, and one that found the end')
})

t.test('pending: on a store that answers later, a step that fails rejects the load, and the next load tries again', async (t) => {
  const inner = storeWith(6)
  let failing = true
  const store = laterStore({ ...overridable(inner), countPending: (...args) => { if (failing) throw new Error('down'); return inner.countPending(...args) } })
  const counts = new PendingCounts(store, 2)
  await t.rejects(counts.load('dev', 0) as Promise<unknown>, /down/)
  t.equal(counts.get('dev'), undefined, 'nothing kept')
  failing = false
  t.equal((await counts.load('dev', 0)).count, 6)
})

t.test('pending: total adds up the counts loaded so far', async (t) => {
  const inner = storeWith(3)
  insertOne(inner, command({ deviceId: 'other', timestamp: 1 }))
  const counts = new PendingCounts(inner, 10)
  t.equal(counts.total, 0, 'nothing loaded')
  counts.load('dev', 0)
  counts.load('other', 0)
  t.equal(counts.total, 4)
})
