import type { Awaitable, CommandRecord, CountPage, Cursor, Store } from './store/store.js'
import { compareCursors } from './store/store.js'
import { nextTurn } from './turns.js'

/**
 * A device's pending commands (stored, never updated, not expired), as `maxPendingPerDevice`
 * counts them: loaded once from the store, then kept up to date as commands are inserted,
 * updated and expired, so refusing an insert costs a lookup, never a scan.
 */
export interface PendingCount {
  count: number
  /** The time the store count was taken at: a command that had expired by then was never counted. */
  readonly since: number
  /**
   * While the count is loading, how far the store count has looked ((timestamp, id) order,
   * undefined before the first step); null once it is loaded.
   */
  cursor: Cursor | undefined | null
}

/** Pending counts per device; see {@link PendingCount}. */
export class PendingCounts {
  readonly #store: Store
  readonly #examine: number
  readonly #counts = new Map<string, PendingCount>()
  readonly #loading = new Map<string, Promise<PendingCount>>()

  /** `examine`: most commands the store looks at per event-loop turn while loading a count. */
  constructor (store: Store, examine: number) {
    this.#store = store
    this.#examine = examine
  }

  /** The device's count if it is loaded, else undefined: then `load()` it. */
  get (deviceId: string): PendingCount | undefined {
    const count = this.#counts.get(deviceId)
    return count?.cursor === null ? count : undefined
  }

  /**
   * Loads the device's count from the store, a bounded step per event-loop turn. Returns it
   * at once if one step was enough, else a promise of it; concurrent calls share one load.
   * Throws (or rejects with) what the store threw; the next call tries again.
   */
  load (deviceId: string, now: number): PendingCount | Promise<PendingCount> {
    const loading = this.#loading.get(deviceId)
    if (loading !== undefined) return loading
    const pending: PendingCount = { count: 0, since: now, cursor: undefined }
    this.#counts.set(deviceId, pending)
    try {
      const first = this.#step(deviceId, pending)
      if (first === true) return pending
      const rest = this.#rest(deviceId, pending, first)
      this.#loading.set(deviceId, rest)
      const settled = (): void => { this.#loading.delete(deviceId) }
      rest.then(settled, settled)
      return rest
    } catch (err) {
      this.#counts.delete(deviceId)
      throw err
    }
  }

  /**
   * A command left the pending state (updated, or expired before any update), or a write
   * that counted it failed. While its device's count is loading, a command the store count
   * has not reached yet is left to it.
   */
  uncount (record: Pick<CommandRecord, 'deviceId' | 'expiresAt' | 'timestamp' | 'id'>): void {
    const pending = this.#counts.get(record.deviceId)
    if (pending === undefined || pending.count <= 0) return
    if (pending.cursor !== null && (pending.cursor === undefined || compareCursors(record, pending.cursor) > 0)) return
    // Had it expired when the store counted, it was never counted.
    if (record.expiresAt === null || record.expiresAt > pending.since) pending.count--
  }

  /** The pending commands of every device counted so far (a device is counted at its first insert). */
  get total (): number {
    let total = 0
    for (const pending of this.#counts.values()) total += pending.count
    return total
  }

  /** Forgets a device's count (its device was deleted). */
  forget (deviceId: string): void {
    this.#counts.delete(deviceId)
  }

  // One bounded step of the store count; true when the count is complete, false when a step
  // is left for the next turn, a promise of either when the store answers later.
  #step (deviceId: string, pending: PendingCount): Awaitable<boolean> {
    const page = this.#store.countPending(deviceId, pending.since, pending.cursor ?? undefined, this.#examine)
    if (page instanceof Promise) return page.then((answer) => this.#counted(pending, answer))
    return this.#counted(pending, page)
  }

  #counted (pending: PendingCount, page: CountPage): boolean {
    pending.count += page.count
    if (page.next === undefined) {
      pending.cursor = null
      return true
    }
    pending.cursor = page.next
    return false
  }

  async #rest (deviceId: string, pending: PendingCount, first: false | Promise<boolean>): Promise<PendingCount> {
    try {
      let done = first === false ? false : await first
      while (!done) {
        await nextTurn()
        const step = this.#step(deviceId, pending)
        done = step instanceof Promise ? await step : step
      }
    } catch (err) {
      this.#counts.delete(deviceId)
      throw err
    }
    return pending
  }
}
