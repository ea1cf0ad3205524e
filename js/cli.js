#!/usr/bin/env node
'use strict'
// npx self-recycle <command>: preflight, status, check, report, fleet, profile. Every command
// takes --json and --help; exit 0 ok, 1 a failed check, 2 a usage error (profile: 3 no answer).

const fs = require('node:fs')

const USAGE = `usage: self-recycle <command> [options]

commands:
  preflight [options] -- <command...>   run a worker through its warm-up and judge its baseline
  status FILE                          print a worker's status file (SELF_RECYCLE_STATUS_FILE)
  check FILE [--ready]                 exit 0 when the worker is alive (and, --ready, its baseline passed)
  report FILE                          print a recycle report (REPORT_DIR) for a person: why, the
                                       memory series, the allocation sites that grew, the guards
  fleet [--redis URL] [--name N]       the workers of a fleet (FLEET_REDIS) and its last recycles,
        [--watch] [--events N]         like pm2 ls for every host
  profile PID|FILE [--timeout 10s]     ask a running worker (not recycled) for the allocation sites
          [--out FILE]                 that grew and the named jobs the heap grew with

every command: --json (one JSON object on stdout), --help; exit 0 ok, 1 failed check, 2 usage error
self-recycle --version (or -v) prints the version`

const { UsageError, parseArgs, parseDuration, settings, mib, percent, say, fail } = require('./cli/args.js')
const { commandStatus, commandCheck } = require('./cli/status.js')
const { commandPreflight } = require('./cli/preflight.js')

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
    topJobs: Array.isArray(report.recycle.topJobs) ? report.recycle.topJobs : null,
    jobsFit: report.recycle.jobsFit ?? null,
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
  if (summary.topJobs) lines.push('', ...require('./cli/profile.js').jobLines(summary.topJobs, summary.jobsFit))
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
  const options = parseArgs(argv, { json: 'flag', help: 'flag' }, 1)
  if (options.help) return say('usage: self-recycle report FILE [--json]\nprints a recycle report (written to SELF_RECYCLE_REPORT_DIR) for a person: the reason, the memory\nseries, the allocation sites that grew (PROFILE=heap) and the guarded initializations'), 0
  const [file] = options._
  if (!file) throw new UsageError('report needs the report FILE')
  const { report, error } = readReport(file)
  if (error) return fail(options, error)
  const summary = summarize(report)
  say(options.json ? JSON.stringify(summary) : reportLines(summary).join('\n'))
  return 0
}

const FLEET_USAGE = `usage: self-recycle fleet [--redis URL] [--name NAME] [--events N] [--watch [--interval 2s]] [--timeout 1s] [--json]
prints every live worker of a fleet (host, pid, state, RSS against its limit, heap, pressure,
uptime, recycles of that host, the last recycle's reason), then the fleet's last recycles.
--redis defaults to SELF_RECYCLE_FLEET_REDIS, --name to SELF_RECYCLE_FLEET_NAME or "default",
--timeout (the longest wait for Redis, to connect and to read) to SELF_RECYCLE_FLEET_TIMEOUT or 1s.`

/** Rejects after `ms`: a Redis that accepts and never answers must not hang the command. */
function bounded (promise, ms) {
  let timer
  return Promise.race([promise, new Promise((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`Redis did not answer in ${ms} ms`)), ms)
  })]).finally(() => clearTimeout(timer))
}

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
      `${fleet.queue?.length ? `${fleet.queue.length} waiting (next: ${fleet.queue[0]}); ` : ''}` +
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
  const options = parseArgs(argv, { redis: 'value', name: 'value', events: 'value', watch: 'flag', interval: 'value', timeout: 'value', json: 'flag', help: 'flag' }, 0)
  if (options.help) return say(FLEET_USAGE), 0
  // The flags over SELF_RECYCLE_FLEET_*, parsed by the settings table as a worker's are.
  const fleetSettings = settings({
    fleetRedis: ['--redis', options.redis],
    fleetName: ['--name', options.name],
    fleetTimeout: ['--timeout', options.timeout]
  }, ['FLEET_REDIS', 'FLEET_NAME', 'FLEET_TIMEOUT'])
  const url = fleetSettings.fleetRedis
  if ((url ?? null) === null) throw new UsageError('fleet needs --redis URL (or SELF_RECYCLE_FLEET_REDIS)')
  const name = fleetSettings.fleetName
  const events = options.events === undefined ? 50 : Number(options.events)
  if (!Number.isInteger(events) || events < 0 || events > 1000) throw new UsageError(`--events=${JSON.stringify(options.events)}: expected a whole number from 0 to 1000`)
  const intervalMs = options.interval === undefined ? 2000 : parseDuration(options.interval, 'interval')
  // A timer of 2^31 ms or more fires at once: the watch would spin.
  if (intervalMs < 100 || intervalMs > 2 ** 31 - 1) throw new UsageError(`--interval=${JSON.stringify(options.interval)}: expected a duration from 100ms to 24d`)
  const timeoutMs = fleetSettings.fleetTimeoutMs
  const { loadIoredis, readFleet, refusal } = require('./fleet.js')
  let Redis
  try {
    Redis = loadIoredis()
  } catch (error) {
    return fail(options, error.message.replace(/^self-recycle: /, ''))
  }
  const shown = fleetSettings.fleetRedisShown
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false, connectTimeout: timeoutMs, retryStrategy: () => null })
  // What Redis refused while connecting (a password, a database): ioredis only says
  // "Connection is closed", or carries on in database 0.
  let refused = /** @type {ReturnType<typeof refusal>} */ (null)
  client.on('error', (error) => { refused = refusal(error) ?? refused })
  try {
    try {
      await bounded(client.connect(), timeoutMs)
    } catch (error) {
      return fail(options, `cannot reach Redis at ${shown}: ${refused?.why ?? error.message}`)
    }
    if (refused) return fail(options, `cannot read the fleet from Redis at ${shown}: ${refused.why}`)
    for (;;) {
      let fleet
      try {
        fleet = await bounded(readFleet(client, name, { events }), timeoutMs)
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
    // A peer that never answers never closes either: drop the socket, or it keeps us alive.
    client.stream?.destroy?.()
  }
}

const COMMANDS = {
  preflight: commandPreflight,
  status: commandStatus,
  check: commandCheck,
  report: commandReport,
  fleet: commandFleet,
  profile: (argv) => require('./cli/profile.js').commandProfile(argv)
}

async function main (argv) {
  const [command, ...rest] = argv
  if (command === '--version' || command === '-v' || command === 'version') {
    if (rest.length) {
      process.stderr.write(`self-recycle: ${command} takes no argument (given ${rest.map((a) => JSON.stringify(a)).join(' ')})\n`)
      return 2
    }
    say(require('../package.json').version)
    return 0
  }
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
    // This command parses values with the addon, and no binary loads here: say why, not a stack.
    if (error?.code === 'ERR_SELF_RECYCLE_NO_BINARY') {
      process.stderr.write(`${error.message}\n`)
      return 1
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
