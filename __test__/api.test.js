'use strict'
// Misuse of the JS API gets a clear TypeError, never a crash; stats() reports the state.

const test = require('node:test')
const assert = require('node:assert/strict')
const recycle = require('..')

test('bad arguments to the recycler methods throw TypeErrors that say what is expected', () => {
  const r = recycle.start({ log: 'off', interval: '50ms' })
  try {
    assert.throws(() => r.onDrain('not a function'), { name: 'TypeError', message: /hook must be a function, got string/ })
    assert.throws(() => r.track(42), { name: 'TypeError', message: /expected a promise or thenable, got number/ })
    assert.throws(() => r.track(null), { name: 'TypeError', message: /got null/ })
    assert.throws(() => r.jobDone(-1), { name: 'TypeError', message: /whole number from 0, got -1/ })
    assert.throws(() => r.jobDone(1.5), { name: 'TypeError' })
    assert.throws(() => r.recycle(7), { name: 'TypeError', message: /reason must be a string, got number/ })
    assert.equal(r.jobDone(), 1)
    assert.equal(r.jobDone(4), 5)
    const unregister = r.onDrain(() => {})
    assert.equal(r.stats().drainHooks, 1)
    unregister()
    assert.equal(r.stats().drainHooks, 0)
    const tracked = Promise.resolve('value')
    assert.equal(r.track(tracked), tracked)
    const stats = r.stats()
    assert.equal(stats.state, 'running')
    assert.equal(stats.counters.jobsDone, 5)
    assert.ok(stats.sample.rss > 0 && stats.sample.heapLimit > 0)
    assert.equal(stats.limits.strikes, 3)
    // Each limit's share is computed natively, from the same sample stats() shows.
    const rss = stats.limits.rssMetric === 'anon' ? stats.sample.rssAnon : stats.sample.rss
    const values = { rss, heap: stats.sample.heapUsed, growth: rss, ceiling: rss }
    for (const name of ['rss', 'heap', 'growth', 'ceiling']) {
      assert.equal(stats.pressure[name], stats.limits[name] ? values[name] / stats.limits[name] : null, name)
    }
    assert.ok(stats.pressure.heap > 0, 'the default MAX_HEAP is in force')
    assert.equal(stats.pressureAt, 0.8)
  } finally {
    assert.equal(r.stop(), true)
  }
  assert.equal(r.stats().state, 'stopped')
  assert.equal(r.jobDone(), 0, 'a stopped recycler counts nothing')
  assert.equal(r.recycle(), false, 'nor recycles')
})
