// What the PostgreSQL scenarios share: the server (DATABASE_URL, else the PG* variables and
// node-postgres's defaults), a schema of their own per run (bench_<pid>_<label>, dropped at the
// end, whatever happens), child brokers (bench/cluster-child.ts) driven over IPC, and a check
// that throws so that the schemas are dropped and the children killed before the exit.
// Without a reachable server a scenario is skipped with one line saying how to point it at
// one (it still prints its RESULT line, so bench/run.ts does not count it as failed); with
// CI=true it fails instead.
import { fork, type ChildProcess } from 'node:child_process'
import { cpus, loadavg, userInfo } from 'node:os'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { Scenario, SECRET } from './common.js'

/** A check of a PostgreSQL scenario failed: the scenario cleans up, then exits 1. */
class CheckFailed extends Error {}

/** Throws (and so fails the scenario, after its clean-up) unless `condition` holds. */
export function verify (condition: boolean, what: string): void {
  if (!condition) throw new CheckFailed(what)
}

/** What a scenario gets when PostgreSQL is reachable. */
export interface Postgres {
  /** A pool for the scenario's own SQL (counting rows, the raw limit), ended at the end. */
  admin: pg.Pool
  /** A new schema name for this run, dropped at the end (if it was created). */
  schema: (label: string) => string
  /** Drops a schema now (a round's, between rounds). */
  drop: (schema: string) => Promise<void>
  /** A child broker on `schema` (bench/cluster-child.ts), killed at the end if still running. */
  child: (schema: string) => Promise<ClusterChild>
}

// The server, without a password a URL may carry.
const where = (): string => process.env.DATABASE_URL?.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@') ??
  `${process.env.PGHOST ?? 'localhost'}:${process.env.PGPORT ?? 5432}`

/**
 * Runs `body` against PostgreSQL as scenario `name`, or reports it skipped. Prints the RESULT
 * line when `body` returns; exits 1 (after dropping its schemas and killing its children) if a
 * check failed or anything threw.
 */
export async function withPostgres (name: string, body: (db: Postgres, scenario: Scenario) => Promise<void>): Promise<void> {
  // node-postgres names the user after $USER, which a runner's environment may lack; children inherit it.
  if (process.env.DATABASE_URL === undefined && process.env.PGUSER === undefined && process.env.USER === undefined) {
    process.env.PGUSER = userInfo().username
  }
  const scenario = new Scenario(name)
  const admin = new pg.Pool({ connectionString: process.env.DATABASE_URL, connectionTimeoutMillis: 5000 })
  admin.on('error', () => {})
  try {
    await admin.query('SELECT 1')
  } catch (err) {
    await admin.end()
    const unreachable = `PostgreSQL unreachable at ${where()} (${(err as Error).message}); set DATABASE_URL (or PGHOST/PGPORT/PGUSER) to run it`
    if (process.env.CI === 'true') {
      console.error(`bench: ${name}: failed (CI=true): ${unreachable}`)
      process.exitCode = 1
      return
    }
    const message = `skipped: ${unreachable}`
    console.error(`bench: ${name}: ${message}`)
    scenario.note(message)
    scenario.done()
    return
  }
  const schemas: string[] = []
  const children: ClusterChild[] = []
  const db: Postgres = {
    admin,
    schema: (label) => {
      const schema = `bench_${process.pid}_${label}`
      schemas.push(schema)
      return schema
    },
    drop: async (schema) => { await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`) },
    child: async (schema) => {
      const child = new ClusterChild(schema)
      children.push(child)
      await child.up
      return child
    }
  }
  let failure: unknown
  const loadBefore = loadavg()[0] as number
  try {
    await body(db, scenario)
  } catch (err) {
    failure = err
  }
  for (const child of children) child.kill()
  for (const schema of schemas) {
    try {
      await db.drop(schema)
    } catch (err) {
      console.error(`bench: ${name}: could not drop schema ${schema}: ${(err as Error).message}`)
    }
  }
  await admin.end()
  if (failure !== undefined) {
    console.error(failure instanceof CheckFailed ? `check failed: ${failure.message}` : failure)
    process.exit(1)
  }
  // The machine's other work shows in these figures, in the tails most of all.
  scenario.note(`1-minute load average ${loadBefore.toFixed(1)} before, ${(loadavg()[0] as number).toFixed(1)} after, on ${cpus().length} CPUs`)
  scenario.done()
  // A broker's pool or LISTEN connection left open must not hold the process.
  setTimeout(() => process.exit(0), 100).unref()
}

const CHILD = fileURLToPath(new URL('./cluster-child.js', import.meta.url))

/**
 * A broker in a child process on one schema (bench/cluster-child.ts), with the real clock.
 * Requests go over IPC; `onExpired` hears each `expired` event there, and `errors` collects
 * its `error` events.
 */
export class ClusterChild {
  readonly process: ChildProcess
  readonly up: Promise<void>
  readonly errors: string[] = []
  onExpired: ((id: number, at: number) => void) | undefined
  #seq = 0
  readonly #waiting = new Map<number, { resolve: (answer: any) => void, reject: (err: Error) => void }>()

  constructor (schema: string) {
    this.process = fork(CHILD, [schema], { env: { ...process.env, BENCH_SECRET: SECRET }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    this.up = new Promise((resolve, reject) => {
      this.process.once('exit', (code, signal) => {
        const err = new Error(`cluster child exited (${signal ?? String(code)})`)
        reject(err)
        for (const { reject } of this.#waiting.values()) reject(err)
        this.#waiting.clear()
      })
      this.process.on('message', (message: Record<string, any>) => {
        if (message.up !== undefined) resolve()
        else if (message.expired !== undefined) this.onExpired?.(message.expired, message.at)
        else if (message.error !== undefined) this.errors.push(`${message.error}: ${message.message}`)
        else {
          this.#waiting.get(message.seq)?.resolve(message.answer)
          this.#waiting.delete(message.seq)
        }
      })
    })
    this.up.catch(() => {})
  }

  /** Sends one request; resolves with its answer. */
  ask (request: Record<string, unknown>): Promise<any> {
    const seq = ++this.#seq
    return new Promise((resolve, reject) => {
      this.#waiting.set(seq, { resolve, reject })
      this.process.send({ seq, ...request })
    })
  }

  /** SIGKILL, if still running. */
  kill (): void {
    if (this.process.exitCode === null && this.process.signalCode === null) this.process.kill('SIGKILL')
  }
}

/** The median of some numbers. */
export function median (values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)] as number
}
