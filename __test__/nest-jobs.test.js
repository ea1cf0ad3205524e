'use strict'
// Which BullMQ job type leaks, through self-recycle/nest on a real Nest app and real BullMQ on
// Redis: two processors, one leaving a known amount of heap per job, one only garbage. The
// recycle (MAX_JOBS) names the leaking job's name and about what one job leaves behind.

const test = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const { spawn } = require('node:child_process')
const { Queue, QueueEvents } = require('bullmq')
const { startRedis } = require('./redis')
const { FIXTURES, cleanEnv } = require('./processes')

const BATCHES = 15
const PER_BATCH = 40
const RETAIN_KIB = 128

test('Nest + BullMQ: the recycle\'s topJobs[0] is the leaking job name, within 40% of what it keeps per job; the garbage maker is absent or far lower', { timeout: 180000 }, async (t) => {
  const redis = await startRedis()
  const prefix = `nest-jobs-${process.pid}-${Date.now()}`
  const connection = { host: redis.host, port: redis.port }
  const queues = { ingest: new Queue(`${prefix}-ingest`, { connection }), render: new Queue(`${prefix}-render`, { connection }) }
  const events = { ingest: new QueueEvents(`${prefix}-ingest`, { connection }), render: new QueueEvents(`${prefix}-render`, { connection }) }
  let completed = 0
  let onCompleted = () => {}
  for (const queueEvents of Object.values(events)) queueEvents.on('completed', () => { completed++; onCompleted() })
  const child = spawn(process.execPath, ['--expose-gc', path.join(FIXTURES, 'nest-job-types.js')], {
    env: cleanEnv({
      REDIS_URL: redis.url,
      QUEUE_PREFIX: prefix,
      FIXTURE_RETAIN_KIB: String(RETAIN_KIB),
      SELF_RECYCLE_MAX_JOBS: String(BATCHES * PER_BATCH),
      SELF_RECYCLE_MIN_UPTIME: '0',
      SELF_RECYCLE_JITTER: '0',
      SELF_RECYCLE_INTERVAL: '100ms',
      NO_COLOR: '1'
    }),
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let stdout = ''
  let stderr = ''
  child.stderr.on('data', (chunk) => { stderr += chunk })
  const exited = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal })))
  const ready = new Promise((resolve, reject) => {
    child.stdout.on('data', (chunk) => {
      stdout += chunk
      if (stdout.split('\n').includes('ready')) resolve()
    })
    exited.then((how) => reject(new Error(`the worker exited before it was ready: ${JSON.stringify(how)}\n${stdout}\n${stderr}`)))
  })
  // Waits for BullMQ to report `count` completed jobs; a worker that died fails at once.
  const completedAtLeast = (count) => new Promise((resolve, reject) => {
    onCompleted = () => { if (completed >= count) resolve() }
    onCompleted()
    exited.then((how) => { if (completed < count) reject(new Error(`the worker exited after ${completed} of ${count} jobs: ${JSON.stringify(how)}\n${stdout}\n${stderr}`)) })
  })
  try {
    await Promise.all(Object.values(events).map((e) => e.waitUntilReady()))
    await ready
    // Batch by batch, the mix drifts (as traffic does): the fit tells the types apart.
    let seed = 11
    const random = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648 }
    let n = 0
    for (let batch = 0; batch < BATCHES; batch++) {
      const share = [0.8, 0.2, 0.5][batch % 3]
      const jobs = { ingest: [], render: [] }
      for (let i = 0; i < PER_BATCH; i++) {
        const name = random() < share ? 'ingest' : 'render'
        jobs[name].push({ name, data: { n: n++ } })
      }
      await Promise.all(Object.entries(jobs).map(([name, list]) => list.length ? queues[name].addBulk(list) : null))
      // The last batch ends in the recycle (MAX_JOBS): its exit is the marker.
      if (batch < BATCHES - 1) await completedAtLeast(n)
    }
    const how = await exited
    assert.equal(how.code, 75, `${JSON.stringify(how)}\n${stdout}\n${stderr}`)
    const counts = [await queues.ingest.getJobCounts('completed'), await queues.render.getJobCounts('completed')]
    assert.equal(counts[0].completed + counts[1].completed, BATCHES * PER_BATCH, 'every job done before the recycle')
    const line = stdout.split('\n').find((l) => l.startsWith('recycle '))
    assert.ok(line, stdout)
    const recycle = JSON.parse(line.slice('recycle '.length))
    assert.equal(recycle.reason, 'jobs')
    const [top] = recycle.topJobs
    assert.equal(top?.name, 'ingest', JSON.stringify({ topJobs: recycle.topJobs, jobsFit: recycle.jobsFit }))
    const ratio = top.retainedPerJob / (RETAIN_KIB * 1024)
    assert.ok(ratio > 0.6 && ratio < 1.4, `retainedPerJob ${top.retainedPerJob} for ${RETAIN_KIB} KiB kept per job: ${JSON.stringify(recycle.topJobs)}`)
    const render = recycle.topJobs.find((job) => job.name === 'render')
    if (render) assert.ok(render.retainedPerJob < top.retainedPerJob / 5, JSON.stringify(recycle.topJobs))
    assert.ok(recycle.jobsFit.windows >= 6 && recycle.jobsFit.r2 >= 0.5, JSON.stringify(recycle.jobsFit))
    assert.match(recycle.msg, /most growth from job 'ingest' \(~\d+ KiB per job, \d+%\)/)
    t.diagnostic(`topJobs ${JSON.stringify(recycle.topJobs)} fit ${JSON.stringify(recycle.jobsFit)}`)
  } finally {
    child.kill('SIGKILL')
    await exited
    for (const queue of Object.values(queues)) {
      await queue.obliterate({ force: true }).catch(() => {})
      await queue.close()
    }
    for (const queueEvents of Object.values(events)) await queueEvents.close()
    await redis.stop()
  }
})
