'use strict'
// Malformed settings: a clear error naming the variable, the value and what is accepted.

const test = require('node:test')
const assert = require('node:assert/strict')
const { runFixture, eventsNamed, describe } = require('./processes')
const recycle = require('..')

const MALFORMED = [
  ['MAX_RSS', 'banana', /size/],
  ['MAX_RSS', '-5MB', /size/],
  ['MAX_RSS', '0', /size/],
  ['MAX_RSS', '120%', /percentage/],
  ['RSS_METRIC', 'pss', /rss or anon/],
  ['MAX_HEAP', '150%', /percentage/],
  ['MAX_HEAP', '12 parsecs', /unit|size/],
  ['MAX_GROWTH', '0.5x', /factor above 1/],
  ['MAX_GROWTH', '300MiB', /\+SIZE/],
  ['LEAK_SLOPE', '10MiB', /rate/],
  ['LEAK_WINDOW', '10', /at least 1s/],
  ['NEAR_HEAP_LIMIT', 'maybe', /on, off/],
  ['MAX_JOBS', '-1', /whole number/],
  ['MAX_JOBS', '2.5', /whole number/],
  ['MAX_AGE', '0', /above 0/],
  ['JITTER', '80%', /0% to 50%/],
  ['JITTER', '10', /percentage/],
  ['INTERVAL', '-5s', /duration/],
  ['INTERVAL', '5ms', /at least 10ms/],
  ['STRIKES', '0', /whole number/],
  ['WARMUP', 'soon', /duration/],
  ['PROFILE', 'cpu', /heap or off/],
  ['PROFILE_INTERVAL', '1KiB', /from 16KiB to 64MiB/],
  ['PROFILE_INTERVAL', '1TiB', /from 16KiB to 64MiB/],
  ['PROFILE_INTERVAL', 'often', /size/],
  ['MIN_UPTIME', '1y', /unknown unit 'y'/],
  ['DRAIN_TIMEOUT', '0', /above 0/],
  ['EXIT_CODE', '256', /0 to 255/],
  ['EXIT_CODE', 'seventy-five', /0 to 255/],
  ['STALL_TIMEOUT', '1ms', /at least 100ms/],
  ['STAGGER_GAP', 'x', /duration/],
  ['HEAP_SNAPSHOT', 'sometimes', /on, off/],
  ['LOG', 'loud', /auto, json, pretty, off/],
  ['DRY_RUN', '2', /on, off/],
  ['DISABLE', 'please', /on, off/]
]

function withEnv (name, value, fn) {
  const key = `SELF_RECYCLE_${name}`
  const before = process.env[key]
  process.env[key] = value
  try {
    return fn()
  } finally {
    if (before === undefined) delete process.env[key]
    else process.env[key] = before
  }
}

for (const [name, value, accepted] of MALFORMED) {
  test(`SELF_RECYCLE_${name}=${JSON.stringify(value)} throws ERR_SELF_RECYCLE_CONFIG`, () => {
    withEnv(name, value, () => {
      assert.throws(() => recycle.start(), (error) => {
        assert.ok(error instanceof recycle.SelfRecycleConfigError)
        assert.equal(error.code, 'ERR_SELF_RECYCLE_CONFIG')
        assert.equal(error.variable, `SELF_RECYCLE_${name}`)
        assert.equal(error.value, value)
        assert.ok(error.message.includes(`SELF_RECYCLE_${name}=${JSON.stringify(value)}`), error.message)
        assert.match(error.message, /is not valid: expected /)
        assert.match(error.accepts, accepted)
        return true
      })
    })
  })
}

test('options are validated too and name the option', () => {
  assert.throws(() => recycle.start({ maxRss: 'banana' }), {
    code: 'ERR_SELF_RECYCLE_CONFIG',
    variable: 'option maxRss',
    message: /^option maxRss="banana" is not valid: expected a size/
  })
  assert.throws(() => recycle.start({ interval: Number.NaN }), { variable: 'option interval', value: 'NaN' })
  assert.throws(() => recycle.start({ maxRss: {} }), { code: 'ERR_SELF_RECYCLE_CONFIG', variable: 'option maxRss' })
  assert.throws(() => recycle.start('512MiB'), { code: 'ERR_SELF_RECYCLE_CONFIG', variable: 'options' })
})

test('an unknown option is an error with a suggestion', () => {
  assert.throws(() => recycle.start({ maxRs: '1GB' }), {
    code: 'ERR_SELF_RECYCLE_CONFIG',
    message: /option maxRs.*did you mean maxRss\?/
  })
})

test('an unknown SELF_RECYCLE_ variable is reported in the start event, with a suggestion', async () => {
  const result = await runFixture('worker.js', {
    env: { FIXTURE_MODE: 'idle', FIXTURE_IDLE_EXIT_MS: '200', SELF_RECYCLE_MAX_RRS: '1GB' }
  })
  assert.equal(result.code, 0, describe(result))
  const [start] = eventsNamed(result, 'start')
  assert.deepEqual(start.warnings, ['unknown variable SELF_RECYCLE_MAX_RRS ignored (did you mean SELF_RECYCLE_MAX_RSS?)'])
  assert.match(start.msg, /unknown variable SELF_RECYCLE_MAX_RRS/)
})

test('options override env vars; numbers are bytes and milliseconds', async () => {
  const result = await runFixture('options.js', { env: { SELF_RECYCLE_INTERVAL: '5s', SELF_RECYCLE_MAX_RSS: '1GB' } })
  assert.equal(result.code, 0, describe(result))
  const config = JSON.parse(result.lines[0])
  assert.equal(config.intervalMs, 250)
  assert.equal(config.maxRss, 512 * 1024 * 1024)
  assert.equal(config.drainTimeoutMs, 1500)
  assert.equal(config.dryRun, true)
})

test('a baseline already over the limit emits misconfigured and does not recycle', async () => {
  const result = await runFixture('worker.js', {
    env: {
      FIXTURE_MODE: 'idle',
      FIXTURE_IDLE_EXIT_MS: '800',
      SELF_RECYCLE_MAX_RSS: '5MiB',
      SELF_RECYCLE_INTERVAL: '25ms',
      SELF_RECYCLE_STRIKES: '1',
      SELF_RECYCLE_WARMUP: '0',
      SELF_RECYCLE_MIN_UPTIME: '0'
    }
  })
  assert.equal(result.code, 0, describe(result))
  const [misconfigured] = eventsNamed(result, 'misconfigured')
  assert.equal(misconfigured.reason, 'rss')
  assert.equal(misconfigured.limit, 5 * 1024 * 1024)
  assert.match(misconfigured.msg, /raise SELF_RECYCLE_MAX_RSS/)
  assert.equal(eventsNamed(result, 'recycle').length, 0)
})

test('every setting of the table is documented: a row in docs/configuration.md and a typed option', () => {
  const fs = require('node:fs')
  const path = require('node:path')
  const root = path.join(__dirname, '..')
  const table = fs.readFileSync(path.join(root, 'src', 'config.rs'), 'utf8').split('settings! {')[1].split('\n}\n')[0]
  const variables = [...table.matchAll(/^ {4}([A-Z_]+) => /gm)].map((m) => m[1])
  assert.ok(variables.length > 30, `parsed ${variables.length} settings`)
  const reference = fs.readFileSync(path.join(root, 'docs', 'configuration.md'), 'utf8')
  const types = fs.readFileSync(path.join(root, 'js', 'index.d.ts'), 'utf8').split('export interface Options {')[1].split('\n}\n')[0]
  const option = (variable) => variable.toLowerCase().replace(/_([a-z])/g, (_, c) => c.toUpperCase())
  assert.deepEqual(variables.filter((v) => !reference.includes(`| \`${v}\` |`)), [], 'settings without a row in docs/configuration.md')
  // FLEET_* are fields of the `fleet` option: FLEET_MAX_CONCURRENT is fleet.maxConcurrent.
  const fleetTypes = fs.readFileSync(path.join(root, 'js', 'index.d.ts'), 'utf8').split('export interface FleetOptions {')[1].split('\n}\n')[0]
  const typed = (v) => v.startsWith('FLEET_')
    ? new RegExp(`^ {2}${option(v.slice('FLEET_'.length))}\\?:`, 'm').test(fleetTypes)
    : new RegExp(`^ {2}${option(v)}\\?:`, 'm').test(types)
  assert.deepEqual(variables.filter((v) => !typed(v)), [], 'settings without a typed option')
})
