import t from 'tap'
import type { CommandRecord, DeviceRecord } from '../lib/store/store.js'
import { deepFreeze, failure, frameFailure, freezeCommand, success, toCommand, toDevice } from '../lib/wire.js'

const COMMAND_KEYS = ['id', 'command', 'timestamp', 'lastUpdated', 'userId', 'deviceId', 'networkId', 'deviceTypeId', 'parameters', 'lifetime', 'status', 'result']
const DEVICE_KEYS = ['id', 'name', 'data', 'networkId', 'deviceTypeId', 'isBlocked']
const T0 = Date.UTC(2026, 10, 25, 10, 0, 0, 0)

function record (extra: Partial<CommandRecord> = {}): CommandRecord {
  // Deliberately not in wire order, with store-only fields.
  return {
    updated: false,
    expiresAt: T0 + 60_000,
    result: '{"ok":true}',
    status: 'done',
    lifetime: 60,
    parameters: '{"a":[1,{"b":null}]}',
    deviceTypeId: 3,
    networkId: 2,
    deviceId: 'dev-1',
    userId: 1,
    lastUpdated: T0 + 5,
    timestamp: T0,
    command: 'reboot',
    id: 42,
    ...extra
  }
}

function device (extra: Partial<DeviceRecord> = {}): DeviceRecord {
  return { isBlocked: false, deviceTypeId: 3, networkId: 2, data: '{"x":1}', name: 'Device 1', id: 'dev-1', ...extra }
}

t.test('wire: toCommand gives the twelve keys in order', async (t) => {
  const command = toCommand(record())
  t.strictSame(Object.keys(command), COMMAND_KEYS)
  t.equal(JSON.stringify(command),
    `{"id":42,"command":"reboot","timestamp":"2026-11-25T10:00:00.000","lastUpdated":"2026-11-25T10:00:00.005","userId":1,"deviceId":"dev-1","networkId":2,"deviceTypeId":3,"parameters":{"a":[1,{"b":null}]},"lifetime":60,"status":"done","result":{"ok":true}}`)
})

t.test('wire: toCommand keeps nulls', async (t) => {
  const command = toCommand(record({ userId: null, networkId: null, deviceTypeId: null, parameters: null, lifetime: null, status: null, result: null, expiresAt: null }))
  t.strictSame(Object.keys(command), COMMAND_KEYS)
  t.equal(JSON.stringify(command),
    '{"id":42,"command":"reboot","timestamp":"2026-11-25T10:00:00.000","lastUpdated":"2026-11-25T10:00:00.005","userId":null,"deviceId":"dev-1","networkId":null,"deviceTypeId":null,"parameters":null,"lifetime":null,"status":null,"result":null}')
})

t.test('wire: toCommand parses JSON text of any kind', async (t) => {
  for (const text of ['null', 'true', '0', '-1.5', '"text"', '[]', '{}', '[{"a":{"b":[null]}}]']) {
    const command = toCommand(record({ parameters: text, result: text }))
    t.strictSame(command.parameters, JSON.parse(text), `parameters ${text}`)
    t.strictSame(command.result, JSON.parse(text), `result ${text}`)
  }
})

t.test('wire: toCommand builds fresh objects on every call', async (t) => {
  const stored = record()
  const first = toCommand(stored)
  const second = toCommand(stored)
  t.not(first, second, 'fresh command')
  t.not(first.parameters, second.parameters, 'fresh parameters')
  t.not(first.result, second.result, 'fresh result')
  ;(first.parameters as { a: unknown[] }).a.push('mutated')
  ;(first.result as Record<string, unknown>).ok = false
  t.strictSame(second.parameters, { a: [1, { b: null }] }, 'the other copy is untouched')
  t.strictSame(toCommand(stored).result, { ok: true }, 'the record is untouched')
  t.equal(stored.parameters, '{"a":[1,{"b":null}]}')
})

t.test('wire: toCommand keeps __proto__ keys as own data without polluting Object.prototype', async (t) => {
  const text = '{"__proto__":{"polluted":true},"nested":{"__proto__":{"isAdmin":true}}}'
  const command = toCommand(record({ parameters: text, result: '[{"__proto__":{"x":1}}]' }))
  const parameters = command.parameters as Record<string, unknown>
  t.ok(Object.hasOwn(parameters, '__proto__'), 'an own __proto__ key')
  t.equal(Object.getPrototypeOf(parameters), Object.prototype, 'prototype unchanged')
  t.equal(parameters.polluted, undefined, 'nothing inherited from it')
  t.strictSame(Object.getOwnPropertyDescriptor(parameters, '__proto__')?.value, { polluted: true }, 'holds the data')
  t.equal(({} as Record<string, unknown>).polluted, undefined, 'Object.prototype is clean')
  t.equal(({} as Record<string, unknown>).isAdmin, undefined, 'Object.prototype is clean (nested)')
  t.equal(JSON.stringify(command.parameters), text, 'round-trips to the same text')
  t.equal(JSON.stringify(command.result), '[{"__proto__":{"x":1}}]', 'inside arrays too')
  const frozen = deepFreeze(command)
  const own = Object.getOwnPropertyDescriptor(frozen.parameters, '__proto__')?.value as object
  t.ok(Object.isFrozen(own), 'deepFreeze reaches an own __proto__ value')
})

t.test('wire: toDevice gives its six keys in order', async (t) => {
  const shown = toDevice(device())
  t.strictSame(Object.keys(shown), DEVICE_KEYS)
  t.equal(JSON.stringify(shown), '{"id":"dev-1","name":"Device 1","data":{"x":1},"networkId":2,"deviceTypeId":3,"isBlocked":false}')
  const bare = toDevice(device({ data: null, networkId: null, deviceTypeId: null, isBlocked: true }))
  t.strictSame(Object.keys(bare), DEVICE_KEYS, 'nulls kept')
  t.equal(JSON.stringify(bare), '{"id":"dev-1","name":"Device 1","data":null,"networkId":null,"deviceTypeId":null,"isBlocked":true}')
})

t.test('wire: toDevice builds fresh data on every call', async (t) => {
  const stored = device()
  const first = toDevice(stored)
  ;(first.data as Record<string, unknown>).x = 2
  t.strictSame(toDevice(stored).data, { x: 1 })
})

t.test('wire: deepFreeze freezes nested values and returns its argument', async (t) => {
  const value = { a: { b: [1, { c: 'd' }] }, e: [[]], f: null, g: 'h' }
  t.equal(deepFreeze(value), value, 'returns the same object')
  t.ok(Object.isFrozen(value), 'top level')
  t.ok(Object.isFrozen(value.a), 'nested object')
  t.ok(Object.isFrozen(value.a.b), 'nested array')
  t.ok(Object.isFrozen(value.a.b[1]), 'object in an array')
  t.ok(Object.isFrozen(value.e[0]), 'array in an array')
  t.throws(() => { (value.a.b[1] as { c: string }).c = 'x' }, TypeError, 'strict-mode writes throw')
  t.equal((value.a.b[1] as { c: string }).c, 'd')
})

t.test('wire: deepFreeze freezes a whole command', async (t) => {
  const command = deepFreeze(toCommand(record()))
  t.ok(Object.isFrozen(command))
  t.ok(Object.isFrozen(command.parameters), 'parameters')
  t.ok(Object.isFrozen((command.parameters as { a: unknown[] }).a[1]), 'deep inside parameters')
  t.ok(Object.isFrozen(command.result), 'result')
})

t.test('wire: freezeCommand freezes a command as deepFreeze does', async (t) => {
  const command = freezeCommand(toCommand(record()))
  t.ok(Object.isFrozen(command))
  t.ok(Object.isFrozen((command.parameters as { a: unknown[] }).a[1]), 'deep inside parameters')
  t.ok(Object.isFrozen(command.result), 'result')
  const bare = toCommand(record({ parameters: null, result: null }))
  t.equal(freezeCommand(bare), bare, 'returns its argument')
  t.ok(Object.isFrozen(bare), 'null parameters and result')
})

t.test('wire: deepFreeze returns primitives and null as they are', async (t) => {
  for (const value of [null, undefined, 0, 'text', true]) t.equal(deepFreeze(value), value, String(value))
  const frozen = Object.freeze({ a: 1 })
  t.equal(deepFreeze(frozen), frozen, 'an already frozen object')
})

t.test('wire: success puts action, requestId and status first', async (t) => {
  const reply = success('command/insert', 1, { command: { id: 42, timestamp: '2026-11-25T10:00:00.000', lastUpdated: '2026-11-25T10:00:00.000', userId: 1 } })
  t.strictSame(Object.keys(reply), ['action', 'requestId', 'status', 'command'])
  t.equal(JSON.stringify(reply),
    '{"action":"command/insert","requestId":1,"status":"success","command":{"id":42,"timestamp":"2026-11-25T10:00:00.000","lastUpdated":"2026-11-25T10:00:00.000","userId":1}}')
  const several = success('command/subscribe', 'r', { subscriptionId: 3, extra: null })
  t.strictSame(Object.keys(several), ['action', 'requestId', 'status', 'subscriptionId', 'extra'], 'payload keys in their order')
})

t.test('wire: success without a payload has exactly three keys', async (t) => {
  const reply = success('command/update', null, undefined)
  t.strictSame(Object.keys(reply), ['action', 'requestId', 'status'])
  t.equal(JSON.stringify(reply), '{"action":"command/update","requestId":null,"status":"success"}')
  const requestId = { any: ['json'] }
  t.equal(success('authenticate', requestId, undefined).requestId, requestId, 'requestId echoed as given')
})

t.test('wire: failure has exactly action, requestId, code, status, error', async (t) => {
  const reply = failure('command/get', 7, 404, 'Command with id = 1 not found')
  t.strictSame(Object.keys(reply), ['action', 'requestId', 'code', 'status', 'error'])
  t.equal(JSON.stringify(reply), '{"action":"command/get","requestId":7,"code":404,"status":"error","error":"Command with id = 1 not found"}')
  t.equal(JSON.stringify(failure('x', null, 400, 'Unknown action requested: x')), '{"action":"x","requestId":null,"code":400,"status":"error","error":"Unknown action requested: x"}', 'null requestId kept')
})

t.test('wire: frameFailure has exactly code, status, error', async (t) => {
  const reply = frameFailure(400, 'Malformed Json received.')
  t.strictSame(Object.keys(reply), ['code', 'status', 'error'])
  t.equal(JSON.stringify(reply), '{"code":400,"status":"error","error":"Malformed Json received."}')
})

t.test('wire: deepFreeze reaches inside an object that is already frozen', async (t) => {
  const inner = { b: 1 }
  const outer = Object.freeze({ a: inner })
  deepFreeze(outer)
  t.ok(Object.isFrozen(inner))
})
