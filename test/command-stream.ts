// broker.commands(): commands as an async iterable, with a bounded buffer.
import t from 'tap'
import type { Command } from '../lib/schema.js'
import { setup } from './fixtures/broker.js'

t.test('command-stream: for await hands out matching commands in order, and break stops listening', async (t) => {
  const { broker, device, insert } = setup(t)
  await device('lamp-1')
  await device('lamp-2')
  const stream = broker.commands({ deviceId: 'lamp-1' })
  await insert('lamp-2', { command: 'other device' })
  for (const name of ['a', 'b', 'c']) await insert('lamp-1', { command: name })
  const seen: string[] = []
  for await (const command of stream) {
    seen.push(command.command)
    t.ok(Object.isFrozen(command), 'frozen')
    if (seen.length === 3) break
  }
  t.strictSame(seen, ['a', 'b', 'c'])
  t.equal(stream.ended, true, 'break ended it')
  await insert('lamp-1', { command: 'after' })
  t.strictSame(await stream.next(), { value: undefined, done: true }, 'nothing after it ended')
})

t.test('command-stream: a waiting consumer gets the next command as it comes', async (t) => {
  const { broker, device, insert } = setup(t)
  await device('lamp-1')
  const stream = broker.commands({ names: ['on'] })
  const next = stream.next()
  await insert('lamp-1', { command: 'off' })
  await insert('lamp-1', { command: 'on' })
  t.equal(((await next).value as Command).command, 'on')
  await stream.return()
})

t.test('command-stream: past bufferSize it ends with ERR_OVERFLOW, after handing out what it held', async (t) => {
  const { broker, device, insert } = setup(t)
  await device('lamp-1')
  const stream = broker.commands({}, { bufferSize: 2 })
  for (const name of ['a', 'b', 'c', 'd']) await insert('lamp-1', { command: name })
  t.equal(((await stream.next()).value as Command).command, 'a')
  t.equal(((await stream.next()).value as Command).command, 'b')
  await t.rejects(stream.next(), { code: 'ERR_OVERFLOW', message: /fell more than 2 commands behind/ })
  t.strictSame(await stream.next(), { value: undefined, done: true }, 'then it is done')
})

t.test('command-stream: an overflow ends listening at once; return() after the end is harmless', async (t) => {
  const { broker, device, insert } = setup(t)
  await device('lamp-1')
  const stream = broker.commands({}, { bufferSize: 1 })
  await insert('lamp-1', { command: 'a' })
  await insert('lamp-1', { command: 'b' })
  t.equal(stream.ended, true, 'overflowed')
  t.equal(((await stream.next()).value as Command).command, 'a')
  await t.rejects(stream.next(), { code: 'ERR_OVERFLOW' })
  t.strictSame(await stream.return(), { value: undefined, done: true })
  t.strictSame(await stream.return(), { value: undefined, done: true }, 'twice')
})

t.test('command-stream: drop-oldest keeps the newest bufferSize and counts what it dropped', async (t) => {
  const { broker, device, insert } = setup(t)
  await device('lamp-1')
  const stream = broker.commands({}, { bufferSize: 2, overflow: 'drop-oldest' })
  for (let i = 0; i < 7; i++) await insert('lamp-1', { command: `c${i}` })
  t.equal(stream.dropped, 5)
  const first = await stream.next()
  const second = await stream.next()
  t.strictSame([(first.value as Command).command, (second.value as Command).command], ['c5', 'c6'])
  t.equal(stream.ended, false, 'still listening')
  await stream[Symbol.asyncDispose]()
  t.equal(stream.ended, true, 'disposed')
})

t.test('command-stream: its signal ends it, a waiting consumer included; an aborted signal makes an ended stream', async (t) => {
  const { broker, device, insert } = setup(t)
  await device('lamp-1')
  const controller = new AbortController()
  const stream = broker.commands({}, { signal: controller.signal })
  const waiting = stream.next()
  controller.abort()
  t.strictSame(await waiting, { value: undefined, done: true })
  await insert('lamp-1', { command: 'late' })
  t.strictSame(await stream.next(), { value: undefined, done: true })
  const dead = broker.commands({}, { signal: AbortSignal.abort() })
  t.equal(dead.ended, true)
  t.strictSame(await dead.next(), { value: undefined, done: true })
})

t.test('command-stream: closing the broker ends every stream; commands() after close throws ERR_CLOSED', async (t) => {
  const { broker } = setup(t)
  const stream = broker.commands()
  const waiting = stream.next()
  await broker.close()
  t.strictSame(await waiting, { value: undefined, done: true })
  t.throws(() => broker.commands(), { code: 'ERR_CLOSED' })
})

t.test('command-stream: a bad filter or options throw at once, naming what is wrong', async (t) => {
  const { broker } = setup(t)
  t.throws(() => broker.commands({ deviceId: 5 } as never), { name: 'TypeError', message: /filter\.deviceId/ })
  t.throws(() => broker.commands({}, null as never), { name: 'TypeError', message: /options must be an object/ })
  t.throws(() => broker.commands({}, { signal: {} as never }), { name: 'TypeError', message: /options.signal must be an AbortSignal/ })
  t.throws(() => broker.commands({}, { bufferSize: 0 }), { name: 'RangeError', message: /options.bufferSize must be an integer from 1/ })
  t.throws(() => broker.commands({}, { overflow: 'block' as never }), { name: 'RangeError', message: /options.overflow must be 'error' or 'drop-oldest'/ })
})
