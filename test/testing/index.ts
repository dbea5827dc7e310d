// command-broker/testing's entry point: exactly these names.
import t from 'tap'
import * as testing from '../../lib/testing/index.js'

t.test('testing entry: exports the kit by name, and nothing else', async (t) => {
  t.strictSame(Object.keys(testing).sort(), ['TEST_START', 'createTestBroker', 'deviceStub', 'nextCommand', 'recordingSession', 'storeSuite'])
})

t.test('testing entry: package.json maps command-broker/testing to it', async (t) => {
  const { readFileSync } = await import('node:fs')
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as Record<string, Record<string, unknown>>
  t.strictSame(pkg.exports?.['./testing'], { types: './dist/lib/testing/index.d.ts', default: './dist/lib/testing/index.js' })
  t.strictSame(pkg.peerDependenciesMeta?.tap, { optional: true }, 'tap is an optional peer dependency')
})

t.test('testing entry: nothing under lib/ imports tap', async (t) => {
  const { readdirSync, readFileSync } = await import('node:fs')
  const root = new URL('../../lib/', import.meta.url)
  const files = readdirSync(root, { recursive: true, encoding: 'utf8' }).filter((file) => file.endsWith('.ts'))
  t.ok(files.length > 10)
  for (const file of files) t.notMatch(readFileSync(new URL(file, root), 'utf8'), /from 'tap'|import\('tap'\)/, file)
})
