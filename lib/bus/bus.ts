import type { CommandRecord } from '../store/store.js'

/**
 * The events seam: how a broker hears of the writes it must push to its subscribers. A store
 * alone in its process needs none (its broker publishes to itself, through a {@link LocalBus});
 * a store that processes share brings one (`SharedSpace.bus`) on which its writes publish, so
 * every broker of the cluster hears of every write, its own included.
 *
 * A bus delivers each event once to each listener, and one device's events in the order their
 * writes committed. A bus that loses its connection catches up when it is back: a listener
 * misses nothing while it stays subscribed.
 */
export interface Bus {
  /**
   * Delivers to `listener` every event published from now on; returns the function that
   * stops it. `onError` hears of failures the bus is recovering from by itself (a lost
   * connection it reconnects), and must not throw. A listener is called synchronously
   * and must not throw either.
   */
  subscribe: (listener: (event: BusEvent) => void, onError?: (error: unknown) => void) => () => void
  /**
   * Resolves once events published from now on are sure to reach the listeners subscribed
   * so far (a LISTEN is in place); rejects if the bus cannot start. Absent: at once.
   */
  readonly ready?: Promise<void> | undefined
}

/** An event of a command: inserted, updated, or expired before any update. */
export interface CommandBusEvent {
  readonly type: 'insert' | 'update' | 'expire'
  /** The command as it is after the write (as it stood, for an expiry). */
  readonly record: CommandRecord
  /** The device's network and type when the write committed: filters and rights read these. */
  readonly networkId: number | null
  readonly deviceTypeId: number | null
}

/** A device was deleted: the subscriptions made for it end. */
export interface DeviceDeletedEvent {
  readonly type: 'device-deleted'
  readonly deviceId: string
}

/** What a bus carries. */
export type BusEvent = CommandBusEvent | DeviceDeletedEvent

/**
 * The in-process bus: `publish` calls every listener at once, in the order they subscribed.
 * A listener that throws is reported to its `onError` (or rethrown when it has none) and the
 * others still hear of the event. Also the way to make a test cluster of brokers in one
 * process (see `test/fixtures/shared-store.ts`).
 */
export class LocalBus implements Bus {
  // Copied on change, so that publishing walks a list no listener can alter mid-walk.
  #listeners: ReadonlyArray<Listener> = []

  subscribe (listener: (event: BusEvent) => void, onError?: (error: unknown) => void): () => void {
    const entry: Listener = { listener, onError }
    this.#listeners = [...this.#listeners, entry]
    return () => { this.#listeners = this.#listeners.filter((other) => other !== entry) }
  }

  /** Delivers `event` to every listener now. */
  publish (event: BusEvent): void {
    for (const { listener, onError } of this.#listeners) {
      if (onError === undefined) {
        listener(event)
        continue
      }
      try {
        listener(event)
      } catch (err) {
        onError(err)
      }
    }
  }
}

interface Listener {
  readonly listener: (event: BusEvent) => void
  readonly onError: ((error: unknown) => void) | undefined
}
