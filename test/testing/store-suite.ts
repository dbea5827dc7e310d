// storeSuite(): the Store contract, for any store to prove itself against.
import { isDeepStrictEqual } from 'node:util'
import t from 'tap'
import { memoryStore } from '../../lib/store/memory.js'
import type { Store, WriteBatch } from '../../lib/store/store.js'
import { storeSuite, type SuiteTest } from '../../lib/testing/store-suite.js'
import { overridable } from '../fixtures/broker.js'

storeSuite(t, 'storeSuite on memoryStore', () => memoryStore())

// A test object of our own, shaped like tap's: it runs the suite and collects what fails.
function recorder (failures: string[], runs: Array<Promise<void>>, name = ''): SuiteTest {
  const teardowns: Array<() => unknown> = []
  const check = (pass: boolean, message: [] | [string]): void => { if (!pass) failures.push(`${name}: ${message[0] ?? 'unnamed'}`) }
  const self: SuiteTest & { teardowns: typeof teardowns } = {
    teardowns,
    test (title, fn) {
      const sub = recorder(failures, runs, title) as SuiteTest & { teardowns: Array<() => unknown> }
      runs.push((async () => {
        try {
          await fn(sub)
        } catch (err) {
          failures.push(`${title}: threw ${String(err)}`)
        }
        for (const teardown of sub.teardowns) await teardown()
      })())
    },
    teardown (fn) { teardowns.push(fn) },
    ok: (value, ...message) => { check(Boolean(value), message) },
    notOk: (value, ...message) => { check(!value, message) },
    equal: (found, wanted, ...message) => { check(found === wanted, message) },
    not: (found, wanted, ...message) => { check(found !== wanted, message) },
    strictSame: (found, wanted, ...message) => { check(isDeepStrictEqual(found, wanted), message) },
    notSame: (found, wanted, ...message) => { check(!isDeepStrictEqual(found, wanted), message) },
    throws: (fn, wanted, ...message) => {
      try {
        fn()
        check(false, message)
      } catch (err) {
        check(err instanceof wanted, message)
      }
    },
    resolves: async (fn, ...message) => {
      try {
        await fn()
      } catch {
        check(false, message)
      }
    }
  }
  return self
}

async function run (open: () => Store): Promise<string[]> {
  const failures: string[] = []
  const runs: Array<Promise<void>> = []
  storeSuite(recorder(failures, runs), 'store', open)
  for (let done = 0; done < runs.length; done++) await runs[done]
  return failures
}

t.test('storeSuite: runs with any test object shaped like tap\'s; the memory store passes it', async (t) => {
  t.strictSame(await run(() => memoryStore()), [])
})

t.test('storeSuite: a store that hands out frozen records passes it too', async (t) => {
  const freeze = <T extends object>(record: T | undefined): T | undefined => record === undefined ? undefined : Object.freeze(record)
  const freezing = (): Store => {
    const store = overridable(memoryStore())
    return { ...store, getDevice: (id) => freeze(store.getDevice(id)), getCommand: (id, now) => freeze(store.getCommand(id, now)) }
  }
  t.strictSame(await run(freezing), [])
})

t.test('storeSuite: a store that breaks the contract fails it', async (t) => {
  const forgetful = (): Store => {
    return { ...overridable(memoryStore()), getDevice: () => undefined, lastCommandId: () => 0 }
  }
  const failures = await run(forgetful)
  t.ok(failures.length > 5, `${failures.length} failures`)
  t.ok(failures.some((failure) => failure.startsWith('store: devices are saved, replaced, read and deleted: ')), 'named by subtest')

  // Commands that vanish, sorts that answer nothing, inserts refused without a limit.
  const blind = (): Store => ({ ...overridable(memoryStore()), getCommand: () => undefined, sortCommands: () => undefined })
  t.ok((await run(blind)).length > 5)
  const refusing = (when: (batch: WriteBatch) => boolean) => (): Store => {
    const store = overridable(memoryStore())
    return { ...store, commit: (batch, now) => when(batch) ? { ids: batch.inserts.map(() => undefined), before: [] } : store.commit(batch, now) }
  }
  t.ok((await run(refusing((batch) => batch.inserts.length > 0))).some((failure) => failure.endsWith('the store refused an insert without a maxPending limit')))
  t.ok((await run(refusing((batch) => batch.maxPending !== Infinity))).some((failure) => failure.includes('gets an id')), 'refusing within maxPending')
})
