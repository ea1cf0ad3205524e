'use strict'
// A demo queue worker: 50 ms jobs, each leaking a little (a cache that is never trimmed;
// worker 1 leaks faster), plus a heavy client built once through recycle.once().

const recycle = require('../..')

const r = recycle.start()
r.on('event', (event) => process.connected && process.send({ type: 'self-recycle', event }))

const leakPerJob = process.env.DEMO_SLOT === '1' ? 1.5 * 1048576 : 1048576
const leakedCache = []
let running = true
let started = 0
let done = 0

const createClient = () => ({ pool: Buffer.alloc(4 << 20), connectedAt: Date.now() })

async function job (n) {
  started++
  recycle.once('demo-client', createClient)
  leakedCache.push(Buffer.alloc(leakPerJob, n & 0xff))
  await new Promise((resolve) => setTimeout(resolve, 50))
  done++
}

async function loop () {
  let n = 0
  while (running) await r.track(job(n++))
}

const report = () => process.connected && process.send({ type: 'jobs', started, done })

// Stop intake when the drain starts; the tracked job in flight finishes first, then the
// final counts go to the primary (before self-recycle disconnects from it).
r.onDrain(() => { running = false })
r.on('drain', (event) => { if (event.phase === 'end') report() })
process.on('message', (message) => {
  if (message?.type !== 'stop') return
  running = false
  setTimeout(() => { report(); process.exit(0) }, 100)
})
loop()
