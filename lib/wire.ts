import type { Command, Device, ErrorReply, Json, SuccessReply } from './schema.js'
import type { CommandRecord, DeviceRecord } from './store/store.js'
import { formatTimestamp } from './timestamp.js'

// How stored records look on the wire. Each call builds fresh objects from
// the stored JSON text, so no caller ever holds the store's own data.

/** A stored command as clients see it: the twelve keys of spec §5, in order. */
export function toCommand (record: CommandRecord): Command {
  return {
    id: record.id,
    command: record.command,
    timestamp: formatTimestamp(record.timestamp),
    lastUpdated: formatTimestamp(record.lastUpdated),
    userId: record.userId,
    deviceId: record.deviceId,
    networkId: record.networkId,
    deviceTypeId: record.deviceTypeId,
    parameters: parseJson(record.parameters),
    lifetime: record.lifetime,
    status: record.status,
    result: parseJson(record.result)
  }
}

/** A stored device as `device/get` returns it. */
export function toDevice (record: DeviceRecord): Device {
  return {
    id: record.id,
    name: record.name,
    data: parseJson(record.data),
    networkId: record.networkId,
    deviceTypeId: record.deviceTypeId,
    isBlocked: record.isBlocked
  }
}

function parseJson (text: string | null): Json {
  return text === null ? null : JSON.parse(text) as Json
}

/**
 * Freezes a JSON value (no cycles) and everything inside it; returns it. Walks with `for...in`
 * and indexes rather than `Object.keys`: no array of keys per object (a JSON value's objects
 * inherit no enumerable keys).
 */
export function deepFreeze<T> (value: T): T {
  if (value !== null && typeof value === 'object') {
    Object.freeze(value)
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) deepFreeze(value[i])
    } else {
      for (const key in value) deepFreeze(value[key])
    }
  }
  return value
}

/**
 * Deeply freezes a command from {@link toCommand}; returns it. Only `parameters` and `result`
 * can hold objects, so only they are walked: the push path freezes one command per event.
 */
export function freezeCommand (command: Command): Command {
  Object.freeze(command)
  deepFreeze(command.parameters)
  deepFreeze(command.result)
  return command
}

/** `{action, requestId, status: "success", ...payload}`, in that key order. */
export function success (action: unknown, requestId: unknown, payload: object | undefined): SuccessReply {
  const reply: SuccessReply = { action, requestId, status: 'success' }
  return payload === undefined ? reply : Object.assign(reply, payload)
}

/** `{action, requestId, code, status: "error", error}`, exactly those keys in that order. */
export function failure (action: unknown, requestId: unknown, code: number, error: string): ErrorReply {
  return { action, requestId, code, status: 'error', error }
}

/** The reply to a frame that is not a JSON object: no `action`, no `requestId`. */
export function frameFailure (code: number, error: string): ErrorReply {
  return { code, status: 'error', error }
}

// Whether a reply can carry this value back: JSON.stringify must write it, and write it as is.
// A JSON frame's values all can, but for those nested deeper than the stack (or, from an
// object, a BigInt, a function, NaN).
export function echoable (value: unknown): boolean {
  switch (typeof value) {
    case 'undefined':
    case 'string':
    case 'boolean':
      return true
    case 'number':
      return Number.isFinite(value)
    case 'object':
      if (value === null) return true
      try {
        return JSON.stringify(value) !== undefined
      } catch {
        return false
      }
    default:
      return false
  }
}

// An unknown action as DeviceHive names it: `null` when missing, else the JSON of it.
export function describeAction (action: unknown): string {
  if (action === undefined || action === null) return 'null'
  if (typeof action === 'string') return action
  return echoable(action) ? JSON.stringify(action) : typeof action
}
