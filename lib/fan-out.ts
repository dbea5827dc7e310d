import type { CommandBusEvent } from './bus/bus.js'
import type { Command } from './schema.js'
import type { CommandRecord, DeviceRecord } from './store/store.js'
import { deepFreeze, toCommand } from './wire.js'

/**
 * One command event on its way to subscribers: the command, and the device's network and
 * type as they are now (a device may have moved since the command was stored; filters and
 * rights read where it is). The wire form is built on first use and shared, deeply frozen,
 * by every subscriber: none of them can change what another sees, or what the store holds.
 */
export class CommandEvent implements CommandBusEvent {
  readonly type: CommandBusEvent['type']
  readonly record: CommandRecord
  readonly networkId: number | null
  readonly deviceTypeId: number | null
  #command: Command | undefined

  constructor (type: CommandBusEvent['type'], record: CommandRecord, device: Pick<DeviceRecord, 'networkId' | 'deviceTypeId'>) {
    this.type = type
    this.record = record
    this.networkId = device.networkId
    this.deviceTypeId = device.deviceTypeId
  }

  get command (): Command {
    this.#command ??= deepFreeze(toCommand(this.record))
    return this.#command
  }
}

/** Which events a subscriber receives; an absent field matches everything. */
export interface SubscriptionFilter {
  /** One device's commands; `networkIds` and `deviceTypeIds` are then not filters. */
  readonly deviceId?: string | undefined
  /** The device is in one of these networks now. */
  readonly networkIds?: readonly number[] | undefined
  /** The device is of one of these types now. */
  readonly deviceTypeIds?: readonly number[] | undefined
  /** The command's name is one of these. */
  readonly names?: readonly string[] | undefined
}

/** A subscription as the fan-out sees it. */
export interface Subscriber {
  readonly filter: SubscriptionFilter
  /** Receives update events (`returnUpdatedCommands`) instead of inserts. */
  readonly updates: boolean
  /** Called for each matching event. May throw: the error goes to the fan-out's `onError`. */
  deliver: (event: CommandEvent) => void
  /** Ends a session's subscription when its device is deleted; in-process subscribers have none. */
  end?: () => void
}

/** Whether an event falls under a filter. */
export function matches (filter: SubscriptionFilter, event: CommandEvent): boolean {
  const { record } = event
  if (filter.names !== undefined && !filter.names.includes(record.command)) return false
  if (filter.deviceId !== undefined) return filter.deviceId === record.deviceId
  if (filter.networkIds !== undefined && (event.networkId === null || !filter.networkIds.includes(event.networkId))) return false
  if (filter.deviceTypeIds !== undefined && (event.deviceTypeId === null || !filter.deviceTypeIds.includes(event.deviceTypeId))) return false
  return true
}

// A subscriber as filed: `since` is the last event published before it was added.
interface Entry {
  readonly subscriber: Subscriber
  readonly since: number
}

// Subscribers of one event kind, each filed under its most selective dimension only: its
// device, else each of its networks, else each of its device types, else `everything`. An
// event has one device, one network and one type, so it meets each subscriber at most once.
// Sets, not arrays: adding and removing a subscriber costs the same with a million others.
class Index {
  readonly devices = new Map<string, Set<Entry>>()
  readonly networks = new Map<number, Set<Entry>>()
  readonly deviceTypes = new Map<number, Set<Entry>>()
  readonly everything = new Set<Entry>()
  size = 0
}

/**
 * Routes command events to subscribers, indexed by device, network and device type, so an
 * event reaches only the subscribers that can match it: an insert for one device never runs
 * the handlers of another's. Adding and removing a subscriber cost what it is filed under,
 * whatever else is subscribed; a subscriber added during a publish does not receive that
 * event.
 */
export class FanOut {
  readonly #inserts = new Index()
  readonly #updates = new Index()
  readonly #onError: (error: unknown, subscriber: Subscriber) => void
  #published = 0

  /** `onError` receives whatever a subscriber's `deliver` throws; the other subscribers still run. */
  constructor (onError: (error: unknown, subscriber: Subscriber) => void) {
    this.#onError = onError
  }

  /** Subscribers added and not removed. */
  get size (): number {
    return this.#inserts.size + this.#updates.size
  }

  /** Whether any subscriber takes updates (or, with `updates` false, inserts): else skip the event. */
  has (updates: boolean): boolean {
    return (updates ? this.#updates : this.#inserts).size > 0
  }

  /** Adds a subscriber; returns the function that removes it (idempotent). */
  add (subscriber: Subscriber): () => void {
    const entry: Entry = { subscriber, since: this.#published }
    const index = subscriber.updates ? this.#updates : this.#inserts
    const { filter } = subscriber
    const sets: Array<Set<Entry>> = []
    if (filter.deviceId !== undefined) {
      sets.push(slot(index.devices, filter.deviceId))
    } else if (filter.networkIds !== undefined) {
      for (const id of new Set(filter.networkIds)) sets.push(slot(index.networks, id))
    } else if (filter.deviceTypeIds !== undefined) {
      for (const id of new Set(filter.deviceTypeIds)) sets.push(slot(index.deviceTypes, id))
    } else {
      sets.push(index.everything)
    }
    for (const set of sets) set.add(entry)
    index.size++
    let removed = false
    return () => {
      if (removed) return
      removed = true
      index.size--
      for (const set of sets) set.delete(entry)
      // Drop emptied sets, so the keys of gone devices do not pile up.
      if (filter.deviceId !== undefined) drop(index.devices, filter.deviceId)
      else if (filter.networkIds !== undefined) for (const id of filter.networkIds) drop(index.networks, id)
      else if (filter.deviceTypeIds !== undefined) for (const id of filter.deviceTypeIds) drop(index.deviceTypes, id)
    }
  }

  /** The subscribers made for this device id (filtered by `deviceId`), of both kinds. */
  forDevice (deviceId: string): Subscriber[] {
    const found: Subscriber[] = []
    for (const index of [this.#inserts, this.#updates]) {
      for (const entry of index.devices.get(deviceId) ?? []) found.push(entry.subscriber)
    }
    return found
  }

  /**
   * Delivers an insert (or, with `updates`, an update) to every subscriber it matches. Only
   * the sets it can match are looked up; a set that is there has subscribers.
   */
  publish (event: CommandEvent, updates: boolean): void {
    const index = updates ? this.#updates : this.#inserts
    if (index.size === 0) return
    const published = ++this.#published
    this.#deliver(index.devices.get(event.record.deviceId), event, published)
    if (event.networkId !== null) this.#deliver(index.networks.get(event.networkId), event, published)
    if (event.deviceTypeId !== null) this.#deliver(index.deviceTypes.get(event.deviceTypeId), event, published)
    this.#deliver(index.everything, event, published)
  }

  #deliver (set: Set<Entry> | undefined, event: CommandEvent, published: number): void {
    if (set === undefined || set.size === 0) return
    for (const entry of set) {
      // Set iteration visits entries added during it: those came after this event.
      if (entry.since >= published || !matches(entry.subscriber.filter, event)) continue
      try {
        entry.subscriber.deliver(event)
      } catch (err) {
        this.#onError(err, entry.subscriber)
      }
    }
  }
}

function slot<K> (map: Map<K, Set<Entry>>, key: K): Set<Entry> {
  let set = map.get(key)
  if (set === undefined) {
    set = new Set()
    map.set(key, set)
  }
  return set
}

function drop<K> (map: Map<K, Set<Entry>>, key: K): void {
  if (map.get(key)?.size === 0) map.delete(key)
}
