'use strict'
// `self-recycle profile <pid | status file>`: a running worker answers through its private
// channel with the sites and jobs its heap grew with, and keeps running; a directory anyone
// else could use, a process of another user, a worker that never answers are refused or
// timed out, each with its own message and exit code.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawn, spawnSync } = require('node:child_process')
const { FIXTURES, cleanEnv, parseEvents } = require('./processes')

const CLI = path.join(__dirname, '..', 'js', 'cli.js')

function runtimeDir () {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-xdg-'))
  fs.chmodSync(dir, 0o700)
  return dir
}

/** Starts fixtures/profile-channel.js; resolves once it printed `channel <status>`. */
function startWorker (env) {
  const child = spawn(process.execPath, ['--expose-gc', path.join(FIXTURES, 'profile-channel.js')], {
    env: cleanEnv({ SELF_RECYCLE_LOG: 'json', SELF_RECYCLE_WARMUP: '1s', ...env }),
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const worker = { child, stdout: '', stderr: '', exited: null }
  child.stderr.on('data', (chunk) => { worker.stderr += chunk })
  worker.closed = new Promise((resolve) => child.on('close', (code, signal) => { worker.exited = { code, signal }; resolve(worker.exited) }))
  worker.channel = new Promise((resolve, reject) => {
    child.stdout.on('data', (chunk) => {
      worker.stdout += chunk
      const line = worker.stdout.split('\n').find((l) => l.startsWith('channel '))
      if (line) resolve(line.slice('channel '.length))
    })
    worker.closed.then(() => reject(new Error(`the worker exited before its channel settled: ${JSON.stringify(worker.exited)}\n${worker.stderr}`)))
  })
  worker.stop = async () => {
    if (!worker.exited) child.kill('SIGKILL')
    await worker.closed
  }
  return worker
}

function cli (args, env = {}) {
  const result = spawnSync(process.execPath, [CLI, 'profile', ...args], { env: cleanEnv(env), encoding: 'utf8', timeout: 60000 })
  return { code: result.status, stdout: result.stdout, stderr: result.stderr, text: `exit ${result.status}\nstdout: ${result.stdout}\nstderr: ${result.stderr}` }
}

test('a running worker answers twice with the leaking site and job, writes a .heapprofile, and keeps running (also asked by its status file)', { timeout: 90000 }, async () => {
  const xdg = runtimeDir()
  const statusFile = path.join(xdg, 'status.json')
  const worker = startWorker({ XDG_RUNTIME_DIR: xdg, SELF_RECYCLE_STATUS_FILE: statusFile })
  try {
    assert.equal(await worker.channel, 'on')
    const dir = path.join(xdg, 'self-recycle')
    assert.equal(fs.lstatSync(dir).mode & 0o777, 0o700)
    assert.equal(fs.statSync(path.join(dir, `${worker.child.pid}.channel`)).mode & 0o777, 0o600)

    const first = cli([String(worker.child.pid), '--json'], { XDG_RUNTIME_DIR: xdg })
    assert.equal(first.code, 0, first.text)
    const answer = JSON.parse(first.stdout)
    assert.equal(answer.pid, worker.child.pid)
    assert.equal(answer.state, 'running')
    // Since the baseline, or since the start when the baseline is younger than 2 s (a fast run).
    assert.ok(['baseline', 'start'].includes(answer.profile.since), answer.profile.since)
    assert.equal(answer.profile.topSites[0].functionName, 'leakIngest', JSON.stringify(answer.profile.topSites))
    assert.equal(answer.profile.topSites[0].file, path.join('__test__', 'fixtures', 'profile-channel.js'))
    assert.equal(answer.topJobs[0].name, 'ingest', JSON.stringify(answer.topJobs))
    assert.ok(!answer.topJobs.some((job) => job.name === 'render'), JSON.stringify(answer.topJobs))
    // 128 KiB of doubles per ingest job.
    const ratio = answer.topJobs[0].retainedPerJob / (128 * 1024)
    assert.ok(ratio > 0.7 && ratio < 1.3, JSON.stringify(answer.topJobs))
    assert.deepEqual(answer.jobs.map((j) => j.name).sort(), ['ingest', 'render'])
    // The whole profile: DevTools' SamplingHeapProfile, 0600, in the private directory.
    const heapProfile = answer.profile.heapProfile
    assert.equal(path.dirname(heapProfile), dir)
    assert.equal(fs.statSync(heapProfile).mode & 0o777, 0o600)
    const profile = JSON.parse(fs.readFileSync(heapProfile, 'utf8'))
    assert.equal(profile.head.callFrame.functionName, '(root)')
    assert.ok(profile.samples.length > 10)

    // Asked again, by its status file, in words: the same facts; the first profile is replaced.
    const second = cli([statusFile], { XDG_RUNTIME_DIR: xdg })
    assert.equal(second.code, 0, second.text)
    assert.match(second.stdout, new RegExp(`^pid ${worker.child.pid}: running, up \\d+ s`))
    assert.match(second.stdout, /allocation sites that grew since the (baseline|process started)[^\n]*\n[^\n]*\n +\d+ MiB +\d+% +leakIngest \(__test__\/fixtures\/profile-channel\.js:\d+:\d+\)/)
    assert.match(second.stdout, /named jobs the heap grew with \(fit over \d+ windows between major GCs, R² [\d.]+\):\n +retained\/job +jobs +share +name\n +\d+ KiB +\d+ +\d+% +ingest\n/)
    assert.match(second.stdout, /the whole profile: \S+\.heapprofile/)
    assert.equal(fs.existsSync(heapProfile), false, 'one profile per worker is kept')
    // Nothing left but the marker and the latest profile; no answer waits unread.
    const left = fs.readdirSync(dir).sort()
    assert.equal(left.length, 2, left.join(' '))
    assert.ok(left.includes(`${worker.child.pid}.channel`) && left.some((f) => f.endsWith('.heapprofile')), left.join(' '))

    // It keeps running: no recycle, no exit.
    assert.equal(worker.exited, null)
    process.kill(worker.child.pid, 0)
    const events = parseEvents(worker.stderr).map((e) => e.event)
    assert.ok(events.includes('baseline'), worker.stderr)
    assert.ok(!events.includes('recycle') && !events.includes('exit'), events.join(' '))
  } finally {
    await worker.stop()
    fs.rmSync(xdg, { recursive: true, force: true })
  }
})

test('--out moves the profile; PROFILE=off answers the jobs and says why no site is named', { timeout: 60000 }, async () => {
  const xdg = runtimeDir()
  const worker = startWorker({ XDG_RUNTIME_DIR: xdg, SELF_RECYCLE_PROFILE: 'off' })
  let profiled = null
  try {
    assert.equal(await worker.channel, 'on')
    const off = path.join(xdg, 'none.heapprofile')
    const unprofiled = cli([String(worker.child.pid), '--out', off], { XDG_RUNTIME_DIR: xdg })
    assert.equal(unprofiled.code, 0, unprofiled.text)
    assert.match(unprofiled.stdout, /allocation sites: not profiled \(PROFILE=off/)
    assert.match(unprofiled.stdout, /\n +\d+ KiB +\d+ +\d+% +ingest\n/)
    assert.equal(fs.existsSync(off), false, 'no profile without the profiler')
    await worker.stop()

    profiled = startWorker({ XDG_RUNTIME_DIR: xdg })
    assert.equal(await profiled.channel, 'on')
    const out = path.join(xdg, 'mine.heapprofile')
    const asked = cli([String(profiled.child.pid), '--out', out, '--json'], { XDG_RUNTIME_DIR: xdg })
    assert.equal(asked.code, 0, asked.text)
    assert.equal(JSON.parse(asked.stdout).profile.heapProfile, out)
    assert.equal(JSON.parse(fs.readFileSync(out, 'utf8')).head.callFrame.functionName, '(root)')
    assert.deepEqual(fs.readdirSync(path.join(xdg, 'self-recycle')), [`${profiled.child.pid}.channel`])
  } finally {
    await worker.stop()
    await profiled?.stop()
    fs.rmSync(xdg, { recursive: true, force: true })
  }
})

test('a symlink planted where the directory should be: the worker writes nothing through it, the CLI refuses it', { timeout: 60000 }, async () => {
  const xdg = runtimeDir()
  const elsewhere = path.join(xdg, 'elsewhere')
  fs.mkdirSync(elsewhere, { mode: 0o700 })
  fs.symlinkSync(elsewhere, path.join(xdg, 'self-recycle'))
  const worker = startWorker({ XDG_RUNTIME_DIR: xdg })
  try {
    assert.match(await worker.channel, /^off: .*self-recycle is a symlink; it is not followed$/)
    assert.match(worker.stderr, /SELF_RECYCLE_PROFILE_CHANNEL.*the profile channel is off/s)
    assert.deepEqual(fs.readdirSync(elsewhere), [])
    const asked = cli([String(worker.child.pid)], { XDG_RUNTIME_DIR: xdg })
    assert.equal(asked.code, 1, asked.text)
    assert.match(asked.stderr, new RegExp(`process ${worker.child.pid} is not a self-recycle worker, or its profile channel is not open.*refused: \\S+/self-recycle is a symlink; it is not followed`))
    assert.deepEqual(fs.readdirSync(elsewhere), [], 'no request written through the symlink')
    assert.equal(worker.exited, null)
  } finally {
    await worker.stop()
    fs.rmSync(xdg, { recursive: true, force: true })
  }
})

test('a directory with mode 0777 is refused by the worker and by the CLI', { timeout: 60000 }, async () => {
  const xdg = runtimeDir()
  const open = path.join(xdg, 'self-recycle')
  fs.mkdirSync(open)
  fs.chmodSync(open, 0o777)
  const worker = startWorker({ XDG_RUNTIME_DIR: xdg })
  try {
    assert.match(await worker.channel, /^off: .*self-recycle has mode 0777; only a 0700 directory is trusted$/)
    assert.deepEqual(fs.readdirSync(open), [], 'no marker in a shared directory')
    // Someone else plants a marker there: the CLI still refuses the directory.
    fs.writeFileSync(path.join(open, `${worker.child.pid}.channel`), '{}', { mode: 0o600 })
    const asked = cli([String(worker.child.pid), '--json'], { XDG_RUNTIME_DIR: xdg })
    assert.equal(asked.code, 1, asked.text)
    const { ok, error } = JSON.parse(asked.stdout)
    assert.equal(ok, false)
    assert.match(error, /refused: \S+\/self-recycle has mode 0777; only a 0700 directory is trusted/)
    assert.equal(fs.existsSync(path.join(open, `${worker.child.pid}.profile-request`)), false, 'no request in a shared directory')
  } finally {
    await worker.stop()
    fs.rmSync(xdg, { recursive: true, force: true })
  }
})

test('a process of another user, a process that is not a worker, a pid that is gone, a bad status file: each refused with its reason', async () => {
  const xdg = runtimeDir()
  try {
    // Not ours: as root, a process started as uid 65534; otherwise any process of another user.
    let other = null
    let pid
    if (process.getuid() === 0) {
      other = spawn('sleep', ['60'], { uid: 65534, gid: 65534, stdio: 'ignore' })
      pid = other.pid
    } else {
      pid = Number(fs.readdirSync('/proc').find((name) => /^\d+$/.test(name) && fs.statSync(`/proc/${name}`, { throwIfNoEntry: false })?.uid !== process.getuid()))
      assert.ok(pid > 0, 'a process of another user to ask')
    }
    try {
      const asked = cli([String(pid)], { XDG_RUNTIME_DIR: xdg })
      assert.equal(asked.code, 1, asked.text)
      assert.match(asked.stderr, new RegExp(`process ${pid} belongs to (uid \\d+, not to this user|another user)`))
    } finally {
      other?.kill('SIGKILL')
    }
    // Ours, alive, not a self-recycle worker.
    const sleeper = spawn('sleep', ['60'], { stdio: 'ignore' })
    try {
      const asked = cli([String(sleeper.pid)], { XDG_RUNTIME_DIR: xdg })
      assert.equal(asked.code, 1, asked.text)
      assert.match(asked.stderr, new RegExp(`process ${sleeper.pid} is not a self-recycle worker, or its profile channel is not open`))
    } finally {
      sleeper.kill('SIGKILL')
    }
    // Gone.
    const gone = spawnSync(process.execPath, ['-e', 'console.log(process.pid)'], { encoding: 'utf8' })
    const asked = cli([gone.stdout.trim()], { XDG_RUNTIME_DIR: xdg })
    assert.equal(asked.code, 1, asked.text)
    assert.match(asked.stderr, new RegExp(`no process ${gone.stdout.trim()} is running`))
    // A file that is not a status file; usage errors.
    const junk = path.join(xdg, 'junk.json')
    fs.writeFileSync(junk, '[]')
    const refused = cli([junk])
    assert.equal(refused.code, 2, refused.text)
    assert.match(refused.stderr, /is not a status file/)
    const help = cli(['--help'])
    assert.equal(help.code, 0, help.text)
    assert.match(help.stdout, /^usage: self-recycle profile <PID \| STATUS_FILE> \[--timeout 10s\] \[--out FILE\] \[--json\]\n/)
    for (const args of [[], ['1', '2'], ['1', '--timeout', 'soon'], ['1', '--timeout', '1ms'], ['1', '--bogus'], ['0']]) {
      const usage = cli(args)
      assert.equal(usage.code, 2, `${args.join(' ')}: ${usage.text}`)
      assert.match(usage.stderr, /self-recycle profile: .+ \(see self-recycle profile --help\)/)
    }
  } finally {
    fs.rmSync(xdg, { recursive: true, force: true })
  }
})

test('a worker that never answers (stopped): the CLI gives up at --timeout with exit 3 and takes its request back', { timeout: 60000 }, async () => {
  const xdg = runtimeDir()
  const worker = startWorker({ XDG_RUNTIME_DIR: xdg })
  try {
    assert.equal(await worker.channel, 'on')
    process.kill(worker.child.pid, 'SIGSTOP')
    const asked = cli([String(worker.child.pid), '--timeout', '1500ms'], { XDG_RUNTIME_DIR: xdg })
    assert.equal(asked.code, 3, asked.text)
    assert.match(asked.stderr, new RegExp(`process ${worker.child.pid} did not answer within 1500 ms \\(a worker looks for requests once a second: its event loop may be blocked, or the process stopped\\)`))
    const dir = path.join(xdg, 'self-recycle')
    assert.deepEqual(fs.readdirSync(dir), [`${worker.child.pid}.channel`], 'the request was taken back')
    // Interrupted while it waits (Ctrl-C), the CLI takes its request back too.
    const waiting = spawn(process.execPath, [CLI, 'profile', String(worker.child.pid), '--timeout', '60s'], { env: cleanEnv({ XDG_RUNTIME_DIR: xdg }), stdio: 'ignore' })
    const waited = new Promise((resolve) => waiting.on('close', (code, signal) => resolve({ code, signal })))
    const request = path.join(dir, `${worker.child.pid}.profile-request`)
    while (!fs.existsSync(request) && waiting.exitCode === null) await new Promise((resolve) => setTimeout(resolve, 20))
    waiting.kill('SIGINT')
    assert.deepEqual(await waited, { code: 130, signal: null })
    assert.deepEqual(fs.readdirSync(dir), [`${worker.child.pid}.channel`], 'the request was taken back')
    process.kill(worker.child.pid, 'SIGCONT')
    // A request readable by others, and one without a valid nonce: read once, removed, not
    // answered; the worker goes on.
    for (const [body, mode] of [[JSON.stringify({ nonce: 'a'.repeat(32) }), 0o644], ['{"nonce":"../../etc/passwd"}', 0o600]]) {
      fs.writeFileSync(request, body, { mode })
      fs.chmodSync(request, mode)
      while (fs.existsSync(request)) await new Promise((resolve) => setTimeout(resolve, 20))
      assert.deepEqual(fs.readdirSync(dir), [`${worker.child.pid}.channel`], 'no answer to a refused request')
    }
    // Running again, it answers the next request.
    const again = cli([String(worker.child.pid), '--json'], { XDG_RUNTIME_DIR: xdg })
    assert.equal(again.code, 0, again.text)
    assert.equal(JSON.parse(again.stdout).topJobs[0].name, 'ingest')
  } finally {
    await worker.stop()
    fs.rmSync(xdg, { recursive: true, force: true })
  }
})

test('stop() closes the channel and removes its marker; a worker thread\'s recycler leaves the channel to the main thread', () => {
  const xdg = runtimeDir()
  try {
    const script = `
const { Worker } = require('node:worker_threads')
const fs = require('node:fs')
const marker = require('node:path').join(process.env.XDG_RUNTIME_DIR, 'self-recycle', process.pid + '.channel')
const r = require(${JSON.stringify(path.join(__dirname, '..'))}).start({ log: 'off' })
setImmediate(() => {
  console.log('main', r.stats().profileChannel, fs.existsSync(marker))
  new Worker(\`const r = require(${JSON.stringify(path.join(__dirname, '..'))}).start({ log: 'off' })
    setImmediate(() => { require('node:worker_threads').parentPort.postMessage(r.stats().profileChannel); r.stop() })\`, { eval: true }).on('message', (status) => {
    console.log('thread', status)
    r.stop()
    console.log('stopped', fs.existsSync(marker))
  })
})`
    const run = spawnSync(process.execPath, ['-e', script], { env: cleanEnv({ XDG_RUNTIME_DIR: xdg }), encoding: 'utf8', timeout: 30000 })
    assert.equal(run.status, 0, run.stderr)
    assert.deepEqual(run.stdout.trim().split('\n'), [
      'main on true',
      'thread off: worker thread (the main thread\'s recycler answers for the process)',
      'stopped false'
    ])
  } finally {
    fs.rmSync(xdg, { recursive: true, force: true })
  }
})

test('a directory another user made first where ours should be (/tmp squatting) is refused', { skip: process.getuid?.() !== 0 && 'running a worker as another user needs root' }, () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-squat-'))
  try {
    fs.chmodSync(tmp, 0o755)
    // Root (the squatter here) makes the directory of uid 65534 before that user's worker runs.
    const squatted = path.join(tmp, 'self-recycle-65534')
    fs.mkdirSync(squatted, { mode: 0o700 })
    const script = `const r = require(${JSON.stringify(path.join(__dirname, '..'))}).start({ log: 'off' })
setImmediate(() => { console.log(r.stats().profileChannel); r.stop() })`
    const run = spawnSync(process.execPath, ['-e', script], { uid: 65534, gid: 65534, env: cleanEnv({ TMPDIR: tmp }), encoding: 'utf8', timeout: 30000 })
    assert.equal(run.status, 0, run.stderr)
    assert.equal(run.stdout.trim(), `off: ${squatted} belongs to uid 0, not to this user (uid 65534)`)
    assert.match(run.stderr, /\[SELF_RECYCLE_PROFILE_CHANNEL\] Warning: self-recycle: the profile channel is off/)
    assert.deepEqual(fs.readdirSync(squatted), [], 'nothing written in a directory of another user')
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true })
  }
})

test('the channel sweep removes what dead processes left, their killed writers\' temp files included, and nothing of a live one', () => {
  const { sweep } = require('../js/channel.js')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-sweep-'))
  try {
    const dead = 4194303 // above pid_max's default: no such process
    const names = [`${dead}.channel`, `.${dead}.channel.${dead}.abcdef12.tmp`, `.${dead}.profile-x.heapprofile.${dead}.0badcafe.tmp`, `${process.pid}.channel`, `.${process.pid}.channel.${process.pid}.abcdef12.tmp`, `${dead}.profile-x.heapprofile`]
    for (const name of names) fs.writeFileSync(path.join(dir, name), 'x')
    sweep(dir)
    assert.deepEqual(fs.readdirSync(dir).sort(), [`${dead}.profile-x.heapprofile`, `${process.pid}.channel`, `.${process.pid}.channel.${process.pid}.abcdef12.tmp`].sort())
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
