import type { Core } from './core.js'
import { deferred } from './group-commit.js'
import { CommandEvent } from './fan-out.js'
import type { CommandRecord } from './store/store.js'
import { TimerWheel } from './timer-wheel.js'

/** What `broker.ready` resolves to once start-up recovery is done. */
export interface RecoveryReport {
  /** Commands that fell due while the broker was down, now expired and gone. */
  expired: number
  /** Commands still pending, armed again for expiry. */
  rearmed: number
}

// After a store failure, expiry and recovery try again this much later.
const RETRY_MS = 1000

/**
 * Expires commands when their lifetime runs out: one timer wheel for every pending command,
 * and at start-up a recovery that expires what fell due while the broker was down and arms the
 * rest, a bounded step per event-loop turn. Deletes in the store, then tells the `expired`
 * listeners and the update subscribers of each command that was never updated.
 */
export class Expiry {
  /** Resolves once start-up recovery is done. */
  readonly ready: Promise<RecoveryReport>
  readonly #core: Core
  readonly #wheel: TimerWheel
  // Recovery steps through ids (recoveredTo, recoverUpTo], then resolves `ready`.
  #recoveredTo = 0
  readonly #recoverUpTo: number
  readonly #report: RecoveryReport = { expired: 0, rearmed: 0 }
  readonly #resolveReady: (report: RecoveryReport) => void
  #recoveryImmediate: NodeJS.Immediate | undefined
  #recoveryTimer: unknown

  constructor (core: Core) {
    this.#core = core
    const { clock, options } = core
    this.#wheel = new TimerWheel({ clock, tick: options.tick, batch: options.expiryBatch, onExpire: (ids) => { this.#expire(ids) } })
    this.#recoverUpTo = core.store.lastCommandId()
    const ready = deferred<RecoveryReport>()
    this.ready = ready.promise
    this.#resolveReady = ready.resolve
    // Recovery waits a turn, so listeners attached right after createBroker() see its events.
    this.#recoveryImmediate = setImmediate(this.#recover)
  }

  /** Arms a committed command's expiry. */
  arm (id: number, expiresAt: number): void {
    this.#wheel.add(id, expiresAt)
  }

  /** Stops the wheel and recovery (nothing of either runs after); `ready` resolves with what recovery had done. */
  close (): void {
    this.#wheel.close()
    if (this.#recoveryImmediate !== undefined) clearImmediate(this.#recoveryImmediate)
    if (this.#recoveryTimer !== undefined) this.#core.clock.clearTimeout(this.#recoveryTimer)
    this.#resolveReady({ ...this.#report })
  }

  // Expires the commands among `ids` that are due, and reports those never updated.
  // Returns how many left the store.
  #expire (ids: number[]): number {
    const core = this.#core
    const now = core.clock.now()
    let removed: CommandRecord[]
    try {
      removed = core.store.transaction(() => core.store.expireCommands(ids, now))
    } catch (err) {
      // Re-armed before reporting: a listener may close the broker, and then the wheel too.
      if (!core.closed) for (const id of ids) this.#wheel.add(id, now + RETRY_MS)
      core.fail('ERR_STORE', 'expiring commands failed; retrying', err)
      return 0
    }
    for (const record of removed) {
      // A listener may have closed the broker, and with it the store: the rest go unreported.
      if (core.closed) break
      if (record.updated) continue
      core.pending.uncount(record)
      // A command whose device was deleted is gone already: it expires unreported.
      const device = core.store.getDevice(record.deviceId)
      if (device === undefined) continue
      core.emitExpired(record, device)
      if (core.fanOut.has(true)) core.fanOut.publish(new CommandEvent({ ...record, status: 'expired' }, device), true)
    }
    return removed.length
  }

  readonly #recover = (): void => {
    this.#recoveryImmediate = undefined
    this.#recoveryTimer = undefined
    const core = this.#core
    let page
    try {
      // One step per event-loop turn, no bigger than what expiry may do in one turn.
      page = core.store.expiringCommands(this.#recoveredTo, this.#recoverUpTo, core.options.expiryBatch)
    } catch (err) {
      this.#recoveryTimer = core.clock.setTimeout(this.#recover, RETRY_MS)
      core.fail('ERR_STORE', 'start-up recovery failed; retrying', err)
      return
    }
    const now = core.clock.now()
    const due: number[] = []
    for (const [id, expiresAt] of page.entries) {
      if (expiresAt <= now) {
        due.push(id)
      } else {
        this.#wheel.add(id, expiresAt)
        this.#report.rearmed++
      }
    }
    if (due.length > 0) this.#report.expired += this.#expire(due)
    // An `expired` or `error` listener may have closed the broker.
    if (core.closed) return
    if (page.next === undefined) {
      this.#resolveReady({ ...this.#report })
      return
    }
    this.#recoveredTo = page.next
    this.#recoveryImmediate = setImmediate(this.#recover)
  }
}
