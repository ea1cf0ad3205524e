'use strict'
// The JS <-> Rust seam: js/native.d.ts is what src/exports/ declares, the binding exports
// what it says, and bad input from JS is an error that names it, never a crash.

const test = require('node:test')
const assert = require('node:assert/strict')
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const binding = require('../js/native.js')
const recycle = require('..')

const root = path.join(__dirname, '..')
const script = path.join(root, 'scripts', 'native-dts.js')
const dts = fs.readFileSync(path.join(root, 'js', 'native.d.ts'), 'utf8')

function check (...extra) {
  return spawnSync(process.execPath, [script, '--check', ...extra], { cwd: root, encoding: 'utf8' })
}

test('the committed js/native.d.ts is what the Rust source generates', { timeout: 300000 }, () => {
  const result = check()
  assert.equal(result.status, 0, result.stderr)
})

test('the check fails on a js/native.d.ts that the Rust source does not generate', { timeout: 300000 }, () => {
  // Yesterday's positional signature, as a stale file would still say.
  const stale = dts.replace('guardBegin(key: string, scope: GuardScope): boolean', 'guardBegin(key: string, processScope: boolean): boolean')
  assert.notEqual(stale, dts)
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'seam-')), 'native.d.ts')
  fs.writeFileSync(file, stale)
  const result = check('--against', file)
  assert.equal(result.status, 1, result.stderr)
  assert.match(result.stderr, /is not what src\/exports\/ generates; line \d+: the committed file has ".*processScope: boolean.*", the Rust source generates ".*scope: GuardScope.*"/)
  assert.match(result.stderr, /node scripts\/native-dts\.js/)
})

test('the binding exports exactly the functions and classes js/native.d.ts declares', () => {
  const declared = [...dts.matchAll(/^export declare (?:function|class) (\w+)/gm)].map((m) => m[1]).sort()
  const exported = Object.keys(binding).filter((name) => typeof binding[name] === 'function').sort()
  assert.ok(declared.length > 10, `only ${declared.length} declarations`)
  assert.deepEqual(exported, declared)
  // Statuses cross as strings: each string enum is a union of lowercase words.
  for (const name of ['FleetStatus', 'GuardScope', 'StopDecision']) {
    assert.match(dts, new RegExp(`^export type ${name} = '[a-z]+'( \\| '[a-z]+')+$`, 'm'), name)
  }
})

test('bad input to the guard exports is an error naming the field or the value; the registry still works', () => {
  assert.throws(() => binding.guardBegin('seam-key', 'global'), { message: /value `"global"` does not match any variant of enum `GuardScope`/ })
  assert.throws(() => binding.guardEnd({ key: 'seam-key', succeeded: true }), { message: /Missing field `cost`/ })
  assert.throws(() => binding.guardTrackInit('seam-key', { durationMs: 'soon', heapDelta: 0, rssDelta: 0 }), { message: /InitCostInput\.durationMs/ })
  assert.throws(() => binding.guardReinit('seam-key'), { message: /Missing field `key`/ })
  assert.throws(() => binding.reinitEvent({ key: 'seam-key' }), { message: /Missing field `attempts`/ })
  // NaN and infinities are 0, not a poisoned sum.
  assert.equal(binding.guardTrackInit('seam-odd', { durationMs: NaN, heapDelta: Infinity, rssDelta: -Infinity }), 1)
  assert.equal(binding.guardBegin('seam-key', 'thread'), true)
  binding.guardEnd({ key: 'seam-key', succeeded: true, cost: { durationMs: 2, heapDelta: -10, rssDelta: 4096 } })
  const stats = binding.guardStats()
  assert.equal(stats.find((s) => s.key === 'seam-key').inits, 1)
  const odd = stats.find((s) => s.key === 'seam-odd')
  assert.ok(odd && Number.isFinite(odd.initMs), JSON.stringify(odd))
  const event = binding.reinitEvent({ key: 'seam-key', attempts: 2, fromSite: 1, cached: true, callSite: 'here (file.js:1:2)', stack: 'at here', uptimeMs: 1000, heapUsed: 1, heapLimit: 2 })
  assert.equal(event.event, 'reinit')
  assert.equal(event.key, 'seam-key')
  assert.equal(event.attempts, 2)
})

test('bad input to a running recycler is an error naming the field or the value; the typed answers', () => {
  const r = recycle.start({ log: 'off', interval: '50ms' })
  try {
    const kNative = Object.getOwnPropertySymbols(r).find((symbol) => symbol.description === 'native')
    const native = r[kNative]
    assert.ok(native instanceof binding.NativeRecycler)
    assert.throws(() => native.fleetAnswer({ status: 'maybe' }), { message: /value `"maybe"` does not match any variant of enum `FleetStatus`/ })
    assert.throws(() => native.fleetAnswer('granted'), { message: /Missing field `status`|Object/ })
    assert.throws(() => native.writeBesideReport({ extension: '../x', text: '' }), { message: /extension "\.\.\/x" is not a file extension \(ASCII letters and digits\)/ })
    assert.throws(() => native.setExpectedDrain({ p90Ms: 'slow', youngestStartedMs: 0, concurrent: false }), { message: /TrackedWorkInput\.p90Ms/ })
    assert.throws(() => native.drainFinished({ inFlight: 0, drained: true }), { message: /Missing field `errors`/ })
    assert.throws(() => native.reportHeap({ usedHeapSize: 1 }), { message: /Missing field `totalHeapSize`/ })
    assert.throws(() => native.stormEvent({ fleet: 'f' }), { message: /Missing field `recycles`/ })
    // Well-formed: a grant nobody waits for, no REPORT_DIR, no work in flight.
    assert.throws(() => native.fleetAnswer({ status: 'granted' }), { message: /Missing field `why`/ })
    assert.equal(native.fleetAnswer({ status: 'granted', why: null }), false)
    assert.equal(native.fleetAnswer({ status: 'wait', why: 'held by another member' }), false)
    assert.equal(native.writeBesideReport({ extension: 'heapprofile', text: '{}' }), null)
    native.setExpectedDrain(null)
    native.reportHeap({ usedHeapSize: 1, totalHeapSize: 2, heapSizeLimit: 3 })
    const warning = native.fleetWarningEvent({ fleet: 'seam', code: 'mismatch', reason: 'members disagree', detail: null })
    assert.equal(warning.event, 'warning')
    assert.equal(warning.code, 'mismatch')
    // Without FLEET_STORM_GAP (the default) js/fleet.js gives gapMs: null.
    const storm = native.stormEvent({ fleet: 'seam', recycles: 5, threshold: 4, windowMs: 60000, reasons: { rss: 5 }, hosts: { a: 5 }, medianUptimeMs: null, gapMs: null })
    assert.equal(storm.event, 'storm')
    assert.equal(storm.recycles, 5)
    assert.equal(storm.gapMs, null)
    assert.equal(r.stats().state, 'running')
  } finally {
    r.stop()
  }
})
