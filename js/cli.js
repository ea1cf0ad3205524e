#!/usr/bin/env node
'use strict'
// npx self-recycle <command>: preflight, status, check, report, fleet. Every command takes
// --json and --help; exit 0 ok, 1 a failed check, 2 a usage error.

const fs = require('node:fs')
const path = require('node:path')

const USAGE = `usage: self-recycle <command> [options]

commands:
  preflight [options] -- <command...>   run a worker through its warm-up and judge its baseline
  status FILE                          print a worker's status file (SELF_RECYCLE_STATUS_FILE)
  check FILE [--ready]                 exit 0 when the worker is alive (and, --ready, its baseline passed)
  report FILE                          print a recycle report (REPORT_DIR) for a person: why, the
                                       memory series, the allocation sites that grew, the guards
  fleet [--redis URL] [--name N]       the workers of a fleet (FLEET_REDIS) and its last recycles,
        [--watch] [--events N]         like pm2 ls for every host

every command: --json (one JSON object on stdout), --help; exit 0 ok, 1 failed check, 2 usage error`

class UsageError extends Error {}

/** Minimal option parser: --flag, --name value, positional; `--` ends options. */
function parseArgs (argv, spec) {
  const options = { _: [] }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === '--') {
      options.rest = argv.slice(i + 1)
      break
    }
    if (!arg.startsWith('--')) {
      options._.push(arg)
      continue
    }
    const [name, inline] = arg.slice(2).split('=', 2)
    const kind = spec[name]
    if (kind === undefined) throw new UsageError(`unknown option --${name}`)
    if (kind === 'flag') {
      options[name] = true
    } else {
      const value = inline ?? argv[++i]
      if (value === undefined || value.startsWith('--')) throw new UsageError(`--${name} needs a value`)
      options[name] = value
    }
  }
  return options
}

const UNITS = { ms: 1, s: 1000, m: 60000, min: 60000, h: 3600000 }
function parseDuration (text, name) {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|min|h)?$/.exec(String(text).trim())
  if (!match) throw new UsageError(`--${name}=${JSON.stringify(text)}: expected a duration such as 30s, 2m or 500ms`)
  return Math.round(Number(match[1]) * UNITS[match[2] ?? 'ms'])
}

function parsePercent (text, name) {
  const match = /^(\d+(?:\.\d+)?)%$/.exec(String(text).trim())
  if (!match || Number(match[1]) <= 0 || Number(match[1]) > 100) throw new UsageError(`--${name}=${JSON.stringify(text)}: expected a percentage above 0% and at most 100%, such as 60%`)
  return Number(match[1]) / 100
}

const SIZE_UNITS = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, kib: 1024, mib: 1048576, gib: 1073741824 }
/** `5MiB/min` -> bytes per minute. */
function parseRate (text, name) {
  const match = /^(\d+(?:\.\d+)?)\s*([kmg]i?b|b)\/(s|min|m|h)$/i.exec(String(text).trim())
  if (!match) throw new UsageError(`--${name}=${JSON.stringify(text)}: expected a rate such as 5MiB/min, 100KiB/s or 1GB/h`)
  const perMinute = { s: 60, min: 1, m: 1, h: 1 / 60 }[match[3].toLowerCase()]
  return Number(match[1]) * SIZE_UNITS[match[2].toLowerCase()] * perMinute
}

const mib = (bytes) => `${Math.round(bytes / 1048576)} MiB`
const percent = (share) => `${Math.round(share * 100)}%`

function readStatus (file) {
  let text
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (error) {
    return { error: `cannot read ${file}: ${error.code ?? error.message}` }
  }
  try {
    return { status: JSON.parse(text) }
  } catch (error) {
    return { error: `${file} is not a status file: ${error.message}` }
  }
}

function alive (pid) {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return error.code === 'EPERM'
  }
}

/** Health of a status: alive, fresh and running; `ready` adds the baseline's verdict. */
function judge (status, { ready, maxAgeMs }) {
  const problems = []
  const age = Date.now() - Date.parse(status.time)
  const freshFor = maxAgeMs ?? (3 * (status.writeEveryMs ?? 2000) + 5000)
  if (!alive(status.pid)) problems.push(`process ${status.pid} is not running`)
  if (!(age <= freshFor)) problems.push(`the status is ${Math.round(age / 1000)} s old (more than ${Math.round(freshFor / 1000)} s)`)
  if (ready) {
    if (status.state !== 'running') problems.push(`the worker is ${status.state}`)
    if (!status.baseline) problems.push(`the baseline is not taken yet (warm-up ${Math.round(status.warmupMs / 1000)} s)`)
    else if (!status.baseline.ready) problems.push(...status.baseline.failures)
  }
  return problems
}

function statusLines (status) {
  const limits = status.limits ?? {}
  const sample = status.sample ?? {}
  const lines = [
    `pid ${status.pid}, ${status.state}, up ${Math.round(status.uptimeMs / 1000)} s (status of ${status.time})`,
    `rss ${mib(sample.rss)}${limits.rss ? ` of limit ${mib(limits.rss)} (${percent(sample.rss / limits.rss)})` : ''}; heap ${mib(sample.heapUsed)}${limits.heap ? ` of limit ${mib(limits.heap)} (${percent(sample.heapUsed / limits.heap)})` : ''}`,
    status.baseline
      ? `baseline: rss ${mib(status.baseline.rss)}, heap ${mib(status.baseline.heapUsed)}: ${status.baseline.ready ? 'ready' : `not ready (${status.baseline.failures.join('; ')})`}`
      : `baseline: not taken yet (warm-up ${Math.round(status.warmupMs / 1000)} s)`,
    `post-GC heap slope: ${status.postGcSlopeBytesPerMin === null ? 'not enough major GCs yet' : `${mib(status.postGcSlopeBytesPerMin)}/min over ${status.postGcPoints} points`}`
  ]
  for (const reinit of status.reinits ?? []) {
    lines.push(`re-initialized: '${reinit.key}' ${reinit.attempts} time(s), from ${reinit.sites.map((s) => `${s.site} (${s.count})`).join(', ')}`)
  }
  for (const event of status.recentEvents ?? []) lines.push(`  ${event.time} ${event.event}: ${event.msg}`)
  return lines
}

function commandStatus (argv) {
  const options = parseArgs(argv, { json: 'flag', help: 'flag' })
  if (options.help) return say('usage: self-recycle status FILE [--json]\nprints the status file a worker writes with SELF_RECYCLE_STATUS_FILE'), 0
  const [file] = options._
  if (!file) throw new UsageError('status needs the status FILE')
  const { status, error } = readStatus(file)
  if (error) return fail(options, error)
  if (options.json) say(JSON.stringify(status))
  else say(statusLines(status).join('\n'))
  return 0
}

function commandCheck (argv) {
  const options = parseArgs(argv, { json: 'flag', help: 'flag', ready: 'flag', 'max-age': 'value' })
  if (options.help) {
    say('usage: self-recycle check FILE [--ready] [--max-age 15s] [--json]\nexit 0 when the worker is alive and its status fresh; with --ready, also when its baseline passed\n(a Docker HEALTHCHECK, a Kubernetes exec startupProbe/readinessProbe)')
    return 0
  }
  const [file] = options._
  if (!file) throw new UsageError('check needs the status FILE')
  const maxAgeMs = options['max-age'] === undefined ? undefined : parseDuration(options['max-age'], 'max-age')
  const { status, error } = readStatus(file)
  const problems = error ? [error] : judge(status, { ready: options.ready, maxAgeMs })
  if (options.json) say(JSON.stringify({ ok: problems.length === 0, problems, state: status?.state ?? null, pid: status?.pid ?? null }))
  else say(problems.length ? `not ${options.ready ? 'ready' : 'healthy'}: ${problems.join('; ')}` : (options.ready ? 'ready' : 'healthy'))
  return problems.length ? 1 : 0
}

const SPARKS = '▁▂▃▄▅▆▇█'

/** The series as one line of block characters, from its minimum to its maximum. */
function sparkline (values, width = 60) {
  const points = values.filter(Number.isFinite)
  if (points.length === 0) return ''
  // Down-sample to `width` points by taking the maximum of each bucket (peaks matter).
  const buckets = []
  const size = Math.max(1, Math.ceil(points.length / width))
  for (let i = 0; i < points.length; i += size) buckets.push(Math.max(...points.slice(i, i + size)))
  const low = Math.min(...buckets)
  const high = Math.max(...buckets)
  return buckets.map((v) => SPARKS[high === low ? 0 : Math.round(((v - low) / (high - low)) * (SPARKS.length - 1))]).join('')
}

function readReport (file) {
  let text
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (error) {
    return { error: `cannot read ${file}: ${error.code ?? error.message}` }
  }
  let report
  try {
    report = JSON.parse(text)
  } catch (error) {
    return { error: `${file} is not JSON: ${error.message}` }
  }
  if (!report || typeof report !== 'object' || typeof report.reason !== 'string' || !report.recycle) {
    return { error: `${file} is not a self-recycle report (no reason or recycle event)` }
  }
  return { report }
}

/** The parts of a report a person reads first, as plain data (also the --json output). */
function summarize (report) {
  const samples = Array.isArray(report.samples) ? report.samples : []
  const sites = report.profile?.topSites ?? report.recycle.topSites ?? []
  const guards = (Array.isArray(report.guard) ? report.guard : [])
    .filter((g) => g && typeof g.key === 'string')
    .sort((a, b) => (b.heapDelta + b.rssDelta) - (a.heapDelta + a.rssDelta))
  return {
    pid: report.pid,
    time: report.time,
    reason: report.reason,
    msg: report.recycle.msg,
    exit: report.exit ? { code: report.exit.code, drained: report.exit.drained, durationMs: report.exit.durationMs } : null,
    limits: report.limits ?? null,
    series: {
      rss: samples.map((s) => s.rss),
      heapUsed: samples.map((s) => s.heapUsed),
      uptimeMs: samples.map((s) => s.uptimeMs)
    },
    topSites: sites,
    profile: report.profile ? { since: report.profile.since, heapProfile: report.profile.heapProfile ?? null, intervalBytes: report.profile.intervalBytes } : null,
    profileSkipped: report.recycle.profileSkipped ?? null,
    guards,
    versions: report.versions ?? null
  }
}

function reportLines (summary) {
  const lines = [
    `pid ${summary.pid} recycled (${summary.reason}) at ${summary.time}`,
    `  ${summary.msg}`
  ]
  if (summary.exit) lines.push(`  exit ${summary.exit.code} after ${summary.exit.durationMs} ms, ${summary.exit.drained ? 'drained' : 'NOT drained (work was cut off at the deadline)'}`)
  const { rss, heapUsed, uptimeMs } = summary.series
  if (rss.length > 1) {
    const span = `last ${Math.round((uptimeMs.at(-1) - uptimeMs[0]) / 1000)} s, ${rss.length} samples`
    lines.push('', `memory (${span}):`)
    const limit = (bytes) => bytes ? `, limit ${mib(bytes)}` : ''
    lines.push(`  rss   ${sparkline(rss)}  ${mib(Math.min(...rss))} -> ${mib(rss.at(-1))}${limit(summary.limits?.rss)}`)
    lines.push(`  heap  ${sparkline(heapUsed)}  ${mib(Math.min(...heapUsed))} -> ${mib(heapUsed.at(-1))}${limit(summary.limits?.heap)}`)
  }
  lines.push('')
  if (summary.topSites.length > 0) {
    lines.push(`allocation sites that grew since the ${summary.profile?.since ?? 'baseline'} (live sampled bytes):`)
    lines.push('  growth      share  site')
    for (const site of summary.topSites.slice(0, 20)) {
      lines.push(`  ${mib(site.growth).padStart(10)}  ${percent(site.share).padStart(5)}  ${site.site}`)
    }
    if (summary.profile?.heapProfile) lines.push(`  the whole profile: ${summary.profile.heapProfile} (open it in Chrome DevTools > Memory, or VS Code)`)
  } else if (summary.profile) {
    // Profiled, and no site grew beyond sampling noise.
    lines.push(`allocation sites: no heap growth beyond sampling noise since the ${summary.profile.since === 'start' ? 'process started' : 'baseline'}`)
    if (summary.profile.heapProfile) lines.push(`  the whole profile: ${summary.profile.heapProfile} (open it in Chrome DevTools > Memory, or VS Code)`)
  } else {
    lines.push(`allocation sites: ${summary.profileSkipped ? `not profiled (${summary.profileSkipped})` : 'not profiled (PROFILE=off, or a report from before PROFILE)'}`)
  }
  const guards = summary.guards.filter((g) => g.inits > 0)
  if (guards.length > 0) {
    lines.push('', 'guarded initializations (most memory first):', '  inits  reinit attempts  heap delta  rss delta  key')
    for (const g of guards.slice(0, 20)) {
      lines.push(`  ${String(g.inits).padStart(5)}  ${String(g.reinitAttempts).padStart(15)}  ${mib(g.heapDelta).padStart(10)}  ${mib(g.rssDelta).padStart(9)}  ${g.key}`)
    }
  }
  return lines
}

function commandReport (argv) {
  const options = parseArgs(argv, { json: 'flag', help: 'flag' })
  if (options.help) return say('usage: self-recycle report FILE [--json]\nprints a recycle report (written to SELF_RECYCLE_REPORT_DIR) for a person: the reason, the memory\nseries, the allocation sites that grew (PROFILE=heap) and the guarded initializations'), 0
  const [file] = options._
  if (!file) throw new UsageError('report needs the report FILE')
  const { report, error } = readReport(file)
  if (error) return fail(options, error)
  const summary = summarize(report)
  say(options.json ? JSON.stringify(summary) : reportLines(summary).join('\n'))
  return 0
}

/**
 * Runs the worker as a child with a private status file, waits for the end of its warm-up
 * (the window), judges the baseline, stops the child gracefully and exits 0 or 1.
 */
async function commandPreflight (argv) {
  const options = parseArgs(argv, { json: 'flag', help: 'flag', window: 'value', 'max-baseline': 'value', 'max-slope': 'value', 'no-reinit': 'flag', 'start-timeout': 'value' })
  if (options.help) {
    say(`usage: self-recycle preflight [options] -- <command...>
  --window 30s          warm-up to measure over (sets the child's SELF_RECYCLE_WARMUP unless set)
  --max-baseline 60%    baseline RSS and heap as a share of their limits
  --max-slope 5MiB/min  post-GC heap slope over the window (off unless given)
  --no-reinit           any re-initialization of a once()/trackInit() key fails
  --start-timeout 30s   how long the child may take to start self-recycle
  --json                one JSON object on stdout
exit 0 pass, 1 fail, 2 usage error`)
    return 0
  }
  if (!options.rest || options.rest.length === 0) throw new UsageError('preflight needs the worker command after --')
  const windowMs = parseDuration(options.window ?? '30s', 'window')
  const maxBaseline = parsePercent(options['max-baseline'] ?? '60%', 'max-baseline')
  const maxSlope = options['max-slope'] === undefined ? null : parseRate(options['max-slope'], 'max-slope')
  const startTimeoutMs = parseDuration(options['start-timeout'] ?? '30s', 'start-timeout')
  const { spawn } = require('node:child_process')
  const os = require('node:os')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-preflight-'))
  const statusFile = path.join(dir, 'status.json')
  const env = { ...process.env, SELF_RECYCLE_STATUS_FILE: statusFile, SELF_RECYCLE_READY_MAX_BASELINE: `${maxBaseline * 100}%` }
  if (env.SELF_RECYCLE_WARMUP === undefined) env.SELF_RECYCLE_WARMUP = `${windowMs}ms`
  const effectiveWindowMs = env.SELF_RECYCLE_WARMUP === `${windowMs}ms` ? windowMs : null
  const child = spawn(options.rest[0], options.rest.slice(1), { env, stdio: ['ignore', 'inherit', 'inherit'] })
  let exited = null
  const exit = new Promise((resolve) => child.on('exit', (code, signal) => { exited = { code, signal }; resolve(exited) }))
  child.on('error', (error) => { exited = { error: error.message } })
  const started = Date.now()
  const deadline = started + startTimeoutMs + (effectiveWindowMs ?? windowMs) + 30000
  let status = null
  let outcome = null
  while (!outcome) {
    await new Promise((resolve) => setTimeout(resolve, 100))
    const read = readStatus(statusFile)
    if (read.status) status = read.status
    if (status?.baseline) outcome = 'baseline'
    else if (exited) outcome = 'exited'
    else if (!status && Date.now() - started > startTimeoutMs) outcome = 'no-status'
    else if (Date.now() > deadline) outcome = 'timeout'
  }
  const failures = []
  let figures = null
  if (outcome === 'exited') {
    const how = exited.error ? `could not start: ${exited.error}` : exited.signal ? `was killed by ${exited.signal}` : `exited with code ${exited.code}`
    failures.push(`the worker ${how} before the end of its warm-up (${Math.round((status?.uptimeMs ?? (Date.now() - started)) / 1000)} s in)${status ? '' : '; it never started self-recycle'}`)
  } else if (outcome === 'no-status') {
    failures.push(`the worker never started self-recycle: no status within ${Math.round(startTimeoutMs / 1000)} s (does its bootstrap call require('self-recycle').start()?)`)
  } else if (outcome === 'timeout') {
    failures.push(`the worker did not reach the end of its warm-up (${Math.round(status.warmupMs / 1000)} s) in time`)
  } else {
    const baseline = status.baseline
    figures = {
      baselineRss: baseline.rss,
      baselineHeapUsed: baseline.heapUsed,
      rssLimit: status.limits.rss ?? status.limits.ceiling,
      heapLimit: status.limits.heap,
      rssShare: baseline.rssShare,
      heapShare: baseline.heapShare,
      memoryLimit: status.memoryLimit,
      memoryLimitShare: status.memoryLimit && status.memoryLimit.source !== 'physical' ? baseline.rss / status.memoryLimit.bytes : null,
      postGcSlopeBytesPerMin: status.postGcSlopeBytesPerMin,
      postGcPoints: status.postGcPoints,
      reinits: status.reinits,
      warmupMs: status.warmupMs
    }
    failures.push(...baseline.failures)
    if (maxSlope !== null && status.postGcSlopeBytesPerMin !== null && status.postGcSlopeBytesPerMin > maxSlope) {
      failures.push(`the post-GC heap grows ${mib(status.postGcSlopeBytesPerMin)}/min over the window, more than ${mib(maxSlope)}/min`)
    }
    if (options['no-reinit']) {
      for (const reinit of status.reinits) failures.push(`'${reinit.key}' was re-initialized ${reinit.attempts} time(s), from ${reinit.sites.map((s) => s.site).join(', ')}`)
    }
  }
  // Stop the worker gracefully (its own drain), then for good.
  if (!exited) {
    child.kill('SIGTERM')
    const killer = setTimeout(() => child.kill('SIGKILL'), 10000)
    await exit
    clearTimeout(killer)
  }
  fs.rmSync(dir, { recursive: true, force: true })
  const passed = failures.length === 0
  if (options.json) {
    say(JSON.stringify({ passed, outcome, failures, figures, thresholds: { maxBaseline, maxSlopeBytesPerMin: maxSlope, noReinit: Boolean(options['no-reinit']) }, window: effectiveWindowMs ?? status?.warmupMs ?? null }))
  } else {
    if (figures) {
      say(`baseline after ${Math.round(figures.warmupMs / 1000)} s: rss ${mib(figures.baselineRss)}${figures.rssLimit ? ` (${percent(figures.rssShare)} of limit ${mib(figures.rssLimit)})` : ''}, heap ${mib(figures.baselineHeapUsed)}${figures.heapLimit ? ` (${percent(figures.heapShare)} of limit ${mib(figures.heapLimit)})` : ''}`)
      if (figures.memoryLimitShare !== null) say(`container: ${percent(figures.memoryLimitShare)} of ${mib(figures.memoryLimit.bytes)}`)
      say(`post-GC heap slope: ${figures.postGcSlopeBytesPerMin === null ? 'not enough major GCs to tell' : `${mib(figures.postGcSlopeBytesPerMin)}/min (${figures.postGcPoints} points)`}`)
      for (const reinit of figures.reinits) say(`re-initialized: '${reinit.key}' ${reinit.attempts} time(s), from ${reinit.sites.map((s) => `${s.site} (${s.count})`).join(', ')}`)
    }
    say(passed ? 'preflight passed' : `preflight failed:\n${failures.map((f) => `  - ${f}`).join('\n')}`)
  }
  return passed ? 0 : 1
}

const FLEET_USAGE = `usage: self-recycle fleet [--redis URL] [--name NAME] [--events N] [--watch [--interval 2s]] [--json]
prints every live worker of a fleet (host, pid, state, RSS against its limit, heap, pressure,
uptime, recycles of that host, the last recycle's reason), then the fleet's last recycles.
--redis defaults to SELF_RECYCLE_FLEET_REDIS, --name to SELF_RECYCLE_FLEET_NAME or "default".`

function ago (ms) {
  if (ms < 1000) return 'now'
  if (ms < 60000) return `${Math.round(ms / 1000)}s`
  if (ms < 3600000) return `${Math.round(ms / 60000)}m`
  return `${Math.round(ms / 3600000)}h`
}

function bar (share, width = 10) {
  if (share === null || share === undefined) return ' '.repeat(width + 7)
  const filled = Math.max(0, Math.min(width, Math.round(share * width)))
  return `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${`${Math.round(share * 100)}%`.padStart(4)}`
}

function fleetLines (fleet, now = Date.now()) {
  const recyclesByHost = {}
  const lastByHost = {}
  for (const event of fleet.events) {
    if (event.event !== 'recycle' || !event.host || !Number.isFinite(Date.parse(event.time))) continue
    recyclesByHost[event.host] = (recyclesByHost[event.host] ?? 0) + 1
    lastByHost[event.host] = event
  }
  const draining = fleet.workers.filter((w) => w.state === 'draining').length
  const lines = [
    `fleet ${fleet.name}: ${fleet.workers.length} worker(s)${draining ? `, ${draining} draining` : ''}; ` +
      `${fleet.leases.length ? `lease held by ${fleet.leases.join(', ')}` : 'no lease held'}; ` +
      `${fleet.storm ? `STORM (gap widened for ${ago(fleet.storm.leftMs)} more)` : 'no storm'}`
  ]
  const rows = [['HOST', 'PID', 'STATE', 'RSS/LIMIT', 'HEAP', 'PRESSURE', 'UPTIME', 'RECYCLES', 'LAST RECYCLE']]
  for (const w of fleet.workers) {
    const last = lastByHost[w.host]
    rows.push([
      w.host,
      String(w.pid),
      w.state + (w.lease ? '*' : ''),
      `${w.rss === null ? '?' : Math.round(w.rss / 1048576)}/${w.limits?.rss ? mib(w.limits.rss) : 'none'}`,
      w.heapUsed === null ? '?' : mib(w.heapUsed),
      bar(w.pressure),
      ago(w.uptimeMs),
      String(recyclesByHost[w.host] ?? 0),
      last ? `${last.reason} (${ago(now - Date.parse(last.time)) === 'now' ? 'just now' : `${ago(now - Date.parse(last.time))} ago`})` : '-'
    ])
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)))
  for (const row of rows) lines.push(row.map((cell, i) => cell.padEnd(widths[i])).join('  ').trimEnd())
  const recycles = fleet.events.filter((e) => (e.event === 'recycle' || e.event === 'storm') && typeof e.time === 'string')
  lines.push('', recycles.length ? 'last recycles:' : 'no recycle in the fleet\'s history yet')
  for (const event of recycles.slice(-10)) {
    lines.push(`  ${event.time} ${event.host} ${event.pid} ${event.event === 'storm' ? 'STORM' : event.reason}${event.fleet ? ` [fleet ${event.fleet}]` : ''}: ${event.msg}`)
  }
  return lines
}

async function commandFleet (argv) {
  const options = parseArgs(argv, { redis: 'value', name: 'value', events: 'value', watch: 'flag', interval: 'value', json: 'flag', help: 'flag' })
  if (options.help) return say(FLEET_USAGE), 0
  const url = options.redis ?? process.env.SELF_RECYCLE_FLEET_REDIS
  if (!url) throw new UsageError('fleet needs --redis URL (or SELF_RECYCLE_FLEET_REDIS)')
  if (!/^rediss?:\/\/\S+$/.test(url)) throw new UsageError(`--redis=${JSON.stringify(url)}: expected a redis:// or rediss:// URL`)
  const name = options.name ?? process.env.SELF_RECYCLE_FLEET_NAME ?? 'default'
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(name)) throw new UsageError(`--name=${JSON.stringify(name)}: expected 1 to 64 letters, digits, '.', '_' or '-'`)
  const events = options.events === undefined ? 50 : Number(options.events)
  if (!Number.isInteger(events) || events < 0 || events > 1000) throw new UsageError(`--events=${JSON.stringify(options.events)}: expected a whole number from 0 to 1000`)
  const intervalMs = options.interval === undefined ? 2000 : parseDuration(options.interval, 'interval')
  const { loadIoredis, readFleet } = require('./fleet.js')
  let Redis
  try {
    Redis = loadIoredis()
  } catch (error) {
    return fail(options, error.message.replace(/^self-recycle: /, ''))
  }
  const shown = url.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@')
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false, connectTimeout: 3000, retryStrategy: () => null })
  client.on('error', () => {})
  try {
    try {
      await client.connect()
    } catch (error) {
      return fail(options, `cannot reach Redis at ${shown}: ${error.message}`)
    }
    for (;;) {
      let fleet
      try {
        fleet = await readFleet(client, name, { events })
      } catch (error) {
        // Watching goes on through a Redis restart; a single read says what failed.
        if (!options.watch) return fail(options, `cannot read the fleet from Redis at ${shown}: ${error.message}`)
        say(options.json ? JSON.stringify({ ok: false, error: error.message }) : `\x1b[2J\x1b[Hself-recycle: cannot read the fleet from Redis at ${shown}: ${error.message}; retrying`)
        if (client.status === 'end') client.connect().catch(() => {})
        await new Promise((resolve) => setTimeout(resolve, intervalMs))
        continue
      }
      if (options.json) say(JSON.stringify(fleet))
      else say(`${options.watch ? '\x1b[2J\x1b[H' : ''}${fleetLines(fleet).join('\n')}`)
      if (!options.watch) return 0
      await new Promise((resolve) => setTimeout(resolve, intervalMs))
    }
  } finally {
    client.disconnect()
  }
}

function say (text) {
  process.stdout.write(`${text}\n`)
}

function fail (options, message) {
  if (options.json) say(JSON.stringify({ ok: false, error: message }))
  else process.stderr.write(`self-recycle: ${message}\n`)
  return 1
}

const COMMANDS = {
  preflight: commandPreflight,
  status: commandStatus,
  check: commandCheck,
  report: commandReport,
  fleet: commandFleet
}

async function main (argv) {
  const [command, ...rest] = argv
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    say(USAGE)
    return command ? 0 : 2
  }
  const run = COMMANDS[command]
  if (!run) {
    process.stderr.write(`self-recycle: unknown command ${JSON.stringify(command)}\n${USAGE}\n`)
    return 2
  }
  try {
    return await run(rest)
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`self-recycle ${command}: ${error.message} (see self-recycle ${command} --help)\n`)
      return 2
    }
    throw error
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => { process.exitCode = code }, (error) => {
    process.stderr.write(`self-recycle: ${error.stack}\n`)
    process.exitCode = 1
  })
}

module.exports = { main, parseDuration, parseRate, judge }
