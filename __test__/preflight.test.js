'use strict'
// The deploy pre-flight and the status file, in real processes: `self-recycle preflight`
// judges a worker's baseline over its warm-up; `status` and `check` read the status file.

const test = require('node:test')
const assert = require('node:assert/strict')
const { spawn, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { FIXTURES, cleanEnv } = require('./processes')

const cli = path.join(__dirname, '..', 'js', 'cli.js')
const worker = path.join(FIXTURES, 'preflight-worker.js')

function preflight (args, env = {}) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cli, 'preflight', ...args, '--', process.execPath, worker], {
      env: cleanEnv({ SELF_RECYCLE_LOG: 'off', SELF_RECYCLE_MAX_RSS: '400MiB', FIXTURE_LIMIT_MIB: '400', ...env }),
      stdio: ['ignore', 'pipe', 'pipe']
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk) => { stdout += chunk })
    child.stderr.on('data', (chunk) => { stderr += chunk })
    child.on('close', (code) => resolve({ code, stdout, stderr, dump: `code=${code}\n${stdout}\n${stderr}` }))
  })
}

test('a clean worker passes; --json has the figures', async () => {
  const result = await preflight(['--window', '2s', '--json'], { FIXTURE_MODE: 'clean' })
  assert.equal(result.code, 0, result.dump)
  const report = JSON.parse(result.stdout.trim().split('\n').pop())
  assert.equal(report.passed, true)
  assert.deepEqual(report.failures, [])
  assert.equal(report.figures.rssLimit, 400 * 1048576)
  assert.ok(report.figures.baselineRss > 10 * 1048576 && report.figures.rssShare < 0.6)
  assert.ok(report.figures.heapLimit > 0 && report.figures.heapShare < 0.6)
  assert.equal(report.figures.warmupMs, 2000)
  assert.equal(report.window, 2000)
})

test('a worker whose baseline is 80% of its limit fails, naming the figure and the limit', async () => {
  const result = await preflight(['--window', '2s'], { FIXTURE_MODE: 'heavy', SELF_RECYCLE_MAX_RSS: '200MiB', FIXTURE_LIMIT_MIB: '200' })
  assert.equal(result.code, 1, result.dump)
  assert.match(result.stdout, /preflight failed:\n\s+- rss \d+ MiB is (79|8\d)% of limit 200 MiB \(at most 60%\)/)
})

test('the per-job heavy singleton fails under --no-reinit, with the application\'s call site', async () => {
  const result = await preflight(['--window', '2s', '--no-reinit'], { FIXTURE_MODE: 'reinit' })
  assert.equal(result.code, 1, result.dump)
  assert.match(result.stdout, /'heavy-client' was re-initialized \d+ time\(s\), from .*preflight-worker\.js:\d+:\d+/)
  const lenient = await preflight(['--window', '2s'], { FIXTURE_MODE: 'reinit' })
  assert.equal(lenient.code, 0, `without --no-reinit it is reported, not failed\n${lenient.dump}`)
  assert.match(lenient.stdout, /re-initialized: 'heavy-client'/)
})

test('a worker that crashes during the window fails with its exit code', async () => {
  const result = await preflight(['--window', '5s'], { FIXTURE_MODE: 'crash' })
  assert.equal(result.code, 1, result.dump)
  assert.match(result.stdout, /the worker exited with code 3 before the end of its warm-up/)
})

test('a worker without self-recycle fails, saying so', async () => {
  const result = await preflight(['--window', '2s', '--start-timeout', '2s'], { FIXTURE_MODE: 'without' })
  assert.equal(result.code, 1, result.dump)
  assert.match(result.stdout, /the worker never started self-recycle: no status within 2 s/)
})

test('usage errors exit 2', () => {
  for (const args of [['preflight', '--window', 'soon', '--', 'node'], ['preflight', '--max-baseline', '150%', '--', 'node'], ['preflight'], ['nonsense'], ['check']]) {
    const result = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' })
    assert.equal(result.status, 2, `${args.join(' ')}: ${result.stdout}${result.stderr}`)
  }
  assert.equal(spawnSync(process.execPath, [cli, 'preflight', '--help'], { encoding: 'utf8' }).status, 0)
})

test('the status file: status and check read it; read in a tight loop while rewritten, it always parses', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-status-'))
  const file = path.join(dir, 'status.json')
  const child = spawn(process.execPath, [worker], {
    env: cleanEnv({ FIXTURE_MODE: 'clean', SELF_RECYCLE_LOG: 'off', SELF_RECYCLE_STATUS_FILE: file, SELF_RECYCLE_WARMUP: '1s', SELF_RECYCLE_MAX_RSS: '400MiB', SELF_RECYCLE_INTERVAL: '20ms' }),
    stdio: 'ignore'
  })
  try {
    const until = Date.now() + 5000
    let reads = 0
    let versions = new Set()
    while (Date.now() < until) {
      if (!fs.existsSync(file)) { await new Promise((resolve) => setTimeout(resolve, 20)); continue }
      const status = JSON.parse(fs.readFileSync(file, 'utf8')) // throws on a torn file
      versions.add(status.time)
      reads++
      if (reads % 200 === 0) await new Promise((resolve) => setImmediate(resolve))
    }
    assert.ok(reads > 1000 && versions.size >= 2, `${reads} reads, ${versions.size} versions`)
    assert.equal(fs.statSync(file).mode & 0o777, 0o600)
    const check = spawnSync(process.execPath, [cli, 'check', file, '--ready', '--json'], { encoding: 'utf8' })
    assert.equal(check.status, 0, check.stdout)
    assert.deepEqual(JSON.parse(check.stdout).problems, [])
    const status = spawnSync(process.execPath, [cli, 'status', file], { encoding: 'utf8' })
    assert.equal(status.status, 0)
    assert.match(status.stdout, /running/)
    assert.match(status.stdout, /baseline: rss \d+ MiB, heap \d+ MiB: ready/)
  } finally {
    child.kill('SIGKILL')
    await new Promise((resolve) => child.once('close', resolve))
  }
  const dead = spawnSync(process.execPath, [cli, 'check', file], { encoding: 'utf8' })
  assert.equal(dead.status, 1)
  assert.match(dead.stdout, /not healthy: process \d+ is not running/)
  fs.rmSync(dir, { recursive: true, force: true })
})

test('PM2 cluster reload with wait_ready: a new instance is ready only once its baseline passes; a failing one never is', { timeout: 180000 }, async () => {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-pm2-ready-'))
  const ledger = path.join(home, 'ledger')
  const pm2 = require.resolve('pm2/bin/pm2')
  const ecosystem = path.join(home, 'ecosystem.config.js')
  const write = (heavy) => fs.writeFileSync(ecosystem, `module.exports = { apps: [${JSON.stringify({
    name: 'ready-worker',
    script: path.join(FIXTURES, 'pm2-ready-worker.js'),
    exec_mode: 'cluster',
    instances: 2,
    wait_ready: true,
    listen_timeout: 8000,
    kill_timeout: 5000,
    env: { LEDGER: ledger, FIXTURE_HEAVY: heavy ? '1' : '0', SELF_RECYCLE_READY: 'baseline', SELF_RECYCLE_WARMUP: '2s', SELF_RECYCLE_MAX_RSS: '300MiB', SELF_RECYCLE_SIGNALS: 'on', SELF_RECYCLE_LOG: 'off' }
  })}] }\n`)
  const run = (...args) => require('node:child_process').execFileSync(process.execPath, [pm2, ...args], { env: cleanEnv({ PM2_HOME: home }), encoding: 'utf8' })
  const records = () => fs.readFileSync(ledger, 'utf8').split('\n').filter(Boolean).map((l) => { const [t, pid, ...what] = l.split(' '); return { t: Number(t), pid: Number(pid), what: what.join(' ') } })
  const lives = () => {
    const byPid = new Map()
    for (const r of records()) {
      const life = byPid.get(r.pid) ?? { pid: r.pid }
      if (r.what === 'boot') life.boot = r.t
      if (r.what === 'ready-sent') life.ready = r.t
      if (r.what.startsWith('baseline')) life.baseline = r.what.endsWith('true')
      if (r.what.startsWith('exit')) life.exit = r.t
      byPid.set(r.pid, life)
    }
    return [...byPid.values()].sort((a, b) => a.boot - b.boot)
  }
  try {
    write(false)
    run('start', ecosystem)
    await waitUntil(() => lives().filter((l) => l.ready).length === 2, 30000)
    // A reload: each new instance must be ready before PM2 stops an old one.
    run('reload', ecosystem, '--update-env')
    await waitUntil(() => lives().length === 4 && lives().filter((l) => l.exit).length === 2, 60000)
    const [first, second, third, fourth] = lives()
    for (const fresh of [third, fourth]) {
      assert.equal(fresh.baseline, true)
      assert.ok(fresh.ready - fresh.boot >= 1900, `ready ${fresh.ready - fresh.boot} ms after boot, not before the 2 s warm-up`)
    }
    assert.ok(first.exit >= third.ready && second.exit >= fourth.ready, JSON.stringify(lives()))

    // A reload into instances whose baseline fails: never marked ready.
    write(true)
    run('reload', ecosystem, '--update-env')
    await waitUntil(() => lives().length === 6 && lives().filter((l) => l.exit).length === 4, 90000)
    const now = lives()
    const failing = now.slice(4)
    for (const life of failing) {
      assert.equal(life.baseline, false)
      assert.equal(life.ready, undefined, 'never sent ready')
    }
    // PM2 gave up waiting at listen_timeout (8 s), not at a ready message.
    const replaced = now[2]
    assert.ok(replaced.exit - failing[0].boot >= 7000, `old stopped ${replaced.exit - failing[0].boot} ms after the new boot`)
  } finally {
    try { run('kill') } catch {}
    fs.rmSync(home, { recursive: true, force: true })
  }
})

async function waitUntil (predicate, timeoutMs) {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    try { if (predicate()) return } catch {}
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
  throw new Error(`timed out after ${timeoutMs} ms`)
}
