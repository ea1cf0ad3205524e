'use strict'
// `self-recycle status` and `check`: read the status file a worker writes
// (SELF_RECYCLE_STATUS_FILE), refuse anything that is not one, and judge it.

const fs = require('node:fs')
const path = require('node:path')
const { UsageError, parseArgs, parseDuration, mib, percent, say, fail } = require('./args.js')

/** A status file is a few KiB; anything far larger is not one. */
const MAX_BYTES = 1 << 20
/** How far in the future a status's time may be: clocks of a container and its host differ a little. */
const MAX_SKEW_MS = 5000
const STATES = new Set(['running', 'draining', 'exiting', 'stopped'])

function fileKind (stat) {
  if (stat.isDirectory()) return 'a directory'
  if (stat.isFIFO()) return 'a FIFO'
  if (stat.isCharacterDevice()) return 'a character device'
  if (stat.isBlockDevice()) return 'a block device'
  if (stat.isSocket()) return 'a socket'
  return 'not a regular file'
}

/**
 * The status in `file`, or `{ error, invalid }`: `invalid` when the file is there but is not
 * a status file (exit 2), else it could not be read (exit 1: the worker may not be up yet).
 * Opens without blocking (a FIFO) and reads only a regular file (not /dev/zero).
 */
function readStatus (file) {
  let fd
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)
  } catch (error) {
    return { error: `cannot read ${file}: ${error.code ?? error.message}` }
  }
  let text
  try {
    const stat = fs.fstatSync(fd)
    if (!stat.isFile()) return { error: `${file} is ${fileKind(stat)}, not a status file`, invalid: true }
    if (stat.size > MAX_BYTES) return { error: `${file} has ${stat.size} bytes, more than a status file (at most ${MAX_BYTES})`, invalid: true }
    text = fs.readFileSync(fd, 'utf8')
  } catch (error) {
    return { error: `cannot read ${file}: ${error.code ?? error.message}` }
  } finally {
    fs.closeSync(fd)
  }
  let status
  try {
    status = JSON.parse(text)
  } catch (error) {
    return { error: `${file} is not a status file: not JSON (${error.message})`, invalid: true }
  }
  const wrong = schemaProblems(status)
  if (wrong.length) return { error: `${file} is not a status file: ${wrong.join('; ')}`, invalid: true }
  return { status }
}

/**
 * A worker may be PID 1 of its container (`CMD ["node", "worker.js"]`), and `check` then runs
 * in that container too. Anywhere else PID 1 is an init that kill(1, 0) always finds: a pid
 * of 1 is taken only when PID 1 here runs node.
 */
function nodeIsPidOne () {
  try {
    const argv0 = fs.readFileSync('/proc/1/cmdline', 'utf8').split('\0')[0]
    return /^node(js)?(\d+)?(\.exe)?$/.test(path.basename(argv0)) || argv0 === process.execPath
  } catch {
    return false
  }
}

const isCount = (value) => typeof value === 'number' && Number.isFinite(value) && value >= 0

/** What in `status` does not match what a worker writes (empty when it matches). */
function schemaProblems (status) {
  if (status === null || typeof status !== 'object' || Array.isArray(status)) return [`expected a JSON object, found ${status === null ? 'null' : Array.isArray(status) ? 'an array' : typeof status}`]
  const problems = []
  const shown = (value) => JSON.stringify(value) ?? String(value)
  if (status.schema !== 1) problems.push(`schema is ${shown(status.schema)}, expected 1`)
  if (!Number.isSafeInteger(status.pid) || status.pid < 1) problems.push(`pid is ${shown(status.pid)}, expected a process id (an integer above 1, or 1 for a worker that is PID 1 of its container)`)
  else if (status.pid === 1 && !nodeIsPidOne()) problems.push('pid is 1, and PID 1 here is not node: expected a process id (an integer above 1, or 1 for a worker that is PID 1 of its container, checked from inside it)')
  if (typeof status.time !== 'string' || !Number.isFinite(Date.parse(status.time))) problems.push(`time is ${shown(status.time)}, expected an ISO 8601 time`)
  if (!STATES.has(status.state)) problems.push(`state is ${shown(status.state)}, expected one of ${[...STATES].join(', ')}`)
  if (!isCount(status.uptimeMs)) problems.push(`uptimeMs is ${shown(status.uptimeMs)}, expected milliseconds`)
  if (status.writeEveryMs !== undefined && !(isCount(status.writeEveryMs) && status.writeEveryMs > 0)) problems.push(`writeEveryMs is ${shown(status.writeEveryMs)}, expected milliseconds`)
  if (!isCount(status.warmupMs)) problems.push(`warmupMs is ${shown(status.warmupMs)}, expected milliseconds`)
  for (const name of ['sample', 'limits']) {
    if (status[name] === null || typeof status[name] !== 'object') problems.push(`${name} is ${shown(status[name])}, expected an object`)
  }
  const baseline = status.baseline
  if (baseline !== null && baseline !== undefined) {
    if (typeof baseline !== 'object') problems.push(`baseline is ${shown(baseline)}, expected an object or null`)
    else {
      if (typeof baseline.ready !== 'boolean') problems.push(`baseline.ready is ${shown(baseline.ready)}, expected true or false`)
      if (!Array.isArray(baseline.failures) || !baseline.failures.every((f) => typeof f === 'string')) problems.push(`baseline.failures is ${shown(baseline.failures)}, expected a list of sentences`)
      if (!isCount(baseline.rss) || !isCount(baseline.heapUsed)) problems.push('baseline.rss and baseline.heapUsed must be byte counts')
    }
  }
  if (status.postGcSlopeBytesPerMin !== null && status.postGcSlopeBytesPerMin !== undefined && !Number.isFinite(status.postGcSlopeBytesPerMin)) problems.push(`postGcSlopeBytesPerMin is ${shown(status.postGcSlopeBytesPerMin)}, expected a number or null`)
  for (const name of ['reinits', 'recentEvents']) {
    if (status[name] !== undefined && !Array.isArray(status[name])) problems.push(`${name} is ${shown(status[name])}, expected a list`)
  }
  return problems
}

function alive (pid) {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return error.code === 'EPERM'
  }
}

/** Health of a (valid) status: alive, fresh and running; `ready` adds the baseline's verdict. */
function judge (status, { ready, maxAgeMs, now = Date.now() }) {
  const problems = []
  const age = now - Date.parse(status.time)
  const freshFor = maxAgeMs ?? (3 * (status.writeEveryMs ?? 2000) + 5000)
  if (!alive(status.pid)) problems.push(`process ${status.pid} is not running`)
  if (age < -MAX_SKEW_MS) problems.push(`the status's time ${status.time} is ${Math.round(-age / 1000)} s in the future (a clock set wrong, or not written by the worker)`)
  else if (age > freshFor) problems.push(`the status is ${Math.round(age / 1000)} s old (more than ${Math.round(freshFor / 1000)} s)`)
  if (ready) {
    if (status.state !== 'running') problems.push(`the worker is ${status.state}`)
    if (!status.baseline) problems.push(`the baseline is not taken yet (warm-up ${Math.round(status.warmupMs / 1000)} s)`)
    else if (!status.baseline.ready) problems.push(...status.baseline.failures)
  }
  return problems
}

function statusLines (status) {
  const limits = status.limits
  const sample = status.sample
  const bytes = (value) => isCount(value) ? mib(value) : '?'
  const lines = [
    `pid ${status.pid}, ${status.state}, up ${Math.round(status.uptimeMs / 1000)} s (status of ${status.time})`,
    `rss ${bytes(sample.rss)}${limits.rss ? ` of limit ${mib(limits.rss)} (${percent(sample.rss / limits.rss)})` : ''}; heap ${bytes(sample.heapUsed)}${limits.heap ? ` of limit ${mib(limits.heap)} (${percent(sample.heapUsed / limits.heap)})` : ''}`,
    status.baseline
      ? `baseline: rss ${mib(status.baseline.rss)}, heap ${mib(status.baseline.heapUsed)}: ${status.baseline.ready ? 'ready' : `not ready (${status.baseline.failures.join('; ')})`}`
      : `baseline: not taken yet (warm-up ${Math.round(status.warmupMs / 1000)} s)`,
    `post-GC heap slope: ${typeof status.postGcSlopeBytesPerMin !== 'number' ? 'not enough major GCs yet' : `${mib(status.postGcSlopeBytesPerMin)}/min over ${status.postGcPoints} points`}`
  ]
  for (const reinit of status.reinits ?? []) {
    if (!reinit || !Array.isArray(reinit.sites)) continue
    lines.push(`re-initialized: '${reinit.key}' ${reinit.attempts} time(s), from ${reinit.sites.map((s) => `${s.site} (${s.count})`).join(', ')}`)
  }
  for (const event of status.recentEvents ?? []) if (event) lines.push(`  ${event.time} ${event.event}: ${event.msg}`)
  return lines
}

function commandStatus (argv) {
  const options = parseArgs(argv, { json: 'flag', help: 'flag' }, 1)
  if (options.help) return say('usage: self-recycle status FILE [--json]\nprints the status file a worker writes with SELF_RECYCLE_STATUS_FILE\nexit 0, 1 when it cannot be read, 2 when it is not a status file (or a usage error)'), 0
  const [file] = options._
  if (!file) throw new UsageError('status needs the status FILE')
  const { status, error, invalid } = readStatus(file)
  if (error) return fail(options, error, invalid ? 2 : 1)
  if (options.json) say(JSON.stringify(status))
  else say(statusLines(status).join('\n'))
  return 0
}

function commandCheck (argv) {
  const options = parseArgs(argv, { json: 'flag', help: 'flag', ready: 'flag', 'max-age': 'value' }, 1)
  if (options.help) {
    say('usage: self-recycle check FILE [--ready] [--max-age 15s] [--json]\nexit 0 when the worker is alive and its status fresh; with --ready, also when its baseline passed\n(a Docker HEALTHCHECK, a Kubernetes exec startupProbe/readinessProbe)\nexit 1 not healthy (or not ready), 2 when FILE is not a status file (or a usage error)')
    return 0
  }
  const [file] = options._
  if (!file) throw new UsageError('check needs the status FILE')
  const maxAgeMs = options['max-age'] === undefined ? undefined : parseDuration(options['max-age'], 'max-age')
  const { status, error, invalid } = readStatus(file)
  const problems = error ? [error] : judge(status, { ready: options.ready, maxAgeMs })
  if (options.json) say(JSON.stringify({ ok: problems.length === 0, problems, state: status?.state ?? null, pid: status?.pid ?? null }))
  else say(problems.length ? `not ${options.ready ? 'ready' : 'healthy'}: ${problems.join('; ')}` : (options.ready ? 'ready' : 'healthy'))
  if (invalid) return 2
  return problems.length ? 1 : 0
}

module.exports = { readStatus, commandStatus, commandCheck }
