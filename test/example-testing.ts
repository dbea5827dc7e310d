// The README's ten-line test is examples/testing.ts; run it and keep the two identical.
import { readFileSync } from 'node:fs'
import t from 'tap'

t.test('example-testing: the README shows examples/testing.ts verbatim', async (t) => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
  const block = /## Testing your code against it\n[\s\S]*?```ts\n([\s\S]*?)```/.exec(readme)?.[1]
  t.ok(block, 'the README has the testing block')
  const example = readFileSync(new URL('../examples/testing.ts', import.meta.url), 'utf8')
  const code = example.split('\n').filter((line) => !line.startsWith('//')).join('\n')
  t.equal(code.replace("from '../lib/testing/index.js'", "from 'command-broker/testing'"), block)
})

t.test('example-testing: the test runs, and passes', async () => {
  // Its t.test() is a subtest of this file: tap's root test is the same object there.
  await import('../examples/testing.js')
})
