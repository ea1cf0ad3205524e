'use strict'
// The self-recycle command's arguments: --version, extra arguments, and durations that take
// the same units as the SELF_RECYCLE_* durations (days included).

const test = require('node:test')
const assert = require('node:assert/strict')
const { spawnSync } = require('node:child_process')
const path = require('node:path')
const { parseDuration, UsageError } = require('../js/cli/args.js')

const cli = path.join(__dirname, '..', 'js', 'cli.js')
const run = (...args) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 10000 })

test('--version and -v print the package version', () => {
  const { version } = require('../package.json')
  for (const flag of ['--version', '-v']) {
    const result = run(flag)
    assert.equal(result.status, 0, result.stderr)
    assert.equal(result.stdout.trim(), version)
  }
  assert.equal(run('--version', 'extra').status, 2)
})

test('an extra argument is a usage error naming it, for every command that takes a FILE or none', () => {
  for (const args of [['report', 'a.json', 'b.json'], ['status', 'a.json', 'b.json'], ['check', 'a.json', 'b.json'], ['preflight', 'stray', '--', 'node']]) {
    const result = run(...args)
    assert.equal(result.status, 2, `${args.join(' ')}: ${result.stdout}${result.stderr}`)
    assert.match(result.stderr, /unexpected argument "(b\.json|stray)"/)
  }
  const flagValue = run('check', 'a.json', '--json=yes')
  assert.equal(flagValue.status, 2)
  assert.match(flagValue.stderr, /--json takes no value \(given "yes"\)/)
})

test('durations take days up to 24d, as SELF_RECYCLE_WARMUP does; a bad one names what was given and what is accepted', () => {
  assert.equal(parseDuration('20d', 'window'), 20 * 86400000)
  assert.throws(() => parseDuration('30d', 'window'), /of at most 24d/)
  assert.equal(parseDuration('1.5h', 'window'), 5400000)
  assert.equal(parseDuration('2m', 'window'), 120000)
  assert.equal(parseDuration('250', 'window'), 250)
  assert.throws(() => parseDuration('soon', 'window'), (error) => error instanceof UsageError && /--window="soon": expected a duration such as .*of at most 24d/.test(error.message))
  const result = run('preflight', '--window', '30x', '--', 'node')
  assert.equal(result.status, 2)
  assert.match(result.stderr, /--window="30x": expected a duration/)
})

test('the CLI reads a duration as the settings do (checked against SELF_RECYCLE_WARMUP in a real recycler)', () => {
  const script = `
    const recycle = require(${JSON.stringify(path.join(__dirname, '..'))})
    const out = {}
    for (const text of ['20d', '24d', '25d', '30d', '1.5h', '2m', '45s', '500ms', '250', '0.5s', '2147483647', '2147483648', 'soon']) {
      try {
        const r = recycle.start({ warmup: text, log: 'off' })
        out[text] = r.config.warmupMs
        r.stop()
      } catch (error) {
        out[text] = error.code
      }
    }
    console.log(JSON.stringify(out))`
  const result = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 20000 })
  assert.equal(result.status, 0, result.stderr)
  const settings = JSON.parse(result.stdout)
  assert.equal(settings['30d'], 'ERR_SELF_RECYCLE_CONFIG', 'the settings refuse 30d too')
  for (const [text, ms] of Object.entries(settings)) {
    if (ms === 'ERR_SELF_RECYCLE_CONFIG') assert.throws(() => parseDuration(text, 'window'), UsageError, text)
    else assert.equal(parseDuration(text, 'window'), ms, text)
  }
})

test('every command refuses an unknown option, naming it and what the command accepts', () => {
  for (const command of ['preflight', 'status', 'check', 'report', 'fleet', 'profile']) {
    for (const option of ['--bogus', '-x', '--bogus=1', '--constructor', '--__proto__']) {
      const result = run(command, option, 'a.json')
      assert.equal(result.status, 2, `${command} ${option}: ${result.stdout}${result.stderr}`)
      assert.match(result.stderr, new RegExp(`^self-recycle ${command}: unknown option ${option.split('=')[0]}\\b.*; accepted: .*--json, --help \\(-h\\)`), `${command} ${option}`)
      assert.equal(result.stdout, '')
    }
  }
  assert.match(run('check', '--bogus=1', 'a.json').stderr, /unknown option --bogus \(given "--bogus=1"\)/)
})

test('fleet takes no positional argument: an extra one is a usage error before Redis is asked', () => {
  const result = run('fleet', 'stray', '--redis', 'redis://127.0.0.1:1')
  assert.equal(result.status, 2, result.stdout + result.stderr)
  assert.match(result.stderr, /^self-recycle fleet: unexpected argument "stray" \(this command takes none\)/)
  const two = run('fleet', 'a', 'b')
  assert.equal(two.status, 2)
  assert.match(two.stderr, /unexpected arguments "a" "b"/)
})

test('what follows -- is the worker command only for preflight; elsewhere it is positional', () => {
  const extra = run('check', 'a.json', '--', 'b.json')
  assert.equal(extra.status, 2)
  assert.match(extra.stderr, /unexpected argument "b\.json"/)
  const fleet = run('fleet', '--', 'x')
  assert.equal(fleet.status, 2)
  assert.match(fleet.stderr, /unexpected argument "x"/)
  // A FILE that starts with a dash, after --.
  const dashed = run('status', '--', '-missing.json')
  assert.equal(dashed.status, 1)
  assert.match(dashed.stderr, /cannot read -missing\.json/)
})

test('an option missing its value, or given one that looks like an option, is a usage error naming it', () => {
  const missing = run('fleet', '--redis')
  assert.equal(missing.status, 2)
  assert.match(missing.stderr, /^self-recycle fleet: --redis needs a value/)
  const swallowed = run('fleet', '--redis', '--json')
  assert.equal(swallowed.status, 2)
  assert.match(swallowed.stderr, /--redis needs a value \(given "--json", which looks like an option; write --redis=VALUE if it is the value\)/)
  const load = run('preflight', '--load', '--', 'node')
  assert.equal(load.status, 2)
  assert.match(load.stderr, /--load needs a value/)
  // With =, a value may start with dashes; here it is then judged as a duration.
  const inline = run('preflight', '--window=--5s', '--', 'node')
  assert.equal(inline.status, 2)
  assert.match(inline.stderr, /--window="--5s": expected a duration/)
})

test('-h is --help in every command; --help and -h exit 0 with the usage on stdout', () => {
  for (const command of ['preflight', 'status', 'check', 'report', 'fleet', 'profile']) {
    for (const flag of ['--help', '-h']) {
      const result = run(command, flag)
      assert.equal(result.status, 0, `${command} ${flag}: ${result.stderr}`)
      assert.match(result.stdout, new RegExp(`^usage: self-recycle ${command}`), `${command} ${flag}`)
    }
  }
  const top = run('--help')
  assert.equal(top.status, 0)
  assert.match(top.stdout, /^usage: self-recycle <command>/)
  const none = run()
  assert.equal(none.status, 2)
  const unknown = run('bogus')
  assert.equal(unknown.status, 2)
  assert.match(unknown.stderr, /unknown command "bogus"/)
})

test('fleet reads --redis, --name and --timeout over SELF_RECYCLE_FLEET_* as a worker does: a bad one names the flag or the variable, the value without its password and what is accepted', () => {
  // `env`: the variables of this run only (nothing inherited from the test's environment).
  const fleet = (args, env = {}) => spawnSync(process.execPath, [cli, 'fleet', ...args], { encoding: 'utf8', timeout: 10000, env: { PATH: process.env.PATH, ...env } })
  const cases = [
    [['--redis', 'http://u:s3cret@host'], {}, /--redis="http:\/\/u:\*\*\*@host": expected a redis:\/\/ or rediss:\/\/ URL/],
    [['--redis', 'u:s3cret@host:6379'], {}, /--redis="u:\*\*\*@host:6379": expected a redis:\/\//],
    [[], { SELF_RECYCLE_FLEET_REDIS: 'redis://u:s3cret@ho st' }, /SELF_RECYCLE_FLEET_REDIS="redis:\/\/u:\*\*\*@ho st": expected a redis:\/\//],
    [['--redis', 'redis://127.0.0.1:1', '--name', 'a b'], {}, /--name="a b": expected 1 to 64 letters/],
    [['--redis', 'redis://127.0.0.1:1'], { SELF_RECYCLE_FLEET_NAME: 'a/b' }, /SELF_RECYCLE_FLEET_NAME="a\/b": expected 1 to 64 letters/],
    [['--redis', 'redis://127.0.0.1:1', '--timeout', '10ms'], {}, /--timeout="10ms": expected a duration .*from 50ms to 60s/],
    [['--redis', 'redis://127.0.0.1:1'], { SELF_RECYCLE_FLEET_TIMEOUT: '2m' }, /SELF_RECYCLE_FLEET_TIMEOUT="2m": expected a duration .*from 50ms to 60s/],
    // blank is unset, `off` is no Redis: either way the command has none
    [[], { SELF_RECYCLE_FLEET_REDIS: '  ' }, /fleet needs --redis URL/],
    [[], { SELF_RECYCLE_FLEET_REDIS: 'off' }, /fleet needs --redis URL/]
  ]
  for (const [args, env, pattern] of cases) {
    const result = fleet(args, env)
    const what = `${args.join(' ')} ${JSON.stringify(env)}`
    assert.equal(result.status, 2, `${what}: ${result.stdout}${result.stderr}`)
    assert.match(result.stderr, pattern, what)
    assert.doesNotMatch(result.stderr, /s3cret/, what)
  }
  // A malformed setting the command does not read is not its business; a flag beats its
  // variable (the bad timeout in the environment is not read when --timeout is given).
  const unrelated = fleet(['--redis', 'redis://127.0.0.1:1', '--timeout', '100ms', '--json'], { SELF_RECYCLE_MAX_RSS: 'banana', SELF_RECYCLE_FLEET_TIMEOUT: '2m' })
  assert.equal(unrelated.status, 1, unrelated.stderr)
  assert.match(JSON.parse(unrelated.stdout).error, /cannot reach Redis at redis:\/\/127\.0\.0\.1:1/)
})

test('the CLI parses rates and percentages through the settings\' parsers too', () => {
  const { parseRate, parsePercent } = require('../js/cli/args.js')
  assert.equal(parseRate('5MiB/min', 'max-slope'), 5 * 1048576)
  assert.equal(parseRate('1KiB/s', 'max-slope'), 60 * 1024)
  assert.equal(parseRate('60MiB/hour', 'max-slope'), 1048576)
  assert.throws(() => parseRate('5MiB', 'max-slope'), (error) => error instanceof UsageError && /--max-slope="5MiB": expected a rate SIZE\/TIME/.test(error.message))
  assert.equal(parsePercent('60%', 'max-baseline'), 0.6)
  assert.throws(() => parsePercent('0%', 'max-baseline'), /--max-baseline="0%": expected a percentage above 0% and at most 100%/)
  assert.throws(() => parsePercent('60', 'max-baseline'), UsageError)
})

test('where no native binary loads, report, status and check still run; a command that parses a value says why it cannot (no stack)', () => {
  const fs = require('node:fs')
  const os = require('node:os')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-nobinary-'))
  try {
    // Preloaded: every .node addon fails to load, as on a platform without a binary.
    const preload = path.join(dir, 'no-addon.js')
    fs.writeFileSync(preload, "require('node:module')._extensions['.node'] = () => { throw new Error('no addon on this machine') }\n")
    const bare = (...args) => spawnSync(process.execPath, ['--require', preload, cli, ...args], { encoding: 'utf8', timeout: 10000 })
    const missing = path.join(dir, 'missing.json')
    for (const args of [['status', missing], ['check', missing], ['report', missing]]) {
      const result = bare(...args)
      assert.equal(result.status, 1, `${args[0]}: ${result.stderr}`)
      assert.match(result.stdout + result.stderr, /cannot read/, args[0])
      assert.doesNotMatch(result.stdout + result.stderr, /native binary/, args[0])
    }
    for (const args of [['check', missing, '--max-age', '5s'], ['fleet', '--redis', 'redis://127.0.0.1:1']]) {
      const result = bare(...args)
      assert.equal(result.status, 1, `${args[0]}: ${result.stderr}`)
      assert.match(result.stderr, /^self-recycle: no native binary loads on /, args[0])
      assert.doesNotMatch(result.stderr, /\n\s+at /, `${args[0]}: a stack`)
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
