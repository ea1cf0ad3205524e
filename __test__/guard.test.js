'use strict'
// once(): one init per key, shared pending promises, no cached failures, native registry.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { runFixture, eventsNamed, describe } = require('./processes')
const recycle = require('..')

const statsOf = (key) => recycle.guardStats().find((s) => s.key === key)

test('a sync factory runs once; every caller gets the same value', () => {
  let runs = 0
  const factory = () => ({ id: ++runs })
  const first = recycle.once('sync-key', factory)
  for (let i = 0; i < 100; i++) assert.equal(recycle.once('sync-key', factory), first)
  assert.equal(runs, 1)
  const stats = statsOf('sync-key')
  assert.equal(stats.inits, 1)
  assert.equal(stats.hits, 100)
  assert.equal(stats.reinitAttempts, 0)
  assert.equal(stats.scope, 'thread')
})

test('1,000 concurrent callers of one async key share one init', async () => {
  let runs = 0
  const factory = async () => {
    runs++
    await new Promise((resolve) => setTimeout(resolve, 20))
    return { pool: runs }
  }
  const promises = Array.from({ length: 1000 }, () => recycle.once('async-key', factory))
  assert.ok(promises.every((p) => p === promises[0]), 'the same pending promise')
  const values = await Promise.all(promises)
  assert.equal(runs, 1)
  assert.ok(values.every((v) => v === values[0]))
  assert.equal(await recycle.once('async-key', factory), values[0])
  assert.equal(statsOf('async-key').inits, 1)
})

test('a rejected init reaches every waiter, is not cached, and the next call retries', async () => {
  let runs = 0
  const factory = async () => {
    runs++
    await new Promise((resolve) => setTimeout(resolve, 5))
    if (runs === 1) throw new Error('database down')
    return 'connected'
  }
  const waiters = Array.from({ length: 10 }, () => recycle.once('flaky-key', factory))
  const results = await Promise.allSettled(waiters)
  assert.ok(results.every((r) => r.status === 'rejected' && r.reason.message === 'database down'))
  assert.equal(await recycle.once('flaky-key', factory), 'connected')
  assert.equal(runs, 2)
  const stats = statsOf('flaky-key')
  assert.equal(stats.failures, 1)
  assert.equal(stats.inits, 1)
})

test('a sync factory that throws is retried on the next call', () => {
  let runs = 0
  const factory = () => {
    if (++runs === 1) throw new Error('first try fails')
    return 'ok'
  }
  assert.throws(() => recycle.once('throwing-key', factory), /first try fails/)
  assert.equal(recycle.once('throwing-key', factory), 'ok')
  assert.equal(statsOf('throwing-key').failures, 1)
})

test('memory attribution: heap and RSS growth during init are charged to the key', () => {
  const heavy = recycle.once('heavy-key', () => ({
    buffer: Buffer.alloc(32 << 20, 1),
    objects: Array.from({ length: 200000 }, (_, i) => ({ i, name: `item-${i}` }))
  }))
  assert.equal(heavy.objects.length, 200000)
  const stats = statsOf('heavy-key')
  assert.ok(stats.rssDelta > 24 << 20, `rssDelta ${stats.rssDelta}`)
  assert.ok(stats.heapDelta > 4 << 20, `heapDelta ${stats.heapDelta}`)
  assert.ok(stats.initMs > 0)
})

test('bad input gets TypeErrors, never a native crash', () => {
  assert.throws(() => recycle.once(42, () => 1), { name: 'TypeError', message: /key must be a non-empty string, got number/ })
  assert.throws(() => recycle.once('', () => 1), { name: 'TypeError', message: /got an empty string/ })
  assert.throws(() => recycle.once('x'.repeat(1025), () => 1), { name: 'TypeError', message: /at most 1024 bytes, got 1025/ })
  assert.throws(() => recycle.once('é'.repeat(600), () => 1), { name: 'TypeError', message: /got 1200/ })
  assert.throws(() => recycle.once('k', 'not a function'), { name: 'TypeError', message: /factory must be a function, got string/ })
  assert.throws(() => recycle.once('k', null), { name: 'TypeError', message: /got null/ })
  assert.throws(() => recycle.once('k', () => 1, { scope: 'galaxy' }), { name: 'TypeError', message: /scope must be/ })
  assert.throws(() => recycle.once(Symbol('k'), () => 1), TypeError)
  assert.equal(recycle.once('x'.repeat(1024), () => 'longest'), 'longest')
  assert.equal(recycle.once('nul\u0000key', () => 'nul'), 'nul')
})

test('re-initialization attempts emit reinit with the caller stack, once per call site', async () => {
  const result = await runFixture('guard-reinit.js')
  assert.equal(result.code, 0, describe(result))
  const reinits = eventsNamed(result, 'reinit')
  assert.equal(reinits.length, 2, describe(result))
  assert.equal(reinits[0].key, 'config')
  assert.equal(reinits[0].attempts, 1)
  assert.match(reinits[0].callSite, /guard-reinit\.js:\d+:\d+/)
  for (const reinit of reinits) {
    assert.doesNotMatch(reinit.callSite, /^at /, 'the call site, not the stack line')
    assert.doesNotMatch(reinit.msg, /from at /)
  }
  assert.match(reinits[0].stack, /loadConfigModule/)
  assert.notEqual(reinits[0].callSite, reinits[1].callSite)
  const stats = JSON.parse(result.lines.at(-1))
  assert.equal(stats.inits, 1)
  assert.equal(stats.reinitAttempts, 6)
  assert.deepEqual(result.lines.slice(0, 2), ['values-identical:true', 'factory-runs:1'])
})

test('the registry survives require.cache resets and a second copy of the wrapper', async () => {
  const copy = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-copy-'))
  try {
    // A second installed copy of the package: its own js/ and package.json, the same .node.
    const js = path.join(__dirname, '..', 'js')
    fs.mkdirSync(path.join(copy, 'js'))
    fs.copyFileSync(path.join(__dirname, '..', 'package.json'), path.join(copy, 'package.json'))
    for (const file of fs.readdirSync(js)) {
      if (file.endsWith('.js')) fs.copyFileSync(path.join(js, file), path.join(copy, 'js', file))
      if (file.endsWith('.node')) fs.symlinkSync(path.join(js, file), path.join(copy, 'js', file))
    }
    const result = await runFixture('guard-reload.js', { env: { GUARD_COPY_DIR: path.join(copy, 'js') } })
    assert.equal(result.code, 0, describe(result))
    assert.deepEqual(result.lines.slice(0, 3), ['after-cache-reset:same', 'second-copy:same', 'factory-runs:1'])
    assert.equal(JSON.parse(result.lines[3]).inits, 1)
  } finally {
    fs.rmSync(copy, { recursive: true, force: true })
  }
})

test('worker threads: a value per thread, counts per process; scope process refuses a second thread', async () => {
  const result = await runFixture('guard-threads.js', { timeoutMs: 30000 })
  assert.equal(result.code, 0, describe(result))
  const report = JSON.parse(result.lines.at(-1))
  assert.deepEqual(report.threadValues, ['main', 'worker'])
  assert.equal(report.perThread.inits, 2)
  assert.equal(report.perThread.threads, 2)
  assert.equal(report.processScoped.code, 'ERR_SELF_RECYCLE_GUARD_SCOPE')
  assert.match(report.processScoped.message, /another thread already initialized it/)
  assert.equal(report.afterWorkerExit, 'worker-owned-then-free')
})

test('trackInit: unguarded inits run every time and report reinit from the second', async () => {
  const result = await runFixture('guard-track.js')
  assert.equal(result.code, 0, describe(result))
  assert.deepEqual(result.lines.slice(0, 1), ['runs:3'])
  const reinits = eventsNamed(result, 'reinit')
  assert.equal(reinits.length, 1, 'one call site')
  assert.equal(reinits[0].key, 'unguarded')
  assert.equal(JSON.parse(result.lines[1]).inits, 3)
})
