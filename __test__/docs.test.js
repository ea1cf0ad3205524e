'use strict'
// The docs' snippets run as pasted. Every block of README.md and docs/*.md marked `runnable`
// (```js runnable, ```ts runnable) is a complete program: its install line names every
// package it imports, and it runs as a real process in a directory whose node_modules holds
// exactly those packages (self-recycle is this repository). It must emit `start`, then, on
// SIGTERM, stop by itself with exit code 0 having emitted its `events=` and printed its
// `expect=`. TypeScript compiles with the repository's tsc first; `queue=NAME` runs it on a
// real Redis and a job put on that queue must complete. Links between the docs resolve.

const test = require('node:test')
const assert = require('node:assert/strict')
const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { ROOT, docFiles, blocksOf, installedBefore, importedPackages, anchorsOf } = require('./doc-blocks')
const { cleanEnv, parseEvents } = require('./processes')
const { startRedis } = require('./redis')

// Written in parallel on another branch; linked as if it existed, checked once it does.
const PENDING_DOCS = new Set(['docs/opentelemetry.md'])

const runnable = docFiles().flatMap(blocksOf).filter((b) => b.words.includes('runnable'))

test('the docs mark complete snippets: the README has a plain worker, a Nest worker and an HTTP service', () => {
  const readme = runnable.filter((b) => b.file === 'README.md')
  assert.deepEqual(readme.map((b) => b.lang), ['js', 'ts', 'js'])
  assert.match(readme[1].text, /self-recycle\/nest/)
  assert.match(readme[2].text, /drainHttp\(server\)/)
  for (const block of runnable) assert.ok(['js', 'ts'].includes(block.lang), `${block.file}:${block.line}: runnable ${block.lang} is not run by this test`)
})

test('every install line before a runnable snippet names every package the snippet imports', () => {
  for (const block of runnable) {
    const installed = installedBefore(block)
    assert.ok(installed, `${block.file}:${block.line}: no \`npm i ...\` block right before this runnable snippet`)
    const missing = importedPackages(block.text).filter((p) => !installed.includes(p))
    assert.deepEqual(missing, [], `${block.file}:${block.line}: imported but not in the install line (${installed.join(' ')})`)
  }
})

function previousBlock (block) {
  const blocks = blocksOf(block.file)
  return blocks[blocks.findIndex((b) => b.line === block.line) - 1]
}

/** A directory whose node_modules holds the install line's packages, and the snippet. */
function project (block) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-docs-'))
  for (const name of installedBefore(block)) {
    const link = path.join(dir, 'node_modules', name)
    fs.mkdirSync(path.dirname(link), { recursive: true })
    const target = name === 'self-recycle' ? ROOT : path.join(ROOT, 'node_modules', name)
    assert.ok(fs.existsSync(target), `${block.file}:${block.line}: ${name} is not installed in this repository`)
    fs.symlinkSync(target, link)
  }
  fs.writeFileSync(path.join(dir, `snippet.${block.lang}`), block.text)
  return dir
}

/** Events in JSON lines, or in Nest's Logger lines (`[SelfRecycle] start: ...`). */
function eventNames (text) {
  return [...parseEvents(text).map((e) => e.event), ...[...text.matchAll(/\[SelfRecycle\] (\w+): /g)].map((m) => m[1])]
}

/**
 * Runs `file` with node; once it emitted `start` (and printed every `expect=`), `ready()` is
 * awaited, then SIGTERM. Resolves with the exit and the output; a process that does not
 * stop within 20 s of SIGTERM is killed and reported.
 */
function runUntilStarted (block, dir, file, env, ready = async () => {}) {
  const expected = block.attrs.expect ? block.attrs.expect.split(',') : []
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [file], { cwd: dir, env: cleanEnv({ NO_COLOR: '1', PORT: '0', ...env }), stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    let signalled = false
    let killer = null
    const bound = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`${block.file}:${block.line}: never emitted start${expected.length ? ` and ${expected}` : ''}\n${stdout}\n${stderr}`)) }, 60000)
    const check = () => {
      if (signalled) return
      const output = stdout + stderr
      if (!eventNames(output).includes('start') || !expected.every((e) => stdout.includes(e))) return
      signalled = true
      clearTimeout(bound)
      ready().then(() => {
        child.kill('SIGTERM')
        killer = setTimeout(() => child.kill('SIGKILL'), 20000)
      }, (error) => { child.kill('SIGKILL'); reject(error) })
    }
    child.stdout.on('data', (chunk) => { stdout += chunk; check() })
    child.stderr.on('data', (chunk) => { stderr += chunk; check() })
    child.on('close', (code, signal) => {
      clearTimeout(bound)
      clearTimeout(killer)
      resolve({ code, signal, stdout, stderr, signalled })
    })
  })
}

function assertStopped (block, result) {
  const dump = `${block.file}:${block.line}: code=${result.code} signal=${result.signal}\n${result.stdout}\n${result.stderr}`
  assert.ok(result.signalled, `exited before it started: ${dump}`)
  assert.equal(result.signal, null, dump)
  assert.equal(result.code, 0, dump)
  const seen = eventNames(result.stdout + result.stderr)
  const wanted = block.attrs.events ? block.attrs.events.split(',') : ['start']
  assert.deepEqual(wanted.filter((e) => !seen.includes(e)), [], `events not emitted: ${dump}`)
  assert.doesNotMatch(result.stderr, /FATAL ERROR|Unhandled|UnhandledPromiseRejection|TypeError|ReferenceError/, dump)
}

for (const block of runnable.filter((b) => b.lang === 'js')) {
  test(`${block.file}:${block.line} runs as pasted`, { timeout: 90000 }, async () => {
    const dir = project(block)
    const result = await runUntilStarted(block, dir, 'snippet.js', {})
    assertStopped(block, result)
    fs.rmSync(dir, { recursive: true, force: true })
  })
}

for (const block of runnable.filter((b) => b.lang === 'ts')) {
  test(`${block.file}:${block.line} compiles with tsc${block.attrs.queue ? ' and processes a job on Redis' : ''}`, { timeout: 180000 }, async () => {
    const dir = project(block)
    // Strict, plus the compiler options the install block's `# tsconfig: ...` comment asks for.
    const asked = /# tsconfig: (.*)$/m.exec(previousBlock(block).text)
    assert.ok(asked, `${block.file}:${block.line}: the install block says which tsconfig options the snippet needs`)
    fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { target: 'es2022', strict: true, outDir: 'dist', types: ['node'], ...JSON.parse(`{${asked[1]}}`) },
      files: ['snippet.ts']
    }))
    let output = ''
    try {
      execFileSync(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', dir], { encoding: 'utf8' })
    } catch (error) {
      output = String(error.stdout) + String(error.stderr)
    }
    assert.equal(output, '', `${block.file}:${block.line}: tsc\n${output}`)
    if (block.attrs.queue) {
      const redis = await startRedis()
      const { Queue, QueueEvents } = require('bullmq')
      const connection = { host: redis.host, port: redis.port }
      const queue = new Queue(block.attrs.queue, { connection })
      const events = new QueueEvents(block.attrs.queue, { connection })
      let finished = null
      try {
        await queue.obliterate({ force: true })
        await events.waitUntilReady()
        const result = await runUntilStarted(block, dir, path.join('dist', 'snippet.js'), { REDIS_URL: redis.url }, async () => {
          const job = await queue.add('docs-test', {})
          finished = await job.waitUntilFinished(events, 30000)
        })
        assertStopped(block, result)
        assert.equal(typeof finished, 'string', `the job's return value: ${finished}`)
      } finally {
        await events.close()
        await queue.close()
        await redis.stop()
      }
    }
    fs.rmSync(dir, { recursive: true, force: true })
  })
}

test('every relative link between the docs reaches a file, and every #anchor a heading', () => {
  const broken = []
  for (const file of docFiles()) {
    const text = fs.readFileSync(path.join(ROOT, file), 'utf8').replace(/^```[\s\S]*?^```/gm, '')
    for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^[a-z]+:/.test(target)) continue
      const [where, anchor] = target.split('#')
      const resolved = where ? path.relative(ROOT, path.resolve(ROOT, path.dirname(file), where)) : file
      if (PENDING_DOCS.has(resolved) && !fs.existsSync(path.join(ROOT, resolved))) continue
      if (!fs.existsSync(path.join(ROOT, resolved))) broken.push(`${file}: ${target} (no file)`)
      else if (anchor && resolved.endsWith('.md') && !anchorsOf(resolved).has(anchor)) broken.push(`${file}: ${target} (no heading)`)
    }
  }
  assert.deepEqual(broken, [])
})

test('every event name has a row in docs/events.md', () => {
  const { EVENTS } = require('..')
  const doc = fs.readFileSync(path.join(ROOT, 'docs', 'events.md'), 'utf8')
  const names = Array.isArray(EVENTS) ? EVENTS : Object.values(EVENTS)
  assert.ok(names.length > 10, `EVENTS: ${names}`)
  assert.deepEqual(names.filter((name) => !doc.includes(`| \`${name}\` |`)), [], 'events without a row in docs/events.md')
})

test('the README stays a five-minute read; the reference lives in docs/', () => {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8')
  assert.ok(readme.split('\n').length <= 260, `README.md has ${readme.split('\n').length} lines`)
  for (const doc of ['configuration', 'events', 'nest', 'http', 'fleets', 'containers', 'deploying', 'diagnosis', 'how-it-works', 'benchmarks', 'releasing', 'ARCHITECTURE']) {
    assert.ok(readme.includes(`](docs/${doc}.md`), `README links docs/${doc}.md`)
  }
})
