import t from 'tap'
import { LocalBus } from '../../lib/bus/bus.js'
import { memoryStore } from '../../lib/store/memory.js'
import type { Store } from '../../lib/store/store.js'
import { batch, command, device, insertSync, storeSuite } from '../fixtures/store-suite.js'

storeSuite(t, 'memory-store', () => memoryStore())

t.test('memory-store: every call creates an independent store', async (t) => {
  const a = memoryStore()
  const b = memoryStore()
  a.saveDevice(device({ id: 'dev' }))
  const id = insertSync(a, command())
  t.equal(b.getDevice('dev'), undefined)
  t.equal(b.getCommand(id, 0), undefined)
  t.equal(b.lastCommandId(), 0)
  a.close()
  t.equal(insertSync(b, command()), 1, 'closing one store leaves the other usable')
  b.close()
})

t.test('memory-store: answers at once, is not shared, and ignores maxPending', async (t) => {
  const store = memoryStore()
  t.teardown(() => { store.close() })
  t.equal(store.shared, undefined, 'no shared command space')
  const result = store.commit(batch({ inserts: [command(), command(), command()], maxPending: 1 }), 0)
  t.notOk((result as unknown) instanceof Promise, 'commit answers synchronously')
  t.strictSame(result, { ids: [1, 2, 3], before: [] }, 'the broker counts for a store that is not shared')
})

// The suite itself, run as it runs on PostgreSQL: every answer a promise (a failure a
// rejection), and `shared` set, with maxPending enforced at commit. Not a store of the
// library: it shows the suite needs nothing synchronous and that its maxPending test
// expects refusals from a shared store.
function sharedMemoryStore (): Store {
  const inner = memoryStore()
  const later = <T>(answer: () => T): Promise<T> => new Promise((resolve) => { setImmediate(resolve) }).then(answer)
  const pending = (deviceId: string, now: number): number => {
    let count = 0
    let cursor
    do {
      const page = inner.countPending(deviceId, now, cursor, 100)
      count += page.count
      cursor = page.next
    } while (cursor !== undefined)
    return count
  }
  return {
    getDevice: async (id) => await later(() => inner.getDevice(id)),
    saveDevice: async (record) => { await later(() => { inner.saveDevice(record) }) },
    deleteDevice: async (id) => await later(() => inner.deleteDevice(id)),
    deleteCommands: async (deviceId, limit) => await later(() => inner.deleteCommands(deviceId, limit)),
    commit: async (writes, now) => await later(() => {
      const added = new Map<string, number>()
      const accepted = writes.inserts.map((record) => {
        const count = (added.get(record.deviceId) ?? 0) + (record.updated ? 0 : 1)
        if (pending(record.deviceId, now) + count > writes.maxPending) return false
        added.set(record.deviceId, count)
        return true
      })
      const result = inner.commit({ ...writes, inserts: writes.inserts.filter((_, i) => accepted[i]) }, now)
      const ids = [...result.ids]
      return { ids: accepted.map((ok) => ok ? ids.shift() : undefined), before: result.before }
    }),
    getCommand: async (id, now) => await later(() => inner.getCommand(id, now)),
    expireCommands: async (ids, now) => await later(() => inner.expireCommands(ids, now)),
    scanCommands: async (scan, now) => await later(() => inner.scanCommands(scan, now)),
    sortCommands: async (query, now, maxWindow) => await later(() => inner.sortCommands(query, now, maxWindow)),
    countPending: async (deviceId, now, cursor, examine) => await later(() => inner.countPending(deviceId, now, cursor, examine)),
    expiringCommands: async (afterId, maxId, examine) => await later(() => inner.expiringCommands(afterId, maxId, examine)),
    lastCommandId: async () => await later(() => inner.lastCommandId()),
    close: async () => { await later(() => { inner.close() }) },
    shared: {
      bus: new LocalBus(),
      claimExpired: async (now, limit) => await later(() => {
        const due = inner.expiringCommands(0, inner.lastCommandId(), Number.MAX_SAFE_INTEGER).entries
          .filter(([, expiresAt]) => expiresAt <= now).slice(0, limit)
        return inner.expireCommands(due.map(([id]) => id), now)
      })
    }
  }
}

storeSuite(t, 'memory-store answering with promises, shared', () => sharedMemoryStore())
