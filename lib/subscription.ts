import { canSee, type Grant } from './auth.js'
import type { Core } from './core.js'
import type { CommandEvent, Subscriber, SubscriptionFilter } from './fan-out.js'
import type { Push } from './schema.js'
import type { SessionState, SessionSubscription, SubscriptionListing } from './session.js'
import type { Awaitable, CommandPage, CommandRecord, CommandScan } from './store/store.js'
import { largestCommand, nextTurn, StepSize, STEP_EXAMINE } from './turns.js'
import { toCommand } from './wire.js'

/** What `command/subscribe` asked for, checked. */
export interface SubscriptionSpec {
  readonly id: number
  readonly session: SessionState
  /** The rights of the token it was made with, fixed for its life (spec §10). */
  readonly grant: Grant
  readonly filter: SubscriptionFilter
  /** Receives `command/update` pushes (`returnUpdatedCommands`) instead of inserts. */
  readonly updates: boolean
  readonly listing: SubscriptionListing
  /** History to replay first: commands after `after`, at most `limit`; absent for none. */
  readonly history: { readonly after: number, readonly limit: number } | undefined
}

/**
 * A session's subscription. It holds its pushes until its subscribe reply is out; replays
 * its history, a bounded scan step per event-loop turn, while live events wait in a buffer;
 * then delivers what waited, but for what the history already sent, and goes live. Each push
 * is checked against the subscription's own rights and the device's network and type now.
 */
export class Subscription implements Subscriber, SessionSubscription {
  readonly id: number
  readonly listing: SubscriptionListing
  readonly filter: SubscriptionFilter
  readonly updates: boolean
  readonly #core: Core
  readonly #spec: SubscriptionSpec
  readonly #action: Push['action']
  // Pushes made before the reply is out; undefined once it is.
  #held: Push[] | undefined = []
  // Live events that came during the replay; undefined when no replay is under way.
  #waiting: CommandEvent[] | undefined
  // What the replay sent, to skip live events it covered already.
  readonly #sent = new Set<string | number>()
  // Set by start(), which runs right after construction.
  #remove!: () => void
  #ended = false

  constructor (core: Core, spec: SubscriptionSpec) {
    this.#core = core
    this.#spec = spec
    this.id = spec.id
    this.listing = spec.listing
    this.filter = spec.filter
    this.updates = spec.updates
    this.#action = spec.updates ? 'command/update' : 'command/insert'
  }

  /**
   * Registers with the fan-out (live events wait from here on), reads the first step of
   * history, and hands back the rest of the replay to start once the reply is out. Throws
   * (or rejects with) what the store threw, having left nothing registered.
   */
  start (): Awaitable<void> {
    this.#remove = this.#core.fanOut.add(this)
    this.#spec.session.subscriptions.set(this.id, this)
    const { history } = this.#spec
    if (history === undefined) return
    this.#waiting = []
    const replay = new Replay(this.#core, this.#scan(history.after), history.limit)
    let first
    try {
      first = replay.step()
    } catch (err) {
      this.end()
      throw err
    }
    if (first instanceof Promise) {
      return first.then((rows) => {
        this.#replayed(rows)
        void this.#continue(replay)
      }, (err: unknown) => {
        this.end()
        throw err
      })
    }
    this.#replayed(first)
    void this.#continue(replay)
  }

  /** Releases the pushes held until the reply was out. */
  release (): void {
    const held = this.#held
    this.#held = undefined
    if (held !== undefined) for (const push of held) this.#spec.session.push(push)
  }

  deliver (event: CommandEvent): void {
    // A closed session's subscriptions stay filed until the reaper ends them: they send nothing.
    if (this.#ended || this.#spec.session.closed || !canSee(this.#spec.grant, event.networkId, event.deviceTypeId)) return
    const waiting = this.#waiting
    if (waiting === undefined) {
      this.#send(event.command)
      return
    }
    waiting.push(event)
    // A replay that live events outrun ends where it is: they wait in memory meanwhile.
    if (waiting.length >= this.#core.options.maxHistory) this.#live()
  }

  end (): void {
    this.#ended = true
    this.#waiting = undefined
    this.#remove()
    this.#spec.session.subscriptions.delete(this.id)
  }

  async #continue (replay: Replay): Promise<void> {
    try {
      while (!replay.done) {
        await nextTurn()
        // Ended, its session closed, or live events outran it: either way the replay is over.
        if (this.#waiting === undefined || this.#spec.session.closed) return
        const step = replay.step()
        const rows = step instanceof Promise ? await step : step
        // Ended meanwhile (a store that answers later): nothing more goes out.
        if (this.#waiting === undefined || this.#spec.session.closed) return
        this.#replayed(rows)
      }
    } catch (err) {
      this.#core.fail('ERR_STORE', `replaying the history of subscription ${this.id} failed; it goes on live`, err)
    }
    this.#live()
  }

  #replayed (records: CommandRecord[]): void {
    for (const record of records) {
      this.#sent.add(this.#key(record))
      this.#send(toCommand(record))
    }
  }

  // Ends the replay: what waited goes out, but for what the replay sent.
  #live (): void {
    const waiting = this.#waiting
    this.#waiting = undefined
    // Ended, already live, or its session closed (a push may close its own): nothing to send.
    if (waiting === undefined || this.#spec.session.closed) return
    for (const event of waiting) {
      if (!this.#sent.has(this.#key(event.record))) this.#send(event.command)
    }
    this.#sent.clear()
  }

  // An insert is sent once; an update once per state (it may be updated again).
  #key (record: CommandRecord): string | number {
    return this.updates ? `${record.id}:${record.lastUpdated}` : record.id
  }

  #send (command: Push['command']): void {
    const push: Push = { action: this.#action, command, subscriptionId: this.id }
    if (this.#held !== undefined) this.#held.push(push)
    else this.#spec.session.push(push)
  }

  // The history scan: the subscription's filter, narrowed to what its rights may see.
  #scan (after: number): Omit<CommandScan, 'cursor' | 'take'> {
    const { filter, grant } = this.#spec
    // Subscribe refused a grant of no network (n absent): this one has a set, or '*'.
    const networks = grant.networks === '*' ? undefined : [...grant.networks as ReadonlySet<number>]
    const deviceTypes = grant.deviceTypes === '*' ? undefined : [...grant.deviceTypes]
    return {
      deviceId: filter.deviceId,
      order: 'ASC',
      after: this.updates ? undefined : after,
      updatedAfter: this.updates ? after : undefined,
      names: filter.names,
      networkIds: filter.deviceId === undefined ? intersect(filter.networkIds, networks) : networks,
      deviceTypeIds: filter.deviceId === undefined ? intersect(filter.deviceTypeIds, deviceTypes) : deviceTypes,
      examine: STEP_EXAMINE
    }
  }
}

// A history scan, one bounded step at a time, up to `limit` commands.
class Replay {
  readonly #core: Core
  readonly #scan: Omit<CommandScan, 'cursor' | 'take'>
  readonly #size: StepSize
  #left: number
  #next: CommandPage['next']
  done = false

  constructor (core: Core, scan: Omit<CommandScan, 'cursor' | 'take'>, limit: number) {
    this.#core = core
    this.#scan = scan
    this.#size = new StepSize(largestCommand(core.options.maxPayloadBytes))
    this.#left = limit
  }

  step (): Awaitable<CommandRecord[]> {
    const page = this.#core.store.scanCommands({
      ...this.#scan,
      cursor: this.#next,
      take: Math.min(this.#left, this.#size.take)
    }, this.#core.clock.now())
    return page instanceof Promise ? page.then((answer) => this.#read(answer)) : this.#read(page)
  }

  #read (page: CommandPage): CommandRecord[] {
    const rows = page.rows.slice(0, this.#left)
    for (const record of rows) this.#size.saw(record)
    this.#left -= rows.length
    this.#next = page.next
    this.done = this.#left <= 0 || page.next === undefined
    return rows
  }
}

// Both lists' common entries; either undefined means "no constraint".
function intersect (a: readonly number[] | undefined, b: readonly number[] | undefined): readonly number[] | undefined {
  if (a === undefined) return b
  if (b === undefined) return a
  const allowed = new Set(b)
  return a.filter((id) => allowed.has(id))
}
