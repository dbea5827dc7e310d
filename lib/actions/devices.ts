// device/save, device/get and device/delete (spec §12).
import { Action, canSee, type Grant } from '../auth.js'
import { ProtocolError } from '../errors.js'
import { serialiseJson } from '../limits.js'
import { ACCESS_DENIED, DEVICE_ID_INVALID, DEVICE_NAME_INVALID, DEVICE_REQUIRED } from '../messages.js'
import { deviceBody, deviceError, parse, type DeviceBody } from '../schema.js'
import type { DeviceRecord } from '../store/store.js'
import { DELETE_STEP, held, nextTick, nextTurn } from '../turns.js'
import { toDevice } from '../wire.js'
import { again, type Request, type Result } from './request.js'

const DEVICE_ID = /^[a-zA-Z0-9-]{1,48}$/

/**
 * `device/save` (permission 6): creates the device, or changes the fields present in
 * `device` (null reads as absent, as in DeviceHive); `name` is required to create one.
 */
export function save (request: Request): Result | Promise<Result> {
  const { core, msg } = request
  const grant = core.grant(request.session, request.token)
  const deviceId = core.deviceId(grant, Action.RegisterDevice, msg)
  if (!DEVICE_ID.test(deviceId)) throw new ProtocolError(400, DEVICE_ID_INVALID)
  if (msg.device === undefined || msg.device === null) throw new ProtocolError(400, DEVICE_REQUIRED)
  const body = parse(deviceBody, msg.device, deviceError)
  // A device of this id is being deleted: the new one waits until its commands are gone.
  const deletion = core.deletions.get(deviceId)
  if (deletion !== undefined) return deletion.then(() => again(request, save), () => again(request, save))
  const existing = core.store.getDevice(deviceId)
  if (existing instanceof Promise) return existing.then((found) => saveAs(request, grant, body, deviceId, found))
  return saveAs(request, grant, body, deviceId, existing)
}

function saveAs (request: Request, grant: Grant, body: DeviceBody, deviceId: string, existing: DeviceRecord | undefined): Result | Promise<Result> {
  const { core } = request
  if (existing === undefined && (body.name === undefined || body.name === null)) throw new ProtocolError(400, DEVICE_NAME_INVALID)
  const device = {
    id: deviceId,
    name: body.name ?? existing?.name as string,
    data: body.data === undefined || body.data === null ? existing?.data ?? null : serialiseJson('data', body.data, core.options),
    networkId: body.networkId ?? existing?.networkId ?? null,
    deviceTypeId: body.deviceTypeId ?? existing?.deviceTypeId ?? null,
    isBlocked: body.isBlocked ?? existing?.isBlocked ?? false
  }
  // A token must reach the device both where it is and where it is going.
  if ((existing !== undefined && !canSee(grant, existing.networkId, existing.deviceTypeId)) ||
      !canSee(grant, device.networkId, device.deviceTypeId)) {
    throw new ProtocolError(403, ACCESS_DENIED)
  }
  if (existing === undefined) {
    // Commands of an earlier device of this id, left by a deletion a crash cut short: gone
    // first, in bounded steps, or they would belong to the new device.
    const deleted = core.store.deleteCommands(deviceId, DELETE_STEP)
    if (deleted instanceof Promise) return deleted.then((count) => count > 0 ? purge(request, deviceId).then(() => again(request, save)) : store(request, device))
    if (deleted > 0) return purge(request, deviceId).then(() => again(request, save))
  }
  return store(request, device)
}

// Writes accepted before this one commit first, so they see the device as it was.
function store (request: Request, device: DeviceRecord): Result | Promise<Result> {
  const saved = request.core.deviceWrite(device.id, () => request.core.store.saveDevice(device))
  return saved instanceof Promise ? saved.then(() => undefined) : undefined
}

/** `device/get` (permission 3). */
export function get (request: Request): Result | Promise<Result> {
  const { core } = request
  const grant = core.grant(request.session, request.token)
  const device = core.device(grant, Action.GetDevice, request.msg)
  if (device instanceof Promise) return device.then((found) => ({ device: toDevice(found) }))
  return { device: toDevice(device) }
}

/**
 * `device/delete` (permission 6): the device goes at once, and with it every subscription
 * made for it; its commands, invisible from then on, are deleted in bounded steps, a turn
 * each (and a tick at a time while the store is behind, see `Store.behind`), before the reply.
 */
export async function remove (request: Request): Promise<Result> {
  const { core } = request
  const grant = core.grant(request.session, request.token)
  const read = core.device(grant, Action.RegisterDevice, request.msg)
  const { id } = read instanceof Promise ? await read : read
  // Inserts accepted before the delete commit first, and are deleted with the device.
  const deleting = core.deviceWrite(id, () => core.store.deleteDevice(id))
  if (deleting instanceof Promise) await deleting
  core.pending.forget(id)
  // On a shared store, the bus ends them on every other broker too.
  for (const subscriber of core.fanOut.forDevice(id)) subscriber.end?.()
  try {
    await purge(request, id)
  } catch (err) {
    // The device is gone and its commands with it, as far as any reader can tell: the reply
    // says so. What is left is deleted before a device of this id is saved again.
    core.fail('ERR_STORE', `deleting the commands of device ${id} failed; they stay invisible, and go when a device of this id is saved again`, err)
  }
  return undefined
}

// Deletes the commands of a device id that no longer exists, a bounded step per turn. A new
// device of the id waits for it (see `save`). Their expiry timers are left to fire: they find
// nothing, which costs less than finding each timer now.
function purge (request: Request, deviceId: string): Promise<void> {
  const { core } = request
  let deletion = core.deletions.get(deviceId)
  if (deletion === undefined) {
    // Registered before it can settle (`finally` runs a microtask later), so the entry is
    // always there while the deletion runs, and always gone after.
    const running = deleteAll(request, deviceId).finally(() => { core.deletions.delete(deviceId) })
    core.deletions.set(deviceId, running)
    deletion = running
  }
  return deletion
}

// Between steps, while the store says it is behind (Store.behind), it waits a tick at a time,
// as expiry does: a step that lengthened SQLite's WAL past what its checkpointer keeps up with
// met the checkpointer's restart of it, or a checkpoint inline, and blocked 35 ms.
async function deleteAll (request: Request, deviceId: string): Promise<void> {
  const { core } = request
  for (;;) {
    const step = core.store.deleteCommands(deviceId, DELETE_STEP)
    if ((step instanceof Promise ? await step : step) < DELETE_STEP) return
    await nextTurn()
    while (!core.closed && held(core, 'deleting anyway')) await nextTick(core)
    if (core.closed) return
  }
}
