'use strict'
// The container recipes of docs/containers.md, taken from the file: the Kubernetes
// Deployment's environment and probe commands run as written against a worker that is PID 1
// of its own PID namespace (as a container's command is); the Docker line's settings are
// accepted and its stop timeout outlasts the drain.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawn, spawnSync } = require('node:child_process')
const { FIXTURES, cleanEnv, parseEvents } = require('./processes')
const { recipe } = require('./doc-blocks')

const CLI = path.join(__dirname, '..', 'js', 'cli.js')
const seconds = (duration) => {
  const match = /^(\d+)(ms|s|m)$/.exec(duration)
  return Number(match[1]) * { ms: 0.001, s: 1, m: 60 }[match[2]]
}

/** The Deployment's container: env (name -> value), probes (kind -> argv), grace (s). */
function kubernetes () {
  const { text } = recipe('docs/containers.md', 'kubernetes')
  const env = {}
  for (const [, name, value] of text.matchAll(/- name: (\S+)\n\s+value: "([^"]*)"/g)) env[name] = value
  const probes = {}
  for (const [, kind, command] of text.matchAll(/(\w+Probe):\n\s+exec: \{ command: (\[.*\]) \}/g)) probes[kind] = JSON.parse(command)
  const grace = Number(/terminationGracePeriodSeconds: (\d+)/.exec(text)?.[1])
  return { env, probes, grace }
}

/**
 * A probe's command as the kubelet runs it: inside the container (the PID and mount
 * namespaces of `pid1`, as seen from here), with the repository's CLI for `npx`.
 */
function runProbe (argv, statusFile, pid1) {
  assert.deepEqual(argv.slice(0, 4), ['npx', '--no-install', 'self-recycle', 'check'])
  const args = argv.slice(3).map((arg) => (arg === '/tmp/self-recycle.json' ? statusFile : arg))
  return spawnSync('nsenter', ['--target', String(pid1), '--pid', '--mount', process.execPath, CLI, ...args], { encoding: 'utf8', timeout: 20000, env: cleanEnv() })
}

/** The host pid of the first process `unshare --fork` started (PID 1 of its namespace). */
async function firstChild (pid) {
  for (let i = 0; i < 200; i++) {
    try {
      const child = Number(fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/)[0])
      if (child > 0) return child
    } catch {}
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
  throw new Error(`unshare ${pid} started no child`)
}

test('the Kubernetes recipe, as written: settings accepted, probes pass against PID 1 of a PID namespace, a pod deletion drains within the grace period (exit 0)', { skip: process.getuid() !== 0 && 'unshare --pid needs root' }, async () => {
  const { env, probes, grace } = kubernetes()
  assert.deepEqual(Object.keys(probes).sort(), ['livenessProbe', 'readinessProbe', 'startupProbe'])
  assert.ok(grace > seconds(env.SELF_RECYCLE_DRAIN_TIMEOUT), `terminationGracePeriodSeconds ${grace} outlasts DRAIN_TIMEOUT ${env.SELF_RECYCLE_DRAIN_TIMEOUT}`)
  assert.equal(env.SELF_RECYCLE_STATUS_FILE, '/tmp/self-recycle.json')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-k8s-'))
  const statusFile = path.join(dir, 'status.json')
  // The recipe's environment; only the status file moves to a private directory, and the
  // warm-up (the default 30 s, which READY=baseline waits for) is shortened.
  const workerEnv = cleanEnv({ ...env, SELF_RECYCLE_STATUS_FILE: statusFile, SELF_RECYCLE_WARMUP: '1s', SELF_RECYCLE_LOG: 'json', FIXTURE_IDLE_EXIT_MS: '120000' })
  const child = spawn('unshare', ['--pid', '--fork', '--mount-proc', process.execPath, path.join(FIXTURES, 'worker.js')], { env: workerEnv, stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (chunk) => { stderr += chunk })
  const closed = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal })))
  try {
    const pid1 = await firstChild(child.pid)
    // The startup probe, as the kubelet runs it, until it passes (the recipe allows 2 min).
    let startup
    for (let i = 0; i < 120; i++) {
      startup = runProbe(probes.startupProbe, statusFile, pid1)
      if (startup.status === 0) break
      await new Promise((resolve) => setTimeout(resolve, 500))
    }
    assert.equal(startup.status, 0, `${startup.stdout}${startup.stderr}\n${stderr}`)
    for (const kind of ['readinessProbe', 'livenessProbe']) {
      const result = runProbe(probes[kind], statusFile, pid1)
      assert.equal(result.status, 0, `${kind}: ${result.stdout}${result.stderr}`)
    }
    // A pod deletion: SIGTERM to the container's PID 1.
    const sentAt = Date.now()
    process.kill(pid1, 'SIGTERM')
    const { code } = await closed
    assert.equal(code, 0, stderr)
    assert.ok((Date.now() - sentAt) / 1000 < grace)
    const events = parseEvents(stderr)
    const [start] = events.filter((e) => e.event === 'start')
    assert.equal(start.pid, 1, 'PID 1 of its namespace')
    assert.equal(start.config.restart, 'exec')
    assert.equal(start.config.signals, true)
    assert.equal(start.config.drainTimeoutMs, seconds(env.SELF_RECYCLE_DRAIN_TIMEOUT) * 1000)
    assert.equal(events.find((e) => e.event === 'exit')?.signal, 'SIGTERM')
  } finally {
    child.kill('SIGKILL')
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('the Docker recipe, as written: its settings are accepted and its stop timeout outlasts the drain', () => {
  const { text } = recipe('docs/containers.md', 'docker')
  const env = Object.fromEntries([...text.matchAll(/-e (SELF_RECYCLE_\w+)=(\S+)/g)].map(([, name, value]) => [name, value]))
  assert.ok(Object.keys(env).length >= 3, text)
  assert.ok(Number(/--stop-timeout (\d+)/.exec(text)[1]) > seconds(env.SELF_RECYCLE_DRAIN_TIMEOUT))
  assert.match(text, /--restart unless-stopped/)
  const result = spawnSync(process.execPath, [path.join(FIXTURES, 'worker.js')], {
    env: cleanEnv({ ...env, SELF_RECYCLE_LOG: 'json', FIXTURE_IDLE_EXIT_MS: '50' }),
    encoding: 'utf8',
    timeout: 20000
  })
  assert.equal(result.status, 0, result.stderr)
  const start = parseEvents(result.stderr).find((e) => e.event === 'start')
  assert.deepEqual([start.config.restart, start.config.signals, start.warnings], ['exec', true, []], result.stderr)
})
