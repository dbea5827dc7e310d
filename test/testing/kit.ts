// The testing helpers' shared knowledge: which brokers createTestBroker made, and their checks.
import t from 'tap'
import { createBroker } from '../../lib/broker.js'
import { BrokerError } from '../../lib/errors.js'
import { memoryStore } from '../../lib/store/memory.js'
import { checkBroker, kitOf, refused } from '../../lib/testing/kit.js'
import { createTestBroker } from '../../lib/testing/test-broker.js'
import { SECRET } from '../fixtures/broker.js'

t.test('kit: known for a test broker, undefined for any other', async (t) => {
  const { broker, clock, tokens } = await createTestBroker()
  t.teardown(() => broker.close())
  const kit = kitOf(broker)
  t.equal(kit?.clock, clock)
  t.equal(kit?.tokens.admin, tokens.admin)
  const other = createBroker(memoryStore(), { secret: SECRET })
  t.teardown(() => other.close())
  t.equal(kitOf(other), undefined)
})

t.test('kit: checkBroker takes a Broker and names anything else', async (t) => {
  const other = createBroker(memoryStore(), { secret: SECRET })
  t.teardown(() => other.close())
  t.doesNotThrow(() => { checkBroker('who', other) })
  t.throws(() => { checkBroker('who', {}) }, { name: 'TypeError', message: 'who: broker must be a Broker, received Object' })
  t.throws(() => { checkBroker('who', undefined) }, { name: 'TypeError', message: /received undefined/ })
})

t.test('kit: refused is ERR_REFUSED with the reply', async (t) => {
  const reply = { action: 'x', requestId: null, status: 'error' as const, code: 403, error: 'Access is denied' }
  const err = refused('what', reply)
  t.ok(err instanceof BrokerError)
  t.equal(err.code, 'ERR_REFUSED')
  t.equal(err.message, 'what: 403 Access is denied')
  t.equal(err.reply, reply)
})
