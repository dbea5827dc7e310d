import mittModule, { type Emitter, type Handler } from 'mitt'
import type { Command } from './schema.js'
import { matches, type CommandFilter, type CommandRecord } from './store.js'
import { deepFreeze, toCommand } from './wire.js'

/**
 * One command event on its way to subscribers. The wire form is built on
 * first use and shared, deeply frozen, by every subscriber: none of them can
 * change what another sees, or what the store holds.
 */
export class CommandEvent {
  readonly record: CommandRecord
  #command: Command | undefined

  constructor (record: CommandRecord) {
    this.record = record
  }

  get command (): Command {
    this.#command ??= deepFreeze(toCommand(this.record))
    return this.#command
  }
}

/** A subscription as the fan-out sees it. */
export interface Subscriber {
  readonly filter: CommandFilter
  /** Receives update events (`returnUpdatedCommands`) instead of inserts. */
  readonly updates: boolean
  /** Called for each matching event. May throw: the error goes to the fan-out's `onError`. */
  deliver: (event: CommandEvent) => void
}

// mitt's types describe a CommonJS module, but Node loads its ESM build, whose default
// export is the factory itself.
const mitt = mittModule as unknown as typeof mittModule.default

type Events = Record<string, CommandEvent>

// Subscribers of one event kind, each filed under its most selective dimension only: its
// device, else each of its networks, else each of its device types, else `everything`.
// A command has one device, one network and one type, so it meets each subscriber once.
interface Index {
  readonly devices: Emitter<Events>
  readonly networks: Emitter<Events>
  readonly deviceTypes: Emitter<Events>
  readonly everything: Emitter<Events>
}

const EVERYTHING = 'everything'

function index (): Index {
  return { devices: mitt(), networks: mitt(), deviceTypes: mitt(), everything: mitt() }
}

/**
 * Routes command events to subscribers through mitt emitters keyed by device,
 * network and device type, so an event reaches only the subscribers that can
 * match it: an insert for one device never runs the handlers of another's.
 */
export class FanOut {
  readonly #inserts = index()
  readonly #updates = index()
  readonly #onError: (error: unknown, subscriber: Subscriber) => void
  #insertSubscribers = 0
  #updateSubscribers = 0

  /** `onError` receives whatever a subscriber's `deliver` throws; the other subscribers still run. */
  constructor (onError: (error: unknown, subscriber: Subscriber) => void) {
    this.#onError = onError
  }

  /** Subscribers added and not removed. */
  get size (): number {
    return this.#insertSubscribers + this.#updateSubscribers
  }

  /** Whether any subscriber takes updates (or, with `updates` false, inserts): else skip the event. */
  has (updates: boolean): boolean {
    return (updates ? this.#updateSubscribers : this.#insertSubscribers) > 0
  }

  /** Adds a subscriber; returns the function that removes it (idempotent). */
  add (subscriber: Subscriber): () => void {
    const { filter } = subscriber
    const handler: Handler<CommandEvent> = (event) => {
      if (!matches(filter, event.record)) return
      try {
        subscriber.deliver(event)
      } catch (err) {
        this.#onError(err, subscriber)
      }
    }
    const target = subscriber.updates ? this.#updates : this.#inserts
    const keys: Array<[Emitter<Events>, string]> = []
    if (filter.deviceId !== undefined) {
      keys.push([target.devices, filter.deviceId])
    } else if (filter.networkIds !== undefined) {
      for (const id of new Set(filter.networkIds)) keys.push([target.networks, String(id)])
    } else if (filter.deviceTypeIds !== undefined) {
      for (const id of new Set(filter.deviceTypeIds)) keys.push([target.deviceTypes, String(id)])
    } else {
      keys.push([target.everything, EVERYTHING])
    }
    for (const [emitter, key] of keys) emitter.on(key, handler)
    const updates = subscriber.updates
    if (updates) this.#updateSubscribers++
    else this.#insertSubscribers++
    let removed = false
    return () => {
      if (removed) return
      removed = true
      if (updates) this.#updateSubscribers--
      else this.#insertSubscribers--
      for (const [emitter, key] of keys) {
        emitter.off(key, handler)
        // mitt keeps an empty list per key; drop it so keys of gone devices do not pile up.
        if (emitter.all.get(key)?.length === 0) emitter.all.delete(key)
      }
    }
  }

  /**
   * Delivers an insert (or, with `updates`, an update) of this command to every subscriber it
   * matches. Only the keys it can match are looked up, and its event is built only if one of
   * them has subscribers: removers drop emptied keys, so a key that is there has handlers.
   */
  publish (record: CommandRecord, updates: boolean): void {
    const { devices, networks, deviceTypes, everything } = updates ? this.#updates : this.#inserts
    let event: CommandEvent | undefined
    if (devices.all.has(record.deviceId)) devices.emit(record.deviceId, event ??= new CommandEvent(record))
    if (record.networkId !== null && networks.all.size > 0) {
      const key = String(record.networkId)
      if (networks.all.has(key)) networks.emit(key, event ??= new CommandEvent(record))
    }
    if (record.deviceTypeId !== null && deviceTypes.all.size > 0) {
      const key = String(record.deviceTypeId)
      if (deviceTypes.all.has(key)) deviceTypes.emit(key, event ??= new CommandEvent(record))
    }
    if (everything.all.size > 0) everything.emit(EVERYTHING, event ?? new CommandEvent(record))
  }
}
