'use strict'
// `npm run demo`, shortened: a real node:cluster primary restarts self-recycling workers.

const test = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const { runFixture, describe } = require('./processes')

test('the demo: workers recycle (exit 75), the primary forks fresh ones, no job lost', async () => {
  const result = await runFixture(path.join(__dirname, '..', 'examples', 'demo', 'primary.js'), {
    env: { DEMO_SECONDS: '12' },
    timeoutMs: 60000
  })
  const { stdout, stderr } = result
  assert.equal(result.code, 0, describe(result))
  assert.doesNotMatch(stderr, /FATAL ERROR|Error/)
  // A recycle may start just as the demo stops: its exit 75 then forks no fresh worker.
  const exits75 = stdout.match(/exit {6}code 75/g) || []
  const forked = stdout.match(/exit {6}code 75; forking a fresh worker/g) || []
  assert.ok(forked.length >= 2, stdout)
  const recycles = stdout.match(/recycle {3}reason=rss/g) || []
  assert.equal(recycles.length, exits75.length, `each exit 75 followed a recycle event\n${stdout}`)
  const summary = stdout.slice(stdout.indexOf('summary'))
  for (const line of summary.split('\n').filter((l) => l.includes('jobs started'))) {
    const [, started, completed, lost] = line.match(/(\d+) jobs started, (\d+) completed, (\d+) lost/)
    assert.equal(Number(started), Number(completed), line)
    assert.equal(Number(lost), 0, line)
    assert.ok(Number(completed) > 50, line)
  }
})
