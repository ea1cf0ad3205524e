'use strict'
// `self-recycle status` and `check`: read the status file a worker writes
// (SELF_RECYCLE_STATUS_FILE) and judge it.

const fs = require('node:fs')
const { UsageError, parseArgs, parseDuration, mib, percent, say, fail } = require('./args.js')

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

module.exports = { readStatus, judge, statusLines, commandStatus, commandCheck }
