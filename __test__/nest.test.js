'use strict'
// self-recycle/nest in a real NestJS application context (@nestjs/core 12).

const test = require('node:test')
const assert = require('node:assert/strict')
const { runFixture, eventsNamed, describe } = require('./processes')

test('100 Nest contexts: the guarded provider initializes once, the watched one reports reinit', async () => {
  const result = await runFixture('nest-contexts.js', { timeoutMs: 60000, env: { SELF_RECYCLE_LOG: 'json' } })
  assert.equal(result.code, 0, describe(result))
  const report = JSON.parse(result.lines.at(-1))
  assert.equal(report.guardedInits, 1)
  assert.equal(report.distinctGuarded, 1)
  assert.equal(report.guarded.inits, 1)
  assert.equal(report.guarded.hits, 99)
  assert.equal(report.guarded.reinitAttempts, 0)
  assert.equal(report.unguardedInits, 100)
  assert.equal(report.unguarded.inits, 100)
  assert.ok(report.unguarded.heapDelta > 25 * 1024 * 1024, `heap delta ${report.unguarded.heapDelta}`)
  assert.ok(report.unguarded.rssDelta > 25 * 1024 * 1024, `rss delta ${report.unguarded.rssDelta}`)
  assert.equal(report.eventListeners, 0, 'each closed context removed its listener')
  // 99 re-initializations from one call site: reported at the 1st and the 10th, with counts.
  const reinits = eventsNamed(result, 'reinit')
  assert.deepEqual(reinits.map((e) => e.fromSite), [1, 10])
  assert.equal(reinits[0].key, 'unguarded-client')
  assert.equal(reinits[1].attempts, 10)
  // The call site is the application's code, not self-recycle's nor Nest's injector.
  assert.match(reinits[0].callSite, /nest-contexts\.js:\d+:\d+/)
  assert.doesNotMatch(reinits[0].callSite, /js[\\/]nest\.js|@nestjs/)
  assert.equal(reinits[0].cached, false)
  assert.match(reinits[0].msg, /a new value was built each time/)
})

test('the drain closes the Nest app: lifecycle hooks run, events go to Nest Logger, health goes down', async () => {
  const result = await runFixture('nest-drain.js', { timeoutMs: 30000, env: { NO_COLOR: '1' } })
  assert.equal(result.code, 75, describe(result))
  const health = JSON.parse(result.lines.find((l) => l.startsWith('health:')).slice(7))
  assert.equal(health['self-recycle'].status, 'up')
  assert.equal(health['self-recycle'].state, 'running')
  assert.deepEqual(health['self-recycle'].pressure, [])
  const draining = JSON.parse(result.lines.find((l) => l.startsWith('health-draining:')).slice(16))
  assert.equal(draining.worker.status, 'down')
  assert.equal(draining.worker.state, 'draining')
  const destroy = result.lines.indexOf('lifecycle:onModuleDestroy')
  const shutdown = result.lines.findIndex((l) => l.startsWith('lifecycle:onApplicationShutdown'))
  assert.ok(destroy >= 0 && shutdown > destroy, describe(result))
  assert.match(result.stdout, /\[SelfRecycle\] recycle: manual recycle requested; draining/)
  assert.match(result.stdout, /\[SelfRecycle\] draining \(manual\): closing the Nest application/)
  assert.equal(eventsNamed(result, 'recycle').length, 0, 'the app listens: nothing on stderr')
})

const { spawn } = require('node:child_process')
const { FIXTURES, cleanEnv, parseEvents } = require('./processes')

/** Runs fixtures/nest-stop.js and sends `signal` once it is ready. */
function stopNest (env, signal = 'SIGTERM') {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [require('node:path').join(FIXTURES, 'nest-stop.js')], { env: cleanEnv({ NO_COLOR: '1', ...env }), stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    const timer = setTimeout(() => child.kill('SIGKILL'), 30000)
    child.stdout.on('data', (chunk) => {
      stdout += chunk
      if (String(chunk).includes('ready')) child.kill(signal)
    })
    child.stderr.on('data', (chunk) => { stderr += chunk })
    child.on('close', (code, sig) => {
      clearTimeout(timer)
      resolve({ code, signal: sig, stdout, stderr, events: parseEvents(stderr), dump: `code=${code} signal=${sig}\n${stdout}\n${stderr}` })
    })
  })
}

test('Nest with enableShutdownHooks() and SIGNALS=on: every SIGTERM/SIGINT stop ends the same way (exit 0, job done)', async () => {
  for (let run = 0; run < 10; run++) {
    const signal = run % 2 ? 'SIGINT' : 'SIGTERM'
    const result = await stopNest({ FIXTURE_SHUTDOWN_HOOKS: '1' }, signal)
    assert.equal(result.code, 0, result.dump)
    assert.match(result.stdout, /job-done:ok/)
    assert.match(result.stdout, /\[SelfRecycle\] stop: SIG(TERM|INT) received; stopping/)
    assert.match(result.stdout, /\[SelfRecycle\] exit: stopping on SIG(TERM|INT): drained in \d+ ms; exiting with code 0/)
    assert.doesNotMatch(result.stdout, /WARN \[SelfRecycle\] recycle/, 'a stop is not a recycle')
  }
})

test('Nest without enableShutdownHooks: the same stop, exit 0', async () => {
  for (let run = 0; run < 3; run++) {
    const result = await stopNest({})
    assert.equal(result.code, 0, result.dump)
    assert.match(result.stdout, /job-done:ok/)
    assert.match(result.stdout, /nest-shutdown:undefined/)
  }
})

test('a shared onceProvider value is not destroyed when a per-job context closes', async () => {
  const result = await stopNest({})
  assert.match(result.stdout, /pool-after-job-context:ok/)
  assert.doesNotMatch(result.stdout.split('pool-after-job-context')[0], /pool-destroyed/)
})

test('a Nest logger silenced by a context created with logger: false does not swallow the events: they go to stderr', async () => {
  const result = await stopNest({ FIXTURE_SILENT: '1' })
  assert.equal(result.code, 0, result.dump)
  assert.deepEqual(result.events.map((e) => e.event).filter((n) => n !== 'start'), ['stop', 'drain', 'drain', 'exit'], result.dump)
  assert.doesNotMatch(result.stdout.split('ready')[1], /\[SelfRecycle\]/)
})

test('forRootAsync takes the options from an injected config provider', async () => {
  const result = await stopNest({ FIXTURE_ASYNC: '1' })
  assert.equal(result.code, 0, result.dump)
  assert.match(result.stdout, /\[SelfRecycle\] start: sampling every 50ms/)
  assert.match(result.stdout, /stop: SIGTERM received/)
})

test('with Nest\'s logger silenced, each event is written once: by LOG=json, by the auto fallback, and not at all with LOG=off', { timeout: 60000 }, async () => {
  const count = (result) => {
    const seen = {}
    for (const event of parseEvents(result.stderr)) seen[event.event] = (seen[event.event] ?? 0) + 1
    return seen
  }
  for (const [nestLogger, log] of [['false', 'json'], ['warn', 'json'], ['false', undefined], ['warn', 'pretty']]) {
    const result = await runFixture('nest-logger.js', { timeoutMs: 30000, env: { NEST_LOGGER: nestLogger, ...(log ? { SELF_RECYCLE_LOG: log } : {}) } })
    assert.equal(result.code, 75, describe(result))
    const seen = count(result)
    if (log === 'pretty') {
      assert.deepEqual(seen, {}, `pretty lines only: ${describe(result)}`)
      assert.equal(result.stderr.match(/self-recycle.*exiting with code 75/g)?.length, 1, describe(result))
    } else {
      for (const name of ['start', 'recycle', 'drain', 'exit']) assert.ok(seen[name] >= 1, `${name}: ${describe(result)}`)
      assert.equal(seen.start, 1, `logger=${nestLogger} LOG=${log}: ${JSON.stringify(seen)}`)
      assert.equal(seen.recycle, 1, `logger=${nestLogger} LOG=${log}: ${JSON.stringify(seen)}`)
      assert.equal(seen.exit, 1, `logger=${nestLogger} LOG=${log}: ${JSON.stringify(seen)}`)
    }
  }
  const silent = await runFixture('nest-logger.js', { timeoutMs: 30000, env: { NEST_LOGGER: 'false', SELF_RECYCLE_LOG: 'off' } })
  assert.equal(silent.code, 75, describe(silent))
  assert.deepEqual(count(silent), {}, `LOG=off: ${describe(silent)}`)
})

test('self-recycle/nest linked from a directory (npm link, a workspace): it uses the app\'s own copy of Nest', async () => {
  const fs = require('node:fs')
  const os = require('node:os')
  const path = require('node:path')
  const { spawnSync } = require('node:child_process')
  const root = path.join(__dirname, '..')
  const app = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-linked-'))
  try {
    const modules = path.join(app, 'node_modules')
    fs.mkdirSync(path.join(modules, '@nestjs'), { recursive: true })
    // The app's own copies of Nest (not the checkout's): dependency injection tells copies apart.
    for (const name of ['common', 'core']) fs.cpSync(path.join(root, 'node_modules', '@nestjs', name), path.join(modules, '@nestjs', name), { recursive: true })
    for (const name of ['reflect-metadata', 'rxjs', 'tslib', 'uid', 'iterare', 'fast-safe-stringify', 'path-to-regexp', 'file-type', 'load-esm', '@standard-schema', '@lukeed', 'strtok3', 'token-types', 'uint8array-extras', '@tokenizer', 'peek-readable', 'ieee754', '@borewit']) {
      const from = path.join(root, 'node_modules', name)
      if (fs.existsSync(from)) fs.symlinkSync(from, path.join(modules, name))
    }
    // self-recycle as `npm install <checkout>` leaves it: a symlink to the checkout.
    fs.symlinkSync(root, path.join(modules, 'self-recycle'))
    fs.writeFileSync(path.join(app, 'main.js'), `
      require('reflect-metadata')
      const { Module } = require('@nestjs/common')
      const { NestFactory } = require('@nestjs/core')
      const { SelfRecycleModule, SELF_RECYCLE } = require('self-recycle/nest')
      class AppModule {}
      Module({ imports: [SelfRecycleModule.forRoot({ log: 'off' })] })(AppModule)
      NestFactory.createApplicationContext(AppModule, { logger: false, abortOnError: false }).then(async (ctx) => {
        console.log('booted ' + (typeof ctx.get(SELF_RECYCLE).stats === 'function'))
        await ctx.close()
        process.exit(0)
      }, (error) => { console.error(String(error?.stack ?? error)); process.exitCode = 1 })
    `)
    const result = spawnSync(process.execPath, ['main.js'], { cwd: app, encoding: 'utf8', env: { ...process.env, SELF_RECYCLE_LOG: 'off' }, timeout: 60000 })
    assert.equal(result.status, 0, `${result.stdout}\n${result.stderr}`)
    assert.match(result.stdout, /booted true/)
  } finally {
    fs.rmSync(app, { recursive: true, force: true })
  }
})
