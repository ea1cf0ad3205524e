'use strict'
// Side by side, one run, the same leaking worker (50 ms jobs, ~20 MB/s, 100 MiB limit):
// self-recycle (under Supervisor), PM2 --max-memory-restart, Supervisor + superlance
// memmon on TICK_5, and plain node --max-old-space-size=128 (under Supervisor). Writes
// bench/comparison.md and bench/comparison.svg. Needs supervisord, memmon (pip install
// superlance) and pm2 (devDependency). Usage: node bench/compare.js [seconds]
// Without self-recycle the worker still stops gracefully on SIGINT/SIGTERM, so PM2 and
// memmon restarts only lose a job when the job outlasts the manager's kill timeout.

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { execFileSync } = require('node:child_process')
const { writeSupervisorConf, supervisorEnvironment, startSupervisord } = require('../scripts/supervisor')

const SECONDS = Number(process.argv[2] || 30)
const ONLY_REACTION = process.argv.includes('--reaction')
const PM2_SECONDS = Math.max(SECONDS, 70) // PM2 checks memory every 30 s
// The reaction rows (--reaction) use the 150 MiB limit the adaptive-sampling goals were
// set against; the manager comparison keeps the 100 MiB of the original measurements.
const LIMIT = (ONLY_REACTION ? 150 : 100) * 1024 * 1024
const worker = path.join(__dirname, 'leaky-worker.js')
const node = process.execPath
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const SELF_RECYCLE = {
  SELF_RECYCLE_MAX_RSS: '100MiB',
  SELF_RECYCLE_INTERVAL: '250ms',
  SELF_RECYCLE_STRIKES: '2',
  SELF_RECYCLE_MIN_UPTIME: '0',
  SELF_RECYCLE_WARMUP: '0',
  SELF_RECYCLE_SIGNALS: 'on',
  SELF_RECYCLE_LOG: 'off'
}

async function underSupervisor (name, { env, nodeArgs = '', memmon = false, seconds }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `compare-${name}-`))
  const ledger = path.join(dir, 'ledger.jsonl')
  const sections = [`[program:worker]
command=${node} ${nodeArgs} ${worker}
environment=${supervisorEnvironment({ ...env, LEDGER: ledger })}
autorestart=true
startsecs=0
stopsignal=TERM
stopwaitsecs=10`]
  if (memmon) {
    sections.push(`[eventlistener:memmon]
command=memmon -p worker=100MB
events=TICK_5`)
  }
  const supervisord = startSupervisord(writeSupervisorConf(dir, sections), process.env)
  await sleep(seconds * 1000)
  supervisord.ctl('stop', 'worker')
  await supervisord.stop()
  return { ledger, dir }
}

async function underPm2 (name, { env, seconds, maxMemory = true }) {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), `compare-${name}-`))
  const ledger = path.join(home, 'ledger.jsonl')
  const pm2 = require.resolve('pm2/bin/pm2')
  const ecosystem = path.join(home, 'ecosystem.config.js')
  fs.writeFileSync(ecosystem, `module.exports = { apps: [${JSON.stringify({
    name: 'worker', script: worker, autorestart: true, ...(maxMemory ? { max_memory_restart: '100M' } : {}), env: { ...env, LEDGER: ledger }
  })}] }\n`)
  const run = (...args) => execFileSync(node, [pm2, ...args], { env: { ...process.env, PM2_HOME: home }, encoding: 'utf8' })
  run('start', ecosystem)
  await sleep(seconds * 1000)
  run('kill')
  return { ledger, dir: home }
}

/** Per worker life: when it crossed the limit, when it died, its peak RSS, jobs lost. */
function analyse (ledger, until) {
  const records = fs.readFileSync(ledger, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l))
  const t0 = records[0].t
  const lives = new Map()
  for (const r of records) {
    if (!lives.has(r.pid)) lives.set(r.pid, { pid: r.pid, boot: r.t, last: r.t, samples: [], started: new Set(), done: new Set() })
    const life = lives.get(r.pid)
    life.last = Math.max(life.last, r.t)
    if (r.kind === 'sample') life.samples.push([r.t, r.rss])
    if (r.kind === 'start') life.started.add(r.id)
    if ((r.kind === 'recycle' || r.kind === 'signal') && !life.decided) {
      life.decided = r.t
      life.decidedRss = r.rss
      life.predicted = r.predicted === true
    }
    if (r.kind === 'done') life.done.add(r.id)
  }
  const ordered = [...lives.values()].sort((a, b) => a.boot - b.boot)
  const restarts = []
  ordered.forEach((life, i) => {
    const next = ordered[i + 1]
    if (!next || life.last > until) return // the last life was stopped by the bench, not recycled
    const crossing = life.samples.find(([, rss]) => rss > LIMIT)
    restarts.push({
      // The decision: self-recycle's recycle event, a manager's stop signal, else death.
      decisionMs: crossing ? (life.decided ?? life.last) - crossing[0] : null,
      crossed: Boolean(crossing),
      predicted: life.predicted === true,
      reactionMs: crossing ? life.last - crossing[0] : null,
      peakRss: Math.max(...life.samples.map(([, rss]) => rss)),
      lost: [...life.started].filter((id) => !life.done.has(id)).length,
      downtimeMs: next.boot - life.last
    })
  })
  const series = ordered.flatMap((life) => life.samples.map(([t, rss]) => [t - t0, rss]))
  const deaths = restarts.length ? ordered.slice(0, restarts.length).map((life) => life.last - t0) : []
  const jobs = ordered.reduce((sum, life) => sum + life.done.size, 0)
  return { restarts, series, deaths, jobs }
}

const range = (values, format) => {
  const clean = values.filter((v) => v !== null)
  if (!clean.length) return 'n/a'
  const lo = Math.min(...clean)
  const hi = Math.max(...clean)
  return lo === hi ? format(lo) : `${format(lo)}-${format(hi)}`
}
const seconds = (ms) => `${(ms / 1000).toFixed(2)} s`
const mib = (bytes) => `${Math.round(bytes / 1048576)} MiB`

function svg (runs) {
  const width = 900
  const panel = 140
  const left = 60
  const maxT = Math.max(...runs.map((r) => Math.min(r.window * 1000, r.result.series.at(-1)?.[0] ?? 0)))
  const maxRss = (ONLY_REACTION ? 250 : 800) * 1048576
  const x = (t) => left + (t / maxT) * (width - left - 20)
  const y = (i, rss) => i * panel + 20 + (1 - Math.min(rss, maxRss) / maxRss) * (panel - 40)
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${runs.length * panel + 20}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`]
  runs.forEach((run, i) => {
    const points = run.result.series.filter(([t]) => t <= maxT).map(([t, rss]) => `${x(t).toFixed(1)},${y(i, rss).toFixed(1)}`).join(' ')
    parts.push(`<text x="${left}" y="${i * panel + 14}" font-weight="bold">${run.label}</text>`)
    parts.push(`<line x1="${left}" x2="${width - 20}" y1="${y(i, LIMIT)}" y2="${y(i, LIMIT)}" stroke="#888" stroke-dasharray="4 3"/>`)
    parts.push(`<text x="4" y="${y(i, LIMIT) + 4}" fill="#666">${mib(LIMIT)}</text>`)
    parts.push(`<text x="4" y="${y(i, maxRss) + 4}" fill="#666">${mib(maxRss)}</text>`)
    for (const death of run.result.deaths.filter((t) => t <= maxT)) {
      parts.push(`<line x1="${x(death)}" x2="${x(death)}" y1="${i * panel + 20}" y2="${i * panel + panel - 20}" stroke="#d33" stroke-width="1"/>`)
    }
    parts.push(`<polyline fill="none" stroke="#1565c0" stroke-width="1.2" points="${points}"/>`)
  })
  parts.push(`<text x="${left}" y="${runs.length * panel + 12}" fill="#666">RSS over ${seconds(maxT)}; red lines: the worker died or was restarted; dashed: the ${mib(LIMIT)} limit</text>`)
  parts.push('</svg>')
  return parts.join('\n')
}

;(async () => {
  if (ONLY_REACTION) return reaction()
  const runs = [
    { label: 'self-recycle (INTERVAL=250ms, STRIKES=2) under Supervisor', window: SECONDS, go: () => underSupervisor('self-recycle', { env: SELF_RECYCLE, seconds: SECONDS }) },
    { label: 'self-recycle under PM2 (no max-memory-restart)', window: SECONDS, go: () => underPm2('self-recycle-pm2', { env: SELF_RECYCLE, seconds: SECONDS, maxMemory: false }) },
    { label: 'PM2 --max-memory-restart 100M', window: PM2_SECONDS, go: () => underPm2('pm2', { env: { SELF_RECYCLE_DISABLE: '1' }, seconds: PM2_SECONDS }) },
    { label: 'Supervisor + memmon (TICK_5)', window: SECONDS, go: () => underSupervisor('memmon', { env: { SELF_RECYCLE_DISABLE: '1' }, memmon: true, seconds: SECONDS }) },
    { label: 'plain node --max-old-space-size=128 under Supervisor', window: SECONDS, go: () => underSupervisor('plain', { env: { SELF_RECYCLE_DISABLE: '1' }, nodeArgs: '--max-old-space-size=128', seconds: SECONDS }) },
    { label: 'self-recycle, 2 s jobs (longer than PM2\'s 1.6 s kill timeout)', window: SECONDS, go: () => underSupervisor('self-recycle-long', { env: { ...SELF_RECYCLE, JOB_MS: '2000' }, seconds: SECONDS }) },
    { label: 'PM2 --max-memory-restart 100M, 2 s jobs', window: PM2_SECONDS, go: () => underPm2('pm2-long', { env: { SELF_RECYCLE_DISABLE: '1', JOB_MS: '2000' }, seconds: PM2_SECONDS }) }
  ]
  for (const run of runs) {
    const started = Date.now()
    console.error(`running: ${run.label} (${run.window} s)`)
    const { ledger, dir } = await run.go()
    run.result = analyse(ledger, started + run.window * 1000 - 500)
    fs.rmSync(dir, { recursive: true, force: true })
  }
  const table = [
    `<!-- written by: node bench/compare.js ${SECONDS} (${new Date().toISOString()}, node ${process.version}) -->`,
    '| manager | restarts | decision after crossing 100 MiB | exit after crossing | RSS at restart (peak) | jobs lost / completed | downtime |',
    '|---|---|---|---|---|---|---|',
    ...runs.map(({ label, result }) => {
      const r = result.restarts
      const lost = r.reduce((sum, x) => sum + x.lost, 0)
      return `| ${label} | ${r.length} | ${range(r.map((x) => x.decisionMs), seconds)} | ${range(r.map((x) => x.reactionMs), seconds)} | ${range(r.map((x) => x.peakRss), mib)} | ${lost} / ${result.jobs} (${r.filter((x) => x.lost > 0).length} of ${r.length} restarts lost a job) | ${range(r.map((x) => x.downtimeMs), seconds)} |`
    })
  ].join('\n')
  fs.writeFileSync(path.join(__dirname, 'comparison.md'), `${table}\n`)
  fs.writeFileSync(path.join(__dirname, 'comparison.svg'), svg(runs))
  console.log(table)
})()

/**
 * `node bench/compare.js 30 --reaction`: default settings (adaptive sampling and PREDICT)
 * against today's rule (FAST_INTERVAL=off PREDICT=off), 50 ms and 2 s jobs, limit 150 MiB,
 * ~20 MB/s, MIN_UPTIME=0 WARMUP=0, everything else default. Writes bench/reaction.md/.svg.
 */
async function reaction () {
  const base = { SELF_RECYCLE_MAX_RSS: '150MiB', SELF_RECYCLE_MIN_UPTIME: '0', SELF_RECYCLE_WARMUP: '0', SELF_RECYCLE_LOG: 'off', SELF_RECYCLE_SIGNALS: 'on', SAMPLE_MS: '20' }
  const today = { SELF_RECYCLE_FAST_INTERVAL: 'off', SELF_RECYCLE_PREDICT: 'off' }
  const runs = [
    { label: 'defaults, 50 ms jobs', env: base },
    { label: "today's rule (FAST_INTERVAL=off PREDICT=off), 50 ms jobs", env: { ...base, ...today } },
    { label: 'defaults, 2 s jobs', env: { ...base, JOB_MS: '2000' } },
    { label: "today's rule, 2 s jobs", env: { ...base, ...today, JOB_MS: '2000' } }
  ]
  for (const run of runs) {
    const started = Date.now()
    console.error(`running: ${run.label} (${SECONDS} s)`)
    const { ledger, dir } = await underSupervisor('reaction', { env: run.env, seconds: SECONDS })
    run.window = SECONDS
    run.result = analyse(ledger, started + SECONDS * 1000 - 500)
    fs.rmSync(dir, { recursive: true, force: true })
  }
  const median = (values) => {
    const sorted = values.filter((v) => v !== null).sort((a, b) => a - b)
    return sorted.length ? sorted[Math.floor(sorted.length / 2)] : null
  }
  const ratio = (bytes) => `${(bytes / LIMIT).toFixed(2)}x`
  const table = [
    `<!-- written by: node bench/compare.js ${SECONDS} --reaction (${new Date().toISOString()}, node ${process.version}) -->`,
    '| settings | recycles | predicted | decision after crossing 150 MiB (median, range) | peak RSS / limit (median, max) | jobs lost / completed |',
    '|---|---|---|---|---|---|',
    ...runs.map(({ label, result }) => {
      const r = result.restarts
      const decisions = r.map((x) => (x.crossed ? x.decisionMs : null))
      const peaks = r.map((x) => x.peakRss)
      const lost = r.reduce((sum, x) => sum + x.lost, 0)
      return `| ${label} | ${r.length} | ${r.filter((x) => x.predicted).length} (${r.filter((x) => !x.crossed).length} never crossed) | ${median(decisions) === null ? 'n/a' : `${median(decisions)} ms`} (${range(decisions, (ms) => `${ms} ms`)}) | ${median(peaks) === null ? 'n/a' : ratio(median(peaks))} (${peaks.length ? ratio(Math.max(...peaks)) : 'n/a'}) | ${lost} / ${result.jobs} |`
    })
  ].join('\n')
  fs.writeFileSync(path.join(__dirname, 'reaction.md'), `${table}\n`)
  fs.writeFileSync(path.join(__dirname, 'reaction.svg'), svg(runs))
  console.log(table)
}

