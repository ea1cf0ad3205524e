'use strict'
// A worker whose RSS follows a shape (a share of MAX_RSS over time) while it runs 4 tracked
// jobs of 0.5-3 s, for bench/shapes.js. Run with --expose-gc: memory the shape lets go is
// freed at once, as a GC would. The runner reads its events and exit code.

const recycle = require('..')
const r = recycle.start()
const MIB = 1 << 20
const CHUNK = 4 * MIB
const limit = r.config.maxRss
const shape = process.env.SHAPE
const started = Date.now() - Number(process.env.SHAPE_OFFSET_MS || 0)
const chunks = []

/** The share of the limit the shape wants `s` seconds into its run. */
function share (s) {
  switch (shape) {
    case 'sawtooth': { // 60% up to a peak of 90-97% over 9 s, freed by GC, again
      const cycle = Math.floor(s / 9)
      const peak = 0.90 + ((cycle * 37) % 8) / 100
      return 0.60 + (peak - 0.60) * ((s % 9) / 9)
    }
    case 'burst': return s % 8 < 2 ? 0.90 : 0.60 // +30% for 2 s of every 8 s
    case 'steady': return 0.98
    case 'plateau': { const x = Math.min(s, 40) / 40; return 0.30 + 0.55 * (1 - (1 - x) ** 2) } // levels at 85%
    case 'refill': return 0.65 + 0.25 * Math.min(Math.max((s - 50) / 10, 0), 1) // +25% at 50 s
    case 'late-gc': { const p = s >= 45 && s < 63 ? (s - 45) / 9 : (s % 9) / 9; return 0.60 + 0.18 * p }
    case 'leak': return 0.97 + s * (0.2 * MIB) / limit // 0.2 MiB/s from 97%: crosses at ~60 s
    default: throw new Error(`unknown SHAPE ${shape}`)
  }
}

setInterval(() => {
  const target = share((Date.now() - started) / 1000) * limit
  const rss = process.memoryUsage.rss()
  const missing = Math.floor((target - rss) / CHUNK)
  if (missing > 0) {
    for (let i = 0; i < missing; i++) chunks.push(Buffer.alloc(CHUNK, 1))
  } else if (missing < -1) {
    chunks.splice(0, Math.min(chunks.length, -missing - 1))
    global.gc()
  }
}, 50)

// The share of the limit reached, for the runner's table.
setInterval(() => process.stdout.write(`share:${(process.memoryUsage.rss() / limit).toFixed(3)}\n`), 500)

let running = 0
function job () {
  running++
  const ms = 500 + Math.random() * 2500
  r.track(new Promise((resolve) => setTimeout(resolve, ms))).finally(() => {
    running--
    r.jobDone()
    if (!r.draining) job()
  })
}
for (let i = 0; i < 4; i++) job()
