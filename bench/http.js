'use strict'
// An HTTP service under load, side by side in one run: a node:cluster of 2 workers (each
// request retains 64 KiB and takes 20-200 ms) drained by drainHttp, with recycles at a
// 150 MiB RSS limit and without any limit; then the same for a Nest app on Express.
// Counts every error with a plain keep-alive client (50 sockets, no retry on a server FIN:
// a client that re-sends silently would hide resets), and reports requests/s, p50/p99 and
// the workers' RSS at exit. Writes bench/http.md. Usage: node bench/http.js [seconds]

const fs = require('node:fs')
const path = require('node:path')
const { startService, keepAliveLoad } = require('./http-load.js')

const SECONDS = Number(process.argv[2] || 30)
const SOCKETS = 50
// The service the HTTP tests run (APP=node: node:http; APP=express: a Nest app).
const SERVICE = path.join(__dirname, '..', '__test__', 'fixtures', 'http-cluster.js')

async function arm (name, env) {
  const service = startService([SERVICE], { SELF_RECYCLE_LOG: 'json', ...env })
  const port = await service.port
  const result = await keepAliveLoad(port, SECONDS, { sockets: SOCKETS })
  const { stdout, stderr } = await service.stop()
  const exits = stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l))
  const events = stderr.split('\n').filter((l) => l.startsWith('{')).map((l) => { try { return JSON.parse(l) } catch { return {} } })
  const recycleExits = events.filter((e) => e.event === 'exit' && e.code === 75)
  // RSS when a worker left: at each recycle; without recycles, when the run ended.
  const finalRss = (recycleExits.length > 0 ? recycleExits : events.filter((e) => e.event === 'exit')).map((e) => e.rss)
  return {
    name,
    ...result,
    recycles: exits.filter((e) => e.code === 75).length,
    drainMs: recycleExits.map((e) => e.durationMs),
    rssAtExitMiB: finalRss.map((b) => b / 1048576)
  }
}

const range = (values, digits = 0) => values.length === 0 ? '—' : `${Math.min(...values).toFixed(digits)}-${Math.max(...values).toFixed(digits)}`

async function main () {
  const recycling = { SELF_RECYCLE_MAX_RSS: '150MiB', SELF_RECYCLE_MAX_HEAP: 'off', SELF_RECYCLE_MIN_UPTIME: '0', SELF_RECYCLE_WARMUP: '0', SELF_RECYCLE_DRAIN_TIMEOUT: '10s', SELF_RECYCLE_SIGNALS: 'on' }
  const unlimited = { SELF_RECYCLE_MAX_RSS: 'off', SELF_RECYCLE_MAX_HEAP: 'off', SELF_RECYCLE_SIGNALS: 'on' }
  const rows = []
  for (const app of ['node', 'express']) {
    rows.push(await arm(`${app}: recycling at 150 MiB`, { ...recycling, APP: app }))
    rows.push(await arm(`${app}: no limit (never recycles)`, { ...unlimited, APP: app }))
  }
  const lines = [
    `# HTTP servers under recycling (${SECONDS} s per row, ${SOCKETS} keep-alive sockets, node ${process.version})`,
    '',
    'Written by `node bench/http.js`. 2 node:cluster workers; each request retains 64 KiB and takes 20-200 ms.',
    '',
    '| service | requests | req/s | p50 ms | p99 ms | max ms | errors | non-2xx | recycles | drain ms | RSS at exit MiB |',
    '|---|---|---|---|---|---|---|---|---|---|---|'
  ]
  for (const r of rows) {
    const errors = Object.entries(r.errors).map(([code, n]) => `${n} ${code}`).join(', ') || '0'
    lines.push(`| ${r.name} | ${r.requests} | ${r.perSecond.toFixed(0)} | ${r.p50.toFixed(1)} | ${r.p99.toFixed(1)} | ${r.max.toFixed(0)} | ${errors} | ${r.non2xx} | ${r.recycles} | ${range(r.drainMs)} | ${range(r.rssAtExitMiB)} |`)
  }
  for (const app of ['node', 'express']) {
    const [withRecycles, without] = rows.filter((r) => r.name.startsWith(`${app}:`))
    lines.push('', `${app}: throughput with recycles / without: ${(withRecycles.perSecond / without.perSecond).toFixed(3)}; p99 ratio: ${(withRecycles.p99 / without.p99).toFixed(2)}`)
  }
  const text = lines.join('\n') + '\n'
  fs.writeFileSync(path.join(__dirname, 'http.md'), text)
  process.stdout.write(text)
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
