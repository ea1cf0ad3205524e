'use strict'
// systemd's side of sd_notify, for real: a unix datagram socket read like systemd reads it.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawn, spawnSync } = require('node:child_process')
const { runFixture, eventsNamed, describe, FIXTURES } = require('./processes')

function listen (address, seconds) {
  const child = spawn('python3', [path.join(FIXTURES, 'notify_listener.py'), address, String(seconds)], { stdio: ['ignore', 'pipe', 'inherit'] })
  const messages = []
  let buffered = ''
  const ready = new Promise((resolve) => {
    child.stdout.on('data', (chunk) => {
      buffered += chunk
      const lines = buffered.split('\n')
      buffered = lines.pop()
      for (const line of lines) {
        if (line === 'listening') resolve()
        else if (line) messages.push(JSON.parse(line))
      }
    })
  })
  const done = new Promise((resolve) => child.on('close', resolve))
  return { ready, done, messages, stop: () => child.kill('SIGTERM') }
}

test('NOTIFY_SOCKET (path): READY=1 at start, STOPPING=1 + STATUS when a recycle starts', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-notify-'))
  const socket = path.join(dir, 'notify.sock')
  const listener = listen(socket, 20)
  await listener.ready
  const result = await runFixture('worker.js', { env: { FIXTURE_MODE: 'manual', NOTIFY_SOCKET: socket } })
  listener.stop()
  await listener.done
  fs.rmSync(dir, { recursive: true, force: true })
  assert.equal(result.code, 75, describe(result))
  const messages = listener.messages.map((m) => m.message)
  assert.match(messages[0], /^READY=1\nSTATUS=self-recycle sampling/)
  const stopping = messages.find((m) => m.startsWith('STOPPING=1'))
  assert.equal(stopping, 'STOPPING=1\nSTATUS=recycling (manual): manual recycle requested')
  assert.equal(eventsNamed(result, 'start')[0].probes.notify.socket, socket)
})

test('NOTIFY_SOCKET (abstract @name) works too', async () => {
  const address = `@self-recycle-test-${process.pid}`
  const listener = listen(address, 20)
  await listener.ready
  const result = await runFixture('worker.js', { env: { FIXTURE_MODE: 'manual', NOTIFY_SOCKET: address } })
  listener.stop()
  await listener.done
  assert.equal(result.code, 75, describe(result))
  assert.ok(listener.messages.some((m) => m.message.startsWith('STOPPING=1')), JSON.stringify(listener.messages))
})

test('WATCHDOG=1 is sent while the loop answers and stops when it hangs', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-watchdog-'))
  const socket = path.join(dir, 'notify.sock')
  const listener = listen(socket, 20)
  await listener.ready
  const child = spawn(process.execPath, [path.join(FIXTURES, 'hang.js')], {
    env: { ...process.env, NOTIFY_SOCKET: socket, WATCHDOG_USEC: '400000', SELF_RECYCLE_LOG: 'off', FIXTURE_HANG_AFTER_MS: '1500' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let hangingAt = 0
  await new Promise((resolve) => child.stdout.on('data', (chunk) => {
    if (String(chunk).includes('hanging')) {
      hangingAt = Date.now()
      resolve()
    }
  }))
  // Stand in for systemd: once it hangs, wait five ping intervals, then kill it as
  // WatchdogSec would. (Waiting longer only makes the absence surer.)
  await new Promise((resolve) => setTimeout(resolve, 1000))
  child.kill('SIGKILL')
  await new Promise((resolve) => child.on('close', resolve))
  listener.stop()
  await listener.done
  fs.rmSync(dir, { recursive: true, force: true })
  assert.ok(hangingAt > 0)
  const pings = listener.messages.filter((m) => m.message === 'WATCHDOG=1')
  const before = pings.filter((m) => m.t < hangingAt)
  const after = pings.filter((m) => m.t > hangingAt + 400)
  assert.ok(before.length >= 4, `watchdog while responsive: ${before.length}`)
  assert.equal(after.length, 0, `no watchdog once hung: ${after.map((m) => m.t - hangingAt)}`)
})

test('STALL_TIMEOUT: a hung loop recycles with reason stall and exits 75 from the native thread', async () => {
  const result = await runFixture('hang.js', {
    env: { SELF_RECYCLE_STALL_TIMEOUT: '500ms', SELF_RECYCLE_INTERVAL: '100ms', SELF_RECYCLE_MIN_UPTIME: '0', SELF_RECYCLE_DRAIN_TIMEOUT: '1s', FIXTURE_HANG_AFTER_MS: '300' }
  })
  assert.equal(result.code, 75, describe(result))
  const [recycle] = eventsNamed(result, 'recycle')
  assert.equal(recycle.reason, 'stall')
  assert.match(recycle.msg, /^event loop unresponsive for \d+ms \(limit 500ms\); draining(; no heap growth beyond sampling noise since the (baseline|process started))?$/)
  const [exit] = eventsNamed(result, 'exit')
  assert.equal(exit.forced, true)
  assert.ok(!result.lines.includes('hook'))
})

test('STALL_TIMEOUT: a busy but responsive loop is not a stall', async () => {
  const result = await runFixture('worker.js', {
    env: { FIXTURE_MODE: 'jobs', FIXTURE_IDLE_EXIT_MS: '2000', SELF_RECYCLE_STALL_TIMEOUT: '300ms', SELF_RECYCLE_INTERVAL: '50ms', SELF_RECYCLE_MIN_UPTIME: '0' }
  })
  assert.equal(result.code, 0, describe(result))
  assert.equal(eventsNamed(result, 'recycle').length, 0)
})

test('the example systemd unit passes systemd-analyze verify without a warning', () => {
  const unit = path.join(__dirname, '..', 'examples', 'nest-bullmq-worker', 'nest-bullmq-worker.service')
  const result = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8' })
  assert.equal(result.error, undefined, 'systemd-analyze is installed (.ci/run installs systemd)')
  assert.equal(result.status, 0, result.stderr)
  assert.equal(result.stderr.trim(), '', result.stderr)
  const text = fs.readFileSync(unit, 'utf8')
  for (const line of ['Type=notify', 'Restart=on-failure', 'WatchdogSec=30', 'Environment=SELF_RECYCLE_SIGNALS=on']) {
    assert.ok(text.includes(line), line)
  }
})

test('READY=baseline: READY=1 only once the baseline passes the warm-up, never when it fails', async () => {
  for (const [heavy, expectReady] of [[false, true], [true, false]]) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-notify-ready-'))
    const socket = path.join(dir, 'notify.sock')
    const listener = listen(socket, 20)
    await listener.ready
    const started = Date.now()
    const result = await runFixture('preflight-worker.js', {
      // A warm-up long enough for the heavy fixture to allocate its 160 MiB on a busy CI machine.
      env: { FIXTURE_MODE: heavy ? 'heavy' : 'clean', FIXTURE_LIMIT_MIB: '200', NOTIFY_SOCKET: socket, SELF_RECYCLE_READY: 'baseline', SELF_RECYCLE_WARMUP: '3s', SELF_RECYCLE_MAX_RSS: '200MiB', SELF_RECYCLE_LOG: 'json' },
      timeoutMs: 5500
    })
    listener.stop()
    await listener.done
    fs.rmSync(dir, { recursive: true, force: true })
    const ready = listener.messages.find((m) => m.message.startsWith('READY=1'))
    const [baseline] = eventsNamed(result, 'baseline')
    assert.equal(baseline?.ready, expectReady, describe(result))
    if (expectReady) {
      assert.ok(ready && ready.t - started >= 2900, `READY=1 at ${ready && ready.t - started} ms`)
      assert.match(ready.message, /baseline passed/)
    } else {
      assert.equal(ready, undefined, 'no READY=1 for a baseline over 60% of its limit')
      assert.match(baseline.msg, /not ready: rss \d+ MiB is \d+% of limit 200 MiB/)
    }
  }
})
