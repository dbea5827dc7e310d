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

/**
 * Passes in a row that must find the WAL all copied and no longer than the pass before (no
 * write in between) before the worker truncates it: some 1 s at the default interval. One
 * pass was too few: expiry pauses a tick (100 ms) while the store is behind, the worker took
 * that for an idle hub, and its TRUNCATE (an ftruncate and fsyncs, 6-58 ms measured) held
 * the writer lock just as expiry wrote again.
 */
export const IDLE_PASSES = 10

/**
 * The most frames a hurried pass may have copied, beyond those the pass before it had, for
 * the worker to follow it with a RESTART. A RESTART holds the writer lock while it copies
 * what was written since that pass began and fsyncs the WAL and the file; after a long pass
 * that was much (8-61 ms measured, on 1M expiries), and the writer, waiting in SQLite's busy
 * handler (sleeps of 1, 2, 5, 10, 15, 20, 25 ms...), lost up to 230 ms in one BEGIN. A short
 * pass says the worker has caught up with the writer, and the RESTART finds little to copy.
 */
export const QUIET_PAGES = 256

/** What the worker remembers between passes (see {@link nextStep}). */
export interface PassState {
  /** Frames copied, as the last pass reported. */
  copied: number
  /** The WAL's length in frames, as the last pass reported. */
  length: number
  /** Passes in a row that found the WAL all copied and unchanged. */
  idle: number
}

/**
 * Decides, after a passive checkpoint that found `log` frames and `checkpointed` of them
 * copied, whether the worker takes the writer lock (if free) to restart the WAL (`'RESTART'`:
 * a hurried pass, all copied, little copied since the last) or to cut an idle one to nothing
 * (`'TRUNCATE'`: {@link IDLE_PASSES} passes without a write), and whether the next pass comes
 * at once (`hurry`: past `hurryPages` and still copying). Counts `state.idle`; the caller
 * stores what the pass (or the exclusive checkpoint after it) reported in `state.copied` and
 * `state.length`. Plain JavaScript once compiled: the worker runs its source.
 */
export function nextStep (state: PassState, log: number, checkpointed: number, hurryPages: number): { mode: 'RESTART' | 'TRUNCATE' | undefined, hurry: boolean } {
  // The counts start again when the WAL does: it is then shorter than it was.
  const since = log < state.length ? checkpointed : checkpointed - state.copied
  const hurry = since !== 0 && log > hurryPages
  state.idle = log > 0 && log === state.length && checkpointed === log ? state.idle + 1 : 0
  let mode: 'RESTART' | 'TRUNCATE' | undefined
  // All copied, yet a writer that never pauses never restarts the WAL (it restarts it only when
  // a transaction begins with every frame copied): restart it here, once caught up.
  if (hurry && checkpointed === log && since <= QUIET_PAGES) mode = 'RESTART'
  // Idle: cut the WAL to nothing, once (the next pass finds it empty), rather than leave up to
  // the journal size limit on disk until the next write restarts it.
  else if (state.idle >= IDLE_PASSES) mode = 'TRUNCATE'
  return { mode, hurry }
}

// The worker, as CommonJS source: evaluated with `eval: true`, it needs no file of its own
// (so it runs the same from lib/*.ts under a loader and from dist/*.js).
const SOURCE = `
const { parentPort, workerData } = require('node:worker_threads')
const Database = require(workerData.module)
const db = new Database(workerData.file, { timeout: 5000 })
db.pragma('synchronous = ' + workerData.synchronous)
parentPort.postMessage('ready')
const QUIET_PAGES = ${QUIET_PAGES}
const IDLE_PASSES = ${IDLE_PASSES}
const state = { copied: 0, length: 0, idle: 0 }
const nextStep = ${nextStep.toString()}
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
  const step = nextStep(state, log, checkpointed, workerData.hurryPages)
  if (step.mode !== undefined) ({ log, checkpointed } = exclusive(step.mode))
  state.copied = checkpointed
  state.length = log
  parentPort.postMessage([log, checkpointed])
  return step.hurry
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
 * event loop that answers requests. Once {@link IDLE_PASSES} passes in a row
 * (some 1 s) find the WAL all copied and no longer than the pass before (an idle
 * writer), it is truncated to zero bytes, once, so that an idle hub keeps no WAL
 * on disk; like the restart under a busy writer (see {@link nextStep}), only if
 * the writer lock is free that instant. Once its connection is open, the worker is
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
