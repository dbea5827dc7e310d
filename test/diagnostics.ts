// The diagnostics_channel channels: what an APM tool sees with no code change.
import diagnosticsChannel from 'node:diagnostics_channel'
import t, { type Test } from 'tap'
import { channels, observing, setObserving } from '../lib/diagnostics.js'
import type { BrokerError } from '../lib/errors.js'
import type { Command, Push } from '../lib/schema.js'
import { laterStore } from './fixtures/later-store.js'
import { setup } from './fixtures/broker.js'

function listen (t: Test, name: string): unknown[] {
  const seen: unknown[] = []
  const onMessage = (message: unknown): void => { seen.push(message) }
  diagnosticsChannel.subscribe(name, onMessage)
  t.teardown(() => { diagnosticsChannel.unsubscribe(name, onMessage) })
  return seen
}

t.test('diagnostics: insert, update, expire, push and error are published, each once, with what happened', async (t) => {
  const inserts = listen(t, 'command-broker:insert') as Array<{ command: Command }>
  const updates = listen(t, 'command-broker:update') as Array<{ command: Command }>
  const expires = listen(t, 'command-broker:expire') as Array<{ command: Command }>
  const pushes = listen(t, 'command-broker:push') as Array<{ push: Push }>
  const errors = listen(t, 'command-broker:error') as Array<{ error: BrokerError }>
  const { broker, admin, device, insert, clock } = setup(t)
  broker.on('error', () => {})
  await device('lamp-1')
  const session = broker.session(() => {})
  await session.handle({ action: 'command/subscribe', deviceId: 'lamp-1' }, admin)
  const { id } = (await insert('lamp-1', { command: 'on', lifetime: 5 }) as unknown as { command: { id: number } }).command
  t.strictSame(inserts.map((m) => [m.command.id, m.command.command]), [[id, 'on']])
  t.ok(Object.isFrozen(inserts[0]?.command), 'frozen')
  t.strictSame(pushes.map((m) => [m.push.action, m.push.command.id]), [['command/insert', id]])
  await broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: id, command: { status: 'done' } }, admin)
  t.strictSame(updates.map((m) => [m.command.id, m.command.status]), [[id, 'done']])
  const { id: other } = (await insert('lamp-1', { command: 'brief', lifetime: 1 }) as unknown as { command: { id: number } }).command
  clock.advance(1100)
  t.strictSame(expires.map((m) => [m.command.id, m.command.status]), [[other, null]], 'a command expired before any update')
  broker.subscribe({}, () => { throw new Error('subscriber failed') })
  await insert('lamp-1', { command: 'again' })
  t.match(errors.map((m) => m.error.code), ['ERR_SUBSCRIBER'])
})

t.test('diagnostics: an update seen only by the channel, on a store that answers later, is published too', async (t) => {
  const updates = listen(t, 'command-broker:update') as Array<{ command: Command }>
  const { broker, admin, device, insert } = setup(t, {}, laterStore())
  await device('lamp-1')
  const { id } = (await insert('lamp-1', { command: 'on' }) as unknown as { command: { id: number } }).command
  await broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: id, command: { result: 1 } }, admin)
  t.strictSame(updates.map((m) => [m.command.id, m.command.result]), [[id, 1]])
})

t.test('diagnostics: the channels are the named ones, and idle without subscribers', async (t) => {
  t.strictSame(Object.values(channels).map((channel) => channel.name), ['command-broker:insert', 'command-broker:update', 'command-broker:expire', 'command-broker:push', 'command-broker:error'])
  t.ok(Object.values(channels).every((channel) => !channel.hasSubscribers))
  t.ok(Object.isFrozen(channels))
})

t.test('diagnostics: with observing off (the benchmark baseline), no channel hears anything and commits go uncounted; on again, both resume', async (t) => {
  const names = ['insert', 'update', 'expire', 'push', 'error'].map((name) => `command-broker:${name}`)
  const heard = names.map((name) => listen(t, name))
  const { broker, admin, device, insert, clock } = setup(t)
  broker.on('error', () => {})
  t.equal(observing, true, 'on by default')
  setObserving(false)
  t.teardown(() => { setObserving(true) })
  await device('lamp-1')
  const session = broker.session(() => {})
  await session.handle({ action: 'command/subscribe', deviceId: 'lamp-1' }, admin)
  const { id } = (await insert('lamp-1', { command: 'on', lifetime: 1 }) as unknown as { command: { id: number } }).command
  await broker.handle({ action: 'command/update', deviceId: 'lamp-1', commandId: id, command: { status: 'done' } }, admin)
  await insert('lamp-1', { command: 'brief', lifetime: 1 })
  clock.advance(1100)
  broker.subscribe({}, () => { throw new Error('subscriber failed') })
  await insert('lamp-1', { command: 'again' })
  t.strictSame(heard.map((messages) => messages.length), [0, 0, 0, 0, 0], 'every channel had a subscriber and heard nothing')
  t.equal((await broker.stats()).commits.count, 0, 'no commit counted')
  setObserving(true)
  await insert('lamp-1', { command: 'observed' })
  t.strictSame(heard.map((messages) => messages.length), [1, 0, 0, 1, 1], 'the insert, its push and the throwing subscriber are heard again')
  const { commits } = await broker.stats()
  t.match(commits, { count: 1, writes: 1, lastBatch: 1, largestBatch: 1 })
})
