'use strict'
// REPORT_DIR: one JSON report per recycle, 0600, atomic, never written through a symlink.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { runFixture, eventsNamed, describe } = require('./processes')
const { snapshotDecision } = require('../js/snapshot.js')

function scratch () {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-report-'))
}

test('a recycle writes a 0600 JSON report with reason, samples, guard stats and versions', async () => {
  const dir = scratch()
  try {
    const result = await runFixture('report.js', { env: { SELF_RECYCLE_REPORT_DIR: dir, SELF_RECYCLE_INTERVAL: '20ms' } })
    assert.equal(result.code, 75, describe(result))
    const planned = result.lines[0].slice('planned:'.length)
    const [exit] = eventsNamed(result, 'exit')
    assert.equal(exit.report.path, planned)
    const stat = fs.statSync(planned)
    assert.equal(stat.mode & 0o777, 0o600)
    const report = JSON.parse(fs.readFileSync(planned, 'utf8'))
    assert.equal(report.schema, 1)
    assert.equal(report.reason, 'manual')
    assert.equal(report.recycle.detail, 'report-test')
    assert.equal(report.exit.code, 75)
    assert.ok(report.samples.length >= 3, `samples ${report.samples.length}`)
    assert.ok(report.samples.every((s) => s.rss > 0 && s.heapLimit > 0))
    assert.ok(Array.isArray(report.postGc))
    assert.equal(report.guard.find((g) => g.key === 'heavy-config').inits, 1)
    assert.equal(report.versions.node, process.version)
    assert.equal(report.versions.v8, process.versions.v8)
    assert.equal(report.config.exitCode, 75)
    assert.deepEqual(fs.readdirSync(dir).filter((f) => f.endsWith('.tmp')), [], 'no temp file left')
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('a symlink planted at the report path is replaced, its target untouched', async () => {
  const dir = scratch()
  const victim = path.join(dir, 'victim.txt')
  fs.writeFileSync(victim, 'precious')
  try {
    const result = await runFixture('report.js', { env: { SELF_RECYCLE_REPORT_DIR: dir, FIXTURE_PLANT_SYMLINK: victim } })
    assert.equal(result.code, 75, describe(result))
    const planned = result.lines[0].slice('planned:'.length)
    assert.equal(fs.readFileSync(victim, 'utf8'), 'precious')
    assert.equal(fs.lstatSync(planned).isSymbolicLink(), false)
    assert.equal(JSON.parse(fs.readFileSync(planned, 'utf8')).reason, 'manual')
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('the native thread writes the report too when JS is stuck', async () => {
  const dir = scratch()
  try {
    const result = await runFixture('worker.js', {
      env: { FIXTURE_MODE: 'busy', SELF_RECYCLE_REPORT_DIR: dir, SELF_RECYCLE_DRAIN_TIMEOUT: '300ms' }
    })
    assert.equal(result.code, 75, describe(result))
    const [exit] = eventsNamed(result, 'exit')
    assert.equal(exit.forced, true)
    const report = JSON.parse(fs.readFileSync(exit.report.path, 'utf8'))
    assert.equal(report.exit.forced, true)
    assert.deepEqual(report.exit, exit, 'the native writer logs the exit event the report holds')
    assert.equal(report.recycle.detail, 'stuck-test')
    // JS never got to complete the recycle: the draft is what is logged and reported.
    const [recycle] = eventsNamed(result, 'recycle')
    assert.deepEqual(report.recycle, recycle)
    assert.equal(recycle.topSites, undefined)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('the recycle and exit events are logged as the report holds them, sites and named jobs included', { timeout: 90000 }, async () => {
  const dir = scratch()
  try {
    const result = await runFixture('job-types.js', {
      env: { SELF_RECYCLE_REPORT_DIR: dir, SELF_RECYCLE_PROFILE: 'heap', SELF_RECYCLE_LOG: 'json', FIXTURE_SEED: '2' },
      nodeArgs: ['--expose-gc'],
      timeoutMs: 60000
    })
    assert.equal(result.code, 75, describe(result))
    const [recycle] = eventsNamed(result, 'recycle')
    const [exit] = eventsNamed(result, 'exit')
    assert.equal(eventsNamed(result, 'recycle').length, 1, describe(result))
    const report = JSON.parse(fs.readFileSync(exit.report.path, 'utf8'))
    // What JS measured is in both copies, so the comparison covers it.
    assert.ok(Array.isArray(recycle.topSites), JSON.stringify(recycle.profileSkipped))
    assert.equal(recycle.topJobs[0]?.name, 'ingest', JSON.stringify(recycle.topJobs))
    assert.match(recycle.msg, /; (most growth at .+, \d+%|no heap growth beyond sampling noise since .+); most growth from job 'ingest' \(~\d+ KiB per job, \d+%\)$/)
    assert.deepEqual(report.recycle, recycle, 'the report holds the recycle event as logged')
    assert.deepEqual(report.exit, exit, 'the report holds the exit event as logged, its own path included')
    assert.equal(report.profile.topSites.length >= recycle.topSites.length, true)
    // The app's listener got the same event.
    const heard = JSON.parse(result.lines.find((line) => line.startsWith('{')))
    assert.deepEqual(heard, { topJobs: recycle.topJobs, jobsFit: recycle.jobsFit, msg: recycle.msg })
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('too few windows to fit the named jobs: the recycle says why nobody is named (r2 null), as the report does', async () => {
  const dir = scratch()
  try {
    const result = await runFixture('job-types.js', {
      env: { SELF_RECYCLE_REPORT_DIR: dir, SELF_RECYCLE_LOG: 'json', SELF_RECYCLE_PROFILE: 'off', FIXTURE_JOBS: '40', FIXTURE_GC_EVERY: '20' },
      nodeArgs: ['--expose-gc']
    })
    assert.equal(result.code, 75, describe(result))
    const [recycle] = eventsNamed(result, 'recycle')
    const [exit] = eventsNamed(result, 'exit')
    assert.deepEqual(recycle.topJobs, [], JSON.stringify(recycle))
    assert.equal(recycle.jobsFit.r2, null, JSON.stringify(recycle.jobsFit))
    assert.match(recycle.jobsFit.why, /windows between major GCs; \d+ needed/)
    assert.equal(recycle.msg, 'manual recycle requested (test); draining', 'nobody named, nothing added')
    const report = JSON.parse(fs.readFileSync(exit.report.path, 'utf8'))
    assert.deepEqual(report.recycle, recycle)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('HEAP_SNAPSHOT=on writes a 0600 snapshot when memory allows and names it in the exit event', async () => {
  const dir = scratch()
  try {
    const result = await runFixture('report.js', {
      env: { SELF_RECYCLE_REPORT_DIR: dir, SELF_RECYCLE_HEAP_SNAPSHOT: 'on' },
      timeoutMs: 60000
    })
    assert.equal(result.code, 75, describe(result))
    const [exit] = eventsNamed(result, 'exit')
    assert.ok(exit.heapSnapshot.path, JSON.stringify(exit.heapSnapshot))
    assert.equal(fs.statSync(exit.heapSnapshot.path).mode & 0o777, 0o600)
    const head = fs.readFileSync(exit.heapSnapshot.path, 'utf8').slice(0, 200)
    assert.match(head, /"snapshot"/)
    const report = JSON.parse(fs.readFileSync(exit.report.path, 'utf8'))
    assert.equal(report.exit.heapSnapshot.path, exit.heapSnapshot.path)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('the snapshot is skipped, with the reason, when free memory is under twice the heap', () => {
  assert.deepEqual(snapshotDecision(100 << 20, 150 << 20), { write: false, reason: 'needs about 200 MiB free, 150 MiB available' })
  assert.deepEqual(snapshotDecision(100 << 20, 250 << 20), { write: true })
  assert.equal(snapshotDecision(1, null).write, false)
})

test('HEAP_SNAPSHOT on a full disk leaves no partial snapshot behind', { skip: process.getuid?.() !== 0 && 'mounting a small tmpfs needs root' }, async () => {
  const dir = scratch()
  const { execFileSync } = require('node:child_process')
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0700', 'tmpfs', dir])
  try {
    const result = await runFixture('report.js', { env: { SELF_RECYCLE_REPORT_DIR: dir, SELF_RECYCLE_HEAP_SNAPSHOT: 'on' }, timeoutMs: 60000 })
    assert.equal(result.code, 75, describe(result))
    const [exit] = eventsNamed(result, 'exit')
    assert.match(exit.heapSnapshot.skipped ?? '', /could not write|needs about/, JSON.stringify(exit.heapSnapshot))
    assert.deepEqual(fs.readdirSync(dir).filter((f) => f.endsWith('.heapsnapshot')), [])
  } finally {
    execFileSync('umount', [dir])
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('self-recycle report ranks the named jobs the heap grew with: retained per job, jobs, share', { timeout: 90000 }, async () => {
  const dir = scratch()
  try {
    const result = await runFixture('job-types.js', { env: { SELF_RECYCLE_REPORT_DIR: dir, FIXTURE_SEED: '1' }, nodeArgs: ['--expose-gc'], timeoutMs: 60000 })
    assert.equal(result.code, 75, describe(result))
    const [exit] = eventsNamed(result, 'exit')
    const report = JSON.parse(fs.readFileSync(exit.report.path, 'utf8'))
    assert.equal(report.recycle.topJobs[0].name, 'ingest', JSON.stringify(report.recycle.topJobs))
    const { spawnSync } = require('node:child_process')
    const cli = (...args) => spawnSync(process.execPath, [path.join(__dirname, '..', 'js', 'cli.js'), 'report', ...args], { encoding: 'utf8' })
    const text = cli(exit.report.path)
    assert.equal(text.status, 0, text.stderr)
    const ingest = report.recycle.topJobs[0]
    assert.match(text.stdout, /\nnamed jobs the heap grew with \(fit over \d+ windows between major GCs, R² [\d.]+\):\n +retained\/job +jobs +share +name\n/)
    assert.match(text.stdout, new RegExp(`\\n +${Math.round(ingest.retainedPerJob / 1024)} KiB +${ingest.jobs} +${Math.round(ingest.share * 100)}% +ingest\\n`))
    assert.doesNotMatch(text.stdout, / render\n/)
    const json = JSON.parse(cli(exit.report.path, '--json').stdout)
    assert.deepEqual(json.topJobs, report.recycle.topJobs)
    assert.equal(json.jobsFit.windows, report.recycle.jobsFit.windows)
    // A report of a process that named no job has no jobs section.
    delete report.recycle.topJobs
    delete report.recycle.jobsFit
    const unnamed = path.join(dir, 'unnamed.json')
    fs.writeFileSync(unnamed, JSON.stringify(report))
    const plain = cli(unnamed)
    assert.equal(plain.status, 0, plain.stderr)
    assert.doesNotMatch(plain.stdout, /named jobs/)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
