// The README's embedding example is examples/embed.ts; run it and keep the two identical.
import { readFileSync } from 'node:fs'
import t from 'tap'

t.test('example-embed: the README shows examples/embed.ts verbatim', async (t) => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
  const block = /Embed it[^\n]*\n\n```ts\n([\s\S]*?)```/.exec(readme)?.[1]
  t.ok(block, 'the README has the embedding block')
  const example = readFileSync(new URL('../examples/embed.ts', import.meta.url), 'utf8')
  const code = example.split('\n').filter((line) => !line.startsWith('//')).join('\n')
  t.equal(code.replace("from '../lib/index.js'", "from 'command-broker'"), block)
})

t.test('example-embed: inserts, delivers to the subscriber, expires on the manual clock', async (t) => {
  const lines: string[] = []
  const log = console.log
  console.log = (...args: unknown[]) => { lines.push(args.map((arg) => typeof arg === 'string' ? arg : JSON.stringify(arg)).join(' ')) }
  try {
    await import('../examples/embed.js')
  } finally {
    console.log = log
  }
  t.strictSame(lines, [
    'deliver on {"level":3}',
    'success {"id":1,"timestamp":"2026-01-01T00:00:00.000","lastUpdated":"2026-01-01T00:00:00.000","userId":1}',
    'expired 1'
  ])
})
