'use strict'
// One bench measurement in a fresh process; prints a JSON line. BENCH_MODE picks it.
const mode = process.env.BENCH_MODE
const withAddon = process.env.BENCH_ADDON === '1'
const path = require('node:path')
const root = path.join(__dirname, '..')

if (mode === 'startup') {
  const t0 = process.hrtime.bigint()
  const recycle = require(root)
  const t1 = process.hrtime.bigint()
  recycle.start({ log: 'off' })
  const t2 = process.hrtime.bigint()
  console.log(JSON.stringify({ requireMs: Number(t1 - t0) / 1e6, startMs: Number(t2 - t1) / 1e6 }))
  process.exit(0)
}

if (mode === 'rss') {
  // RSS after settling, with and without the addon loaded and started.
  if (withAddon) require(root).start({ log: 'off', interval: '100ms' })
  setTimeout(() => {
    global.gc?.()
    const status = require('node:fs').readFileSync('/proc/self/status', 'utf8')
    const kib = (key) => Number(status.match(new RegExp(`${key}:\\s+(\\d+)`))[1]) * 1024
    setTimeout(() => console.log(JSON.stringify({ rss: process.memoryUsage.rss(), rssAnon: kib('RssAnon'), rssFile: kib('RssFile') })) || process.exit(0), 200)
  }, 1500)
}

/** CPU time the sampler thread used (schedstat: ns on CPU), 0 without the addon. */
function samplerCpuNs () {
  const fs = require('node:fs')
  for (const tid of fs.readdirSync('/proc/self/task')) {
    try {
      if (fs.readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim() === 'self-recycle') {
        return Number(fs.readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ')[0])
      }
    } catch {}
  }
  return 0
}

if (mode === 'throughput') {
  // CPU-bound event-loop work: small synchronous tasks scheduled through setImmediate.
  if (withAddon) require(root).start({ log: 'off', interval: '100ms' })
  const seconds = Number(process.env.BENCH_SECONDS || 3)
  let tasks = 0
  let sink = 0
  const until = Date.now() + seconds * 1000
  const task = () => {
    for (let i = 0; i < 2000; i++) sink += Math.sqrt(i * tasks) % 7
    tasks++
    if (Date.now() < until) setImmediate(task)
    else console.log(JSON.stringify({ tasksPerSecond: tasks / seconds, samplerCpuNs: samplerCpuNs(), sink: sink > 0 }))
  }
  setImmediate(task)
}

if (mode === 'sampler-cpu') {
  // The sampler thread's CPU time over 10 s at default settings: at rest (far from every
  // limit: INTERVAL), then near a limit (past 80%: FAST_INTERVAL).
  const recycle = require(root)
  const near = process.env.BENCH_NEAR === '1'
  const rss = process.memoryUsage.rss()
  recycle.start({ log: 'off', maxRss: near ? Math.round(rss / 0.85) : Math.round(rss * 4), maxHeap: 'off' })
  const before = samplerCpuNs()
  setTimeout(() => {
    console.log(JSON.stringify({ cpuNs: samplerCpuNs() - before }))
    process.exit(0)
  }, 10000)
  setInterval(() => {}, 1000)
}

if (mode === 'once') {
  const { once } = require(root)
  const factory = () => ({ pool: true })
  const map = new Map([['db', { pool: true }]])
  once('db', factory)
  const N = Number(process.env.BENCH_ITERATIONS || 2e6)
  const time = (fn) => {
    for (let i = 0; i < 1e5; i++) fn()
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < N; i++) fn()
    return Number(process.hrtime.bigint() - t0) / N
  }
  // What an app writes without the guard: a Map-backed lazy getter.
  const getter = (key, make) => {
    let value = map.get(key)
    if (value === undefined) map.set(key, (value = make()))
    return value
  }
  const mapNs = time(() => map.get('db'))
  const getterNs = time(() => getter('db', factory))
  const onceNs = time(() => once('db', factory))
  console.log(JSON.stringify({ mapNs, getterNs, onceNs }))
}
