import { BrokerError } from '../errors.js'
import { loadBetterSqlite3 } from './better-sqlite3.js'

/** An exclusive lock taken by {@link lockFile}. */
export interface FileLock {
  /** Lets the lock go. Idempotent. */
  release: () => void
}

/**
 * Takes an exclusive lock that lasts until `release()` or the end of the process,
 * however it ends (SIGKILL, a power cut): `lockPath` is a small SQLite file, created
 * empty if missing, on which a connection holds an open `BEGIN EXCLUSIVE` in
 * exclusive locking mode. SQLite's locks are the operating system's (POSIX
 * advisory locks, or LockFileEx on Windows), which die with the process that
 * held them, so a leftover file never blocks a restart; and SQLite also sees the
 * locks of other connections of the same process. `what` names the thing the
 * lock guards, for the error message.
 *
 * Throws `BrokerError` `ERR_LOCKED` at once (no waiting) if another holder, in
 * this process or another, has the lock; whatever better-sqlite3 throws if the
 * file cannot be opened or is not a SQLite file.
 *
 * The file stays on disk after `release()`, on purpose: deleting it would let a
 * waiting opener lock the old file while a new one locks a new file of the same
 * name. Nothing in this process may open `lockPath` other than through SQLite:
 * POSIX drops a process's locks on a file when any of its descriptors for that
 * file closes. Locks on network file systems are only as good as their locking.
 */
export function lockFile (lockPath: string, what: string): FileLock {
  // timeout 0: a held lock fails the open now, rather than after better-sqlite3's 5 s wait.
  const Database = loadBetterSqlite3()
  const db = new Database(lockPath, { timeout: 0 })
  try {
    db.pragma('locking_mode = EXCLUSIVE')
    // The lock writes nothing: keep SQLite from creating a journal file next to it.
    db.pragma('journal_mode = MEMORY')
    db.exec('BEGIN EXCLUSIVE')
  } catch (err) {
    db.close()
    if ((err as { code?: unknown }).code === 'SQLITE_BUSY') {
      throw new BrokerError('ERR_LOCKED', `${what} is already open in another store, in this process or another (${lockPath} is locked)`, { cause: err })
    }
    throw err
  }
  return {
    release () {
      // Closing rolls the open transaction back, which lets the lock go. Idempotent in better-sqlite3.
      db.close()
    }
  }
}
