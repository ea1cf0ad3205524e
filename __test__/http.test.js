'use strict'
// HTTP servers recycle without dropping a request: a node:cluster service under a
// keep-alive client that counts every error, a drain past its deadline, and Nest HTTP apps
// (Express and Fastify adapters) through closeOnDrain.

const test = require('node:test')
const assert = require('node:assert/strict')
const http = require('node:http')
const net = require('node:net')
const { spawn } = require('node:child_process')
const path = require('node:path')
const { FIXTURES, cleanEnv, parseEvents } = require('./processes')

function freePort () {
  return new Promise((resolve) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

/**
 * Sends requests over `sockets` keep-alive connections for `seconds`; counts responses by
 * status and errors by code. A plain keep-alive agent: it does not retry on a server FIN.
 */
async function loadWithKeepAlive (port, seconds, sockets = 50) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: sockets })
  const counts = { ok: 0, status: {}, errors: {} }
  const until = Date.now() + seconds * 1000
  const one = () => new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
      res.resume()
      res.on('end', () => {
        if (res.statusCode === 200) counts.ok++
        else counts.status[res.statusCode] = (counts.status[res.statusCode] ?? 0) + 1
        resolve()
      })
    })
    req.on('error', (error) => {
      counts.errors[error.code ?? error.message] = (counts.errors[error.code ?? error.message] ?? 0) + 1
      resolve()
    })
  })
  await Promise.all(Array.from({ length: sockets }, async () => {
    while (Date.now() < until) await one()
  }))
  agent.destroy()
  return counts
}

function startService (fixture, env) {
  const child = spawn(process.execPath, [path.join(FIXTURES, fixture)], { env: cleanEnv({ SELF_RECYCLE_LOG: 'json', ...env }), stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stderr.on('data', (chunk) => { stderr += chunk })
  const port = new Promise((resolve) => child.stdout.on('data', (chunk) => {
    stdout += chunk
    const match = /port:(\d+)/.exec(stdout)
    if (match) resolve(Number(match[1]))
  }))
  const stop = () => new Promise((resolve) => {
    child.once('close', () => resolve({ stdout, stderr, events: parseEvents(stderr) }))
    child.kill('SIGTERM')
  })
  return { child, port, stop }
}

test('a node:cluster HTTP service recycles under a keep-alive load: 0 resets, 0 refusals, every response 200', { timeout: 120000 }, async () => {
  const service = startService('http-cluster.js', {
    SELF_RECYCLE_MAX_RSS: '150MiB',
    SELF_RECYCLE_MAX_HEAP: 'off',
    SELF_RECYCLE_MIN_UPTIME: '0',
    SELF_RECYCLE_WARMUP: '0',
    SELF_RECYCLE_DRAIN_TIMEOUT: '10s'
  })
  const port = await service.port
  const counts = await loadWithKeepAlive(port, 25)
  const { stdout, events } = await service.stop()
  const exits = stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l))
  const recycles = exits.filter((e) => e.code === 75)
  assert.ok(recycles.length >= 3, `recycles: ${JSON.stringify(exits)}`)
  assert.deepEqual(counts.errors, {}, JSON.stringify(counts))
  assert.deepEqual(counts.status, {}, JSON.stringify(counts))
  assert.ok(counts.ok > 1000, JSON.stringify(counts))
  // Siblings of one primary drain one at a time (auto-staggered).
  const starts = events.filter((e) => e.event === 'recycle').map((e) => e.stagger)
  assert.ok(starts.every((s) => s === 'granted' || s?.startsWith('bypass')), JSON.stringify(starts))
  const drains = events.filter((e) => e.event === 'exit' && e.code === 75)
  assert.ok(drains.every((e) => e.drained), JSON.stringify(drains))
})
