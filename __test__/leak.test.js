'use strict'
// Post-GC leak slope: a steady leak recycles; a sawtooth or a freed spike does not.

const test = require('node:test')
const assert = require('node:assert/strict')
const { runFixture, eventsNamed, describe } = require('./processes')

const ENV = {
  SELF_RECYCLE_LEAK_SLOPE: '60MiB/min',
  SELF_RECYCLE_LEAK_WINDOW: '3s',
  SELF_RECYCLE_INTERVAL: '100ms',
  SELF_RECYCLE_WARMUP: '0',
  SELF_RECYCLE_MIN_UPTIME: '0',
  SELF_RECYCLE_MAX_HEAP: 'off'
}

async function shape (name, extraEnv = {}) {
  return runFixture('leak-shapes.js', { args: [name], nodeArgs: ['--expose-gc'], env: { ...ENV, ...extraEnv }, timeoutMs: 30000 })
}

test('a steady post-GC climb emits leak, then recycles with reason leak', async () => {
  const result = await shape('leak')
  assert.equal(result.code, 75, describe(result))
  const [leak] = eventsNamed(result, 'leak')
  assert.ok(leak, describe(result))
  assert.ok(leak.slopeBytesPerMin > 60 * 1024 * 1024, `slope ${leak.slopeBytesPerMin}`)
  assert.equal(leak.windowMs, 3000)
  assert.ok(leak.points >= 6)
  const names = result.events.map((e) => e.event)
  assert.ok(names.indexOf('leak') < names.indexOf('recycle'), 'leak precedes the recycle')
  assert.equal(eventsNamed(result, 'recycle')[0].reason, 'leak')
})

for (const name of ['sawtooth', 'spike']) {
  test(`a ${name} that returns to the same post-GC level is not a leak`, async () => {
    const result = await shape(name)
    assert.equal(result.code, 0, describe(result))
    assert.ok(result.lines.includes(`done:${name}:true`), describe(result))
    assert.equal(eventsNamed(result, 'leak').length, 0, describe(result))
    assert.equal(eventsNamed(result, 'recycle').length, 0)
  })
}

test('the JS fallback probe feeds the leak detector from gc performance entries', async () => {
  const result = await shape('leak', { SELF_RECYCLE_TEST_FORCE_JS_HEAP_PROBE: '1' })
  assert.equal(result.code, 75, describe(result))
  assert.equal(eventsNamed(result, 'start')[0].probes.v8, 'js')
  assert.equal(eventsNamed(result, 'recycle')[0].reason, 'leak')
})
