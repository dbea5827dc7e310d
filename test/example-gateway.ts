// The example gateway over a real WebSocket: the round trip a DeviceHive client and device make.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { WebSocket } from 'ws'
import { startGateway } from '../examples/gateway.js'
import { signToken } from '../lib/auth.js'
import { manualClock } from '../lib/manual-clock.js'

const START = Date.parse('2026-01-01T00:00:00.000Z')

// A WebSocket client whose incoming frames can be awaited one by one, in order.
class Client {
  readonly socket: WebSocket
  readonly #inbox: unknown[] = []
  readonly #waiting: Array<(message: unknown) => void> = []

  constructor (url: string) {
    this.socket = new WebSocket(url)
    this.socket.on('message', (data) => {
      const message: unknown = JSON.parse(String(data))
      const waiter = this.#waiting.shift()
      if (waiter !== undefined) waiter(message)
      else this.#inbox.push(message)
    })
  }

  async open (): Promise<this> {
    if (this.socket.readyState !== WebSocket.OPEN) await new Promise((resolve, reject) => { this.socket.once('open', resolve).once('error', reject) })
    return this
  }

  next (): Promise<Record<string, unknown>> {
    if (this.#inbox.length > 0) return Promise.resolve(this.#inbox.shift() as Record<string, unknown>)
    return new Promise((resolve) => { this.#waiting.push(resolve as (message: unknown) => void) })
  }

  async request (message: Record<string, unknown>): Promise<Record<string, unknown>> {
    this.socket.send(JSON.stringify(message))
    return await this.next()
  }

  get queued (): number {
    return this.#inbox.length
  }
}

t.test('example-gateway: a client and a device make the full round trip over WebSocket', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'command-broker-gateway-'))
  const clock = manualClock(START)
  const gateway = await startGateway({ file: join(dir, 'hub.db'), secret: 'devicehive', port: 0, clock })
  t.teardown(async () => {
    await gateway.close()
    rmSync(dir, { recursive: true, force: true })
  })
  t.match(gateway.url, /^ws:\/\/127\.0\.0\.1:\d+\/api\/websocket$/)
  const deviceToken = signToken({ u: 2, a: [5, 8], n: ['1'] }, { secret: 'devicehive', now: START })
  const client = await new Client(gateway.url).open()
  const device = await new Client(gateway.url).open()

  t.strictSame(await client.request({ action: 'authenticate', requestId: 1, token: gateway.adminToken }),
    { action: 'authenticate', requestId: 1, status: 'success' })
  t.strictSame(await client.request({ action: 'device/save', requestId: 2, deviceId: 'lamp-1', device: { name: 'Lamp', networkId: 1 } }),
    { action: 'device/save', requestId: 2, status: 'success' })
  t.equal((await device.request({ action: 'authenticate', requestId: 1, token: deviceToken })).status, 'success')

  const deviceSub = await device.request({ action: 'command/subscribe', requestId: 2, deviceId: 'lamp-1', names: ['on'] })
  t.same(Object.keys(deviceSub), ['action', 'requestId', 'status', 'subscriptionId'])
  const updateSub = await client.request({ action: 'command/subscribe', requestId: 3, deviceId: 'lamp-1', returnUpdatedCommands: true })
  t.equal(updateSub.status, 'success')

  // The client inserts; the device, subscribed by name, receives the push.
  const inserted = await client.request({ action: 'command/insert', requestId: 4, deviceId: 'lamp-1', command: { command: 'on', parameters: { level: 3 }, lifetime: 30 } })
  t.strictSame(inserted, {
    action: 'command/insert',
    requestId: 4,
    status: 'success',
    command: { id: 1, timestamp: '2026-01-01T00:00:00.000', lastUpdated: '2026-01-01T00:00:00.000', userId: 1 }
  })
  const push = await device.next()
  t.same(Object.keys(push), ['action', 'command', 'subscriptionId'])
  t.equal(push.action, 'command/insert')
  t.equal(push.subscriptionId, deviceSub.subscriptionId)
  const command = push.command as Record<string, unknown>
  t.strictSame(command, {
    id: 1,
    command: 'on',
    timestamp: '2026-01-01T00:00:00.000',
    lastUpdated: '2026-01-01T00:00:00.000',
    userId: 1,
    deviceId: 'lamp-1',
    networkId: 1,
    deviceTypeId: null,
    parameters: { level: 3 },
    lifetime: 30,
    status: null,
    result: null
  })

  // The device sends the whole command back with its status and result, as real devices do.
  clock.advance(1500)
  t.strictSame(await device.request({ action: 'command/update', requestId: 3, deviceId: 'lamp-1', commandId: 1, command: { ...command, status: 'done', result: { ok: true } } }),
    { action: 'command/update', requestId: 3, status: 'success' })
  const update = await client.next()
  t.equal(update.action, 'command/update')
  t.equal(update.subscriptionId, updateSub.subscriptionId)
  t.match(update.command, { id: 1, status: 'done', result: { ok: true }, lastUpdated: '2026-01-01T00:00:01.500' })

  const got = await client.request({ action: 'command/get', requestId: 5, deviceId: 'lamp-1', commandId: 1 })
  t.match(got, { status: 'success', command: { id: 1, command: 'on', status: 'done', result: { ok: true } } })

  // A command nobody answers expires, and the client's update subscription is told.
  const off = await client.request({ action: 'command/insert', requestId: 6, deviceId: 'lamp-1', command: { command: 'off', lifetime: 5 } })
  const offId = (off.command as { id: number }).id
  clock.advance(5000)
  const expired = await client.next()
  t.match(expired, { action: 'command/update', subscriptionId: updateSub.subscriptionId, command: { id: offId, command: 'off', status: 'expired' } })
  t.match(await client.request({ action: 'command/get', requestId: 7, deviceId: 'lamp-1', commandId: offId }),
    { code: 404, status: 'error', error: `Command with id = ${offId} not found` })
  t.equal(device.queued, 0, 'the device heard nothing of "off": it subscribed to "on" only')

  // Frames that are not JSON get DeviceHive's error, and the connection stays usable.
  device.socket.send('not json')
  t.strictSame(await device.next(), { code: 400, status: 'error', error: 'Malformed Json received.' })
  client.socket.close()
  device.socket.close()
})
