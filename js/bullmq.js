'use strict'
// self-recycle/bullmq: BullMQ sandboxed processors (a processor file that BullMQ runs in
// child processes, or worker threads with useWorkerThreads), which the parent never measures.
//
// The child recycles itself through BullMQ's own pool. A child cannot leave the pool by
// exiting alone: the parent puts it back in the free list as soon as a job's result arrives,
// and may hand it the next job before its exit is seen (that job then fails with
// "Unexpected exit code"). So the two sides agree:
//   child  (sandboxed(processor)): self-recycle runs in the child; a recycle's drain asks
//          the parent to retire it, and waits to be released before it exits;
//   parent (recycleChildren(worker)): a child that asked is taken out of the pool once it
//          holds no job (at once when idle, else when its job's result has arrived), then
//          released; the next job gets a fresh child.
// Messages carry a `cmd` BullMQ does not know, which both of its sides ignore.

const HELLO = 'self-recycle:parent'
const RETIRE = 'self-recycle:retire'
const RELEASE = 'self-recycle:release'

const kHooked = Symbol('self-recycle.recycleChildren')

/** The channel to the parent: the IPC channel of a forked child, or a worker thread's port. */
function parentChannel () {
  const { isMainThread, parentPort } = require('node:worker_threads')
  if (!isMainThread && parentPort) {
    const port = parentPort
    return {
      thread: true,
      send: (message) => { try { port.postMessage(message) } catch {} },
      listen: (listener) => port.on('message', listener),
      onGone: () => {}
    }
  }
  if (typeof process.send !== 'function') return null
  return {
    thread: false,
    // The callback form: a closed channel is an error to ignore, not an 'error' event.
    send: (message) => { try { process.send?.(message, () => {}) } catch {} },
    listen: (listener) => process.on('message', listener),
    onGone: (listener) => process.once('disconnect', listener)
  }
}

function kindOf (value) {
  return value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value
}

/**
 * Wraps a sandboxed processor: `module.exports = sandboxed(async (job) => ...)` in the
 * processor file. `options` are self-recycle's options for the child (they override the
 * `SELF_RECYCLE_*` variables it inherits from the parent).
 */
function sandboxed (processor, options) {
  if (typeof processor !== 'function') {
    throw new TypeError(`sandboxed(processor): processor must be the job function (job, token, signal) => result, got ${kindOf(processor)}`)
  }
  if (options !== undefined && (options === null || typeof options !== 'object' || Array.isArray(options))) {
    throw new TypeError(`sandboxed(processor, options): options must be an object of self-recycle options, got ${kindOf(options)}`)
  }
  const channel = parentChannel()
  let parentTakesPart = false
  let recycler = null
  let warned = false
  let release = null
  const released = new Promise((resolve) => { release = resolve })
  channel?.listen((message) => {
    if (message?.cmd === HELLO) parentTakesPart = true
    else if (message?.cmd === RELEASE) release()
  })
  // The parent is gone: nothing can be handed to this child any more.
  channel?.onGone(() => release())

  /** @param {NonNullable<ReturnType<typeof parentChannel>>} parent */
  const begin = (parent) => {
    const recycle = require('./index.js')
    // The inherited STATUS_FILE as the settings table reads it (malformed: none).
    let statusFile
    try {
      statusFile = require('./options.js').readSettings({}, ['STATUS_FILE']).statusFile
    } catch {}
    recycler = recycle.start({
      // BullMQ's child already handles SIGTERM/SIGINT (the pool's close): it waits for the
      // job in flight and for its result to reach the parent, then exits 0.
      signals: false,
      // A child's recycle costs a fork, not a worker's capacity: it waits for no sibling
      // and no fleet lease (a leaking child would grow while it waited).
      fleet: false,
      staggerDir: 'off',
      // The parent's status file stays the parent's, unless each process gets its own.
      ...(statusFile?.includes('{pid}') ? {} : { statusFile: 'off' }),
      // In a worker thread the RSS is the whole process's, the parent's own included; and
      // Node's own near-heap-limit callback ends the thread (ERR_WORKER_OUT_OF_MEMORY), so
      // no rescue is possible there: MAX_HEAP must act from the first job on.
      ...(parent.thread ? { maxRss: 'off', containerMax: 'off', minUptime: '0' } : {}),
      ...options
    })
    recycler.onDrain(async ({ reason }) => {
      if (reason === 'signal') return
      parent.send({ cmd: RETIRE, reason })
      await released
    })
  }

  return function selfRecyclingProcessor (job, token, signal) {
    if (recycler === null && !warned) {
      if (channel && parentTakesPart) {
        try {
          begin(channel)
        } catch (error) {
          // A malformed setting must not fail every job: the jobs run, unmonitored, and the
          // error (naming the variable, the value and what is accepted) is said once.
          warned = true
          recycler = null
          process.emitWarning(`self-recycle: sandboxed(): self-recycle does not run in this child: ${error?.message ?? error}`, { code: 'SELF_RECYCLE_SANDBOX_CONFIG' })
        }
      } else {
        warned = true
        process.emitWarning(channel
          ? 'self-recycle: sandboxed(): the parent worker does not take part, so this child is not recycled; call recycleChildren(worker) from self-recycle/bullmq in the process that creates the Worker'
          : 'self-recycle: sandboxed(): not running in a BullMQ child process or worker thread; the processor runs without self-recycle', { code: 'SELF_RECYCLE_SANDBOX_ALONE' })
      }
    }
    const result = Promise.resolve().then(() => processor(job, token, signal))
    if (recycler !== null) {
      const name = typeof job?.name === 'string' && job.name !== '' && job.name.length <= 200 ? job.name : undefined
      recycler.track(result, name === undefined ? undefined : { name })
    }
    return result
  }
}

/**
 * A call on BullMQ's Child that may throw, or return a promise that rejects: never either.
 * Made at once (a HELLO must be on the channel before the job's Start message).
 */
function quietly (call) {
  try {
    return Promise.resolve(call()).catch(() => {})
  } catch {
    return Promise.resolve()
  }
}

/**
 * Resolves once `child` (BullMQ's Child) has exited.
 * @returns {Promise<void>}
 */
function exited (child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => child.once('exit', () => resolve()))
}

/**
 * The parent's side: `recycleChildren(new Worker(name, file))`. A child that recycles leaves
 * the pool between jobs. `onChildExit({ pid, code, signal, retired })` hears every child's
 * exit. Returns the worker.
 */
function recycleChildren (worker, options) {
  const pool = worker?.childPool
  if (!pool || !['retain', 'release', 'remove', 'kill', 'clean'].every((method) => typeof pool[method] === 'function')) {
    throw new TypeError(`recycleChildren(worker): expected a BullMQ Worker created with a processor file (a sandboxed processor), got ${worker?.constructor?.name ?? kindOf(worker)}${worker && !pool ? ' without a child pool' : ''}`)
  }
  const onChildExit = options?.onChildExit
  if (options !== undefined && (options === null || typeof options !== 'object' || (onChildExit !== undefined && typeof onChildExit !== 'function'))) {
    throw new TypeError(`recycleChildren(worker, options): options must be { onChildExit?: function }, got ${options === null ? 'null' : typeof options !== 'object' ? typeof options : `onChildExit: ${typeof onChildExit}`}`)
  }
  if (pool[kHooked]) return worker
  pool[kHooked] = true

  const known = new WeakSet()
  // Children holding a job (between the pool's retain and release). Kept here, not read from
  // the pool's `retained`: that is keyed by pid, and a finished worker thread's pid becomes
  // Math.abs(-1) = 1, so the pool's removal of one thread can delete another's entry.
  const holding = new WeakSet()
  // Children that asked to retire while holding a job: they leave at their release.
  const leaving = new WeakSet()
  // Children out of the pool, released, not exited yet.
  const retiring = new Set()

  const retire = (child) => {
    pool.remove(child)
    retiring.add(child)
    quietly(() => child.send({ cmd: RELEASE }))
  }

  const watch = (child) => {
    known.add(child)
    const pid = child.pid
    child.on('message', (message) => {
      if (message?.cmd !== RETIRE || leaving.has(child) || retiring.has(child)) return
      if (holding.has(child)) leaving.add(child)
      else retire(child)
    })
    // BullMQ's Child re-emits its process's or thread's 'error' and listens to none: a worker
    // thread out of heap (ERR_WORKER_OUT_OF_MEMORY) would crash this process. Heard here, it
    // fails only the job in flight (BullMQ's exit handler), and is said.
    let failure
    child.on('error', (error) => {
      failure = error?.message ?? String(error)
      process.emitWarning(`self-recycle: a BullMQ child (${pid}) failed: ${failure}`, { code: 'SELF_RECYCLE_SANDBOX_CHILD_ERROR' })
    })
    child.on('exit', (code, signal) => {
      const retired = retiring.delete(child)
      if (onChildExit) {
        try {
          onChildExit({ pid, code, signal, retired, ...(failure === undefined ? {} : { error: failure }) })
        } catch (error) {
          process.emitWarning(`self-recycle: an onChildExit listener threw: ${error?.stack ?? error}`)
        }
      }
    })
    // Before the job's Start message: the child knows the parent takes part.
    quietly(() => child.send({ cmd: HELLO }))
  }

  const retain = pool.retain.bind(pool)
  pool.retain = async (processFile) => {
    const child = await retain(processFile)
    holding.add(child)
    if (!known.has(child)) watch(child)
    return child
  }

  const release = pool.release.bind(pool)
  pool.release = (child) => {
    holding.delete(child)
    if (leaving.has(child)) {
      leaving.delete(child)
      retire(child)
      return
    }
    release(child)
  }

  // worker.close(): the retiring children are stopped like the pool's own (SIGTERM: BullMQ's
  // child exits at once, it holds no job), and waited for.
  const clean = pool.clean.bind(pool)
  pool.clean = async () => {
    const leavingNow = [...retiring]
    await Promise.all([clean(), ...leavingNow.map((child) => quietly(() => pool.kill(child, 'SIGTERM')).then(() => exited(child)))])
  }
  return worker
}

module.exports = /** @satisfies {typeof import('./bullmq.js')} */ ({ sandboxed, recycleChildren })
