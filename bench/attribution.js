'use strict'
// How sure the leak's names are, over many runs (the tests assert fewer runs):
//  1. jobs: three job types two at a time (`ingest` retains 100 KiB per job, `audit` a
//     tenth of it, `render` only makes garbage), 10 seeds: ingest's rank, its estimated
//     retainedPerJob against the truth, audit's, whether render is ever named.
//  2. sites: two leaking functions (about 5:1) beside a garbage maker, an rss recycle with
//     PROFILE=heap, 10 runs: the two leaks first, the garbage maker never named.
// `node bench/attribution.js [runs]` prints a Markdown table (bench/attribution.md).
const path = require('node:path')
const { spawnSync } = require('node:child_process')

const runs = Number(process.argv[2] || 10)
const FIXTURES = path.join(__dirname, '..', '__test__', 'fixtures')
const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SELF_RECYCLE_')))

function run (fixture, env, nodeArgs = []) {
  const result = spawnSync(process.execPath, [...nodeArgs, path.join(FIXTURES, fixture)], { env: { ...clean, ...env }, encoding: 'utf8', timeout: 120000 })
  return result
}

const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]
const fmt = (v) => v.toFixed(2)

const TRUTH = 100 * 1024
const jobs = { first: 0, ratios: [], audit: [], render: 0, failed: 0 }
for (let seed = 1; seed <= runs; seed++) {
  const result = run('job-types.js', { FIXTURE_SEED: String(seed) }, ['--expose-gc'])
  const line = (result.stdout || '').split('\n').find((l) => l.startsWith('{'))
  if (result.status !== 75 || !line) { jobs.failed++; continue }
  const { topJobs } = JSON.parse(line)
  if (topJobs[0]?.name === 'ingest') jobs.first++
  const ingest = topJobs.find((j) => j.name === 'ingest')
  if (ingest) jobs.ratios.push(ingest.retainedPerJob / TRUTH)
  const audit = topJobs.find((j) => j.name === 'audit')
  if (audit) jobs.audit.push(audit.retainedPerJob / (TRUTH / 10))
  if (topJobs.some((j) => j.name === 'render')) jobs.render++
  process.stderr.write(`jobs seed ${seed}: ${JSON.stringify(topJobs)}\n`)
}

const sites = { leaksFirst: 0, churn: 0, failed: 0 }
for (let i = 0; i < runs; i++) {
  const result = run('leak-garbage.js', {
    SELF_RECYCLE_LOG: 'json',
    SELF_RECYCLE_MAX_HEAP: 'off',
    SELF_RECYCLE_MAX_RSS: '400MiB',
    SELF_RECYCLE_WARMUP: '1s',
    SELF_RECYCLE_MIN_UPTIME: '0'
  })
  const recycle = (result.stderr || '').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)).find((e) => e.event === 'recycle')
  if (result.status !== 75 || !recycle) { sites.failed++; continue }
  const names = recycle.topSites.map((s) => s.functionName)
  if (names[0] === 'leakFast' && names[1] === 'leakSlow') sites.leaksFirst++
  if (names.includes('churn')) sites.churn++
  process.stderr.write(`sites run ${i + 1}: ${names.join(', ')}\n`)
}

const range = (v) => v.length ? `${fmt(Math.min(...v))}-${fmt(Math.max(...v))} (median ${fmt(median(v))})` : 'n/a'
console.log(`| case (${runs} runs, node ${process.version}) | result |`)
console.log('|---|---|')
console.log(`| jobs: \`ingest\` ranked first | ${jobs.first} of ${runs - jobs.failed} |`)
console.log(`| jobs: ingest retainedPerJob / truth | ${range(jobs.ratios)} |`)
console.log(`| jobs: audit retainedPerJob / truth (named in ${jobs.audit.length}) | ${range(jobs.audit)} |`)
console.log(`| jobs: \`render\` (garbage only) named | ${jobs.render} of ${runs - jobs.failed} |`)
console.log(`| sites: leakFast, leakSlow first | ${sites.leaksFirst} of ${runs - sites.failed} |`)
console.log(`| sites: \`churn\` (garbage only) named | ${sites.churn} of ${runs - sites.failed} |`)
if (jobs.failed || sites.failed) console.log(`\nRuns that did not recycle as expected: jobs ${jobs.failed}, sites ${sites.failed}.`)
