'use strict'
// BullMQ sandboxed processors that leak 2 MiB per job in their child, children capped at
// --max-old-space-size=64, two at a time, on a private redis-server; the parent runs
// self-recycle at its defaults with MAX_RSS=400MB. Three runs of JOBS jobs:
//   today      the processor as it is: children die of V8's heap limit, jobs in flight fail
//   defaults   sandboxed() + recycleChildren(), the children at self-recycle's defaults
//   rss limit  the same with the children's own MAX_RSS=90MB (INTERVAL=100ms, MIN_UPTIME=0)
// and the same with useWorkerThreads (each thread capped by resourceLimits at 64 MiB):
//   today, recycleChildren() alone (the parent survives a thread out of heap), sandboxed()
//   at the defaults, sandboxed() with INTERVAL=100ms (and MAX_HEAP=70%) in the threads.
// Writes bench/sandbox.md. `node bench/sandbox.js [jobs]`
const fs = require('node:fs')
const path = require('node:path')
const { Queue } = require('bullmq')
const { startRedis } = require('../__test__/redis')
const { runFixture } = require('../__test__/processes')

const JOBS = Number(process.argv[2] || 300)
const MiB = 1024 * 1024

async function scenario (redis, name, env) {
  const queueName = `bench-sandbox-${process.pid}-${name.replace(/\W/g, '')}`
  const result = await runFixture('sandbox-parent.js', {
    env: {
      FIXTURE_REDIS_URL: redis.url,
      FIXTURE_QUEUE: queueName,
      FIXTURE_JOBS: String(JOBS),
      FIXTURE_JOB_MS: '20',
      FIXTURE_CONCURRENCY: '2',
      FIXTURE_CHILD_ARGV: '--max-old-space-size=64',
      SELF_RECYCLE_MAX_RSS: '400MB',
      ...env
    },
    timeoutMs: 600000
  })
  const queue = new Queue(queueName, { connection: { host: redis.host, port: redis.port } })
  const counts = await queue.getJobCounts('completed', 'failed', 'active', 'waiting')
  await queue.obliterate({ force: true })
  await queue.close()
  const line = result.lines.find((l) => l.startsWith('summary:'))
  if (!line) {
    // The parent itself died: what Redis holds is what was done before.
    const crash = (result.stderr.match(/Error \[\w+\]: [^\n]*/) || [`exit code ${result.code}`])[0]
    return { name, completed: counts.completed, failed: `${counts.failed}; the parent died with ${counts.active} active (stalled) and ${counts.waiting} waiting`, ooms: (result.stderr.match(/heap out of memory/g) || []).length, children: '-', recycles: 0, reasons: '-', parentRecycles: '-', parentRss: `crashed (exit ${result.code}): ${crash}`, seconds: (result.durationMs / 1000).toFixed(1), failure: '' }
  }
  if (result.code !== 0) throw new Error(`${name}: exit ${result.code}\n${result.stdout}\n${result.stderr.slice(-4000)}`)
  const summary = JSON.parse(line.slice('summary:'.length))
  // A thread's events carry the process's pid: with threads every recycle is a thread's
  // (the parent's own would have ended it before its summary).
  const childEvents = env.FIXTURE_THREADS ? result.events : result.events.filter((e) => e.pid !== summary.parentPid)
  const recycles = childEvents.filter((e) => e.event === 'recycle')
  const reasons = {}
  for (const e of recycles) reasons[e.reason] = (reasons[e.reason] ?? 0) + 1
  const failures = result.lines.filter((l) => l.startsWith('failed:'))
  return {
    name,
    completed: counts.completed,
    failed: counts.failed,
    ooms: (result.stderr.match(/heap out of memory/g) || []).length,
    children: env.FIXTURE_THREADS ? `${result.lines.filter((l) => l.startsWith('child-exit:')).length} threads` : summary.childPids.length,
    recycles: recycles.length,
    reasons: Object.entries(reasons).map(([r, n]) => `${n} ${r}`).join(', ') || '-',
    parentRecycles: env.FIXTURE_THREADS ? 0 : result.events.filter((e) => e.event === 'recycle' && e.pid === summary.parentPid).length,
    parentRss: `${(summary.rssStart / MiB).toFixed(0)} -> ${(summary.rssEnd / MiB).toFixed(0)} MiB`,
    seconds: (result.durationMs / 1000).toFixed(1),
    failure: failures[0]?.replace(/^failed:[^:]+:/, '') ?? ''
  }
}

async function main () {
  const redis = await startRedis({ own: true })
  try {
    const rows = []
    rows.push(await scenario(redis, 'today', { FIXTURE_PROCESSOR: 'sandbox-leak.js' }))
    rows.push(await scenario(redis, 'sandboxed, child defaults', { FIXTURE_PROCESSOR: 'sandbox-leak-recycled.js', FIXTURE_COOPERATE: '1' }))
    rows.push(await scenario(redis, 'sandboxed, child MAX_RSS=90MB', {
      FIXTURE_PROCESSOR: 'sandbox-leak-recycled.js',
      FIXTURE_COOPERATE: '1',
      FIXTURE_CHILD_ENV: JSON.stringify({ SELF_RECYCLE_MAX_RSS: '90MB', SELF_RECYCLE_MIN_UPTIME: '0', SELF_RECYCLE_INTERVAL: '100ms' })
    }))
    const threads = { FIXTURE_THREADS: '1', FIXTURE_THREAD_HEAP_MB: '64' }
    rows.push(await scenario(redis, 'threads: today', { ...threads, FIXTURE_PROCESSOR: 'sandbox-leak.js' }))
    rows.push(await scenario(redis, 'threads: recycleChildren() only', { ...threads, FIXTURE_PROCESSOR: 'sandbox-leak.js', FIXTURE_COOPERATE: '1' }))
    rows.push(await scenario(redis, 'threads: sandboxed, defaults', { ...threads, FIXTURE_PROCESSOR: 'sandbox-leak-recycled.js', FIXTURE_COOPERATE: '1' }))
    rows.push(await scenario(redis, 'threads: sandboxed, INTERVAL=100ms', { ...threads, FIXTURE_PROCESSOR: 'sandbox-leak-recycled.js', FIXTURE_COOPERATE: '1', FIXTURE_CHILD_ENV: JSON.stringify({ SELF_RECYCLE_INTERVAL: '100ms' }) }))
    rows.push(await scenario(redis, 'threads: sandboxed, INTERVAL=100ms MAX_HEAP=70%', { ...threads, FIXTURE_PROCESSOR: 'sandbox-leak-recycled.js', FIXTURE_COOPERATE: '1', FIXTURE_CHILD_ENV: JSON.stringify({ SELF_RECYCLE_INTERVAL: '100ms', SELF_RECYCLE_MAX_HEAP: '70%' }) }))
    const lines = [
      `# BullMQ sandboxed processors that leak (node ${process.version}, BullMQ ${require('bullmq/package.json').version}, 2 cores)`,
      '',
      `Written by \`node bench/sandbox.js ${JOBS}\`. ${JOBS} jobs, 2 at a time (two children), each keeping 2 MiB of V8`,
      'heap in a module-level array of its child and waiting 20 ms; children started with',
      '`--max-old-space-size=64` (BullMQ\'s `workerForkOptions.execArgv`), threads with',
      '`resourceLimits.maxOldGenerationSizeMb: 64`; the parent runs self-recycle at its defaults with',
      '`MAX_RSS=400MB`. Child OOMs count V8\'s "heap out of memory" lines (a thread\'s too). A thread\'s',
      'parent RSS includes the threads\' heaps.',
      '',
      '| run | completed | failed (lost) | child OOMs | children | child recycles (reason) | parent recycles | parent RSS | wall |',
      '|---|---|---|---|---|---|---|---|---|',
      ...rows.map((r) => `| ${r.name} | ${r.completed} | ${r.failed} | ${r.ooms} | ${r.children} | ${r.recycles}${r.recycles ? ` (${r.reasons})` : ''} | ${r.parentRecycles} | ${r.parentRss} | ${r.seconds} s |`),
      '',
      rows[0].failure ? `Today each lost job failed with \`${rows[0].failure}\`: V8 aborts the child, BullMQ forks another for the next job.` : '',
      'With threads today, BullMQ re-emits the thread\'s `ERR_WORKER_OUT_OF_MEMORY` as an \'error\' on its Child with no',
      'listener, which ends the parent. A thread that runs out of heap after its last job (while it retires) loses',
      'nothing, so a row may count more OOMs than lost jobs.',
      ''
    ]
    fs.writeFileSync(path.join(__dirname, 'sandbox.md'), lines.join('\n'))
    console.log(lines.join('\n'))
  } finally {
    await redis.stop()
  }
}
main().catch((error) => { console.error(error); process.exit(1) })
