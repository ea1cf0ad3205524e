'use strict'
// The profile channel: `self-recycle profile <pid>` asks a RUNNING worker for the allocation
// sites grown so far and the job attribution, without an inspector port and without a
// recycle. It lives in a per-user private directory ($XDG_RUNTIME_DIR/self-recycle, else
// <tmpdir>/self-recycle-<uid>), trusted only as a real directory owned by this uid with
// mode 0700:
//   <pid>.channel                  this worker answers (its pid and process start time)
//   <pid>.profile-request          a CLI asks (0600, a random nonce)
//   <pid>.profile-<nonce>.json     the answer (0600), and .heapprofile beside it (PROFILE=heap)
// The worker looks for a request once a second from an unref'd timer (one stat); it never
// keeps the process alive and never throws into the app.

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const POLL_MS = 1000
/** A request is a nonce and a time: anything larger is not one. */
const MAX_REQUEST_BYTES = 4096
const NONCE = /^[0-9a-f]{32}$/
const { O_RDONLY, O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW, O_NONBLOCK } = fs.constants

const myUid = () => process.getuid?.() ?? null

/** This process's channel directory: $XDG_RUNTIME_DIR/self-recycle, else <tmpdir>/self-recycle-<uid>. */
function channelDir (env = process.env) {
  const runtime = env.XDG_RUNTIME_DIR
  if (runtime && path.isAbsolute(runtime)) return path.join(runtime, 'self-recycle')
  return path.join(os.tmpdir(), `self-recycle-${myUid()}`)
}

/**
 * Where a worker of this user may have opened its channel: a service (systemd, PM2) often
 * runs without the XDG_RUNTIME_DIR of a login shell, or with another TMPDIR.
 */
function candidateDirs (env = process.env) {
  const uid = myUid()
  return [...new Set([
    channelDir(env),
    `/run/user/${uid}/self-recycle`,
    path.join(os.tmpdir(), `self-recycle-${uid}`),
    `/tmp/self-recycle-${uid}`
  ])]
}

/**
 * Why `dir` cannot be trusted (a sentence), or null. Trusted: a real directory, not a
 * symlink (one would send requests and profiles elsewhere), owned by this uid, mode 0700
 * (anyone else could plant a request or read a profile). `create`: made 0700 when missing.
 * `{ missing: true }` when it is not there and not created.
 * @overload
 * @param {string} dir
 * @param {{ create: true }} options
 * @returns {string | null}
 */
/**
 * @overload
 * @param {string} dir
 * @param {{ create?: boolean }} [options]
 * @returns {string | { missing: true } | null}
 */
/**
 * @param {string} dir
 * @param {{ create?: boolean }} [options]
 * @returns {string | { missing: true } | null}
 */
function checkDir (dir, { create = false } = {}) {
  let stat
  try {
    stat = fs.lstatSync(dir)
  } catch (error) {
    if (error.code !== 'ENOENT') return `cannot stat ${dir}: ${error.code ?? error.message}`
    if (!create) return { missing: true }
    try {
      fs.mkdirSync(dir, { mode: 0o700 })
      // A umask may have taken bits away; ours, just made: nobody else can swap it in /tmp.
      fs.chmodSync(dir, 0o700)
    } catch (made) {
      if (made.code !== 'EEXIST') return `cannot create ${dir}: ${made.code ?? made.message}`
    }
    try {
      stat = fs.lstatSync(dir)
    } catch (again) {
      return `cannot stat ${dir}: ${again.code ?? again.message}`
    }
  }
  if (stat.isSymbolicLink()) return `${dir} is a symlink; it is not followed`
  if (!stat.isDirectory()) return `${dir} is not a directory`
  const uid = myUid()
  if (uid !== null && stat.uid !== uid) return `${dir} belongs to uid ${stat.uid}, not to this user (uid ${uid})`
  const mode = stat.mode & 0o777
  if (mode !== 0o700) return `${dir} has mode ${mode.toString(8).padStart(4, '0')}; only a 0700 directory is trusted`
  return null
}

/** Why the file open as `fd` is not a private file of ours (a sentence), or null. */
function privateFileProblem (fd, file, maxBytes) {
  const stat = fs.fstatSync(fd)
  if (!stat.isFile()) return `${file} is not a regular file`
  const uid = myUid()
  if (uid !== null && stat.uid !== uid) return `${file} belongs to uid ${stat.uid}, not to this user`
  if ((stat.mode & 0o077) !== 0) return `${file} has mode ${(stat.mode & 0o777).toString(8).padStart(4, '0')}, readable or writable by others`
  if (maxBytes !== undefined && stat.size > maxBytes) return `${file} has ${stat.size} bytes, more than ${maxBytes}`
  return null
}

/** The text of a private file of ours (never through a symlink, never a FIFO): `{ text }` or `{ error }`. */
function readPrivate (file, maxBytes) {
  let fd
  try {
    fd = fs.openSync(file, O_RDONLY | O_NOFOLLOW | O_NONBLOCK)
  } catch (error) {
    return { error: error.code === 'ELOOP' ? `${file} is a symlink; it is not followed` : `cannot read ${file}: ${error.code ?? error.message}`, code: error.code }
  }
  try {
    const problem = privateFileProblem(fd, file, maxBytes)
    if (problem) return { error: problem }
    return { text: fs.readFileSync(fd, 'utf8') }
  } catch (error) {
    return { error: `cannot read ${file}: ${error.code ?? error.message}` }
  } finally {
    fs.closeSync(fd)
  }
}

/** `text` into `file`, 0600, through a new temp file (O_EXCL, O_NOFOLLOW) and a rename. */
function writePrivate (file, text) {
  // A random part: a temp file left by a killed writer (RESTART=exec keeps the pid) never
  // blocks the next write.
  const temporary = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${require('node:crypto').randomBytes(4).toString('hex')}.tmp`)
  const fd = fs.openSync(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600)
  try {
    try {
      fs.writeFileSync(fd, text)
    } finally {
      fs.closeSync(fd)
    }
    fs.renameSync(temporary, file)
  } catch (error) {
    try { fs.unlinkSync(temporary) } catch {}
    throw error
  }
}

/**
 * The start time of process `pid` in clock ticks since boot (/proc/<pid>/stat, field 22):
 * with the pid, it names one process (pids are reused). Null where /proc does not say.
 */
function processStart (pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return fields[19] ?? null
  } catch {
    return null
  }
}

/**
 * Removes what processes that are gone left behind (killed, or ended by the native exit
 * path, they could not): their markers, requests and unread answers. Their .heapprofile
 * files stay: a person may still want them.
 */
function sweep (dir) {
  let names
  try {
    names = fs.readdirSync(dir)
  } catch {
    return
  }
  const gone = new Map()
  for (const name of names.slice(0, 10000)) {
    // Markers, requests, answers, and the temp files of writers that were killed mid-write.
    const match = /^(\d+)\.(channel|profile-request|profile-[0-9a-f]{32}\.json)$/.exec(name) ??
      /^\.\d+\.[\w.-]+\.(\d+)\.[0-9a-f]{8}\.tmp$/.exec(name)
    if (!match || Number(match[1]) === process.pid) continue
    const pid = Number(match[1])
    if (!gone.has(pid)) {
      let dead = false
      try { process.kill(pid, 0) } catch (error) { dead = error.code === 'ESRCH' }
      gone.set(pid, dead)
    }
    if (gone.get(pid)) try { fs.unlinkSync(path.join(dir, name)) } catch {}
  }
}

const markerPath = (dir, pid) => path.join(dir, `${pid}.channel`)
const requestPath = (dir, pid) => path.join(dir, `${pid}.profile-request`)
const answerPath = (dir, pid, nonce, ext = 'json') => path.join(dir, `${pid}.profile-${nonce}.${ext}`)

/**
 * The worker's side. `answer()` returns `{ answer, profile }` (the JSON-able answer and the
 * raw DevTools profile, or null); it is asked on the JS thread, between two of the app's
 * callbacks. `status`: `on` or `off: why`.
 */
class ProfileChannel {
  constructor (answer, { dir = channelDir(), pollMs = POLL_MS, mainThread = true } = {}) {
    this.answer = answer
    this.mainThread = mainThread
    this.dir = dir
    this.pollMs = pollMs
    /** @type {NodeJS.Timeout | undefined} */
    this.timer = undefined
    this.status = 'off: not opened'
    this.lastHeapProfile = null
    this.lastError = null
    this.onExit = () => this.removeMarker()
  }

  open () {
    try {
      if (process.platform === 'win32') {
        this.status = 'off: not on Windows (the channel relies on unix file modes)'
        return this
      }
      if (!this.mainThread) {
        this.status = 'off: worker thread (the main thread\'s recycler answers for the process)'
        return this
      }
      const problem = checkDir(this.dir, { create: true })
      if (problem) {
        this.status = `off: ${problem}`
        // A read-only file system only leaves the channel off; a directory someone else
        // can write to, or a symlink, is an attack: that is said, once.
        if (problem.startsWith('cannot ')) return this
        process.emitWarning(`self-recycle: the profile channel is off (\`self-recycle profile\` cannot ask this worker): ${problem}`, { code: 'SELF_RECYCLE_PROFILE_CHANNEL' })
        return this
      }
      sweep(this.dir)
      writePrivate(markerPath(this.dir, process.pid), `${JSON.stringify({ pid: process.pid, start: processStart(process.pid), pollMs: this.pollMs })}\n`)
      this.timer = setInterval(() => this.poll(), this.pollMs)
      this.timer.unref()
      process.on('exit', this.onExit)
      this.status = 'on'
    } catch (error) {
      this.status = `off: ${error?.message ?? error}`
    }
    return this
  }

  /** Once per poll: one stat; a request is served at once. Never throws. */
  poll () {
    try {
      if (!fs.statSync(requestPath(this.dir, process.pid), { throwIfNoEntry: false })) return
      this.serve()
      this.status = 'on'
    } catch (error) {
      // The CLI then times out; stats().profileChannel says why.
      this.lastError = error?.message ?? String(error)
      this.status = `on (the last request failed: ${this.lastError})`
    }
  }

  serve () {
    const request = requestPath(this.dir, process.pid)
    const read = readPrivate(request, MAX_REQUEST_BYTES)
    // Served once, whatever it held: a bad request must not be read again every second.
    try { fs.unlinkSync(request) } catch {}
    if (read.error) throw new Error(`request refused: ${read.error}`)
    // The directory may have been changed since it was opened.
    const problem = checkDir(this.dir)
    if (problem) throw new Error(`request refused: ${typeof problem === 'string' ? problem : `${this.dir} is gone`}`)
    let nonce
    try {
      nonce = JSON.parse(read.text ?? '').nonce
    } catch {}
    if (typeof nonce !== 'string' || !NONCE.test(nonce)) throw new Error('request refused: no valid nonce')
    let answer
    let profile = null
    try {
      ({ answer, profile } = this.answer())
    } catch (error) {
      // Said to the CLI rather than left to its timeout.
      answer = { schema: 1, time: new Date().toISOString(), error: `the worker could not take its profile: ${error?.message ?? error}` }
    }
    answer.nonce = nonce
    answer.pid = process.pid
    if (profile && answer.profile) {
      const file = answerPath(this.dir, process.pid, nonce, 'heapprofile')
      try {
        writePrivate(file, JSON.stringify(profile))
        answer.profile.heapProfile = file
        // One profile per worker is kept: asked every minute, they would fill the disk.
        if (this.lastHeapProfile && this.lastHeapProfile !== file) try { fs.unlinkSync(this.lastHeapProfile) } catch {}
        this.lastHeapProfile = file
      } catch (error) {
        answer.profile.heapProfileError = error?.message ?? String(error)
      }
    }
    this.dropUnread()
    writePrivate(answerPath(this.dir, process.pid, nonce), `${JSON.stringify(answer)}\n`)
  }

  /** Answers of ours nobody read (the CLI was interrupted or gave up): removed. */
  dropUnread () {
    const own = new RegExp(`^${process.pid}\\.profile-[0-9a-f]{32}\\.json$`)
    try {
      for (const name of fs.readdirSync(this.dir)) if (own.test(name)) try { fs.unlinkSync(path.join(this.dir, name)) } catch {}
    } catch {}
  }

  removeMarker () {
    try {
      // Only our own marker: a later process with this pid may have written its own.
      const read = readPrivate(markerPath(this.dir, process.pid), MAX_REQUEST_BYTES)
      if (read.text && JSON.parse(read.text).start === processStart(process.pid)) fs.unlinkSync(markerPath(this.dir, process.pid))
    } catch {}
  }

  close () {
    clearInterval(this.timer)
    this.timer = undefined
    process.removeListener('exit', this.onExit)
    if (this.status === 'on') this.removeMarker()
    this.status = 'off: closed'
  }
}

module.exports = { ProfileChannel, candidateDirs, checkDir, readPrivate, writePrivate, processStart, sweep, markerPath, requestPath, answerPath }
