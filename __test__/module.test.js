'use strict'
// Packaging: CommonJS, ESM and the TypeScript types.

const test = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const { execFileSync } = require('node:child_process')
const { runFixture, describe } = require('./processes')

test('ESM import (by path and by package name) gives the CommonJS API', async () => {
  const result = await runFixture('esm.mjs')
  assert.equal(result.code, 0, describe(result))
  assert.deepEqual(JSON.parse(result.lines[0]), { defaultStart: true, sameModule: true, events: 'recycle', error: 'function' })
})

test('the public API names are exported', () => {
  const recycle = require('..')
  for (const name of ['start', 'once', 'guardStats', 'EVENTS', 'SelfRecycleConfigError']) {
    assert.ok(name in recycle, `missing export ${name}`)
  }
  for (const method of ['on', 'onDrain', 'track', 'jobDone', 'recycle', 'stats', 'stop']) {
    assert.equal(typeof recycle.Recycler.prototype[method], 'function', method)
  }
})

test('the hand-written types compile against a usage example', () => {
  const root = path.join(__dirname, '..')
  const tsc = require.resolve('typescript/bin/tsc')
  const output = execFileSync(process.execPath, [tsc, '--noEmit', '--strict', '--types', 'node', '-p', path.join(__dirname, 'types', 'tsconfig.json')], { cwd: root, encoding: 'utf8' })
  assert.equal(output, '')
})

test('the types reject misuse', () => {
  const root = path.join(__dirname, '..')
  const tsc = require.resolve('typescript/bin/tsc')
  let output = ''
  try {
    execFileSync(process.execPath, [tsc, '--noEmit', '--strict', '-p', path.join(__dirname, 'types', 'tsconfig.bad.json')], { cwd: root, encoding: 'utf8' })
  } catch (error) {
    output = String(error.stdout)
  }
  assert.match(output, /bad-usage\.ts\(\d+,\d+\): error TS/)
  const errors = output.split('\n').filter((l) => l.includes('error TS'))
  assert.equal(errors.length, 4, output)
})
