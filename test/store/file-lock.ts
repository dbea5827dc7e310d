import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { BrokerError } from '../../lib/errors.js'
import { lockFile } from '../../lib/store/file-lock.js'
import { thrown } from '../fixtures/throws.js'

// Locks held by another process, and their release when it is killed, are tested through
// sqliteStore in test/store/sqlite.ts.

t.test('file-lock: a second lock on a held file fails at once with ERR_LOCKED, until the first is released', async (t) => {
  const file = path.join(t.testdir(), 'x.db-lock')
  const first = lockFile(file, 'the thing')
  for (let i = 0; i < 3; i++) {
    const error = thrown(() => lockFile(file, 'the thing'))
    t.ok(error instanceof BrokerError, `attempt ${i}: a BrokerError`)
    t.equal((error as BrokerError).code, 'ERR_LOCKED', `attempt ${i}: ERR_LOCKED`)
    t.equal((error as BrokerError).message, `the thing is already open in another store, in this process or another (${file} is locked)`)
    t.equal(((error as BrokerError).cause as { code?: unknown }).code, 'SQLITE_BUSY', `attempt ${i}: SQLite's error as cause`)
  }
  first.release()
  const second = lockFile(file, 'the thing')
  t.pass('once released, the file can be locked again')
  second.release()
  second.release()
  t.pass('releasing twice is harmless')
})

t.test('file-lock: the lock file stays after release, alone: no journal beside it', async (t) => {
  const dir = t.testdir()
  const lock = lockFile(path.join(dir, 'x.db-lock'), 'x')
  t.strictSame(fs.readdirSync(dir), ['x.db-lock'], 'while held')
  lock.release()
  t.strictSame(fs.readdirSync(dir), ['x.db-lock'], 'after release')
  t.equal(fs.statSync(path.join(dir, 'x.db-lock')).size, 0, 'and empty: the lock writes nothing')
})

t.test('file-lock: a lock file that is not SQLite throws what better-sqlite3 throws', async (t) => {
  const file = path.join(t.testdir(), 'junk-lock')
  fs.writeFileSync(file, 'not a database, '.repeat(200))
  const error = thrown(() => lockFile(file, 'x'))
  t.notOk(error instanceof BrokerError, 'not ERR_LOCKED: nobody holds it')
  t.equal((error as { code?: unknown }).code, 'SQLITE_NOTADB')
  t.throws(() => lockFile(path.join(t.testdir(), 'missing', 'x-lock'), 'x'), TypeError, 'nor for a directory that does not exist')
})
