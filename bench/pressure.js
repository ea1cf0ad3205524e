'use strict'
// drainHttp's underPressure, measured behind a load balancer that retries elsewhere (like
// nginx's proxy_next_upstream error http_503): two single-process backends (each request
// retains 64 KiB and takes 20-200 ms, recycling at 150 and 180 MiB of RSS, restarted at once
// on exit), a round-robin proxy that retries a failed or 503 request once on the other
// backend, and a keep-alive client on the proxy. Side by side in one run: underPressure
// off, then on (above 0.85). Writes bench/pressure.md. Usage: node bench/pressure.js [seconds]

const fs = require('node:fs')
const http = require('node:http')
const path = require('node:path')
const { spawn } = require('node:child_process')
const { keepAliveLoad } = require('./http-load.js')

const SECONDS = Number(process.argv[2] || 20)
const SOCKETS = 30

const BACKEND = `
  const http = require('node:http')
  const { start, drainHttp } = require(${JSON.stringify(path.join(__dirname, '..'))})
  start()
  const kept = []
  const server = http.createServer((req, res) => {
    kept.push(Buffer.alloc(64 * 1024, 1))
    setTimeout(() => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('ok') }, 20 + Math.random() * 180)
  })
  drainHttp(server, process.env.UNDER_PRESSURE ? { underPressure: { above: 0.85 } } : {})
  server.listen(Number(process.env.PORT), '127.0.0.1', () => console.log('listening'))
`

function freePort () {
  return new Promise((resolve) => {
    const server = http.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

/** A backend kept running: restarted as soon as it exits, its exit events kept. */
function supervise (port, underPressure, maxRss) {
  const exits = []
  let child = null
  let stopped = false
  const clean = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('SELF_RECYCLE_')))
  const env = { ...clean, PORT: String(port), SELF_RECYCLE_LOG: 'json', SELF_RECYCLE_MAX_RSS: maxRss, SELF_RECYCLE_MAX_HEAP: 'off', SELF_RECYCLE_MIN_UPTIME: '0', SELF_RECYCLE_WARMUP: '0', SELF_RECYCLE_DRAIN_TIMEOUT: '10s', SELF_RECYCLE_SIGNALS: 'on', ...(underPressure ? { UNDER_PRESSURE: '1' } : {}) }
  const launch = () => {
    let stderr = ''
    child = spawn(process.execPath, ['-e', BACKEND], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    child.stderr.on('data', (chunk) => { stderr += chunk })
    const ready = new Promise((resolve) => child.stdout.on('data', (chunk) => { if (String(chunk).includes('listening')) resolve() }))
    child.once('close', () => {
      for (const line of stderr.split('\n')) {
        try {
          const event = JSON.parse(line)
          if (event.event === 'exit') exits.push(event)
        } catch {}
      }
      if (!stopped) launch()
    })
    return ready
  }
  const first = launch()
  return {
    ready: first,
    exits,
    stop: () => new Promise((resolve) => {
      stopped = true
      child.once('close', resolve)
      child.kill('SIGTERM')
    })
  }
}

/** Round robin; a connection error or a 503 is retried once on the other backend. */
function proxy (ports) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 100 })
  const retries = {}
  let next = 0
  const forward = (port, req, res, retried) => {
    const upstream = http.request({ host: '127.0.0.1', port, path: req.url, method: req.method, headers: req.headers, agent }, (answer) => {
      if (answer.statusCode === 503 && !retried) {
        answer.resume()
        retries['503'] = (retries['503'] ?? 0) + 1
        return forward(ports.find((p) => p !== port), req, res, true)
      }
      res.writeHead(answer.statusCode, answer.headers)
      answer.pipe(res)
    })
    upstream.on('error', (error) => {
      if (!retried) {
        retries[error.code] = (retries[error.code] ?? 0) + 1
        return forward(ports.find((p) => p !== port), req, res, true)
      }
      res.writeHead(502)
      res.end()
    })
    upstream.end()
  }
  const server = http.createServer((req, res) => {
    const port = ports[next++ % ports.length]
    forward(port, req, res, false)
  })
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ port: server.address().port, retries, close: () => { server.close(); agent.destroy() } })))
}

async function run (underPressure) {
  const ports = [await freePort(), await freePort()]
  // Limits 150 and 180 MiB: two workers rarely recycle at the same moment.
  const backends = ports.map((port, i) => supervise(port, underPressure, i === 0 ? '150MiB' : '180MiB'))
  await Promise.all(backends.map((b) => b.ready))
  const lb = await proxy(ports)
  const result = await keepAliveLoad(lb.port, SECONDS, { sockets: SOCKETS })
  lb.close()
  await Promise.all(backends.map((b) => b.stop()))
  const exits = backends.flatMap((b) => b.exits).filter((e) => e.code === 75)
  return { underPressure, ...result, retries: lb.retries, recycles: exits.length, drainMs: exits.map((e) => e.durationMs), rssAtExit: exits.map((e) => Math.round(e.rss / 1048576)) }
}

async function main () {
  const off = await run(false)
  const on = await run(true)
  const range = (values) => values.length ? `${Math.min(...values)}-${Math.max(...values)}` : 'n/a'
  const fmt = (r) => `| ${r.underPressure ? 'on (above 0.85)' : 'off'} | ${r.perSecond.toFixed(0)} | ${r.p50.toFixed(1)} / ${r.p99.toFixed(1)} ms | ${r.non2xx + Object.values(r.errors).reduce((a, b) => a + b, 0)} | ${Object.entries(r.retries).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'} | ${r.recycles} | ${range(r.drainMs)} ms | ${range(r.rssAtExit)} MiB |`
  const lines = [
    `# underPressure behind a retrying load balancer (node ${process.version}, ${SECONDS} s each, side by side)`,
    '',
    'Written by `node bench/pressure.js`. Two single-process backends (64 KiB retained and 20-200 ms per',
    'request, MAX_RSS 150 and 180 MiB, restarted on exit), a round-robin proxy that retries a connection error or a',
    `503 once on the other backend, ${SOCKETS} keep-alive client sockets.`,
    '',
    '| underPressure | req/s | p50 / p99 | client errors | proxy retries | recycles | drain | RSS at exit |',
    '|---|---|---|---|---|---|---|---|',
    fmt(off),
    fmt(on),
    ''
  ]
  const text = lines.join('\n')
  fs.writeFileSync(path.join(__dirname, 'pressure.md'), text)
  process.stdout.write(text)
}

main()
