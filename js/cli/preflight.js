'use strict'
// `self-recycle preflight`: runs the worker (and, with --load, a load command beside it)
// through its warm-up with a private status file, judges the baseline, then stops both
// process groups. stdout holds only the verdict; the children's lines go to stderr,
// prefixed, so `--json` output always parses.

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { UsageError, parseArgs, parseDuration, parsePercent, parseRate, settings, mib, percent, say } = require('./args.js')
const { readStatus } = require('./status.js')
const { stopGroup, spawnGroup, relayLines } = require('./group.js')
/** @typedef {import('./group.js').GroupStatus} GroupStatus */

const USAGE = `usage: self-recycle preflight [options] -- <command...>
  --window 30s          warm-up to measure over (sets the child's SELF_RECYCLE_WARMUP unless set)
  --max-baseline 60%    baseline RSS and heap as a share of their limits
  --max-slope 5MiB/min  post-GC heap slope over the window (off unless given)
  --no-reinit           any re-initialization of a once()/trackInit() key fails
  --load 'CMD'          a shell command run beside the worker once it started self-recycle
                        (feeds it work: a leak that grows per job shows only under load);
                        stopped with the worker; exiting non-zero fails the pre-flight
  --no-gc               do not force a full GC every twentieth of the window (by default the
                        worker runs with --expose-gc and a preloaded timer, so that the
                        post-GC slope has points even when V8 would run no major GC)
  --allow-inconclusive  a check that could not be measured (too few major GCs for the
                        slope) passes with a note instead of failing
  --start-timeout 30s   how long the child may take to start self-recycle
  --stop-timeout 10s    after SIGTERM, how long before the worker's group gets SIGKILL
  --json                one JSON object on stdout (the children's output goes to stderr)
The worker and the load command each run in their own process group, stopped as a whole at
the end and when preflight gets SIGTERM, SIGINT or SIGHUP.
exit 0 pass, 1 fail or inconclusive, 2 usage error`

const SIGNALS = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 }
const tick = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function describeExit (status) {
  if (status.error) return `could not start: ${status.error}`
  if (status.signal) return `was killed by ${status.signal}`
  return `exited with code ${status.code}`
}

/** The verdict on a status whose baseline is taken: failures, and checks that could not run. */
function judgeBaseline (status, { maxSlope, noReinit, noGc }) {
  const failures = [...status.baseline.failures]
  const inconclusive = []
  if (maxSlope !== null) {
    if (status.postGcSlopeBytesPerMin === null) {
      inconclusive.push(`post-GC heap slope: not measurable, ${status.postGcPoints} major GC(s) in the window and at least 3 are needed; ${noGc ? 'leave out --no-gc, ' : ''}feed the worker work during the window (--load) or lengthen --window`)
    } else if (status.postGcSlopeBytesPerMin > maxSlope) {
      failures.push(`the post-GC heap grows ${mib(status.postGcSlopeBytesPerMin)}/min over the window, more than ${mib(maxSlope)}/min`)
    }
  }
  if (noReinit) {
    for (const reinit of status.reinits) failures.push(`'${reinit.key}' was re-initialized ${reinit.attempts} time(s), from ${reinit.sites.map((s) => s.site).join(', ')}`)
  }
  return { failures, inconclusive }
}

function figuresOf (status) {
  const baseline = status.baseline
  return {
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
}

async function commandPreflight (argv) {
  const options = parseArgs(argv, {
    json: 'flag',
    help: 'flag',
    window: 'value',
    'max-baseline': 'value',
    'max-slope': 'value',
    'no-reinit': 'flag',
    load: 'value',
    'allow-inconclusive': 'flag',
    'no-gc': 'flag',
    'start-timeout': 'value',
    'stop-timeout': 'value',
    '--': 'rest'
  }, 0)
  if (options.help) return say(USAGE), 0
  if (!options.rest || options.rest.length === 0) throw new UsageError('preflight needs the worker command after --')
  const windowMs = parseDuration(options.window ?? '30s', 'window')
  const maxBaseline = parsePercent(options['max-baseline'] ?? '60%', 'max-baseline')
  const maxSlope = options['max-slope'] === undefined ? null : parseRate(options['max-slope'], 'max-slope')
  const startTimeoutMs = parseDuration(options['start-timeout'] ?? '30s', 'start-timeout')
  const stopTimeoutMs = parseDuration(options['stop-timeout'] ?? '10s', 'stop-timeout')
  if (options.load !== undefined && options.load.trim() === '') throw new UsageError('--load needs a shell command, such as --load \'node load.js\'')

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-preflight-'))
  const statusFile = path.join(dir, 'status.json')
  /** @type {NodeJS.ProcessEnv} */
  const env = { ...process.env, SELF_RECYCLE_STATUS_FILE: statusFile, SELF_RECYCLE_READY_MAX_BASELINE: `${maxBaseline * 100}%` }
  // The worker's own WARMUP (as it will read it: blank is unset) wins over --window.
  const warmup = settings({}, ['WARMUP'])
  if (!warmup.given.includes('WARMUP')) env.SELF_RECYCLE_WARMUP = `${windowMs}ms`
  const effectiveWindowMs = !warmup.given.includes('WARMUP') || warmup.warmupMs === windowMs ? windowMs : null
  if (!options['no-gc']) {
    const preload = path.join(__dirname, 'preflight-gc.js')
    env.NODE_OPTIONS = `${env.NODE_OPTIONS ?? ''} --expose-gc --require ${JSON.stringify(preload)}`.trim()
  }

  // A signal to us stops the loop; the groups are stopped and the directory removed below.
  let interrupted = null
  let signals = 0
  const onSignal = (name) => {
    signals++
    interrupted ??= name
  }
  const handlers = Object.keys(SIGNALS).map((name) => /** @type {[string, () => void]} */ ([name, () => onSignal(name)]))
  for (const [name, handler] of handlers) process.on(name, handler)

  const worker = spawnGroup(options.rest[0], options.rest.slice(1), { env })
  if (worker.child.stdout) relayLines(worker.child.stdout, process.stderr, '[worker] ')
  if (worker.child.stderr) relayLines(worker.child.stderr, process.stderr, '[worker] ')
  let load = null

  const started = Date.now()
  const deadline = started + startTimeoutMs + (effectiveWindowMs ?? windowMs) + 30000
  let status = null
  let outcome = null
  while (!outcome) {
    await tick(100)
    const read = readStatus(statusFile)
    if (read.status) status = read.status
    if (status && options.load !== undefined && !load) {
      // The load starts once the worker runs self-recycle: it can take work by then.
      load = spawnGroup('/bin/sh', ['-c', options.load], { env: process.env })
      relayLines(load.child.stdout, process.stderr, '[load] ')
      relayLines(load.child.stderr, process.stderr, '[load] ')
    }
    if (interrupted) outcome = 'interrupted'
    else if (status?.baseline) outcome = 'baseline'
    else if (worker.status) outcome = 'exited'
    else if (load?.status && (load.status.error || load.status.code !== 0)) outcome = 'load-failed'
    else if (!status && Date.now() - started > startTimeoutMs) outcome = 'no-status'
    else if (Date.now() > deadline) outcome = 'timeout'
  }

  const failures = []
  let inconclusive = []
  let figures = null
  if (outcome === 'interrupted') {
    failures.push(`preflight received ${interrupted}; the worker was stopped before the end of its warm-up`)
  } else if (outcome === 'exited' && worker.status?.error) {
    failures.push(`the worker could not start: ${worker.status.error}`)
  } else if (outcome === 'exited') {
    failures.push(`the worker ${describeExit(/** @type {GroupStatus} (outcome 'exited') */ (worker.status))} before the end of its warm-up (${Math.round((status?.uptimeMs ?? (Date.now() - started)) / 1000)} s in)${status ? '' : '; it never started self-recycle'}`)
  } else if (outcome === 'load-failed') {
    failures.push(`the load command ${describeExit(/** @type {GroupStatus} (outcome 'load-failed') */ (load?.status))} before the end of the warm-up: the worker was not measured under load`)
  } else if (outcome === 'no-status') {
    failures.push(`the worker never started self-recycle: no status within ${Math.round(startTimeoutMs / 1000)} s (does its bootstrap call require('self-recycle').start()?)`)
  } else if (outcome === 'timeout') {
    failures.push(`the worker did not reach the end of its warm-up (${Math.round(status.warmupMs / 1000)} s) in time`)
  } else {
    figures = figuresOf(status)
    const verdict = judgeBaseline(status, { maxSlope, noReinit: Boolean(options['no-reinit']), noGc: Boolean(options['no-gc']) })
    failures.push(...verdict.failures)
    inconclusive = verdict.inconclusive
  }

  // Stop the load first (it would only see errors), then the worker: its own drain on
  // SIGTERM, then SIGKILL for whatever of its group is left. A second signal hurries both.
  const hurry = () => signals > 1
  const leftovers = []
  for (const [name, group] of /** @type {Array<[string, typeof worker | null]>} */ ([['load command', load], ['worker', worker]])) {
    if (!group?.child.pid) continue
    if (!await stopGroup(group.child.pid, { graceMs: stopTimeoutMs, hurry })) leftovers.push(`processes of the ${name}'s group ${group.child.pid} survived SIGKILL`)
  }
  fs.rmSync(dir, { recursive: true, force: true })
  for (const [name, handler] of handlers) process.removeListener(name, handler)
  failures.push(...leftovers)

  const allowInconclusive = Boolean(options['allow-inconclusive'])
  const verdict = failures.length > 0 ? 'failed' : inconclusive.length > 0 && !allowInconclusive ? 'inconclusive' : 'passed'
  const passed = verdict === 'passed'
  if (options.json) {
    say(JSON.stringify({
      passed,
      verdict,
      outcome,
      failures,
      inconclusive,
      figures,
      thresholds: { maxBaseline, maxSlopeBytesPerMin: maxSlope, noReinit: Boolean(options['no-reinit']), allowInconclusive },
      forcedGc: !options['no-gc'],
      load: options.load ?? null,
      window: effectiveWindowMs ?? status?.warmupMs ?? null
    }))
  } else {
    if (figures) {
      say(`baseline after ${Math.round(figures.warmupMs / 1000)} s: rss ${mib(figures.baselineRss)}${figures.rssLimit ? ` (${percent(figures.rssShare)} of limit ${mib(figures.rssLimit)})` : ''}, heap ${mib(figures.baselineHeapUsed)}${figures.heapLimit ? ` (${percent(figures.heapShare)} of limit ${mib(figures.heapLimit)})` : ''}`)
      if (figures.memoryLimitShare !== null) say(`container: ${percent(figures.memoryLimitShare)} of ${mib(figures.memoryLimit.bytes)}`)
      say(`post-GC heap slope: ${figures.postGcSlopeBytesPerMin === null ? `not measurable (${figures.postGcPoints} major GC(s) in the window)` : `${mib(figures.postGcSlopeBytesPerMin)}/min (${figures.postGcPoints} points)`}`)
      for (const reinit of figures.reinits) say(`re-initialized: '${reinit.key}' ${reinit.attempts} time(s), from ${reinit.sites.map((s) => `${s.site} (${s.count})`).join(', ')}`)
    }
    const list = (items) => items.map((f) => `  - ${f}`).join('\n')
    if (verdict === 'failed') say(`preflight failed:\n${list([...failures, ...inconclusive])}`)
    else if (verdict === 'inconclusive') say(`preflight inconclusive (fails; --allow-inconclusive to pass anyway):\n${list(inconclusive)}`)
    else say(inconclusive.length ? `preflight passed, with checks that could not be measured (--allow-inconclusive):\n${list(inconclusive)}` : 'preflight passed')
  }
  if (interrupted) {
    // As if the signal had ended us, now that nothing is left behind.
    return 128 + SIGNALS[interrupted]
  }
  return passed ? 0 : 1
}

module.exports = { commandPreflight }
