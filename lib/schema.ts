import { z } from 'zod'
import { ProtocolError } from './errors.js'
import { COMMAND_NAME_INVALID, DEVICE_NAME_INVALID, MALFORMED_JSON, validationFailed } from './messages.js'
import type { SubscriptionListing } from './session.js'
import { parseTimestamp } from './timestamp.js'

// The shapes of DeviceHive requests, as zod schemas. Each checks JSON types
// only: permission checks come first (spec §3), and the broker turns a failed
// parse into DeviceHive's exact error (see `broker.ts`). Unknown keys are
// stripped, never stored. The public message types are interfaces over the parts the
// schemas check; a schema is written only where something is parsed with it.

/** Any JSON value. The broker serialises it (rejecting what JSON cannot hold) and checks its size. */
const json = z.unknown().optional()

/** A timestamp read leniently (spec §2) into epoch ms. */
export const timestamp = z.unknown().transform((value, ctx) => {
  const ms = parseTimestamp(value)
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: 'not a timestamp' })
    return z.NEVER
  }
  return ms
})

// JSON types as DeviceHive's Gson reads them (spec §1): a number where a string is expected is
// its decimal text, a numeric string where a number is expected is that number, and "true" or
// "false" where a boolean is expected is that boolean. Anything else of the wrong type fails.
const NUMERIC = /^-?\d{1,16}$/
/** A string, or a finite number read as its decimal text. */
export const text = z.preprocess((value) => typeof value === 'number' && Number.isFinite(value) ? String(value) : value, z.string())
/** An integer, or a numeric string read as one. */
export const int = z.preprocess((value) => typeof value === 'string' && NUMERIC.test(value) ? Number(value) : value, z.int())
/** A boolean, or the string "true" or "false". */
export const bool = z.preprocess((value) => value === 'true' ? true : value === 'false' ? false : value, z.boolean())

const requestId = z.unknown().optional()
const id = int
const ids = z.array(int).nullish()

/** The `command` object of `command/insert`. */
export const insertBody = z.object({
  command: text.pipe(z.string().min(1).max(128)),
  timestamp: timestamp.nullish(),
  parameters: json,
  lifetime: z.preprocess((value) => typeof value === 'string' && NUMERIC.test(value) ? Number(value) : value, z.int().min(1)).nullish(),
  status: text.nullish(),
  result: json
})

/** The `command` object of `command/insert` as `insertBody` reads it. */
export type InsertBody = z.output<typeof insertBody>

/**
 * Reads a `command/insert` body as `insertBody` would, without zod, when it is of the shape
 * clients send: every key of the right JSON type (as Gson reads them) and in range. Returns
 * undefined for anything else, and the caller parses it with `insertBody` for the issue to
 * report: this decides nothing about errors, so their text stays the schema's. Why: zod
 * allocates a result, an issue list and a context per field, about a quarter of what a request
 * allocated (1.6 KB of 7.2 KB per insert and half an update, sampled).
 */
export function readInsertBody (value: unknown): InsertBody | undefined {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return undefined
  const body = value as Record<string, unknown>
  const command = readText(body.command)
  if (command === undefined || command === null || command.length < 1 || command.length > 128) return undefined
  const sent = body.timestamp
  let timestamp: number | null | undefined
  if (sent === undefined || sent === null) {
    timestamp = sent
  } else {
    timestamp = parseTimestamp(sent)
    if (timestamp === undefined) return undefined
  }
  let lifetime = body.lifetime
  if (typeof lifetime === 'string' && NUMERIC.test(lifetime)) lifetime = Number(lifetime)
  if (lifetime !== undefined && lifetime !== null && !(Number.isSafeInteger(lifetime) && (lifetime as number) >= 1)) return undefined
  const status = readText(body.status)
  if (status === undefined && body.status !== undefined) return undefined
  return { command, timestamp, parameters: body.parameters, lifetime: lifetime as number | null | undefined, status, result: body.result }
}

// A `text.nullish()` value: null and undefined as they are, a string, a finite number's decimal
// text; undefined also for anything else (the caller tells the two apart).
function readText (value: unknown): string | null | undefined {
  if (typeof value === 'string' || value === null) return value
  if (typeof value === 'number' && Number.isFinite(value)) return String(value)
  return undefined
}

/** `command/insert` (spec §4). */
export interface CommandInsertMessage {
  action: 'command/insert'
  requestId?: unknown
  deviceId: string | number
  command: z.input<typeof insertBody>
}

/** The `command` object of `command/update`: only these two keys count. */
export const updateBody = z.object({
  status: text.nullish(),
  result: json
})

/** The `command` object of `command/update` as `updateBody` reads it. */
export type UpdateBody = z.output<typeof updateBody>

/** Reads a `command/update` body as `updateBody` would, or undefined; see {@link readInsertBody}. */
export function readUpdateBody (value: unknown): UpdateBody | undefined {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return undefined
  const body = value as Record<string, unknown>
  const status = readText(body.status)
  if (status === undefined && body.status !== undefined) return undefined
  return { status, result: body.result }
}

/** `command/update` (spec §7). */
export interface CommandUpdateMessage {
  action: 'command/update'
  requestId?: unknown
  deviceId: string | number
  commandId: number | string
  command: z.input<typeof updateBody>
}

/** `command/get` (spec §8). */
export interface CommandGetMessage {
  action: 'command/get'
  requestId?: unknown
  deviceId: string | number
  commandId: number | string
}

/** The filters of `command/list`, without `deviceId` (spec §9). */
export const listFilters = z.object({
  start: timestamp.nullish(),
  end: timestamp.nullish(),
  command: text.nullish(),
  names: z.array(text).nullish(),
  status: text.nullish(),
  sortField: text.nullish(),
  sortOrder: text.nullish(),
  take: int.nullish(),
  skip: int.nullish()
})

/** `command/list` (spec §9). */
export interface CommandListMessage extends z.input<typeof listFilters> {
  action: 'command/list'
  requestId?: unknown
  deviceId: string | number
}

/** The filters of `command/subscribe`, without `deviceId` (spec §10). */
export const subscribeFilters = z.object({
  networkIds: ids,
  deviceTypeIds: ids,
  names: z.array(text).nullish(),
  timestamp: timestamp.nullish(),
  returnUpdatedCommands: bool.nullish(),
  limit: int.nullish()
})

/** `command/subscribe` (spec §10). */
export interface CommandSubscribeMessage extends z.input<typeof subscribeFilters> {
  action: 'command/subscribe'
  requestId?: unknown
  deviceId?: string | number | null
}

/** `command/unsubscribe` (spec §10). */
export const commandUnsubscribeSchema = z.object({
  action: z.literal('command/unsubscribe'),
  requestId,
  subscriptionId: id.nullish()
})
export type CommandUnsubscribeMessage = z.input<typeof commandUnsubscribeSchema>

/** `subscription/list` (spec §10). */
export const subscriptionListSchema = z.object({
  action: z.literal('subscription/list'),
  requestId,
  type: text.nullish()
})
export type SubscriptionListMessage = z.input<typeof subscriptionListSchema>

/** `authenticate` (spec §11). */
export const authenticateSchema = z.object({
  action: z.literal('authenticate'),
  requestId,
  token: text.nullish()
})
export type AuthenticateMessage = z.input<typeof authenticateSchema>

/** The `device` object of `device/save` (spec §12). */
export const deviceBody = z.object({
  name: text.pipe(z.string().min(1).max(128)).nullish(),
  data: json,
  networkId: int.nullish(),
  deviceTypeId: int.nullish(),
  isBlocked: bool.nullish()
})
/** A `device` object as `deviceBody` reads it. */
export type DeviceBody = z.output<typeof deviceBody>

/** `device/save` (spec §12). */
export interface DeviceSaveMessage {
  action: 'device/save'
  requestId?: unknown
  deviceId: string | number
  device: z.input<typeof deviceBody>
}

/** `device/get` (spec §12). */
export interface DeviceGetMessage {
  action: 'device/get'
  requestId?: unknown
  deviceId: string | number
}

/** `device/delete` (spec §12). */
export interface DeviceDeleteMessage {
  action: 'device/delete'
  requestId?: unknown
  deviceId: string | number
}

/** `token/refresh` (spec §11): a refresh token buys an access token. */
export interface TokenRefreshMessage {
  action: 'token/refresh'
  requestId?: unknown
  refreshToken: string
}

/** `token/create` (spec §11): a token pair no wider than the caller's token. */
export interface TokenCreateMessage {
  action: 'token/create'
  requestId?: unknown
  payload: z.input<typeof tokenPayload>
}

/** `server/info` (spec §11): the API version and the time; no token needed. */
export interface ServerInfoMessage {
  action: 'server/info'
  requestId?: unknown
}

/** Any request the broker understands. */
export type Message =
  | AuthenticateMessage
  | TokenRefreshMessage
  | TokenCreateMessage
  | ServerInfoMessage
  | CommandInsertMessage
  | CommandUpdateMessage
  | CommandGetMessage
  | CommandListMessage
  | CommandSubscribeMessage
  | CommandUnsubscribeMessage
  | SubscriptionListMessage
  | DeviceSaveMessage
  | DeviceGetMessage
  | DeviceDeleteMessage

/** A JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json }

/**
 * A command as clients see it (spec §5): twelve keys in this order, nulls
 * included. Times are `yyyy-MM-ddTHH:mm:ss.SSS` UTC. Objects handed to
 * subscribers are deeply frozen.
 */
export interface Command {
  id: number
  command: string
  timestamp: string
  lastUpdated: string
  userId: number | null
  deviceId: string
  networkId: number | null
  deviceTypeId: number | null
  parameters: Json
  lifetime: number | null
  status: string | null
  result: Json
}

/** A device as `device/get` returns it (spec §12). */
export interface Device {
  id: string
  name: string
  data: Json
  networkId: number | null
  deviceTypeId: number | null
  isBlocked: boolean
}

/** A success reply: the envelope, then the action's payload keys. */
export type SuccessReply = {
  action: unknown
  requestId: unknown
  status: 'success'
} & Record<string, unknown>

/**
 * An error reply: exactly these keys in this order (no `action`/`requestId` for an
 * unparseable frame). The index signature only lets `reply.command` and the like be read
 * without narrowing first; an error reply never has other keys.
 */
export interface ErrorReply {
  action?: unknown
  requestId?: unknown
  code: number
  status: 'error'
  error: string
  [key: string]: unknown
}

/** What `handle()` resolves to for a message whose action is not known when compiling (a JSON frame, `unknown`). */
export type Reply = SuccessReply | ErrorReply

/** An action the broker serves: the `action` of a {@link Message}. */
export type ActionName = Message['action']

/** The command as the `command/insert` reply carries it: the four keys the broker assigned. */
export type InsertedCommand = Pick<Command, 'id' | 'timestamp' | 'lastUpdated' | 'userId'>

/** The `info` of a `server/info` reply. */
export type ServerInfo = {
  apiVersion: string
  serverTimestamp: string
  restServerUrl: string | null
  webSocketServerUrl: string | null
}

/** The payload keys of each action's success reply (after `action`, `requestId`, `status`). */
export type ReplyPayloads = {
  'authenticate': {}
  'token/refresh': { accessToken: string }
  'token/create': { accessToken: string, refreshToken: string }
  'server/info': { info: ServerInfo }
  'command/insert': { command: InsertedCommand }
  'command/update': {}
  'command/get': { command: Command }
  'command/list': { commands: Command[] }
  'command/subscribe': { subscriptionId: number }
  'command/unsubscribe': {}
  'subscription/list': { subscriptions: SubscriptionListing[] }
  'device/save': {}
  'device/get': { device: Device }
  'device/delete': {}
}

/**
 * The success reply to action `A`: the envelope, then the action's payload keys. `code` and
 * `error` are never there; they are typed so that a reply can be read before it is narrowed.
 */
export type SuccessReplyTo<A extends ActionName> = {
  action: A
  requestId: unknown
  status: 'success'
  code?: undefined
  error?: undefined
} & ReplyPayloads[A]

/**
 * The reply to a message of action `A` (a union of actions gives a union of replies): narrow on
 * `reply.status === 'success'` to read the payload with its type.
 */
export type ReplyTo<A extends ActionName> = A extends ActionName ? SuccessReplyTo<A> | ErrorReply : never

/**
 * What `handle()` takes besides a {@link Message}: a JSON frame, `unknown`, or any object whose
 * `action` is not a string literal type. An object literal whose `action` is a string literal that
 * no action has (a typo) is refused when compiling. Internal to the signatures of `handle()`.
 */
export type UncheckedMessage<T> = T extends { readonly action: infer A }
  ? [A] extends [string] ? string extends A ? unknown : [A] extends [ActionName] ? unknown : { action: ActionName } : unknown
  : unknown

/** A subscription push (spec §10): no `status`, no `requestId`. */
export interface Push {
  action: 'command/insert' | 'command/update'
  command: Command
  subscriptionId: number
}

// --- from a failed parse to DeviceHive's error ---------------------------------------

// Parses with a zod schema or throws the ProtocolError `explain` picks for the issues.
export function parse<T extends z.ZodType>(schema: T, value: unknown, explain: (issues: z.core.$ZodIssue[]) => ProtocolError): z.output<T> {
  const result = schema.safeParse(value)
  if (!result.success) throw explain(result.error.issues)
  return result.data
}

export function malformed (): ProtocolError {
  return new ProtocolError(400, MALFORMED_JSON)
}

// command/insert: a wrong JSON type anywhere wins (DeviceHive fails to read the message
// before it validates), then the name, then the lifetime's range.
// No issues at all means the lifetime is above the broker's maximum. Past the loop, every
// issue was about the name or the lifetime's value.
export function insertError (issues: z.core.$ZodIssue[], maxLifetime: number): ProtocolError {
  let name = false
  for (const issue of issues) {
    const field = issue.path[0]
    if (field === 'command') name = true
    else if (field !== 'lifetime' || (issue.code === 'invalid_type' && issue.expected !== 'int')) return malformed()
  }
  if (name) return new ProtocolError(400, COMMAND_NAME_INVALID)
  return new ProtocolError(400, validationFailed(`lifetime must be an integer from 1 to ${maxLifetime} (seconds)`))
}

// device/save: types first, then the name.
export function deviceError (issues: z.core.$ZodIssue[]): ProtocolError {
  for (const issue of issues) {
    if (issue.path[0] !== 'name') return malformed()
  }
  return new ProtocolError(400, DEVICE_NAME_INVALID)
}

/** `token/refresh` (spec §11). */
export const tokenRefreshSchema = z.object({
  refreshToken: text.nullish()
})

/** The `payload` of `token/create` (spec §11): actions as ids or DeviceHive's names. */
export const tokenPayload = z.object({
  userId: int.nullish(),
  actions: z.array(z.union([z.int(), z.string()])).nullish(),
  networkIds: z.array(text).nullish(),
  deviceTypeIds: z.array(text).nullish(),
  expiration: timestamp.nullish(),
  refreshExpiration: timestamp.nullish()
})
