'use strict'
// An HTTP service under load, side by side in one run: a node:cluster of 2 workers (each
// request retains 64 KiB) drained by drainHttp, recycling at a 150 MiB RSS limit, for
// node:http, Express and Fastify, each with handlers that answer inside the request
// listener (sync: thousands of requests a second, so a waiting sibling passes its queue
// over the ceiling) and after 20-200 ms (async); then the async services without any limit.
// Counts every error with a plain keep-alive client (50 sockets, no retry on a server FIN:
// a client that re-sends silently would hide resets) and reports errors per recycle,
// requests/s, p50/p99 and the workers' RSS at exit. Writes bench/http.md.
// Usage: node bench/http.js [seconds]

const fs = require('node:fs')
const path = require('node:path')
const { startService, keepAliveLoad } = require('./http-load.js')

const SECONDS = Number(process.argv[2] || 30)
const SOCKETS = 50
// The service the HTTP tests run (APP=node: node:http; express-app, fastify-app).
const SERVICE = path.join(__dirname, '..', '__test__', 'fixtures', 'http-cluster.js')
const APPS = { node: 'node:http', 'express-app': 'Express', 'fastify-app': 'Fastify' }

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
    // Recycles that passed the sibling queue over their ceiling.
    bypassed: events.filter((e) => e.event === 'recycle' && /^bypass/.test(e.stagger ?? '')).length,
    drainMs: recycleExits.map((e) => e.durationMs),
    rssAtExitMiB: finalRss.map((b) => b / 1048576)
  }
}

const range = (values, digits = 0) => values.length === 0 ? '—' : `${Math.min(...values).toFixed(digits)}-${Math.max(...values).toFixed(digits)}`

async function main () {
  const recycling = { SELF_RECYCLE_MAX_RSS: '150MiB', SELF_RECYCLE_MAX_HEAP: 'off', SELF_RECYCLE_MIN_UPTIME: '0', SELF_RECYCLE_WARMUP: '0', SELF_RECYCLE_DRAIN_TIMEOUT: '10s', SELF_RECYCLE_SIGNALS: 'on' }
  const unlimited = { SELF_RECYCLE_MAX_RSS: 'off', SELF_RECYCLE_MAX_HEAP: 'off', SELF_RECYCLE_SIGNALS: 'on' }
  const rows = []
  for (const app of Object.keys(APPS)) {
    for (const handler of ['sync', 'async']) {
      rows.push(await arm(`${APPS[app]}, ${handler}: recycling at 150 MiB`, { ...recycling, APP: app, HANDLER: handler }))
    }
  }
  for (const app of Object.keys(APPS)) rows.push(await arm(`${APPS[app]}, async: no limit (never recycles)`, { ...unlimited, APP: app, HANDLER: 'async' }))
  const lines = [
    `# HTTP servers under recycling (${SECONDS} s per row, ${SOCKETS} keep-alive sockets, node ${process.version})`,
    '',
    'Written by `node bench/http.js`. 2 node:cluster workers; each request retains 64 KiB; sync',
    'handlers answer inside the request listener, async ones after 20-200 ms. drainHttp is',
    'registered after the app (`createServer(app)`, then `drainHttp(server)`). "bypassed": recycles',
    'that passed the sibling queue over their ceiling (1.25x the limit).',
    '',
    '| service | requests | req/s | p50 ms | p99 ms | max ms | errors | errors per recycle | non-2xx | recycles (bypassed) | drain ms | RSS at exit MiB |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|'
  ]
  for (const r of rows) {
    const total = Object.values(r.errors).reduce((a, b) => a + b, 0)
    const errors = Object.entries(r.errors).map(([code, n]) => `${n} ${code}`).join(', ') || '0'
    const perRecycle = r.recycles > 0 ? (total / r.recycles).toFixed(1) : '—'
    lines.push(`| ${r.name} | ${r.requests} | ${r.perSecond.toFixed(0)} | ${r.p50.toFixed(1)} | ${r.p99.toFixed(1)} | ${r.max.toFixed(0)} | ${errors} | ${perRecycle} | ${r.non2xx} | ${r.recycles} (${r.bypassed}) | ${range(r.drainMs)} | ${range(r.rssAtExitMiB)} |`)
  }
  for (const app of Object.values(APPS)) {
    const withRecycles = rows.find((r) => r.name === `${app}, async: recycling at 150 MiB`)
    const without = rows.find((r) => r.name === `${app}, async: no limit (never recycles)`)
    lines.push('', `${app}, async: throughput with recycles / without: ${(withRecycles.perSecond / without.perSecond).toFixed(3)}; p99 ratio: ${(withRecycles.p99 / without.p99).toFixed(2)}`)
  }
  const text = lines.join('\n') + '\n'
  fs.writeFileSync(path.join(__dirname, 'http.md'), text)
  process.stdout.write(text)
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
