'use strict'
// start()/stop() again and again (hot reload, test runners) keeps nothing per cycle on the
// V8 heap: not the start event, not a listener, not a closure. Measured after full GCs
// over 3,000 cycles: one start event left behind per cycle would be several KiB each.

const test = require('node:test')
const assert = require('node:assert/strict')
const { runFixture, describe } = require('./processes')

for (const log of ['off', 'json']) {
  test(`3,000 start()/stop() cycles keep under 512 bytes each on the heap (LOG=${log})`, { timeout: 120000 }, async () => {
    const result = await runFixture('heap-cycles.js', { nodeArgs: ['--expose-gc'], args: ['3000'], env: { SELF_RECYCLE_LOG: log }, timeoutMs: 110000 })
    assert.equal(result.code, 0, describe(result).slice(0, 2000))
    const perCycle = Number(/heap-per-cycle (-?[\d.e+-]+)/.exec(result.stdout)?.[1])
    assert.ok(Number.isFinite(perCycle), result.stdout)
    assert.ok(perCycle < 512, `${perCycle.toFixed(0)} bytes per cycle stay on the heap`)
  })
}
