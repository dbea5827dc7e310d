import { statSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import t from 'tap'
import { IDLE_PASSES, nextStep, QUIET_PAGES, startCheckpointer, type PassState } from '../../lib/store/checkpointer.js'
import { until } from '../fixtures/until.js'

function walFile (dir: string): Database.Database {
  const db = new Database(join(dir, 'wal.db'))
  db.pragma('journal_mode = WAL')
  db.pragma('wal_autocheckpoint = 0')
  db.exec('CREATE TABLE t (x INTEGER)')
  const insert = db.prepare('INSERT INTO t VALUES (?)')
  db.transaction(() => { for (let i = 0; i < 2000; i++) insert.run(i) })()
  return db
}

t.test('checkpointer: copies the WAL into the database from its own thread, and once more on close', async (t) => {
  const db = walFile(t.testdir())
  t.teardown(() => { db.close() })
  t.ok(statSync(`${db.name}-wal`).size > 0, 'the WAL had frames')
  const checkpointer = startCheckpointer(db.name, { synchronous: 'normal', onFailure: (err) => t.fail(String(err)), onProgress: () => {} })
  await checkpointer.close()
  const [status] = db.pragma('wal_checkpoint(PASSIVE)') as Array<{ log: number, checkpointed: number }>
  t.equal(status?.checkpointed, status?.log, 'every frame was already in the database (or the idle WAL truncated)')
  await checkpointer.close()
  t.pass('closing twice is harmless')
})

t.test('checkpointer: reports the WAL length, and how much of it is copied, after each checkpoint', async (t) => {
  const db = walFile(t.testdir())
  t.teardown(() => { db.close() })
  const lengths: number[] = []
  const copied: number[] = []
  const checkpointer = startCheckpointer(db.name, {
    synchronous: 'normal',
    onFailure: (err) => t.fail(String(err)),
    onProgress: (pages, done) => { lengths.push(pages); copied.push(done) }
  })
  await checkpointer.close()
  t.ok(lengths.length >= 1, 'at least the last checkpoint reported')
  t.ok(lengths.every((pages) => Number.isInteger(pages) && pages >= 0), `WAL lengths in pages: ${lengths.join(', ')}`)
  // A later pass may find the WAL idle and truncate it: 0.
  t.ok((lengths[0] as number) > 0, 'the first found the frames written before it')
  t.same(copied, lengths, `with no writer, each checkpoint copied the whole WAL: ${copied.join(', ')}`)
})

// Under a writer that outruns checkpoints every `interval`, the frames left to copy pile up,
// and the writer's own inline checkpoint (lib/store/sqlite.ts, pace) copies them all in one call.
t.test('checkpointer: past hurryPages, a checkpoint that copied frames is followed at once by the next, and restarts a WAL all copied', async (t) => {
  const db = walFile(t.testdir())
  t.teardown(() => { db.close() })
  const lengths: number[] = []
  let reported!: () => void
  const twice = new Promise<void>((resolve) => { reported = resolve })
  // An hour between checkpoints: only the first (at start) and the one hurried after it come.
  const checkpointer = startCheckpointer(db.name, {
    synchronous: 'normal',
    interval: 3_600_000,
    hurryPages: 1,
    onFailure: (err) => t.fail(String(err)),
    onProgress: (pages) => { if (lengths.push(pages) === 2) reported() }
  })
  const keepAlive = setInterval(() => {}, 1000)
  await twice
  clearInterval(keepAlive)
  t.ok((lengths[0] as number) > 1, `the WAL was past hurryPages: ${lengths.join(', ')}`)
  // The first pass copied every frame, few enough to RESTART at once (see nextStep); the
  // hurried pass after it found no new frame, and, one idle pass being too few, kept the WAL.
  t.equal(lengths[1], lengths[0], 'the hurried pass found no new frames')
  // All copied and no writer at work: the worker restarted the WAL, so the next write starts it over.
  db.prepare('INSERT INTO t VALUES (?)').run(-1)
  const [status] = db.pragma('wal_checkpoint(PASSIVE)') as Array<{ log: number }>
  t.ok((status?.log ?? Infinity) < (lengths[0] as number), `the WAL restarted: ${status?.log} frames after one more write`)
  await checkpointer.close()
  t.equal(lengths.length, 3, 'the second copied nothing new, so the next waited (for close)')
})

t.test('checkpointer: a WAL all copied with no new frames since the last pass is truncated to nothing, once, and again after the next burst', async (t) => {
  const db = walFile(t.testdir())
  t.teardown(() => { db.close() })
  const wal = `${db.name}-wal`
  const lengths: number[] = []
  const checkpointer = startCheckpointer(db.name, {
    synchronous: 'normal',
    interval: 5,
    onFailure: (err) => t.fail(String(err)),
    onProgress: (pages) => { lengths.push(pages) }
  })
  t.ok(statSync(wal).size > 0, 'a burst of writes left a WAL')
  // The file is truncated a moment before the pass's report arrives: wait for both.
  await until(() => statSync(wal).size === 0 && lengths.includes(0), 'the idle WAL to be truncated, and the pass to report it', 10_000)
  t.pass(`the truncating pass reported an empty WAL: ${lengths.join(', ')}`)
  const truncatedAt = lengths.lastIndexOf(0)
  await until(() => lengths.length > truncatedAt + 2, 'more passes')
  t.ok(lengths.slice(truncatedAt).every((pages) => pages === 0), 'later passes find it empty and leave it')
  const insert = db.prepare('INSERT INTO t VALUES (?)')
  db.transaction(() => { for (let i = 0; i < 500; i++) insert.run(i) })()
  t.ok(statSync(wal).size > 0, 'the next burst starts a WAL')
  await until(() => statSync(wal).size === 0, 'the WAL of the second burst to be truncated', 10_000)
  t.equal(db.prepare('SELECT count(*) FROM t').pluck().get(), 2500, 'every row is in the database')
  await checkpointer.close()
})

t.test('checkpointer: a worker that cannot open its file reports the failure', async (t) => {
  const failed = await new Promise<Error>((resolve) => {
    startCheckpointer(join(t.testdir(), 'missing', 'dir', 'x.db'), { synchronous: 'normal', onFailure: resolve, onProgress: () => {} })
  })
  t.match(failed.message, /directory does not exist|unable to open/i)
})

// close() right after startCheckpointer() always comes before the worker's 'ready' message:
// no message can be handled while this test's synchronous code runs.
t.test('checkpointer: closing before the worker has opened its connection still ends it', async (t) => {
  const db = walFile(t.testdir())
  t.teardown(() => { db.close() })
  const checkpointer = startCheckpointer(db.name, { synchronous: 'full', onFailure: (err) => t.fail(String(err)), onProgress: () => {} })
  await checkpointer.close()
  const [status] = db.pragma('wal_checkpoint(PASSIVE)') as Array<{ log: number, checkpointed: number }>
  t.equal(status?.checkpointed, status?.log, 'its last checkpoint ran')
})

t.test('checkpointer: closing after the worker has opened its connection runs a last checkpoint', async (t) => {
  const db = walFile(t.testdir())
  t.teardown(() => { db.close() })
  const lengths: number[] = []
  let reported!: () => void
  const firstReport = new Promise<void>((resolve) => { reported = resolve })
  const checkpointer = startCheckpointer(db.name, {
    synchronous: 'normal',
    onFailure: (err) => t.fail(String(err)),
    onProgress: (pages) => { lengths.push(pages); reported() }
  })
  // A report comes only after 'ready' (the worker posts it first): the worker is open and
  // unref()'d, so it no longer keeps this process alive; this interval does, while we wait.
  const keepAlive = setInterval(() => {}, 1000)
  await firstReport
  clearInterval(keepAlive)
  const before = lengths.length
  db.prepare('INSERT INTO t VALUES (?)').run(-1)
  await checkpointer.close()
  t.ok(lengths.length > before, 'the last checkpoint reported too')
  const [status] = db.pragma('wal_checkpoint(PASSIVE)') as Array<{ log: number, checkpointed: number }>
  t.equal(status?.checkpointed, status?.log, 'the write made after it opened was checkpointed')
  await checkpointer.close()
  t.pass('closing twice is harmless')
})

t.test('checkpointer: closing a worker that failed to open resolves', async (t) => {
  let failed!: (err: Error) => void
  const failure = new Promise<Error>((resolve) => { failed = resolve })
  const checkpointer = startCheckpointer(join(t.testdir(), 'missing', 'x.db'), { synchronous: 'normal', onFailure: failed, onProgress: () => t.fail('no progress') })
  t.match((await failure).message, /directory does not exist|unable to open/i)
  await checkpointer.close()
  t.pass('close() resolved once the worker had ended')
})

t.test('checkpointer: nextStep restarts a hurried WAL only once a pass has caught up, and truncates one idle for IDLE_PASSES passes', (t) => {
  const state: PassState = { copied: 0, length: 0, idle: 0 }
  const pass = (log: number, checkpointed: number): ReturnType<typeof nextStep> => {
    const step = nextStep(state, log, checkpointed, 100)
    state.copied = checkpointed
    state.length = log
    return step
  }
  t.same(pass(50, 50), { mode: undefined, hurry: false }, 'under hurryPages: no hurry, no restart')
  t.same(pass(5000, 4000), { mode: undefined, hurry: true }, 'past hurryPages and copying: hurry, frames left')
  // Everything copied, but the pass copied far more than QUIET_PAGES: the writer is writing
  // fast, and a RESTART would copy and fsync under the writer lock what came meanwhile.
  t.same(pass(9000, 9000), { mode: undefined, hurry: true }, 'all copied after a long pass: no RESTART')
  t.same(pass(9000 + QUIET_PAGES, 9000 + QUIET_PAGES), { mode: 'RESTART', hurry: true }, 'all copied after a short pass: RESTART')
  // The WAL restarted: shorter than before, its counts start again.
  t.same(pass(200, 150), { mode: undefined, hurry: true }, 'a restarted WAL: what it holds is new')
  t.same(pass(200 + QUIET_PAGES + 1, 200 + QUIET_PAGES + 1), { mode: undefined, hurry: true }, 'one page too many since the last pass: no RESTART')
  // No writes: each pass finds the WAL as it was.
  for (let i = 1; i < IDLE_PASSES; i++) {
    t.same(pass(200 + QUIET_PAGES + 1, 200 + QUIET_PAGES + 1), { mode: undefined, hurry: false }, `idle pass ${i}: the WAL is kept`)
  }
  t.same(pass(200 + QUIET_PAGES + 1, 200 + QUIET_PAGES + 1), { mode: 'TRUNCATE', hurry: false }, `idle pass ${IDLE_PASSES}: truncated`)
  t.same(pass(0, 0), { mode: undefined, hurry: false }, 'an empty WAL is left alone')
  t.same(pass(0, 0), { mode: undefined, hurry: false }, 'and again')
  pass(10, 10)
  for (let i = 1; i < IDLE_PASSES; i++) pass(10, 10)
  t.equal(pass(10, 9).mode, undefined, 'a frame left to copy is not idle')
  t.equal(state.idle, 0, 'and starts the count again')
  t.end()
})

t.test('checkpointer: the worker runs nextStep from its compiled source', (t) => {
  // The worker evaluates nextStep's text: it must be plain JavaScript that needs nothing
  // but the two constants the worker defines beside it.
  const step = new Function('QUIET_PAGES', 'IDLE_PASSES', `return (${nextStep.toString()})`)(QUIET_PAGES, IDLE_PASSES) as typeof nextStep
  t.same(step({ copied: 0, length: 0, idle: 0 }, 10, 10, 1), { mode: 'RESTART', hurry: true })
  t.end()
})
