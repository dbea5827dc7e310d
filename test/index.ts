import t from 'tap'
import * as index from '../lib/index.js'

t.test('index: the only entry point exports exactly the public names', async (t) => {
  t.strictSame(Object.keys(index).sort(), [
    'Action', 'Broker', 'BrokerError', 'CommandStream', 'DEFAULTS', 'LocalBus', 'POSTGRES_SCHEMA_VERSION', 'PostgresBus', 'SCHEMA_VERSION', 'Session',
    'TimerWheel', 'channels', 'createBroker', 'deriveKey', 'formatTimestamp', 'manualClock', 'memoryStore', 'parseTimestamp', 'postgresStore',
    'signToken', 'sqliteStore', 'systemClock'
  ])
})

t.test('index: the package exports map points at the built entry point', async (t) => {
  const { readFileSync } = await import('node:fs')
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { exports: Record<string, unknown>, type: string, engines: { node: string } }
  t.strictSame(pkg.exports['.'], { types: './dist/lib/index.d.ts', default: './dist/lib/index.js' })
  t.equal(pkg.type, 'module')
  // The versions where require() of an ES module works unflagged (checked with 20.20 by packing
  // and requiring the tarball): there, CommonJS code can require('command-broker') too.
  t.equal(pkg.engines.node, '^20.19.0 || >=22.12.0')
})
