import t from 'tap'
import { BrokerError, describeCause, isBrokerError, ProtocolError, type BrokerErrorCode } from '../lib/errors.js'

t.test('errors: BrokerError is an Error with a name, code and message', async (t) => {
  const error = new BrokerError('ERR_CLOSED', 'Broker is closed')
  t.ok(error instanceof Error, 'instanceof Error')
  t.ok(error instanceof BrokerError, 'instanceof BrokerError')
  t.equal(error.name, 'BrokerError')
  t.equal(error.code, 'ERR_CLOSED')
  t.equal(error.message, 'Broker is closed')
  t.equal(String(error), 'BrokerError: Broker is closed')
  t.match(error.stack, /^BrokerError: Broker is closed\n/, 'the stack starts with the name')
  t.notOk('cause' in error, 'no cause unless given')
})

t.test('errors: BrokerError keeps its cause', async (t) => {
  const original = new TypeError('disk on fire')
  const error = new BrokerError('ERR_STORE', 'the store failed', { cause: original })
  t.equal(error.cause, original)
  t.equal(error.code, 'ERR_STORE')
  const thrownValue = new BrokerError('ERR_SUBSCRIBER', 'a subscriber threw', { cause: 'a string' })
  t.equal(thrownValue.cause, 'a string', 'any thrown value')
  const undefinedCause = new BrokerError('ERR_PUSH', 'push threw', { cause: undefined })
  t.ok('cause' in undefinedCause, 'an explicit undefined cause is kept')
  t.equal(undefinedCause.cause, undefined)
})

t.test('errors: BrokerError takes every documented code', async (t) => {
  const codes: BrokerErrorCode[] = ['ERR_CLOSED', 'ERR_STORE', 'ERR_SUBSCRIBER', 'ERR_PUSH', 'ERR_SCHEMA', 'ERR_LOCKED', 'ERR_FILE_MOVED', 'ERR_INTERNAL']
  for (const code of codes) t.equal(new BrokerError(code, code).code, code, code)
})

t.test('errors: ProtocolError carries code and error and is not an Error', async (t) => {
  const error = new ProtocolError(401, 'Token expired')
  t.equal(error.code, 401)
  t.equal(error.error, 'Token expired')
  t.ok(error instanceof ProtocolError, 'instanceof ProtocolError')
  t.notOk(error instanceof Error, 'not an Error')
  t.notOk('stack' in error, 'no stack')
  t.notOk('message' in error, 'no message')
  t.strictSame(Object.keys(error), ['code', 'error'], 'exactly code and error')
  t.equal(JSON.stringify(error), '{"code":401,"error":"Token expired"}')
})

t.test('errors: describeCause names any thrown value and never throws', async (t) => {
  t.equal(describeCause(new Error('disk on fire')), 'disk on fire')
  t.equal(describeCause('a string'), 'a string')
  t.equal(describeCause(42), '42')
  t.equal(describeCause(null), 'null')
  t.equal(describeCause(undefined), 'undefined')
  t.equal(describeCause(Symbol('s')), 'Symbol(s)')
  t.equal(describeCause(Object.create(null)), 'an object')
  t.equal(describeCause(() => 1), 'a function')
  const trap = new Proxy({}, { getPrototypeOf () { throw new Error('trap') } })
  t.equal(describeCause(trap), 'a value that cannot be described')
  const badMessage = Object.defineProperty(new Error('x'), 'message', { get (): string { throw new Error('getter') } })
  t.equal(describeCause(badMessage), 'a value that cannot be described')
})

t.test('errors: isBrokerError checks class and code and never throws', async (t) => {
  t.equal(isBrokerError(new BrokerError('ERR_STORE', 'x'), 'ERR_STORE'), true)
  t.equal(isBrokerError(new BrokerError('ERR_PUSH', 'x'), 'ERR_STORE'), false)
  t.equal(isBrokerError(new Error('x'), 'ERR_STORE'), false)
  t.equal(isBrokerError(new Proxy({}, { getPrototypeOf () { throw new Error('trap') } }), 'ERR_STORE'), false)
})
