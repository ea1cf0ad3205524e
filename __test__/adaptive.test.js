'use strict'
// Default settings react at the limit: sampling turns fast near a limit, a crossing
// sustained for STRIKES fast samples recycles, a shorter spike does not, and tracked work
// makes the drain start early enough (PREDICT).

const test = require('node:test')
const assert = require('node:assert/strict')
const { runFixture, eventsNamed, describe } = require('./processes')

const LIMIT_MIB = 200
const env = (mode) => ({
  FIXTURE_MODE: mode,
  FIXTURE_LIMIT_MIB: String(LIMIT_MIB),
  SELF_RECYCLE_MAX_RSS: `${LIMIT_MIB}MiB`,
  SELF_RECYCLE_MAX_HEAP: 'off',
  SELF_RECYCLE_MIN_UPTIME: '0',
  SELF_RECYCLE_WARMUP: '0',
  SELF_RECYCLE_LOG: 'json'
})

test('at default INTERVAL and STRIKES a sustained crossing recycles within 300 ms', async () => {
  for (let run = 0; run < 3; run++) {
    const result = await runFixture('adaptive.js', { env: { ...env('leak'), SELF_RECYCLE_PREDICT: 'off' }, timeoutMs: 30000 })
    assert.equal(result.code, 75, describe(result))
    const crossed = Number(result.lines.find((l) => l.startsWith('crossed:'))?.slice(8))
    const [recycle] = eventsNamed(result, 'recycle')
    assert.equal(recycle.reason, 'rss')
    const reaction = Date.parse(recycle.time) - crossed
    assert.ok(reaction <= 300, `decided ${reaction} ms after the crossing`)
    assert.equal(eventsNamed(result, 'start')[0].config.fastIntervalMs, 25)
  }
})

test('spikes resident for less than (STRIKES - 1) fast intervals near the limit do not recycle', async () => {
  // Three strikes 25 ms apart (less 10% jitter) need a crossing resident for 45 ms. The
  // fixture measures each spike's window and whether the sampler saw it above the limit;
  // DRY_RUN counts each decision without exiting. Every spike shorter than 45 ms must pass
  // without a decision, and at least three short spikes must have been seen (a loaded
  // machine stretches some spikes: up to 3 runs to collect them).
  const short = []
  const runs = []
  for (let attempt = 0; attempt < 3 && short.filter((s) => s.seen).length < 3; attempt++) {
    const result = await runFixture('adaptive.js', {
      env: { ...env('spike'), SELF_RECYCLE_DRY_RUN: 'on' },
      nodeArgs: ['--expose-gc'],
      timeoutMs: 30000
    })
    runs.push(result)
    assert.equal(result.code, 0, describe(result))
    const done = result.lines.find((l) => l.startsWith('spikes-done '))
    assert.ok(done, describe(result))
    const spikes = JSON.parse(done.slice('spikes-done '.length))
    assert.equal(spikes.length, 10)
    short.push(...spikes.filter((s) => s.ms < 45))
    assert.ok(eventsNamed(result, 'pressure').length >= 1, 'it sat near the limit')
  }
  const detail = JSON.stringify(short)
  assert.deepEqual(short.filter((s) => s.recycles > 0), [], `a short spike was acted on: ${detail}\n${runs.map(describe).join('\n---\n')}`)
  assert.ok(short.filter((s) => s.seen).length >= 3, `short spikes seen by the sampler: ${detail}`)
})

test('a steady leak with 2 s tracked jobs, seen rising for 30 s, is drained before the crossing (predicted)', async () => {
  const result = await runFixture('adaptive.js', { env: env('predict'), timeoutMs: 120000 })
  assert.equal(result.code, 75, describe(result))
  const [recycle] = eventsNamed(result, 'recycle')
  assert.equal(recycle.predicted, true, describe(result))
  assert.ok(recycle.value < recycle.limit, `decided at ${recycle.value}, limit ${recycle.limit}`)
  assert.ok(recycle.projected >= recycle.limit)
  // One job at a time: what is left of this job plus the next one (about 2 s each).
  assert.ok(recycle.expectedDrainMs > 2000 && recycle.expectedDrainMs <= 4500, String(recycle.expectedDrainMs))
  assert.match(recycle.msg, /draining early/)
  assert.ok(!result.lines.some((l) => l.startsWith('crossed:')) || Number(result.lines.find((l) => l.startsWith('crossed:')).slice(8)) > Date.parse(recycle.time))
})

test('a flat series with tracked jobs near the limit is never predicted', async () => {
  const result = await runFixture('adaptive.js', { env: env('flat-jobs'), timeoutMs: 30000 })
  assert.equal(result.code, 0, describe(result))
  assert.ok(result.lines.includes('no-recycle'))
  assert.equal(eventsNamed(result, 'recycle').length, 0, describe(result))
})
