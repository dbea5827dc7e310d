// Crash safety of sqliteStore under the broker: a child process writes as fast as it can and
// prints every acknowledged write; it is SIGKILLed after a random number of acknowledgements
// (never after a sleep), and the file is reopened under a fresh broker on a manual clock.
// Every acknowledged insert must be there with its twelve fields intact, unless its lifetime
// has passed, in which case start-up recovery must have expired it; every acknowledged update
// must be visible; pending commands must be re-armed.
import { spawn } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { isDeepStrictEqual } from 'node:util'
import Database from 'better-sqlite3'
import t, { type Test } from 'tap'
import { signToken } from '../../lib/auth.js'
import { createBroker } from '../../lib/broker.js'
import { manualClock } from '../../lib/manual-clock.js'
import type { Command } from '../../lib/schema.js'
import { sqliteStore } from '../../lib/store/sqlite.js'
import { formatTimestamp } from '../../lib/timestamp.js'

const CHILD = fileURLToPath(new URL('../fixtures/crash-child.ts', import.meta.url))
const SECRET = 'dGVzdC1zZWNyZXQtb2YtdGhpcnR5LXR3by1ieXRlcyE='
const ROUNDS = 22
const MAX_ACKS = 300
const TICK = 100
// CRASH_SEED=<n> replays a run.
const SEED = Number(process.env.CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31))

interface Start { k: 'start', device: { id: string, networkId: number, deviceTypeId: number }, userId: number }
interface InsertAck {
  k: 'insert'
  sent: { command: string, timestamp?: string, parameters?: unknown, lifetime?: number, status?: string, result?: unknown }
  id: number
  timestamp: string
  lastUpdated: string
  userId: number
  before: number
  after: number
  clockBefore: number
  clockAfter: number
}
interface Updating { k: 'updating', id: number, command: { status?: string | null, result?: unknown }, before: number }
interface UpdateAck { k: 'update', id: number, command: { status?: string | null, result?: unknown }, before: number, after: number }
type Line = Start | InsertAck | Updating | UpdateAck

interface Run { lines: Line[], acks: number, code: number | null, signal: NodeJS.Signals | null, stderr: string }

// mulberry32, as in the child.
function prng (seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6D2B79F5) >>> 0
    let x = state
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

/** Runs the child on `file` and SIGKILLs it once it has printed `killAfter` acknowledgements. */
function runChild (file: string, seed: number, killAfter: number): Promise<Run> {
  return new Promise((resolve, reject) => {
    // tap loads .ts through --import loaders in execArgv; the child gets the same ones.
    const child = spawn(process.execPath, [...process.execArgv, CHILD, file, String(seed)], { stdio: ['ignore', 'pipe', 'pipe'] })
    const lines: Line[] = []
    let acks = 0
    let partial = ''
    let stderr = ''
    child.stdout.setEncoding('utf8')
    child.stderr.setEncoding('utf8')
    child.stdout.on('data', (chunk: string) => {
      const parts = (partial + chunk).split('\n')
      partial = parts.pop() as string
      for (const text of parts) {
        let line: Line
        try {
          line = JSON.parse(text) as Line
        } catch {
          child.kill('SIGKILL')
          reject(new Error(`the child printed a line that is not JSON: ${text}`))
          return
        }
        lines.push(line)
        if (line.k === 'insert' || line.k === 'update') acks++
        if (acks >= killAfter && child.exitCode === null && child.signalCode === null && !child.killed) child.kill('SIGKILL')
      }
    })
    child.stderr.on('data', (chunk: string) => { stderr += chunk })
    child.on('error', reject)
    // 'close': the process has exited and its pipes are drained, so every line it wrote is here.
    child.on('close', (code, signal) => { resolve({ lines, acks, code, signal, stderr }) })
  })
}

/** Epoch ms of a wire timestamp (UTC, no zone). */
function epoch (wire: string): number {
  return Date.parse(wire + 'Z')
}

interface Tally { acknowledged: number, recovered: number, lost: number, present: number, expiredAtStart: number, updates: number, rearmed: number }

async function round (t: Test, file: string, seed: number, killAfter: number, offset: number, tally: Tally): Promise<void> {
  const run = await runChild(file, seed, killAfter)
  const label = `seed ${seed}, kill after ${killAfter} acks`
  if (run.signal !== 'SIGKILL') {
    t.fail(`${label}: the child ended on its own (code ${String(run.code)}, signal ${String(run.signal)}): ${run.stderr}`)
    return
  }
  t.ok(run.acks >= killAfter, `${label}: killed after ${run.acks} acknowledged writes`)
  const start = run.lines[0]
  if (start?.k !== 'start') {
    t.fail(`${label}: no start line`)
    return
  }
  const inserts = run.lines.filter((line): line is InsertAck => line.k === 'insert')
  const updates = new Map(run.lines.filter((line): line is UpdateAck => line.k === 'update').map((line) => [line.id, line]))
  // Updates sent but never acknowledged: each may or may not have committed.
  const unacknowledged = new Map(run.lines.filter((line): line is Updating => line.k === 'updating' && !updates.has(line.id)).map((line) => [line.id, line]))

  // The restart happens at `now`, up to 2.5 s after the kill: some short lifetimes have passed.
  const now = Date.now() + offset
  // What start-up recovery must find: every row with an expiry, due or not, as the file holds it.
  const raw = new Database(file, { readonly: true })
  const due = raw.prepare('SELECT count(*) FROM commands WHERE expires_at IS NOT NULL AND expires_at <= ?').pluck().get(now) as number
  const notDue = raw.prepare('SELECT count(*) FROM commands WHERE expires_at > ?').pluck().get(now) as number
  raw.close()

  const clock = manualClock(now)
  const store = sqliteStore(file)
  const broker = createBroker(store, { secret: SECRET, clock, tick: TICK })
  const expired: Command[] = []
  const errors: unknown[] = []
  broker.on('expired', (command) => { expired.push(command) })
  broker.on('error', (err) => { errors.push(err) })
  try {
    const report = await broker.ready
    t.strictSame(report, { expired: due, rearmed: notDue }, `${label}: recovery expired what was due and re-armed the rest`)
    const expiring = new Map(store.expiringCommands(0, Number.MAX_SAFE_INTEGER, 1e9).entries)
    t.equal(expiring.size, notDue, `${label}: nothing due is left in the file`)
    const admin = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'] }, { secret: SECRET, now })

    let lost = 0
    const pendingIds: number[] = []
    for (const ack of inserts) {
      tally.acknowledged++
      const { sent } = ack
      const lifetime = sent.lifetime ?? null
      // A lifetime runs on the broker's timing clock from its acceptance: the stored expiry must
      // fall in the window the child measured around the call. A command no longer stored had
      // its expiry at the earliest in that window.
      const stored = expiring.get(ack.id)
      const earliest = lifetime === null ? null : ack.clockBefore + lifetime * 1000
      const latest = lifetime === null ? null : ack.clockAfter + lifetime * 1000
      const expiresAt = stored ?? earliest
      const reply = await broker.handle({ action: 'command/get', requestId: ack.id, deviceId: start.device.id, commandId: ack.id }, admin)
      if (expiresAt !== null && expiresAt <= now) {
        const gone = reply.status === 'error' && reply.code === 404 && reply.error === `Command with id = ${ack.id} not found` && !expiring.has(ack.id)
        if (gone) {
          tally.expiredAtStart++
          tally.recovered++
        } else {
          lost++
          t.fail(`${label}: command ${ack.id} should have expired at start-up`, { reply, expiresAt, now })
        }
        continue
      }
      const original: Command = {
        id: ack.id,
        command: sent.command,
        timestamp: ack.timestamp,
        lastUpdated: ack.timestamp,
        userId: start.userId,
        deviceId: start.device.id,
        networkId: start.device.networkId,
        deviceTypeId: start.device.deviceTypeId,
        parameters: (sent.parameters ?? null) as Command['parameters'],
        lifetime,
        status: sent.status ?? null,
        result: (sent.result ?? null) as Command['result']
      }
      // The reply's timestamp is the client's, or the broker's clock during the call.
      const stamped = epoch(ack.timestamp)
      const replyOk = ack.lastUpdated === ack.timestamp && ack.userId === start.userId &&
        (sent.timestamp === undefined ? stamped >= ack.before && stamped <= ack.after : ack.timestamp === formatTimestamp(Date.parse(sent.timestamp)))
      const actual = reply.status === 'success' ? reply.command as Command : undefined
      // The command after an update (each command gets at most one): lastUpdated is the
      // broker's clock during the update call, so it is taken from `actual` if it falls there.
      const updated = (u: Updating | UpdateAck): Command => {
        const after = 'after' in u ? u.after : Infinity
        const at = actual === undefined ? NaN : epoch(actual.lastUpdated)
        return {
          ...original,
          lastUpdated: at >= u.before && at <= after ? (actual as Command).lastUpdated : 'outside the update call',
          // null is "not sent": the stored value stays, as DeviceHive reads it.
          status: u.command.status !== undefined && u.command.status !== null ? u.command.status : original.status,
          result: u.command.result !== undefined && u.command.result !== null ? u.command.result as Command['result'] : original.result
        }
      }
      const update = updates.get(ack.id)
      const maybe = unacknowledged.get(ack.id)
      let expected = original
      if (update !== undefined) {
        expected = updated(update)
        tally.updates++
      } else if (maybe !== undefined && isDeepStrictEqual(actual, updated(maybe))) {
        expected = updated(maybe)
      }
      const armed = earliest === null || latest === null ? !expiring.has(ack.id) : stored !== undefined && stored >= earliest && stored <= latest
      if (replyOk && armed && isDeepStrictEqual(actual, expected)) {
        tally.present++
        tally.recovered++
        if (expiresAt !== null && expected === original) pendingIds.push(ack.id)
      } else {
        lost++
        t.fail(`${label}: command ${ack.id} is not intact`, { actual, expected, replyOk, armed, expiresAt, stored: expiring.get(ack.id), lines: run.lines.filter((line) => 'id' in line && line.id === ack.id) })
      }
    }
    t.equal(lost, 0, `${label}: ${inserts.length} acknowledged inserts (${updates.size} updates), none lost`)
    tally.lost += lost
    tally.rearmed += report.rearmed

    // Re-armed means armed: past the longest lifetime everything with an expiry is gone, and
    // each pending acknowledged command was reported expired exactly once.
    const before = expired.length
    clock.advance(3600_000 + 2 * TICK)
    t.equal(store.expiringCommands(0, Number.MAX_SAFE_INTEGER, 1e9).entries.length, 0, `${label}: every re-armed command fired`)
    const fired = expired.slice(before).map((command) => command.id)
    t.ok(pendingIds.every((id) => fired.filter((x) => x === id).length === 1), `${label}: the ${pendingIds.length} pending acknowledged commands were re-armed and expired`)
    t.strictSame(errors, [], `${label}: no broker errors`)
  } finally {
    await broker.close()
  }
}

t.test('sqlite-store-crash: no acknowledged insert is lost to SIGKILL', async (t) => {
  t.comment(`seed ${SEED} (CRASH_SEED=${SEED} replays it)`)
  const random = prng(SEED)
  const dir = t.testdir()
  const tally: Tally = { acknowledged: 0, recovered: 0, lost: 0, present: 0, expiredAtStart: 0, updates: 0, rearmed: 0 }
  const plan = Array.from({ length: ROUNDS }, (_, i) => ({
    file: path.join(dir, `crash-${i}.db`),
    seed: Math.floor(random() * 2 ** 31),
    killAfter: 1 + Math.floor(random() * MAX_ACKS),
    offset: Math.floor(random() * 2500)
  }))
  // Two rounds at a time, each on its own file.
  for (let i = 0; i < plan.length; i += 2) {
    await Promise.all(plan.slice(i, i + 2).map((p) => round(t, p.file, p.seed, p.killAfter, p.offset, tally)))
  }
  t.comment(`acknowledged ${tally.acknowledged}, recovered ${tally.recovered}, lost ${tally.lost}` +
    ` (${tally.present} present, ${tally.expiredAtStart} expired at start-up, ${tally.updates} updates checked,` +
    ` ${tally.rearmed} re-armed) in ${ROUNDS} SIGKILL rounds`)
  t.ok(tally.acknowledged >= ROUNDS, 'every round acknowledged at least one write')
  t.equal(tally.recovered, tally.acknowledged, 'every acknowledged insert was recovered')
  t.equal(tally.lost, 0, 'lost 0')
})
