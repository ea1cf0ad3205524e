'use strict'
// self-recycle/prometheus against a real prom-client registry's text output.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { runFixture, describe } = require('./processes')

function value (text, metric) {
  const line = text.split('\n').find((l) => l.startsWith(`${metric} `))
  return line === undefined ? undefined : Number(line.split(' ').pop())
}

test('the metrics a scrape gets: figures, limits, pressure, state, guard, and earlier recycles from REPORT_DIR', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-prom-'))
  const report = (pid, reason, durationMs, time) => fs.writeFileSync(path.join(dir, `self-recycle-${pid}-${time}.json`), JSON.stringify({ reason, pid, time: new Date(time).toISOString(), exit: { durationMs } }))
  report(101, 'rss', 40, 1000)
  report(102, 'rss', 1500, 2000)
  report(103, 'heap', 20, 3000)
  const result = await runFixture('prometheus.js', { env: { SELF_RECYCLE_REPORT_DIR: dir } })
  assert.equal(result.code, 0, describe(result))
  const text = result.stdout
  assert.ok(value(text, 'self_recycle_rss_bytes') > 10 * 1024 * 1024, text)
  assert.ok(value(text, 'self_recycle_heap_used_bytes') > 0)
  assert.equal(value(text, 'self_recycle_in_flight'), 1)
  assert.equal(value(text, 'self_recycle_limit_bytes{limit="rss"}'), 4 * 1024 ** 3)
  const pressure = value(text, 'self_recycle_pressure_ratio{limit="rss"}')
  assert.ok(pressure > 0 && pressure < 0.1, String(pressure))
  assert.equal(value(text, 'self_recycle_state{state="running"}'), 1)
  assert.equal(value(text, 'self_recycle_guard_inits{key="pool"}'), 1)
  assert.equal(value(text, 'self_recycle_guard_hits{key="pool"}'), 2)
  assert.equal(value(text, 'self_recycle_recycle_reports{reason="rss"}'), 2)
  assert.equal(value(text, 'self_recycle_recycle_reports{reason="heap"}'), 1)
  assert.equal(value(text, 'self_recycle_drain_duration_seconds_count'), 3)
  assert.equal(value(text, 'self_recycle_drain_duration_seconds_bucket{le="0.05"}'), 2)
  assert.match(text, /# TYPE self_recycle_drain_duration_seconds histogram/)
})

test('without REPORT_DIR the metrics say that earlier recycles cannot be known', async () => {
  const result = await runFixture('prometheus.js')
  assert.equal(result.code, 0, describe(result))
  assert.equal(value(result.stdout, 'self_recycle_recycle_reports{reason="unknown"}'), -1)
})

test('without prom-client installed, a clear error naming the package', async () => {
  const script = `
const Module = require('node:module')
const resolve = Module._resolveFilename
Module._resolveFilename = function (request, ...rest) {
  if (request === 'prom-client') { const e = new Error("Cannot find module 'prom-client'"); e.code = 'MODULE_NOT_FOUND'; throw e }
  return resolve.call(this, request, ...rest)
}
try { require(${JSON.stringify(path.join(__dirname, '..', 'js', 'prometheus.js'))}).collectMetrics() } catch (e) { console.log(e.message) }
process.exit(0)
`
  const { spawnSync } = require('node:child_process')
  const run = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' })
  assert.match(run.stdout, /self-recycle\/prometheus needs prom-client \(npm install prom-client\)/)
})

test('named jobs: finished per name (the top names, the rest as one), heap retained per job and share of the leaking name only', async () => {
  const result = await runFixture('prometheus-jobs.js', { env: { FIXTURE_TOP_JOB_NAMES: '2', FIXTURE_RARE_NAMES: '5' }, nodeArgs: ['--expose-gc'], timeoutMs: 60000 })
  assert.equal(result.code, 0, describe(result))
  const text = result.stdout
  assert.match(text, /# TYPE self_recycle_jobs_total counter/)
  const ingest = value(text, 'self_recycle_jobs_total{name="ingest"}')
  const render = value(text, 'self_recycle_jobs_total{name="render"}')
  assert.equal(ingest + render, 600, text)
  assert.equal(value(text, 'self_recycle_jobs_total{name="(other)"}'), 5, text)
  assert.equal(text.split('\n').filter((l) => l.startsWith('self_recycle_jobs_total{')).length, 3, 'two names and (other): bounded cardinality')
  const retained = value(text, 'self_recycle_job_retained_bytes_per_job{name="ingest"}')
  assert.ok(retained > 0.7 * 128 * 1024 && retained < 1.3 * 128 * 1024, text)
  assert.equal(value(text, 'self_recycle_job_retained_bytes_per_job{name="render"}'), undefined, text)
  assert.ok(value(text, 'self_recycle_job_retained_share{name="ingest"}') > 0.9, text)
})

test('collectMetrics refuses a topJobNames that is not a whole number from 1 to 1000', () => {
  const { collectMetrics } = require('../js/prometheus.js')
  for (const bad of [0, 1.5, '3', 5000]) {
    assert.throws(() => collectMetrics({ topJobNames: bad, recycler: { stats: () => ({}) } }), /collectMetrics\(\{ topJobNames \}\): expected a whole number from 1 to 1000, got/)
  }
})
