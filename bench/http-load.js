'use strict'
// What the HTTP benches share: a service started in a child process (it prints `port:N`)
// and a plain keep-alive load that counts every error (no retry on a server FIN: a client
// that re-sends silently, like autocannon, would hide resets).

const http = require('node:http')
const { spawn } = require('node:child_process')

/** Runs `args` with `env` (minus the caller's SELF_RECYCLE_*); `port` resolves once printed. */
function startService (args, env) {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('SELF_RECYCLE_')))
  const child = spawn(process.execPath, args, { env: { ...clean, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stderr.on('data', (chunk) => { stderr += chunk })
  const port = new Promise((resolve) => child.stdout.on('data', (chunk) => {
    stdout += chunk
    const match = /port:(\d+)/.exec(stdout)
    if (match) resolve(Number(match[1]))
  }))
  const stop = () => new Promise((resolve) => {
    child.once('close', () => resolve({ stdout, stderr }))
    child.kill('SIGTERM')
  })
  return { port, stop }
}

/**
 * GET / over `sockets` keep-alive connections for `seconds`. `onResponse(body, reused)`, if
 * given, sees each answer's body. Returns requests, req/s, p50/p99/max latency (ms),
 * errors by code, non-2xx answers and how many answers came on a fresh socket.
 */
async function keepAliveLoad (port, seconds, { sockets = 50, onResponse } = {}) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: sockets })
  const latencies = []
  const errors = {}
  let non2xx = 0
  let fresh = 0
  const began = Date.now()
  const until = began + seconds * 1000
  const one = () => new Promise((resolve) => {
    const started = process.hrtime.bigint()
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
      let body = ''
      if (onResponse) {
        res.setEncoding('utf8')
        res.on('data', (chunk) => { body += chunk })
      } else {
        res.resume()
      }
      res.on('end', () => {
        if (res.statusCode < 200 || res.statusCode > 299) non2xx++
        if (!req.reusedSocket) fresh++
        latencies.push(Number(process.hrtime.bigint() - started) / 1e6)
        onResponse?.(body, req.reusedSocket)
        resolve()
      })
    })
    // A request nobody answers is an error too, not a hang of the whole run.
    req.setTimeout(10000, () => req.destroy(Object.assign(new Error('no answer in 10 s'), { code: 'NO_ANSWER' })))
    req.on('error', (error) => {
      errors[error.code ?? error.message] = (errors[error.code ?? error.message] ?? 0) + 1
      resolve()
    })
  })
  await Promise.all(Array.from({ length: sockets }, async () => {
    while (Date.now() < until) await one()
  }))
  const elapsed = (Date.now() - began) / 1000
  agent.destroy()
  latencies.sort((a, b) => a - b)
  const at = (q) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * q))] ?? NaN
  return { requests: latencies.length, perSecond: latencies.length / elapsed, p50: at(0.5), p99: at(0.99), max: latencies.at(-1), errors, non2xx, fresh }
}

module.exports = { startService, keepAliveLoad }
