'use strict'
// PROFILE=heap: leak and recycle events name the allocation sites that grew since the
// baseline, the report keeps the top 50 and the raw profile (.heapprofile), and a busy
// profiler or a worker thread is left alone.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const { runFixture, eventsNamed, describe } = require('./processes')
const { sitesOf, grownSites, beyondNoise } = require('../js/profile.js')

const LEAK = {
  SELF_RECYCLE_LOG: 'json',
  SELF_RECYCLE_MAX_HEAP: '120MiB',
  SELF_RECYCLE_WARMUP: '1s',
  SELF_RECYCLE_MIN_UPTIME: '0'
}
const FIXTURE_FILE = path.join('__test__', 'fixtures', 'leak-sites.js')
/** The line a function of the fixture starts on (where V8 says its samples were taken). */
const lineOf = (name) => fs.readFileSync(path.join(__dirname, '..', FIXTURE_FILE), 'utf8').split('\n').findIndex((l) => l.startsWith(`function ${name} (`)) + 1

function tempDir (name) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `self-recycle-${name}-`))
  fs.chmodSync(dir, 0o700)
  return dir
}

/** A DevTools profile node. */
let nextId = 1
function node (functionName, url, line, selfSize, children = []) {
  return { callFrame: { functionName, scriptId: '1', url, lineNumber: line - 1, columnNumber: 4 }, selfSize, id: nextId++, children }
}

test('sites: builtins and Node internals are charged to the application frame that called them', () => {
  const profile = {
    head: node('(root)', '', 0, 0, [
      node('main', '/app/src/main.js', 1, 0, [
        node('load', '/app/src/enricher.js', 42, 100, [
          node('push', '', 0, 4000), // a builtin: no url
          node('readFileSync', 'node:fs', 10, 600),
          node('cloneDeep', '/app/node_modules/lodash/clone.js', 7, 3000)
        ])
      ]),
      // A library's own work with no application frame above it: charged to the library.
      node('onData', '/app/node_modules/ioredis/parser.js', 90, 700),
      node('(GC)', '', 0, 50)
    ]),
    samples: []
  }
  const sites = [...sitesOf(profile).values()]
  const byName = Object.fromEntries(sites.map((s) => [s.functionName, s]))
  assert.equal(byName.load.bytes, 100 + 4000 + 600 + 3000)
  assert.deepEqual([byName.load.line, byName.load.url], [42, '/app/src/enricher.js'])
  assert.equal(byName.onData.bytes, 700)
  assert.equal(byName['(V8 internals)'].bytes, 50)
  assert.equal(sites.length, 3)
})

test('sites from samples: the newest samples (young garbage not collected yet) are left out', () => {
  const load = node('load', '/app/src/enricher.js', 42, 400)
  const parse = node('parse', '/app/src/parse.js', 3, 300)
  const profile = { head: node('(root)', '', 0, 0, [load, parse]), samples: [] }
  // Old samples (ordinals 1-4) from load; the 3 newest (5-7) from parse.
  for (let ordinal = 1; ordinal <= 7; ordinal++) profile.samples.push({ nodeId: ordinal <= 4 ? load.id : parse.id, size: 100, ordinal })
  const names = (sites) => Object.fromEntries([...sites.values()].map((s) => [s.functionName, s.bytes]))
  assert.deepEqual(names(sitesOf(profile, { recentSamples: 3 })), { load: 400, parse: 0 })
  assert.deepEqual(names(sitesOf(profile)), { load: 400, parse: 300 })
})

test('grown sites: ranked by growth since the baseline, shares of the growth, shrinking sites left out', () => {
  const at = (load, cache, noise) => sitesOf({
    head: node('(root)', '', 0, 0, [
      node('load', '/app/src/enricher.js', 42, load),
      node('remember', '/app/src/cache.js', 7, cache),
      node('parse', '/app/src/parse.js', 3, noise)
    ])
  })
  const sites = grownSites(at(700, 300, 100), at(100, 100, 500), { cwd: '/app' })
  assert.deepEqual(sites.map((s) => [s.site, s.growth, s.share]), [
    ['load (src/enricher.js:42:5)', 600, 0.75],
    ['remember (src/cache.js:7:5)', 200, 0.25]
  ])
  // No baseline: growth since the profiler started.
  assert.deepEqual(grownSites(at(50, 0, 0), null).map((s) => s.growth), [50])
})

test('growth is named only beyond sampling noise: a handful of samples, or a few standard deviations of a big site, is not growth', () => {
  const I = 512 * 1024
  const at = (load, cache, noise) => sitesOf({
    head: node('(root)', '', 0, 0, [
      node('load', '/app/src/enricher.js', 42, load * I),
      node('remember', '/app/src/cache.js', 7, cache * I),
      node('parse', '/app/src/parse.js', 3, noise * I)
    ])
  })
  // In samples: load 0 -> 150 grew; a cache of 400 samples that gains 30 is within
  // 4 sqrt(830) = 115; two samples from nothing are noise.
  const sites = grownSites(at(150, 430, 2), at(0, 400, 0), { interval: I, cwd: '/app' })
  assert.deepEqual(sites.map((s) => [s.functionName, s.share]), [['load', 1]])
  // Nothing beyond noise: no site.
  assert.deepEqual(grownSites(at(3, 420, 2), at(0, 400, 0), { interval: I }), [])
  // The smallest growth from nothing (all of it gained): more than 4 sqrt(n) samples, so 17.
  assert.equal(beyondNoise(16 * I, 16 * I, I), false)
  assert.equal(beyondNoise(17 * I, 17 * I, I), true)
  // One large object (sampled for sure) counts as its size: a 20 MiB array is growth.
  assert.equal(beyondNoise(20 * 1048576, 20 * 1048576, I), true)
})

test('growth from samples: a leak only gains samples, a steady site gains and loses them (the same net growth is noise there)', () => {
  const I = 1000
  const leak = node('leak', '/app/src/leak.js', 1, 1)
  const steady = node('steady', '/app/src/steady.js', 1, 1)
  const profile = (samples) => ({ head: node('(root)', '', 0, 0, [leak, steady]), samples })
  const sample = (site, ordinal) => ({ nodeId: site.id, size: I, ordinal })
  const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i)
  // Baseline: leak 10 samples (1-10), steady 100 (11-110).
  const base = profile([...range(1, 10).map((o) => sample(leak, o)), ...range(11, 110).map((o) => sample(steady, o))])
  // Now: leak kept its 10 and gained 40; steady lost 80 and gained 120. Both grew by 40.
  const now = profile([
    ...range(1, 10).map((o) => sample(leak, o)), ...range(200, 239).map((o) => sample(leak, o)),
    ...range(91, 110).map((o) => sample(steady, o)), ...range(300, 419).map((o) => sample(steady, o))
  ])
  const sites = grownSites(sitesOf(now, { after: 110 }), sitesOf(base), { interval: I })
  assert.deepEqual(sites.map((s) => [s.functionName, s.growth]), [['leak', 40 * I]])
})

test('growth moved from one site to another (V8 inlined a function into its caller) is not growth: the heap as a whole must grow', () => {
  const I = 1000
  const before = node('makeBatch', '/app/src/jobs.js', 1, 1)
  const caller = node('job', '/app/src/jobs.js', 9, 1)
  const leak = node('leak', '/app/src/leak.js', 1, 1)
  const profile = (samples) => ({ head: node('(root)', '', 0, 0, [before, caller, leak]), samples })
  const sample = (site, ordinal) => ({ nodeId: site.id, size: I, ordinal })
  const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i)
  const base = sitesOf(profile(range(1, 100).map((o) => sample(before, o))))
  // The same 100 samples' worth, now all charged to the caller: no growth at all.
  const moved = sitesOf(profile(range(200, 299).map((o) => sample(caller, o))), { after: 100 })
  assert.deepEqual(grownSites(moved, base, { interval: I }), [])
  // With a real leak of 200 samples beside it, the heap grew: the sites are ranked.
  const leaking = sitesOf(profile([...range(200, 299).map((o) => sample(caller, o)), ...range(300, 499).map((o) => sample(leak, o))]), { after: 100 })
  assert.deepEqual(grownSites(leaking, base, { interval: I }).map((s) => s.functionName), ['leak', 'job'])
})

test('a recycle names the fast leaking site first, the slow one second, never the freed noise; the report holds a valid .heapprofile', { timeout: 60000 }, async () => {
  const dir = tempDir('profile')
  try {
    // 180 MiB: the slow leak (a sixth of the growth) then grows well past the noise floor
    // (4 standard deviations of its samples), also when the run is slow.
    const result = await runFixture('leak-sites.js', { env: { ...LEAK, SELF_RECYCLE_MAX_HEAP: '180MiB', SELF_RECYCLE_REPORT_DIR: dir }, timeoutMs: 50000 })
    assert.equal(result.code, 75, describe(result))
    const [start] = eventsNamed(result, 'start')
    assert.equal(start.probes.profile, 'native')
    assert.equal(start.config.profile, 'heap')
    assert.equal(start.config.profileIntervalBytes, 512 * 1024)
    const [recycle] = eventsNamed(result, 'recycle')
    assert.ok(recycle.topSites.length >= 2, JSON.stringify(recycle.topSites))
    const [fast, slow, ...rest] = recycle.topSites
    assert.deepEqual([fast.functionName, fast.file, fast.line], ['leakFast', FIXTURE_FILE, lineOf('leakFast')], JSON.stringify(recycle.topSites))
    assert.deepEqual([slow.functionName, slow.file, slow.line], ['leakSlow', FIXTURE_FILE, lineOf('leakSlow')], JSON.stringify(recycle.topSites))
    const ratio = fast.growth / slow.growth
    assert.ok(ratio > 2 && ratio < 12, `5:1 by design, sampled: ${ratio}`)
    assert.ok(!recycle.topSites.some((s) => s.functionName === 'noise'), JSON.stringify(recycle.topSites))
    assert.ok(rest.every((s) => s.share < 0.05), JSON.stringify(rest))
    assert.match(recycle.msg, new RegExp(`most growth at leakFast \\(__test__/fixtures/leak-sites\\.js:${lineOf('leakFast')}\\), \\d+%`))

    const [exit] = eventsNamed(result, 'exit')
    const report = JSON.parse(fs.readFileSync(exit.report.path, 'utf8'))
    assert.deepEqual(report.recycle.topSites, recycle.topSites, 'the report keeps the event as emitted')
    assert.equal(report.profile.since, 'baseline')
    assert.equal(report.profile.topSites[0].functionName, 'leakFast')
    const profile = JSON.parse(fs.readFileSync(report.profile.heapProfile, 'utf8'))
    assert.equal(path.dirname(report.profile.heapProfile), dir)
    assert.equal(fs.statSync(report.profile.heapProfile).mode & 0o777, 0o600)
    // DevTools' SamplingHeapProfile: head { callFrame, selfSize, id, children }, samples.
    const ids = new Set()
    let total = 0
    const walk = (n) => {
      assert.equal(typeof n.callFrame.functionName, 'string')
      assert.equal(typeof n.callFrame.url, 'string')
      assert.equal(typeof n.callFrame.scriptId, 'string')
      assert.ok(Number.isInteger(n.callFrame.lineNumber) && Number.isInteger(n.callFrame.columnNumber))
      assert.ok(Number.isInteger(n.selfSize) && n.selfSize >= 0)
      ids.add(n.id)
      total += n.selfSize
      n.children.forEach(walk)
    }
    walk(profile.head)
    assert.equal(profile.head.callFrame.functionName, '(root)')
    assert.ok(profile.samples.length > 10)
    for (const sample of profile.samples) {
      assert.ok(ids.has(sample.nodeId), `sample of an unknown node ${sample.nodeId}`)
      assert.ok(sample.size > 0 && Number.isInteger(sample.ordinal))
    }
    assert.equal(total, report.profile.sampledBytes, 'the file is what the sites were built from')
    assert.ok(report.profile.recentBytesLeftOut >= 0 && report.profile.recentBytesLeftOut < total)

    // npx self-recycle report: the same facts for a person, and as JSON.
    const cli = (...args) => spawnSync(process.execPath, [path.join(__dirname, '..', 'js', 'cli.js'), 'report', ...args], { encoding: 'utf8' })
    const text = cli(exit.report.path)
    assert.equal(text.status, 0, text.stderr)
    assert.match(text.stdout, /^pid \d+ recycled \(heap\)/)
    assert.match(text.stdout, /rss +[▁▂▃▄▅▆▇█]+ +\d+ MiB -> \d+ MiB/)
    assert.match(text.stdout, /heap +[▁▂▃▄▅▆▇█]+ +\d+ MiB -> \d+ MiB, limit 180 MiB/)
    assert.match(text.stdout, /\n +\d+ MiB +\d+% +leakFast \(__test__\/fixtures\/leak-sites\.js:\d+:\d+\)\n +\d+ MiB +\d+% +leakSlow/)
    assert.ok(text.stdout.includes(report.profile.heapProfile))
    const json = JSON.parse(cli(exit.report.path, '--json').stdout)
    assert.deepEqual([json.reason, json.topSites[0].functionName, json.series.rss.length > 1, json.exit.code], ['heap', 'leakFast', true, 75])
    const garbage = path.join(dir, 'garbage.json')
    fs.writeFileSync(garbage, '{"not":"a report"}')
    const refused = cli(garbage)
    assert.deepEqual([refused.status, refused.stderr.trim()], [1, `self-recycle: ${garbage} is not a self-recycle report (no reason or recycle event)`])
    assert.equal(cli().status, 2)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

const GARBAGE_FILE = path.join('__test__', 'fixtures', 'leak-garbage.js')

test('a garbage maker is never named beside two real leaks (rss recycle, 5 runs)', { timeout: 180000 }, async () => {
  const env = { ...LEAK, SELF_RECYCLE_MAX_HEAP: 'off', SELF_RECYCLE_MAX_RSS: '400MiB' }
  for (let run = 0; run < 5; run++) {
    const result = await runFixture('leak-garbage.js', { env, timeoutMs: 50000 })
    assert.equal(result.code, 75, describe(result))
    const [recycle] = eventsNamed(result, 'recycle')
    assert.equal(recycle.reason, 'rss', describe(result))
    const names = recycle.topSites.map((s) => s.functionName)
    assert.ok(!names.includes('churn'), `run ${run}: the garbage maker named: ${JSON.stringify(recycle.topSites)}`)
    assert.deepEqual(names.slice(0, 2), ['leakFast', 'leakSlow'], `run ${run}: ${JSON.stringify(recycle.topSites)}`)
    assert.equal(recycle.topSites[0].file, GARBAGE_FILE)
    assert.match(recycle.msg, /; most growth at leakFast \(__test__\/fixtures\/leak-garbage\.js:\d+\), \d+%$/)
  }
})

test('a MAX_JOBS recycle of a worker that does not leak says "no heap growth" and names no site', { timeout: 60000 }, async () => {
  const dir = tempDir('steady')
  try {
    const result = await runFixture('steady-jobs.js', {
      env: { ...LEAK, SELF_RECYCLE_MAX_HEAP: 'off', SELF_RECYCLE_MAX_JOBS: '800', SELF_RECYCLE_JITTER: '0%', SELF_RECYCLE_REPORT_DIR: dir },
      timeoutMs: 50000
    })
    assert.equal(result.code, 75, describe(result))
    const [recycle] = eventsNamed(result, 'recycle')
    assert.equal(recycle.reason, 'jobs', describe(result))
    assert.deepEqual(recycle.topSites, [], JSON.stringify(recycle.topSites))
    assert.match(recycle.msg, /; no heap growth beyond sampling noise since the baseline$/)
    assert.equal(recycle.profileSkipped, undefined)
    const report = JSON.parse(fs.readFileSync(eventsNamed(result, 'exit')[0].report.path, 'utf8'))
    assert.deepEqual(report.profile.topSites, [])
    assert.equal(report.profile.since, 'baseline')
    assert.ok(report.profile.gc.ms >= 0, JSON.stringify(report.profile.gc))
    // The report for a person says the same, not "not profiled".
    const exitEvent = eventsNamed(result, 'exit')[0]
    const text = spawnSync(process.execPath, [path.join(__dirname, '..', 'js', 'cli.js'), 'report', exitEvent.report.path], { encoding: 'utf8' })
    assert.match(text.stdout, /\nallocation sites: no heap growth beyond sampling noise since the baseline\n  the whole profile: /, text.stdout)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('a recycle decided at the end of warm-up (with the baseline) names what grew since the process started', { timeout: 60000 }, async () => {
  // The heap crosses MAX_HEAP during warm-up; MIN_UPTIME holds the recycle to the sample
  // that also takes the baseline.
  const result = await runFixture('leak-sites.js', {
    env: { ...LEAK, SELF_RECYCLE_MAX_HEAP: '40MiB', SELF_RECYCLE_WARMUP: '3s', SELF_RECYCLE_MIN_UPTIME: '3s' },
    timeoutMs: 50000
  })
  assert.equal(result.code, 75, describe(result))
  const [baseline] = eventsNamed(result, 'baseline')
  const [recycle] = eventsNamed(result, 'recycle')
  assert.ok(baseline && recycle.uptimeMs - baseline.uptimeMs < 1000, describe(result))
  assert.equal(recycle.topSites[0]?.functionName, 'leakFast', JSON.stringify(recycle.topSites))
  assert.match(recycle.msg, /; most growth at leakFast /)
})

test('a leak inside node_modules, 40 frames below the app\'s call, is charged to the app frame that called the library', { timeout: 60000 }, async () => {
  const dir = tempDir('deep')
  try {
    const lib = path.join(dir, 'node_modules', 'deep-lib')
    fs.mkdirSync(lib, { recursive: true })
    fs.writeFileSync(path.join(lib, 'index.js'), `
      const kept = []
      function keep (value, depth) {
        if (depth > 0) return keep(value, depth - 1)
        kept.push({ value, text: 'kept-' + kept.length + '-' + 'k'.repeat(180) })
      }
      module.exports = { keep }
    `)
    fs.writeFileSync(path.join(dir, 'app.js'), [
      `const { start } = require(${JSON.stringify(path.join(__dirname, '..'))})`,
      "const { keep } = require('deep-lib')",
      'function rememberOrders () {',
      '  for (let i = 0; i < 500; i++) keep(i, 40)',
      '}',
      'start()',
      'setInterval(rememberOrders, 5)'
    ].join('\n'))
    const result = await runFixture(path.join(dir, 'app.js'), { env: { ...LEAK, SELF_RECYCLE_MAX_HEAP: '100MiB' }, cwd: dir, timeoutMs: 50000 })
    assert.equal(result.code, 75, describe(result))
    const [recycle] = eventsNamed(result, 'recycle')
    assert.deepEqual(recycle.topSites.map((s) => [s.functionName, s.file, s.line]), [['rememberOrders', 'app.js', 3]], JSON.stringify(recycle.topSites))
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

const TS_APP = path.join(__dirname, 'fixtures', 'ts-app')
/** The line a method starts on in a file of the TypeScript fixture. */
const tsLineOf = (file, method) => fs.readFileSync(path.join(TS_APP, file), 'utf8').split('\n').findIndex((l) => l.startsWith(`  ${method} (`) || l.startsWith(`    ${method}(`)) + 1

test('with source maps on (--enable-source-maps or process.setSourceMapsEnabled), a TypeScript app\'s site is its .ts file and line', { timeout: 120000 }, async () => {
  const env = { ...LEAK, SELF_RECYCLE_MAX_HEAP: '100MiB' }
  const runs = [
    ['--enable-source-maps', { env, nodeArgs: ['--enable-source-maps'] }],
    ['process.setSourceMapsEnabled(true)', { env: { ...env, SOURCE_MAPS: 'api' } }]
  ]
  const tsLine = tsLineOf(path.join('src', 'jobs.processor.ts'), 'process')
  const jsLine = tsLineOf(path.join('dist', 'jobs.processor.js'), 'process')
  assert.ok(tsLine > 0 && jsLine > 0 && tsLine !== jsLine)
  for (const [how, options] of runs) {
    const result = await runFixture(path.join(TS_APP, 'dist', 'main.js'), { ...options, cwd: TS_APP, timeoutMs: 50000 })
    assert.equal(result.code, 75, describe(result))
    const [recycle] = eventsNamed(result, 'recycle')
    const [top] = recycle.topSites
    assert.deepEqual([top?.functionName, top?.file, top?.line], ['process', 'src/jobs.processor.ts', tsLine], `${how}: ${JSON.stringify(recycle.topSites)}`)
    assert.deepEqual([top.generated.file, top.generated.line], ['dist/jobs.processor.js', jsLine])
    assert.match(recycle.msg, new RegExp(`; most growth at process \\(src/jobs\\.processor\\.ts:${tsLine}\\), \\d+%$`), how)
  }
  // Without source maps, the compiled file is all there is.
  const result = await runFixture(path.join(TS_APP, 'dist', 'main.js'), { env, cwd: TS_APP, timeoutMs: 50000 })
  const [top] = eventsNamed(result, 'recycle')[0].topSites
  assert.deepEqual([top.file, top.line, top.generated], ['dist/jobs.processor.js', jsLine, undefined])
})

test('a leak event names the sites too', { timeout: 60000 }, async () => {
  const result = await runFixture('leak-sites.js', {
    env: { ...LEAK, SELF_RECYCLE_MAX_HEAP: 'off', SELF_RECYCLE_LEAK_SLOPE: '5MiB/min', SELF_RECYCLE_LEAK_WINDOW: '2s', SELF_RECYCLE_DRY_RUN: 'on' },
    nodeArgs: ['--expose-gc'],
    timeoutMs: 8000
  })
  const [leak] = eventsNamed(result, 'leak')
  assert.ok(leak, describe(result))
  assert.equal(leak.topSites[0].functionName, 'leakFast', JSON.stringify(leak.topSites))
  assert.match(leak.msg, /most growth at leakFast/)
})

test('PROFILE=off: no profiler, no sites', { timeout: 60000 }, async () => {
  const result = await runFixture('leak-sites.js', { env: { ...LEAK, SELF_RECYCLE_PROFILE: 'off' }, timeoutMs: 50000 })
  assert.equal(result.code, 75, describe(result))
  assert.equal(eventsNamed(result, 'start')[0].probes.profile, 'off')
  const [recycle] = eventsNamed(result, 'recycle')
  assert.equal(recycle.topSites, undefined)
  assert.equal(recycle.profileSkipped, undefined)
  assert.doesNotMatch(recycle.msg, /most growth/)
})

test('without the native path, the inspector runs the same profiler and finds the same site', { timeout: 60000 }, async () => {
  const result = await runFixture('leak-sites.js', { env: { ...LEAK, SELF_RECYCLE_TEST_FORCE_INSPECTOR_PROFILE: '1' }, timeoutMs: 50000 })
  assert.equal(result.code, 75, describe(result))
  assert.match(eventsNamed(result, 'start')[0].probes.profile, /^inspector \(.*\): each profile runs a full GC$/)
  assert.equal(eventsNamed(result, 'recycle')[0].topSites[0].functionName, 'leakFast')
})

test('a sampling profiler someone else runs (DevTools) is left alone: start says so, events say why there are no sites', { timeout: 60000 }, async () => {
  const script = `
    const inspector = require('node:inspector')
    const session = new inspector.Session()
    session.connect()
    session.post('HeapProfiler.startSampling', { samplingInterval: 65536 })
    const r = require(${JSON.stringify(path.join(__dirname, '..'))}).start({ log: 'json', warmup: 0, minUptime: 0 })
    const kept = []
    for (let i = 0; i < 20000; i++) kept.push({ i })
    r.recycle('busy-check')
    r.on('exit', () => session.post('HeapProfiler.getSamplingProfile', (error, answer) => {
      console.log(JSON.stringify({ stillRunning: !error && answer.profile.samples.length > 0 }))
    }))
  `
  const file = path.join(tempDir('busy'), 'busy.js')
  fs.writeFileSync(file, script)
  const result = await runFixture(file, { timeoutMs: 20000 })
  assert.equal(result.code, 75, describe(result))
  assert.match(eventsNamed(result, 'start')[0].probes.profile, /^busy: another inspector client runs the sampling heap profiler/)
  assert.match(eventsNamed(result, 'recycle')[0].profileSkipped, /^busy/)
  assert.deepEqual(JSON.parse(result.lines[0]), { stillRunning: true })
  fs.rmSync(path.dirname(file), { recursive: true, force: true })
})

test('a worker thread\'s recycler does not profile (the main thread\'s does)', async () => {
  const script = `
    const { Worker } = require('node:worker_threads')
    const w = new Worker(\`
      const r = require(${JSON.stringify(path.join(__dirname, '..'))}).start({ log: 'off' })
      require('node:worker_threads').parentPort.postMessage(r.stats().probes.profile)
      r.stop()
    \`, { eval: true })
    w.once('message', (status) => { console.log(status); w.terminate() })
  `
  const file = path.join(tempDir('thread'), 'thread.js')
  fs.writeFileSync(file, script)
  const result = await runFixture(file, { timeoutMs: 20000 })
  assert.equal(result.code, 0, describe(result))
  assert.match(result.lines[0], /^off: worker thread/)
  fs.rmSync(path.dirname(file), { recursive: true, force: true })
})

test('a profile that cannot be read (V8 gives a layout we refuse) never crashes the worker: the recycle goes on and says why', { timeout: 60000 }, async () => {
  // The native read is replaced, inside the worker, by one that throws as it does when the
  // profile's layout is not recognized: at the baseline and at the recycle.
  const script = `
    const binding = require(${JSON.stringify(path.join(__dirname, '..', 'js', 'native.js'))})
    binding.heapProfileTake = () => { throw new Error('AllocationProfile layout not recognized (test)') }
    require(${JSON.stringify(path.join(__dirname, '..', FIXTURE_FILE))})
  `
  const file = path.join(tempDir('unreadable'), 'unreadable.js')
  fs.writeFileSync(file, script)
  try {
    const result = await runFixture(file, { env: LEAK, timeoutMs: 50000 })
    assert.equal(result.code, 75, describe(result))
    assert.ok(eventsNamed(result, 'baseline').length === 1, describe(result))
    const [recycle] = eventsNamed(result, 'recycle')
    assert.equal(recycle.topSites, undefined)
    assert.match(recycle.profileSkipped, /the profile could not be read: AllocationProfile layout not recognized \(test\)/)
    const [exit] = eventsNamed(result, 'exit')
    assert.equal(exit.drained, true)
  } finally {
    fs.rmSync(path.dirname(file), { recursive: true, force: true })
  }
})

test('an AllocationProfile layout the addon cannot confirm is never called into: the start falls back to the inspector, which names the site', { timeout: 60000 }, async () => {
  // Slot 3 is expected where the complete destructor is, as if V8 had declared another
  // virtual function before the destructor: the profile taken at start is refused.
  const result = await runFixture('leak-sites.js', { env: { ...LEAK, SELF_RECYCLE_TEST_FORCE_PROFILE_LAYOUT: 'mismatch' }, timeoutMs: 50000 })
  assert.equal(result.code, 75, describe(result))
  const [start] = eventsNamed(result, 'start')
  assert.match(start.probes.profile, /^inspector \(AllocationProfile layout not confirmed: vtable slot 3 is not _ZN2v88internal17AllocationProfileD0Ev \(one profile leaked\)\): each profile runs a full GC$/, describe(result))
  const [recycle] = eventsNamed(result, 'recycle')
  assert.equal(recycle.topSites[0].functionName, 'leakFast', JSON.stringify(recycle.topSites))
  assert.equal(eventsNamed(result, 'exit')[0].drained, true)
  assert.doesNotMatch(result.stderr, /panick/)
})

test('a layout that stops matching after the start: the profile is leaked, not called into; events say why there are no sites', { timeout: 60000 }, async () => {
  const result = await runFixture('leak-sites.js', { env: { ...LEAK, SELF_RECYCLE_TEST_FORCE_PROFILE_LAYOUT: 'mismatch-later' }, timeoutMs: 50000 })
  assert.equal(result.code, 75, describe(result))
  assert.equal(eventsNamed(result, 'start')[0].probes.profile, 'native')
  assert.equal(eventsNamed(result, 'baseline').length, 1, describe(result))
  const [recycle] = eventsNamed(result, 'recycle')
  assert.equal(recycle.topSites, undefined)
  assert.equal(recycle.profileSkipped, 'the profile could not be read: AllocationProfile layout not confirmed: vtable slot 3 is not _ZN2v88internal17AllocationProfileD0Ev (one profile leaked)')
  assert.equal(eventsNamed(result, 'exit')[0].drained, true)
  assert.doesNotMatch(result.stderr, /panick/)
})

test('text remapped to huge pages (--use-largepages=on) keeps the native read: the binary is found from its ELF header', async () => {
  const script = `
    const r = require(${JSON.stringify(path.join(__dirname, '..'))}).start({ log: 'off' })
    const profile = require(${JSON.stringify(path.join(__dirname, '..', 'js', 'native.js'))}).heapProfileTake()
    console.log(JSON.stringify({ status: r.stats().probes.profile, root: profile.head.callFrame.functionName }))
    r.stop()
  `
  const file = path.join(tempDir('largepages'), 'largepages.js')
  fs.writeFileSync(file, script)
  try {
    const result = await runFixture(file, { nodeArgs: ['--use-largepages=on'], timeoutMs: 20000 })
    assert.equal(result.code, 0, describe(result))
    assert.deepEqual(JSON.parse(result.lines[0]), { status: 'native', root: '(root)' })
  } finally {
    fs.rmSync(path.dirname(file), { recursive: true, force: true })
  }
})
