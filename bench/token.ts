// Scenario 6: the cost of a token on first use (verify the HS256 signature, check and compile
// its claims) against repeated use (a cache hit; expiry still checked against the clock).
import { performance } from 'node:perf_hooks'
import { Authenticator, deriveKey } from '../lib/auth.js'
import { createBroker, memoryStore, signToken } from '../lib/index.js'
import { check, quick, Scenario, SECRET } from './common.js'

const N = quick ? 2000 : 200_000
const now = Date.now()
// Distinct tokens: each differs in its user id, so each is new to the cache.
const tokens = Array.from({ length: N }, (_, i) => signToken({ u: i, a: [0], n: ['*'], dt: ['*'] }, { secret: SECRET, now }))

function perCall (fn: (i: number) => unknown): number {
  const start = performance.now()
  for (let i = 0; i < N; i++) fn(i)
  return ((performance.now() - start) * 1000) / N
}

const scenario = new Scenario('token cost')
// The authenticator alone, with a cache large enough that nothing is evicted.
{
  const auth = new Authenticator(deriveKey(SECRET), N)
  let users = 0
  const first = perCall((i) => { users += auth.grant(tokens[i], now).userId === i ? 1 : 0 })
  const repeated = perCall((i) => { users += auth.grant(tokens[i], now).userId === i ? 1 : 0 })
  check(users === 2 * N, 'token: every grant carried its own user')
  scenario.figure('first use: verify signature, check and compile claims', first, 'µs')
  scenario.figure('repeated use: cache hit, expiry checked', repeated, 'µs')
  scenario.figure('first / repeated', first / repeated, 'ratio')
}
// The same through handle(): a device/get per token, first and then again.
{
  const broker = createBroker(memoryStore(), { secret: SECRET, tokenCacheSize: N })
  await broker.handle({ action: 'device/save', deviceId: 'lamp-1', device: { name: 'Lamp' } }, tokens[0])
  const timed = async (): Promise<number> => {
    let ok = 0
    const start = performance.now()
    for (let i = 0; i < N; i++) {
      const reply = await broker.handle({ action: 'device/get', deviceId: 'lamp-1' }, tokens[i])
      if (reply.status === 'success') ok++
    }
    check(ok === N, 'token: every device/get answered')
    return ((performance.now() - start) * 1000) / N
  }
  const first = await timed()
  const repeated = await timed()
  await broker.close()
  scenario.figure('device/get with a new token', first, 'µs')
  scenario.figure('device/get with a known token', repeated, 'µs')
}
scenario.note(`${N} distinct HS256 tokens (fast-jwt verifies; the broker caches compiled grants by token string)`)
scenario.done()
