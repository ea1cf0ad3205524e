'use strict'
// The status file, in real processes and real files: a write that fails is said once (a
// `warning` event with the path and the errno) and kept in stats().failures; `{pid}` and
// `{instance}` give each instance its own file; a second writer of one path is said. `check`
// and `status` refuse what is not a status file (a FIFO, /dev/zero, a directory, a corrupt
// or forged JSON) with exit 2, without blocking.

const test = require('node:test')
const assert = require('node:assert/strict')
const { spawn, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { FIXTURES, cleanEnv, parseEvents } = require('./processes')

const cli = path.join(__dirname, '..', 'js', 'cli.js')
const worker = path.join(FIXTURES, 'preflight-worker.js')

function scratch () {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-status-file-'))
  fs.chmodSync(dir, 0o700)
  return dir
}

/**
 * Starts the worker with `env`; resolves once `until(state)` holds (for what it printed:
 * `state.events` from stderr, `state.stdout`; or for files), then kills it. Fails after 20 s.
 */
function runWorker (env, until, spawnOptions = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [worker], {
      env: cleanEnv({ FIXTURE_MODE: 'clean', SELF_RECYCLE_LOG: 'json', SELF_RECYCLE_INTERVAL: '20ms', SELF_RECYCLE_MAX_RSS: '400MiB', ...env }),
      stdio: ['ignore', 'pipe', 'pipe'],
      ...spawnOptions
    })
    const state = { stdout: '', stderr: '', events: [], pid: child.pid }
    const timer = setTimeout(() => { clearInterval(poll); child.kill('SIGKILL'); reject(new Error(`timed out\n${state.stdout}\n${state.stderr}`)) }, 20000)
    let done = false
    const look = () => {
      state.events = parseEvents(state.stderr)
      if (!done && until(state)) {
        done = true
        clearTimeout(timer)
        clearInterval(poll)
        child.kill('SIGKILL')
        child.once('close', () => resolve(state))
      }
    }
    // Some facts are files, not output: look again now and then, too.
    const poll = setInterval(look, 20)
    child.stdout.on('data', (chunk) => { state.stdout += chunk; look() })
    child.stderr.on('data', (chunk) => { state.stderr += chunk; look() })
  })
}

const warnings = (state) => state.events.filter((e) => e.event === 'warning')

async function expectUnwritable (file, { errno, error }, spawnOptions) {
  const state = await runWorker({ SELF_RECYCLE_STATUS_FILE: file, FIXTURE_STATS: '1' }, (s) => /stats-failures/.test(s.stdout) && warnings(s).length > 0, spawnOptions)
  const [warning] = warnings(state)
  assert.equal(warning.code, 'status-file-unwritable')
  assert.equal(warning.path, file)
  assert.equal(warning.errno, errno)
  assert.match(warning.error, error)
  assert.match(warning.msg, /cannot write the status file/)
  const failures = JSON.parse(/stats-failures (.*)/.exec(state.stdout)[1])
  assert.equal(failures.statusFile.path, file)
  assert.equal(failures.statusFile.errno, errno)
  return state
}

test('a symlinked directory: not followed, a warning without errno, nothing written through it', async () => {
  const dir = scratch()
  fs.mkdirSync(path.join(dir, 'real'), { mode: 0o700 })
  fs.symlinkSync(path.join(dir, 'real'), path.join(dir, 'link'))
  await expectUnwritable(path.join(dir, 'link', 'status.json'), { errno: null, error: /is a symlink/ })
  assert.deepEqual(fs.readdirSync(path.join(dir, 'real')), [])
  fs.rmSync(dir, { recursive: true, force: true })
})

test('a directory writable by others (mode 777): a warning naming the mode', async () => {
  const dir = scratch()
  fs.mkdirSync(path.join(dir, 'open'))
  fs.chmodSync(path.join(dir, 'open'), 0o777)
  await expectUnwritable(path.join(dir, 'open', 'status.json'), { errno: null, error: /writable by group or others \(mode 777\)/ })
  fs.rmSync(dir, { recursive: true, force: true })
})

test('a read-only directory: EACCES (as root, the worker runs as nobody: root writes anywhere)', async () => {
  const dir = scratch()
  const readOnly = path.join(dir, 'ro')
  fs.mkdirSync(readOnly)
  let spawnOptions = {}
  if (process.getuid() === 0) {
    fs.chmodSync(dir, 0o755)
    fs.chownSync(readOnly, 65534, 65534)
    spawnOptions = { uid: 65534, gid: 65534 }
  }
  fs.chmodSync(readOnly, 0o500)
  await expectUnwritable(path.join(readOnly, 'status.json'), { errno: 'EACCES', error: /Permission denied/ }, spawnOptions)
  fs.rmSync(dir, { recursive: true, force: true })
})

test('a directory where the file should be: EISDIR; a file where the directory should be: ENOTDIR', async () => {
  const dir = scratch()
  fs.mkdirSync(path.join(dir, 'status.json'))
  await expectUnwritable(path.join(dir, 'status.json'), { errno: 'EISDIR', error: /cannot rename/ })
  fs.writeFileSync(path.join(dir, 'plain'), '')
  const state = await runWorker({ SELF_RECYCLE_STATUS_FILE: path.join(dir, 'plain', 'status.json') }, (s) => warnings(s).length > 0)
  assert.match(warnings(state)[0].error, /not a directory|ENOTDIR|Not a directory/i)
  fs.rmSync(dir, { recursive: true, force: true })
})

test('a failure is said once, not at every write', async () => {
  const dir = scratch()
  fs.mkdirSync(path.join(dir, 'status.json'))
  // The sampler writes every 2 s: wait until stats() counts three failed writes.
  const count = (s) => {
    const printed = [...s.stdout.matchAll(/stats-failures (.*)/g)].map((m) => JSON.parse(m[1]))
    return printed.at(-1)?.statusFile?.count ?? 0
  }
  const state = await runWorker({ SELF_RECYCLE_STATUS_FILE: path.join(dir, 'status.json'), FIXTURE_STATS: '1' }, (s) => count(s) >= 3)
  assert.equal(warnings(state).length, 1, state.stderr)
  fs.rmSync(dir, { recursive: true, force: true })
})

test('{pid} and {instance} give each process its own file; a shared path is said by the second writer', async () => {
  const dir = scratch()
  const byPid = await runWorker({ SELF_RECYCLE_STATUS_FILE: path.join(dir, 'w-{pid}.json') }, (s) => fs.existsSync(path.join(dir, `w-${s.pid}.json`)))
  assert.equal(JSON.parse(fs.readFileSync(path.join(dir, `w-${byPid.pid}.json`), 'utf8')).pid, byPid.pid)
  // PM2 cluster mode: NODE_APP_INSTANCE is 0, 1...
  for (const instance of ['0', '1']) {
    await runWorker({ SELF_RECYCLE_STATUS_FILE: path.join(dir, 'i-{instance}.json'), NODE_APP_INSTANCE: instance }, () => fs.existsSync(path.join(dir, `i-${instance}.json`)))
  }
  // Two live writers of one path: the second one reads the first one's pid and says so.
  const shared = path.join(dir, 'shared.json')
  const first = spawn(process.execPath, [worker], { env: cleanEnv({ FIXTURE_MODE: 'clean', SELF_RECYCLE_LOG: 'off', SELF_RECYCLE_STATUS_FILE: shared }), stdio: 'ignore' })
  try {
    while (!fs.existsSync(shared)) await new Promise((resolve) => setTimeout(resolve, 20))
    const second = await runWorker({ SELF_RECYCLE_STATUS_FILE: shared }, (s) => warnings(s).length > 0)
    const [warning] = warnings(second)
    assert.equal(warning.code, 'status-file-shared')
    assert.equal(warning.otherPid, first.pid)
    assert.match(warning.msg, /\{pid\} or \{instance\}/)
  } finally {
    first.kill('SIGKILL')
  }
  fs.rmSync(dir, { recursive: true, force: true })
})

function cliRun (...args) {
  const result = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 10000 })
  assert.notEqual(result.error?.code, 'ETIMEDOUT', `${args.join(' ')} hung`)
  return result
}

test('check and status refuse a FIFO, /dev/zero and a directory at once, with exit 2', () => {
  const dir = scratch()
  const fifo = path.join(dir, 'fifo')
  assert.equal(spawnSync('mkfifo', [fifo]).status, 0)
  for (const [file, kind] of [[fifo, 'a FIFO'], ['/dev/zero', 'a character device'], [dir, 'a directory']]) {
    for (const command of ['check', 'status']) {
      const result = cliRun(command, file)
      assert.equal(result.status, 2, `${command} ${file}: ${result.stdout}${result.stderr}`)
      assert.match(result.stdout + result.stderr, new RegExp(`${file.replace(/[/.]/g, '\\$&')} is ${kind}, not a status file`))
    }
  }
  fs.rmSync(dir, { recursive: true, force: true })
})

test('check validates the content: pid 0, -1, "1", null, a null failures list, a future time', () => {
  const dir = scratch()
  const file = path.join(dir, 'status.json')
  const valid = () => ({
    schema: 1,
    pid: process.pid,
    time: new Date().toISOString(),
    writeEveryMs: 2000,
    uptimeMs: 5000,
    state: 'running',
    sample: { rss: 1 << 26, heapUsed: 1 << 24 },
    limits: { rss: null, heap: null },
    warmupMs: 1000,
    baseline: { rss: 1 << 26, heapUsed: 1 << 24, ready: true, failures: [] },
    postGcSlopeBytesPerMin: null,
    postGcPoints: 0,
    reinits: [],
    recentEvents: []
  })
  const write = (status) => fs.writeFileSync(file, JSON.stringify(status))
  write(valid())
  assert.equal(cliRun('check', file, '--ready').status, 0, 'a valid status passes (the test can pass)')
  for (const [change, expected] of [
    [{ pid: 0 }, /pid is 0, expected a process id/],
    [{ pid: -1 }, /pid is -1, expected a process id/],
    [{ pid: '1' }, /pid is "1", expected a process id/],
    [{ pid: 1 }, /pid is 1, and PID 1 here is not node/],
    [{ baseline: { rss: 1, heapUsed: 1, ready: false, failures: null } }, /baseline\.failures is null/],
    [{ time: 'yesterday' }, /time is "yesterday"/],
    [{ state: 42 }, /state is 42/]
  ]) {
    write({ ...valid(), ...change })
    for (const command of ['check', 'status']) {
      const result = command === 'check' ? cliRun(command, file, '--ready') : cliRun(command, file)
      assert.equal(result.status, 2, `${JSON.stringify(change)} ${command}: ${result.stdout}${result.stderr}`)
      assert.match(result.stdout + result.stderr, expected)
      assert.doesNotMatch(result.stderr, /TypeError/)
    }
  }
  fs.writeFileSync(file, 'null')
  assert.equal(cliRun('check', file).status, 2)
  assert.match(cliRun('status', file).stderr, /expected a JSON object, found null/)
  fs.writeFileSync(file, '{}')
  const any = cliRun('status', file)
  assert.equal(any.status, 2, 'status refuses any JSON that is not a status')
  assert.doesNotMatch(any.stdout, /undefined|NaN/)
  write({ ...valid(), time: new Date(Date.now() + 3600000).toISOString() })
  const future = cliRun('check', file)
  assert.equal(future.status, 1, future.stdout)
  assert.match(future.stdout, /is 3600 s in the future/)
  write({ ...valid(), time: new Date(Date.now() + 2000).toISOString() })
  assert.equal(cliRun('check', file).status, 0, 'a little clock skew is allowed')
  fs.rmSync(dir, { recursive: true, force: true })
})

test('check and status take one FILE: an extra argument is a usage error', () => {
  for (const command of ['check', 'status']) {
    const result = cliRun(command, '/tmp/a.json', '/tmp/b.json')
    assert.equal(result.status, 2)
    assert.match(result.stderr, /unexpected argument "\/tmp\/b\.json"/)
  }
})

test('PM2 cluster mode, instances: 2, one STATUS_FILE setting with {instance}: a file per instance, each checked healthy', { timeout: 120000 }, async () => {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-pm2-status-'))
  const dir = path.join(home, 'status')
  fs.mkdirSync(dir, { mode: 0o700 })
  const pm2 = require.resolve('pm2/bin/pm2')
  const ecosystem = path.join(home, 'ecosystem.config.js')
  fs.writeFileSync(ecosystem, `module.exports = { apps: [${JSON.stringify({
    name: 'status-worker',
    script: path.join(FIXTURES, 'pm2-ready-worker.js'),
    exec_mode: 'cluster',
    instances: 2,
    env: { LEDGER: path.join(home, 'ledger'), SELF_RECYCLE_STATUS_FILE: path.join(dir, 'status-{instance}.json'), SELF_RECYCLE_LOG: 'off' }
  })}] }\n`)
  const run = (...args) => require('node:child_process').execFileSync(process.execPath, [pm2, ...args], { env: cleanEnv({ PM2_HOME: home }), encoding: 'utf8' })
  try {
    run('start', ecosystem)
    const files = [path.join(dir, 'status-0.json'), path.join(dir, 'status-1.json')]
    const deadline = Date.now() + 30000
    while (!files.every((f) => fs.existsSync(f)) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100))
    assert.deepEqual(fs.readdirSync(dir).filter((f) => !f.startsWith('.')).sort(), ['status-0.json', 'status-1.json'])
    const pids = files.map((f) => JSON.parse(fs.readFileSync(f, 'utf8')).pid)
    assert.notEqual(pids[0], pids[1], 'two instances, two files')
    for (const file of files) assert.equal(cliRun('check', file).status, 0, file)
    // Stopped: each file now names a process that is gone.
    run('stop', 'status-worker')
    for (const file of files) assert.equal(cliRun('check', file).status, 1, `${file} after the stop`)
  } finally {
    try { run('kill') } catch {}
    fs.rmSync(home, { recursive: true, force: true })
  }
})

test('a worker that is PID 1 of its own PID namespace (a container\'s CMD node) is checked healthy from inside it', { skip: process.getuid() !== 0 && 'unshare --pid needs root' }, () => {
  const dir = scratch()
  const file = path.join(dir, 'status.json')
  // The worker as PID 1, writing its status; check runs in the same namespace, as a
  // HEALTHCHECK does (docker exec joins the container's namespaces).
  const script = `
    const { spawnSync } = require('node:child_process')
    const r = require(${JSON.stringify(path.join(__dirname, '..'))}).start({ statusFile: ${JSON.stringify(file)}, log: 'off' })
    const fs = require('node:fs')
    const wait = () => fs.existsSync(${JSON.stringify(file)}) ? check() : setTimeout(wait, 20)
    const check = () => {
      const result = spawnSync(process.execPath, [${JSON.stringify(cli)}, 'check', ${JSON.stringify(file)}], { encoding: 'utf8' })
      console.log(JSON.stringify({ pid: process.pid, status: result.status, out: result.stdout + result.stderr }))
      r.stop()
    }
    wait()`
  const result = spawnSync('unshare', ['--pid', '--fork', '--mount-proc', process.execPath, '-e', script], { encoding: 'utf8', timeout: 20000, env: cleanEnv() })
  assert.equal(result.status, 0, result.stderr)
  const inside = JSON.parse(result.stdout.trim().split('\n').pop())
  assert.equal(inside.pid, 1)
  assert.equal(inside.status, 0, inside.out)
  fs.rmSync(dir, { recursive: true, force: true })
})
