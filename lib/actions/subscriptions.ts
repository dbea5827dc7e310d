// command/subscribe, command/unsubscribe and subscription/list (spec §10): sessions only.
import { Action, allows, type Grant } from '../auth.js'
import { ProtocolError } from '../errors.js'
import { checkFilterList } from '../limits.js'
import { ACCESS_DENIED, NO_NETWORK_ACCESS, SESSION_REQUIRED, subscriptionNotFound, validationFailed } from '../messages.js'
import { commandUnsubscribeSchema, malformed, parse, subscribeFilters, subscriptionListSchema } from '../schema.js'
import type { SessionState } from '../session.js'
import { Subscription } from '../subscription.js'
import { formatTimestamp } from '../timestamp.js'
import { checkLengths } from './filters.js'
import type { Request, Result } from './request.js'

/**
 * `command/subscribe` (permission 5). The subscription keeps the rights of the token it was
 * made with for the life of the session; its pushes, history first, follow its reply.
 */
export function subscribe (request: Request): Result | Promise<Result> {
  const { core, msg } = request
  const session = sessionOf(request)
  const grant = core.grant(session, request.token)
  if (!allows(grant, Action.GetDeviceCommand)) throw new ProtocolError(403, ACCESS_DENIED)
  if (msg.deviceId === undefined || msg.deviceId === null) return subscribeTo(request, session, grant, undefined)
  const device = core.device(grant, Action.GetDeviceCommand, msg)
  if (device instanceof Promise) return device.then((found) => subscribeTo(request, session, grant, found.id))
  return subscribeTo(request, session, grant, device.id)
}

function subscribeTo (request: Request, session: SessionState, grant: Grant, deviceId: string | undefined): Result | Promise<Result> {
  const { core, msg } = request
  // Lengths first: a list too long is refused before anything walks it.
  checkLengths(msg, core.options)
  const body = parse(subscribeFilters, msg, malformed)
  const networkIds = listOf('networkIds', body.networkIds, request)
  const deviceTypeIds = listOf('deviceTypeIds', body.deviceTypeIds, request)
  const names = listOf('names', body.names, request)
  // As DeviceHive: naming a network or device type the token does not reach is refused, and so
  // is a subscription to everything by a token that reaches nothing.
  if (!reaches(grant.networks, networkIds) || !reaches(grant.deviceTypes, deviceTypeIds)) throw new ProtocolError(403, ACCESS_DENIED)
  if (deviceId === undefined && !reachesAny(grant)) throw new ProtocolError(403, NO_NETWORK_ACCESS)
  const { maxHistory, maxSubscriptionsPerSession } = core.options
  const limit = body.limit ?? 20
  if (limit < 0 || limit > maxHistory) throw new ProtocolError(400, validationFailed(`limit must be from 0 to ${maxHistory}`))
  if (session.subscriptions.size >= maxSubscriptionsPerSession) {
    throw new ProtocolError(400, validationFailed(`a session may hold at most ${maxSubscriptionsPerSession} subscriptions`))
  }
  const id = core.subscriptionId()
  const timestamp = body.timestamp ?? undefined
  const subscription = new Subscription(core, {
    id,
    session,
    grant,
    // With a device, the device alone filters: networks and types were only checked above.
    filter: deviceId !== undefined ? { deviceId, names } : { networkIds, deviceTypeIds, names },
    updates: body.returnUpdatedCommands ?? false,
    listing: {
      subscriptionId: id,
      type: 'command',
      deviceId: deviceId ?? null,
      networkIds: networkIds ?? null,
      deviceTypeIds: deviceTypeIds ?? null,
      names: names ?? null,
      timestamp: timestamp === undefined ? null : formatTimestamp(timestamp)
    },
    history: timestamp === undefined ? undefined : { after: timestamp, limit: limit === 0 ? maxHistory : limit }
  })
  request.afterReply?.push(() => { subscription.release() })
  const started = subscription.start()
  return started instanceof Promise ? started.then(() => ({ subscriptionId: id })) : { subscriptionId: id }
}

/**
 * `command/unsubscribe` (permission 5): one subscription, or every one without an id. A token
 * that has expired may still unsubscribe: the session's subscriptions outlive it.
 */
export function unsubscribe (request: Request): Result {
  const session = sessionOf(request)
  const grant = request.core.grant(session, request.token, true)
  if (!allows(grant, Action.GetDeviceCommand)) throw new ProtocolError(403, ACCESS_DENIED)
  const { subscriptionId } = parse(commandUnsubscribeSchema, request.msg, malformed)
  if (subscriptionId === undefined || subscriptionId === null) {
    session.endSubscriptions()
    return undefined
  }
  const subscription = session.subscriptions.get(subscriptionId)
  if (subscription === undefined) throw new ProtocolError(404, subscriptionNotFound(subscriptionId))
  subscription.end()
  return undefined
}

/** `subscription/list` (permission 5 or 4): the session's subscriptions, as they were asked for. */
export function listSubscriptions (request: Request): Result {
  const session = sessionOf(request)
  const grant = request.core.grant(session, request.token, true)
  if (!allows(grant, Action.GetDeviceCommand) && !allows(grant, Action.GetDeviceNotification)) throw new ProtocolError(403, ACCESS_DENIED)
  const { type } = parse(subscriptionListSchema, request.msg, malformed)
  const subscriptions = []
  if (type === undefined || type === null || type === 'command') {
    for (const subscription of session.subscriptions.values()) subscriptions.push(subscription.listing)
  }
  return { subscriptions }
}

function sessionOf (request: Request): SessionState {
  if (request.session === undefined) throw new ProtocolError(400, SESSION_REQUIRED)
  return request.session
}

// A checked filter list; empty means no filter, as absent does.
function listOf<T extends number | string> (name: string, list: readonly T[] | null | undefined, request: Request): T[] | undefined {
  if (list === undefined || list === null || list.length === 0) return undefined
  return checkFilterList(name, list, request.core.options)
}

// Whether the grant reaches every id of the list (an absent list asks for nothing).
function reaches (granted: Grant['networks'], ids: readonly number[] | undefined): boolean {
  if (ids === undefined || granted === '*') return true
  if (granted === null) return false
  return ids.every((id) => granted.has(id))
}

// Whether the grant reaches any device at all.
function reachesAny (grant: Grant): boolean {
  const { networks, deviceTypes } = grant
  return networks !== null && (networks === '*' || networks.size > 0) && (deviceTypes === '*' || deviceTypes.size > 0)
}
