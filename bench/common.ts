// Helpers shared by the benchmark scenarios. Each scenario is its own process (bench/run.ts
// starts them), checks its own result, and prints one `RESULT <json>` line for the table.
import { randomBytes } from 'node:crypto'
import { mkdtempSync, openSync, readSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { monitorEventLoopDelay, performance, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks'
import Database from 'better-sqlite3'
import { startCheckpointer } from '../lib/store/checkpointer.js'
import { CACHE_BYTES, JOURNAL_SIZE_LIMIT, pace } from '../lib/store/sqlite.js'
import { manualClock, sqliteStore, type Awaitable, type ManualClock } from '../lib/index.js'

/**
 * The HS256 secret every scenario signs and verifies with: random, 32 bytes (base64), since the
 * broker refuses a key shorter than that without `allowWeakKey`. A bench measures the broker as a
 * hub runs it, so it keeps that default on.
 */
export const SECRET = randomBytes(32).toString('base64')

/** `--quick`: a tiny size that only proves the scenario still runs and checks itself. */
export const quick = process.argv.includes('--quick')

/** One measured figure. */
export interface Figure {
  name: string
  value: number
  unit: string
}

/** A goal from the issue: met when `actual` compares right against `target`. */
export interface Goal {
  name: string
  actual: number
  target: number
  /** 'min': actual must be at least target; 'max': at most. */
  kind: 'min' | 'max'
  met: boolean
}

export interface ScenarioResult {
  scenario: string
  figures: Figure[]
  goals: Goal[]
  notes: string[]
}

export class Scenario {
  readonly #result: ScenarioResult

  constructor (name: string) {
    this.#result = { scenario: name, figures: [], goals: [], notes: [] }
  }

  figure (name: string, value: number, unit: string): number {
    this.#result.figures.push({ name, value, unit })
    return value
  }

  goal (name: string, actual: number, kind: 'min' | 'max', target: number): void {
    const met = kind === 'min' ? actual >= target : actual <= target
    this.#result.goals.push({ name, actual, target, kind, met })
  }

  note (text: string): void {
    this.#result.notes.push(text)
  }

  /** Prints the machine-readable line bench/run.ts collects. */
  done (): void {
    console.log(`RESULT ${JSON.stringify(this.#result)}`)
  }
}

/** Fails the scenario (non-zero exit) unless `condition` holds: a broken fast path must not look fast. */
export function check (condition: boolean, what: string): void {
  if (!condition) {
    console.error(`check failed: ${what}`)
    process.exit(1)
  }
}

/** A fresh temporary directory, removed at exit. */
export function tempDir (): string {
  const dir = mkdtempSync(join(tmpdir(), 'command-broker-bench-'))
  process.on('exit', () => { rmSync(dir, { recursive: true, force: true }) })
  return dir
}

/** Seconds elapsed while `fn` runs (awaited). */
export async function seconds (fn: () => unknown): Promise<number> {
  const start = performance.now()
  await fn()
  return (performance.now() - start) / 1000
}

/** Runs `count` tasks with at most `concurrency` in flight; `task(i)` for i in [0, count). */
export async function pool (count: number, concurrency: number, task: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < count) await task(next++)
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker))
}

/** Heap in use after a full collection; needs `--expose-gc`. */
export function heapUsed (): number {
  const gc = (globalThis as { gc?: () => void }).gc
  if (gc === undefined) throw new Error('run with --expose-gc')
  gc()
  gc()
  return process.memoryUsage().heapUsed
}

/** The q-quantile (0..1) of sorted numbers. */
export function quantile (sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number
}

/**
 * Waits until `done()` on a manual clock, and returns the ms it moved the clock meanwhile.
 * Expiry waits, asking again a tick later, while the store is behind its checkpointer
 * (`store.behind()`); on a manual clock that tick never comes by itself. So while `progress()`
 * (a count that grows as commands expire) stands still for 100 turns, the clock moves on
 * `tick` (and real time 10 ms, for the checkpointer's thread), as a real hub's would.
 */
export async function waitOnManualClock (clock: ManualClock, tick: number, done: () => Awaitable<boolean>, progress: () => Awaitable<number>): Promise<number> {
  let moved = 0
  let still = 0
  let last = await progress()
  while (!await done()) {
    await new Promise(setImmediate)
    const now = await progress()
    if (now !== last || ++still < 100) {
      if (now !== last) still = 0
      last = now
      continue
    }
    still = 0
    clock.advance(tick)
    moved += tick
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  return moved
}

/** A manual clock for a scenario; see {@link benchClock}. */
export interface BenchClock extends ManualClock {
  /**
   * Moves the clock on with real time, every turn, until the function it returns is called:
   * after a jump, the process runs on, and what waits a tick (expiry held while the store's
   * WAL is behind) gets its tick.
   */
  follow: () => () => void
}

/**
 * A manual clock for a scenario: it decides when commands fall due, while the time a turn's
 * work takes (`elapsed()`, which bounds expiry per turn) is real, as in a process whose clock
 * jumped. A plain manual clock's `elapsed()` reads 0, and a turn would be bounded by counts only.
 */
export function benchClock (start: number): BenchClock {
  const clock = manualClock(start)
  return Object.assign(clock, {
    elapsed: () => performance.now(),
    follow () {
      let following = true
      let last = performance.now()
      const step = (): void => {
        if (!following) return
        const now = performance.now()
        clock.advance(now - last)
        last = now
        setImmediate(step)
      }
      setImmediate(step)
      return () => { following = false }
    }
  })
}

// The main thread's scheduler statistics (Linux): "<ns on a CPU> <ns waiting for one> <slices>".
// On a shared machine other processes keep the broker's thread off the CPU for tens of ms at a
// time; that is the machine, not the broker, and the probes subtract it from each gap. I/O
// waits and GC stay counted: they are the broker's own.
const schedstat = ((): number | undefined => {
  try {
    return openSync('/proc/thread-self/schedstat', 'r')
  } catch {
    return undefined
  }
})()
const schedBuffer = Buffer.alloc(128)

/** Milliseconds the main thread has waited for a CPU since it started; 0 where unknown. */
export function runQueueWait (): number {
  if (schedstat === undefined) return 0
  const length = readSync(schedstat, schedBuffer, 0, schedBuffer.length, 0)
  return Number(schedBuffer.toString('latin1', 0, length).split(' ')[1]) / 1e6
}

/** What {@link probeTurns} measured. */
export interface Blocks {
  /** The longest gap between probe turns, ms, less the time the thread waited for a CPU meanwhile. */
  longest: number
  /** The longest gap as the wall clock saw it, ms. */
  wall: number
  /** monitorEventLoopDelay's max, ms (resolution 1 ms; a cross-check). */
  delayMax: number
  /** Time the thread waited for a CPU over the whole run, ms. */
  waited: number
  turns: number
  /** Garbage collection inside the longest turn, ms (V8's pauses, as perf_hooks reports them). */
  gc: number
}

/**
 * Starts a probe that asks the event loop for a turn all along (setImmediate, re-armed from
 * itself) and times the gaps between its turns: what a request arriving meanwhile would wait.
 * `stop()` ends it and returns the longest gap; call it from a turn of its own.
 */
export function probeTurns (): { stop: () => Blocks } {
  const histogram = monitorEventLoopDelay({ resolution: 1 })
  let longest = 0
  let longestFrom = 0
  const pauses: PerformanceEntry[] = []
  const observer = new PerformanceObserver((list) => { pauses.push(...list.getEntries()) })
  observer.observe({ entryTypes: ['gc'] })
  let wall = 0
  let turns = 0
  let probing = true
  const startWait = runQueueWait()
  let last = performance.now()
  let lastWait = startWait
  const turn = (): void => {
    const now = performance.now()
    const waited = runQueueWait()
    const gap = now - last
    wall = Math.max(wall, gap)
    if (gap - (waited - lastWait) > longest) {
      longest = gap - (waited - lastWait)
      longestFrom = last
    }
    last = performance.now()
    lastWait = waited
  }
  const probe = (): void => {
    turn()
    turns++
    if (probing) setImmediate(probe)
  }
  setImmediate(probe)
  histogram.enable()
  return {
    stop () {
      turn()
      probing = false
      histogram.disable()
      pauses.push(...observer.takeRecords())
      observer.disconnect()
      // The part of the longest turn V8 spent collecting garbage.
      let gc = 0
      for (const pause of pauses) {
        gc += Math.max(0, Math.min(pause.startTime + pause.duration, longestFrom + longest) - Math.max(pause.startTime, longestFrom))
      }
      return { longest, wall, delayMax: histogram.max / 1e6, waited: runQueueWait() - startWait, turns, gc }
    }
  }
}

/** Raw better-sqlite3 on a file, as {@link rawSqlite} opens it. */
export interface RawSqlite {
  db: Database.Database
  /** INSERT of a whole commands row: id, device_id, command, timestamp, last_updated, user_id,
   *  network_id, device_type_id, parameters, lifetime, status, result, expires_at, updated. */
  insert: Database.Statement
  /** Closes the connection, then stops the checkpointer (its last checkpoint included). */
  close: () => Promise<void>
}

/**
 * The SQLite scenarios' limit: raw better-sqlite3 on a new file with the store's table and
 * indexes (a store creates the file, then closes) and the store's connection settings, its
 * background checkpointer and WAL pacing included, so that the broker is measured against
 * SQLite doing the same work the same way, and nothing else.
 */
export async function rawSqlite (path: string): Promise<RawSqlite> {
  await sqliteStore(path, { synchronous: 'normal' }).close()
  const db = new Database(path)
  db.pragma('journal_mode = WAL')
  db.pragma('synchronous = NORMAL')
  db.pragma('wal_autocheckpoint = 0')
  db.pragma(`journal_size_limit = ${JOURNAL_SIZE_LIMIT}`)
  db.pragma(`cache_size = ${-CACHE_BYTES / 1024}`)
  const checkpointer = startCheckpointer(path, { synchronous: 'normal', onFailure: (err) => { throw err }, onProgress: pace.bind(null, db) })
  const insert = db.prepare(`INSERT INTO commands (id, device_id, command, timestamp, last_updated, user_id, network_id,
    device_type_id, parameters, lifetime, status, result, expires_at, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
  return {
    db,
    insert,
    async close () {
      db.close()
      await checkpointer.close()
    }
  }
}
