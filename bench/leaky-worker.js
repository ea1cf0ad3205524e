'use strict'
// The COMPARISON workload: 50 ms jobs, ~20 MB/s of retained V8 heap. Writes a ledger of
// JSON lines (boot, RSS samples every 100 ms, job start/done) for bench/compare.js.
const fs = require('node:fs')

const ledger = process.env.LEDGER
const note = (record) => fs.appendFileSync(ledger, `${JSON.stringify({ t: Date.now(), pid: process.pid, ...record })}\n`)

let running = true
let track = (promise) => promise
if (process.env.SELF_RECYCLE_DISABLE !== '1') {
  const r = require('..').start()
  r.on('recycle', (event) => note({ kind: 'recycle', reason: event.reason, rss: event.rss, predicted: event.predicted === true }))
  r.onDrain(() => { running = false })
  track = (promise) => r.track(promise)
} else {
  // Without self-recycle the worker still shuts down gracefully on SIGINT/SIGTERM (as PM2
  // and Supervisor send): it finishes the job in flight, then exits. A fair baseline.
  let current = Promise.resolve()
  track = (promise) => (current = promise)
  const stop = (signal) => {
    note({ kind: 'signal', signal })
    running = false
    current.then(() => process.exit(0))
  }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
}
note({ kind: 'boot' })
setInterval(() => note({ kind: 'sample', rss: process.memoryUsage.rss() }), Number(process.env.SAMPLE_MS || 100)).unref()

const JOB_MS = Number(process.env.JOB_MS || 50)
const BYTES_PER_STEP = 1 << 20 // one step per 50 ms: ~20 MiB/s whatever the job length
const retained = []
let n = 0
async function job () {
  const id = ++n
  note({ kind: 'start', id })
  const steps = Math.max(1, Math.round(JOB_MS / 50))
  for (let i = 0; i < steps; i++) {
    retained.push(new Array(BYTES_PER_STEP / 8).fill(id + 0.5))
    await new Promise((resolve) => setTimeout(resolve, JOB_MS / steps))
  }
  note({ kind: 'done', id })
}
;(async () => {
  while (running) await track(job())
})()
