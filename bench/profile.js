'use strict'
// PROFILE=heap, measured side by side in one run: throughput with the sampling heap
// profiler on vs off (interleaved rounds, medians) on a CPU-bound and an allocation-heavy
// workload; the time to take and diff a profile on a 500 MiB heap (as an event does: one
// full GC, then the read), natively and through node:inspector; and the profiler's own
// memory on that heap. Writes bench/profile.md.
// Usage: node bench/profile.js [rounds] [seconds per round]

const fs = require('node:fs')
const path = require('node:path')
const { spawnSync } = require('node:child_process')

const ROUNDS = Number(process.argv[2] || 5)
const SECONDS = Number(process.argv[3] || 3)
const root = path.join(__dirname, '..')

// One workload in a child: start() (the profiler follows PROFILE), then count iterations
// for SECONDS. Prints { ops }.
const WORKLOAD = `
const { start } = require(${JSON.stringify(root)})
start({ log: 'off', maxHeap: 'off', warmup: 0 })
const kind = process.argv[1]
const kept = []
function cpu () {
  let x = 0
  for (let i = 0; i < 20000; i++) x += Math.sqrt(i * 1.5) * Math.sin(i)
  return x
}
const payload = JSON.stringify({ items: Array.from({ length: 50 }, (_, i) => ({ id: i, name: 'item-' + i, price: i * 1.5, tags: ['a', 'b'] })) })
function job () {
  // What a queue job does to memory: parse a 4 KB payload, transform it, serialize it.
  const data = JSON.parse(payload)
  return JSON.stringify(data.items.map((x) => ({ ...x, total: x.price * 2 }))).length
}
function allocate () {
  // Nothing but allocation: ~100 KB of short-lived objects per iteration (GB/s).
  const batch = []
  for (let i = 0; i < 1000; i++) batch.push({ id: i, name: 'item-' + i, tags: [i, i + 1] })
  if (kept.length > 20000) kept.length = 0
  kept.push(batch[0])
  return batch.length
}
const work = kind === 'cpu' ? cpu : kind === 'job' ? job : allocate
const until = Date.now() + ${SECONDS * 1000}
let ops = 0
let sink = 0
while (Date.now() < until) { sink += work(); ops++ }
console.log(JSON.stringify({ ops, sink: sink > 0 }))
`

function runWorkload (kind, profile) {
  const child = spawnSync(process.execPath, ['-e', WORKLOAD, kind], {
    encoding: 'utf8',
    env: { ...process.env, SELF_RECYCLE_PROFILE: profile }
  })
  if (child.status !== 0) throw new Error(`workload ${kind} failed: ${child.stderr}`)
  return JSON.parse(child.stdout.trim().split('\n').pop()).ops
}

const LABELS = {
  cpu: 'CPU-bound (a math loop)',
  job: 'job-shaped (parse a 4 KB JSON payload, transform, serialize)',
  allocate: 'allocation-bound (~100 KB of short-lived objects per iteration, GB/s)'
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]

// The 500 MiB heap: 5 allocation sites retaining ~100 MiB each; then the time of one
// profile taken and diffed (as a recycle does), native and inspector, and the RSS the
// profiler adds (its samples and tree), against the same heap with PROFILE=off.
const BIG_HEAP = `
const { start } = require(${JSON.stringify(root)})
const r = start({ log: 'off', maxHeap: 'off', warmup: 0 })
const { SiteProfiler } = require(${JSON.stringify(path.join(root, 'js', 'profile.js'))})
const keep = []
const fill = [
  function sessions () { for (let i = 0; i < 200000; i++) keep.push({ id: i, user: 'u' + i, at: Date.now() }) },
  function caches () { for (let i = 0; i < 200000; i++) keep.push(['k' + i, 'v' + i]) },
  function buffers () { for (let i = 0; i < 200000; i++) keep.push({ text: 'x'.repeat(200) + i }) },
  function graphs () { for (let i = 0; i < 200000; i++) keep.push({ a: { b: { c: i } } }) },
  function rows () { for (let i = 0; i < 200000; i++) keep.push({ c1: i, c2: i * 2, c3: 'r' + i, c4: null }) }
]
while (process.memoryUsage().heapUsed < 500 * 1048576) for (const f of fill) f()
global.gc?.()
const heapUsed = process.memoryUsage().heapUsed
const rss = process.memoryUsage().rss
const result = { heapUsed, rss, status: r.stats().probes.profile }
if (process.env.SELF_RECYCLE_PROFILE !== 'off') {
  let profiler
  if (process.env.MODE === 'inspector') {
    // The same profiler through node:inspector, started here: what it costs to read.
    require(${JSON.stringify(path.join(root, 'js', 'native.js'))}).heapProfileStop()
    profiler = new SiteProfiler('unavailable: bench', 512 * 1024)
    for (const f of fill) f()
  } else {
    profiler = new SiteProfiler('native', 512 * 1024)
  }
  const t = process.hrtime.bigint()
  const grown = profiler.grown()
  result.takeMs = Number(process.hrtime.bigint() - t) / 1e6
  result.gcMs = grown.gc?.ms ?? null
  result.samples = grown.profile.samples.length
  result.top = grown.sites.slice(0, 5).map((s) => s.functionName)
}
console.log(JSON.stringify(result))
r.stop()
`

function bigHeap (profile, mode) {
  const child = spawnSync(process.execPath, ['--max-old-space-size=2048', '--expose-gc', '-e', BIG_HEAP], {
    encoding: 'utf8',
    env: { ...process.env, SELF_RECYCLE_PROFILE: profile, MODE: mode },
    maxBuffer: 16 << 20
  })
  if (child.status !== 0) throw new Error(`big heap failed: ${child.stderr}`)
  return JSON.parse(child.stdout.trim().split('\n').pop())
}

function main () {
  const rows = []
  for (const kind of ['cpu', 'job', 'allocate']) {
    const on = []
    const off = []
    for (let round = 0; round < ROUNDS; round++) {
      // Interleaved so drift on a shared machine hits both arms alike.
      on.push(runWorkload(kind, 'heap'))
      off.push(runWorkload(kind, 'off'))
    }
    rows.push({ kind, on: median(on), off: median(off), ratio: median(on) / median(off) })
    console.error(`${kind}: on ${on.join(' ')} / off ${off.join(' ')}`)
  }
  const native = bigHeap('heap', 'native')
  const inspector = bigHeap('heap', 'inspector')
  const off = bigHeap('off', 'native')
  const mib = (b) => (b / 1048576).toFixed(0)
  const lines = [
    `# PROFILE=heap: cost (node ${process.version}, ${ROUNDS} interleaved rounds of ${SECONDS} s, medians)`,
    '',
    'Written by `node bench/profile.js`.',
    '',
    '| workload | iterations/s, profiler on | iterations/s, off | on / off |',
    '|---|---|---|---|',
    ...rows.map((r) => `| ${LABELS[r.kind]} | ${(r.on / SECONDS).toFixed(0)} | ${(r.off / SECONDS).toFixed(0)} | ${r.ratio.toFixed(3)} |`),
    '',
    `| on a ${mib(native.heapUsed)} MiB heap | value |`,
    '|---|---|',
    `| take and diff a profile, native (${native.samples} samples), after one full GC | ${native.takeMs.toFixed(1)} ms (the GC: ${native.gcMs?.toFixed(1)} ms) |`,
    `| take and diff a profile, node:inspector (forces a full GC) | ${inspector.takeMs.toFixed(1)} ms |`,
    `| RSS with the profiler / without | ${mib(native.rss)} MiB / ${mib(off.rss)} MiB |`,
    `| top sites found | ${native.top.join(', ')} |`
  ]
  const text = lines.join('\n') + '\n'
  fs.writeFileSync(path.join(__dirname, 'profile.md'), text)
  process.stdout.write(text)
}

main()
