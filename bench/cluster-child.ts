// One broker of a benchmark cluster, in a child process of its own, on postgresStore with the
// real clock (bench/pg.ts starts it as dist/bench/cluster-child.js):
//   cluster-child <schema>          (BENCH_SECRET in the environment: the parent's secret)
// It sends { up: pid } once its broker is ready (its bus listening), { expired: id, at } for
// each `expired` event (at: Date.now() then) and { error: code, message } for each `error`.
// Requests { seq, op, ... } are answered with { seq, answer }:
//   handle { message }                        broker.handle(message, an admin token); answer: the reply
//   inserts { from, count, inFlight, devices, lifetime }
//                                             command/insert of commands from..from+count-1, command
//                                             i on device dev-(i % devices) with parameters { i },
//                                             inFlight at a time; answer: { ok, acks: [i, id, timestamp][] }
//   close                                     closes the broker, then exits
import { createBroker } from '../lib/broker.js'
import { signToken } from '../lib/auth.js'
import { postgresStore } from '../lib/store/postgres.js'
import { pool } from './common.js'

const [schema] = process.argv.slice(2)
const secret = process.env.BENCH_SECRET
if (schema === undefined || secret === undefined || process.send === undefined) {
  process.stderr.write('usage (from a parent with IPC, BENCH_SECRET set): cluster-child <schema>\n')
  process.exit(2)
}
const send = (message: unknown): void => { process.send?.(message) }
const token = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'], e: Date.now() + 86_400_000 }, { secret })
const broker = createBroker(postgresStore({ schema }), { secret, tick: 100 })
broker.on('expired', (command) => { send({ expired: command.id, at: Date.now() }) })
broker.on('error', (err) => { send({ error: err.code, message: err.message }) })

interface Request { seq: number, op: string, message?: unknown, from?: number, count?: number, inFlight?: number, devices?: number, lifetime?: number }

process.on('message', (request: Request) => {
  void answer(request).then((value) => { send({ seq: request.seq, answer: value }) })
})

async function answer (request: Request): Promise<unknown> {
  switch (request.op) {
    case 'handle':
      return await broker.handle(request.message, token)
    case 'inserts': {
      const { from = 0, count = 0, inFlight = 1, devices = 1, lifetime = 3600 } = request
      const acks: Array<[number, number, string]> = []
      let ok = 0
      await pool(count, inFlight, async (k) => {
        const i = from + k
        const reply = await broker.handle({
          action: 'command/insert', deviceId: `dev-${i % devices}`, command: { command: 'set', parameters: { i }, lifetime }
        }, token) as Record<string, any>
        if (reply.status !== 'success') return
        ok++
        acks.push([i, reply.command.id, reply.command.timestamp])
      })
      return { ok, acks }
    }
    default:
      await broker.close()
      setImmediate(() => process.exit(0))
      return true
  }
}

await broker.ready
send({ up: process.pid })
