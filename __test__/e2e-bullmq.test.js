'use strict'
// End to end on real parts: Redis, BullMQ, two leaking Nest workers under Supervisor
// (the example's own supervisor.conf). 2,000 jobs, each completed exactly once.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { writeSupervisorConf, startSupervisord } = require('../scripts/supervisor')
const { Queue, QueueEvents } = require('bullmq')
const IORedis = require('ioredis')
const { startRedis } = require('./redis')
const { waitFor } = require('./managers')
const { cleanEnv, parseEvents } = require('./helpers')

const JOBS = Number(process.env.SELF_RECYCLE_TEST_E2E_JOBS || 2000)
const example = path.join(__dirname, '..', 'examples', 'nest-bullmq-worker')

test('2,000 jobs through two self-recycling Nest workers under Supervisor: each exactly once', { timeout: 300000 }, async () => {
  const redis = await startRedis()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-e2e-'))
  const queueName = `e2e-${process.pid}-${Date.now()}`
  const connection = { host: redis.host, port: redis.port }
  const conf = writeSupervisorConf(dir, [`[include]\nfiles = ${path.join(example, 'supervisor.conf')}`])
  const env = cleanEnv({ REDIS_URL: redis.url, QUEUE_NAME: queueName, SELF_RECYCLE_LOG: 'json', NO_COLOR: '1', PATH: `${path.dirname(process.execPath)}:${process.env.PATH}` })
  const supervisord = startSupervisord(conf, env)
  const queue = new Queue(queueName, { connection })
  const events = new QueueEvents(queueName, { connection })
  const stalled = []
  const failed = []
  events.on('stalled', ({ jobId }) => stalled.push(jobId))
  events.on('failed', ({ jobId, failedReason }) => failed.push(`${jobId}: ${failedReason}`))
  const redisClient = new IORedis({ ...connection, maxRetriesPerRequest: null })
  try {
    await events.waitUntilReady()
    await queue.addBulk(Array.from({ length: JOBS }, (_, n) => ({ name: 'work', data: { n }, opts: { jobId: `job-${n}` } })))
    try {
      await waitFor(async () => (await queue.getJobCounts('completed')).completed >= JOBS, 240000, `${JOBS} completed jobs`)
    } catch (error) {
      const tail = (file) => fs.existsSync(file) ? fs.readFileSync(file, 'utf8').slice(-3000) : '(none)'
      const workerLogs = fs.readdirSync(dir).filter((f) => f.includes('stderr')).map((f) => tail(path.join(dir, f))).join('\n')
      const failedJobs = (await queue.getFailed()).map((job) => `${job.id}: ${job.failedReason}`)
      throw new Error(`${error.message}; counts ${JSON.stringify(await queue.getJobCounts())}; failed ${failedJobs.join(', ')}\nsupervisord.log:\n${tail(path.join(dir, 'supervisord.log'))}\nworkers:\n${workerLogs}`)
    }
    supervisord.ctl('stop', 'all')
    const counts = await queue.getJobCounts()
    assert.equal(counts.completed, JOBS)
    assert.equal(counts.failed, 0)
    assert.equal(counts.active + counts.waiting + counts.delayed, 0)
    assert.deepEqual(stalled, [])
    assert.deepEqual(failed, [])
    const effects = await redisClient.hgetall(`${queueName}:effects`)
    assert.equal(Object.keys(effects).length, JOBS, 'every job left its side effect')
    const duplicates = Object.entries(effects).filter(([, count]) => count !== '1')
    assert.deepEqual(duplicates, [], 'no side effect recorded twice')
    // Worker logs: recycles happened, each drained, none died of OOM.
    const logs = fs.readdirSync(dir).filter((f) => f.startsWith('nest-bullmq-worker') && f.includes('stderr'))
    const stderr = logs.map((f) => fs.readFileSync(path.join(dir, f), 'utf8')).join('\n')
    const recycles = parseEvents(stderr).filter((e) => e.event === 'recycle')
    // RSS recycles while the jobs ran; `signal` ones when the test stopped Supervisor.
    assert.ok(recycles.filter((e) => e.reason === 'rss').length >= 3, `recycles: ${recycles.map((e) => e.reason)}`)
    assert.ok(recycles.every((e) => e.reason === 'rss' || e.reason === 'signal'))
    const exits = parseEvents(stderr).filter((e) => e.event === 'exit')
    assert.ok(exits.filter((e) => e.code === 75 && e.drained && e.reason === 'rss').length >= 3)
    assert.doesNotMatch(stderr, /FATAL ERROR/)
    const log = fs.readFileSync(path.join(dir, 'supervisord.log'), 'utf8')
    assert.ok((log.match(/exit status 75; not expected/g) || []).length >= 3, log)
  } finally {
    await supervisord.stop()
    await events.close()
    await queue.obliterate({ force: true }).catch(() => {})
    await queue.close()
    await redisClient.del(`${queueName}:effects`)
    await redisClient.quit()
    await redis.stop()
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
