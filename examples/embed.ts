// The README's embedding example, verbatim but for the import path: test/example-embed.ts
// runs it and checks the two stay the same.
import { randomBytes } from 'node:crypto'
import { createBroker, manualClock, memoryStore, signToken } from '../lib/index.js'

const secret = randomBytes(32).toString('base64') // or DeviceHive's JWT_SECRET: tokens it signed are accepted
const clock = manualClock(Date.parse('2026-01-01')) // tests never sleep; omit for real time
const broker = createBroker(memoryStore(), { secret, clock }) // or sqliteStore('hub.db')
const token = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'] }, { secret, now: clock.now() })

await broker.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'Lamp' } }, token)
broker.subscribe({ deviceId: 'lamp-1', names: ['on'] }, (command) => {
  console.log('deliver', command.command, command.parameters)
})
broker.on('expired', (command) => console.log('expired', command.id))

const reply = await broker.handle({
  action: 'command/insert', requestId: 1, deviceId: 'lamp-1',
  command: { command: 'on', parameters: { level: 3 }, lifetime: 30 }
}, token)
console.log(reply.status, reply.command) // success { id: 1, timestamp: '2026-01-01T00:00:00.000', ... }

clock.advance(30_000) // expired 1
await broker.close()
