'use strict'
// LOG modes: json lines on stderr unless the app listens; pretty; off.

const test = require('node:test')
const assert = require('node:assert/strict')
const { runFixture, eventsNamed, describe } = require('./processes')

const FAST = { SELF_RECYCLE_INTERVAL: '25ms', FIXTURE_MODE: 'manual' }

test('LOG=auto: an event the app listens to goes to the app, the rest to stderr', async () => {
  const result = await runFixture('listener.js', { env: { SELF_RECYCLE_INTERVAL: '25ms' } })
  assert.equal(result.code, 75, describe(result))
  assert.ok(result.lines.includes('samples:3:true'), describe(result))
  const appLogged = result.lines.filter((l) => l.startsWith('app-log:')).map((l) => JSON.parse(l.slice(8)))
  assert.equal(appLogged.length, 1)
  assert.equal(appLogged[0].event, 'recycle')
  assert.equal(appLogged[0].reason, 'manual')
  const names = result.events.map((e) => e.event)
  assert.ok(!names.includes('recycle'), 'recycle went to the app only')
  assert.ok(!names.includes('sample'), 'samples went to the app only')
  assert.deepEqual(names, ['start', 'drain', 'drain', 'exit'])
})

test('LOG=json logs even what the app listens to', async () => {
  const result = await runFixture('listener.js', { env: { SELF_RECYCLE_INTERVAL: '25ms', SELF_RECYCLE_LOG: 'json' } })
  assert.equal(result.code, 75, describe(result))
  assert.equal(eventsNamed(result, 'recycle').length, 1)
  assert.equal(eventsNamed(result, 'sample').length, 3)
})

test('LOG=pretty: one human line per event', async () => {
  const result = await runFixture('worker.js', { env: { ...FAST, SELF_RECYCLE_LOG: 'pretty' } })
  assert.equal(result.code, 75, describe(result))
  assert.equal(result.events.length, 0)
  const lines = result.stderr.split('\n').filter(Boolean)
  assert.deepEqual(lines.map((l) => l.split(' ')[2]), ['start:', 'recycle:', 'drain:', 'drain:', 'exit:'])
  for (const line of lines) assert.match(line, /^\d{4}-\d\d-\d\dT\S+Z self-recycle\[\d+\] [a-z]+: .+/)
  assert.match(lines[1], /recycle: manual recycle requested; draining; no heap growth beyond sampling noise since the (baseline|process started)$/)
})

test('LOG=off: nothing on stderr, the recycle still happens', async () => {
  const result = await runFixture('worker.js', { env: { ...FAST, SELF_RECYCLE_LOG: 'off' } })
  assert.equal(result.code, 75, describe(result))
  assert.equal(result.stderr, '')
})

test('LOG=off applies to the native thread too', async () => {
  const result = await runFixture('worker.js', {
    env: { SELF_RECYCLE_LOG: 'off', FIXTURE_MODE: 'busy', SELF_RECYCLE_DRAIN_TIMEOUT: '300ms' }
  })
  assert.equal(result.code, 75, describe(result))
  assert.equal(result.stderr, '')
})

test('LOG=pretty from the native thread', async () => {
  const result = await runFixture('worker.js', {
    env: { SELF_RECYCLE_LOG: 'pretty', FIXTURE_MODE: 'busy', SELF_RECYCLE_DRAIN_TIMEOUT: '300ms' }
  })
  assert.equal(result.code, 75, describe(result))
  assert.match(result.stderr, /self-recycle\[\d+\] exit: drain did not finish within 300ms/)
})

test('before start(), LOG is read as the settings table reads it: off and pretty (blank-padded) apply, a malformed one is auto', async () => {
  const reinitLines = (result) => result.stderr.split('\n').filter((l) => l.includes('reinit'))
  const off = await runFixture('guard-reinit.js', { env: { SELF_RECYCLE_LOG: 'off' } })
  assert.equal(off.code, 0, describe(off))
  assert.deepEqual(reinitLines(off), [])
  const pretty = await runFixture('guard-reinit.js', { env: { SELF_RECYCLE_LOG: ' pretty ' } })
  assert.equal(pretty.code, 0, describe(pretty))
  assert.equal(reinitLines(pretty).length, 2, describe(pretty))
  assert.ok(reinitLines(pretty).every((l) => /^\S+ self-recycle\[\d+\] reinit: /.test(l)), describe(pretty))
  for (const mode of ['', 'loud']) {
    const auto = await runFixture('guard-reinit.js', { env: { SELF_RECYCLE_LOG: mode } })
    assert.equal(eventsNamed(auto, 'reinit').length, 2, `${JSON.stringify(mode)}: ${describe(auto)}`)
  }
})
