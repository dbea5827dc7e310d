// `npm run bench [-- --quick]`: every scenario in a process of its own, one table, and the
// figures in bench/results.json (not committed). Exits non-zero if a scenario fails its own
// checks; a goal missed is reported, not a failure.
import { spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { fileURLToPath } from 'node:url'
import type { ScenarioResult } from './common.js'

const SCENARIOS = ['insert-throughput', 'writer-thread', 'observability', 'latency', 'steady', 'expiry', 'fan-out', 'restart', 'token',
  'stalls', 'file-size', 'retention', 'postgres-insert', 'cluster-latency', 'cluster-expiry']
const quick = process.argv.includes('--quick')
const here = (name: string): string => fileURLToPath(new URL(name, import.meta.url))
const results: ScenarioResult[] = []
let failed = 0

for (const name of SCENARIOS) {
  console.error(`bench: ${name}${quick ? ' (quick)' : ''}...`)
  const run = spawnSync(process.execPath, ['--expose-gc', here(`${name}.js`), ...(quick ? ['--quick'] : [])], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 1 << 24
  })
  const line = run.stdout.split('\n').find((l) => l.startsWith('RESULT '))
  if (run.status !== 0 || line === undefined) {
    console.error(`bench: ${name} failed (exit ${String(run.status)})`)
    failed++
    continue
  }
  results.push(JSON.parse(line.slice('RESULT '.length)) as ScenarioResult)
}

// A figure that could not be had (NaN or Infinity) comes back from JSON as null.
const format = (value: number | null): string => value === null || !Number.isFinite(value)
  ? 'n/a'
  : Math.abs(value) >= 1000 ? Math.round(value).toLocaleString('en-US') : value >= 10 ? value.toFixed(1) : value.toFixed(2)
const rows: string[][] = [['Scenario', 'Figure', 'Value', 'Unit']]
for (const result of results) {
  for (const figure of result.figures) rows.push([result.scenario, figure.name, format(figure.value), figure.unit])
}
const widths = rows[0]?.map((_, column) => Math.max(...rows.map((row) => row[column]?.length ?? 0))) ?? []
for (const row of rows) console.log(row.map((cell, column) => column === 2 ? cell.padStart(widths[column] ?? 0) : cell.padEnd(widths[column] ?? 0)).join('  '))
console.log()
for (const result of results) {
  for (const goal of result.goals) {
    // A quick run only proves the scenarios work: its sizes are too small to judge a goal by.
    const verdict = quick ? 'quick ' : goal.met ? 'met   ' : 'MISSED'
    console.log(`${verdict}  ${result.scenario}: ${goal.name} (${format(goal.actual)}, ${goal.kind === 'min' ? 'at least' : 'at most'} ${format(goal.target)})`)
  }
}
for (const result of results) for (const note of result.notes) console.log(`note    ${result.scenario}: ${note}`)

// This file runs from dist/bench/; the results go next to the sources, in bench/.
writeFileSync(here('../../bench/results.json'), JSON.stringify({
  date: new Date().toISOString(),
  quick,
  node: process.version,
  cpus: `${cpus().length} x ${cpus()[0]?.model ?? 'unknown'}`,
  results
}, null, 2) + '\n')
process.exitCode = failed === 0 ? 0 : 1
