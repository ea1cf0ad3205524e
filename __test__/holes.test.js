'use strict'
// Regression tests for the holes in the two promises (no job lost, no FATAL ERROR, no
// hang): each reproduces a defect seen in an adversarial pass.

const test = require('node:test')
const assert = require('node:assert/strict')
const { spawn, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { runFixture, eventsNamed, describe, FIXTURES, cleanEnv } = require('./processes')

const QUICK = { SELF_RECYCLE_MIN_UPTIME: '0', SELF_RECYCLE_LOG: 'json', SELF_RECYCLE_DRAIN_TIMEOUT: '2s' }

function scratch (name) {
  return fs.mkdtempSync(path.join(os.tmpdir(), `self-recycle-${name}-`))
}

test('work tracked after the drain started is waited for, and drained tells the truth', async () => {
  const result = await runFixture('drain.js', { env: { ...QUICK, FIXTURE_MODE: 'late-work' } })
  assert.equal(result.code, 75, describe(result))
  assert.deepEqual(result.lines, ['early-done', 'late-done'])
  const [exit] = eventsNamed(result, 'exit')
  assert.equal(exit.drained, true)
  const end = eventsNamed(result, 'drain').find((e) => e.phase === 'end')
  assert.equal(end.inFlight, 0)

  const overrun = await runFixture('drain.js', { env: { ...QUICK, FIXTURE_MODE: 'late-overrun' } })
  assert.equal(overrun.code, 75, describe(overrun))
  assert.deepEqual(overrun.lines, ['early-done'])
  const [late] = eventsNamed(overrun, 'exit')
  assert.equal(late.drained, false, 'work still in flight at the deadline is not "drained"')
  assert.equal(eventsNamed(overrun, 'drain').find((e) => e.phase === 'end').inFlight, 1)
})

test('the longest DRAIN_TIMEOUT (24d) still waits for the hook; beyond setTimeout\'s range (30d) is refused', async () => {
  const result = await runFixture('drain.js', { env: { ...QUICK, SELF_RECYCLE_DRAIN_TIMEOUT: '24d', FIXTURE_MODE: 'long-timeout' } })
  assert.equal(result.code, 75, describe(result))
  assert.deepEqual(result.lines, ['hook-finished'])
  assert.equal(eventsNamed(result, 'exit')[0].drained, true)
  const refused = await runFixture('drain.js', { env: { ...QUICK, SELF_RECYCLE_DRAIN_TIMEOUT: '30d', FIXTURE_MODE: 'long-timeout' } })
  assert.notEqual(refused.code, 75, describe(refused))
  assert.match(refused.stderr, /SELF_RECYCLE_DRAIN_TIMEOUT="30d" is not valid: expected .*at most 24d/)
})

test('a hook that throws a value with no string form does not break the drain', async () => {
  const result = await runFixture('drain.js', { env: { ...QUICK, FIXTURE_MODE: 'null-throw' } })
  assert.equal(result.code, 75, describe(result))
  assert.deepEqual(result.lines, ['second-hook'])
  const end = eventsNamed(result, 'drain').find((e) => e.phase === 'end')
  assert.equal(end.errors.length, 1)
  assert.ok(result.durationMs < 1500, `the drain ended at once (${result.durationMs} ms), not at the native deadline`)
})

test('no hook starts after the deadline', async () => {
  const result = await runFixture('drain.js', { env: { ...QUICK, SELF_RECYCLE_DRAIN_TIMEOUT: '500ms', FIXTURE_MODE: 'slow-hook' } })
  assert.equal(result.code, 75, describe(result))
  assert.deepEqual(result.lines, ['first-hook'])
  assert.equal(eventsNamed(result, 'exit')[0].drained, false)
})

test('recycle() with nothing else keeping the loop alive still drains and exits with the code', async () => {
  const result = await runFixture('drain.js', { env: { ...QUICK, SELF_RECYCLE_EXIT_CODE: '76', FIXTURE_MODE: 'nothing-alive' } })
  assert.equal(result.code, 76, describe(result))
  assert.deepEqual(result.events.map((e) => e.event), ['start', 'recycle', 'drain', 'drain', 'exit'])
})

test('the native deadline does not wait for the next tick (INTERVAL 10s, DRAIN_TIMEOUT 1s, stuck JS)', async () => {
  const result = await runFixture('worker.js', {
    env: { ...QUICK, SELF_RECYCLE_INTERVAL: '10s', SELF_RECYCLE_DRAIN_TIMEOUT: '1s', SELF_RECYCLE_EXIT_CODE: '42', FIXTURE_MODE: 'busy' },
    timeoutMs: 20000
  })
  assert.equal(result.code, 42, describe(result))
  const [exit] = eventsNamed(result, 'exit')
  assert.equal(exit.forced, true)
  assert.equal(exit.code, 42, 'the native exit uses EXIT_CODE too')
  // Deadline 1 s + 0.5 s grace; waiting for the next tick would take about 10 s.
  assert.ok(result.durationMs < 6000, `exited after ${result.durationMs} ms`)
})

test('a blank variable is the default, never "off"', async () => {
  const result = await runFixture('worker.js', {
    env: { FIXTURE_MODE: 'idle', FIXTURE_IDLE_EXIT_MS: '50', SELF_RECYCLE_LOG: 'json', SELF_RECYCLE_NEAR_HEAP_LIMIT: '', SELF_RECYCLE_MAX_HEAP: ' ', SELF_RECYCLE_JITTER: '25%' }
  })
  assert.equal(result.code, 0, describe(result))
  const [start] = eventsNamed(result, 'start')
  assert.equal(start.config.nearHeapLimit, true)
  assert.equal(start.probes.nearHeapLimit, 'on')
  assert.ok(start.config.maxHeap > 0)
  assert.equal(start.config.jitter, 0.25, 'JITTER=25% is 0.25')
})

test('MAX_AGE gets the jitter too', async () => {
  const limits = new Set()
  for (let run = 0; run < 4; run++) {
    const result = await runFixture('worker.js', {
      env: { ...QUICK, FIXTURE_MODE: 'idle', SELF_RECYCLE_INTERVAL: '25ms', SELF_RECYCLE_MAX_AGE: '800ms', SELF_RECYCLE_JITTER: '50%' }
    })
    assert.equal(result.code, 75, describe(result))
    const [recycle] = eventsNamed(result, 'recycle')
    assert.equal(recycle.reason, 'age')
    assert.ok(recycle.limit >= 400 && recycle.limit <= 800, `limit ${recycle.limit}`)
    limits.add(recycle.limit)
  }
  assert.ok(limits.size > 1, `jitter spread the age limit: ${[...limits]}`)
})

test('2,000 start/stop cycles leak no file descriptor and little memory', async () => {
  const result = await runFixture('stop-start.js', { args: ['cycles', '2000'], timeoutMs: 120000 })
  assert.equal(result.code, 0, describe(result))
  const report = JSON.parse(result.lines.at(-1))
  assert.ok(report.fdGrowth <= 2, `fds grew by ${report.fdGrowth}`)
  // About 14.5 KiB a cycle used to stay behind: 28 MiB over 2,000 cycles.
  assert.ok(report.rssGrowthMiB < 6, `rss grew by ${report.rssGrowthMiB} MiB`)
})

test('sd_notify: a receiver that never reads freezes neither start() nor the sampler', async () => {
  const dir = scratch('notify-full')
  const socket = path.join(dir, 'notify.sock')
  // Binds, shrinks its buffer and never reads.
  const listener = spawn('python3', ['-c', `
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
s.bind(sys.argv[1])
print('bound', flush=True)
time.sleep(120)
`, socket], { stdio: ['ignore', 'pipe', 'inherit'] })
  try {
    await new Promise((resolve) => listener.stdout.once('data', resolve))
    const result = await runFixture('worker.js', {
      env: {
        ...QUICK,
        NOTIFY_SOCKET: socket,
        WATCHDOG_USEC: '20000',
        SELF_RECYCLE_INTERVAL: '25ms',
        SELF_RECYCLE_STRIKES: '2',
        SELF_RECYCLE_MAX_RSS: '150MiB',
        SELF_RECYCLE_MAX_HEAP: 'off',
        FIXTURE_MODE: 'leak-rss'
      },
      timeoutMs: 30000
    })
    assert.equal(result.timedOut, false, describe(result))
    assert.equal(result.code, 75, describe(result))
    assert.equal(eventsNamed(result, 'recycle')[0].reason, 'rss')
  } finally {
    listener.kill('SIGKILL')
  }
})

test('a child process does not inherit NOTIFY_SOCKET from a started worker', async () => {
  const script = `
const { execFileSync } = require('node:child_process')
require(${JSON.stringify(path.join(__dirname, '..'))}).start({ log: 'off' }).stop()
console.log(execFileSync(process.execPath, ['-e', 'console.log(process.env.NOTIFY_SOCKET ?? "unset")'], { encoding: 'utf8' }).trim())
`
  const result = spawnSync(process.execPath, ['-e', script], { env: cleanEnv({ NOTIFY_SOCKET: '/nonexistent/notify.sock' }), encoding: 'utf8' })
  assert.equal(result.status, 0, result.stderr)
  assert.equal(result.stdout.trim(), 'unset')
})

test('options as a Map, with symbol keys or an own __proto__ key are refused', () => {
  const recycle = require('..')
  assert.throws(() => recycle.start(new Map([['maxRss', '1GiB']])), { code: 'ERR_SELF_RECYCLE_CONFIG', message: /plain object, got a Map/ })
  assert.throws(() => recycle.start({ [Symbol('maxRss')]: '1GiB' }), { code: 'ERR_SELF_RECYCLE_CONFIG', message: /symbol keys/ })
  assert.throws(() => recycle.start(JSON.parse('{"__proto__": {"maxRss": "1GiB"}}')), { code: 'ERR_SELF_RECYCLE_CONFIG', variable: 'option __proto__' })
})

test('a second start() with other options warns that the first options stand', async () => {
  const script = `
const recycle = require(${JSON.stringify(path.join(__dirname, '..'))})
process.on('warning', (w) => console.log('warning:' + w.code))
const a = recycle.start({ log: 'off', interval: '1s' })
const b = recycle.start({ log: 'off', interval: '1s' })
const c = recycle.start({ log: 'off', interval: '2s' })
console.log('same:' + (a === b && b === c) + ':' + a.config.intervalMs)
setTimeout(() => a.stop(), 20)
`
  const result = spawnSync(process.execPath, ['-e', script], { env: cleanEnv(), encoding: 'utf8' })
  assert.equal(result.status, 0, result.stderr)
  assert.deepEqual(result.stdout.trim().split('\n').sort(), ['same:true:1000', 'warning:SELF_RECYCLE_ALREADY_STARTED'])
})

test('REPORT_DIR given as a symlink is not followed', async () => {
  const dir = scratch('report-link')
  const target = path.join(dir, 'target')
  fs.mkdirSync(target, { mode: 0o700 })
  const link = path.join(dir, 'reports')
  fs.symlinkSync(target, link)
  const result = await runFixture('worker.js', { env: { ...QUICK, FIXTURE_MODE: 'manual', SELF_RECYCLE_REPORT_DIR: link } })
  assert.equal(result.code, 75, describe(result))
  const [exit] = eventsNamed(result, 'exit')
  assert.match(exit.report?.error ?? '', /is a symlink; it is not followed/)
  assert.deepEqual(fs.readdirSync(target), [])
})
