'use strict'
// The static checks npm test runs over js/ (scripts/check-js.js, scripts/unused-exports.js)
// catch what they are there for: each is run on a small project with planted mistakes.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { spawnSync } = require('node:child_process')

const root = path.join(__dirname, '..')

/** A fresh directory in target/ (inside the repo: node_modules and @types resolve). */
function scratch (name, files) {
  const dir = path.join(root, 'target', 'static-checks', name)
  fs.rmSync(dir, { recursive: true, force: true })
  for (const [file, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, file)), { recursive: true })
    fs.writeFileSync(path.join(dir, file), text)
  }
  return dir
}

function run (script, args) {
  return spawnSync(process.execPath, [path.join(root, 'scripts', script), ...args], { encoding: 'utf8' })
}

test('the type check rejects a misspelt property, an extra argument and a call of a non-function', () => {
  const dir = scratch('check-js', {
    // The rules of tsconfig.check.json, over one file that uses the real modules.
    'tsconfig.json': JSON.stringify({ extends: '../../../tsconfig.check.json', include: [], files: ['bad.js'] }),
    'bad.js': [
      "'use strict'",
      "const { JobLedger } = require('../../../js/jobs.js')",
      "const { describeError } = require('../../../js/options.js')",
      "const { EVENTS } = require('../../../js/index.js')",
      "new JobLedger().recrd('job')",
      'describeError(new Error(), 2)',
      'EVENTS.START()',
      "module.exports = describeError('fine')",
      ''
    ].join('\n')
  })
  const result = run('check-js.js', ['-p', path.join(dir, 'tsconfig.json')])
  assert.equal(result.status, 1, result.stdout + result.stderr)
  const errors = result.stderr.split('\n').filter((line) => line.includes('error TS'))
  assert.match(errors[0], /bad\.js\(5,\d+\): error TS2551: Property 'recrd' does not exist on type 'JobLedger'\. Did you mean 'record'\?/)
  assert.match(errors[1], /bad\.js\(6,\d+\): error TS2554: Expected 0-1 arguments, but got 2\./)
  assert.match(errors[2], /bad\.js\(7,\d+\): error TS2349: This expression is not callable\./)
  assert.equal(errors.length, 3, result.stderr)
  assert.match(result.stderr, /check-js: 3 errors in /)
})

test('the export check names an unused export and an entry that disagrees with its .d.ts', () => {
  const dir = scratch('unused-exports', {
    'js/lib.js': [
      'const used = 1',
      'const viaMember = 2',
      'const unused = 3',
      'const selfOnly = () => unused',
      'module.exports = { used, viaMember, unused, selfOnly }',
      'module.exports.late = 4',
      ''
    ].join('\n'),
    'js/spread.js': 'module.exports = { anything: 1 }\n',
    'js/index.js': "const { used } = require('./lib.js')\nmodule.exports = { start: () => used, extra: 1 }\nmodule.exports.default = module.exports\n",
    'js/index.d.ts': 'export declare function start(): number\nexport declare const missing: number\nexport interface NotAValue { x: number }\ndeclare const recycle: { start: typeof start }\nexport default recycle\n',
    '__test__/a.test.js': "const lib = require('../js/lib.js')\nconsole.log(lib.viaMember, require('../js/lib.js').late)\nconst spread = require('../js/spread.js')\nconsole.log({ ...spread })\n"
  })
  const result = run('unused-exports.js', ['--root', dir])
  assert.equal(result.status, 1, result.stdout + result.stderr)
  const problems = result.stderr.trim().split('\n')
  assert.deepEqual(problems, [
    "js/lib.js: 'unused' is exported but no other file uses it (delete the export, or the code if it is dead)",
    "js/lib.js: 'selfOnly' is exported but no other file uses it (delete the export, or the code if it is dead)",
    "js/index.js: 'extra' is exported but js/index.d.ts does not declare it",
    "js/index.d.ts: 'missing' is declared but js/index.js does not export it",
    'unused-exports: 4 problems'
  ])
})
