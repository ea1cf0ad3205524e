'use strict'
// Near-heap-limit: a worker loaded with self-recycle never dies of a V8 heap OOM.

const test = require('node:test')
const assert = require('node:assert/strict')
const { runFixture, eventsNamed, describe } = require('./processes')

const RUNS = Number(process.env.SELF_RECYCLE_TEST_OOM_RUNS || 20)

async function runMany (variant) {
  const results = []
  for (let batch = 0; batch < RUNS; batch += 2) {
    results.push(...await Promise.all([0, 1].slice(0, RUNS - batch).map(() =>
      runFixture('oom.js', { args: [variant], nodeArgs: ['--max-old-space-size=64'], timeoutMs: 30000 }))))
  }
  return results
}

for (const variant of ['timer', 'sync']) {
  test(`${RUNS} fast leaks under --max-old-space-size=64 (${variant}): exit 75, never FATAL ERROR`, async () => {
    const results = await runMany(variant)
    for (const result of results) {
      assert.doesNotMatch(result.stderr, /FATAL ERROR|JavaScript heap out of memory/, describe(result))
      assert.equal(result.signal, null, describe(result))
      assert.equal(result.code, 75, describe(result))
      const [recycle] = eventsNamed(result, 'recycle')
      assert.equal(recycle.reason, 'near-heap-limit', describe(result))
      assert.ok(recycle.headroom >= 32 * 1024 * 1024, 'the first hit granted headroom and recycled')
      const [exit] = eventsNamed(result, 'exit')
      assert.equal(exit.code, 75)
      // The heap profiler runs (PROFILE's default) and does not cost the rescue.
      assert.equal(eventsNamed(result, 'start')[0].probes.profile, 'native')
      if (variant === 'timer') {
        assert.ok(result.lines.includes('drain-hook-ran'), describe(result))
        assert.match(recycle.topSites?.[0]?.file ?? '', /fixtures[\\/]oom\.js$/, JSON.stringify(recycle.topSites ?? recycle.profileSkipped))
      } else {
        assert.equal(exit.forced, true)
        assert.match(exit.msg, /before V8 aborts/)
      }
    }
  })
}

test('the native near-heap-limit exit uses EXIT_CODE', async () => {
  const result = await runFixture('oom.js', { args: ['sync'], nodeArgs: ['--max-old-space-size=64'], env: { SELF_RECYCLE_EXIT_CODE: '42' }, timeoutMs: 30000 })
  assert.equal(result.code, 42, describe(result))
  const [exit] = eventsNamed(result, 'exit')
  assert.deepEqual([exit.code, exit.forced], [42, true])
  assert.match(exit.msg, /reached its limit again.*exiting with code 42 before V8 aborts/)
})

for (const variant of ['sync', 'async']) {
  for (const heap of [128, 256]) {
    test(`a growing Map whose rehash cannot fit (${variant}, --max-old-space-size=${heap}): a recorded exit, never SIGABRT`, async () => {
      const result = await runFixture('map-oom.js', { args: [variant], nodeArgs: [`--max-old-space-size=${heap}`], env: { SELF_RECYCLE_LOG: 'json', SELF_RECYCLE_MIN_UPTIME: '0' }, timeoutMs: 60000 })
      assert.doesNotMatch(result.stderr, /FATAL ERROR/, describe(result))
      assert.equal(result.signal, null, describe(result))
      assert.equal(result.code, 75, describe(result))
      const [recycle] = eventsNamed(result, 'recycle')
      assert.ok(['oom', 'near-heap-limit', 'heap'].includes(recycle.reason), describe(result))
      if (recycle.reason === 'oom') {
        // V8 names where it failed: CALL_AND_RETRY_LAST (Node 20, 22, 26) or Reached heap limit (18, 24).
        assert.match(recycle.msg, /V8 failed an allocation \((CALL_AND_RETRY_LAST|Reached heap limit)\)/)
        const [exit] = eventsNamed(result, 'exit')
        assert.deepEqual([exit.code, exit.reason, exit.forced, exit.drained], [75, 'oom', true, false])
      }
    })
  }
}

test('--report-on-fatalerror keeps Node\'s OOM handler, and the start event says so', async () => {
  const result = await runFixture('worker.js', {
    nodeArgs: ['--report-on-fatalerror'],
    env: { FIXTURE_MODE: 'idle', FIXTURE_IDLE_EXIT_MS: '100' }
  })
  assert.equal(result.code, 0, describe(result))
  assert.match(eventsNamed(result, 'start')[0].probes.oomHandler, /--report-on-fatalerror owns/)
})

test('without self-recycle the same leak dies of SIGABRT (the control)', async () => {
  const result = await runFixture('oom.js', {
    args: ['timer'],
    nodeArgs: ['--max-old-space-size=64'],
    env: { SELF_RECYCLE_DISABLE: '1' },
    timeoutMs: 30000
  })
  assert.equal(result.signal, 'SIGABRT', describe(result))
  assert.match(result.stderr, /FATAL ERROR/)
})

test('NEAR_HEAP_LIMIT=off leaves V8 alone', async () => {
  const result = await runFixture('oom.js', {
    args: ['sync'],
    nodeArgs: ['--max-old-space-size=64'],
    env: { SELF_RECYCLE_NEAR_HEAP_LIMIT: 'off' },
    timeoutMs: 30000
  })
  assert.equal(result.signal, 'SIGABRT', describe(result))
  assert.equal(eventsNamed(result, 'start')[0].probes.nearHeapLimit, 'off (SELF_RECYCLE_NEAR_HEAP_LIMIT=off)')
})

test('--heapsnapshot-near-heap-limit keeps Node in charge, and the start event says so', async () => {
  const result = await runFixture('worker.js', {
    nodeArgs: ['--heapsnapshot-near-heap-limit=1'],
    env: { FIXTURE_MODE: 'idle', FIXTURE_IDLE_EXIT_MS: '100' }
  })
  assert.equal(result.code, 0, describe(result))
  assert.match(eventsNamed(result, 'start')[0].probes.nearHeapLimit, /--heapsnapshot-near-heap-limit owns/)
})

test('in a worker thread the callback is not installed: Node reports ERR_WORKER_OUT_OF_MEMORY', async () => {
  const result = await runFixture('worker-oom.js', { timeoutMs: 30000 })
  assert.equal(result.code, 0, describe(result))
  assert.ok(result.lines.includes('worker-near-heap:off in worker threads (it would replace Node\'s own handler)'), describe(result))
  assert.ok(result.lines.includes('worker-error:ERR_WORKER_OUT_OF_MEMORY'), describe(result))
})
