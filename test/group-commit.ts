import t from 'tap'
import { deferred, InsertOp, UpdateOp, WriteQueue } from '../lib/group-commit.js'
import type { CommandRecord, DeviceRecord } from '../lib/store/store.js'

function record (fields: Partial<CommandRecord> = {}): CommandRecord {
  return {
    id: 0, command: 'on', timestamp: Date.UTC(2026, 0, 1), lastUpdated: Date.UTC(2026, 0, 1), userId: 7, deviceId: 'a', networkId: null,
    deviceTypeId: null, parameters: null, lifetime: null, status: null, result: null, expiresAt: null, updated: false, ...fields
  }
}

const DEVICE: DeviceRecord = { id: 'a', name: 'a', data: null, networkId: null, deviceTypeId: null, isBlocked: false }

const turn = async (): Promise<void> => { await new Promise(setImmediate) }

t.test('group-commit: writes queued in one turn commit together on the next', async (t) => {
  const commits: number[][] = []
  const queue = new WriteQueue(1000, { commit: (ops) => { commits.push(ops.map((op) => (op as InsertOp).record.timestamp)) }, settle: () => {} })
  const ops = [1, 2, 3].map((i) => queue.push(new InsertOp(record({ timestamp: i }), DEVICE)))
  t.same(commits, [], 'nothing commits synchronously')
  t.ok(ops.every((op) => op.done === ops[0]?.done), 'one promise for the batch')
  await ops[0]?.done
  t.same(commits, [[1, 2, 3]], 'one transaction')
  queue.push(new InsertOp(record({ timestamp: 4 }), DEVICE))
  await turn()
  t.same(commits, [[1, 2, 3], [4]], 'a lone write commits on the next turn')
})

t.test('group-commit: a batch larger than size is split into transactions', async (t) => {
  const sizes: number[] = []
  const queue = new WriteQueue(2, { commit: (ops) => { sizes.push(ops.length) }, settle: () => {} })
  const last = [1, 2, 3, 4, 5].map(() => queue.push(new InsertOp(record(), DEVICE))).at(-1)
  await last?.done
  t.same(sizes, [2, 2, 1])
})

t.test('group-commit: flush() commits what is queued at once, and is harmless when empty', async (t) => {
  let commits = 0
  const queue = new WriteQueue(10, { commit: () => { commits++ }, settle: () => {} })
  queue.flush()
  t.equal(commits, 0)
  const op = queue.push(new InsertOp(record(), DEVICE))
  queue.flush()
  t.equal(commits, 1, 'committed synchronously')
  await op.done
  await turn()
  t.equal(commits, 1, 'and not again on the next turn')
})

t.test('group-commit: every slice commits before any is settled, and requests resolve after both', async (t) => {
  const log: string[] = []
  const queue = new WriteQueue(2, {
    commit: (ops) => { log.push(`commit ${ops.length}`) },
    settle: (ops) => { log.push(`settle ${ops.length}`) }
  })
  const ops = [1, 2, 3, 4, 5].map(() => queue.push(new InsertOp(record(), DEVICE)))
  t.equal(queue.size, 5, 'five queued')
  void ops[0]?.done?.then(() => { log.push('resolved') })
  await ops[4]?.done
  t.same(log, ['commit 2', 'commit 2', 'commit 1', 'settle 2', 'settle 2', 'settle 1', 'resolved'])
  t.equal(queue.size, 0, 'nothing left queued')
})

t.test('group-commit: a write queued while settling (a subscriber writing) goes to the next commit', async (t) => {
  const committed: number[][] = []
  let reentered: InsertOp | undefined
  const queue: WriteQueue = new WriteQueue(10, {
    commit: (ops) => { committed.push(ops.map((op) => (op as InsertOp).record.timestamp)) },
    settle: () => {
      reentered ??= queue.push(new InsertOp(record({ timestamp: 99 }), DEVICE))
      // A flush from here (close() in a subscriber) commits the new write at once.
      queue.flush()
    }
  })
  await queue.push(new InsertOp(record({ timestamp: 1 }), DEVICE)).done
  t.same(committed, [[1], [99]], 'the re-entrant write committed after the first, in its own transaction')
  await reentered?.done
  t.equal(queue.size, 0)
})

t.test('group-commit: an insert answers its four assigned keys, or 500 when its transaction failed', async (t) => {
  const op = new InsertOp(record({ id: 42 }), DEVICE)
  t.strictSame(op.payload(), { command: { id: 42, timestamp: '2026-01-01T00:00:00.000', lastUpdated: '2026-01-01T00:00:00.000', userId: 7 } })
  op.failed = true
  t.throws(() => op.payload(), { code: 500, error: 'Internal server error' })
})

t.test('group-commit: an update answers nothing, 404 for a command gone at commit, 500 when it failed', async (t) => {
  const op = new UpdateOp(9, DEVICE, { status: 'done' }, 0)
  t.equal(op.deviceId, 'a', 'the device it must belong to')
  t.throws(() => op.payload(), { code: 404, error: 'Command with id = 9 not found' })
  op.before = record({ id: 9 })
  t.equal(op.payload(), undefined)
  op.failed = true
  t.throws(() => op.payload(), { code: 500, error: 'Internal server error' })
})

t.test('group-commit: deferred() hands out a promise and its resolver', async (t) => {
  const { promise, resolve } = deferred<number>()
  resolve(5)
  t.equal(await promise, 5)
})

t.test('group-commit: one commit in flight at a time; what queues meanwhile commits next, together', async (t) => {
  const answers: Array<() => void> = []
  const committed: number[][] = []
  let inFlight = 0
  let most = 0
  const queue = new WriteQueue(100, {
    commit: (ops) => new Promise<void>((resolve) => {
      most = Math.max(most, ++inFlight)
      answers.push(() => {
        inFlight--
        committed.push(ops.map((op) => (op as InsertOp).record.timestamp))
        resolve()
      })
    }),
    settle: () => {}
  })
  const first = queue.push(new InsertOp(record({ timestamp: 1 }), DEVICE))
  await new Promise(setImmediate)
  t.equal(answers.length, 1, 'the first batch is committing')
  const second = queue.push(new InsertOp(record({ timestamp: 2 }), DEVICE))
  const third = queue.push(new InsertOp(record({ timestamp: 3 }), DEVICE))
  const flushed = queue.flush()
  t.ok(flushed instanceof Promise, 'a flush behind a commit in flight answers later')
  await new Promise(setImmediate)
  t.equal(answers.length, 1, 'nothing else commits while the first is in flight')
  answers.shift()?.()
  await first.done
  await new Promise(setImmediate)
  t.equal(answers.length, 1, 'then the writes that waited, as one batch')
  answers.shift()?.()
  await Promise.all([second.done, third.done, flushed])
  t.strictSame(committed, [[1], [2, 3]])
  t.equal(most, 1, 'never two at once')
  t.equal(queue.flush(), undefined, 'an empty queue flushes at once')
})

t.test('group-commit: a batch of several slices that answer later commits them one after another, then settles all', async (t) => {
  const events: string[] = []
  const queue = new WriteQueue(2, {
    commit: async (ops) => {
      events.push(`commit ${ops.length}`)
      await new Promise(setImmediate)
    },
    settle: (ops) => { events.push(`settle ${ops.length}`) }
  })
  const ops = [1, 2, 3, 4, 5].map((timestamp) => queue.push(new InsertOp(record({ timestamp }), DEVICE)))
  await Promise.all(ops.map((op) => op.done))
  t.strictSame(events, ['commit 2', 'commit 2', 'commit 1', 'settle 2', 'settle 2', 'settle 1'])
})
