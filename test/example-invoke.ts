// The README's invoke() example is examples/invoke.ts; run it and keep the two identical.
import { readFileSync } from 'node:fs'
import t from 'tap'
import { runCommand } from '../examples/invoke.js'
import { createTestBroker, deviceStub, nextCommand } from '../lib/testing/index.js'
import { rejection } from './fixtures/throws.js'

const signal = new AbortController().signal

t.test('example-invoke: the README shows examples/invoke.ts verbatim', async (t) => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
  const block = /`examples\/invoke\.ts`; `test\/example-invoke\.ts`[^\n]*\n\n```ts\n([\s\S]*?)```/.exec(readme)?.[1]
  t.ok(block, 'the README has the invoke block')
  const example = readFileSync(new URL('../examples/invoke.ts', import.meta.url), 'utf8')
  const code = example.split('\n').filter((line) => !line.startsWith('//')).join('\n')
  t.equal(code.replace("from '../lib/index.js'", "from 'command-broker'"), block)
})

t.test('example-invoke: 200 with the device\'s result; DeviceHive\'s code and error when the insert is refused', async (t) => {
  const { broker, tokens } = await createTestBroker()
  t.teardown(() => broker.close())
  await deviceStub(broker, { deviceId: 'lamp-1', answer: (command) => ({ status: 'done', result: command.parameters }) })
  const answered = await runCommand(broker, tokens.client, 'lamp-1', { command: 'on', parameters: { level: 3 }, lifetime: 60 }, 10, signal)
  t.match(answered, { status: 200, body: { id: Number, status: 'done', result: { level: 3 } } })
  t.strictSame(await runCommand(broker, tokens.client, 'lamp-2', { command: 'on' }, 10, signal),
    { status: 404, body: { error: 'Device with such deviceId = lamp-2 not found' } })
  t.strictSame(await runCommand(broker, tokens.device, 'lamp-1', { command: 'on' }, 10, signal),
    { status: 403, body: { error: 'Access is denied' } }, 'a token that may not insert')
})

t.test('example-invoke: 202 once waitTimeout passes, 504 once the lifetime runs out, on the manual clock', async (t) => {
  const { broker, tokens, clock } = await createTestBroker()
  t.teardown(() => broker.close())
  await deviceStub(broker, { deviceId: 'lamp-1', answer: () => undefined })
  let inserted = nextCommand(broker, 'lamp-1')
  const waiting = runCommand(broker, tokens.client, 'lamp-1', { command: 'slow', lifetime: 60 }, 10, signal)
  await inserted
  clock.advance(10_000)
  t.strictSame(await waiting, { status: 202, body: { error: 'no answer yet' } })
  inserted = nextCommand(broker, 'lamp-1')
  const expiring = runCommand(broker, tokens.client, 'lamp-1', { command: 'brief', lifetime: 2 }, 30, signal)
  await inserted
  clock.advance(2_100)
  t.strictSame(await expiring, { status: 504, body: { error: 'the device did not answer within the command\'s lifetime' } })
})

t.test('example-invoke: the caller leaving (ERR_ABORTED) and the broker closing (ERR_CLOSED) are rethrown', async (t) => {
  const { broker, tokens } = await createTestBroker()
  await deviceStub(broker, { deviceId: 'lamp-1', answer: () => undefined })
  const controller = new AbortController()
  const leaving = rejection(runCommand(broker, tokens.client, 'lamp-1', { command: 'on' }, 10, controller.signal))
  controller.abort()
  t.match(await leaving, { name: 'BrokerError', code: 'ERR_ABORTED' })
  const closing = rejection(runCommand(broker, tokens.client, 'lamp-1', { command: 'on' }, 10, signal))
  await broker.close()
  t.match(await closing, { name: 'BrokerError', code: 'ERR_CLOSED' })
})

t.test('example-invoke: what is not a BrokerError is rethrown as it is', async (t) => {
  const { broker, tokens } = await createTestBroker()
  t.teardown(() => broker.close())
  const err = await rejection(runCommand(broker, tokens.client, 'lamp-1', { command: 'on' }, 10, 'not a signal' as unknown as AbortSignal))
  t.equal(err.name, 'TypeError')
})
