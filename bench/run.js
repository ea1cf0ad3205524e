'use strict'
// Benchmarks (not tests): run with `npm run bench`. Every comparison runs both sides
// interleaved in one run (A B A B ...) in fresh processes, and reports medians.

const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const root = path.join(__dirname, '..')
const binding = require(path.join(root, 'js', 'native.js'))
const ROUNDS = Number(process.env.BENCH_ROUNDS || 10)

function run (env, nodeArgs = []) {
  const out = execFileSync(process.execPath, [...nodeArgs, path.join(__dirname, 'workload.js')], {
    env: { ...process.env, ...env },
    encoding: 'utf8'
  })
  return JSON.parse(out.trim().split('\n').pop())
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

/** A B, then B A, ... so neither side always runs first; per-pair ratios show the noise. */
function interleaved (mode, pick, nodeArgs) {
  const without = []
  const withAddon = []
  const samplerCpuNs = []
  for (let i = 0; i < ROUNDS; i++) {
    const a = () => without.push(pick(run({ BENCH_MODE: mode, BENCH_ADDON: '0' }, nodeArgs)))
    const b = () => {
      const result = run({ BENCH_MODE: mode, BENCH_ADDON: '1' }, nodeArgs)
      samplerCpuNs.push(result.samplerCpuNs ?? 0)
      withAddon.push(pick(result))
    }
    if (i % 2 === 0) { a(); b() } else { b(); a() }
  }
  const ratios = withAddon.map((w, i) => w / without[i]).sort((x, y) => x - y)
  return { without: median(without), with: median(withAddon), ratio: median(ratios), lowest: ratios[0], highest: ratios.at(-1), samplerCpuNs }
}

const lines = []
const say = (line) => { lines.push(line); console.log(line) }

say(`# self-recycle benchmarks`)
say(`node ${process.version}, ${require('node:os').cpus().length} cores, ${ROUNDS} rounds each, medians; command: npm run bench`)
say('')

const cost = binding.probeCost(200000)
say(`- native cost of one RSS sample (statm, kept fd, pread): ${(cost.rssNs / 1000).toFixed(2)} us`)
say(`- native cost of one heap sample (v8::Isolate::GetHeapStatistics on the JS thread): ${cost.heapNs === null ? 'n/a (JS fallback)' : `${(cost.heapNs / 1000).toFixed(2)} us`}`)

const throughput = interleaved('throughput', (r) => r.tasksPerSecond)
const cpuMs = median(throughput.samplerCpuNs) / 1e6
say(`- CPU used by the sampler thread during that 3 s run at INTERVAL=100ms: ${cpuMs.toFixed(2)} ms (${(cpuMs / 30).toFixed(3)}% of one core); the deterministic measure of its cost`)
say(`- CPU-bound event-loop throughput, INTERVAL=100ms: median ${Math.round(throughput.with)} tasks/s with the addon vs ${Math.round(throughput.without)} without; median per-pair ratio ${throughput.ratio.toFixed(3)} (pairs ranged ${throughput.lowest.toFixed(3)}-${throughput.highest.toFixed(3)}: that spread is this machine's noise)`)

const atRest = run({ BENCH_MODE: 'sampler-cpu', BENCH_NEAR: '0' }).cpuNs / 1e6
const nearLimit = run({ BENCH_MODE: 'sampler-cpu', BENCH_NEAR: '1' }).cpuNs / 1e6
say(`- sampler thread CPU at default settings over 10 s: at rest (INTERVAL 1s) ${atRest.toFixed(2)} ms (${(atRest / 100).toFixed(4)}% of one core); near a limit (FAST_INTERVAL 25ms) ${nearLimit.toFixed(2)} ms (${(nearLimit / 100).toFixed(3)}% of one core)`)

const startups = []
for (let i = 0; i < ROUNDS; i++) startups.push(run({ BENCH_MODE: 'startup' }))
const requireMs = median(startups.map((s) => s.requireMs))
const startMs = median(startups.map((s) => s.startMs))
say(`- require('self-recycle'): ${requireMs.toFixed(2)} ms; start(): ${startMs.toFixed(2)} ms; together ${(requireMs + startMs).toFixed(2)} ms`)

const rss = interleaved('rss', (r) => r.rss, ['--expose-gc'])
const anon = interleaved('rss', (r) => r.rssAnon, ['--expose-gc'])
const mib = (bytes) => (bytes / 1048576).toFixed(2)
say(`- RSS added by the addon (loaded, started, sampling at 100 ms, 1.5 s settled): ${mib(rss.with - rss.without)} MiB (${mib(rss.with)} vs ${mib(rss.without)} MiB), of which anonymous (RssAnon, private memory): ${mib(anon.with - anon.without)} MiB; the rest is file-backed pages of the mapped .node and Node's own code, shared and reclaimable`)

const node = fs.readdirSync(path.join(root, 'js')).find((f) => f.endsWith('.node'))
say(`- ${node}: ${(fs.statSync(path.join(root, 'js', node)).size / 1024).toFixed(0)} KiB`)

const onceRuns = []
for (let i = 0; i < ROUNDS; i++) onceRuns.push(run({ BENCH_MODE: 'once' }))
const mapNs = median(onceRuns.map((r) => r.mapNs))
const getterNs = median(onceRuns.map((r) => r.getterNs))
const onceNs = median(onceRuns.map((r) => r.onceNs))
say(`- once() on the hot path (already initialized): ${onceNs.toFixed(1)} ns per call vs ${getterNs.toFixed(1)} ns for a Map-backed lazy getter and ${mapNs.toFixed(1)} ns for a bare Map.get (which the JIT can hoist)`)

fs.writeFileSync(path.join(__dirname, 'results.md'), `${lines.join('\n')}\n`)
