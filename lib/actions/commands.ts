// command/insert, command/update, command/get and command/list (spec §4, §7, §8, §9).
import { Action, allows, type Grant } from '../auth.js'
import { ProtocolError } from '../errors.js'
import { InsertOp, UpdateOp } from '../group-commit.js'
import { checkFilterList, checkText, serialiseJson } from '../limits.js'
import { ACCESS_DENIED, COMMAND_REQUIRED, commandNotFound, validationFailed } from '../messages.js'
import { insertBody, insertError, listFilters, malformed, parse, readInsertBody, readUpdateBody, updateBody, type Command } from '../schema.js'
import type { PendingCount } from '../pending.js'
import type { CommandPatch, CommandRecord, Cursor, DeviceRecord } from '../store/store.js'
import { largestCommand, nextTurn, StepSize, STEP_EXAMINE } from '../turns.js'
import { toCommand } from '../wire.js'
import { checkLengths } from './filters.js'
import { again, type Action as Serve, type Request, type Result } from './request.js'

const SORT_FIELDS: ReadonlyMap<string, 'timestamp' | 'command' | 'status'> = new Map([
  ['timestamp', 'timestamp'], ['command', 'command'], ['status', 'status']
])

/** `command/insert` (permission 7): queues the command; the reply waits for its commit. */
export function insert (request: Request): Result | Promise<Result> {
  const { core, msg } = request
  const grant = core.grant(request.session, request.token)
  const generation = core.deviceGeneration
  const device = core.device(grant, Action.CreateDeviceCommand, msg)
  if (device instanceof Promise) return device.then((found) => startOver(request, found, generation, insert) ?? insertFor(request, grant, found))
  return insertFor(request, grant, device)
}

function insertFor (request: Request, grant: Grant, device: DeviceRecord): Result | Promise<Result> {
  const { core, msg } = request
  const { maxLifetime, maxPendingPerDevice, retention } = core.options
  // A device's count is loaded once, in bounded steps. If that takes turns, the whole request
  // runs again after them: the broker may have closed, the device changed or gone meanwhile.
  // A shared store counts for the whole cluster, at commit.
  let pending: PendingCount | undefined
  if (core.shared === undefined) {
    pending = core.pending.get(device.id)
    if (pending === undefined) {
      const loaded = core.pending.load(device.id, core.clock.now())
      if (loaded instanceof Promise) {
        return loaded.then(() => again(request, insert), (err: unknown) => {
          // A broker closed under the count closed its store too: that is a 503, not a failure.
          core.checkOpen(request.session)
          throw err
        })
      }
      pending = loaded
    }
  }
  if (msg.command === undefined || msg.command === null) throw new ProtocolError(400, COMMAND_REQUIRED)
  const body = readInsertBody(msg.command) ?? parse(insertBody, msg.command, (issues) => insertError(issues, maxLifetime))
  const lifetime = body.lifetime ?? null
  if (lifetime !== null && lifetime > maxLifetime) throw insertError([], maxLifetime)
  const parameters = serialiseJson('parameters', body.parameters, core.options)
  const result = serialiseJson('result', body.result, core.options)
  const status = body.status === undefined || body.status === null ? null : checkText('status', body.status, core.options)
  if (pending !== undefined) {
    // Pending includes commands whose time has passed but whose expiry has not run yet: at
    // most a tick late while the loop is free. Refusing costs this comparison, never a scan.
    if (pending.count >= maxPendingPerDevice) {
      throw new ProtocolError(400, validationFailed(`device ${device.id} has ${pending.count} pending commands, the limit is ${maxPendingPerDevice}`))
    }
    pending.count++
  }
  // Lifetimes run on the timing clock; the times clients see are the wall clock's. Retention
  // rides on the expiry of lifetimes (wheel, recovery, sweep), but the wire keeps the
  // client's null lifetime.
  const keepFor = lifetime ?? (retention === 0 ? null : retention)
  const date = core.date()
  const timestamp = body.timestamp ?? date
  return core.writes.push(new InsertOp({
    id: 0,
    command: body.command,
    timestamp,
    lastUpdated: timestamp,
    userId: grant.userId,
    deviceId: device.id,
    networkId: device.networkId,
    deviceTypeId: device.deviceTypeId,
    parameters,
    lifetime,
    status,
    result,
    expiresAt: keepFor === null ? null : core.clock.now() + keepFor * 1000,
    updated: false
  }, device))
}

/**
 * `command/update` (permission 8): `status` and `result` change, each only when present and
 * not null (DeviceHive reads null as "not sent"); every other key is ignored.
 */
export function update (request: Request): Result | Promise<Result> {
  const { core, msg } = request
  const grant = core.grant(request.session, request.token)
  // The action first, then the command id, as DeviceHive's @PreAuthorize does.
  if (!allows(grant, Action.UpdateDeviceCommand)) throw new ProtocolError(403, ACCESS_DENIED)
  const commandId = core.commandId(msg)
  const generation = core.deviceGeneration
  const device = core.device(grant, Action.UpdateDeviceCommand, msg)
  if (device instanceof Promise) return device.then((found) => startOver(request, found, generation, update) ?? updateFor(request, commandId, found))
  return updateFor(request, commandId, device)
}

function updateFor (request: Request, commandId: number, device: DeviceRecord): Result {
  const { core, msg } = request
  if (msg.command === undefined || msg.command === null) throw new ProtocolError(400, COMMAND_REQUIRED)
  const body = readUpdateBody(msg.command) ?? parse(updateBody, msg.command, malformed)
  const patch: CommandPatch = {}
  if (body.status !== undefined && body.status !== null) patch.status = checkText('status', body.status, core.options)
  const result = serialiseJson('result', body.result, core.options)
  if (result !== null) patch.result = result
  return core.writes.push(new UpdateOp(commandId, device, patch, core.date()))
}

// A write whose device was read later must not queue against a device that a save or delete
// changed meanwhile (it would commit after it, with what it read before): it starts over.
function startOver (request: Request, device: DeviceRecord, generation: number, action: Serve): Promise<Result> | undefined {
  const changed = request.core.deviceChanged(device.id, generation)
  return changed?.then(() => again(request, action))
}

/** `command/get` (permission 5). */
export function get (request: Request): Result | Promise<Result> {
  const { core, msg } = request
  const grant = core.grant(request.session, request.token)
  const device = core.device(grant, Action.GetDeviceCommand, msg)
  if (device instanceof Promise) return device.then((found) => getFor(request, found))
  return getFor(request, device)
}

function getFor (request: Request, device: DeviceRecord): Result | Promise<Result> {
  const { core, msg } = request
  const commandId = core.commandId(msg)
  const record = core.store.getCommand(commandId, core.clock.now())
  if (record instanceof Promise) return record.then((found) => answer(found, device, commandId))
  return answer(record, device, commandId)
}

function answer (record: CommandRecord | undefined, device: DeviceRecord, commandId: number): Result {
  if (record === undefined || record.deviceId !== device.id) throw new ProtocolError(404, commandNotFound(commandId))
  return { command: toCommand(record) }
}

/**
 * `command/list` (permission 5). Sorted by timestamp, it reads the device's commands in
 * bounded steps, a turn each, until it has `take` after `skip`; sorted by command or status,
 * the store sorts the time window, which `maxSortWindow` bounds. Either way the reply is held
 * to `maxReplyBytes`.
 */
export async function list (request: Request): Promise<Result> {
  const { core, msg } = request
  const grant = core.grant(request.session, request.token)
  const read = core.device(grant, Action.GetDeviceCommand, msg)
  const device = read instanceof Promise ? await read : read
  checkLengths(msg, core.options)
  const query = parse(listFilters, msg, malformed)
  const { maxTake, maxSortWindow } = core.options
  // As in DeviceHive, an unknown sort field or order is ignored, and a negative page is empty.
  const sortField = SORT_FIELDS.get((query.sortField ?? 'timestamp').toLowerCase()) ?? 'timestamp'
  const sortOrder = (query.sortOrder ?? 'ASC').toUpperCase() === 'DESC' ? 'DESC' : 'ASC'
  const take = query.take ?? 20
  const skip = query.skip ?? 0
  if (take > maxTake) throw new ProtocolError(400, validationFailed(`take must be at most ${maxTake}`))
  const names = query.names === undefined || query.names === null ? undefined : checkFilterList('names', query.names, core.options)
  if (take <= 0 || skip < 0) return { commands: [] }
  const filters = {
    deviceId: device.id,
    names: names !== undefined && names.length > 0 ? names : undefined,
    command: query.command ?? undefined,
    status: query.status ?? undefined
  }
  const reply = new ReplySize(core.options.maxReplyBytes)
  if (sortField !== 'timestamp') {
    const sorting = core.store.sortCommands({
      ...filters, start: query.start ?? undefined, end: query.end ?? undefined, sortField, sortOrder, take, skip
    }, core.clock.now(), maxSortWindow)
    const rows = sorting instanceof Promise ? await sorting : sorting
    if (rows === undefined) {
      throw new ProtocolError(400, validationFailed(`sorting by ${sortField} covers at most ${maxSortWindow} commands; narrow the window with start and end, or sort by timestamp`))
    }
    const commands: Command[] = []
    const size = new StepSize(largestCommand(core.options.maxPayloadBytes))
    for (const record of rows) {
      reply.add(size.saw(record))
      commands.push(toCommand(record))
    }
    return { commands }
  }
  const commands: Command[] = []
  const size = new StepSize(largestCommand(core.options.maxPayloadBytes))
  let skipped = 0
  let cursor: Cursor | undefined
  for (;;) {
    const step = core.store.scanCommands({
      ...filters,
      order: sortOrder,
      after: query.start ?? undefined,
      before: query.end ?? undefined,
      cursor,
      examine: STEP_EXAMINE,
      take: size.take
    }, core.clock.now())
    const page = step instanceof Promise ? await step : step
    for (const record of page.rows) {
      const bytes = size.saw(record)
      if (skipped < skip) {
        skipped++
        continue
      }
      reply.add(bytes)
      commands.push(toCommand(record))
      if (commands.length >= take) return { commands }
    }
    if (page.next === undefined) return { commands }
    cursor = page.next
    await nextTurn()
    core.checkOpen(request.session)
  }
}

// Adds up a list reply's size and answers 400 once it would pass the limit.
class ReplySize {
  readonly #limit: number
  #bytes = 0

  constructor (limit: number) {
    this.#limit = limit
  }

  add (bytes: number): void {
    this.#bytes += bytes
    if (this.#bytes > this.#limit) {
      throw new ProtocolError(400, validationFailed(`the reply would be larger than ${this.#limit} bytes; ask for fewer commands with take`))
    }
  }
}
