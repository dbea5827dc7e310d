import { createHash } from 'node:crypto'
import pg from 'pg'
import { BrokerError, describeCause } from '../errors.js'
import type { Bus, BusEvent } from './bus.js'

/** Options of {@link PostgresBus}; `postgresStore()` fills them in for the bus it brings. */
export interface PostgresBusOptions {
  /** The pool the bus reads back and prunes events with: the store's. */
  pool: pg.Pool
  /**
   * The PostgreSQL schema whose `events` table the bus reads (the store creates it). The
   * channel is named after it, so every bus on one schema hears the same writes and no other.
   */
  schema: string
  /**
   * Settles when the schema is in place: the bus connects only then. If it rejects, so does
   * `ready`, and the bus stays down. Default: at once.
   */
  after?: Promise<unknown>
  /** How long, in ms, an event stays in the table for a bus that reconnects to catch up on. Default 300000 (five minutes). */
  retention?: number
  /** How often, in ms, each bus prunes events past `retention`. Default 60000. */
  pruneInterval?: number
  /**
   * How many delivered events the bus remembers, to drop one a catch-up reads again. Default
   * 16384. An event committed more than this many events after its sequence number was taken
   * (a transaction that stays open that long) is missed if the connection drops before its
   * NOTIFY arrives; the store's transactions are a few statements.
   */
  window?: number
}

/** The longest NOTIFY payload PostgreSQL takes is 8000 bytes; a larger event goes by reference. */
export const NOTIFY_LIMIT = 8000
const RETENTION = 5 * 60 * 1000
const PRUNE_INTERVAL = 60 * 1000
// Most events one prune deletes, and one catch-up step reads: each a bounded statement.
const PRUNE_STEP = 10_000
const CATCH_UP_STEP = 1000
// Delivered sequence numbers remembered to drop a second delivery (a catch-up overlaps what
// the old connection delivered). Past this many, the oldest are forgotten and the catch-up
// reads only after them.
const WINDOW = 16_384
const BACKOFF_FIRST = 50
const BACKOFF_MAX = 5000

// int8 columns as numbers: every one of the bus's fits in 2^53.
const TYPES = {
  getTypeParser: (oid: number, format?: string) => oid === 20 ? Number : pg.types.getTypeParser(oid, format as 'text')
}

/**
 * The {@link Bus} of a PostgreSQL command space: events travel by `LISTEN/NOTIFY` between
 * every process on one database and schema. A writer publishes in its own transaction (see
 * {@link PostgresBus.publish}): each event becomes a row of `events` and a NOTIFY, so it is
 * sent if and only if the write commits, and PostgreSQL delivers NOTIFYs in commit order.
 * A NOTIFY carries the event itself when it fits in {@link NOTIFY_LIMIT} bytes, else only its
 * sequence number, and the bus reads the event back from the table.
 *
 * One connection of its own (not the pool's) listens. When it fails, the bus reports the
 * failure to each listener's `onError`, reconnects with backoff (50 ms doubling to 5 s) and
 * then reads from the table every event it has not delivered, so a listener misses nothing and
 * hears nothing twice, one device's events in commit order. The footgun: it catches up only
 * on events still in the table, which keeps them for `retention` (five minutes by default):
 * an outage longer than that loses events.
 */
export class PostgresBus implements Bus {
  /** Resolves once the LISTEN is in place; rejects if the first connection, or the schema, fails. */
  readonly ready: Promise<void>
  readonly #pool: pg.Pool
  readonly #channel: string
  readonly #retention: number
  readonly #pruneInterval: number
  readonly #window: number
  readonly #application: string
  readonly #publish: pg.QueryConfig
  readonly #read: pg.QueryConfig
  readonly #readOne: pg.QueryConfig
  readonly #floorQuery: pg.QueryConfig
  readonly #prune: pg.QueryConfig
  #listeners: readonly Listener[] = []
  // The connection being set up or listening, and the one listening.
  #client: pg.Client | undefined
  #listening: pg.Client | undefined
  // Events received, in the order they are to be delivered; a catch-up holds its place.
  readonly #queue: Item[] = []
  #draining = false
  // Delivered sequence numbers above #floor, oldest first (a ring), and as a set.
  readonly #seen = new Set<number>()
  readonly #order: number[] = []
  #floor = 0
  #backoff = BACKOFF_FIRST
  #retry: NodeJS.Timeout | undefined
  #pruning: NodeJS.Timeout | undefined
  #closed = false
  #closing: Promise<void> | undefined

  constructor (options: PostgresBusOptions) {
    this.#pool = options.pool
    this.#channel = `${options.schema}.events`
    this.#retention = options.retention ?? RETENTION
    this.#pruneInterval = options.pruneInterval ?? PRUNE_INTERVAL
    this.#window = options.window ?? WINDOW
    // Names the LISTEN connection in pg_stat_activity (63 bytes at most: the schema has 56).
    this.#application = `${options.schema}:listen`
    const events = `"${options.schema}".events`
    // Sequence numbers follow the batch's order (the inner ORDER BY feeds nextval row by row),
    // and the NOTIFYs go out in that order: one device's events are delivered as written.
    this.#publish = prepared('publish', `WITH e AS (
        INSERT INTO ${events} (seq, payload)
        SELECT nextval('"${options.schema}".events_seq_seq'), u.payload
        FROM (SELECT payload FROM unnest($1::text[]) WITH ORDINALITY AS u(payload, n) ORDER BY n) u
        RETURNING seq, payload)
      SELECT count(pg_notify($2, CASE WHEN octet_length(s.seq::text) + 1 + octet_length(s.payload) <= ${NOTIFY_LIMIT - 1}
        THEN s.seq::text || ':' || s.payload ELSE s.seq::text END))
      FROM (SELECT seq, payload FROM e ORDER BY seq) s`)
    this.#read = prepared('read', `SELECT seq, payload FROM ${events} WHERE seq > $1 ORDER BY seq LIMIT ${CATCH_UP_STEP}`)
    this.#readOne = prepared('read-one', `SELECT payload FROM ${events} WHERE seq = $1`)
    this.#floorQuery = prepared('floor', `SELECT coalesce(max(seq), 0) AS seq FROM ${events}`)
    this.#prune = prepared('prune', `DELETE FROM ${events} WHERE seq IN (SELECT seq FROM ${events}
      WHERE at < now() - make_interval(secs => $1::float8 / 1000) ORDER BY seq LIMIT ${PRUNE_STEP})`)
    this.ready = this.#start(options.after)
    // Whoever needs the bus awaits `ready`; a rejection nobody awaits must not crash the process.
    this.ready.catch(() => {})
  }

  subscribe (listener: (event: BusEvent) => void, onError?: (error: unknown) => void): () => void {
    const entry: Listener = { listener, onError }
    this.#listeners = [...this.#listeners, entry]
    return () => { this.#listeners = this.#listeners.filter((other) => other !== entry) }
  }

  /**
   * Publishes `events` in the transaction `client` has open (one statement for the batch): they
   * are delivered, to every bus on this schema, if and only if it commits.
   */
  async publish (client: pg.ClientBase, events: readonly BusEvent[]): Promise<void> {
    if (events.length === 0) return
    await client.query({ ...this.#publish, values: [events.map((event) => JSON.stringify(event)), this.#channel] })
  }

  /** Deletes one bounded step of events older than `retention`; returns how many. The bus does this every `pruneInterval`. */
  async prune (): Promise<number> {
    const result = await this.#pool.query({ ...this.#prune, values: [this.#retention] })
    return result.rowCount as number
  }

  /** Stops listening, reconnecting and pruning. Idempotent; resolves once the connection is closed. */
  close (): Promise<void> {
    this.#closing ??= this.#close()
    return this.#closing
  }

  async #close (): Promise<void> {
    this.#closed = true
    clearTimeout(this.#retry)
    clearInterval(this.#pruning)
    // Nothing is delivered or reported from here on, whatever is still under way.
    this.#queue.length = 0
    this.#listeners = []
    const client = this.#client
    this.#client = undefined
    this.#listening = undefined
    await client?.end()
  }

  async #start (after: Promise<unknown> | undefined): Promise<void> {
    await after
    await this.#connect(true)
    this.#schedulePrune()
  }

  // One attempt: a new connection, listening. On failure (or close meanwhile) it is ended.
  async #connect (first: boolean): Promise<void> {
    if (this.#closed) throw closedError()
    const client = new pg.Client({ ...this.#pool.options, keepAlive: true, application_name: this.#application })
    // Set now: a NOTIFY may arrive before the LISTEN's reply does.
    this.#client = client
    client.on('notification', (message) => { this.#notified(message) })
    // Until it listens, a failure is the attempt's to report (it rejects), not #lost's; once
    // lost, its 'end' after its 'error' is not news.
    const lost = (error: unknown): void => { if (this.#listening === client) this.#lost(client, error) }
    client.on('error', lost)
    client.on('end', () => { lost(new BrokerError('ERR_STORE', 'PostgresBus: the LISTEN connection ended')) })
    try {
      await client.connect()
      await client.query(`LISTEN "${this.#channel}"`)
      if (first) {
        // Committed before the LISTEN was in place, or since and then also notified: the bus
        // delivers from here on, and a catch-up reads from here.
        const { rows } = await client.query<{ seq: number }>(this.#floorQuery)
        this.#floor = (rows[0] as { seq: number }).seq
      }
      if (this.#closed) throw closedError()
    } catch (err) {
      if (this.#client === client) this.#client = undefined
      await client.end()
      throw err
    }
    this.#listening = client
  }

  // The connection listens on one channel only: every notification is an event of this schema.
  #notified (message: pg.Notification): void {
    const text = message.payload as string
    const colon = text.indexOf(':')
    this.#enqueue(colon < 0
      ? { kind: 'event', seq: Number(text), payload: undefined }
      : { kind: 'event', seq: Number(text.slice(0, colon)), payload: text.slice(colon + 1) })
  }

  // The listening connection failed or ended: tell the listeners, then reconnect.
  #lost (client: pg.Client, error: unknown): void {
    this.#listening = undefined
    this.#client = undefined
    void client.end()
    this.#report(error)
    this.#reconnect()
  }

  #reconnect (): void {
    const delay = this.#backoff
    this.#backoff = Math.min(this.#backoff * 2, BACKOFF_MAX)
    this.#retry = setTimeout(() => {
      this.#retry = undefined
      // A catch-up holds its place in the queue from before the LISTEN: what the new connection
      // hears comes after what it reads, so one device's events stay in commit order.
      const listening = this.#connect(false)
      listening.then(() => { this.#backoff = BACKOFF_FIRST }, (err: unknown) => {
        if (this.#closed) return
        this.#report(err)
        this.#reconnect()
      })
      this.#enqueue({ kind: 'catch-up', listening })
    }, delay)
    this.#retry.unref()
  }

  #enqueue (item: Item): void {
    this.#queue.push(item)
    if (!this.#draining) void this.#drain()
  }

  async #drain (): Promise<void> {
    this.#draining = true
    try {
      for (let item = this.#queue.shift(); item !== undefined; item = this.#queue.shift()) {
        if (item.kind === 'catch-up') {
          if (!await item.listening.then(() => true, () => false)) continue
          await this.#catchUp()
        } else if (item.payload === undefined) {
          const { rows } = await this.#pool.query<{ payload: string }>({ ...this.#readOne, values: [item.seq] })
          const row = rows[0]
          if (row === undefined) this.#report(new BrokerError('ERR_STORE', `PostgresBus: event ${item.seq} was pruned before it could be read`))
          this.#deliver(item.seq, row?.payload)
        } else {
          this.#deliver(item.seq, item.payload)
        }
      }
    } catch (err) {
      // A read failed, and with it an event may be missed: start over on a new connection,
      // whose catch-up reads it again (what is still queued waits for it). Ending the
      // connection does that; if it is down already, its reconnection is on its way.
      this.#report(err)
      void this.#listening?.end()
    } finally {
      this.#draining = false
    }
  }

  // Every event above the floor not delivered yet, in sequence order, a bounded step at a time.
  async #catchUp (): Promise<void> {
    let after = this.#floor
    for (;;) {
      const { rows } = await this.#pool.query<{ seq: number, payload: string }>({ ...this.#read, values: [after] })
      for (const row of rows) {
        this.#deliver(row.seq, row.payload)
        after = row.seq
      }
      if (rows.length < CATCH_UP_STEP) return
    }
  }

  #deliver (seq: number, payload: string | undefined): void {
    if (this.#seen.has(seq)) return
    this.#seen.add(seq)
    this.#order.push(seq)
    if (this.#order.length > this.#window) {
      const oldest = this.#order.shift() as number
      this.#seen.delete(oldest)
      this.#floor = Math.max(this.#floor, oldest)
    }
    if (payload === undefined) return
    const event = JSON.parse(payload) as BusEvent
    for (const { listener, onError } of this.#listeners) {
      try {
        listener(event)
      } catch (err) {
        // A listener's failure is its own: the others still hear of the event.
        if (onError === undefined) process.emitWarning(warning(err))
        else onError(err)
      }
    }
  }

  #report (error: unknown): void {
    for (const { onError } of this.#listeners) onError?.(error)
  }

  // Every bus prunes: deletes of the same rows by two just wait on each other.
  #schedulePrune (): void {
    this.#pruning = setInterval(() => { this.prune().catch((err: unknown) => { this.#report(err) }) }, this.#pruneInterval)
    this.#pruning.unref()
  }

}

/**
 * The name of a prepared statement (`label`, short, says which) from its text: the same text
 * has the same name on every connection, whichever store or bus prepared it, and two texts
 * never share one. The schema is in the text, not the name: PostgreSQL cuts names at 63 bytes.
 */
export function statementName (label: string, text: string): string {
  return `command-broker:${label}:${createHash('sha256').update(text).digest('base64url').slice(0, 24)}`
}

// A statement of the bus, prepared once per connection; int8 columns as numbers.
function prepared (label: string, text: string): pg.QueryConfig {
  return { name: statementName(label, text), text, types: TYPES }
}

type Item =
  | { readonly kind: 'event', readonly seq: number, readonly payload: string | undefined }
  | { readonly kind: 'catch-up', readonly listening: Promise<void> }

interface Listener {
  readonly listener: (event: BusEvent) => void
  readonly onError: ((error: unknown) => void) | undefined
}

function closedError (): BrokerError {
  return new BrokerError('ERR_CLOSED', 'PostgresBus: closed before it was listening')
}

function warning (err: unknown): Error {
  return err instanceof Error ? err : new Error(`PostgresBus: a listener threw ${describeCause(err)}`)
}
