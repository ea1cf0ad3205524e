'use strict'
// A user's install: a fresh app outside the repo installs the two packed tarballs (dist/,
// from `npm run pack`) with no cargo, rustc or cc on PATH, then requires, imports and runs
// self-recycle, and a leaking worker recycles itself.

const test = require('node:test')
const assert = require('node:assert/strict')
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { cleanEnv, parseEvents } = require('./processes')

const root = path.join(__dirname, '..')
const { version } = require('../package.json')
const tarballs = ['self-recycle', 'self-recycle-linux-x64-gnu'].map((name) => path.join(root, 'dist', `${name}-${version}.tgz`))

/** A PATH holding node, npm and pnpm only: no Rust toolchain and no C compiler. */
function toolchainFreePath () {
  const bin = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-bin-'))
  const npmCli = path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js')
  const pnpmCli = path.join(root, 'node_modules', 'pnpm', 'bin', 'pnpm.cjs')
  fs.symlinkSync(process.execPath, path.join(bin, 'node'))
  for (const [name, cli] of [['npm', npmCli], ['pnpm', pnpmCli]]) {
    fs.writeFileSync(path.join(bin, name), `#!/bin/sh\nexec "${process.execPath}" "${cli}" "$@"\n`, { mode: 0o755 })
  }
  return bin
}

function freshApp () {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-app-'))
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }))
  fs.writeFileSync(path.join(dir, 'leaky.js'), `
const recycle = require('self-recycle')
const r = recycle.start({ maxRss: '160MiB', maxHeap: 'off', interval: '25ms', strikes: 2, warmup: 0, minUptime: 0, log: 'json' })
r.onDrain(() => console.log('drain-hook'))
const kept = []
setInterval(() => kept.push(Buffer.alloc(4 << 20, 1)), 20)
`)
  fs.writeFileSync(path.join(dir, 'probe.mjs'), `
import recycle, { start, once } from 'self-recycle'
const r = start({ log: 'off' })
r.once('start', (event) => {
  console.log(JSON.stringify({ v8: event.probes.v8, rss: event.probes.rss, once: typeof once, same: recycle.start === start }))
  r.stop()
})
`)
  return dir
}

function installAndRun (t, manager, extraArgs = []) {
  for (const file of tarballs) assert.ok(fs.existsSync(file), `${file} is missing: run npm run pack`)
  const bin = toolchainFreePath()
  const env = cleanEnv({ PATH: bin, HOME: fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-home-')) })
  for (const tool of ['cargo', 'rustc', 'cc', 'gcc']) {
    const found = spawnSync('sh', ['-c', `command -v ${tool}`], { env })
    assert.notEqual(found.status, 0, `${tool} is reachable on the test PATH`)
  }
  const app = freshApp()
  // An unreachable registry: the other platforms' optional packages are skipped at once,
  // and nothing but the two local tarballs can be installed.
  const registry = 'http://127.0.0.1:9/'
  const args = manager === 'npm'
    ? ['install', '--no-audit', '--no-fund', '--registry', registry, '--fetch-retries', '0', '--cache', path.join(app, '.npm-cache'), ...extraArgs, ...tarballs]
    : ['add', '--registry', registry, '--config.fetch-retries=0', '--store-dir', path.join(app, '.pnpm-store'), ...extraArgs, ...tarballs]
  const installed = spawnSync(path.join(bin, manager), args, { cwd: app, env, encoding: 'utf8', timeout: 120000 })
  assert.equal(installed.status, 0, `${manager} ${args.join(' ')}\n${installed.stdout}\n${installed.stderr}`)
  assert.ok(!fs.existsSync(path.join(app, 'node_modules', 'self-recycle', 'target')), 'no target/ in the installed package')

  const required = spawnSync(path.join(bin, 'node'), ['-e', "const r = require('self-recycle'); console.log(typeof r.start, typeof r.once)"], { cwd: app, env, encoding: 'utf8' })
  assert.equal(required.stdout.trim(), 'function function', required.stderr)
  // An optional peer left out: self-recycle/otel resolves, and register() says what to install.
  const otel = spawnSync(path.join(bin, 'node'), ['-e', "try { require('self-recycle/otel').register(); console.log('registered') } catch (e) { console.log(e.message) }"], { cwd: app, env, encoding: 'utf8' })
  assert.match(otel.stdout, /^self-recycle\/otel needs @opentelemetry\/api \(npm install @opentelemetry\/api/, otel.stderr)

  const imported = spawnSync(path.join(bin, 'node'), ['probe.mjs'], { cwd: app, env, encoding: 'utf8', timeout: 30000 })
  assert.equal(imported.status, 0, imported.stderr)
  assert.deepEqual(JSON.parse(imported.stdout), { v8: 'native', rss: 'statm', once: 'function', same: true })

  const leaky = spawnSync(path.join(bin, 'node'), ['leaky.js'], { cwd: app, env, encoding: 'utf8', timeout: 60000 })
  assert.equal(leaky.status, 75, leaky.stderr)
  const events = parseEvents(leaky.stderr)
  const recycle = events.find((e) => e.event === 'recycle')
  assert.equal(recycle?.reason, 'rss', leaky.stderr)
  assert.equal(events.find((e) => e.event === 'start')?.probes.v8, 'native')
  assert.equal(events.find((e) => e.event === 'exit')?.code, 75)
  assert.match(leaky.stdout, /drain-hook/)
}

test('npm installs the tarballs with no Rust or C toolchain; require, import and a recycle work', (t) => {
  installAndRun(t, 'npm')
})

test('npm --ignore-scripts: the same (nothing needs an install script)', (t) => {
  installAndRun(t, 'npm', ['--ignore-scripts'])
})

test('pnpm (which runs no dependency scripts) installs and runs it the same', (t) => {
  installAndRun(t, 'pnpm')
})
