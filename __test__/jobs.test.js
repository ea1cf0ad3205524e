'use strict'
// track(promise, { name }): a leak or recycle names the job type the heap grew with and
// what one such job leaves behind; garbage makers are not named, and nothing is guessed.

const test = require('node:test')
const assert = require('node:assert/strict')
const { runFixture, describe } = require('./processes')
const { JobLedger, nonNegativeFit } = require('../js/jobs.js')

test('three job types, two at a time: the leaking type first, within 30% of its real retained bytes; the garbage maker absent', async (t) => {
  const spreads = []
  for (const seed of [1, 2, 3]) {
    const result = await runFixture('job-types.js', { env: { FIXTURE_SEED: String(seed) }, nodeArgs: ['--expose-gc'], timeoutMs: 60000 })
    assert.equal(result.code, 75, describe(result))
    const line = result.stdout.split('\n').find((l) => l.startsWith('{'))
    const { topJobs, jobsFit, msg } = JSON.parse(line)
    assert.equal(topJobs[0]?.name, 'ingest', line)
    assert.ok(!topJobs.some((job) => job.name === 'render'), line)
    // 100 KiB of doubles per ingest job (8 bytes each on the V8 heap).
    const truth = 100 * 1024
    const ratio = topJobs[0].retainedPerJob / truth
    spreads.push(ratio)
    const audit = topJobs.find((job) => job.name === 'audit')
    if (audit) assert.ok(audit.retainedPerJob < topJobs[0].retainedPerJob / 3, line)
    assert.ok(ratio > 0.7 && ratio < 1.3, `retainedPerJob ${topJobs[0].retainedPerJob} vs ${truth}: ${line}`)
    assert.ok(jobsFit.windows >= 6 && jobsFit.r2 >= 0.5, line)
    assert.match(msg, /most growth from job 'ingest' \(~\d+ KiB per job, \d+%\)/)
  }
  t.diagnostic(`retainedPerJob / truth over 3 seeds: ${spreads.map((r) => r.toFixed(2)).join(', ')}`)
})

test('the fit: a job type that only makes garbage is given nothing; too few windows name nobody', () => {
  const ledger = new JobLedger()
  const series = []
  let used = 50e6
  let t = 1000
  series.push([t, used])
  for (let w = 0; w < 20; w++) {
    const leaks = 3 + (w % 4)
    const garbage = 10 - (w % 5)
    for (let i = 0; i < leaks; i++) ledger.record('leaks', t + 1 + i)
    for (let i = 0; i < garbage; i++) ledger.record('garbage', t + 1 + i)
    t += 100
    used += leaks * 1000 + ((w * 7919) % 200) - 100
    series.push([t, used])
  }
  const { topJobs, jobsFit } = ledger.attribute(series)
  assert.deepEqual(topJobs.map((j) => j.name), ['leaks'])
  assert.ok(Math.abs(topJobs[0].retainedPerJob - 1000) < 100, JSON.stringify(topJobs))
  assert.equal(jobsFit.windows, 20)
  const few = ledger.attribute(series.slice(0, 4))
  assert.deepEqual(few.topJobs, [])
  assert.match(few.jobsFit.why, /3 windows between major GCs; 6 needed/)
  assert.equal(new JobLedger().attribute(series), null, 'no named job, no attribution')
})

test('non-negative least squares', () => {
  const { beta, r2 } = nonNegativeFit([[1, 0], [0, 1], [1, 1], [2, 1]], [3, -1, 2, 5])
  assert.ok(beta.every((b) => b >= 0), String(beta))
  assert.ok(Math.abs(beta[0] - 2.4) < 0.2, String(beta))
  assert.ok(r2 > 0.8 && r2 <= 1, String(r2))
})

test('track(promise, { name }) refuses a name that is not a non-empty string', () => {
  const recycle = require('..')
  const r = recycle.start()
  try {
    for (const bad of [{ name: '' }, { name: 5 }, null, 'ingest', { name: 'x'.repeat(201) }]) {
      assert.throws(() => r.track(Promise.resolve(), bad), /track\(promise, \{ name \}\): name must be a non-empty string/)
    }
    r.track(Promise.resolve(), { name: 'ok' })
    r.track(Promise.resolve(), {})
  } finally {
    r.stop()
  }
})
