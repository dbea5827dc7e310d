// The README's ten-line test, verbatim but for the import path: test/example-testing.ts runs
// it and checks the two stay the same.
import t from 'tap'
import { createTestBroker, deviceStub } from '../lib/testing/index.js'

t.test('service sends a command, device answers, service sees the result', async (t) => {
  const { broker, tokens } = await createTestBroker()
  t.teardown(() => broker.close())
  await deviceStub(broker, { deviceId: 'lamp-1', answer: (command) => ({ status: 'done', result: command.parameters }) })
  const answered = await broker.invoke({ deviceId: 'lamp-1', command: { command: 'on', parameters: { level: 3 } } }, tokens.client)
  t.match(answered, { command: 'on', status: 'done', result: { level: 3 } })
})
