import pg from 'pg'
import { PostgresBus, statementName } from '../bus/postgres.js'
import type { BusEvent } from '../bus/bus.js'
import { BrokerError } from '../errors.js'
import { describe } from '../options.js'
import type {
  CommandPage, CommandRecord, CommandScan, CommitResult, CountPage, Cursor, DeviceRecord, ExpiringPage, NewCommandRecord,
  SharedSpace, SortQuery, Store, WriteBatch
} from './store.js'

/** Options of {@link postgresStore}. */
export interface PostgresStoreOptions {
  /**
   * Where the database is, as a `postgres://` URL. Default: the `DATABASE_URL` environment
   * variable, and without it node-postgres's own defaults (`PGHOST`, `PGPORT`, `PGUSER`,
   * `PGPASSWORD`, `PGDATABASE`, then localhost:5432). Not with `pool`.
   */
  connectionString?: string
  /**
   * A node-postgres `Pool` to use instead of one of the store's own. The store and its bus use
   * it (the bus also opens one connection of its own with the pool's settings, to LISTEN), and
   * `close()` leaves it open: it is its owner's to end. Not with `connectionString`.
   */
  pool?: pg.Pool
  /**
   * The PostgreSQL schema that holds the store's tables, created if missing (it may exist and
   * be empty). Default `'command_broker'`. A plain lowercase identifier of at most 56
   * characters (`a-z`, `0-9`, `_`, not starting with a digit or `pg_`). Every store on one
   * database and schema shares one command space, whatever process it is in: that is the
   * point, and also the footgun (two unrelated apps need two schemas).
   */
  schema?: string
}

/** The schema version this library writes, kept in the `meta` table of its PostgreSQL schema. */
export const POSTGRES_SCHEMA_VERSION = 1

const SCHEMA = 'command_broker'
// 63 bytes is PostgreSQL's longest identifier; the bus's channel adds '.events'.
const SCHEMA_PATTERN = /^(?!pg_)[a-z_][a-z0-9_]{0,55}$/

/**
 * Creates a {@link Store} on PostgreSQL through node-postgres (`pg`), whose command space every
 * process on the same database and schema shares: the store has `shared`, with a LISTEN/NOTIFY
 * {@link PostgresBus} and `claimExpired`. It creates and migrates its tables itself, under an
 * advisory lock, so several processes may start at once. Setting up is asynchronous while this
 * returns at once: every method waits for it, and rejects with what it failed with (for a
 * schema of a newer version of this library, `BrokerError` `ERR_SCHEMA`).
 *
 * Each write is one transaction, a batch of any size a fixed number of statements. Command
 * ids come from a sequence that stops at 2^53 - 1 (`BrokerError` `ERR_IDS_EXHAUSTED`
 * beyond). Devices are read from the database every time: a device saved or deleted on any
 * process is seen on every other at once. Reads of devices asked for together (in one
 * event-loop turn, or while a read is under way) are one statement.
 *
 * Throws `TypeError`/`RangeError` for bad options. The footgun: a store that is never closed
 * keeps its pool and LISTEN connection open, and with them the process.
 */
export function postgresStore (options: PostgresStoreOptions = {}): Store {
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(`postgresStore: options must be an object, received ${describe(options)}`)
  }
  const { connectionString, pool, schema = SCHEMA } = options
  if (connectionString !== undefined && typeof connectionString !== 'string') {
    throw new TypeError(`postgresStore: options.connectionString must be a string, received ${describe(connectionString)}`)
  }
  if (pool !== undefined && !(pool instanceof pg.Pool)) {
    throw new TypeError(`postgresStore: options.pool must be a pg Pool, received ${describe(pool)}`)
  }
  if (pool !== undefined && connectionString !== undefined) {
    throw new TypeError('postgresStore: options.pool and options.connectionString exclude each other, received both')
  }
  if (typeof schema !== 'string') {
    throw new TypeError(`postgresStore: options.schema must be a string, received ${describe(schema)}`)
  }
  if (!SCHEMA_PATTERN.test(schema)) {
    throw new RangeError(`postgresStore: options.schema must be a lowercase identifier of 1 to 56 characters (a-z, 0-9, _; not starting with a digit or pg_), received ${describe(schema)}`)
  }
  if (pool !== undefined) return new PostgresStore(pool, false, schema)
  const own = new pg.Pool({ connectionString: connectionString ?? process.env.DATABASE_URL })
  // An idle connection that fails emits 'error' on the pool, which would crash the process
  // unheard: the pool drops it, and the next query opens another or fails with the cause.
  own.on('error', () => {})
  return new PostgresStore(own, true, schema)
}

// Each entry upgrades the schema from version i to i + 1, in the transaction that holds the
// advisory lock, with search_path set to the store's schema. Every key of commands leads with
// device_id where it serves one device, so the table can be distributed by it. The partial
// expiry index holds only expiring commands, and serves claimExpired and the due count of a
// device at its pending limit. `pending` counts each device's never-updated commands, kept in
// the transactions that change them: maxPending holds across processes without a scan.
// `events` is the bus's: what it catches up from after a lost connection.
const MIGRATIONS: readonly string[] = [
  `
  CREATE SEQUENCE command_ids AS bigint MINVALUE 1 MAXVALUE ${Number.MAX_SAFE_INTEGER} NO CYCLE;
  CREATE TABLE devices (
    id text PRIMARY KEY,
    name text NOT NULL,
    data text,
    network_id bigint,
    device_type_id bigint,
    is_blocked boolean NOT NULL
  );
  CREATE TABLE commands (
    id bigint PRIMARY KEY,
    device_id text NOT NULL,
    command text NOT NULL,
    timestamp bigint NOT NULL,
    last_updated bigint NOT NULL,
    user_id bigint,
    network_id bigint,
    device_type_id bigint,
    parameters text,
    lifetime bigint,
    status text,
    result text,
    expires_at bigint,
    updated boolean NOT NULL
  );
  CREATE INDEX commands_device_time ON commands (device_id, timestamp, id);
  CREATE INDEX commands_time ON commands (timestamp, id);
  CREATE INDEX commands_expiry ON commands (expires_at) WHERE expires_at IS NOT NULL;
  CREATE TABLE pending (device_id text PRIMARY KEY, count integer NOT NULL);
  CREATE TABLE events (seq bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), payload text NOT NULL);
  `
]

async function migrate (pool: pg.Pool, schema: string): Promise<void> {
  await transaction(pool, async (client) => {
    // Two processes starting at once take turns: the second finds the schema migrated.
    await client.query("SELECT pg_advisory_xact_lock(hashtext('command-broker'), hashtext($1))", [schema])
    await client.query(`CREATE SCHEMA IF NOT EXISTS "${schema}"`)
    await client.query(`SET LOCAL search_path TO "${schema}"`)
    await client.query('CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value bigint NOT NULL)')
    const { rows } = await client.query<{ value: string }>("SELECT value FROM meta WHERE key = 'schema_version'")
    const version = rows[0] === undefined ? 0 : Number(rows[0].value)
    if (version > MIGRATIONS.length) {
      throw new BrokerError('ERR_SCHEMA', `postgresStore: schema "${schema}" has version ${version}; this version of command-broker reads up to ${MIGRATIONS.length}`)
    }
    for (let v = version; v < MIGRATIONS.length; v++) await client.query(MIGRATIONS[v] as string)
    await client.query(`INSERT INTO meta (key, value) VALUES ('schema_version', $1)
      ON CONFLICT (key) DO UPDATE SET value = excluded.value`, [MIGRATIONS.length])
  })
}

// Runs fn in a transaction on one connection of the pool. A connection whose ROLLBACK fails
// too is broken: the pool discards it.
async function transaction<T> (pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect()
  try {
    await client.query('BEGIN')
    const result = await fn(client)
    await client.query('COMMIT')
    client.release()
    return result
  } catch (err) {
    let broken: Error | undefined
    try {
      await client.query('ROLLBACK')
    } catch (rollback) {
      broken = rollback as Error
    }
    client.release(broken)
    throw err
  }
}

// int8 columns as numbers: every one this store writes fits in 2^53 (ids stop there).
const TYPES = {
  getTypeParser: (oid: number, format?: string) => oid === 20 ? Number : pg.types.getTypeParser(oid, format as 'text')
}

// Beyond every (timestamp, id) a command can have: an open end of a window.
const FAR = Number.MAX_SAFE_INTEGER
const NOT_EXPIRED = '(c.expires_at IS NULL OR c.expires_at > $now)'

type Row = CommandRecord
type Query = pg.QueryConfig & { types: typeof TYPES }

/**
 * Numbers a statement's `$name` parameters in the order `names` gives: the values are then
 * passed in that order. Every name must be used (PostgreSQL cannot type a parameter it never
 * sees), and a name missing from `names` becomes `$0`, which PostgreSQL refuses at once.
 */
function statement (schema: string, label: string, names: readonly string[], text: string): Query {
  const sql = text
    .replace(/\$([a-zA-Z]+)/g, (_, param: string) => `$${names.indexOf(param) + 1}`)
    .replace(/\{(\w+)\}/g, (_, table: string) => `"${schema}".${table}`)
  return { name: statementName(label, sql), text: sql, types: TYPES }
}


// Columns of a command as a CommandRecord, of the table (or step) named `c`.
const COLUMNS = `c.id, c.command, c.timestamp, c.last_updated AS "lastUpdated", c.user_id AS "userId",
  c.device_id AS "deviceId", c.network_id AS "networkId", c.device_type_id AS "deviceTypeId", c.parameters, c.lifetime,
  c.status, c.result, c.expires_at AS "expiresAt", c.updated`
const DEVICE_COLUMNS = 'id, name, data, network_id AS "networkId", device_type_id AS "deviceTypeId", is_blocked AS "isBlocked"'
const SCAN_PARAMS = ['from', 'fromId', 'edge', 'examine', 'now', 'names', 'command', 'status', 'networks', 'types', 'updatedAfter', 'take']
const INSERT_ARRAYS = `$ids::bigint[], $deviceIds::text[], $commands::text[], $timestamps::bigint[], $lastUpdated::bigint[],
  $userIds::bigint[], $networkIds::bigint[], $deviceTypeIds::bigint[], $parameters::text[], $lifetimes::bigint[],
  $statuses::text[], $results::text[], $expiresAt::bigint[], $updated::boolean[]`
const INSERT_PARAMS = ['ids', 'deviceIds', 'commands', 'timestamps', 'lastUpdated', 'userIds', 'networkIds', 'deviceTypeIds',
  'parameters', 'lifetimes', 'statuses', 'results', 'expiresAt', 'updated']

/** What a write learns of a device it touches, its pending row locked. */
interface DeviceState {
  count: number
  exists: boolean
  networkId: number | null
  deviceTypeId: number | null
}

class PostgresStore implements Store {
  readonly shared: SharedSpace
  readonly #pool: pg.Pool
  readonly #owned: boolean
  readonly #bus: PostgresBus
  readonly #ready: Promise<void>
  readonly #getDevices: Query
  // getDevice calls not read yet, and whether a read of earlier ones is under way.
  #deviceReads: DeviceRead[] = []
  #reading = false
  readonly #saveDevice: Query
  readonly #deleteDevice: Query
  readonly #deleteCommands: Query
  readonly #getCommand: Query
  readonly #lockCommands: Query
  readonly #lockPending: Query
  readonly #addPending: Query
  readonly #due: Query
  readonly #nextIds: Query
  readonly #insert: Query
  readonly #update: Query
  readonly #setPending: Query
  readonly #expire: Query
  readonly #claim: Query
  // Scans: [all devices, one device] x [ascending, descending], as (one ? 2 : 0) + (desc ? 1 : 0).
  readonly #scans: readonly Query[]
  readonly #sorts: Record<SortQuery['sortField'], Record<SortQuery['sortOrder'], Query>>
  readonly #countPending: Query
  readonly #expiring: Query
  readonly #lastId: Query
  readonly #size: Query
  readonly #schema: string
  #closed = false
  #closing: Promise<void> | undefined

  constructor (pool: pg.Pool, owned: boolean, schema: string) {
    this.#pool = pool
    this.#owned = owned
    this.#schema = schema
    this.#ready = migrate(pool, schema)
    // Every method awaits #ready and rejects with its failure; unawaited, it must not crash.
    this.#ready.catch(() => {})
    this.#bus = new PostgresBus({ pool, schema, after: this.#ready })
    this.shared = { bus: this.#bus, claimExpired: async (now, limit) => await this.#claimExpired(now, limit) }
    const sql = statement.bind(null, schema)

    this.#getDevices = sql('get-devices', ['ids'], `SELECT ${DEVICE_COLUMNS} FROM {devices} WHERE id = ANY($ids::text[])`)
    this.#saveDevice = sql('save-device', ['id', 'name', 'data', 'networkId', 'deviceTypeId', 'isBlocked'], `
      INSERT INTO {devices} (id, name, data, network_id, device_type_id, is_blocked)
      VALUES ($id, $name, $data, $networkId, $deviceTypeId, $isBlocked)
      ON CONFLICT (id) DO UPDATE SET name = excluded.name, data = excluded.data, network_id = excluded.network_id,
        device_type_id = excluded.device_type_id, is_blocked = excluded.is_blocked`)
    // The pending row first: a commit of this device waits for the delete, or the delete for
    // it, so the device-deleted event follows the device's other events.
    this.#deleteDevice = sql('delete-device', ['id'], `
      WITH reset AS (UPDATE {pending} SET count = 0 WHERE device_id = $id RETURNING device_id),
      gone AS (DELETE FROM {devices} WHERE id = $id AND (SELECT count(*) FROM reset) >= 0 RETURNING id)
      SELECT count(*) AS deleted FROM gone`)
    // Rows are locked in id order, as every write locks commands (then pending rows, in
    // device order): two writes never wait on each other in a circle.
    this.#deleteCommands = sql('delete-commands', ['deviceId', 'limit'], `
      WITH gone AS (DELETE FROM {commands} WHERE id IN (SELECT id FROM {commands} WHERE id IN
          (SELECT id FROM {commands} WHERE device_id = $deviceId ORDER BY timestamp, id LIMIT $limit) ORDER BY id FOR UPDATE)
        RETURNING updated),
      counted AS (UPDATE {pending} SET count = greatest(count - (SELECT count(*) FROM gone WHERE NOT updated), 0)
        WHERE device_id = $deviceId AND EXISTS (SELECT 1 FROM gone WHERE NOT updated))
      SELECT count(*) AS deleted FROM gone`)
    this.#getCommand = sql('get-command', ['id', 'now'], `SELECT ${COLUMNS} FROM {commands} c WHERE c.id = $id AND ${NOT_EXPIRED}`)

    this.#lockCommands = sql('lock-commands', ['ids'], 'SELECT id FROM {commands} WHERE id = ANY($ids::bigint[]) ORDER BY id FOR UPDATE')
    this.#lockPending = sql('lock-pending', ['deviceIds'], `
      SELECT p.device_id AS "deviceId", p.count, d.id IS NOT NULL AS exists, d.network_id AS "networkId",
        d.device_type_id AS "deviceTypeId"
      FROM {pending} p LEFT JOIN {devices} d ON d.id = p.device_id
      WHERE p.device_id = ANY($deviceIds::text[]) ORDER BY p.device_id COLLATE "C" FOR UPDATE OF p`)
    this.#addPending = sql('add-pending', ['deviceIds'], `INSERT INTO {pending} (device_id, count)
      SELECT d, 0 FROM unnest($deviceIds::text[]) AS d ORDER BY d COLLATE "C" ON CONFLICT (device_id) DO NOTHING`)
    // Commands that have expired and that no expiry has deleted yet: counted, but not pending.
    this.#due = sql('due', ['deviceIds', 'now'], `SELECT device_id AS "deviceId", count(*) AS count FROM {commands}
      WHERE expires_at <= $now AND device_id = ANY($deviceIds::text[]) AND NOT updated GROUP BY device_id`)
    this.#nextIds = sql('next-ids', ['count'], `SELECT nextval('"${schema}".command_ids') AS id FROM generate_series(1, $count::int)`)
    this.#insert = sql('insert', INSERT_PARAMS, `INSERT INTO {commands} (id, device_id, command, timestamp, last_updated,
        user_id, network_id, device_type_id, parameters, lifetime, status, result, expires_at, updated)
      SELECT * FROM unnest(${INSERT_ARRAYS})`)
    // One round of updates, each id at most once: the rows as they were (locked already), and
    // the update. `i` says which update of the round each row answers.
    this.#update = sql('update', ['ids', 'deviceIds', 'setStatus', 'statuses', 'setResult', 'results', 'lastUpdated', 'now'], `
      WITH u AS (SELECT * FROM unnest($ids::bigint[], $deviceIds::text[], $setStatus::boolean[], $statuses::text[],
          $setResult::boolean[], $results::text[], $lastUpdated::bigint[]) WITH ORDINALITY
          AS u(id, device_id, set_status, status, set_result, result, last_updated, i)),
      old AS MATERIALIZED (SELECT c.*, u.i FROM {commands} c JOIN u ON c.id = u.id AND c.device_id = u.device_id
        WHERE ${NOT_EXPIRED} FOR UPDATE OF c),
      changed AS (UPDATE {commands} c SET
          status = CASE WHEN u.set_status THEN u.status ELSE c.status END,
          result = CASE WHEN u.set_result THEN u.result ELSE c.result END,
          last_updated = u.last_updated, updated = true
        FROM u WHERE c.id = u.id AND c.id IN (SELECT id FROM old))
      SELECT ${COLUMNS}, c.i FROM old c`)
    this.#setPending = sql('set-pending', ['deviceIds', 'deltas'], `UPDATE {pending} p SET count = greatest(p.count + v.delta, 0)
      FROM unnest($deviceIds::text[], $deltas::int[]) AS v(device_id, delta) WHERE p.device_id = v.device_id`)
    this.#expire = sql('expire', ['ids', 'now'], `DELETE FROM {commands} c WHERE c.id IN (SELECT id FROM {commands}
        WHERE id = ANY($ids::bigint[]) AND expires_at <= $now ORDER BY id FOR UPDATE)
      RETURNING ${COLUMNS}`)
    // SKIP LOCKED: a command another process is expiring is its to report.
    this.#claim = sql('claim', ['now', 'limit'], `DELETE FROM {commands} c WHERE c.id IN (SELECT id FROM {commands}
        WHERE expires_at <= $now ORDER BY expires_at LIMIT $limit FOR UPDATE SKIP LOCKED)
      RETURNING ${COLUMNS}`)

    // A step looks at the first `examine` commands of the window (an index range), then filters
    // those and reads their devices; the last one looked at is where the next step starts.
    const scan = (shape: number): Query => {
      const one = shape >= 2
      const desc = shape % 2 === 1
      const dir = desc ? 'DESC' : 'ASC'
      const back = desc ? 'ASC' : 'DESC'
      return sql(`scan-${one ? 'device' : 'all'}-${dir.toLowerCase()}`, one ? [...SCAN_PARAMS, 'deviceId'] : SCAN_PARAMS, `
        WITH step AS MATERIALIZED (SELECT * FROM {commands} c
          WHERE ${one ? 'c.device_id = $deviceId AND' : ''} (c.timestamp, c.id) ${desc ? '<' : '>'} ($from, $fromId)
            AND c.timestamp ${desc ? '>' : '<'} $edge
          ORDER BY c.timestamp ${dir}, c.id ${dir} LIMIT $examine)
        (SELECT false AS bound, ${COLUMNS} FROM step c JOIN {devices} d ON d.id = c.device_id
          WHERE ${NOT_EXPIRED}
            AND ($names::text[] IS NULL OR c.command = ANY($names::text[]))
            AND ($command::text IS NULL OR c.command = $command::text)
            AND ($status::text IS NULL OR c.status = $status::text)
            AND ($networks::bigint[] IS NULL OR d.network_id = ANY($networks::bigint[]))
            AND ($types::bigint[] IS NULL OR d.device_type_id = ANY($types::bigint[]))
            AND ($updatedAfter::bigint IS NULL OR (c.updated AND c.last_updated > $updatedAfter::bigint))
          ORDER BY c.timestamp ${dir}, c.id ${dir} LIMIT $take)
        UNION ALL
        (SELECT true, ${COLUMNS} FROM step c WHERE (SELECT count(*) FROM step) >= $examine
          ORDER BY c.timestamp ${back}, c.id ${back} LIMIT 1)`)
    }
    this.#scans = [scan(0), scan(1), scan(2), scan(3)]
    // Code point order is the C collation's on UTF-8 (SQLite's too); nulls sort first.
    const sort = (field: SortQuery['sortField'], order: SortQuery['sortOrder']): Query => {
      const keys = (c: string): string => order === 'ASC'
        ? `${c}.${field} COLLATE "C" ASC NULLS FIRST, ${c}.timestamp ASC, ${c}.id ASC`
        : `${c}.${field} COLLATE "C" DESC NULLS LAST, ${c}.timestamp DESC, ${c}.id DESC`
      return sql(`sort-${field}-${order.toLowerCase()}`, ['deviceId', 'start', 'end', 'window', 'now', 'names', 'command', 'status', 'take', 'skip'], `
        WITH w AS MATERIALIZED (SELECT * FROM {commands} c
          WHERE c.device_id = $deviceId AND c.timestamp > $start AND c.timestamp < $end
          ORDER BY c.timestamp, c.id LIMIT $window::int + 1)
        SELECT n.total, r.* FROM (SELECT count(*) AS total FROM w) n
        LEFT JOIN LATERAL (SELECT ${COLUMNS} FROM w c JOIN {devices} d ON d.id = c.device_id
          WHERE ${NOT_EXPIRED}
            AND ($names::text[] IS NULL OR c.command = ANY($names::text[]))
            AND ($command::text IS NULL OR c.command = $command::text)
            AND ($status::text IS NULL OR c.status = $status::text)
          ORDER BY ${keys('c')} LIMIT $take OFFSET $skip) r ON n.total <= $window
        ORDER BY ${keys('r')}`)
    }
    this.#sorts = {
      command: { ASC: sort('command', 'ASC'), DESC: sort('command', 'DESC') },
      status: { ASC: sort('status', 'ASC'), DESC: sort('status', 'DESC') }
    }
    this.#countPending = sql('count-pending', ['deviceId', 'from', 'fromId', 'examine', 'now'], `
      WITH step AS MATERIALIZED (SELECT c.timestamp, c.id, c.updated, c.expires_at FROM {commands} c
        WHERE c.device_id = $deviceId AND (c.timestamp, c.id) > ($from, $fromId)
        ORDER BY c.timestamp, c.id LIMIT $examine)
      SELECT count(*) FILTER (WHERE NOT c.updated AND ${NOT_EXPIRED}) AS count, count(*) AS examined,
        max(ARRAY[c.timestamp, c.id]) AS last
      FROM step c`)
    this.#expiring = sql('expiring', ['afterId', 'maxId', 'examine'], `SELECT id, expires_at AS "expiresAt" FROM {commands}
      WHERE id > $afterId AND id <= $maxId ORDER BY id LIMIT $examine`)
    this.#lastId = sql('last-id', [], 'SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS id FROM {command_ids}')
    this.#size = sql('size', ['schema'], `SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint AS bytes
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $schema::text AND c.relkind = 'r'`)
  }

  async getDevice (id: string): Promise<DeviceRecord | undefined> {
    await this.#open()
    return await new Promise<DeviceRecord | undefined>((resolve, reject) => {
      this.#deviceReads.push({ id, resolve, reject })
      if (this.#deviceReads.length === 1 && !this.#reading) setImmediate(() => { void this.#readDevices() })
    })
  }

  // Every getDevice call of one event-loop turn, or made while a read was under way, is
  // answered by one statement, issued after the calls: a device saved on any process before
  // a call is seen by it. Nothing is kept from one read to the next.
  async #readDevices (): Promise<void> {
    const reads = this.#deviceReads
    this.#deviceReads = []
    this.#reading = true
    try {
      const { rows } = await this.#pool.query<DeviceRecord>({ ...this.#getDevices, values: [[...new Set(reads.map((r) => r.id))]] })
      const found = new Map(rows.map((row) => [row.id, row]))
      for (const { id, resolve } of reads) {
        const row = found.get(id)
        // Each caller its own copy: a caller may change what it is given.
        resolve(row === undefined ? undefined : { ...row })
      }
    } catch (err) {
      for (const { reject } of reads) reject(err)
    } finally {
      this.#reading = false
      if (this.#deviceReads.length > 0) void this.#readDevices()
    }
  }

  async saveDevice (device: DeviceRecord): Promise<void> {
    await this.#open()
    const d = device
    await this.#pool.query({ ...this.#saveDevice, values: [d.id, d.name, d.data, d.networkId, d.deviceTypeId, d.isBlocked] })
  }

  async deleteDevice (id: string): Promise<boolean> {
    await this.#open()
    return await transaction(this.#pool, async (client) => {
      const { rows } = await client.query<{ deleted: number }>({ ...this.#deleteDevice, values: [id] })
      const existed = (rows[0] as { deleted: number }).deleted > 0
      if (existed) await this.#bus.publish(client, [{ type: 'device-deleted', deviceId: id }])
      return existed
    })
  }

  async deleteCommands (deviceId: string, limit: number): Promise<number> {
    await this.#open()
    const { rows } = await this.#pool.query<{ deleted: number }>({ ...this.#deleteCommands, values: [deviceId, limit] })
    return (rows[0] as { deleted: number }).deleted
  }

  async commit (batch: WriteBatch, now: number): Promise<CommitResult> {
    await this.#open()
    const { inserts, updates } = batch
    if (inserts.length === 0 && updates.length === 0) return { ids: [], before: [] }
    const deviceIds = [...new Set([...inserts.map((c) => c.deviceId), ...updates.map((u) => u.deviceId)])]
    for (;;) {
      try {
        return await this.#commit(batch, now, deviceIds)
      } catch (err) {
        if (!(err instanceof Missing)) throw err
        // A device's first commands: its pending row is created in a statement of its own,
        // committed at once, and the batch starts over. Created inside the batch's transaction,
        // the row would stay locked by it while it waits for another device's row, out of order.
        await this.#pool.query({ ...this.#addPending, values: [err.deviceIds] })
      }
    }
  }

  async #commit (batch: WriteBatch, now: number, deviceIds: readonly string[]): Promise<CommitResult> {
    const { inserts, updates } = batch
    return await transaction(this.#pool, async (client) => {
      // Locks: the commands to update (id order), then the pending rows (device order).
      if (updates.length > 0) await client.query({ ...this.#lockCommands, values: [[...new Set(updates.map((u) => u.id))]] })
      const devices = await this.#lockDevices(client, deviceIds)
      if (devices.size < deviceIds.length) throw new Missing(deviceIds.filter((id) => !devices.has(id)))
      const deltas = new Map<string, number>()
      const add = (deviceId: string, delta: number): void => { deltas.set(deviceId, (deltas.get(deviceId) ?? 0) + delta) }

      const accepted = await this.#admit(client, inserts, batch.maxPending, now, devices)
      const ids: Array<number | undefined> = new Array<number | undefined>(inserts.length).fill(undefined)
      const events: BusEvent[] = []
      if (accepted.length > 0) {
        const assigned = await this.#nextIdsFor(client, accepted.length)
        const rows: CommandRecord[] = accepted.map((index, k) => ({ ...(inserts[index] as NewCommandRecord), id: assigned[k] as number }))
        await client.query({ ...this.#insert, values: insertArrays(rows) })
        accepted.forEach((index, k) => { ids[index] = assigned[k] })
        for (const record of rows) {
          if (!record.updated) add(record.deviceId, 1)
          const device = devices.get(record.deviceId) as DeviceState
          if (device.exists) events.push({ type: 'insert', record, networkId: device.networkId, deviceTypeId: device.deviceTypeId })
        }
      }

      const before: Array<CommandRecord | undefined> = new Array<CommandRecord | undefined>(updates.length).fill(undefined)
      const updated: Array<BusEvent | undefined> = new Array<BusEvent | undefined>(updates.length).fill(undefined)
      // Rounds: an id repeated in the batch is updated once per round, each seeing the one before.
      const rounds: number[][] = []
      const seen = new Map<number, number>()
      updates.forEach((update, index) => {
        const round = seen.get(update.id) ?? 0
        seen.set(update.id, round + 1)
        ;(rounds[round] ??= []).push(index)
      })
      for (const round of rounds) {
        const batchOf = round.map((index) => updates[index] as WriteBatch['updates'][number])
        const { rows } = await client.query<Row & { i: number }>({
          ...this.#update,
          values: [
            batchOf.map((u) => u.id), batchOf.map((u) => u.deviceId),
            batchOf.map((u) => u.patch.status !== undefined), batchOf.map((u) => u.patch.status ?? null),
            batchOf.map((u) => u.patch.result !== undefined), batchOf.map((u) => u.patch.result ?? null),
            batchOf.map((u) => u.lastUpdated), now
          ]
        })
        for (const { i, ...record } of rows) {
          const index = round[i - 1] as number
          const update = updates[index] as WriteBatch['updates'][number]
          before[index] = record
          if (!record.updated) add(record.deviceId, -1)
          const after: CommandRecord = {
            ...record,
            status: update.patch.status === undefined ? record.status : update.patch.status,
            result: update.patch.result === undefined ? record.result : update.patch.result,
            lastUpdated: update.lastUpdated,
            updated: true
          }
          const device = devices.get(record.deviceId) as DeviceState
          if (device.exists) updated[index] = { type: 'update', record: after, networkId: device.networkId, deviceTypeId: device.deviceTypeId }
        }
      }
      await this.#setCounts(client, deltas)
      // Inserts in batch order, then updates in batch order (not round order), as the contract writes them.
      for (const event of updated) if (event !== undefined) events.push(event)
      await this.#bus.publish(client, events)
      return { ids, before }
    })
  }

  async getCommand (id: number, now: number): Promise<CommandRecord | undefined> {
    await this.#open()
    const { rows } = await this.#pool.query<Row>({ ...this.#getCommand, values: [id, now] })
    return rows[0]
  }

  async expireCommands (ids: readonly number[], now: number): Promise<CommandRecord[]> {
    await this.#open()
    if (ids.length === 0) return []
    return await transaction(this.#pool, async (client) => {
      const { rows } = await client.query<Row>({ ...this.#expire, values: [ids, now] })
      return await this.#expired(client, rows)
    })
  }

  async #claimExpired (now: number, limit: number): Promise<CommandRecord[]> {
    await this.#open()
    return await transaction(this.#pool, async (client) => {
      const { rows } = await client.query<Row>({ ...this.#claim, values: [now, limit] })
      return await this.#expired(client, rows)
    })
  }

  // After an expiry deleted `rows`: the pending counts and the events of those never updated.
  async #expired (client: pg.PoolClient, rows: CommandRecord[]): Promise<CommandRecord[]> {
    rows.sort((a, b) => a.id - b.id)
    const pending = rows.filter((record) => !record.updated)
    if (pending.length === 0) return rows
    const devices = await this.#lockDevices(client, [...new Set(pending.map((record) => record.deviceId))])
    const deltas = new Map<string, number>()
    const events: BusEvent[] = []
    for (const record of pending) {
      deltas.set(record.deviceId, (deltas.get(record.deviceId) ?? 0) - 1)
      const device = devices.get(record.deviceId)
      if (device?.exists === true) events.push({ type: 'expire', record, networkId: device.networkId, deviceTypeId: device.deviceTypeId })
    }
    await this.#setCounts(client, deltas)
    await this.#bus.publish(client, events)
    return rows
  }

  async scanCommands (scan: CommandScan, now: number): Promise<CommandPage> {
    await this.#open()
    const desc = scan.order === 'DESC'
    const from = scan.cursor ?? (desc ? { timestamp: scan.before ?? FAR, id: -FAR } : { timestamp: scan.after ?? -FAR, id: FAR })
    const values: unknown[] = [
      from.timestamp, from.id, desc ? scan.after ?? -FAR : scan.before ?? FAR, scan.examine, now,
      scan.names ?? null, scan.command ?? null, scan.status ?? null, scan.networkIds ?? null, scan.deviceTypeIds ?? null,
      scan.updatedAfter ?? null, scan.take
    ]
    if (scan.deviceId !== undefined) values.push(scan.deviceId)
    const query = this.#scans[(scan.deviceId === undefined ? 0 : 2) + (desc ? 1 : 0)] as Query
    const result = await this.#pool.query<Row & { bound: boolean }>({ ...query, values })
    const rows: CommandRecord[] = []
    let bound: Cursor | undefined
    for (const { bound: isBound, ...record } of result.rows) {
      if (isBound) bound = { timestamp: record.timestamp, id: record.id }
      else rows.push(record)
    }
    // UNION ALL keeps no order of its own: the step's order, again.
    const sign = desc ? -1 : 1
    rows.sort((a, b) => sign * (a.timestamp - b.timestamp || a.id - b.id))
    // take >= 1: when it is reached, the last row is there.
    const last = rows.length >= scan.take ? rows[rows.length - 1] : undefined
    return { rows, next: last === undefined ? bound : { timestamp: last.timestamp, id: last.id } }
  }

  async sortCommands (query: SortQuery, now: number, maxWindow: number): Promise<CommandRecord[] | undefined> {
    await this.#open()
    const statement = this.#sorts[query.sortField][query.sortOrder]
    const { rows } = await this.#pool.query<{ total: number } & { [K in keyof Row]: Row[K] | null }>({
      ...statement,
      values: [
        query.deviceId, query.start ?? -FAR, query.end ?? FAR, maxWindow, now,
        query.names ?? null, query.command ?? null, query.status ?? null, query.take, query.skip
      ]
    })
    if ((rows[0] as { total: number }).total > maxWindow) return undefined
    const records: CommandRecord[] = []
    for (const { total, ...record } of rows) if (record.id !== null) records.push(record as CommandRecord)
    return records
  }

  async countPending (deviceId: string, now: number, cursor: Cursor | undefined, examine: number): Promise<CountPage> {
    await this.#open()
    const from = cursor ?? { timestamp: -FAR, id: FAR }
    const { rows } = await this.#pool.query<{ count: number, examined: number, last: string[] | null }>({
      ...this.#countPending,
      values: [deviceId, from.timestamp, from.id, examine, now]
    })
    const { count, examined, last } = rows[0] as { count: number, examined: number, last: string[] | null }
    const next = examined >= examine && last !== null ? { timestamp: Number(last[0]), id: Number(last[1]) } : undefined
    return { count, next }
  }

  async expiringCommands (afterId: number, maxId: number, examine: number): Promise<ExpiringPage> {
    await this.#open()
    const { rows } = await this.#pool.query<{ id: number, expiresAt: number | null }>({ ...this.#expiring, values: [afterId, maxId, examine] })
    const entries: Array<[number, number]> = []
    for (const { id, expiresAt } of rows) if (expiresAt !== null) entries.push([id, expiresAt])
    const last = rows[rows.length - 1]
    return { entries, next: rows.length >= examine && last !== undefined ? last.id : undefined }
  }

  async lastCommandId (): Promise<number> {
    await this.#open()
    const { rows } = await this.#pool.query<{ id: number }>(this.#lastId)
    return (rows[0] as { id: number }).id
  }

  /** Bytes the schema's tables take, with their indexes and TOAST (`pg_total_relation_size`). */
  async size (): Promise<number> {
    await this.#open()
    const { rows } = await this.#pool.query<{ bytes: number }>({ ...this.#size, values: [this.#schema] })
    return Number((rows[0] as { bytes: number | string }).bytes)
  }

  /** Stops the bus, then ends the store's own pool (never one passed in). Idempotent. */
  close (): Promise<void> {
    this.#closing ??= this.#close()
    return this.#closing
  }

  async #close (): Promise<void> {
    this.#closed = true
    await this.#bus.close()
    if (this.#owned) await this.#pool.end()
  }

  async #open (): Promise<void> {
    if (this.#closed) throw new BrokerError('ERR_CLOSED', 'postgresStore: used after close()')
    await this.#ready
  }

  // Locks the pending rows of these devices (those that have one) in device order, and reads
  // each device as it is now.
  async #lockDevices (client: pg.PoolClient, deviceIds: readonly string[]): Promise<Map<string, DeviceState>> {
    const { rows } = await client.query<DeviceState & { deviceId: string }>({ ...this.#lockPending, values: [deviceIds] })
    return new Map(rows.map(({ deviceId, ...state }) => [deviceId, state]))
  }

  // The indexes of the inserts that keep their device within maxPending, in batch order. An
  // insert that is not pending (updated, or expired already) always goes in.
  async #admit (client: pg.PoolClient, inserts: readonly NewCommandRecord[], maxPending: number, now: number,
    devices: Map<string, DeviceState>): Promise<number[]> {
    const pending = (c: NewCommandRecord): boolean => !c.updated && (c.expiresAt === null || c.expiresAt > now)
    const wanted = new Map<string, number>()
    for (const c of inserts) if (pending(c)) wanted.set(c.deviceId, (wanted.get(c.deviceId) ?? 0) + 1)
    const counts = new Map<string, number>()
    const full: string[] = []
    for (const [deviceId, want] of wanted) {
      const count = (devices.get(deviceId) as DeviceState).count
      counts.set(deviceId, count)
      if (count + want > maxPending) full.push(deviceId)
    }
    if (full.length > 0) {
      // The count holds commands that have expired but wait for their expiry to run: those
      // are not pending any more, and make room.
      const { rows } = await client.query<{ deviceId: string, count: number }>({ ...this.#due, values: [full, now] })
      for (const { deviceId, count } of rows) counts.set(deviceId, (counts.get(deviceId) as number) - count)
    }
    const accepted: number[] = []
    inserts.forEach((c, index) => {
      if (!pending(c)) {
        accepted.push(index)
        return
      }
      const count = counts.get(c.deviceId) as number
      if (count >= maxPending) return
      counts.set(c.deviceId, count + 1)
      accepted.push(index)
    })
    return accepted
  }

  async #nextIdsFor (client: pg.PoolClient, count: number): Promise<number[]> {
    try {
      const { rows } = await client.query<{ id: number }>({ ...this.#nextIds, values: [count] })
      return rows.map((row) => row.id).sort((a, b) => a - b)
    } catch (err) {
      // 2200H: the sequence reached its maximum, 2^53 - 1, the last id a JS number holds exactly.
      if ((err as { code?: unknown }).code === '2200H') {
        throw new BrokerError('ERR_IDS_EXHAUSTED', `postgresStore: command ids are exhausted (the last is ${Number.MAX_SAFE_INTEGER}); nothing was written`, { cause: err })
      }
      throw err
    }
  }

  async #setCounts (client: pg.PoolClient, deltas: Map<string, number>): Promise<void> {
    const changed = [...deltas].filter(([, delta]) => delta !== 0)
    if (changed.length === 0) return
    await client.query({ ...this.#setPending, values: [changed.map(([deviceId]) => deviceId), changed.map(([, delta]) => delta)] })
  }
}

/** A getDevice call waiting for its read. */
interface DeviceRead {
  readonly id: string
  readonly resolve: (device: DeviceRecord | undefined) => void
  readonly reject: (err: unknown) => void
}

// Thrown inside a commit whose devices lack a pending row: it rolls back, and starts over once they have one.
class Missing {
  readonly deviceIds: readonly string[]

  constructor (deviceIds: readonly string[]) {
    this.deviceIds = deviceIds
  }
}

// The columns of `rows` as the arrays the insert unnests.
function insertArrays (rows: readonly CommandRecord[]): unknown[][] {
  return [
    rows.map((r) => r.id), rows.map((r) => r.deviceId), rows.map((r) => r.command), rows.map((r) => r.timestamp),
    rows.map((r) => r.lastUpdated), rows.map((r) => r.userId), rows.map((r) => r.networkId), rows.map((r) => r.deviceTypeId),
    rows.map((r) => r.parameters), rows.map((r) => r.lifetime), rows.map((r) => r.status), rows.map((r) => r.result),
    rows.map((r) => r.expiresAt), rows.map((r) => r.updated)
  ]
}
