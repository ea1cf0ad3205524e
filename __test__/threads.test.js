'use strict'
// stop()/start() and worker threads: the sampler thread never outlives its isolate.

const test = require('node:test')
const assert = require('node:assert/strict')
const { runFixture, eventsNamed, describe } = require('./processes')

test('stop() joins the sampler thread; start() again works and recycles', async () => {
  const result = await runFixture('stop-start.js')
  assert.equal(result.code, 75, describe(result))
  assert.deepEqual(result.lines.slice(0, 4), [
    'running:true:threads:1',
    'same:true',
    'stopped:true:state:stopped:threads:0',
    'restarted:true:threads:1'
  ])
  assert.ok(result.lines.includes('hook'))
  assert.equal(eventsNamed(result, 'recycle')[0].reason, 'age')
})

test('40 worker threads started then terminated in a row: no hang, no crash', async () => {
  const result = await runFixture('threads.js', { args: ['40', 'terminate'], timeoutMs: 60000 })
  assert.equal(result.timedOut, false, describe(result))
  assert.equal(result.signal, null, describe(result))
  assert.equal(result.code, 0, describe(result))
  assert.ok(result.lines.includes('done:40'))
})

test('worker threads that stop and end by themselves', async () => {
  const result = await runFixture('threads.js', { args: ['20', 'natural'], timeoutMs: 60000 })
  assert.equal(result.code, 0, describe(result))
  assert.ok(result.lines.includes('done:20'))
})

test('process.exit() with a running sampler is clean (repeated)', async () => {
  for (let i = 0; i < 10; i++) {
    const result = await runFixture('worker.js', {
      env: { FIXTURE_MODE: 'idle', FIXTURE_IDLE_EXIT_MS: '30', SELF_RECYCLE_INTERVAL: '10ms' }
    })
    assert.equal(result.code, 0, describe(result))
    assert.equal(result.signal, null)
  }
})
