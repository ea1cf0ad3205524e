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
async function runJobs (jobs, launch) {
  const redis = await startRedis()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-e2e-'))
  const queueName = `e2e-${process.pid}-${Date.now()}`
  const connection = { host: redis.host, port: redis.port }
  const env = cleanEnv({ REDIS_URL: redis.url, QUEUE_NAME: queueName, SELF_RECYCLE_LOG: 'json', NO_COLOR: '1', PATH: `${path.dirname(process.execPath)}:${process.env.PATH}` })
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

/** Workers under supervisord, with the example's program block included as written. */
function underSupervisor (env, dir) {
  const conf = writeSupervisorConf(dir, [`[include]\nfiles = ${path.join(example, 'supervisor.conf')}`])
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
  // RSS recycles while the jobs ran; `signal` ones when the test stopped Supervisor.
  assert.ok(recycles.filter((e) => e.reason === 'rss').length >= 3, `recycles: ${recycles.map((e) => e.reason)}`)
  assert.ok(recycles.every((e) => e.reason === 'rss' || e.reason === 'signal'))
  const exits = events.filter((e) => e.event === 'exit')
  assert.ok(exits.filter((e) => e.code === 75 && e.drained && e.reason === 'rss').length >= 3)
  assert.ok((supervisorLog.match(/exit status 75; not expected/g) || []).length >= 3, supervisorLog)
})

test('the example\'s PM2 ecosystem file as written: jobs complete exactly once across recycles', { timeout: 300000 }, async () => {
  const { events, managerLog: pm2Log } = await runJobs(Math.round(JOBS / 2), underPm2)
  assert.ok(events.filter((e) => e.event === 'recycle' && e.reason === 'rss').length >= 2, `events: ${events.map((e) => e.event)}`)
  assert.ok((pm2Log.match(/App \[nest-bullmq-worker:\d\] exited with code \[75\]/g) || []).length >= 2, pm2Log)
})
