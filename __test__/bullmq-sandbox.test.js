'use strict'
// BullMQ sandboxed processors on a real Redis: a processor that leaks 2 MiB per job in its
// child. Without self-recycle in the child it dies of V8's heap limit with a job in flight
// (the parent's own self-recycle sees nothing); with sandboxed() + recycleChildren() the
// child recycles between jobs through BullMQ's pool and no job is lost.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Queue, Worker } = require('bullmq')
const { startRedis } = require('./redis')
const { runFixture, describe } = require('./processes')
const { sandboxed, recycleChildren } = require('../js/bullmq.js')

const JOBS = 60
const MiB = 1024 * 1024

let redis
test.before(async () => { redis = await startRedis() })
test.after(async () => { await redis?.stop() })

/**
 * Runs fixtures/sandbox-parent.js with `env` (its parent at self-recycle's defaults plus
 * MAX_RSS=400MB) and returns the result, its `summary:` line, `child-exit:` lines and the
 * queue's counts read from Redis after it exited.
 */
async function runParent (env) {
  const queueName = `sandbox-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`
  const result = await runFixture('sandbox-parent.js', {
    env: { FIXTURE_REDIS_URL: redis.url, FIXTURE_QUEUE: queueName, FIXTURE_JOBS: String(JOBS), SELF_RECYCLE_MAX_RSS: '400MB', ...env },
    timeoutMs: 120000
  })
  const queue = new Queue(queueName, { connection: { host: redis.host, port: redis.port } })
  try {
    const counts = await queue.getJobCounts('completed', 'failed', 'active', 'waiting', 'delayed')
    const summaryLine = result.lines.find((l) => l.startsWith('summary:'))
    return {
      result,
      counts,
      summary: summaryLine ? JSON.parse(summaryLine.slice('summary:'.length)) : null,
      childExits: result.lines.filter((l) => l.startsWith('child-exit:')).map((l) => JSON.parse(l.slice('child-exit:'.length)))
    }
  } finally {
    await queue.obliterate({ force: true }).catch(() => {})
    await queue.close()
  }
}

/** What the children need on top of the parent's settings to leak past a limit quickly. */
const CHILD_ENV = JSON.stringify({ SELF_RECYCLE_MAX_RSS: '90MB', SELF_RECYCLE_MIN_UPTIME: '0', SELF_RECYCLE_INTERVAL: '100ms' })

test('today: a leaking sandboxed child dies of its heap limit with a job in flight; the parent sees nothing', { timeout: 150000 }, async () => {
  const { result, counts, summary } = await runParent({
    FIXTURE_PROCESSOR: 'sandbox-leak.js',
    FIXTURE_CHILD_ARGV: '--max-old-space-size=64'
  })
  assert.equal(result.code, 0, describe(result))
  assert.ok(summary, describe(result))
  // 2 MiB per job against a 64 MiB old space: the first child dies at about the 30th job.
  assert.ok(summary.failed >= 1, describe(result))
  assert.equal(counts.failed, summary.failed)
  assert.equal(summary.completed + summary.failed, JOBS)
  const failures = result.lines.filter((l) => l.startsWith('failed:'))
  for (const line of failures) assert.match(line, /Unexpected exit code: (null signal: SIGABRT|134)/, describe(result))
  assert.match(result.stderr, /JavaScript heap out of memory/)
  assert.ok(summary.childPids.length >= 2, 'BullMQ forked a new child after the crash')
  // The parent's self-recycle never hears of it: no recycle, its RSS flat.
  const parentEvents = result.events.filter((e) => e.pid === summary.parentPid)
  assert.ok(parentEvents.some((e) => e.event === 'start'), describe(result))
  assert.equal(result.events.filter((e) => e.event === 'recycle').length, 0)
  assert.ok(summary.rssEnd - summary.rssStart < 32 * MiB, `parent RSS ${summary.rssStart} -> ${summary.rssEnd}`)
})

test('sandboxed() + recycleChildren(): the child recycles between jobs, every job completes, nothing is killed', { timeout: 150000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-sandbox-'))
  const { result, counts, summary, childExits } = await runParent({
    FIXTURE_PROCESSOR: 'sandbox-leak-recycled.js',
    FIXTURE_COOPERATE: '1',
    FIXTURE_JOB_MS: '50',
    FIXTURE_CHILD_ARGV: '--max-old-space-size=64',
    FIXTURE_CHILD_ENV: CHILD_ENV,
    // The parent's: the children inherit the variables but neither queue behind siblings
    // nor write over the parent's status file.
    SELF_RECYCLE_STAGGER_DIR: path.join(dir, 'stagger'),
    SELF_RECYCLE_STATUS_FILE: path.join(dir, 'status.json')
  }).finally(() => fs.rmSync(dir, { recursive: true, force: true }))
  assert.equal(result.code, 0, describe(result))
  const starts = result.events.filter((e) => e.event === 'start')
  const parentStart = starts.find((e) => e.pid === summary?.parentPid)
  assert.equal(parentStart?.config.statusFile, path.join(dir, 'status.json'), describe(result))
  const childStarts = starts.filter((e) => e !== parentStart)
  assert.ok(childStarts.length >= 2, describe(result))
  assert.ok(childStarts.every((e) => e.config.statusFile === null && e.config.staggerDir === null && e.config.signals === false), JSON.stringify(childStarts.map((e) => e.config)))
  assert.equal(result.events.filter((e) => e.event === 'warning' || e.event === 'queued').length, 0, describe(result))
  assert.ok(summary, describe(result))
  assert.equal(summary.completed, JOBS, describe(result))
  assert.equal(summary.failed, 0, describe(result))
  assert.deepEqual({ completed: counts.completed, failed: counts.failed, active: counts.active, waiting: counts.waiting }, { completed: JOBS, failed: 0, active: 0, waiting: 0 })
  assert.doesNotMatch(result.stderr, /FATAL ERROR|heap out of memory/)
  // The recycles came from the children, over their RSS limit, and each child's drain ended
  // with its job delivered: drained, exit code 75.
  const recycles = result.events.filter((e) => e.event === 'recycle')
  assert.ok(recycles.length >= 1, describe(result))
  assert.ok(recycles.every((e) => e.pid !== summary.parentPid), 'the parent did not recycle')
  assert.ok(recycles.some((e) => e.reason === 'rss'), recycles.map((e) => e.reason).join(','))
  assert.ok(recycles.every((e) => ['rss', 'heap', 'near-heap-limit'].includes(e.reason)), recycles.map((e) => e.reason).join(','))
  const childExitEvents = result.events.filter((e) => e.event === 'exit')
  assert.equal(childExitEvents.length, recycles.length)
  assert.ok(childExitEvents.every((e) => e.code === 75 && e.drained === true && e.pid !== summary.parentPid), JSON.stringify(childExitEvents))
  // Every recycled child left the pool and exited by itself; the last one was closed with
  // the worker (SIGTERM, which BullMQ's child answers by exiting 0). None died of a signal.
  const retired = childExits.filter((e) => e.retired)
  assert.equal(retired.length, recycles.length, JSON.stringify(childExits))
  assert.ok(retired.every((e) => e.code === 75 && e.signal === null), JSON.stringify(childExits))
  assert.ok(childExits.every((e) => e.signal === null), JSON.stringify(childExits))
  assert.deepEqual(new Set(childExits.map((e) => e.pid)), new Set(summary.childPids))
  assert.ok(summary.rssEnd - summary.rssStart < 32 * MiB, `parent RSS ${summary.rssStart} -> ${summary.rssEnd}`)
})

test('a child that recycles while idle in the pool leaves it at once; the next job gets a fresh child', { timeout: 150000 }, async () => {
  // One job at a time, each added only once the previous child retired: the queue is empty
  // while the child recycles, so it holds no job and waits in the pool's free list.
  const { result, counts, summary, childExits } = await runParent({
    FIXTURE_PROCESSOR: 'sandbox-idle-recycle.js',
    FIXTURE_COOPERATE: '1',
    FIXTURE_STEPWISE: '1',
    FIXTURE_JOBS: '3'
  })
  assert.equal(result.code, 0, describe(result))
  assert.deepEqual({ completed: summary?.completed, failed: counts.failed }, { completed: 3, failed: 0 }, describe(result))
  assert.equal(summary.childPids.length, 3, 'one child per job')
  const retired = childExits.filter((e) => e.retired)
  assert.ok(retired.length >= 2, JSON.stringify(childExits))
  assert.ok(retired.every((e) => e.code === 75 && e.signal === null), JSON.stringify(childExits))
  assert.ok(childExits.every((e) => e.signal === null), JSON.stringify(childExits))
  const exits = result.events.filter((e) => e.event === 'exit')
  assert.ok(exits.length >= 2 && exits.every((e) => e.drained && e.reason === 'manual' && e.pid !== summary.parentPid), JSON.stringify(exits))
})

test('useWorkerThreads, two at a time: each thread recycles on its own heap limit, every job completes', { timeout: 150000 }, async () => {
  // Two threads: when one has ended, BullMQ's pool takes its pid for 1 (Math.abs of the
  // ended thread's -1), which is the other thread's; a retiring thread must still be seen
  // as holding its job.
  const { result, counts, summary, childExits } = await runParent({
    FIXTURE_PROCESSOR: 'sandbox-leak-recycled.js',
    FIXTURE_COOPERATE: '1',
    FIXTURE_THREADS: '1',
    FIXTURE_CONCURRENCY: '2',
    FIXTURE_JOBS: String(2 * JOBS),
    FIXTURE_THREAD_HEAP_MB: '64',
    FIXTURE_JOB_MS: '50',
    // No near-heap-limit rescue in a thread (Node ends it there): the headroom below V8's
    // limit must hold what grows between two samples and the job in flight.
    FIXTURE_CHILD_ENV: JSON.stringify({ SELF_RECYCLE_INTERVAL: '100ms', SELF_RECYCLE_MAX_HEAP: '70%' })
  })
  assert.equal(result.code, 0, describe(result))
  assert.equal(summary?.completed, 2 * JOBS, describe(result))
  assert.equal(counts.failed, 0)
  // A thread shares the process's RSS (the parent's included): only heap limits apply there.
  const threadStarts = result.events.filter((e) => e.event === 'start' && e.config.maxRss === null)
  assert.ok(threadStarts.length >= 2, describe(result))
  const recycles = result.events.filter((e) => e.event === 'recycle')
  assert.ok(recycles.length >= 1, describe(result))
  assert.ok(recycles.every((e) => e.reason === 'heap' || e.reason === 'near-heap-limit'), recycles.map((e) => e.reason).join(','))
  const retired = childExits.filter((e) => e.retired)
  assert.equal(retired.length, recycles.length, JSON.stringify(childExits))
  assert.ok(retired.every((e) => e.code === 75), JSON.stringify(childExits))
  assert.doesNotMatch(result.stderr, /ERR_WORKER_OUT_OF_MEMORY|heap out of memory/)
})

test('useWorkerThreads, a thread out of heap: recycleChildren() keeps the parent alive, only that job fails', { timeout: 150000 }, async () => {
  // BullMQ re-emits the thread's ERR_WORKER_OUT_OF_MEMORY as an 'error' nobody listens to,
  // which would end the parent: every job of every thread in flight with it.
  const { result, counts, summary, childExits } = await runParent({
    FIXTURE_PROCESSOR: 'sandbox-leak.js',
    FIXTURE_COOPERATE: '1',
    FIXTURE_THREADS: '1',
    FIXTURE_THREAD_HEAP_MB: '64'
  })
  assert.equal(result.code, 0, describe(result))
  assert.ok(summary?.failed >= 1, describe(result))
  assert.equal(summary.completed + summary.failed, JOBS)
  assert.equal(counts.failed, summary.failed)
  const outOfHeap = childExits.filter((e) => /memory limit/.test(e.error ?? ''))
  assert.equal(outOfHeap.length, summary.failed, JSON.stringify(childExits))
  assert.match(result.stderr, /SELF_RECYCLE_SANDBOX_CHILD_ERROR.*reaching memory limit/)
})

test("the parent's own recycle still drains: the job in flight completes, the children close, the rest waits", { timeout: 150000 }, async () => {
  const { result, counts, childExits } = await runParent({
    FIXTURE_PROCESSOR: 'sandbox-leak-recycled.js',
    FIXTURE_COOPERATE: '1',
    FIXTURE_JOB_MS: '50',
    FIXTURE_RECYCLE_AFTER: '10',
    FIXTURE_CHILD_ARGV: '--max-old-space-size=64',
    FIXTURE_CHILD_ENV: CHILD_ENV
  })
  assert.equal(result.code, 75, describe(result))
  assert.ok(result.lines.includes('parent-recycle'), describe(result))
  const exit = result.events.find((e) => e.event === 'exit' && e.reason === 'manual')
  assert.equal(exit?.drained, true, describe(result))
  assert.equal(counts.failed, 0, describe(result))
  assert.equal(counts.active, 0)
  assert.ok(counts.completed >= 10, JSON.stringify(counts))
  assert.equal(counts.completed + counts.waiting, JOBS, JSON.stringify(counts))
  // worker.close() closed every child that was still there, before the parent exited.
  assert.ok(childExits.length >= 1, describe(result))
  assert.ok(childExits.every((e) => e.signal === null), JSON.stringify(childExits))
  assert.ok(childExits.filter((e) => !e.retired).every((e) => e.code === 0), JSON.stringify(childExits))
})

test('sandboxed() without the parent\'s part: a warning that names the fix, jobs run as before', { timeout: 150000 }, async () => {
  const { result, summary } = await runParent({
    FIXTURE_PROCESSOR: 'sandbox-leak-recycled.js',
    FIXTURE_JOBS: '3'
  })
  assert.equal(result.code, 0, describe(result))
  assert.equal(summary?.completed, 3, describe(result))
  assert.match(result.stderr, /SELF_RECYCLE_SANDBOX_ALONE.*call recycleChildren\(worker\) from self-recycle\/bullmq/s)
  // Only the parent runs self-recycle.
  assert.deepEqual([...new Set(result.events.filter((e) => e.event === 'start').map((e) => e.pid))], [summary.parentPid])
})

test('a malformed option for the child: said once, naming it; the jobs still run', { timeout: 150000 }, async () => {
  const { result, summary, childExits } = await runParent({
    FIXTURE_PROCESSOR: 'sandbox-leak-recycled.js',
    FIXTURE_COOPERATE: '1',
    FIXTURE_SANDBOX_OPTIONS: JSON.stringify({ maxRss: 'lots' }),
    FIXTURE_JOBS: '3'
  })
  assert.equal(result.code, 0, describe(result))
  assert.equal(summary?.completed, 3, describe(result))
  assert.equal(summary.childPids.length, 1, 'the child was not lost')
  const warnings = result.stderr.match(/SELF_RECYCLE_SANDBOX_CONFIG.*/g) ?? []
  assert.equal(warnings.length, 1, result.stderr)
  assert.match(warnings[0], /self-recycle does not run in this child: .*maxRss.*"?lots"?.*expected/)
  assert.ok(childExits.every((e) => e.signal === null && !e.retired), JSON.stringify(childExits))
})

test('bad input: errors that name the argument, the value and what is accepted', async () => {
  assert.throws(() => sandboxed('./processor.js'), /sandboxed\(processor\): processor must be the job function .* got string/)
  assert.throws(() => sandboxed(async () => {}, 'maxRss=1GB'), /sandboxed\(processor, options\): options must be an object of self-recycle options, got string/)
  assert.throws(() => sandboxed(async () => {}, null), /got null/)
  assert.throws(() => recycleChildren(undefined), /recycleChildren\(worker\): expected a BullMQ Worker created with a processor file .* got undefined/)
  assert.throws(() => recycleChildren({}), /got Object without a child pool/)
  const connection = { host: redis.host, port: redis.port }
  // A processor function runs in the parent: there is no pool to recycle.
  const inline = new Worker(`sandbox-bad-${process.pid}`, async () => {}, { connection, autorun: false })
  try {
    assert.throws(() => recycleChildren(inline), /got Worker without a child pool/)
  } finally {
    await inline.close()
  }
  const sandboxedWorker = new Worker(`sandbox-bad-${process.pid}`, require.resolve('./fixtures/sandbox-leak.js'), { connection, autorun: false })
  try {
    assert.throws(() => recycleChildren(sandboxedWorker, { onChildExit: 'log' }), /options must be \{ onChildExit\?: function \}, got onChildExit: string/)
    assert.equal(recycleChildren(sandboxedWorker), sandboxedWorker)
    assert.equal(recycleChildren(sandboxedWorker), sandboxedWorker, 'a second call changes nothing')
  } finally {
    await sandboxedWorker.close()
  }
})
