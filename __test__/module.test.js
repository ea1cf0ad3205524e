'use strict'
// Packaging: CommonJS, ESM and the TypeScript types.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { execFileSync, spawnSync } = require('node:child_process')
const { runFixture, describe, cleanEnv } = require('./processes')

test('ESM import (by path and by package name) gives the CommonJS API', async () => {
  const result = await runFixture('esm.mjs')
  assert.equal(result.code, 0, describe(result))
  assert.deepEqual(JSON.parse(result.lines[0]), { defaultStart: true, sameModule: true, events: 'recycle', error: 'function', missingNamed: [] })
})

test('the public API names are exported', () => {
  const recycle = require('..')
  for (const name of ['start', 'drainHttp', 'once', 'trackInit', 'guardStats', 'EVENTS', 'SelfRecycleConfigError']) {
    assert.ok(name in recycle, `missing export ${name}`)
  }
  for (const method of ['on', 'onDrain', 'track', 'jobDone', 'recycle', 'stats', 'stop']) {
    assert.equal(typeof recycle.Recycler.prototype[method], 'function', method)
  }
})

/**
 * A TypeScript project in target/ (inside the repo, so @nestjs/* resolve) whose
 * node_modules/self-recycle is this package, compiled with `compilerOptions`.
 */
function typeProject (name, compilerOptions, files) {
  const root = path.join(__dirname, '..')
  const dir = path.join(root, 'target', 'types', name)
  fs.rmSync(dir, { recursive: true, force: true })
  fs.mkdirSync(path.join(dir, 'node_modules'), { recursive: true })
  fs.symlinkSync(root, path.join(dir, 'node_modules', 'self-recycle'))
  for (const file of files) fs.copyFileSync(path.join(__dirname, 'types', file), path.join(dir, file))
  fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { strict: true, target: 'es2022', types: ['node'], typeRoots: [path.join(root, 'node_modules', '@types')], skipLibCheck: false, ...compilerOptions },
    files
  }))
  return dir
}

function tsc (typescript, dir) {
  const cli = path.join(__dirname, '..', 'node_modules', typescript, 'bin', 'tsc')
  try {
    return execFileSync(process.execPath, [cli, '-p', dir], { encoding: 'utf8' })
  } catch (error) {
    return String(error.stdout) + String(error.stderr)
  }
}

const RESOLUTIONS = {
  'commonjs (node10)': { module: 'commonjs', moduleResolution: 'node10' },
  node16: { module: 'node16', moduleResolution: 'node16' },
  nodenext: { module: 'nodenext', moduleResolution: 'nodenext' },
  bundler: { module: 'esnext', moduleResolution: 'bundler' }
}

for (const typescript of ['typescript', 'typescript-5.0']) {
  for (const [mode, options] of Object.entries(RESOLUTIONS)) {
    test(`the types compile with ${typescript === 'typescript' ? 'TypeScript 5.9' : 'TypeScript 5.0'}, ${mode}`, () => {
      const resolution = typescript === 'typescript-5.0' && options.moduleResolution === 'node10' ? { ...options, moduleResolution: 'node' } : options
      const files = ['usage.ts', 'nest-usage.ts', 'otel-usage.ts', 'bullmq-usage.ts', ...(options.moduleResolution === 'bundler' ? ['nest-real.ts'] : [])]
      const dir = typeProject(`${typescript}-${options.moduleResolution}`, { noEmit: true, ...resolution }, files)
      assert.equal(tsc(typescript, dir), '')
    })
  }
}

test('a default import compiled without esModuleInterop works at run time', () => {
  const dir = typeProject('default-import', { module: 'commonjs', esModuleInterop: false, outDir: 'out' }, ['default-import.ts'])
  assert.equal(tsc('typescript', dir), '')
  const run = spawnSync(process.execPath, [path.join(dir, 'out', 'default-import.js')], { encoding: 'utf8', env: cleanEnv() })
  assert.equal(run.status, 0, run.stderr)
  assert.equal(run.stdout.trim(), 'function true')
})

test('the types reject misuse', () => {
  const output = tsc('typescript', typeProject('bad', { noEmit: true, module: 'node16', moduleResolution: 'node16' }, ['bad-usage.ts']))
  assert.match(output, /bad-usage\.ts\(\d+,\d+\): error TS/)
  const errors = output.split('\n').filter((l) => l.includes('error TS'))
  assert.equal(errors.length, 8, output)
})
