'use strict'
// The worker bench/kubelet.js runs as PID 1 of its own PID namespace: a job every 100 ms
// (each 300 ms, tracked), 4 MiB/s of retained memory, MAX_RSS 160 MiB, SIGNALS=on. It
// prints one JSON line per generation (RSS, descriptors) and per job.
const fs = require('node:fs')
const recycle = require('..')
const say = (record) => process.stdout.write(`${JSON.stringify({ t: Date.now(), ...record })}\n`)
const r = recycle.start({ maxRss: '160MiB', minUptime: '5s', warmup: '5s', drainTimeout: '10s', signals: true })
say({ kind: 'boot', pid: process.pid, generation: Number(process.env.SELF_RECYCLE_GENERATION || 0), rss: process.memoryUsage.rss(), fds: fs.readdirSync('/proc/self/fd').length })
let id = 0
let accepting = true
r.onDrain(() => { accepting = false })
const kept = []
setInterval(() => kept.push(Buffer.alloc(400 << 10, 1)), 100)
setInterval(() => {
  if (!accepting) return
  const job = ++id
  say({ kind: 'start', job })
  r.track(new Promise((resolve) => setTimeout(resolve, 300))).then(() => say({ kind: 'done', job }))
}, 100)
