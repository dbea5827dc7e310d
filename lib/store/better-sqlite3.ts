// better-sqlite3, loaded when a SQLite store first needs it. It is an optional peer dependency:
// a project that never opens a SQLite store (a test fixture on the memory store, a PostgreSQL
// cluster) installs command-broker without it, and so without its native build.
import { createRequire } from 'node:module'
import type Database from 'better-sqlite3'

const require = createRequire(import.meta.url)

/**
 * better-sqlite3's `Database` class. Throws an `Error` that says what to install when the
 * package is missing (`resolve` finds it; tests pass one that fails).
 */
export function loadBetterSqlite3 (resolve: (id: string) => string = require.resolve): typeof Database {
  let path: string
  try {
    path = resolve('better-sqlite3')
  } catch (err) {
    throw new Error(
      'sqliteStore: better-sqlite3 is not installed. It is an optional peer dependency of command-broker, ' +
      'needed only for SQLite stores: npm install better-sqlite3 (where no prebuilt binary fits, it compiles: python3, make and g++)',
      { cause: err })
  }
  return require(path) as typeof Database
}
