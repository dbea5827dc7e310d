import type { CommandBusEvent } from './bus/bus.js'
import type { Command } from './schema.js'
import type { CommandRecord, DeviceRecord } from './store/store.js'
import { freezeCommand, toCommand } from './wire.js'

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
    this.#command ??= freezeCommand(toCommand(this.record))
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

// Buckets are intrusive doubly-linked lists, a bucket its own sentinel: removing a subscriber
// unlinks its nodes, O(1) each, whatever else is filed. (Sets were O(1) on average, but a Set
// that shrinks rehashes all it holds in one call: with a million subscriptions closing, turns
// of tens of milliseconds.)
interface Link {
  prev: Link
  next: Link
}

// A subscriber's place in one bucket. An unlinked node keeps its `next`, so a publish that is
// visiting it when it goes (a push may end subscriptions) carries on from there.
class Node implements Link {
  prev: Link
  next: Link
  readonly entry: Entry
  bucket: Bucket | undefined

  constructor (bucket: Bucket, entry: Entry) {
    this.entry = entry
    this.bucket = bucket
    // Appended: a publish under way meets it last, and skips it by `since`.
    this.prev = bucket.prev
    this.next = bucket
    bucket.prev.next = this
    bucket.prev = this
    bucket.size++
  }

  // Once only: the remover that calls it is idempotent.
  unlink (): void {
    const bucket = this.bucket as Bucket
    this.bucket = undefined
    this.prev.next = this.next
    this.next.prev = this.prev
    // Dropped once empty, so the keys of gone devices do not pile up.
    if (--bucket.size === 0) bucket.drop()
  }
}

// The subscribers filed under one key (or `everything`); `drop` forgets an empty one.
class Bucket implements Link {
  prev: Link = this
  next: Link = this
  size = 0
  readonly drop: () => void

  constructor (drop: () => void) {
    this.drop = drop
  }
}

const KEEP = (): void => {}

// Subscribers of one event kind, each filed under its most selective dimension only: its
// device, else each of its networks, else each of its device types, else `everything`. An
// event has one device, one network and one type, so it meets each subscriber at most once.
class Index {
  readonly devices = new Map<string, Bucket>()
  readonly networks = new Map<number, Bucket>()
  readonly deviceTypes = new Map<number, Bucket>()
  readonly everything = new Bucket(KEEP)
  size = 0
}

/**
 * Routes command events to subscribers, indexed by device, network and device type, so an
 * event reaches only the subscribers that can match it: an insert for one device never runs
 * the handlers of another's. Adding and removing a subscriber cost what it is filed under,
 * whatever else is subscribed; a subscriber added during a publish does not receive that
 * event, and one removed during it before its turn does not either.
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
    let nodes: Node | Node[]
    if (filter.deviceId !== undefined) {
      nodes = new Node(slot(index.devices, filter.deviceId), entry)
    } else if (filter.networkIds !== undefined) {
      nodes = [...new Set(filter.networkIds)].map((id) => new Node(slot(index.networks, id), entry))
    } else if (filter.deviceTypeIds !== undefined) {
      nodes = [...new Set(filter.deviceTypeIds)].map((id) => new Node(slot(index.deviceTypes, id), entry))
    } else {
      nodes = new Node(index.everything, entry)
    }
    index.size++
    let removed = false
    return () => {
      if (removed) return
      removed = true
      index.size--
      if (nodes instanceof Node) nodes.unlink()
      else for (const node of nodes) node.unlink()
    }
  }

  /** The subscribers made for this device id (filtered by `deviceId`), of both kinds. */
  forDevice (deviceId: string): Subscriber[] {
    const found: Subscriber[] = []
    for (const index of [this.#inserts, this.#updates]) {
      const bucket = index.devices.get(deviceId)
      if (bucket === undefined) continue
      for (let link = bucket.next; link !== bucket; link = link.next) found.push((link as Node).entry.subscriber)
    }
    return found
  }

  /**
   * Delivers an insert (or, with `updates`, an update) to every subscriber it matches. Only
   * the buckets it can match are looked up; a bucket that is there has subscribers.
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

  #deliver (bucket: Bucket | undefined, event: CommandEvent, published: number): void {
    if (bucket === undefined) return
    for (let link = bucket.next; link !== bucket; link = link.next) {
      const node = link as Node
      // Unlinked during this publish (its `next` still leads on), or added during it.
      if (node.bucket === undefined) continue
      const { subscriber, since } = node.entry
      if (since >= published || !matches(subscriber.filter, event)) continue
      try {
        subscriber.deliver(event)
      } catch (err) {
        this.#onError(err, subscriber)
      }
    }
  }
}

function slot<K> (map: Map<K, Bucket>, key: K): Bucket {
  let bucket = map.get(key)
  if (bucket === undefined) {
    bucket = new Bucket(() => { map.delete(key) })
    map.set(key, bucket)
  }
  return bucket
}
