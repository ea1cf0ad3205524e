'use strict'
// Type-checks the JS layer (js/, js/cli/) with TypeScript's checkJs: tsconfig.check.json
// says what is checked and how strictly. Run by `npm test` before the node tests; exits 1
// with tsc's errors (file(line,col): error TSnnnn: ...) when any is found.
// `-p other.json` checks another project with the same rules (__test__/check-js.test.js).

const { spawnSync } = require('node:child_process')
const path = require('node:path')

const root = path.join(__dirname, '..')
const args = process.argv.slice(2)
const project = args[0] === '-p' && args[1] ? path.resolve(args[1]) : path.join(root, 'tsconfig.check.json')

let tsc
try {
  tsc = require.resolve('typescript/bin/tsc', { paths: [root] })
} catch {
  process.stderr.write('check-js: TypeScript is not installed (a devDependency): run npm install\n')
  process.exit(2)
}

const started = Date.now()
const run = spawnSync(process.execPath, [tsc, '-p', project, '--pretty', 'false'], { cwd: root, encoding: 'utf8' })
const output = `${run.stdout ?? ''}${run.stderr ?? ''}`.trim()
if (run.error || run.status !== 0) {
  const errors = output.split('\n').filter((line) => /error TS\d+/.test(line)).length
  process.stderr.write(`${output || String(run.error)}\ncheck-js: ${errors} error${errors === 1 ? '' : 's'} in ${path.relative(root, project)} (tsc --checkJs)\n`)
  process.exit(1)
}
process.stdout.write(`check-js: no type errors in js/ (${((Date.now() - started) / 1000).toFixed(1)} s)\n`)
