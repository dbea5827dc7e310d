import type { Core } from './core.js'
import { deferred } from './group-commit.js'
import type { Awaitable, CommandRecord, DeviceRecord, ExpiringPage, SharedSpace } from './store/store.js'
import { TimerWheel } from './timer-wheel.js'
import { held, Pacer, stopwatch } from './turns.js'

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
 * On a shared store, how often each broker looks for due commands that no broker expired: those
 * of a process that died. A command is claimed once it is a tick overdue, so a live owner's
 * wheel normally wins; an orphan expires at most a tick plus this late.
 */
export const SWEEP_MS = 1000

/**
 * Expires commands when their lifetime runs out: one timer wheel for the commands this broker
 * inserted and, at start-up, a recovery that expires what fell due while the broker was down
 * and arms the rest, a bounded step per event-loop turn. On a shared store there is no
 * recovery: every broker sweeps the store for overdue commands instead (see {@link SWEEP_MS}),
 * so a process that dies leaves no orphans. Deletes in the store, then tells the `expired`
 * listeners and the update subscribers of each command that was never updated. A turn of
 * the wheel or of recovery expires in pieces until 5 ms (TURN_MS) are spent (see {@link Pacer}),
 * and both wait, a tick at a time, while the store says it is behind (`Store.behind`).
 */
export class Expiry {
  /** Resolves once start-up recovery is done (on a shared store: once its bus listens). */
  readonly ready: Promise<RecoveryReport>
  readonly #core: Core
  readonly #wheel: TimerWheel
  // Recovery steps through ids (recoveredTo, recoverUpTo], then resolves `ready`; the upper
  // bound is read by the first step, and recoveredTo is undefined once the last page is read.
  #recoveredTo: number | undefined = 0
  #recoverUpTo: number | undefined
  // Commands recovery found due and has not expired yet: a page's worth at most, expired in
  // pieces that fit a turn (a million due at a restart after a long outage must not block).
  #due: number[] = []
  readonly #pacer: Pacer
  readonly #report: RecoveryReport = { expired: 0, rearmed: 0 }
  readonly #resolveReady: (report: RecoveryReport) => void
  #immediate: NodeJS.Immediate | undefined
  #timer: unknown
  // A sweep's claims are under way.
  #sweeping = false
  #closed = false

  constructor (core: Core) {
    this.#core = core
    const { clock, options } = core
    this.#wheel = new TimerWheel({ clock, tick: options.tick, batch: options.expiryBatch, hold: this.#held, onExpire: (ids) => { void this.#expire(ids) } })
    this.#pacer = new Pacer(stopwatch(clock), options.expiryBatch)
    const ready = deferred<RecoveryReport>()
    this.ready = ready.promise
    this.#resolveReady = ready.resolve
    const { shared } = core
    if (shared === undefined) {
      // Recovery waits a turn, so listeners attached right after createBroker() see its events.
      this.#immediate = setImmediate(this.#recover)
      return
    }
    this.#timer = clock.setTimeout(this.#sweep, SWEEP_MS)
    const resolve = (): void => { this.#resolveReady({ ...this.#report }) }
    if (shared.bus.ready === undefined) resolve()
    else {
      shared.bus.ready.then(resolve, (err: unknown) => {
        core.fail('ERR_STORE', 'the store\'s event bus failed to start', err)
        resolve()
      })
    }
  }

  /** Commands armed in the wheel. */
  get timers (): number {
    return this.#wheel.size
  }

  /** How late (ms) the wheel's last firing was for its most overdue command. */
  get lag (): number {
    return this.#wheel.lag
  }

  /** Arms a committed command's expiry; nothing once closed. */
  arm (id: number, expiresAt: number): void {
    if (!this.#closed) this.#wheel.add(id, expiresAt)
  }

  /** Stops the wheel, recovery and the sweep (nothing of them runs after); `ready` resolves with what recovery had done. */
  close (): void {
    this.#closed = true
    this.#wheel.close()
    if (this.#immediate !== undefined) clearImmediate(this.#immediate)
    if (this.#timer !== undefined) this.#core.clock.clearTimeout(this.#timer)
    this.#immediate = undefined
    this.#timer = undefined
    this.#resolveReady({ ...this.#report })
  }

  // Whether the store asks writes that can wait to wait (see Store.behind). A store that cannot
  // say is reported, and expiry goes on.
  readonly #held = (): boolean => held(this.#core, 'expiring anyway')

  // Expires the commands among `ids` that are due, and reports those never updated.
  // Resolves to how many left the store.
  #expire (ids: number[]): Awaitable<number> {
    const core = this.#core
    const now = core.clock.now()
    let removed
    try {
      removed = core.store.expireCommands(ids, now)
    } catch (err) {
      return this.#failed(ids, now, err)
    }
    if (removed instanceof Promise) {
      return removed.then((records) => this.#expired(records), (err: unknown) => this.#failed(ids, now, err))
    }
    return this.#expired(removed)
  }

  #failed (ids: number[], now: number, err: unknown): number {
    // Re-armed before reporting: a listener may close the broker, and then the wheel too.
    for (const id of ids) this.arm(id, now + RETRY_MS)
    this.#core.fail('ERR_STORE', 'expiring commands failed; retrying', err)
    return 0
  }

  // Reports the commands an expiry removed; returns (once reported) how many there were.
  #expired (removed: CommandRecord[]): Awaitable<number> {
    const core = this.#core
    // A listener closed the broker while this expiry was under way: the rest go unreported.
    if (core.closed) return removed.length
    const pending = removed.filter((record) => !record.updated)
    if (core.shared === undefined) for (const record of pending) core.pending.uncount(record)
    // A command whose device was deleted is gone already: it expires unreported. Devices are
    // read once each; on a store that answers later, all at once.
    const devices = new Map<string, Awaitable<DeviceRecord | undefined>>()
    let later = false
    try {
      for (const { deviceId } of pending) {
        if (devices.has(deviceId)) continue
        const device = core.store.getDevice(deviceId)
        later ||= device instanceof Promise
        devices.set(deviceId, device)
      }
    } catch (err) {
      core.fail('ERR_STORE', 'reading the devices of expired commands failed; they expired unreported', err)
      return removed.length
    }
    if (!later) {
      this.#tell(pending, devices as Map<string, DeviceRecord | undefined>)
      return removed.length
    }
    const read = [...devices].map(async ([id, device]) => { devices.set(id, await device) })
    return Promise.all(read).then(() => {
      this.#tell(pending, devices as Map<string, DeviceRecord | undefined>)
      return removed.length
    }, (err: unknown) => {
      core.fail('ERR_STORE', 'reading the devices of expired commands failed; they expired unreported', err)
      return removed.length
    })
  }

  #tell (pending: CommandRecord[], devices: ReadonlyMap<string, DeviceRecord | undefined>): void {
    const core = this.#core
    for (const record of pending) {
      // A listener may have closed the broker, and with it the store: the rest go unreported.
      if (core.closed) return
      const device = devices.get(record.deviceId)
      if (device === undefined) continue
      core.emitExpired(record, device)
      core.publishExpired(record, device)
    }
  }

  readonly #recover = (): void => {
    this.#immediate = undefined
    this.#timer = undefined
    this.#pacer.begin()
    if (this.#due.length > 0) {
      void this.#drain()
      return
    }
    const core = this.#core
    let step: Awaitable<ExpiringPage> | undefined
    try {
      // The first step reads how far recovery goes: no id above it existed at start-up.
      const upTo = this.#recoverUpTo ?? core.store.lastCommandId()
      if (upTo instanceof Promise) {
        upTo.then((id) => { this.#recoverUpTo = id; this.#recover() }, (err: unknown) => { this.#recoveryFailed(err) })
        return
      }
      this.#recoverUpTo = upTo
      // One page per event-loop turn, no bigger than what expiry may do in one turn.
      step = core.store.expiringCommands(this.#recoveredTo as number, upTo, core.options.expiryBatch)
    } catch (err) {
      this.#recoveryFailed(err)
      return
    }
    if (step instanceof Promise) step.then((page) => { void this.#recovered(page) }, (err: unknown) => { this.#recoveryFailed(err) })
    else void this.#recovered(step)
  }

  #recoveryFailed (err: unknown): void {
    if (this.#closed) return
    this.#timer = this.#core.clock.setTimeout(this.#recover, RETRY_MS)
    this.#core.fail('ERR_STORE', 'start-up recovery failed; retrying', err)
  }

  async #recovered (page: ExpiringPage): Promise<void> {
    if (this.#closed) return
    const now = this.#core.clock.now()
    for (const [id, expiresAt] of page.entries) {
      if (expiresAt <= now) {
        this.#due.push(id)
      } else {
        this.#wheel.add(id, expiresAt)
        this.#report.rearmed++
      }
    }
    this.#recoveredTo = page.next
    await this.#drain()
  }

  // Expires what recovery found due, a piece at a time, until the turn's budget is spent; the
  // next turn carries on, and reads the next page once none are left.
  async #drain (): Promise<void> {
    let done = 0
    let held = false
    while (done < this.#due.length && !this.#pacer.spent) {
      if (this.#held()) {
        held = true
        break
      }
      const ids = this.#due.slice(done, done + this.#pacer.size)
      done += ids.length
      const expired = this.#pacer.run(ids.length, () => this.#expire(ids))
      this.#report.expired += expired instanceof Promise ? await expired : expired
      // An `expired` or `error` listener may have closed the broker.
      if (this.#closed) return
    }
    this.#due = this.#due.slice(done)
    if (this.#due.length === 0 && this.#recoveredTo === undefined) {
      this.#resolveReady({ ...this.#report })
      return
    }
    // Held: the store is behind; ask again a tick later (reads hide what is due meanwhile).
    if (held) this.#timer = this.#core.clock.setTimeout(this.#recover, this.#core.options.tick)
    else this.#immediate = setImmediate(this.#recover)
  }

  // On a shared store, every SWEEP_MS (whether or not the last sweep is done, so the cadence
  // does not drift by what the store takes): claims what is a tick overdue and no broker
  // expired, a batch a turn while whole batches come back.
  readonly #sweep = (): void => {
    this.#timer = this.#core.clock.setTimeout(this.#sweep, SWEEP_MS)
    if (this.#sweeping) return
    this.#sweeping = true
    this.#claim()
  }

  readonly #claim = (): void => {
    this.#immediate = undefined
    const core = this.#core
    let claimed
    try {
      claimed = (core.shared as SharedSpace).claimExpired(core.clock.now() - core.options.tick, core.options.expiryBatch)
    } catch (err) {
      this.#swept(0, err)
      return
    }
    if (claimed instanceof Promise) {
      claimed.then(async (records) => { this.#swept(await this.#expired(records)) }, (err: unknown) => { this.#swept(0, err) })
      return
    }
    const reported = this.#expired(claimed)
    if (reported instanceof Promise) void reported.then((count) => { this.#swept(count) })
    else this.#swept(reported)
  }

  #swept (count: number, err?: unknown): void {
    if (this.#closed) return
    if (err !== undefined) this.#core.fail('ERR_STORE', 'sweeping for overdue commands failed; retrying', err)
    if (count >= this.#core.options.expiryBatch) this.#immediate = setImmediate(this.#claim)
    else this.#sweeping = false
  }
}
