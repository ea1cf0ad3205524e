'use strict'
// Lifecycle behaviour in real child processes: limits crossed -> recycle -> drain -> exit.

const test = require('node:test')
const assert = require('node:assert/strict')
const { runFixture, eventsNamed, describe } = require('./processes')

const FAST = {
  SELF_RECYCLE_INTERVAL: '25ms',
  SELF_RECYCLE_STRIKES: '2',
  SELF_RECYCLE_WARMUP: '0',
  SELF_RECYCLE_MIN_UPTIME: '0',
  SELF_RECYCLE_DRAIN_TIMEOUT: '2s'
}

const ENVELOPE = ['event', 'schema', 'time', 'pid', 'uptimeMs', 'rss', 'heapUsed', 'heapLimit', 'msg']

function assertEnvelope (event) {
  for (const key of ENVELOPE) assert.ok(key in event, `${event.event} lacks ${key}`)
  assert.equal(event.schema, 1)
  assert.match(event.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
  assert.equal(typeof event.msg, 'string')
  assert.ok(event.msg.length > 0)
}

test('RSS over the limit: recycle (rss) -> drain hook -> exit 75', async () => {
  const result = await runFixture('worker.js', {
    env: { ...FAST, FIXTURE_MODE: 'leak-rss', SELF_RECYCLE_MAX_RSS: '150MiB', SELF_RECYCLE_MAX_HEAP: 'off' }
  })
  assert.equal(result.code, 75, describe(result))
  const [recycle] = eventsNamed(result, 'recycle')
  assert.equal(recycle.reason, 'rss')
  assert.equal(recycle.limit, 150 * 1024 * 1024)
  assert.ok(recycle.value >= recycle.limit)
  assert.equal(recycle.strikes, 2)
  // Buffers live outside the V8 heap: PROFILE=heap finds no heap growth to name.
  assert.match(recycle.msg, /^rss \d+ MiB over limit 150 MiB for 2 samples; draining; no heap growth beyond sampling noise since the (baseline|process started)$/)
  assert.deepEqual(recycle.topSites, [])
  assert.ok(result.lines.includes('hook:rss:number:true'), describe(result))
  const drains = eventsNamed(result, 'drain')
  assert.deepEqual(drains.map((d) => d.phase), ['start', 'end'])
  const [exit] = eventsNamed(result, 'exit')
  assert.equal(exit.code, 75)
  assert.equal(exit.drained, true)
  for (const event of result.events) assertEnvelope(event)
  const names = result.events.map((e) => e.event)
  assert.deepEqual(names.slice(-4), ['recycle', 'drain', 'drain', 'exit'])
  assert.equal(names[0], 'start')
  assert.ok(names.includes('pressure'), 'pressure precedes the recycle')
})

test('heap over the limit: recycle (heap)', async () => {
  const result = await runFixture('worker.js', {
    env: { ...FAST, FIXTURE_MODE: 'leak-heap', SELF_RECYCLE_MAX_HEAP: '64MiB' }
  })
  assert.equal(result.code, 75, describe(result))
  const [recycle] = eventsNamed(result, 'recycle')
  assert.equal(recycle.reason, 'heap')
  assert.ok(recycle.value >= 64 * 1024 * 1024)
  assert.ok(result.lines.includes('hook:heap:number:true'))
})

test('heap limit as a percentage of the old-space limit (--max-old-space-size), not of heap_size_limit', async () => {
  const result = await runFixture('worker.js', {
    nodeArgs: ['--max-old-space-size=256'],
    env: { ...FAST, FIXTURE_MODE: 'leak-heap', SELF_RECYCLE_MAX_HEAP: '30%' }
  })
  assert.equal(result.code, 75, describe(result))
  const [start] = eventsNamed(result, 'start')
  const [recycle] = eventsNamed(result, 'recycle')
  assert.equal(recycle.reason, 'heap')
  assert.equal(recycle.limit, Math.floor(256 * 1024 * 1024 * 0.3))
  assert.equal(start.config.maxHeap, recycle.limit)
  assert.ok(start.heapLimit > 256 * 1024 * 1024, 'heap_size_limit also counts the young generation')
})

test('MAX_HEAP defaults to 85% of the old space, so it engages before the near-heap-limit rescue', async () => {
  const result = await runFixture('worker.js', {
    nodeArgs: ['--max-old-space-size=160'],
    env: { ...FAST, FIXTURE_MODE: 'leak-heap' },
    timeoutMs: 30000
  })
  assert.equal(result.code, 75, describe(result))
  const [start] = eventsNamed(result, 'start')
  assert.equal(start.config.maxHeap, Math.floor(160 * 1024 * 1024 * 0.85))
  assert.deepEqual(start.warnings, [])
  const [recycle] = eventsNamed(result, 'recycle')
  assert.equal(recycle.reason, 'heap', describe(result))
})

test('a MAX_HEAP the old space can never reach is a start warning', async () => {
  const result = await runFixture('worker.js', {
    nodeArgs: ['--max-old-space-size=160'],
    env: { ...FAST, FIXTURE_MODE: 'idle', FIXTURE_IDLE_EXIT_MS: '50', SELF_RECYCLE_MAX_HEAP: '200MiB' }
  })
  assert.equal(result.code, 0, describe(result))
  const [start] = eventsNamed(result, 'start')
  assert.equal(start.warnings.length, 1, describe(result))
  assert.match(start.warnings[0], /MAX_HEAP 200 MiB can never be reached: V8's old space holds at most 160 MiB/)
  assert.match(start.msg, /can never be reached/)
})

test('growth over the baseline taken after warm-up', async () => {
  const result = await runFixture('worker.js', {
    env: {
      ...FAST,
      FIXTURE_MODE: 'leak-rss',
      SELF_RECYCLE_WARMUP: '100ms',
      SELF_RECYCLE_MAX_GROWTH: '+100MiB',
      SELF_RECYCLE_MAX_HEAP: 'off'
    }
  })
  assert.equal(result.code, 75, describe(result))
  const [recycle] = eventsNamed(result, 'recycle')
  assert.equal(recycle.reason, 'growth')
  assert.ok(recycle.value >= recycle.limit)
  // The limit is baseline + 100 MiB, so the baseline lies between start RSS and the limit.
  const baseline = recycle.limit - 100 * 1024 * 1024
  assert.ok(baseline > 10 * 1024 * 1024 && baseline < recycle.value, `baseline ${baseline}`)
})

test('MAX_JOBS with jitter: recycles between (1 - jitter) x limit and the limit, drains tracked jobs', async () => {
  const limits = new Set()
  for (let run = 0; run < 3; run++) {
    const result = await runFixture('worker.js', {
      env: { ...FAST, FIXTURE_MODE: 'jobs', SELF_RECYCLE_MAX_JOBS: '200', SELF_RECYCLE_JITTER: '50%' }
    })
    assert.equal(result.code, 75, describe(result))
    const [recycle] = eventsNamed(result, 'recycle')
    assert.equal(recycle.reason, 'jobs')
    assert.ok(recycle.limit >= 100 && recycle.limit <= 200, `limit ${recycle.limit}`)
    assert.ok(recycle.value >= recycle.limit)
    // The message says where its figures come from: the jittered limit, the overshoot.
    assert.equal(recycle.configuredLimit, 200)
    if (recycle.limit !== 200) assert.match(recycle.msg, new RegExp(`limit ${recycle.limit} \\(this worker's limit: MAX_JOBS 200 less JITTER`))
    if (recycle.value > recycle.limit) assert.match(recycle.msg, new RegExp(`; ${recycle.value - recycle.limit} more than the limit: jobs are counted at each sample`))
    limits.add(recycle.limit)
    const started = result.lines.filter((l) => l.startsWith('job-start:')).length
    const done = result.lines.filter((l) => l.startsWith('job-done:')).length
    assert.ok(started - done <= 1, `started ${started} done ${done}`)
    const [exit] = eventsNamed(result, 'exit')
    assert.equal(exit.drained, true)
  }
  assert.ok(limits.size > 1, `jitter spread the limit: ${[...limits]}`)
})

test('MAX_AGE: recycle (age) after the uptime', async () => {
  const result = await runFixture('worker.js', {
    env: { ...FAST, FIXTURE_MODE: 'idle', SELF_RECYCLE_MAX_AGE: '600ms', SELF_RECYCLE_JITTER: '0%' }
  })
  assert.equal(result.code, 75, describe(result))
  const [recycle] = eventsNamed(result, 'recycle')
  assert.equal(recycle.reason, 'age')
  assert.equal(recycle.limit, 600)
  assert.ok(recycle.value >= 600)
})

test('MIN_UPTIME holds back an automatic recycle', async () => {
  const result = await runFixture('worker.js', {
    env: { ...FAST, FIXTURE_MODE: 'idle', SELF_RECYCLE_MAX_AGE: '100ms', SELF_RECYCLE_JITTER: '0%', SELF_RECYCLE_MIN_UPTIME: '1s' }
  })
  assert.equal(result.code, 75, describe(result))
  const [recycle] = eventsNamed(result, 'recycle')
  assert.ok(recycle.uptimeMs >= 1000, `recycled at ${recycle.uptimeMs} ms`)
})

test('DRY_RUN: decides and emits, never drains or exits', async () => {
  const result = await runFixture('worker.js', {
    env: { ...FAST, FIXTURE_MODE: 'idle', SELF_RECYCLE_MAX_AGE: '200ms', SELF_RECYCLE_JITTER: '0%', SELF_RECYCLE_DRY_RUN: '1', FIXTURE_IDLE_EXIT_MS: '1000' }
  })
  assert.equal(result.code, 0, describe(result))
  assert.ok(result.lines.includes('idle-exit'))
  const recycles = eventsNamed(result, 'recycle')
  assert.equal(recycles.length, 1)
  assert.equal(recycles[0].dryRun, true)
  assert.match(recycles[0].msg, /dry run, not draining/)
  assert.equal(eventsNamed(result, 'drain').length, 0)
  assert.equal(eventsNamed(result, 'exit').length, 0)
})

test('DISABLE: an inert recycler, no thread, no events', async () => {
  const result = await runFixture('disabled.js', { env: { SELF_RECYCLE_DISABLE: '1', SELF_RECYCLE_MAX_RSS: '1MiB' } })
  assert.equal(result.code, 0, describe(result))
  assert.equal(result.events.length, 0)
  assert.deepEqual(JSON.parse(result.lines[0]), { state: 'disabled', recycled: false, jobs: 0, threads: 0 })
})

test('a drain hook that never resolves: exit 75 at the deadline, drained false', async () => {
  const result = await runFixture('worker.js', {
    env: { ...FAST, FIXTURE_MODE: 'hang-hook', SELF_RECYCLE_DRAIN_TIMEOUT: '800ms' }
  })
  assert.equal(result.code, 75, describe(result))
  assert.ok(result.durationMs < 800 + 3000, `took ${result.durationMs} ms`)
  const [exit] = eventsNamed(result, 'exit')
  assert.equal(exit.drained, false)
  const end = eventsNamed(result, 'drain').find((d) => d.phase === 'end')
  assert.equal(end.drained, false)
})

test('a drain hook that is abort-aware sees the signal fire at the deadline', async () => {
  const result = await runFixture('worker.js', {
    env: { ...FAST, FIXTURE_MODE: 'abort-aware-hook', SELF_RECYCLE_DRAIN_TIMEOUT: '500ms' }
  })
  assert.equal(result.code, 75, describe(result))
  assert.ok(result.lines.includes('hook:aborted'), describe(result))
})

test('a drain hook that throws: the error is reported, exit 75 still', async () => {
  const result = await runFixture('worker.js', { env: { ...FAST, FIXTURE_MODE: 'throw-hook' } })
  assert.equal(result.code, 75, describe(result))
  const end = eventsNamed(result, 'drain').find((d) => d.phase === 'end')
  assert.deepEqual(end.errors, ['hook exploded'])
  assert.match(end.msg, /1 hook\(s\) failed: hook exploded/)
  assert.doesNotMatch(result.stderr, /UnhandledPromiseRejection|FATAL ERROR/)
})

test('a JS thread stuck in a busy loop: the native thread writes recycle + exit and exits 75', async () => {
  const result = await runFixture('worker.js', {
    env: { ...FAST, FIXTURE_MODE: 'busy', SELF_RECYCLE_DRAIN_TIMEOUT: '1s' }
  })
  assert.equal(result.code, 75, describe(result))
  assert.equal(result.signal, null)
  assert.ok(result.lines.includes('spinning'))
  assert.ok(result.durationMs < 1000 + 3000, `took ${result.durationMs} ms`)
  const [recycle] = eventsNamed(result, 'recycle')
  assert.equal(recycle.reason, 'manual')
  assert.equal(recycle.detail, 'stuck-test')
  const [exit] = eventsNamed(result, 'exit')
  assert.equal(exit.forced, true)
  assert.equal(exit.drained, false)
  assert.match(exit.msg, /native thread/)
})

test('a leak inside one synchronous loop is seen by the interrupt-driven heap probe', async () => {
  const result = await runFixture('worker.js', {
    nodeArgs: ['--max-old-space-size=1024'],
    env: { ...FAST, FIXTURE_MODE: 'busy-leak', SELF_RECYCLE_MAX_HEAP: '100MiB', SELF_RECYCLE_DRAIN_TIMEOUT: '500ms', SELF_RECYCLE_NEAR_HEAP_LIMIT: 'off' }
  })
  assert.equal(result.code, 75, describe(result))
  const [recycle] = eventsNamed(result, 'recycle')
  assert.equal(recycle.reason, 'heap')
  assert.doesNotMatch(result.stderr, /FATAL ERROR/)
})

test('track(): the drain waits for in-flight work before exiting', async () => {
  const result = await runFixture('worker.js', { env: { ...FAST, FIXTURE_MODE: 'track' } })
  assert.equal(result.code, 75, describe(result))
  assert.ok(result.lines.includes('tracked-done'))
  const [start, end] = eventsNamed(result, 'drain')
  assert.equal(start.inFlight, 1)
  assert.equal(end.inFlight, 0)
  assert.ok(end.durationMs >= 250, `drain took ${end.durationMs} ms`)
})

test('recycle(): one path for manual triggers; a second call while draining returns false', async () => {
  const result = await runFixture('worker.js', { env: { ...FAST, FIXTURE_MODE: 'manual' } })
  assert.equal(result.code, 75, describe(result))
  assert.ok(result.lines.includes('recycle-returned:true:false'), describe(result))
  const recycles = eventsNamed(result, 'recycle')
  assert.equal(recycles.length, 1)
  assert.equal(recycles[0].reason, 'manual')
  assert.ok(result.lines.includes('hook:manual:number:true'))
})

test('EXIT_CODE is the code the process ends with', async () => {
  const result = await runFixture('worker.js', { env: { ...FAST, FIXTURE_MODE: 'manual', SELF_RECYCLE_EXIT_CODE: '42' } })
  assert.equal(result.code, 42, describe(result))
  assert.equal(eventsNamed(result, 'exit')[0].code, 42)
})

test('the JS fallback heap probe works and says so in the start event', async () => {
  const result = await runFixture('worker.js', {
    env: { ...FAST, FIXTURE_MODE: 'leak-heap', SELF_RECYCLE_MAX_HEAP: '64MiB', SELF_RECYCLE_TEST_FORCE_JS_HEAP_PROBE: '1' }
  })
  assert.equal(result.code, 75, describe(result))
  const [start] = eventsNamed(result, 'start')
  assert.equal(start.probes.v8, 'js')
  assert.match(start.probes.v8Fallback, /disabled by the caller/)
  assert.equal(eventsNamed(result, 'recycle')[0].reason, 'heap')
})

test('the native heap probe validates on this Node', async () => {
  const result = await runFixture('worker.js', { env: { FIXTURE_MODE: 'idle', FIXTURE_IDLE_EXIT_MS: '200' } })
  assert.equal(result.code, 0, describe(result))
  const [start] = eventsNamed(result, 'start')
  assert.equal(start.probes.v8, 'native', JSON.stringify(start.probes))
  assert.equal(start.probes.rss, 'statm')
  assert.equal(start.probes.gcEpilogue, true)
})
