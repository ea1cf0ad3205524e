'use strict'
// End to end on real parts: Redis, BullMQ and the example's leaking Nest workers, run by the
// example's own configs: 2,000 jobs under its supervisor.conf, and a shorter run under its
// PM2 ecosystem file. Every job completes exactly once while the workers recycle.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { execFileSync } = require('node:child_process')
const { Queue, QueueEvents } = require('bullmq')
const IORedis = require('ioredis')
const { writeSupervisorConf, startSupervisord } = require('../scripts/supervisor')
const { startRedis } = require('./redis')
const { waitFor } = require('./managers')
const { cleanEnv, parseEvents } = require('./processes')

const JOBS = Number(process.env.SELF_RECYCLE_TEST_E2E_JOBS || 2000)
const example = path.join(__dirname, '..', 'examples', 'nest-bullmq-worker')

/**
 * Starts the workers with `launch(env, dir)` (returns `stop()`, `logs()` and the path of the
 * manager's own log), pushes `jobs` jobs, waits for them, stops the workers, and checks
 * BullMQ's and Redis's counts. Returns the workers' self-recycle events and the manager log.
 */
async function runJobs (jobs, launch, extraEnv = {}) {
  const redis = await startRedis()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-e2e-'))
  const queueName = `e2e-${process.pid}-${Date.now()}`
  const connection = { host: redis.host, port: redis.port }
  const env = cleanEnv({ REDIS_URL: redis.url, QUEUE_NAME: queueName, SELF_RECYCLE_LOG: 'json', NO_COLOR: '1', PATH: `${path.dirname(process.execPath)}:${process.env.PATH}`, ...extraEnv })
  const queue = new Queue(queueName, { connection })
  const events = new QueueEvents(queueName, { connection })
  const stalled = []
  const failed = []
  events.on('stalled', ({ jobId }) => stalled.push(jobId))
  events.on('failed', ({ jobId, failedReason }) => failed.push(`${jobId}: ${failedReason}`))
  const redisClient = new IORedis({ ...connection, maxRetriesPerRequest: null })
  const workers = launch(env, dir)
  try {
    await events.waitUntilReady()
    await queue.addBulk(Array.from({ length: jobs }, (_, n) => ({ name: 'work', data: { n }, opts: { jobId: `job-${n}` } })))
    try {
      await waitFor(async () => (await queue.getJobCounts('completed')).completed >= jobs, 240000, `${jobs} completed jobs`)
    } catch (error) {
      const failedJobs = (await queue.getFailed()).map((job) => `${job.id}: ${job.failedReason}`)
      throw new Error(`${error.message}; counts ${JSON.stringify(await queue.getJobCounts())}; failed ${failedJobs.join(', ')}\nlogs:\n${workers.logs().slice(-6000)}`)
    }
    await workers.stop()
    const counts = await queue.getJobCounts()
    assert.equal(counts.completed, jobs)
    assert.equal(counts.failed, 0)
    assert.equal(counts.active + counts.waiting + counts.delayed, 0)
    assert.deepEqual(stalled, [])
    assert.deepEqual(failed, [])
    const effects = await redisClient.hgetall(`${queueName}:effects`)
    assert.equal(Object.keys(effects).length, jobs, 'every job left its side effect')
    const duplicates = Object.entries(effects).filter(([, count]) => count !== '1')
    assert.deepEqual(duplicates, [], 'no side effect recorded twice')
    const logs = workers.logs()
    assert.doesNotMatch(logs, /FATAL ERROR/)
    const managerLog = fs.existsSync(workers.managerLog) ? fs.readFileSync(workers.managerLog, 'utf8') : ''
    return { events: parseEvents(logs), managerLog }
  } finally {
    await workers.stop()
    await events.close()
    await queue.obliterate({ force: true }).catch(() => {})
    await queue.close()
    await redisClient.del(`${queueName}:effects`)
    await redisClient.quit()
    await redis.stop()
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

/**
 * Workers under supervisord, with the example's program block included as written, or
 * with `edit(text)` applied to a copy of it.
 */
function underSupervisor (env, dir, edit) {
  const program = edit
    ? edit(fs.readFileSync(path.join(example, 'supervisor.conf'), 'utf8').replaceAll('%(here)s', example))
    : `[include]\nfiles = ${path.join(example, 'supervisor.conf')}`
  const conf = writeSupervisorConf(dir, [program])
  const supervisord = startSupervisord(conf, env)
  let stopped = false
  return {
    managerLog: path.join(dir, 'supervisord.log'),
    stop: async () => {
      if (stopped) return
      stopped = true
      supervisord.ctl('stop', 'all')
      await supervisord.stop()
    },
    logs: () => fs.readdirSync(dir)
      .filter((f) => f.startsWith('nest-bullmq-worker') || f === 'supervisord.log')
      .map((f) => fs.readFileSync(path.join(dir, f), 'utf8')).join('\n')
  }
}

/** Workers under PM2 (private PM2_HOME), started from the example's ecosystem file. */
function underPm2 (env, dir) {
  const pm2 = require.resolve('pm2/bin/pm2')
  const pm2Env = { ...env, PM2_HOME: dir }
  const run = (...args) => execFileSync(process.execPath, [pm2, ...args], { env: pm2Env, encoding: 'utf8' })
  run('start', path.join(example, 'ecosystem.config.js'))
  let stopped = false
  return {
    managerLog: path.join(dir, 'pm2.log'),
    stop: async () => {
      if (stopped) return
      stopped = true
      try { run('stop', 'all') } finally { run('kill') }
    },
    logs: () => {
      const logDir = path.join(dir, 'logs')
      const files = fs.existsSync(logDir) ? fs.readdirSync(logDir).map((f) => path.join(logDir, f)) : []
      return [path.join(dir, 'pm2.log'), ...files].filter((f) => fs.existsSync(f)).map((f) => fs.readFileSync(f, 'utf8')).join('\n')
    }
  }
}

test('2,000 jobs through two self-recycling Nest workers under Supervisor: each exactly once', { timeout: 300000 }, async () => {
  const { events, managerLog: supervisorLog } = await runJobs(JOBS, underSupervisor)
  const recycles = events.filter((e) => e.event === 'recycle')
  // RSS recycles while the jobs ran; the final supervisorctl stop is a stop, not a recycle.
  assert.ok(recycles.filter((e) => e.reason === 'rss').length >= 3, `recycles: ${recycles.map((e) => e.reason)}`)
  assert.ok(recycles.every((e) => e.reason === 'rss'), `recycles: ${recycles.map((e) => e.reason)}`)
  const exits = events.filter((e) => e.event === 'exit')
  assert.ok(exits.filter((e) => e.code === 75 && e.drained && e.reason === 'rss').length >= 3)
  // The drain counted @nestjs/bullmq's active jobs with no track() in the app.
  const drainStarts = events.filter((e) => e.event === 'drain' && e.phase === 'start' && e.reason === 'rss')
  assert.ok(drainStarts.some((e) => e.inFlight > 0), `in flight at drain start: ${drainStarts.map((e) => e.inFlight)}`)
  // supervisorctl stop: a stop for each worker running self-recycle at that moment (one may
  // be between a recycle and its restart).
  const stops = events.filter((e) => e.event === 'stop')
  assert.ok(stops.length >= 1, 'the workers stopped on supervisorctl stop')
  assert.ok(exits.filter((e) => e.signal).every((e) => e.code === 0))
  // exitcodes=0,75 in the example: a recycle is an expected exit.
  assert.ok((supervisorLog.match(/exit status 75; expected\)/g) || []).length >= 3, supervisorLog)
  assert.doesNotMatch(supervisorLog, /not expected/)
})

test('four Nest workers in one fleet on Redis: >= 10 recycles, drains one at a time, each job exactly once', { timeout: 300000 }, async () => {
  // The example's block with four processes; the fleet is the example's own (BullModule's Redis).
  const four = (env, dir) => underSupervisor(env, dir, (conf) => conf.replace('numprocs=2', 'numprocs=4'))
  const { events } = await runJobs(Math.round(JOBS * 2), four)
  const recycles = events.filter((e) => e.event === 'recycle' && e.reason !== 'signal')
  assert.ok(recycles.length >= 10, `recycles: ${recycles.length}`)
  // Granted a lease, or past the 1.25x ceiling (which never waits, and holds a lease too).
  assert.ok(recycles.every((e) => e.fleet === 'granted' || (e.fleet === 'bypass' && /^over the ceiling|V8's heap limit|ceiling/.test(e.fleetWhy))), JSON.stringify(recycles.map((e) => [e.fleet, e.fleetWhy])))
  assert.ok(recycles.filter((e) => e.fleet === 'granted').length >= 8)
  assert.ok(recycles.filter((e) => e.fleetWaitMs >= 500).length >= 1, 'some recycles waited for the lease')
  // From each worker's own events: a granted drain (recycle to exit) starts only once every
  // earlier drain has ended, a gap (1 s, less clock rounding) before.
  const exits = new Map(events.filter((e) => e.event === 'exit' && e.code === 75).map((e) => [e.pid, Date.parse(e.time)]))
  const drains = recycles.map((e) => ({ start: Date.parse(e.time), end: exits.get(e.pid), fleet: e.fleet })).filter((d) => d.end).sort((a, b) => a.start - b.start)
  assert.ok(drains.length >= 10)
  for (const [i, drain] of drains.entries()) {
    if (drain.fleet !== 'granted') continue
    for (const earlier of drains.slice(0, i)) {
      assert.ok(drain.start >= earlier.end + 900, `a drain started ${drain.start - earlier.end} ms after an earlier one ended: ${JSON.stringify(drains)}`)
    }
  }
})

test('the example\'s PM2 ecosystem file as written: jobs complete exactly once across recycles', { timeout: 300000 }, async () => {
  const { events, managerLog: pm2Log } = await runJobs(Math.round(JOBS / 2), underPm2)
  assert.ok(events.filter((e) => e.event === 'recycle' && e.reason === 'rss').length >= 2, `events: ${events.map((e) => e.event)}`)
  assert.ok((pm2Log.match(/App \[nest-bullmq-worker:\d\] exited with code \[75\]/g) || []).length >= 2, pm2Log)
})

test('under --max-old-space-size=160 the default MAX_HEAP engages: heap recycles (granted ones staggered, growing ones before V8\'s limit), each job exactly once', { timeout: 300000 }, async () => {
  const stagger = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-e2e-stagger-'))
  // A heap leak of about 12 MiB/s per worker: fast, but slower than the near-heap-limit
  // rescue is for (which would act past 160 MiB).
  // The example's block with MAX_RSS off, so that the heap limits alone decide.
  const heapOnly = (env, dir) => underSupervisor(env, dir, (conf) => conf.replace('SELF_RECYCLE_MAX_RSS="256MiB"', 'SELF_RECYCLE_MAX_RSS="off"'))
  const { events } = await runJobs(Math.round(JOBS * 2.5), heapOnly, {
    NODE_OPTIONS: '--max-old-space-size=160',
    LEAK_ON_HEAP: '1',
    LEAK_KIB_PER_JOB: '128',
    SELF_RECYCLE_STAGGER_DIR: stagger,
    SELF_RECYCLE_STAGGER_GAP: '1s'
  })
  fs.rmSync(stagger, { recursive: true, force: true })
  const recycles = events.filter((e) => e.event === 'recycle')
  assert.ok(recycles.length >= 3, `recycles: ${recycles.map((e) => e.reason)}; events: ${events.map((e) => `${e.event}:${e.pid}:${e.heapUsed}:${e.config?.maxHeap ?? ''}`).join(' ')}`)
  // MAX_HEAP (85%) engages; V8 may call near-heap-limit at about 84% used on a fragmented
  // heap, so some recycles are the rescue's (which drains too): more of them when a loaded
  // machine delays the sampler, which the rescue does not wait for.
  const reasons = recycles.map((e) => e.reason)
  assert.ok(reasons.every((r) => r === 'heap' || r === 'near-heap-limit'), JSON.stringify(reasons))
  assert.ok(reasons.includes('heap'), `MAX_HEAP never acted: ${JSON.stringify(reasons)}`)
  const heapRecycles = recycles.filter((e) => e.reason === 'heap')
  for (const event of events.filter((e) => e.event === 'start')) {
    assert.equal(event.config.maxHeap, Math.floor(160 * 1024 * 1024 * 0.85))
    assert.deepEqual(event.warnings, [])
  }
  // The example's fleet (its Redis, from BullModule) staggers them across the two workers;
  // a heap still growing past MAX_HEAP (85%) is already where V8 may call near-heap-limit,
  // so such a recycle does not wait its turn: it goes, saying why.
  assert.ok(heapRecycles.every((e) => e.fleet === 'granted' || e.fleet === 'bypass'), JSON.stringify(heapRecycles.map((e) => [e.fleet, e.fleetWhy])))
  for (const bypass of heapRecycles.filter((e) => e.fleet === 'bypass')) assert.match(bypass.fleetWhy, /V8's heap limit|ceiling/, JSON.stringify(bypass))
  const times = heapRecycles.filter((e) => e.fleet === 'granted').map((e) => Date.parse(e.time)).sort((a, b) => a - b)
  for (let i = 1; i < times.length; i++) assert.ok(times[i] - times[i - 1] >= 950, `granted recycles ${times.map((t) => t - times[0])} ms`)
  // PROFILE (on by default) names the example's deliberate leak, with its file and line.
  const processor = path.join(__dirname, '..', 'examples', 'nest-bullmq-worker', 'jobs.processor.js')
  const line = fs.readFileSync(processor, 'utf8').split('\n').findIndex((l) => l.includes('async process (job) {')) + 1
  for (const recycle of heapRecycles) {
    const [top] = recycle.topSites ?? []
    assert.deepEqual([top?.functionName, path.basename(top?.file ?? ''), top?.line], ['process', 'jobs.processor.js', line], JSON.stringify(recycle.topSites ?? recycle.profileSkipped))
    assert.match(recycle.msg, /most growth at process \(.*jobs\.processor\.js:\d+\), \d+%/)
  }
})

