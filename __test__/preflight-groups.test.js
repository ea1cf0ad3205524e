'use strict'
// `self-recycle preflight` and what it leaves behind, in real processes: a check it cannot
// measure is inconclusive; the worker's whole process group (its children, a wrapping
// shell), the --load command and the temp directory are gone when it returns, also after
// SIGTERM, SIGINT or SIGHUP; its stdout holds only its verdict.

const test = require('node:test')
const assert = require('node:assert/strict')
const { spawn } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const { FIXTURES, cleanEnv } = require('./processes')

const cli = path.join(__dirname, '..', 'js', 'cli.js')
const worker = path.join(FIXTURES, 'preflight-worker.js')

/**
 * Runs preflight; `onLine(line, child)` sees each stderr line as it comes (markers).
 * Resolves with the exit code, the output and the markers the worker printed.
 */
function preflight (args, { env = {}, command = [process.execPath, worker], onLine } = {}) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cli, 'preflight', ...args, '--', ...command], {
      env: cleanEnv({ SELF_RECYCLE_LOG: 'off', SELF_RECYCLE_MAX_RSS: '400MiB', FIXTURE_LIMIT_MIB: '400', FIXTURE_MODE: 'clean', ...env }),
      stdio: ['ignore', 'pipe', 'pipe']
    })
    let stdout = ''
    let stderr = ''
    let partial = ''
    const markers = {}
    child.stdout.on('data', (chunk) => { stdout += chunk })
    child.stderr.on('data', (chunk) => {
      stderr += chunk
      const lines = (partial + chunk).split('\n')
      partial = lines.pop()
      for (const line of lines) {
        const match = /^\[(?:worker|load)\] (worker-pid|grandchild-pid|status-file|load-pid) (.+)$/.exec(line)
        if (match) markers[match[1]] = match[2]
        onLine?.(line, child, markers)
      }
    })
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr, markers, dump: `code=${code} signal=${signal}\nstdout:\n${stdout}\nstderr:\n${stderr}` }))
  })
}

/**
 * Gone: no such process, or a zombie. An orphan is re-parented to PID 1; an init that does
 * not reap (this container's does not) keeps its zombie, which kill(pid, 0) still finds.
 */
function gone (pid) {
  try {
    process.kill(Number(pid), 0)
  } catch (error) {
    if (error.code === 'ESRCH') return true
    throw error
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2)[0] === 'Z'
  } catch {
    return true
  }
}

test('a slope that cannot be measured (no major GC in the window, --no-gc) is inconclusive and fails; --allow-inconclusive passes', async () => {
  const result = await preflight(['--window', '2s', '--max-slope', '5MiB/min', '--no-gc', '--json'])
  assert.equal(result.code, 1, result.dump)
  const report = JSON.parse(result.stdout)
  assert.equal(report.passed, false)
  assert.equal(report.verdict, 'inconclusive')
  assert.match(report.inconclusive[0], /post-GC heap slope: not measurable, \d+ major GC\(s\) in the window/)
  const text = await preflight(['--window', '2s', '--max-slope', '5MiB/min', '--no-gc'])
  assert.equal(text.code, 1, text.dump)
  assert.match(text.stdout, /preflight inconclusive/)
  assert.doesNotMatch(text.stdout, /preflight passed/)
  const allowed = await preflight(['--window', '2s', '--max-slope', '5MiB/min', '--no-gc', '--allow-inconclusive', '--json'])
  assert.equal(allowed.code, 0, allowed.dump)
  assert.equal(JSON.parse(allowed.stdout).verdict, 'passed')
})

test('by default the worker gets full GCs during the window: an idle worker\'s slope is measured', async () => {
  const result = await preflight(['--window', '2s', '--max-slope', '5MiB/min', '--json'])
  assert.equal(result.code, 0, result.dump)
  const report = JSON.parse(result.stdout)
  assert.equal(report.verdict, 'passed')
  assert.equal(report.forcedGc, true)
  assert.ok(report.figures.postGcPoints >= 3, `${report.figures.postGcPoints} points`)
  assert.equal(typeof report.figures.postGcSlopeBytesPerMin, 'number')
})

test('the worker\'s own children are gone when preflight returns, and so is its temp directory', async () => {
  const result = await preflight(['--window', '1s'], { env: { FIXTURE_CHILD: '1' } })
  assert.equal(result.code, 0, result.dump)
  const { 'worker-pid': pid, 'grandchild-pid': grandchild, 'status-file': file } = result.markers
  assert.ok(pid && grandchild && file, result.dump)
  assert.ok(gone(pid), `worker ${pid} survived`)
  assert.ok(gone(grandchild), `the worker's child ${grandchild} survived`)
  assert.equal(fs.existsSync(path.dirname(file)), false, 'temp directory removed')
})

test('a worker wrapped in a shell (bash -c "node w.js; echo after") is stopped with its shell', async () => {
  const result = await preflight(['--window', '1s'], {
    env: { FIXTURE_CHILD: '1' },
    command: ['/bin/sh', '-c', `"${process.execPath}" "${worker}"; echo after-the-worker`]
  })
  assert.equal(result.code, 0, result.dump)
  assert.ok(gone(result.markers['worker-pid']), 'worker survived')
  assert.ok(gone(result.markers['grandchild-pid']), 'its child survived')
  assert.doesNotMatch(result.stderr, /after-the-worker/, 'the shell went on after its worker')
})

for (const [signal, number] of [['SIGTERM', 15], ['SIGINT', 2], ['SIGHUP', 1]]) {
  test(`${signal} to preflight stops the worker's group and the load command, removes the temp directory, exits ${128 + number}`, async () => {
    let sent = false
    const result = await preflight(['--window', '60s', '--load', `"${process.execPath}" -e "console.log('load-pid', process.pid); setInterval(() => {}, 1000)"`], {
      env: { FIXTURE_CHILD: '1' },
      onLine: (line, child, markers) => {
        // Signal once the worker's child and the load command are known to run.
        if (!sent && markers['grandchild-pid'] && markers['load-pid']) {
          sent = true
          child.kill(signal)
        }
      }
    })
    assert.equal(sent, true, result.dump)
    assert.equal(result.code, 128 + number, result.dump)
    assert.match(result.stdout, new RegExp(`preflight received ${signal}`))
    for (const name of ['worker-pid', 'grandchild-pid', 'load-pid']) assert.ok(gone(result.markers[name]), `${name} ${result.markers[name]} survived`)
    assert.equal(fs.existsSync(path.dirname(result.markers['status-file'])), false, 'temp directory removed')
  })
}

test('--json: stdout is preflight\'s one JSON object; the worker\'s lines go to stderr, prefixed', async () => {
  const result = await preflight(['--window', '1s', '--json'], { env: { FIXTURE_NOISE: '1' } })
  assert.equal(result.code, 0, result.dump)
  const report = JSON.parse(result.stdout) // throws if a worker line got in
  assert.equal(report.verdict, 'passed')
  assert.match(result.stderr, /^\[worker\] \{"level":30,"msg":"a log line of the app"\}$/m)
  assert.match(result.stderr, /^\[worker\] an error line of the app$/m)
  const text = await preflight(['--window', '1s'], { env: { FIXTURE_NOISE: '1' } })
  assert.equal(text.code, 0, text.dump)
  assert.doesNotMatch(text.stdout, /a log line|an error line|worker-pid/)
})

test('--load runs beside the worker and is stopped with it; a load command that fails fails the pre-flight', async () => {
  const result = await preflight(['--window', '1s', '--load', `"${process.execPath}" -e "console.log('load-pid', process.pid); setInterval(() => {}, 1000)"`])
  assert.equal(result.code, 0, result.dump)
  assert.ok(result.markers['load-pid'], result.dump)
  assert.ok(gone(result.markers['load-pid']), 'the load command survived')
  const failing = await preflight(['--window', '30s', '--load', 'exit 7'])
  assert.equal(failing.code, 1, failing.dump)
  assert.match(failing.stdout, /the load command exited with code 7 before the end of the warm-up/)
  assert.ok(gone(failing.markers['worker-pid']))
})

test('a worker command that does not exist fails, saying so', async () => {
  const result = await preflight(['--window', '1s'], { command: ['/nonexistent/self-recycle-worker'] })
  assert.equal(result.code, 1, result.dump)
  assert.match(result.stdout, /the worker could not start: spawn \/nonexistent\/self-recycle-worker ENOENT/)
})
