// better-sqlite3 is an optional peer dependency, loaded when a SQLite store first needs it.
import t from 'tap'
import { loadBetterSqlite3 } from '../../lib/store/better-sqlite3.js'

t.test('better-sqlite3: loaded from where it is installed', async (t) => {
  const Database = loadBetterSqlite3()
  const db = new Database(':memory:')
  t.equal(db.prepare('SELECT 1 AS one').get() !== undefined, true)
  db.close()
})

t.test('better-sqlite3: missing, the error says what to install', async (t) => {
  const missing = Object.assign(new Error("Cannot find module 'better-sqlite3'"), { code: 'MODULE_NOT_FOUND' })
  const err = t.throws(() => loadBetterSqlite3(() => { throw missing }), {
    message: /^sqliteStore: better-sqlite3 is not installed\. It is an optional peer dependency .*npm install better-sqlite3/
  }) as Error
  t.equal(err.cause, missing, 'the resolver\'s error is the cause')
})
