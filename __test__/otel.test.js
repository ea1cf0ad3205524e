'use strict'
// self-recycle/otel against the real OpenTelemetry metrics SDK (MeterProvider, a
// PeriodicExportingMetricReader and an exporter that prints what it is given).

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawn, spawnSync } = require('node:child_process')
const { runFixture, eventsNamed, describe, cleanEnv, parseEvents, FIXTURES } = require('./processes')
const { memoryCgroupUnavailable, createMemoryCgroup, inCgroup } = require('./cgroup')

const OTEL = path.join(__dirname, '..', 'js', 'otel.js')
const MIB = 1024 * 1024

/** Each `EXPORT` line of the fixture: the instruments exported, by name. */
function exportsOf (stdout) {
  return stdout.split('\n').filter((line) => line.startsWith('EXPORT ')).map((line) => {
    const byName = new Map()
    for (const metric of JSON.parse(line.slice('EXPORT '.length))) byName.set(metric.name, metric)
    return byName
  })
}

/** The value of the point of `name` whose attributes include `attributes`. */
function pointOf (exported, name, attributes = {}) {
  const metric = exported.get(name)
  assert.ok(metric, `no ${name} exported; got ${[...exported.keys()].join(', ')}`)
  const point = metric.points.find((p) => Object.entries(attributes).every(([key, value]) => p.attributes[key] === value))
  assert.ok(point, `no ${name} point with ${JSON.stringify(attributes)}: ${JSON.stringify(metric.points)}`)
  return point.value
}

function markers (stdout, name) {
  return stdout.split('\n').filter((line) => line.startsWith(`${name} `)).map((line) => JSON.parse(line.slice(name.length + 1)))
}

test('figures read at collection through the global meter provider: names, units, attributes; unregister stops the reads', async () => {
  const result = await runFixture('otel.js', { env: { FIXTURE_MODE: 'collect' } })
  assert.equal(result.code, 0, describe(result))
  const [first, second] = exportsOf(result.stdout)
  assert.ok(first && second, describe(result))
  const rss = first.get('process.memory.usage')
  assert.equal(rss.unit, 'By')
  assert.equal(rss.type, 'OBSERVABLE_UP_DOWN_COUNTER')
  assert.equal(rss.scope, 'self-recycle')
  assert.equal(rss.version, require('../package.json').version)
  assert.ok(pointOf(first, 'process.memory.usage') > 10 * MIB)
  assert.ok(pointOf(first, 'self_recycle.heap.used') > 0)
  assert.equal(first.get('self_recycle.heap.used').unit, 'By')
  assert.ok(pointOf(first, 'self_recycle.heap.limit') >= pointOf(first, 'self_recycle.heap.used'))
  // No V8 heap-space figures: the v8js.* conventions require per-space points.
  assert.equal([...first.keys()].filter((name) => name.startsWith('v8js.')).length, 0)
  assert.equal(pointOf(first, 'self_recycle.limit', { 'self_recycle.limit.name': 'rss' }), 4 * 1024 ** 3)
  const pressure = pointOf(first, 'self_recycle.pressure', { 'self_recycle.limit.name': 'rss' })
  assert.ok(Math.abs(pressure - pointOf(first, 'process.memory.usage') / (4 * 1024 ** 3)) < 1e-9, String(pressure))
  assert.equal(first.get('self_recycle.pressure').unit, '1')
  assert.equal(first.get('self_recycle.pressure').type, 'OBSERVABLE_GAUGE')
  assert.equal(pointOf(first, 'self_recycle.in_flight'), 1)
  assert.equal(pointOf(first, 'self_recycle.state', { 'self_recycle.state.name': 'running' }), 1)
  assert.equal(pointOf(first, 'self_recycle.guard.inits', { 'self_recycle.guard.key': 'pool' }), 1)
  assert.equal(pointOf(first, 'self_recycle.guard.hits', { 'self_recycle.guard.key': 'pool' }), 2)
  assert.equal(first.get('self_recycle.jobs.done').type, 'OBSERVABLE_COUNTER')
  // Container figures exactly when stats() has them (this machine's own cgroup, if any).
  const [container] = markers(result.stdout, 'CONTAINER')
  if (container) {
    assert.ok(pointOf(first, 'self_recycle.container.working_set') > 0)
    // Read after the export: the cgroup's counts only grow.
    for (const [event, count] of Object.entries(container.events)) {
      assert.ok(pointOf(first, 'self_recycle.container.memory.events', { 'self_recycle.container.event': event }) <= count)
    }
  } else {
    assert.equal(first.get('self_recycle.container.working_set'), undefined)
  }
  // A DRY_RUN recycle counts as one, with its attribute.
  assert.equal(pointOf(first, 'self_recycle.recycles', { 'self_recycle.reason': 'manual', 'self_recycle.dry_run': true }), 1)
  // unregister (called twice): no more stats() reads, and the recycle after it is not counted
  // (the SDK exports the cumulative figures it had).
  const [calls, callsAfter] = markers(result.stdout, 'STATS_CALLS')
  assert.equal(calls, 1)
  assert.equal(callsAfter, 1, 'a collection after unregister read stats()')
  assert.equal(pointOf(second, 'self_recycle.recycles', { 'self_recycle.reason': 'manual', 'self_recycle.dry_run': true }), 1)
})

test('a recycle: the flush after the exit event exports the recycle, its drain duration and the exiting state', async () => {
  const result = await runFixture('otel.js', { env: { FIXTURE_MODE: 'recycle', FIXTURE_TRIGGER: 'manual' } })
  assert.equal(result.code, 75, describe(result))
  const exported = exportsOf(result.stdout)
  assert.equal(exported.length, 1, describe(result))
  const [last] = exported
  assert.equal(pointOf(last, 'self_recycle.recycles', { 'self_recycle.reason': 'manual', 'self_recycle.dry_run': false }), 1)
  assert.equal(last.get('self_recycle.recycles').unit, '{recycle}')
  assert.equal(last.get('self_recycle.recycles').type, 'COUNTER')
  // LOG=auto: the app does not listen, so the events are logged; the instruments do not count as listeners.
  const [drainEnd] = eventsNamed(result, 'drain').filter((e) => e.phase === 'end')
  assert.ok(drainEnd, describe(result))
  assert.equal(eventsNamed(result, 'recycle').length, 1, describe(result))
  assert.equal(eventsNamed(result, 'exit').length, 1, describe(result))
  const drain = pointOf(last, 'self_recycle.drain.duration', { 'self_recycle.reason': 'manual', 'self_recycle.drained': true })
  assert.equal(last.get('self_recycle.drain.duration').unit, 's')
  assert.equal(drain.count, 1)
  assert.equal(drain.sum, drainEnd.durationMs / 1000)
  assert.ok(drain.sum >= 0.03, 'the drain hook waited 30 ms')
  assert.deepEqual(drain.buckets.boundaries, [0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60])
  assert.equal(pointOf(last, 'self_recycle.state', { 'self_recycle.state.name': 'exiting' }), 1)
  assert.equal(last.get('self_recycle.queue.duration'), undefined, 'no queue without STAGGER_DIR or a fleet')
})

test('a stop (SIGTERM with SIGNALS=on): its drain is measured with reason signal and exported before exit 0', async () => {
  const child = spawn(process.execPath, [path.join(FIXTURES, 'otel.js')], { env: cleanEnv({ FIXTURE_MODE: 'recycle', SELF_RECYCLE_SIGNALS: 'on' }), stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  let stopped = false
  // The worker is stopped once it has registered (its marker), not after some time.
  child.stdout.on('data', (chunk) => {
    stdout += chunk
    if (stdout.includes('READY\n') && !stopped) {
      stopped = true
      child.kill('SIGTERM')
    }
  })
  child.stderr.on('data', (chunk) => { stderr += chunk })
  const code = await new Promise((resolve) => child.on('close', resolve))
  const dump = `code=${code}\n${stdout}\n${stderr}`
  assert.equal(code, 0, dump)
  const [exported] = exportsOf(stdout)
  assert.ok(exported, dump)
  const drain = pointOf(exported, 'self_recycle.drain.duration', { 'self_recycle.reason': 'signal', 'self_recycle.drained': true })
  assert.equal(drain.count, 1)
  const [drainEnd] = parseEvents(stderr).filter((e) => e.event === 'drain' && e.phase === 'end')
  assert.equal(drain.sum, drainEnd.durationMs / 1000)
  assert.equal(exported.get('self_recycle.recycles'), undefined, 'a stop is not a recycle')
})

test('flushOnExit: false exports nothing at the exit; an exporter that never answers does not hold the exit', async () => {
  const off = await runFixture('otel.js', { env: { FIXTURE_MODE: 'recycle', FIXTURE_TRIGGER: 'manual', FIXTURE_FLUSH: 'off' } })
  assert.equal(off.code, 75, describe(off))
  assert.equal(eventsNamed(off, 'exit').length, 1, describe(off))
  assert.equal(exportsOf(off.stdout).length, 0, describe(off))

  const hang = await runFixture('otel.js', { env: { FIXTURE_MODE: 'recycle', FIXTURE_TRIGGER: 'manual', FIXTURE_EXPORT: 'hang' } })
  assert.equal(hang.code, 75, describe(hang))
  assert.equal(hang.timedOut, false)
  assert.equal(exportsOf(hang.stdout).length, 1, describe(hang))
  assert.equal(eventsNamed(hang, 'exit').length, 1, describe(hang))
})

test('siblings recycling at once: the one that waited counts its wait and how long it was', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-otel-'))
  try {
    const env = {
      FIXTURE_MODE: 'recycle',
      SELF_RECYCLE_MAX_AGE: '300ms',
      SELF_RECYCLE_STAGGER_DIR: dir,
      SELF_RECYCLE_STAGGER_GAP: '2s',
      SELF_RECYCLE_MIN_UPTIME: '0',
      SELF_RECYCLE_WARMUP: '0',
      SELF_RECYCLE_JITTER: '0%'
    }
    const results = await Promise.all([runFixture('otel.js', { env }), runFixture('otel.js', { env })])
    for (const result of results) assert.equal(result.code, 75, describe(result))
    const waited = results.filter((r) => eventsNamed(r, 'queued').length === 1)
    assert.equal(waited.length, 1, results.map(describe).join('\n'))
    const [result] = waited
    const [recycled] = eventsNamed(result, 'recycle')
    const [exported] = exportsOf(result.stdout)
    assert.equal(pointOf(exported, 'self_recycle.queue.waits', { 'self_recycle.queue.name': 'siblings', 'self_recycle.reason': 'age' }), 1)
    assert.equal(exported.get('self_recycle.queue.waits').unit, '{wait}')
    const wait = pointOf(exported, 'self_recycle.queue.duration', { 'self_recycle.queue.name': 'siblings', 'self_recycle.queue.outcome': 'granted' })
    assert.equal(wait.count, 1)
    assert.equal(wait.sum, recycled.staggerWaitMs / 1000)
    assert.ok(wait.sum > 1, String(wait.sum))
    // The one that went first was admitted without a wait, and says so.
    const [first] = exportsOf(results.find((r) => r !== result).stdout)
    assert.equal(first.get('self_recycle.queue.waits'), undefined)
    assert.equal(pointOf(first, 'self_recycle.queue.duration', { 'self_recycle.queue.outcome': 'granted' }).sum, 0)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

const noCgroup = memoryCgroupUnavailable()

test('in a memory cgroup: its working set, limit and memory.events', { skip: noCgroup || false }, async () => {
  const cgroup = createMemoryCgroup('self-recycle-otel', 400 * MIB)
  try {
    const [command, args] = inCgroup(cgroup.procs, process.execPath, [path.join(FIXTURES, 'otel.js')])
    const result = await new Promise((resolve) => {
      const child = spawn(command, args, { env: cleanEnv({ FIXTURE_MODE: 'collect' }), stdio: ['ignore', 'pipe', 'pipe'] })
      let stdout = ''
      let stderr = ''
      child.stdout.on('data', (chunk) => { stdout += chunk })
      child.stderr.on('data', (chunk) => { stderr += chunk })
      child.on('close', (code) => resolve({ code, stdout, events: parseEvents(stderr), dump: `${stdout}\n${stderr}` }))
    })
    assert.equal(result.code, 0, result.dump)
    const [exported] = exportsOf(result.stdout)
    const [container] = markers(result.stdout, 'CONTAINER')
    assert.ok(container, result.dump)
    assert.equal(pointOf(exported, 'self_recycle.container.limit'), 400 * MIB)
    assert.equal(exported.get('self_recycle.container.limit').unit, 'By')
    assert.equal(exported.get('self_recycle.container.limit').type, 'OBSERVABLE_GAUGE')
    const workingSet = pointOf(exported, 'self_recycle.container.working_set')
    assert.ok(workingSet > 10 * MIB && workingSet < 400 * MIB, String(workingSet))
    assert.equal(pointOf(exported, 'self_recycle.container.memory.events', { 'self_recycle.container.event': 'oom_kill' }), 0)
  } finally {
    cgroup.remove()
  }
})

test('without @opentelemetry/api installed, one clear error naming what to install', () => {
  const script = `
const Module = require('node:module')
const resolve = Module._resolveFilename
Module._resolveFilename = function (request, ...rest) {
  if (request === '@opentelemetry/api') { const e = new Error("Cannot find module '@opentelemetry/api'"); e.code = 'MODULE_NOT_FOUND'; throw e }
  return resolve.call(this, request, ...rest)
}
try { require(${JSON.stringify(OTEL)}).register() } catch (e) { console.log(e.message) }
process.exit(0)
`
  const run = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: cleanEnv({ SELF_RECYCLE_LOG: 'off' }) })
  assert.equal(run.status, 0, run.stderr)
  assert.match(run.stdout, /^self-recycle\/otel needs @opentelemetry\/api \(npm install @opentelemetry\/api, and an SDK such as @opentelemetry\/sdk-metrics to export\): Cannot find module '@opentelemetry\/api'\n$/)
})

test('a meterProvider or recycler that is not one: an error naming the option and what it got', () => {
  const script = `
const { register } = require(${JSON.stringify(OTEL)})
for (const options of [{ meterProvider: 'otel' }, { meterProvider: {} }, { recycler: null }]) {
  try { register(options); console.log('registered') } catch (e) { console.log(e.message) }
}
process.exit(0)
`
  const run = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: cleanEnv({ SELF_RECYCLE_LOG: 'off' }) })
  assert.equal(run.status, 0, run.stderr)
  assert.deepEqual(run.stdout.trim().split('\n'), [
    'self-recycle/otel: option meterProvider must be an OpenTelemetry MeterProvider (with getMeter()), got string',
    'self-recycle/otel: option meterProvider must be an OpenTelemetry MeterProvider (with getMeter()), got object',
    'self-recycle/otel: option recycler must be a Recycler (from start()), got null'
  ])
})
