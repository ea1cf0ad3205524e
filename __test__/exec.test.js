'use strict'
// RESTART=exec: a recycle re-executes the process in place (same pid, fresh memory), so a
// process manager or orchestrator sees no exit; nothing leaks across generations.

const test = require('node:test')
const assert = require('node:assert/strict')
const { spawn } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const { FIXTURES, cleanEnv, parseEvents } = require('./processes')

function run (env = {}, { stdio = ['ignore', 'pipe', 'pipe', 'pipe'], args = [], onLine } = {}) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(FIXTURES, 'exec.js'), ...args], {
      env: cleanEnv({ SELF_RECYCLE_LOG: 'json', ...env }),
      stdio
    })
    let stdout = ''
    let stderr = ''
    const timer = setTimeout(() => child.kill('SIGKILL'), 60000)
    child.stdout.on('data', (chunk) => {
      stdout += chunk
      for (const line of String(chunk).split('\n').filter(Boolean)) onLine?.(line, child)
    })
    child.stderr.on('data', (chunk) => { stderr += chunk })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      const generations = stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l))
      resolve({ code, signal, child, generations, events: parseEvents(stderr), dump: `code=${code} signal=${signal}\n${stdout}\n${stderr}` })
    })
  })
}

test('RESTART=exec: three recycles, one process: same pid, fresh memory, no descriptor or signal state carried over', async () => {
  const result = await run({}, { args: ['--flag', 'two words'] })
  assert.equal(result.code, 0, result.dump)
  const gens = result.generations
  assert.deepEqual(gens.map((g) => g.generation), [0, 1, 2, 3], result.dump)
  assert.ok(gens.every((g) => g.pid === gens[0].pid), 'same pid in every generation')
  assert.ok(gens.every((g) => JSON.stringify(g.argv) === JSON.stringify(['--flag', 'two words'])), 'the original argv')
  // fd 3 is a pipe the parent passed without close-on-exec (a stray descriptor): it must
  // not survive into a later generation.
  const stray = gens[0].fds.find((fd) => fd.startsWith('3='))?.split('=')[1]
  assert.match(stray ?? '', /^(pipe|socket):/, result.dump)
  for (const g of gens.slice(1)) assert.ok(!g.fds.some((fd) => fd.endsWith(`=${stray}`)), `generation ${g.generation} kept ${stray}: ${g.fds}`)
  // Nothing piles up from one generation to the next. (Each lists its descriptors right
  // after start(): on a loaded machine one that startup opens a moment later may or may
  // not be there yet, so one either way is not a leak; one more per generation is.)
  const counts = gens.slice(1).map((g) => g.fds.length)
  assert.ok(Math.max(...counts) - Math.min(...counts) <= 1 && counts.at(-1) <= counts[0] + 1, `descriptors per generation: ${gens.map((g) => g.fds.length)}`)
  assert.ok(gens.every((g) => g.sigIgn === gens[0].sigIgn && g.sigBlk === gens[0].sigBlk), 'signal state of a fresh node')
  // Each generation starts from a fresh image: no 20 MiB per generation piling up.
  const rss = gens.map((g) => g.rss)
  assert.ok(rss[3] < rss[0] + 16 * 1048576, `RSS per generation ${rss.map((r) => (r / 1048576).toFixed(1))}`)
  const exits = result.events.filter((e) => e.event === 'exit')
  assert.equal(exits.length, 3, result.dump)
  assert.deepEqual(exits.map((e) => [e.restart, e.generation, e.code]), [['exec', 0, 75], ['exec', 1, 75], ['exec', 2, 75]])
  assert.match(exits[0].msg, /re-executing in place as generation 1/)
  // (The last generation stops at once: its start event may or may not be out by then.)
  const starts = result.events.filter((e) => e.event === 'start' && e.generation < 3)
  assert.deepEqual(starts.map((e) => [e.generation, e.probes.restart, e.config.restart]), [[0, 'exec', 'exec'], [1, 'exec', 'exec'], [2, 'exec', 'exec']])
  assert.match(starts[0].msg, /re-executes in place after a recycle$/)
})

test('RESTART=exec: a drain stuck in JS is re-executed by the native thread at the deadline', async () => {
  const result = await run({ FIXTURE_GENERATIONS: '1', FIXTURE_HANG_HOOK: '1', FIXTURE_DRAIN_TIMEOUT: '1s' })
  assert.equal(result.code, 0, result.dump)
  assert.deepEqual(result.generations.map((g) => [g.generation, g.pid]), [[0, result.child.pid], [1, result.child.pid]])
  const exit = result.events.find((e) => e.event === 'exit')
  assert.deepEqual([exit.restart, exit.forced, exit.generation], ['exec', true, 0])
  assert.match(exit.msg, /re-executing in place as generation 1 \(exit code 75 if that fails\) from the native thread$/)
})

test('RESTART=exec with an IPC channel to the parent (cluster, PM2, fork) exits instead, and says why at start', async () => {
  const result = await run({ FIXTURE_GENERATIONS: '1' }, { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] })
  assert.equal(result.code, 75, result.dump)
  const start = result.events.find((e) => e.event === 'start')
  assert.equal(start.probes.restart, 'exit')
  assert.ok(start.warnings.some((w) => /SELF_RECYCLE_RESTART=exec cannot work here \(the process has an IPC channel/.test(w)), start.warnings)
  const exit = result.events.find((e) => e.event === 'exit')
  assert.equal(exit.restart, 'exit')
  assert.match(exit.msg, /exiting with code 75$/)
})

test('RESTART=exec: a stop signal still stops (exit 0), it does not re-execute', async () => {
  const result = await run({ FIXTURE_GENERATIONS: '1', FIXTURE_WAIT: '1' }, {
    onLine: (line, child) => { if (line === 'waiting') child.kill('SIGTERM') }
  })
  assert.equal(result.code, 0, result.dump)
  assert.deepEqual(result.generations.map((g) => g.generation), [0, 1])
  const exits = result.events.filter((e) => e.event === 'exit')
  assert.deepEqual(exits.map((e) => e.restart), ['exec', 'exit'])
})

test('SELF_RECYCLE_RESTART accepts exit or exec only', () => {
  const recycle = require('..')
  for (const value of ['reboot', 'EXEC', '1']) {
    assert.throws(() => recycle.start({ restart: value }), (error) => error.code === 'ERR_SELF_RECYCLE_CONFIG' && /restart/.test(error.message) && error.message.includes(value) && /exit or exec/.test(error.message))
  }
})
