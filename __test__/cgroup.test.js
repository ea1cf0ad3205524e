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

/** Reads the cgroup's OOM-kill count (v1 memory.oom_control, v2 memory.events). */
function oomKills (procs) {
  const dir = path.dirname(procs)
  for (const [file, key] of [['memory.oom_control', 'oom_kill'], ['memory.events', 'oom_kill']]) {
    try {
      const line = require('node:fs').readFileSync(path.join(dir, file), 'utf8').split('\n').find((l) => l.startsWith(`${key} `))
      if (line) return Number(line.split(' ')[1])
    } catch {}
  }
  return null
}

/**
 * `count` workers in one cgroup, each restarted when it exits 75 (as Supervisor's numprocs
 * or PM2's runtime in one container would), until `recycles` recycles were seen or a
 * worker died otherwise; returns what happened and the cgroup's OOM-kill count.
 */
function siblingsInCgroup (limitMiB, count, env, recycles) {
  const cgroup = createMemoryCgroup('self-recycle-budget', limitMiB * MIB)
  const seen = []
  const deaths = []
  let stopping = false
  const children = new Set()
  return new Promise((resolve) => {
    const finish = () => {
      if (stopping) return
      stopping = true
      for (const child of children) child.kill('SIGKILL')
      const wait = () => children.size === 0 ? done() : setTimeout(wait, 20)
      wait()
    }
    const done = () => {
      const kills = oomKills(cgroup.procs)
      cgroup.remove()
      resolve({ recycles: seen, deaths, oomKills: kills })
    }
    const timer = setTimeout(finish, 90000)
    const launch = () => {
      const [command, args] = inCgroup(cgroup.procs, process.execPath, [path.join(FIXTURES, 'cgroup-grow.js')])
      const child = spawn(command, args, { env: cleanEnv({ SELF_RECYCLE_LOG: 'json', ...env }), stdio: ['ignore', 'ignore', 'pipe'] })
      children.add(child)
      let stderr = ''
      child.stderr.on('data', (chunk) => { stderr += chunk })
      child.on('close', (code, signal) => {
        children.delete(child)
        if (stopping) return
        const recycle = parseEvents(stderr).find((e) => e.event === 'recycle')
        if (code === 75 && recycle) {
          seen.push(recycle)
          if (seen.length >= recycles) { clearTimeout(timer); finish(); return }
          launch()
        } else {
          deaths.push({ code, signal, stderr: stderr.slice(-2000) })
          clearTimeout(timer)
          finish()
        }
      })
    }
    for (let i = 0; i < count; i++) launch()
  })
}

test('four workers leaking in one cgroup: the container budget recycles the largest, one at a time; no OOM kill', { skip: unavailable || false }, async () => {
  // 4 x 8 MiB/s from 60 MiB each in 480 MiB: each worker alone stays far under its own 90%
  // (432 MiB), so only the budget of the whole cgroup can act before the OOM killer.
  const result = await siblingsInCgroup(480, 4, { FIXTURE_START_MIB: '60', FIXTURE_RATE_MIB: '8', SELF_RECYCLE_MIN_UPTIME: '0', SELF_RECYCLE_WARMUP: '0' }, 4)
  assert.deepEqual(result.deaths, [], JSON.stringify(result.deaths))
  assert.equal(result.oomKills, 0)
  assert.equal(result.recycles.length, 4)
  for (const recycle of result.recycles) {
    assert.equal(recycle.reason, 'container', JSON.stringify(recycle))
    assert.equal(recycle.limit, Math.floor(480 * MIB * 0.9))
  }
})

test('page cache written through a small cgroup by an idle worker is not a reason to recycle', { skip: unavailable || false }, async () => {
  const cgroup = createMemoryCgroup('self-recycle-cache', 300 * MIB)
  const file = path.join(require('node:os').tmpdir(), `self-recycle-cache-${process.pid}`)
  const script = `
    const r = require(${JSON.stringify(path.join(__dirname, '..'))}).start({ containerMax: '80%', minUptime: 0, warmup: 0, interval: '50ms' })
    const fs = require('node:fs')
    const fd = fs.openSync(${JSON.stringify(file)}, 'w')
    const chunk = Buffer.alloc(4 << 20, 7)
    for (let i = 0; i < 256; i++) fs.writeSync(fd, chunk)
    fs.closeSync(fd)
    setTimeout(() => { console.log(JSON.stringify({ recycles: r.stats().counters.recycles, container: r.stats().container })); process.exit(0) }, 1000)
  `
  const [command, args] = inCgroup(cgroup.procs, process.execPath, ['-e', script])
  const result = await new Promise((resolve) => {
    const child = spawn(command, args, { env: cleanEnv({ SELF_RECYCLE_LOG: 'json' }), stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk) => { stdout += chunk })
    child.stderr.on('data', (chunk) => { stderr += chunk })
    child.on('close', (code) => resolve({ code, stdout, events: parseEvents(stderr), dump: `${stdout}\n${stderr}` }))
  })
  require('node:fs').rmSync(file, { force: true })
  cgroup.remove()
  assert.equal(result.code, 0, result.dump)
  const report = JSON.parse(result.stdout.trim().split('\n').pop())
  assert.equal(report.recycles, 0, result.dump)
  assert.equal(result.events.filter((e) => e.event === 'recycle').length, 0, result.dump)
  assert.ok(report.container.usage > report.container.workingSet, JSON.stringify(report.container))
})

test('an in-place resize of the cgroup is followed: a limits event, MAX_RSS re-resolved', { skip: unavailable || false }, async () => {
  const cgroup = createMemoryCgroup('self-recycle-resize', 500 * MIB)
  const script = `
    const r = require(${JSON.stringify(path.join(__dirname, '..'))}).start({ interval: '50ms' })
    r.on('limits', (event) => { console.log(JSON.stringify({ event, rss: r.stats().limits.rss })); process.exit(0) })
    console.log('ready')
    setInterval(() => {}, 1000)
  `
  const [command, args] = inCgroup(cgroup.procs, process.execPath, ['-e', script])
  const result = await new Promise((resolve) => {
    const child = spawn(command, args, { env: cleanEnv({}), stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    const timer = setTimeout(() => child.kill('SIGKILL'), 30000)
    child.stdout.on('data', (chunk) => {
      stdout += chunk
      if (String(chunk).includes('ready')) {
        const limitFile = require('node:fs').existsSync(path.join(path.dirname(cgroup.procs), 'memory.limit_in_bytes')) ? 'memory.limit_in_bytes' : 'memory.max'
        require('node:fs').writeFileSync(path.join(path.dirname(cgroup.procs), limitFile), String(300 * MIB))
      }
    })
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout }) })
  })
  cgroup.remove()
  assert.equal(result.code, 0, result.stdout)
  const { event, rss } = JSON.parse(result.stdout.trim().split('\n').pop())
  assert.deepEqual([event.previous, event.current, event.rssLimit], [500 * MIB, 300 * MIB, Math.floor(300 * MIB * 0.9)])
  assert.equal(rss, Math.floor(300 * MIB * 0.9))
  assert.match(event.msg, /limit changed from 500 MiB to 300 MiB; rss limit now 270 MiB/)
})
