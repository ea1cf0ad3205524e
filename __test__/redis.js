'use strict'
// The Redis server for queue tests: the one .ci/run started (SELF_RECYCLE_TEST_REDIS_URL),
// else a private redis-server started here on a free loopback port.

const { spawn, execFileSync } = require('node:child_process')
const net = require('node:net')

function freePort () {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
    server.on('error', reject)
  })
}

/** `own`: a private server even when CI gave one (a test that kills and restarts it). */
/** `args`: more redis-server arguments (`--requirepass`, `--enable-debug-command`). */
async function startRedis ({ own = false, port: fixedPort, args = [] } = {}) {
  if (process.env.SELF_RECYCLE_TEST_REDIS_URL && !own) {
    const url = new URL(process.env.SELF_RECYCLE_TEST_REDIS_URL)
    return { url: url.href, host: url.hostname, port: Number(url.port), stop: async () => {} }
  }
  try {
    execFileSync('redis-server', ['--version'])
  } catch {
    throw new Error('redis-server is not installed: run .ci/run, or apt-get install redis-server, or set SELF_RECYCLE_TEST_REDIS_URL')
  }
  const port = fixedPort ?? await freePort()
  const child = spawn('redis-server', ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no', ...args], { stdio: 'ignore' })
  const deadline = Date.now() + 10000
  while (Date.now() < deadline) {
    const up = await new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => { socket.end(); resolve(true) })
      socket.on('error', () => resolve(false))
    })
    if (up) break
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    host: '127.0.0.1',
    port,
    stop: () => new Promise((resolve) => { child.once('close', resolve); child.kill('SIGTERM') })
  }
}

module.exports = { startRedis }
