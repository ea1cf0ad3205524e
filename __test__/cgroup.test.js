'use strict'
// In a real memory cgroup: a worker is recycled before the kernel's OOM killer, whatever
// its warm-up and MIN_UPTIME. Needs root and a memory cgroup (v1 here, v2 on most hosts).

const test = require('node:test')
const assert = require('node:assert/strict')
const { spawn } = require('node:child_process')
const path = require('node:path')
const { FIXTURES, cleanEnv, parseEvents } = require('./processes')
const { memoryCgroupUnavailable, createMemoryCgroup, inCgroup } = require('./cgroup')

const MIB = 1024 * 1024
const unavailable = memoryCgroupUnavailable()

function runInCgroup (limitMiB, env) {
  const cgroup = createMemoryCgroup('self-recycle-test', limitMiB * MIB)
  const [command, args] = inCgroup(cgroup.procs, process.execPath, [path.join(FIXTURES, 'cgroup-grow.js')])
  return new Promise((resolve) => {
    const child = spawn(command, args, { env: cleanEnv({ SELF_RECYCLE_LOG: 'json', ...env }), stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    const timer = setTimeout(() => child.kill('SIGKILL'), 60000)
    child.stdout.on('data', (chunk) => { stdout += chunk })
    child.stderr.on('data', (chunk) => { stderr += chunk })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      cgroup.remove()
      resolve({ code, signal, stdout, events: parseEvents(stderr), dump: `code=${code} signal=${signal}\n${stdout}\n${stderr}` })
    })
  })
}

test('a crossing during warm-up does not disable the limit: recycled, not OOM-killed', { skip: unavailable || false }, async () => {
  // 300 MiB cgroup, default MAX_RSS (90% = 270 MiB); the worker crosses it at ~5 s,
  // before the end of a 6 s warm-up, and would reach the cgroup limit at ~15 s.
  const result = await runInCgroup(300, { FIXTURE_START_MIB: '255', FIXTURE_RATE_MIB: '3', SELF_RECYCLE_WARMUP: '6s', SELF_RECYCLE_MIN_UPTIME: '6s' })
  assert.equal(result.signal, null, `killed: ${result.dump}`)
  assert.equal(result.code, 75, result.dump)
  assert.equal(result.events.filter((e) => e.event === 'misconfigured').length, 0, result.dump)
  const recycle = result.events.find((e) => e.event === 'recycle')
  assert.equal(recycle.reason, 'rss')
  assert.equal(recycle.limit, Math.floor(300 * MIB * 0.9))
  assert.match(result.stdout, /drain-hook/)
})

test('the hard ceiling (95% of the cgroup) recycles a fast leak before MIN_UPTIME', { skip: unavailable || false }, async () => {
  // 10 MiB/s from 200 MiB in a 300 MiB cgroup: the OOM killer would strike at ~10 s, long
  // before the default MIN_UPTIME of 30 s.
  const result = await runInCgroup(300, { FIXTURE_START_MIB: '200', FIXTURE_RATE_MIB: '10' })
  assert.equal(result.signal, null, `killed: ${result.dump}`)
  assert.equal(result.code, 75, result.dump)
  const recycle = result.events.find((e) => e.event === 'recycle')
  assert.equal(recycle.reason, 'rss')
  assert.equal(recycle.ceiling, true)
  assert.equal(recycle.limit, Math.floor(300 * MIB * 0.95))
  assert.ok(recycle.uptimeMs < 30000)
  assert.match(recycle.msg, /hard ceiling/)
})

test('the control: without self-recycle the kernel OOM-kills the same worker', { skip: unavailable || false }, async () => {
  const result = await runInCgroup(300, { FIXTURE_START_MIB: '200', FIXTURE_RATE_MIB: '10', SELF_RECYCLE_DISABLE: '1' })
  assert.equal(result.signal, 'SIGKILL', result.dump)
})
