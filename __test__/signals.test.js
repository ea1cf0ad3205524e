'use strict'
// SIGNALS=on: SIGTERM/SIGINT stop the worker (a stop, not a recycle): drain, then exit 0;
// a signal during a recycle drain joins it; a second signal exits at once; DRY_RUN does
// not keep a stop from ending; a library's re-raise joins the stop.

const test = require('node:test')
const assert = require('node:assert/strict')
const { spawn } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { FIXTURES, cleanEnv, parseEvents } = require('./processes')

/** Runs fixtures/signals.js; `onLine(line, child)` sends the signals. */
function run (mode, env, onLine) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(FIXTURES, 'signals.js')], {
      env: cleanEnv({ SELF_RECYCLE_SIGNALS: 'on', SELF_RECYCLE_LOG: 'json', SELF_RECYCLE_MIN_UPTIME: '0', FIXTURE_MODE: mode, ...env }),
      stdio: ['ignore', 'pipe', 'pipe']
    })
    let stdout = ''
    let stderr = ''
    const timer = setTimeout(() => child.kill('SIGKILL'), 20000)
    child.stdout.on('data', (chunk) => {
      stdout += chunk
      for (const line of String(chunk).split('\n').filter(Boolean)) onLine(line, child)
    })
    child.stderr.on('data', (chunk) => { stderr += chunk })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr, events: parseEvents(stderr), dump: `code=${code} signal=${signal}\n${stdout}\n${stderr}` })
    })
  })
}

test('SIGTERM stops an idle worker: stop, drain, exit 0; no recycle event, no report', async () => {
  const reports = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-stop-'))
  const result = await run('idle', { SELF_RECYCLE_REPORT_DIR: reports }, (line, child) => {
    if (line === 'ready') child.kill('SIGTERM')
  })
  assert.equal(result.code, 0, result.dump)
  assert.match(result.stdout, /hook-finished/)
  const names = result.events.map((e) => e.event)
  assert.deepEqual(names.filter((n) => n !== 'start'), ['stop', 'drain', 'drain', 'exit'], result.dump)
  const stop = result.events.find((e) => e.event === 'stop')
  assert.equal(stop.signal, 'SIGTERM')
  assert.equal(stop.joined, false)
  assert.match(stop.msg, /^SIGTERM received; stopping/)
  const exit = result.events.find((e) => e.event === 'exit')
  assert.deepEqual([exit.code, exit.drained, exit.reason, exit.signal], [0, true, 'signal', 'SIGTERM'])
  assert.match(exit.msg, /^stopping on SIGTERM: drained in \d+ ms; exiting with code 0$/)
  assert.deepEqual(fs.readdirSync(reports), [], 'a stop writes no recycle report')
})

test('a second signal of the same stop exits at once with 128 + its number', async () => {
  const result = await run('twice', {}, (line, child) => {
    if (line === 'ready') child.kill('SIGTERM')
    if (line === 'hook-started') child.kill('SIGINT')
  })
  assert.equal(result.code, 130, result.dump)
  assert.doesNotMatch(result.stdout, /hook-finished/)
  const exit = result.events.find((e) => e.event === 'exit')
  assert.equal(exit.code, 130)
  assert.equal(exit.drained, false)
  assert.match(exit.msg, /a second signal; exiting at once with code 130/)
})

test('SIGTERM during a recycle drain joins it: the tracked job finishes, then the worker stops', async () => {
  const result = await run('recycling', {}, (line, child) => {
    if (line === 'draining') child.kill('SIGTERM')
  })
  assert.equal(result.code, 0, result.dump)
  assert.match(result.stdout, /job-done/)
  const names = result.events.map((e) => e.event).filter((n) => n !== 'start')
  assert.deepEqual(names, ['recycle', 'drain', 'stop', 'drain', 'exit'], result.dump)
  assert.equal(result.events.find((e) => e.event === 'stop').joined, true)
  const exit = result.events.find((e) => e.event === 'exit')
  assert.deepEqual([exit.code, exit.drained, exit.reason, exit.signal], [0, true, 'manual', 'SIGTERM'])
})

test('DRY_RUN=1 does not keep SIGTERM or SIGINT from stopping the worker', async () => {
  for (const signal of ['SIGTERM', 'SIGINT']) {
    const result = await run('idle', { SELF_RECYCLE_DRY_RUN: '1' }, (line, child) => {
      if (line === 'ready') child.kill(signal)
    })
    assert.equal(result.code, 0, result.dump)
    assert.equal(result.events.find((e) => e.event === 'stop')?.signal, signal)
  }
})

test("a library's re-raise of the signal (Nest's shutdown hooks) joins the stop, deterministically", async () => {
  for (let run_ = 0; run_ < 5; run_++) {
    const result = await run('reraise', {}, (line, child) => {
      if (line === 'ready') child.kill('SIGTERM')
    })
    assert.equal(result.code, 0, result.dump)
    assert.match(result.stdout, /library-closed/)
    assert.match(result.stdout, /hook-finished/)
    assert.equal(result.events.filter((e) => e.event === 'stop').length, 1, result.dump)
    assert.equal(result.events.find((e) => e.event === 'exit')?.code, 0)
  }
})

test('a stuck worker still stops: the stop drain is bounded by DRAIN_TIMEOUT from the signal, exit 143', async () => {
  const result = await run('stuck', { SELF_RECYCLE_DRAIN_TIMEOUT: '2s' }, (line, child) => {
    if (line === 'ready') child.kill('SIGTERM')
  })
  assert.equal(result.code, 143, result.dump)
  const names = result.events.map((e) => e.event).filter((n) => n !== 'start')
  assert.deepEqual(names, ['stop', 'exit'], result.dump)
  const exit = result.events.find((e) => e.event === 'exit')
  assert.deepEqual([exit.code, exit.drained, exit.forced, exit.signal], [143, false, true, 'SIGTERM'], result.dump)
  assert.match(exit.msg, /^stopping on SIGTERM: drain did not finish within 2(\.0)?s/)
})

test('a second signal ends a stuck worker at once (128 + its number)', async () => {
  const result = await run('stuck', { SELF_RECYCLE_DRAIN_TIMEOUT: '60s' }, (line, child) => {
    if (line !== 'ready') return
    child.kill('SIGTERM')
    // Past the 100 ms in which the same signal counts as the same stop.
    setTimeout(() => child.kill('SIGINT'), 300)
  })
  assert.equal(result.code, 130, result.dump)
  const exit = result.events.find((e) => e.event === 'exit')
  assert.equal(exit?.code, 130, result.dump)
  assert.match(exit.msg, /a second signal; exiting at once with code 130/)
})

test('the same signal twice within 100 ms (timeout(1) signals the child and its group) is one stop', async () => {
  for (let attempt = 0; attempt < 3; attempt++) {
    const result = await run('twice', {}, (line, child) => {
      if (line !== 'ready') return
      child.kill('SIGTERM')
      child.kill('SIGTERM')
    })
    assert.equal(result.code, 0, result.dump)
    assert.match(result.stdout, /hook-finished/, result.dump)
    assert.equal(result.events.filter((e) => e.event === 'stop').length, 1, result.dump)
    assert.equal(result.events.find((e) => e.event === 'exit')?.code, 0, result.dump)
  }
})
