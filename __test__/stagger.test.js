'use strict'
// Sibling workers sharing STAGGER_DIR recycle one at a time, STAGGER_GAP apart.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawn } = require('node:child_process')
const { cleanEnv, parseEvents, FIXTURES } = require('./processes')

function sibling (env, onLine) {
  const child = spawn(process.execPath, [path.join(FIXTURES, 'worker.js')], {
    env: cleanEnv({
      FIXTURE_MODE: env.FIXTURE_MODE || 'idle',
      FIXTURE_IDLE_EXIT_MS: '60000',
      SELF_RECYCLE_INTERVAL: '50ms',
      SELF_RECYCLE_MIN_UPTIME: '0',
      SELF_RECYCLE_WARMUP: '0',
      SELF_RECYCLE_JITTER: '0%',
      ...env
    }),
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let stderr = ''
  child.stdout.on('data', (chunk) => { for (const line of String(chunk).split('\n')) if (line) onLine?.(line, child) })
  child.stderr.on('data', (chunk) => { stderr += chunk })
  const done = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal, events: parseEvents(stderr), stderr })))
  return { child, done }
}

const recycleTimes = (results) => results
  .map((r) => r.events.find((e) => e.event === 'recycle'))
  .filter(Boolean)
  .map((e) => Date.parse(e.time))
  .sort((a, b) => a - b)

test('4 siblings crossing a limit at once recycle one at a time, at least STAGGER_GAP apart', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-stagger-'))
  try {
    const env = { SELF_RECYCLE_MAX_AGE: '300ms', SELF_RECYCLE_STAGGER_DIR: dir, SELF_RECYCLE_STAGGER_GAP: '1s', FIXTURE_PRINT_STAGGER_STAMP: '1' }
    const runs = [0, 1, 2, 3].map(() => {
      const run = { admitted: null }
      run.done = sibling(env, (line) => {
        if (line.startsWith('admitted:')) run.admitted = Number(line.slice('admitted:'.length))
      }).done
      return run
    })
    const results = await Promise.all(runs.map((run) => run.done))
    for (const result of results) assert.equal(result.code, 75, result.stderr)
    assert.equal(recycleTimes(results).length, 4)
    // Admissions, on the clock the queue checks: an event is rendered a moment later, and a
    // loaded machine stretches that moment differently for each sibling.
    const siblings = runs.map((run, i) => {
      const recycle = results[i].events.find((e) => e.event === 'recycle')
      assert.equal(recycle.stagger, 'granted')
      assert.ok(Number.isFinite(run.admitted), `sibling ${i} printed no admission`)
      return { admitted: run.admitted, waited: recycle.staggerWaitMs, due: run.admitted - recycle.staggerWaitMs }
    }).sort((a, b) => a.admitted - b.admitted)
    const gaps = siblings.map((s) => s.admitted - siblings[0].admitted)
    for (let i = 1; i < siblings.length; i++) {
      assert.ok(siblings[i].admitted - siblings[i - 1].admitted >= 1000, `admissions at ${gaps} ms`)
      // Due before the previous sibling's gap ended: it queued, and its wait says so.
      if (siblings[i].due < siblings[i - 1].admitted + 1000 - 50) assert.ok(siblings[i].waited > 0, JSON.stringify(siblings))
    }
    assert.ok(siblings.some((s) => s.waited >= 900), `no sibling queued: ${JSON.stringify(siblings)}`)
    const lock = fs.statSync(path.join(dir, 'recycle.lock'))
    assert.equal(lock.mode & 0o777, 0o600)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('a sibling killed with SIGKILL while holding the lock does not block the others', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-stagger-'))
  try {
    const env = {
      SELF_RECYCLE_MAX_AGE: '300ms',
      SELF_RECYCLE_STAGGER_DIR: dir,
      SELF_RECYCLE_STAGGER_GAP: '500ms',
      SELF_RECYCLE_DRAIN_TIMEOUT: '60s',
      FIXTURE_MODE: 'hang-hook-first',
      FIXTURE_FIRST_MARKER: path.join(dir, 'first'),
      FIXTURE_PRINT_STAGGER_STAMP: '1'
    }
    const admitted = []
    let killed = null
    const started = Date.now()
    const siblings = [0, 1, 2, 3].map(() => sibling(env, (line, child) => {
      if (line.startsWith('admitted:')) admitted.push(Number(line.slice('admitted:'.length)))
      // The first one admitted hangs in its drain hook: kill it there, lock held.
      if (line === 'hook-hangs' && killed === null) {
        killed = child.pid
        child.kill('SIGKILL')
      }
    }))
    const results = await Promise.all(siblings.map((s) => s.done))
    const victim = results.filter((r) => r.signal === 'SIGKILL')
    assert.equal(victim.length, 1)
    const others = results.filter((r) => r.signal !== 'SIGKILL')
    assert.equal(others.length, 3)
    // The killed holder's lock vanished with it: every survivor was admitted and exited.
    for (const result of others) {
      assert.equal(result.code, 75, result.stderr)
      const recycle = result.events.find((e) => e.event === 'recycle')
      assert.equal(recycle.stagger, 'granted')
    }
    // Every admission, the killed holder's included, on the queue's own clock.
    admitted.sort((a, b) => a - b)
    assert.equal(admitted.length, 4, `admitted ${admitted}`)
    for (let i = 1; i < admitted.length; i++) assert.ok(admitted[i] - admitted[i - 1] >= 500, `admissions at ${admitted.map((t) => t - admitted[0])} ms`)
    assert.ok(Date.now() - started < 30000)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('a worker far over its limit skips the queue (the ceiling)', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-stagger-'))
  try {
    // A holder that never finishes its drain keeps the lock.
    let draining
    const holding = new Promise((resolve) => { draining = resolve })
    const holder = sibling({ SELF_RECYCLE_MAX_AGE: '200ms', SELF_RECYCLE_STAGGER_DIR: dir, SELF_RECYCLE_DRAIN_TIMEOUT: '60s', FIXTURE_MODE: 'hang-hook-on-recycle' }, (line) => { if (line.startsWith('hook:')) draining() })
    await holding
    const leaker = await sibling({
      FIXTURE_MODE: 'leak-rss',
      SELF_RECYCLE_MAX_RSS: '150MiB',
      SELF_RECYCLE_MAX_HEAP: 'off',
      SELF_RECYCLE_STRIKES: '1',
      SELF_RECYCLE_STAGGER_DIR: dir,
      SELF_RECYCLE_DRAIN_TIMEOUT: '2s'
    }).done
    holder.child.kill('SIGKILL')
    await holder.done
    assert.equal(leaker.code, 75, leaker.stderr)
    const recycle = leaker.events.find((e) => e.event === 'recycle')
    assert.match(recycle.stagger, /^bypass: over the ceiling/)
    assert.ok(recycle.value >= 1.25 * 150 * 1048576)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('a recycle waiting for its turn says so, and goes before the heap reaches V8\'s limit (not near-heap-limit)', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-stagger-'))
  try {
    const holder = sibling({ SELF_RECYCLE_MAX_AGE: '200ms', SELF_RECYCLE_STAGGER_DIR: dir, SELF_RECYCLE_DRAIN_TIMEOUT: '60s', FIXTURE_MODE: 'hang-hook-on-recycle' }, (line) => {
      if (line.startsWith('hook:')) holderDraining()
    })
    let holderDraining
    await new Promise((resolve) => { holderDraining = resolve })
    const leaker = await sibling({
      FIXTURE_MODE: 'leak-heap-slow',
      NODE_OPTIONS: '--max-old-space-size=64',
      SELF_RECYCLE_MAX_HEAP: '65%',
      SELF_RECYCLE_MAX_RSS: 'off',
      SELF_RECYCLE_STAGGER_DIR: dir,
      SELF_RECYCLE_STAGGER_MAX_WAIT: '5m',
      SELF_RECYCLE_DRAIN_TIMEOUT: '5s',
      SELF_RECYCLE_LOG: 'json'
    }).done
    holder.child.kill('SIGKILL')
    await holder.done
    assert.equal(leaker.code, 75, leaker.stderr)
    const recycle = leaker.events.find((e) => e.event === 'recycle')
    assert.equal(recycle.reason, 'heap', leaker.stderr)
    // A slow run can measure a growth that reaches the limit within a drain at once: then it
    // goes without waiting. Otherwise it said it waits, then went before V8's limit.
    const names = leaker.events.map((e) => e.event)
    if (recycle.staggerWaitMs > 0) {
      assert.ok(names.indexOf('queued') >= 0 && names.indexOf('queued') < names.indexOf('recycle'), leaker.stderr)
      const queued = leaker.events.find((e) => e.event === 'queued')
      assert.equal(queued.waitingFor, 'siblings')
      assert.equal(queued.reason, 'heap')
      assert.match(queued.why, /a sibling is recycling/)
      assert.equal(queued.maxWaitMs > 290000, true, String(queued.maxWaitMs))
      assert.match(queued.msg, /^heap recycle due .*; waiting for the siblings: a sibling is recycling \(at most/)
    }
    assert.match(recycle.stagger, /^bypass: .*80% of V8's heap limit/)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('a recycle that skipped the queue (a manual one) still counts toward the gap', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-stagger-'))
  try {
    const first = await sibling({ FIXTURE_MODE: 'manual', SELF_RECYCLE_STAGGER_DIR: dir, SELF_RECYCLE_STAGGER_GAP: '1h' }).done
    assert.equal(first.code, 75, first.stderr)
    const second = await sibling({ SELF_RECYCLE_MAX_AGE: '200ms', SELF_RECYCLE_STAGGER_DIR: dir, SELF_RECYCLE_STAGGER_GAP: '1h', SELF_RECYCLE_STAGGER_MAX_WAIT: '1s', SELF_RECYCLE_LOG: 'json' }).done
    assert.equal(second.code, 75, second.stderr)
    const queued = second.events.find((e) => e.event === 'queued')
    assert.match(queued?.why ?? '', /a sibling recycled \d+ ms ago, the gap is 3600000 ms/, second.stderr)
    assert.match(second.events.find((e) => e.event === 'recycle').stagger, /^timeout: waited/)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('a lock held forever (a hostile process) delays a recycle by STAGGER_MAX_WAIT at most', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-stagger-'))
  const holder = spawn('python3', ['-c', `
import fcntl, os, sys, time
fd = os.open(os.path.join(sys.argv[1], 'recycle.lock'), os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print('locked', flush=True)
time.sleep(120)
`, dir], { stdio: ['ignore', 'pipe', 'inherit'] })
  try {
    await new Promise((resolve) => holder.stdout.once('data', resolve))
    const result = await sibling({ SELF_RECYCLE_MAX_AGE: '200ms', SELF_RECYCLE_STAGGER_DIR: dir, SELF_RECYCLE_STAGGER_MAX_WAIT: '1s', SELF_RECYCLE_LOG: 'json' }).done
    assert.equal(result.code, 75, result.stderr)
    const recycle = result.events.find((e) => e.event === 'recycle')
    assert.match(recycle.stagger, /^timeout: waited \d+ ms \(a sibling is recycling\)$/)
    assert.ok(recycle.staggerWaitMs >= 1000 && recycle.staggerWaitMs < 5000, String(recycle.staggerWaitMs))
  } finally {
    holder.kill('SIGKILL')
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('a timestamp from the future in last-recycle is ignored', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-stagger-'))
  try {
    fs.writeFileSync(path.join(dir, 'last-recycle'), String(Date.now() + 86400000))
    const result = await sibling({ SELF_RECYCLE_MAX_AGE: '200ms', SELF_RECYCLE_STAGGER_DIR: dir, SELF_RECYCLE_STAGGER_GAP: '1h', SELF_RECYCLE_LOG: 'json' }).done
    assert.equal(result.code, 75, result.stderr)
    const recycle = result.events.find((e) => e.event === 'recycle')
    assert.equal(recycle.stagger, 'granted')
    assert.ok(recycle.staggerWaitMs < 2000, String(recycle.staggerWaitMs))
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('a STAGGER_DIR that is a symlink, shared, or cannot be created: the recycle goes ahead at once, saying why', async () => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-stagger-'))
  try {
    const target = path.join(base, 'target')
    fs.mkdirSync(target, { mode: 0o700 })
    fs.symlinkSync(target, path.join(base, 'link'))
    const shared = path.join(base, 'shared')
    fs.mkdirSync(shared)
    fs.chmodSync(shared, 0o777)
    fs.writeFileSync(path.join(base, 'file'), '')
    const cases = [
      [path.join(base, 'link'), /is a symlink; it is not followed/],
      [shared, /writable by group or others/],
      [path.join(base, 'file', 'stagger'), /cannot create/]
    ]
    for (const [dir, why] of cases) {
      const result = await sibling({ SELF_RECYCLE_MAX_AGE: '200ms', SELF_RECYCLE_STAGGER_DIR: dir, SELF_RECYCLE_LOG: 'json' }).done
      assert.equal(result.code, 75, result.stderr)
      const recycle = result.events.find((e) => e.event === 'recycle')
      assert.match(recycle.stagger, /^unavailable: /)
      assert.match(recycle.stagger, why)
      assert.ok(recycle.staggerWaitMs < 2000, String(recycle.staggerWaitMs))
    }
    assert.deepEqual(fs.readdirSync(target), [], 'nothing was written through the symlink')
  } finally {
    fs.rmSync(base, { recursive: true, force: true })
  }
})

test('a lock file owned by another user: unavailable at once, not a wait forever', { skip: process.getuid?.() !== 0 && 'needs root to give the lock file to another user' }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-stagger-'))
  try {
    const lock = path.join(dir, 'recycle.lock')
    fs.writeFileSync(lock, '', { mode: 0o600 })
    fs.chownSync(lock, 65534, 65534)
    const result = await sibling({ SELF_RECYCLE_MAX_AGE: '200ms', SELF_RECYCLE_STAGGER_DIR: dir, SELF_RECYCLE_LOG: 'json' }).done
    assert.equal(result.code, 75, result.stderr)
    const recycle = result.events.find((e) => e.event === 'recycle')
    assert.match(recycle.stagger, /^unavailable: the stagger lock belongs to uid 65534/)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('the lock is held until the holder exits: with no gap, drains still never overlap', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-stagger-'))
  try {
    const env = { SELF_RECYCLE_MAX_AGE: '300ms', SELF_RECYCLE_STAGGER_DIR: dir, SELF_RECYCLE_STAGGER_GAP: '0', SELF_RECYCLE_LOG: 'json', FIXTURE_MODE: 'slow-hook', FIXTURE_HOOK_MS: '700' }
    const results = await Promise.all([0, 1, 2].map(() => sibling(env).done))
    const spans = results.map((r) => {
      assert.equal(r.code, 75, r.stderr)
      const at = (name) => Date.parse(r.events.find((e) => e.event === name).time)
      return [at('recycle'), at('exit')]
    }).sort((a, b) => a[0] - b[0])
    for (let i = 1; i < spans.length; i++) {
      assert.ok(spans[i][0] >= spans[i - 1][1], `drain ${i} began before drain ${i - 1} ended: ${JSON.stringify(spans)}`)
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
