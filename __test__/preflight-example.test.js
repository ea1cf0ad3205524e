'use strict'
// The pre-flight command of docs/diagnosis.md on examples/preflight: under --load, the healthy service
// passes (its cache warms to about 20 MiB within the window) and the leaky one (1 KiB kept
// per request) fails on the post-GC slope. 30 s windows, as in the docs.

const test = require('node:test')
const assert = require('node:assert/strict')
const { spawn } = require('node:child_process')
const net = require('node:net')
const path = require('node:path')
const { cleanEnv } = require('./processes')

const cli = path.join(__dirname, '..', 'js', 'cli.js')
const example = path.join(__dirname, '..', 'examples', 'preflight')

/** A port nobody listens on now (the service binds it a moment later). */
function freePort () {
  return new Promise((resolve) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

async function preflight (leak) {
  const port = await freePort()
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cli, 'preflight', '--window', '30s', '--max-baseline', '60%', '--max-slope', '5MiB/min', '--no-reinit', '--json',
      '--load', `"${process.execPath}" load.js http://127.0.0.1:${port}/`, '--', process.execPath, 'service.js'], {
      cwd: example,
      env: cleanEnv({ PORT: String(port), LEAK: leak ? '1' : '0' }),
      stdio: ['ignore', 'pipe', 'pipe']
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk) => { stdout += chunk })
    child.stderr.on('data', (chunk) => { stderr += chunk })
    child.on('close', (code) => resolve({ code, stdout, dump: `code=${code}\n${stdout}\n${stderr.slice(-2000)}` }))
  })
}

test('the documented thresholds: the healthy example passes under load, the leaky one fails', { timeout: 180000 }, async () => {
  const healthy = await preflight(false)
  assert.equal(healthy.code, 0, healthy.dump)
  const passed = JSON.parse(healthy.stdout)
  assert.ok(passed.figures.postGcPoints >= 10, healthy.dump)
  assert.ok(passed.figures.postGcSlopeBytesPerMin < 5 * 1048576)
  const leaky = await preflight(true)
  assert.equal(leaky.code, 1, leaky.dump)
  const failed = JSON.parse(leaky.stdout)
  assert.equal(failed.verdict, 'failed')
  assert.match(failed.failures.join('\n'), /the post-GC heap grows \d+ MiB\/min over the window, more than 5 MiB\/min/)
})
