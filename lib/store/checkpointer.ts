import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'

/** Options of {@link startCheckpointer}. */
export interface CheckpointerOptions {
  /** The connection's `synchronous` setting, which decides whether checkpoints fsync. */
  synchronous: 'full' | 'normal'
  /** How often to checkpoint, ms. Default 100. */
  interval?: number
  /**
   * WAL length, in pages, past which a checkpoint that copied anything is followed at once by
   * the next instead of after `interval`. Default: never.
   */
  hurryPages?: number
  /** Called if the worker fails; the caller should fall back to checkpointing inline. */
  onFailure: (error: Error) => void
  /**
   * Called after each checkpoint with the WAL's length in pages and how many of them are
   * copied into the database. A passive checkpoint never blocks the writer, so under a writer
   * that never pauses it never catches up, and the WAL (which restarts only once it has)
   * grows: the caller watches this, holds back writes that can wait, and checkpoints inline
   * for a while when it is too long.
   */
  onProgress: (walPages: number, copiedPages: number) => void
}

/** A running background checkpointer. */
export interface Checkpointer {
  /** Runs a last checkpoint, closes the worker's connection and ends the thread. */
  close: () => Promise<void>
}

// The worker, as CommonJS source: evaluated with `eval: true`, it needs no file of its own
// (so it runs the same from lib/*.ts under a loader and from dist/*.js).
const SOURCE = `
const { parentPort, workerData } = require('node:worker_threads')
const Database = require(workerData.module)
const db = new Database(workerData.file, { timeout: 5000 })
db.pragma('synchronous = ' + workerData.synchronous)
parentPort.postMessage('ready')
let copied = 0
let length = 0
// A checkpoint that takes the writer lock: only if it is free this instant (no wait), so that
// it never holds up the writer for long.
const exclusive = (mode) => {
  db.pragma('busy_timeout = 0')
  try {
    return db.pragma('wal_checkpoint(' + mode + ')')[0]
  } finally {
    db.pragma('busy_timeout = 5000')
  }
}
const checkpoint = () => {
  let [{ log, checkpointed }] = db.pragma('wal_checkpoint(PASSIVE)')
  // The counts start again when the WAL does.
  const fresh = checkpointed !== copied
  const hurry = fresh && log > workerData.hurryPages
  if (hurry && checkpointed === log) {
    // All copied, yet a writer that never pauses never restarts the WAL: restart it here,
    // which costs the writer little, as there is next to nothing left to copy. Else the WAL
    // grows until the writer checkpoints inline.
    ({ log, checkpointed } = exclusive('RESTART'))
  } else if (log > 0 && log === length && checkpointed === log) {
    // All copied and nothing written since the last pass: the hub is idle. Cut the WAL to
    // nothing, once (the next pass finds it empty), rather than leave up to the journal size
    // limit on disk until the next write restarts it.
    ({ log, checkpointed } = exclusive('TRUNCATE'))
  }
  copied = checkpointed
  length = log
  parentPort.postMessage([log, checkpointed])
  return hurry
}
// A long WAL that is still being written: checkpoints back to back, so that what is left to
// copy stays small for the writer, which checkpoints inline once the WAL is too long.
let timer
const run = () => {
  let hurry
  try {
    hurry = checkpoint()
  } catch (err) {
    db.close()
    throw err
  }
  timer = setTimeout(run, hurry ? 0 : workerData.interval)
}
// The first at once: a WAL left by a process that never closed its store is folded in now.
timer = setTimeout(run, 0)
parentPort.once('message', () => {
  clearTimeout(timer)
  try {
    checkpoint()
  } finally {
    db.close()
    parentPort.close()
  }
})
`

/**
 * Checkpoints a WAL-mode SQLite file from a worker thread, every `interval`
 * ms, with its own connection. The writing connection turns its own
 * autocheckpoint off, so checkpoint fsyncs and page copies never stall the
 * event loop that answers requests. A pass that finds the WAL all copied and no
 * longer than at the pass before (an idle writer) truncates it to zero bytes,
 * once, so that an idle hub keeps no WAL on disk; like the restart under a busy
 * writer, only if the writer lock is free that instant. Once its connection is open, the worker is
 * `unref()`'d: a checkpointer that is never closed does not keep the process
 * alive (the process may then end with a WAL left to fold in, which SQLite does
 * at the next open).
 */
export function startCheckpointer (file: string, options: CheckpointerOptions): Checkpointer {
  const { synchronous, interval = 100, hurryPages = Infinity, onFailure, onProgress } = options
  const worker = new Worker(SOURCE, {
    eval: true,
    // Plain CommonJS needs none of the parent's flags (loaders, test hooks...).
    execArgv: [],
    workerData: { module: createRequire(import.meta.url).resolve('better-sqlite3'), file, synchronous, interval, hurryPages }
  })
  const exited = new Promise<void>((resolve) => { worker.once('exit', () => { resolve() }) })
  let opened!: () => void
  const ready = new Promise<void>((resolve) => { opened = resolve })
  // Referenced until its connection is open (so a failure to open is reported, not lost to an
  // exiting process), then unref()'d. The one 'message' listener is added here, before that:
  // adding one to a Worker refs it again (Node refs its port for a new listener).
  worker.on('message', (message: unknown) => {
    if (message === 'ready') {
      worker.unref()
      opened()
    } else {
      const [walPages, copiedPages] = message as [number, number]
      onProgress(walPages, copiedPages)
    }
  })
  worker.once('error', (err) => { onFailure(err) })
  let closed: Promise<void> | undefined
  return {
    close (): Promise<void> {
      // Wait for 'ready' (or an early exit) before ref()'ing, so that its unref() can never
      // come after: then the process stays alive until the worker has closed its connection,
      // whether close() comes before or after 'ready', and no branch depends on which.
      closed ??= Promise.race([ready, exited]).then(() => {
        worker.ref()
        worker.postMessage('close')
        return exited
      })
      return closed
    }
  }
}
