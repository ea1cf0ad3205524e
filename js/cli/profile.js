'use strict'
// `self-recycle profile <pid | status file>`: asks a running worker, through its private
// profile channel (js/channel.js), for the allocation sites grown so far and the job
// attribution, waits for the answer (bounded) and prints it. The worker is not recycled.
// Exit 0 answered, 1 the worker cannot be asked, 2 a usage error, 3 no answer in time.

const crypto = require('node:crypto')
const fs = require('node:fs')
const { UsageError, parseArgs, parseDuration, mib, percent, say, fail } = require('./args.js')
const channel = require('../channel.js')

const USAGE = `usage: self-recycle profile <PID | STATUS_FILE> [--timeout 10s] [--out FILE] [--json]
asks a running worker (not recycled) for the allocation sites that grew since its baseline
(PROFILE=heap; the worker runs one full GC first) and which named jobs the heap grew with
(track(promise, { name })), and prints them; with PROFILE=heap the whole profile is written
too (.heapprofile: Chrome DevTools > Memory, or VS Code), moved to FILE with --out.
The request goes through a private directory of this user ($XDG_RUNTIME_DIR/self-recycle, else
<tmpdir>/self-recycle-<uid>, mode 0700); the worker looks at it once a second.
exit 0 answered, 1 cannot ask (no such process, not ours, not a self-recycle worker), 2 usage
error, 3 no answer within --timeout (default 10s)`

const EXIT_TIMEOUT = 3
const MAX_ANSWER_BYTES = 64 << 20
/** A request older than this was left by a CLI that died: it may be replaced. */
const STALE_REQUEST_MS = 60000
const WAIT_STEP_MS = 50

/** The command's options, parsed like every other command's (js/cli/args.js). */
function parse (argv) {
  const result = parseArgs(argv, { timeout: 'value', out: 'value', json: 'flag', help: 'flag' }, 1)
  const { _: positionals, ...values } = result
  return { values, positionals }
}

/** The pid of `target`: a number, or the pid in a status file. `{ pid }` or `{ error, code }`. */
function pidOf (target) {
  if (/^\d+$/.test(target)) {
    const pid = Number(target)
    if (!Number.isSafeInteger(pid) || pid < 1 || pid > 2 ** 22) throw new UsageError(`pid ${JSON.stringify(target)}: expected a process id from 1 to ${2 ** 22}`)
    return { pid }
  }
  const { readStatus } = require('./status.js')
  const { status, error, invalid } = readStatus(target)
  if (error) return { error, code: invalid ? 2 : 1 }
  return { pid: status.pid }
}

/** Why process `pid` cannot be asked by this user (a sentence), or null. */
function processProblem (pid) {
  try {
    process.kill(pid, 0)
  } catch (error) {
    if (error.code === 'ESRCH') return `no process ${pid} is running`
    if (error.code === 'EPERM') return `process ${pid} belongs to another user: ask as that user (its channel is in that user's private directory)`
    return `cannot signal process ${pid}: ${error.code ?? error.message}`
  }
  // Root may signal anything: the owner says whose channel it is.
  try {
    const owner = fs.statSync(`/proc/${pid}`).uid
    const me = process.getuid?.()
    if (me !== undefined && owner !== me) return `process ${pid} belongs to uid ${owner}, not to this user (uid ${me}): ask as that user (sudo -u '#${owner}' self-recycle profile ${pid})`
  } catch {}
  return null
}

/**
 * The channel directory where worker `pid` said it answers: `{ dir }`, or `{ error }` (not a
 * worker, or a directory refused).
 */
function findChannel (pid) {
  const refused = []
  const looked = []
  for (const dir of channel.candidateDirs()) {
    const problem = channel.checkDir(dir)
    if (typeof problem === 'object' && problem?.missing) continue
    if (problem) {
      refused.push(problem)
      continue
    }
    looked.push(dir)
    const marker = channel.readPrivate(channel.markerPath(dir, pid), 4096)
    if (marker.code === 'ENOENT') continue
    if (marker.error) {
      refused.push(marker.error)
      continue
    }
    let start
    try {
      start = JSON.parse(marker.text ?? '').start
    } catch {}
    const now = channel.processStart(pid)
    if (start !== undefined && now !== null && start !== now) {
      refused.push(`${channel.markerPath(dir, pid)} was left by an earlier process with pid ${pid}`)
      continue
    }
    return { dir }
  }
  const why = refused.length ? `; refused: ${refused.join('; ')}` : ''
  return {
    error: `process ${pid} is not a self-recycle worker, or its profile channel is not open (no recycler started in it, or it runs only in a worker thread, or an older self-recycle)${looked.length ? `; looked in ${looked.join(', ')}` : ''}${why}`,
    refused: refused.length > 0
  }
}

/** Drops the request (0600, a new nonce) where worker `pid` looks. `{ nonce }` or `{ error }`. */
function dropRequest (dir, pid) {
  const nonce = crypto.randomBytes(16).toString('hex')
  const request = channel.requestPath(dir, pid)
  const temporary = `${request}.${nonce}.tmp`
  channel.writePrivate(temporary, `${JSON.stringify({ nonce, time: new Date().toISOString() })}\n`)
  try {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        // link() never replaces: a request of another CLI stays its own.
        fs.linkSync(temporary, request)
        return { nonce }
      } catch (error) {
        if (error.code !== 'EEXIST') return { error: `cannot write ${request}: ${error.code ?? error.message}` }
        const stat = fs.lstatSync(request, { throwIfNoEntry: false })
        if (stat && Date.now() - stat.mtimeMs < STALE_REQUEST_MS) return { error: `another profile request to process ${pid} is pending (${request}); try again in a few seconds` }
        try { fs.unlinkSync(request) } catch {}
      }
    }
    return { error: `cannot write ${request}: it keeps coming back` }
  } finally {
    try { fs.unlinkSync(temporary) } catch {}
  }
}

/** Takes the request back, if it is still ours and unread (after a timeout). */
function withdraw (dir, pid, nonce) {
  const request = channel.requestPath(dir, pid)
  const read = channel.readPrivate(request, 4096)
  try {
    if (read.text && JSON.parse(read.text).nonce === nonce) fs.unlinkSync(request)
  } catch {}
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Waits for the answer to `nonce`: `{ answer }`, `{ error }` or `{ timedOut }`. */
async function waitForAnswer (dir, pid, nonce, timeoutMs) {
  const file = channel.answerPath(dir, pid, nonce)
  const deadline = Date.now() + timeoutMs
  for (;;) {
    // The answer appears by rename: once there, it is whole.
    const read = channel.readPrivate(file, MAX_ANSWER_BYTES)
    if (read.code !== 'ENOENT') {
      try { fs.unlinkSync(file) } catch {}
      if (read.error) return { error: read.error }
      let answer
      try {
        answer = JSON.parse(read.text ?? '')
      } catch (error) {
        return { error: `${file} is not JSON: ${error.message}` }
      }
      if (answer?.nonce !== nonce || answer.pid !== pid) return { error: `${file} does not answer this request (nonce or pid differ)` }
      return { answer }
    }
    if (processProblem(pid)) return { error: `process ${pid} exited before it answered` }
    if (Date.now() >= deadline) return { timedOut: true }
    await sleep(Math.min(WAIT_STEP_MS, Math.max(1, deadline - Date.now())))
  }
}

const kib = (bytes) => bytes >= 10 * 1024 ? `${Math.round(bytes / 1024)} KiB` : bytes >= 1024 ? `${(bytes / 1024).toFixed(1)} KiB` : `${bytes} B`

/** The ranking of named jobs by heap retained per job (profile and report). */
function jobLines (topJobs, jobsFit, completed = []) {
  if (!Array.isArray(topJobs)) return []
  const fit = jobsFit ? ` (fit over ${jobsFit.windows} windows between major GCs${typeof jobsFit.r2 === 'number' ? `, R² ${jobsFit.r2.toFixed(2)}` : ''})` : ''
  if (topJobs.length === 0) {
    const lines = [`named jobs: none retains heap beyond the fit's thresholds${jobsFit?.why ? ` (${jobsFit.why})` : ''}${jobsFit?.why ? '' : fit}`]
    if (completed.length) lines.push(`  finished: ${completed.slice(0, 10).map((j) => `${j.name} ${j.jobs}`).join(', ')}`)
    return lines
  }
  const lines = [`named jobs the heap grew with${fit}:`, '  retained/job    jobs  share  name']
  for (const job of topJobs.slice(0, 20)) {
    lines.push(`  ${kib(job.retainedPerJob).padStart(12)}  ${String(job.jobs).padStart(6)}  ${percent(job.share).padStart(5)}  ${job.name}`)
  }
  const others = completed.filter((c) => !topJobs.some((j) => j.name === c.name))
  if (others.length) lines.push(`  not named (retain nothing measurable): ${others.slice(0, 10).map((j) => `${j.name} (${j.jobs} jobs)`).join(', ')}`)
  return lines
}

/** The allocation sites that grew (profile and report). */
function siteLines (sites, { since, heapProfile, skipped }) {
  const lines = []
  if (skipped) return [`allocation sites: not profiled (${skipped})`]
  if (sites.length === 0) {
    lines.push(`allocation sites: no heap growth beyond sampling noise since the ${since === 'start' ? 'process started' : 'baseline'}`)
  } else {
    lines.push(`allocation sites that grew since the ${since === 'start' ? 'process started' : 'baseline'} (live sampled bytes):`, '  growth      share  site')
    for (const site of sites.slice(0, 20)) lines.push(`  ${mib(site.growth).padStart(10)}  ${percent(site.share).padStart(5)}  ${site.site}`)
  }
  if (heapProfile) lines.push(`  the whole profile: ${heapProfile} (open it in Chrome DevTools > Memory, or VS Code)`)
  return lines
}

function answerLines (answer) {
  const sample = answer.sample ?? {}
  const limits = answer.limits ?? {}
  const of = (value, limit) => typeof value !== 'number' ? '?' : `${mib(value)}${limit ? ` of limit ${mib(limit)}` : ''}`
  const gc = answer.profile?.gc
  const lines = [
    `pid ${answer.pid}: ${answer.state}, up ${Math.round((answer.uptimeMs ?? 0) / 1000)} s (asked at ${answer.time}); rss ${of(sample.rss, limits.rss)}, heap ${of(sample.heapUsed, limits.heap)}`,
    ''
  ]
  lines.push(...siteLines(answer.profile?.topSites ?? [], { since: answer.profile?.since, heapProfile: answer.profile?.heapProfile, skipped: answer.profileSkipped }))
  if (gc?.ms !== undefined) lines.push(`  (read after a full GC of ${gc.ms} ms)`)
  lines.push('')
  if (answer.topJobs === null) lines.push('named jobs: none finished yet (track(promise, { name }); self-recycle/nest names BullMQ jobs)')
  else lines.push(...jobLines(answer.topJobs, answer.jobsFit, answer.jobs))
  return lines
}

async function commandProfile (argv) {
  const { values: options, positionals } = parse(argv)
  if (options.help) return say(USAGE), 0
  if (positionals.length !== 1) throw new UsageError(positionals.length ? `expected one PID or STATUS_FILE, got ${positionals.map((a) => JSON.stringify(a)).join(' ')}` : 'profile needs a PID or a STATUS_FILE')
  const timeoutMs = options.timeout === undefined ? 10000 : parseDuration(options.timeout, 'timeout')
  if (timeoutMs < 100 || timeoutMs > 600000) throw new UsageError(`--timeout=${JSON.stringify(options.timeout)}: expected a duration from 100ms to 10m`)
  if (options.out !== undefined && options.out.trim() === '') throw new UsageError('--out needs a file name')
  const target = pidOf(positionals[0])
  if (target.error) return fail(options, target.error, target.code)
  const { pid } = target
  if (process.platform === 'win32') return fail(options, 'profile is not available on Windows (its channel relies on unix file modes)')
  const problem = processProblem(pid)
  if (problem) return fail(options, problem)
  const found = findChannel(pid)
  if (found.error) return fail(options, found.error)
  let dropped
  try {
    dropped = dropRequest(found.dir, pid)
  } catch (error) {
    return fail(options, `cannot write the request in ${found.dir}: ${error.code ?? error.message}`)
  }
  if (dropped.error) return fail(options, dropped.error)
  // Interrupted, the request is taken back: no answer is written for nobody.
  const interrupted = () => {
    withdraw(found.dir, pid, dropped.nonce)
    process.exit(130)
  }
  process.once('SIGINT', interrupted)
  process.once('SIGTERM', interrupted)
  const waited = await waitForAnswer(found.dir, pid, dropped.nonce, timeoutMs)
  process.removeListener('SIGINT', interrupted)
  process.removeListener('SIGTERM', interrupted)
  if (waited.timedOut) {
    withdraw(found.dir, pid, dropped.nonce)
    return fail(options, `process ${pid} did not answer within ${timeoutMs} ms (a worker looks for requests once a second: its event loop may be blocked, or the process stopped)`, EXIT_TIMEOUT)
  }
  if (waited.error) return fail(options, waited.error)
  const answer = waited.answer
  if (typeof answer.error === 'string') return fail(options, `process ${pid} could not answer: ${answer.error}`)
  const written = answer.profile?.heapProfile
  if (options.out !== undefined && written) {
    try {
      fs.copyFileSync(written, options.out)
      fs.chmodSync(options.out, 0o600)
      fs.unlinkSync(written)
      answer.profile.heapProfile = options.out
    } catch (error) {
      return fail(options, `cannot write ${options.out}: ${error.code ?? error.message} (the profile stays at ${written})`)
    }
  }
  say(options.json ? JSON.stringify(answer) : answerLines(answer).join('\n'))
  return 0
}

module.exports = { commandProfile, jobLines }
