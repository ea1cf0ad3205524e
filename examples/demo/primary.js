'use strict'
// `npm run demo`: a node:cluster primary runs two leaking workers that recycle themselves.
// Each worker drains (finishes its job in flight) and exits 75; the primary forks a fresh
// one. Stops by itself after DEMO_SECONDS (default 40) and prints a summary.

const cluster = require('node:cluster')
const path = require('node:path')

const SECONDS = Number(process.env.DEMO_SECONDS || 40)
const WORKERS = 2
const LIMIT = '160MiB'

cluster.setupPrimary({ exec: path.join(__dirname, 'worker.js') })

const started = Date.now()
const stats = new Map() // slot -> { recycles, jobs, lastRss, rssAtRecycle: [] }
let stopping = false

const time = () => new Date().toISOString().slice(11, 23)
const mib = (bytes) => `${Math.round(bytes / 1048576)} MiB`
const pad = (text, width) => String(text).padEnd(width)

function log (slot, pid, what, detail) {
  console.log(`${time()}  worker ${slot} pid ${pad(pid, 7)} ${pad(what, 9)} ${detail}`)
}

function fork (slot) {
  const worker = cluster.fork({
    DEMO_SLOT: String(slot),
    SELF_RECYCLE_MAX_RSS: LIMIT,
    SELF_RECYCLE_INTERVAL: '250ms',
    SELF_RECYCLE_STRIKES: '2',
    SELF_RECYCLE_WARMUP: '0',
    SELF_RECYCLE_MIN_UPTIME: '2s',
    SELF_RECYCLE_DRAIN_TIMEOUT: '5s',
    SELF_RECYCLE_LOG: 'off'
  })
  const entry = stats.get(slot) || { recycles: 0, started: 0, jobs: 0, lost: 0, rssAtRecycle: [], forks: 0 }
  entry.forks++
  stats.set(slot, entry)
  const pid = worker.process.pid
  worker.on('message', (message) => {
    // Final counts of one worker life: jobs started vs completed.
    if (message?.type === 'jobs') {
      entry.started += message.started
      entry.jobs += message.done
      entry.lost += message.started - message.done
    }
    if (message?.type !== 'self-recycle') return
    const event = message.event
    if (event.event === 'start') log(slot, pid, 'start', `limit ${mib(event.config.maxRss)}, heap probe ${event.probes.v8}`)
    if (event.event === 'pressure') log(slot, pid, 'pressure', event.msg)
    if (event.event === 'recycle') {
      entry.recycles++
      entry.rssAtRecycle.push(event.rss)
      log(slot, pid, 'recycle', `reason=${event.reason} rss=${mib(event.rss)}: ${event.msg}`)
    }
    if (event.event === 'drain' && event.phase === 'end') log(slot, pid, 'drained', `${event.durationMs} ms, ${event.inFlight} job(s) still in flight`)
  })
  worker.on('exit', (code, signal) => {
    log(slot, pid, 'exit', `code ${code}${signal ? ` signal ${signal}` : ''}${stopping ? '' : '; forking a fresh worker'}`)
    if (!stopping) fork(slot)
  })
}

for (let slot = 1; slot <= WORKERS; slot++) fork(slot)

setTimeout(() => {
  stopping = true
  // A worker that is recycling right now has already disconnected: it exits by itself.
  // (The callback keeps a send on a channel that just closed from becoming an 'error'.)
  for (const worker of Object.values(cluster.workers)) {
    if (worker.isConnected()) worker.send({ type: 'stop' }, () => {})
  }
  const done = setInterval(() => {
    if (Object.keys(cluster.workers).length > 0) return
    clearInterval(done)
    console.log('\nsummary')
    for (const [slot, entry] of stats) {
      const peak = entry.rssAtRecycle.length ? mib(Math.max(...entry.rssAtRecycle)) : 'n/a'
      console.log(`  worker ${slot}: ${entry.forks} processes, ${entry.recycles} recycles, ${entry.started} jobs started, ${entry.jobs} completed, ${entry.lost} lost; highest RSS at a recycle ${peak} (limit ${LIMIT})`)
    }
    const exits = [...stats.values()].reduce((sum, e) => sum + e.recycles, 0)
    console.log(`  ${((Date.now() - started) / 1000).toFixed(1)} s; ${exits} self-recycles, each an exit 75 after a drain, each followed by a fresh fork`)
  }, 100)
}, SECONDS * 1000)
