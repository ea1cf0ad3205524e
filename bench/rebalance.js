'use strict'
// drainHttp's `rebalance`, measured: after a recycle in a 2-worker node:cluster the keep-
// alive connections of the worker that left all land on its sibling, and the replacement
// idles. With `rebalance`, the sibling answers each of its sockets' next request with
// `Connection: close` once the replacement listens, and the primary spreads the
// reconnections. Side by side, same cluster and load as bench/http.js: the busiest worker's
// share of each second's requests (0.5 is an even split), errors, reconnections and p99.
// Writes bench/rebalance.md. Usage: node bench/rebalance.js [seconds]

const fs = require('node:fs')
const path = require('node:path')
const { startService, keepAliveLoad } = require('./http-load.js')

const SECONDS = Number(process.argv[2] || 30)
const SOCKETS = 50
const SERVICE = path.join(__dirname, '..', '__test__', 'fixtures', 'http-cluster.js')

/** The load, with each second's answers counted by the worker pid in their body. */
async function load (port, seconds) {
  const buckets = new Map() // second -> Map(pid -> requests)
  const began = Date.now()
  const result = await keepAliveLoad(port, seconds, {
    sockets: SOCKETS,
    onResponse: (body) => {
      const second = Math.floor((Date.now() - began) / 1000)
      const pid = body.trim().split(' ')[1]
      if (!buckets.has(second)) buckets.set(second, new Map())
      buckets.get(second).set(pid, (buckets.get(second).get(pid) ?? 0) + 1)
    }
  })
  // Seconds after the first (warm-up), busiest worker's share of that second.
  const shares = [...buckets.entries()].filter(([second]) => second >= 1 && second < seconds).map(([, pids]) => {
    const counts = [...pids.values()]
    return Math.max(...counts) / counts.reduce((a, b) => a + b, 0)
  })
  return {
    requests: result.requests,
    p99: result.p99,
    errors: result.non2xx + Object.values(result.errors).reduce((a, b) => a + b, 0),
    reconnections: result.fresh - SOCKETS,
    meanBusiest: shares.reduce((a, b) => a + b, 0) / shares.length,
    lopsided: shares.filter((s) => s > 0.8).length,
    seconds: shares.length
  }
}

async function arm (rebalance) {
  const service = startService([SERVICE], { SELF_RECYCLE_LOG: 'off', REBALANCE: rebalance ? '1' : '0', SELF_RECYCLE_MAX_RSS: '150MiB', SELF_RECYCLE_MAX_HEAP: 'off', SELF_RECYCLE_MIN_UPTIME: '0', SELF_RECYCLE_WARMUP: '0', SELF_RECYCLE_DRAIN_TIMEOUT: '10s', SELF_RECYCLE_SIGNALS: 'on' })
  const result = await load(await service.port, SECONDS)
  const { stdout } = await service.stop()
  const recycles = stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)).filter((e) => e.code === 75).length
  return { rebalance, recycles, ...result }
}

async function main () {
  const rows = []
  for (const rebalance of [false, true, false, true]) rows.push(await arm(rebalance))
  const lines = [
    `# drainHttp rebalance (${SECONDS} s per row, ${SOCKETS} keep-alive sockets, node ${process.version})`,
    '',
    'Written by `node bench/rebalance.js`. 2 node:cluster workers recycling at 150 MiB; each request retains',
    '64 KiB and takes 20-200 ms. "Busiest share": the busiest worker\'s share of each second\'s requests (0.5 is',
    'an even split, 1.0 one worker serving everything); "lopsided seconds": seconds where it was over 0.8.',
    '',
    '| rebalance | recycles | requests | p99 ms | errors | reconnections | busiest share (mean) | lopsided seconds |',
    '|---|---|---|---|---|---|---|---|'
  ]
  for (const r of rows) {
    lines.push(`| ${r.rebalance ? 'on' : 'off'} | ${r.recycles} | ${r.requests} | ${r.p99.toFixed(1)} | ${r.errors} | ${r.reconnections} | ${r.meanBusiest.toFixed(2)} | ${r.lopsided} of ${r.seconds} |`)
  }
  const text = lines.join('\n') + '\n'
  fs.writeFileSync(path.join(__dirname, 'rebalance.md'), text)
  process.stdout.write(text)
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
