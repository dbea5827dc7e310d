// The package as a consumer gets it: `npm pack` of the built package, unpacked into a consumer
// project's own node_modules, then type-checked strictly (no skipLibCheck) and required from
// CommonJS. Needs dist/ (`npm run build`; CI builds before `npm test`).
//
// The consumer lives inside the repository (under scratch/, which git ignores), so that the
// package's dependencies (zod, fast-jwt, pg, ws and their types) and TypeScript resolve from
// the repository's node_modules by walking up: no network, no install. Its own package.json
// keeps 'command-broker' from resolving to the repository itself (a package may import itself
// by name), and the checks below make sure every file of the package came from its copy.
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'

const root = fileURLToPath(new URL('..', import.meta.url))
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')

// What a consumer writes: every entry point, and the main types of each.
const CONSUMER = `import { randomBytes } from 'node:crypto'
import { WebSocketServer } from 'ws'
import { BrokerError, createBroker, memoryStore, signToken, sqliteStore, type Command, type Reply } from 'command-broker'
import { createTestBroker, deviceStub } from 'command-broker/testing'
import { attach } from 'command-broker/ws'

const secret = randomBytes(32).toString('base64')
const broker = createBroker(memoryStore(), { secret })
const token: string = signToken({ u: 1, a: [0], n: ['*'], dt: ['*'] }, { secret })
const reply = await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on', lifetime: 30 } }, token)
if (reply.status === 'success') {
  const id: number = reply.command.id
  console.log(id)
}
const replies: Reply[] = [reply]
try {
  const answered: Command = await broker.invoke({ deviceId: 'lamp-1', command: { command: 'on' } }, token, { timeout: 1000, signal: AbortSignal.timeout(2000) })
  console.log(answered.status, answered.result)
} catch (err) {
  if (err instanceof BrokerError && err.code === 'ERR_TIMEOUT') console.log('timed out')
}
const onDisk = createBroker(sqliteStore(':memory:', { synchronous: 'normal' }), { secret })
const kit = await createTestBroker()
await deviceStub(kit.broker, { deviceId: 'lamp-1', answer: (command) => ({ status: 'done', result: command.parameters }) })
const served = attach(new WebSocketServer({ noServer: true }), broker, { maxBufferedBytes: 1 << 20 })
await served.close()
await Promise.all([broker.close(), onDisk.close(), kit.broker.close()])
`

t.test('package: the packed tarball type-checks strictly in a consumer, catches a typo in action, and require() works', async (t) => {
  if (!existsSync(join(root, 'dist', 'lib', 'index.js'))) {
    t.fail('dist/ is missing: run `npm run build` before this test (CI builds before `npm test`)')
    return
  }
  mkdirSync(join(root, 'scratch'), { recursive: true })
  const work = mkdtempSync(join(root, 'scratch', 'package-'))
  t.teardown(() => { rmSync(work, { recursive: true, force: true }) })

  const packed = JSON.parse(execFileSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: root, encoding: 'utf8' })) as Array<{ filename: string, files: Array<{ path: string }> }>
  const { filename, files } = packed[0] as { filename: string, files: Array<{ path: string }> }
  const paths = files.map((file) => file.path)
  for (const entry of ['dist/lib/index.js', 'dist/lib/index.d.ts', 'dist/lib/testing/index.js', 'dist/lib/ws/attach.js', 'LICENSE', 'README.md', 'package.json']) {
    t.ok(paths.includes(entry), `the tarball has ${entry}`)
  }
  t.strictSame(paths.filter((path) => /^(test|bench|examples|dist\/(test|bench|examples))\//.test(path)), [], 'no tests, benchmarks or examples')

  const consumer = join(work, 'consumer')
  const installed = join(consumer, 'node_modules', 'command-broker')
  mkdirSync(installed, { recursive: true })
  execFileSync('tar', ['-xzf', join(work, filename), '-C', installed, '--strip-components=1'])
  writeFileSync(join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }))

  // Every source map points at a source the tarball ships.
  const maps = readdirSync(join(installed, 'dist', 'lib'), { recursive: true, encoding: 'utf8' }).filter((file) => file.endsWith('.js.map'))
  t.ok(maps.length > 0, 'source maps shipped')
  const missing = maps.flatMap((map) => {
    const path = join(installed, 'dist', 'lib', map)
    const { sources } = JSON.parse(readFileSync(path, 'utf8')) as { sources: string[] }
    return sources.map((source) => resolve(dirname(path), source)).filter((source) => !existsSync(source))
  })
  t.strictSame(missing, [], 'every source map\'s sources are in the tarball')

  // One tsc run over two files: the consumer, which must compile clean, and the same with a
  // typo in `action`, which must not. Only the typo's file may have errors.
  writeFileSync(join(consumer, 'consumer.ts'), CONSUMER)
  const typo = CONSUMER.replace("action: 'command/insert'", "action: 'command/insrt'")
  t.not(typo, CONSUMER)
  writeFileSync(join(consumer, 'typo.ts'), typo)
  writeFileSync(join(consumer, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { strict: true, module: 'nodenext', moduleResolution: 'nodenext', noEmit: true, skipLibCheck: false, types: ['node'] },
    files: ['consumer.ts', 'typo.ts']
  }))
  const checked = spawnSync(process.execPath, [tsc, '-p', '.', '--listFiles'], { cwd: consumer, encoding: 'utf8' })
  const lines = checked.stdout.split('\n')
  const errors = lines.filter((line) => /: error TS\d+/.test(line))
  t.equal(checked.status, 2, 'tsc fails, for the typo')
  t.ok(errors.length > 0 && errors.every((line) => line.startsWith('typo.ts(')), `errors in typo.ts alone:\n${errors.join('\n')}`)
  t.match(checked.stdout, /typo\.ts\(10,\d+\): error TS2769[^]*'"command\/insrt"' is not assignable/, 'the typo in action is the error')
  const listed = lines.filter((line) => line.includes('/command-broker/') || line.startsWith(join(root, 'dist')) || line.startsWith(join(root, 'lib')))
  t.ok(listed.some((line) => line.startsWith(join(installed, 'dist', 'lib', 'ws'))), 'the types came from the consumer\'s copy')
  t.strictSame(listed.filter((line) => !line.startsWith(installed)), [], 'and from nowhere else')

  // CommonJS: Node ^20.19 and >= 22.12 load an ES module with require() (no top-level await in it).
  writeFileSync(join(consumer, 'required.cjs'), "const broker = require('command-broker')\nconsole.log(typeof broker.createBroker, require.resolve('command-broker'))\n")
  const required = spawnSync(process.execPath, ['required.cjs'], { cwd: consumer, encoding: 'utf8' })
  t.equal(required.status, 0, `require() works: ${required.stderr}`)
  t.equal(required.stdout.trim(), `function ${join(installed, 'dist', 'lib', 'index.js')}`, 'createBroker is a function, from the consumer\'s copy')
  t.equal(required.stderr, '', `no warning on Node ${process.version}`)
})
