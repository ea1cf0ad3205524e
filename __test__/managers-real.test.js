'use strict'
// Real process managers bring a self-recycled worker back: Supervisor (Debian), PM2 (npm),
// a node:cluster primary. Each: >= 3 recycles, exit code 75 seen by the manager, no job lost.
// Supervisor and PM2 run the recipes of docs/deploying.md, taken from the file.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { execFileSync } = require('node:child_process')
const { readLedger, waitFor, workerEnv } = require('./managers')
const { writeSupervisorConf, supervisorEnvironment, startSupervisord } = require('../scripts/supervisor')
const { cleanEnv, runFixture, describe, parseEvents, FIXTURES } = require('./processes')
const { recipe: docRecipe } = require('./doc-blocks')

const RECYCLES = 3

/** `KEY="value",...` of a supervisor `environment=` line. */
function parseSupervisorEnvironment (value) {
  return Object.fromEntries([...value.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]))
}

/** A worker.js beside the manager's config that is the managed test worker. */
function writeWorkerScript (dir) {
  fs.writeFileSync(path.join(dir, 'worker.js'), `require(${JSON.stringify(path.join(FIXTURES, 'managed-worker.js'))})\n`)
}

test('the Supervisor recipe of docs/deploying.md, as written: each recycle is an expected exit (75), restarted; no job lost', { timeout: 150000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-supervisor-'))
  const ledger = path.join(dir, 'ledger')
  writeWorkerScript(dir)
  // The recipe's lines as written, but for its environment: the test's limits recycle every
  // couple of seconds, and its stagger directory is private to this run.
  const recipe = docRecipe('docs/deploying.md', 'supervisor').text
  const documented = parseSupervisorEnvironment(/^environment=(.*)$/m.exec(recipe)[1])
  assert.equal(documented.SELF_RECYCLE_SIGNALS, 'on')
  assert.match(recipe, /^exitcodes=0,75\b/m)
  assert.match(recipe, /^autorestart=true\b/m)
  const env = { ...documented, ...workerEnv(ledger), SELF_RECYCLE_STAGGER_DIR: path.join(dir, 'stagger'), SELF_RECYCLE_STAGGER_GAP: '1s' }
  const program = recipe.trimEnd().replace(/^environment=.*$/m, `environment=${supervisorEnvironment(env)}`) + `
stdout_logfile=%(here)s/%(program_name)s_%(process_num)02d.out.log
stderr_logfile=%(here)s/%(program_name)s_%(process_num)02d.err.log`
  const conf = writeSupervisorConf(dir, [program])
  const supervisord = startSupervisord(conf, cleanEnv())
  try {
    await waitFor(() => readLedger(ledger).recycles.length >= RECYCLES + 1, 120000, `${RECYCLES + 1} recycles under Supervisor`)
    supervisord.ctl('stop', 'worker:*')
  } finally {
    await supervisord.stop()
  }
  const log = fs.readFileSync(path.join(dir, 'supervisord.log'), 'utf8')
  // supervisord logs an expected exit at INFO; "not expected" (at WARN) would mean exitcodes
  // does not list 75.
  const exits75 = log.match(/ INFO exited: worker_0\d \(exit status 75; expected\)/g) || []
  assert.ok(exits75.length >= RECYCLES, log)
  assert.doesNotMatch(log, /not expected/)
  const restarts = log.match(/spawned: 'worker_0\d'/g) || []
  assert.ok(restarts.length >= RECYCLES + 2, log)
  const result = readLedger(ledger)
  assert.deepEqual(result.lost, [])
  assert.ok(result.done > 50)
  assert.ok(result.recycles.filter((r) => r.reason === 'rss').length >= RECYCLES)
  for (const file of fs.readdirSync(dir).filter((f) => f.endsWith('.err.log'))) {
    assert.doesNotMatch(fs.readFileSync(path.join(dir, file), 'utf8'), /FATAL ERROR/)
  }
  fs.rmSync(dir, { recursive: true, force: true })
})

test('the PM2 recipe of docs/deploying.md, as written: fork mode, each instance restarted after its recycles (exit code 75); no job lost', { timeout: 150000 }, async () => {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-pm2-'))
  const ledger = path.join(home, 'ledger')
  const pm2 = require.resolve('pm2/bin/pm2')
  const env = cleanEnv({ PM2_HOME: home })
  writeWorkerScript(home)
  // The recipe file as written, then one beside it that keeps every setting of its app but
  // gives it the test's limits, a private stagger directory and log files here.
  fs.writeFileSync(path.join(home, 'recipe.config.js'), docRecipe('docs/deploying.md', 'pm2').text)
  const { apps: [app] } = require(path.join(home, 'recipe.config.js'))
  assert.equal(app.exec_mode, 'fork')
  assert.equal(app.max_memory_restart, undefined)
  const ecosystem = path.join(home, 'ecosystem.config.js')
  fs.writeFileSync(ecosystem, `module.exports = { apps: [${JSON.stringify({
    ...app,
    env: { ...app.env, ...workerEnv(ledger), SELF_RECYCLE_STAGGER_DIR: path.join(home, 'stagger'), SELF_RECYCLE_STAGGER_GAP: '1s' },
    error_file: path.join(home, 'worker.err.log'),
    out_file: path.join(home, 'worker.out.log')
  })}] }\n`)
  const pm2Run = (...args) => execFileSync(process.execPath, [pm2, ...args], { cwd: home, env, encoding: 'utf8' })
  try {
    pm2Run('start', ecosystem)
    await waitFor(() => readLedger(ledger).recycles.length >= RECYCLES + 1, 120000, `${RECYCLES + 1} recycles under PM2`)
    const apps = JSON.parse(pm2Run('jlist'))
    assert.equal(apps.length, app.instances)
    assert.deepEqual(apps.map((a) => a.pm2_env.exec_mode), apps.map(() => 'fork_mode'))
    const restarts = apps.reduce((sum, a) => sum + a.pm2_env.restart_time, 0)
    assert.ok(restarts >= RECYCLES, `restart_time ${apps.map((a) => a.pm2_env.restart_time)}`)
    pm2Run('stop', app.name)
  } finally {
    try { pm2Run('kill') } catch {}
  }
  const log = fs.readFileSync(path.join(home, 'pm2.log'), 'utf8')
  const exits75 = log.match(new RegExp(`App \\[${app.name}:\\d+\\] exited with code \\[75\\]`, 'g')) || []
  assert.ok(exits75.length >= RECYCLES, log)
  const result = readLedger(ledger)
  assert.deepEqual(result.lost, [])
  assert.ok(result.recycles.filter((r) => r.reason === 'rss').length >= RECYCLES)
  for (const file of fs.readdirSync(home).filter((f) => f.startsWith('worker.err'))) {
    assert.doesNotMatch(fs.readFileSync(path.join(home, file), 'utf8'), /FATAL ERROR/)
  }
  fs.rmSync(home, { recursive: true, force: true })
})

test('PM2 cluster mode: the event lines land in the app\'s own log file, and pm2 stop is a clean stop', { timeout: 120000 }, async () => {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-pm2c-'))
  const ledger = path.join(home, 'ledger')
  const pm2 = require.resolve('pm2/bin/pm2')
  const env = cleanEnv({ PM2_HOME: home })
  const ecosystem = path.join(home, 'ecosystem.config.js')
  fs.writeFileSync(ecosystem, `module.exports = { apps: [${JSON.stringify({
    name: 'cluster-worker',
    script: path.join(FIXTURES, 'managed-worker.js'),
    exec_mode: 'cluster',
    instances: 2,
    autorestart: true,
    kill_timeout: 8000,
    env: workerEnv(ledger, { SELF_RECYCLE_LOG: 'auto' }),
    error_file: path.join(home, 'app.err.log'),
    out_file: path.join(home, 'app.out.log'),
    merge_logs: true
  })}] }\n`)
  const pm2Run = (...args) => execFileSync(process.execPath, [pm2, ...args], { env, encoding: 'utf8' })
  try {
    pm2Run('start', ecosystem)
    await waitFor(() => readLedger(ledger).recycles.length >= 2, 90000, '2 recycles under PM2 cluster mode')
    pm2Run('stop', 'cluster-worker')
  } finally {
    try { pm2Run('kill') } catch {}
  }
  // The app listens to recycle/exit only (the fixture): everything else is logged (LOG=auto).
  const appLog = fs.readFileSync(path.join(home, 'app.err.log'), 'utf8')
  const events = parseEvents(appLog)
  assert.ok(events.some((e) => e.event === 'start'), appLog)
  assert.ok(events.some((e) => e.event === 'drain'), 'drain lines in the app log, not only in the PM2 daemon log')
  const daemonLog = fs.readFileSync(path.join(home, 'pm2.log'), 'utf8')
  assert.doesNotMatch(daemonLog, /"event":"drain"/)
  // pm2 stop sends SIGINT: with SIGNALS=on a stop drains and exits 0.
  const stops = events.filter((e) => e.event === 'stop')
  assert.ok(stops.length >= 1, appLog)
  assert.ok(events.filter((e) => e.event === 'exit' && e.signal).every((e) => e.code === 0), appLog)
  assert.deepEqual(readLedger(ledger).lost, [])
  fs.rmSync(home, { recursive: true, force: true })
})

test('a node:cluster primary sees disconnect then exit 75, and forks again; no job lost', { timeout: 120000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-cluster-'))
  const ledger = path.join(dir, 'ledger')
  const result = await runFixture('cluster-primary.js', { args: [String(RECYCLES)], env: workerEnv(ledger), timeoutMs: 90000 })
  const { stdout, stderr } = result
  assert.equal(result.code, 0, describe(result))
  const exits = stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l))
  const recycled = exits.filter((e) => e.code === 75)
  assert.ok(recycled.length >= RECYCLES, stdout)
  assert.ok(recycled.every((e) => e.exitedAfterDisconnect === true && e.disconnectedFirst === true), stdout)
  const jobs = readLedger(ledger)
  assert.deepEqual(jobs.lost, [])
  assert.ok(jobs.done > 20)
  assert.doesNotMatch(stderr, /FATAL ERROR/)
  fs.rmSync(dir, { recursive: true, force: true })
})

test('Supervisor soak: 2 workers, jobs of 10 ms to 3 s, >= 30 recycles, then a stop during a drain: no job lost', { timeout: 300000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-soak-'))
  const ledger = path.join(dir, 'ledger')
  const env = {
    LEDGER: ledger,
    SELF_RECYCLE_MAX_RSS: '160MiB',
    SELF_RECYCLE_MAX_HEAP: 'off',
    SELF_RECYCLE_INTERVAL: '100ms',
    SELF_RECYCLE_STRIKES: '2',
    SELF_RECYCLE_WARMUP: '0',
    SELF_RECYCLE_MIN_UPTIME: '500ms',
    SELF_RECYCLE_DRAIN_TIMEOUT: '5s',
    SELF_RECYCLE_SIGNALS: 'on',
    SELF_RECYCLE_LOG: 'json'
  }
  const conf = writeSupervisorConf(dir, [`[program:worker]
command=${process.execPath} ${path.join(FIXTURES, 'soak-worker.js')}
process_name=%(program_name)s_%(process_num)02d
numprocs=2
environment=${supervisorEnvironment(env)}
autorestart=true
startsecs=0
stopsignal=TERM
stopwaitsecs=10
stdout_logfile=%(here)s/%(program_name)s_%(process_num)02d.out.log
stderr_logfile=%(here)s/%(program_name)s_%(process_num)02d.err.log`])
  const supervisord = startSupervisord(conf, cleanEnv())
  const lines = () => (fs.existsSync(ledger) ? fs.readFileSync(ledger, 'utf8').split('\n') : [])
  try {
    await waitFor(() => readLedger(ledger).recycles.length >= 30, 240000, '30 recycles under Supervisor')
    // Stop while a worker drains: its drain must finish its jobs, then it stops.
    const drains = lines().filter((l) => l.startsWith('drain-start ')).length
    await waitFor(() => lines().filter((l) => l.startsWith('drain-start ')).length > drains, 60000, 'a drain to stop during')
    supervisord.ctl('stop', 'worker:*')
  } finally {
    await supervisord.stop()
  }
  const log = fs.readFileSync(path.join(dir, 'supervisord.log'), 'utf8')
  const result = readLedger(ledger)
  assert.deepEqual(result.lost, [], `lost jobs; supervisord.log:\n${log}`)
  assert.ok(result.recycles.length >= 30)
  // Each process that recycled left through its drain: its exit event says 75, or 0 when
  // the final stop joined that drain (a `stop` line of the same pid).
  const byPid = (kind) => new Map(lines().filter((l) => l.startsWith(`${kind} `)).map((l) => [l.split(' ')[1], l.split(' ')[2]]))
  const [recycled, exitCodes, stopped] = [byPid('recycle'), byPid('exit-event'), byPid('stop')]
  for (const pid of recycled.keys()) {
    const expected = stopped.has(pid) ? ['0', '75'] : ['75']
    assert.ok(expected.includes(exitCodes.get(pid) ?? 'none'), `pid ${pid} recycled and left with ${exitCodes.get(pid) ?? 'no exit event'}; supervisord.log:\n${log}`)
  }
  const exits75 = log.match(/exited: worker_0\d \(exit status 75; not expected\)/g) || []
  assert.ok(exits75.length >= [...exitCodes.values()].filter((c) => c === '75').length - 2, log)
  // Every exit is a recycle (75) or the final stop (0): nothing else. On a loaded machine
  // the stop can reach a replacement still booting, before any JS ran (no `boot` line): it
  // has no job to lose and dies of the SIGTERM as node does by default.
  const booted = new Set(lines().filter((l) => l.startsWith('boot ')).map((l) => l.split(' ')[1]))
  const pidOf = {}
  const ends = []
  for (const m of log.matchAll(/spawned: '(worker_0\d)' with pid (\d+)|(exited|stopped): (worker_0\d) \((?:exit status (\d+)|terminated by (\w+))/g)) {
    if (m[1]) pidOf[m[1]] = m[2]
    else ends.push({ how: m[3], pid: pidOf[m[4]], status: m[5] ?? m[6] })
  }
  const unexpected = ends.filter((e) => !['0', '75'].includes(e.status) && !(e.how === 'stopped' && e.status === 'SIGTERM' && !booted.has(e.pid)))
  assert.deepEqual(unexpected, [], log)
  assert.ok(ends.some((e) => e.status === '0'), log)
  assert.equal(ends.filter((e) => e.how === 'stopped').length, 2, log)
  const stopLines = lines().filter((l) => l.startsWith('stop '))
  assert.ok(stopLines.some((l) => l.endsWith(':true')), `the stop joined a recycle drain: ${stopLines}`)
  for (const file of fs.readdirSync(dir).filter((f) => f.endsWith('.err.log'))) {
    assert.doesNotMatch(fs.readFileSync(path.join(dir, file), 'utf8'), /FATAL ERROR/)
  }
  fs.rmSync(dir, { recursive: true, force: true })
})

test('a staged deploy under Supervisor: the rest of the group starts only once the canary\'s baseline passes', { timeout: 120000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-canary-'))
  const ledger = path.join(dir, 'ledger')
  const conf = writeSupervisorConf(dir, [`[program:worker]
command=${process.execPath} ${path.join(FIXTURES, 'pm2-ready-worker.js')}
process_name=%(program_name)s_%(process_num)02d
numprocs=2
autostart=false
autorestart=false
environment=${supervisorEnvironment({ LEDGER: ledger, SELF_RECYCLE_WARMUP: '2s', SELF_RECYCLE_MAX_RSS: '300MiB', SELF_RECYCLE_LOG: 'off' })},SELF_RECYCLE_STATUS_FILE="${dir}/%(process_num)02d.status.json"`])
  const supervisord = startSupervisord(conf, cleanEnv())
  try {
    await waitFor(() => { try { supervisord.ctl('status'); return true } catch (e) { return /worker_0/.test(String(e.stdout)) } }, 10000, 'supervisord up')
    const script = path.join(__dirname, '..', 'examples', 'deploy', 'supervisor-canary.sh')
    const cliPath = path.join(__dirname, '..', 'js', 'cli.js')
    execFileSync('sh', [script, 'worker', path.join(dir, '00.status.json'), '30', '-c', conf], { env: { ...process.env, SELF_RECYCLE_CLI: `${process.execPath} ${cliPath}` }, stdio: 'ignore' })
    const boots = () => (fs.existsSync(ledger) ? fs.readFileSync(ledger, 'utf8').split('\n').filter((l) => l.endsWith(' boot')).length : 0)
    await waitFor(() => boots() === 2, 10000, 'both workers booted')
  } finally {
    await supervisord.stop()
  }
  const lines = fs.readFileSync(ledger, 'utf8').split('\n').filter(Boolean).map((l) => l.split(' '))
  const [canary, rest] = [...new Set(lines.filter((l) => l[2] === 'boot').map((l) => l[1]))]
  const canaryBaseline = lines.find((l) => l[1] === canary && l[2] === 'baseline')
  const restBoot = lines.find((l) => l[1] === rest && l[2] === 'boot')
  assert.equal(canaryBaseline[3], 'true')
  assert.ok(Number(restBoot[0]) >= Number(canaryBaseline[0]), 'the rest started after the canary\'s baseline passed')
  fs.rmSync(dir, { recursive: true, force: true })
})
