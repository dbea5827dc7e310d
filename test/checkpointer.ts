import { join } from 'node:path'
import Database from 'better-sqlite3'
import t from 'tap'
import { startCheckpointer } from '../lib/checkpointer.js'

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
  const checkpointer = startCheckpointer(db.name, { synchronous: 'normal', onFailure: (err) => t.fail(String(err)), onProgress: () => {} })
  await checkpointer.close()
  const [status] = db.pragma('wal_checkpoint(PASSIVE)') as Array<{ log: number, checkpointed: number }>
  t.ok((status?.log ?? 0) > 0, 'the WAL had frames')
  t.equal(status?.checkpointed, status?.log, 'every frame was already in the database')
  await checkpointer.close()
  t.pass('closing twice is harmless')
})

t.test('checkpointer: reports the WAL length after each checkpoint', async (t) => {
  const db = walFile(t.testdir())
  t.teardown(() => { db.close() })
  const lengths: number[] = []
  const checkpointer = startCheckpointer(db.name, { synchronous: 'normal', onFailure: (err) => t.fail(String(err)), onProgress: (pages) => { lengths.push(pages) } })
  await checkpointer.close()
  t.ok(lengths.length >= 1, 'at least the last checkpoint reported')
  t.ok(lengths.every((pages) => Number.isInteger(pages) && pages > 0), `WAL lengths in pages: ${lengths.join(', ')}`)
})

t.test('checkpointer: a worker that cannot open its file reports the failure', async (t) => {
  const failed = await new Promise<Error>((resolve) => {
    startCheckpointer(join(t.testdir(), 'missing', 'dir', 'x.db'), { synchronous: 'normal', onFailure: resolve, onProgress: () => {} })
  })
  t.match(failed.message, /directory does not exist|unable to open/i)
})

t.test('checkpointer: closing before the worker has opened its connection still ends it', async (t) => {
  const db = walFile(t.testdir())
  t.teardown(() => { db.close() })
  const checkpointer = startCheckpointer(db.name, { synchronous: 'full', onFailure: (err) => t.fail(String(err)), onProgress: () => {} })
  await checkpointer.close()
  const [status] = db.pragma('wal_checkpoint(PASSIVE)') as Array<{ log: number, checkpointed: number }>
  t.equal(status?.checkpointed, status?.log, 'its last checkpoint ran')
})
