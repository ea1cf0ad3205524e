'use strict'
// The JS facade over the native addon: an EventEmitter per process, the drain path
// (onDrain hooks, tracked work, the exit), logging, and option validation.

const { EventEmitter } = require('node:events')
const v8 = require('node:v8')
const binding = require('./native.js')
const { once, trackInit, guardStats, flushAllHits } = require('./guard.js')
const { writeHeapSnapshot } = require('./snapshot.js')

const ENV_PREFIX = 'SELF_RECYCLE_'
const SINGLETON = Symbol.for('self-recycle.recycler')
const kNative = Symbol('native')
const kState = Symbol('state')

/** Event names, as emitted and as written to the log. */
const EVENTS = Object.freeze({
  START: 'start',
  SAMPLE: 'sample',
  PRESSURE: 'pressure',
  LEAK: 'leak',
  MISCONFIGURED: 'misconfigured',
  RECYCLE: 'recycle',
  DRAIN: 'drain',
  EXIT: 'exit',
  REINIT: 'reinit'
})

/** Thrown for a malformed env var or option; `code` is stable. */
class SelfRecycleConfigError extends Error {
  constructor (check) {
    super(check.message)
    this.name = 'SelfRecycleConfigError'
    this.code = 'ERR_SELF_RECYCLE_CONFIG'
    this.variable = check.variable
    this.value = check.value
    this.accepts = check.accepts
  }
}

/** `SELF_RECYCLE_*` variables, without the prefix (`SELF_RECYCLE_TEST_*` belong to the tests). */
function readEnv (env) {
  const found = {}
  for (const [name, value] of Object.entries(env)) {
    if (name.startsWith(ENV_PREFIX) && !name.startsWith(`${ENV_PREFIX}TEST_`) && typeof value === 'string') {
      found[name.slice(ENV_PREFIX.length)] = value
    }
  }
  return found
}

/** Options as strings for the native parser: numbers are bytes or ms, booleans on/off. */
function normalizeOptions (options) {
  if (options === undefined || options === null) return {}
  if (typeof options !== 'object' || Array.isArray(options)) {
    throw new SelfRecycleConfigError({
      message: `options must be an object, got ${Array.isArray(options) ? 'an array' : typeof options}`,
      variable: 'options',
      value: String(options),
      accepts: 'an object of options'
    })
  }
  const normalized = {}
  for (const [name, value] of Object.entries(options)) {
    if (value === undefined) continue
    if (typeof value === 'string') normalized[name] = value
    else if (typeof value === 'number') normalized[name] = String(value)
    else if (typeof value === 'boolean') normalized[name] = value ? 'on' : 'off'
    else if (value === null) normalized[name] = 'off'
    else {
      throw new SelfRecycleConfigError({
        message: `option ${name}=${typeof value} is not valid: expected a string, a number or a boolean`,
        variable: `option ${name}`,
        value: String(value),
        accepts: 'a string, a number or a boolean'
      })
    }
  }
  return normalized
}

function heapInput () {
  const stats = v8.getHeapStatistics()
  return {
    totalHeapSize: stats.total_heap_size,
    totalPhysicalSize: stats.total_physical_size,
    usedHeapSize: stats.used_heap_size,
    heapSizeLimit: stats.heap_size_limit,
    externalMemory: stats.external_memory ?? 0,
    numberOfNativeContexts: stats.number_of_native_contexts
  }
}

/** Waits for the cluster primary to see us disconnect, at most `timeoutMs`. */
function disconnectFromPrimary (timeoutMs) {
  let cluster
  try {
    cluster = require('node:cluster')
  } catch {
    return Promise.resolve()
  }
  const worker = cluster.isWorker ? cluster.worker : null
  if (!worker || !worker.isConnected()) return Promise.resolve()
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, Math.max(50, timeoutMs))
    worker.once('disconnect', () => {
      clearTimeout(timer)
      resolve()
    })
    try {
      worker.disconnect()
    } catch {
      clearTimeout(timer)
      resolve()
    }
  })
}

class Recycler extends EventEmitter {
  constructor () {
    super()
    this[kNative] = null
    this[kState] = {
      hooks: new Set(),
      inFlight: new Set(),
      config: null,
      disabled: false,
      draining: false,
      heapTimer: null,
      onExit: null
    }
    this.on('newListener', (name) => {
      if (name === EVENTS.SAMPLE) this[kNative]?.setSampleEvents(true)
    })
    this.on('removeListener', (name) => {
      if (name === EVENTS.SAMPLE && this.listenerCount(EVENTS.SAMPLE) === 0) {
        this[kNative]?.setSampleEvents(false)
      }
    })
  }

  /** The effective configuration (from the `start` event), or null when not started. */
  get config () {
    return this[kState].config
  }

  get running () {
    return this[kNative] !== null
  }

  _start (options) {
    const state = this[kState]
    const env = readEnv(process.env)
    const normalized = normalizeOptions(options)
    const check = binding.checkConfig(env, normalized)
    if (!check.ok) throw new SelfRecycleConfigError(check)
    if (check.disabled) {
      state.disabled = true
      state.config = { disabled: true }
      return this
    }
    state.disabled = false
    const native = new binding.NativeRecycler(
      {
        env,
        options: normalized,
        uptimeMs: process.uptime() * 1000,
        heap: heapInput(),
        // Linux: the addon asks the OS; elsewhere worker_threads says (it costs ~0.8 ms).
        mainThread: process.platform === 'linux' ? undefined : require('node:worker_threads').isMainThread,
        forceJsHeapProbe: process.env.SELF_RECYCLE_TEST_FORCE_JS_HEAP_PROBE === '1',
        versionsJson: JSON.stringify({ node: process.version, v8: process.versions.v8, platform: process.platform, arch: process.arch }),
        startedEpochMs: Date.now(),
        nodeOwnsNearHeapLimit: [...process.execArgv, ...(process.env.NODE_OPTIONS || '').split(/\s+/)]
          .some((arg) => arg.startsWith('--heapsnapshot-near-heap-limit'))
      },
      (json) => this._receive(json)
    )
    this[kNative] = native
    const startEvent = JSON.parse(native.startEvent())
    state.config = startEvent.config
    if (startEvent.probes.v8 === 'js') this._startJsHeapProbe(startEvent.config.intervalMs)
    if (this.listenerCount(EVENTS.SAMPLE) > 0) native.setSampleEvents(true)
    // Cleanup hooks do not run on process.exit(): join the sampler thread here instead.
    state.onExit = () => native.shutDown()
    process.on('exit', state.onExit)
    if (startEvent.config.signals) this._installSignalHandlers()
    // Deferred so listeners attached right after start() see it.
    process.nextTick(() => this._emitEvent(startEvent))
    return this
  }

  /**
   * SIGTERM/SIGINT drain through the same path (reason `signal`); a second signal while
   * draining exits at once with 128 + the signal number, as a shell would report it.
   */
  _installSignalHandlers () {
    const state = this[kState]
    const numbers = require('node:os').constants.signals
    state.signalHandlers = ['SIGTERM', 'SIGINT'].map((name) => {
      const handler = () => {
        if (state.draining || !this[kNative]?.trigger('signal', name)) {
          this[kNative]?.shutDown()
          process.exit(128 + numbers[name])
        }
      }
      process.on(name, handler)
      return [name, handler]
    })
  }

  /** JS fallback heap probe: an unref'd timer; it cannot sample a blocked loop. */
  _startJsHeapProbe (intervalMs) {
    const report = () => {
      const stats = v8.getHeapStatistics()
      this[kNative]?.reportHeap(stats.used_heap_size, stats.total_heap_size, stats.heap_size_limit, stats.external_memory ?? 0)
    }
    this[kState].heapTimer = setInterval(report, intervalMs)
    this[kState].heapTimer.unref()
    // Post-GC points for the leak slope: major GCs seen through perf_hooks.
    const { PerformanceObserver, constants } = require('node:perf_hooks')
    const observer = new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) {
        if ((entry.detail?.kind ?? entry.kind) === constants.NODE_PERFORMANCE_GC_MAJOR) {
          this[kNative]?.reportPostGc(v8.getHeapStatistics().used_heap_size)
        }
      }
    })
    observer.observe({ entryTypes: ['gc'] })
    this[kState].gcObserver = observer
  }

  _receive (json) {
    if (json === '') return // a liveness ping, already answered natively
    let event
    try {
      event = JSON.parse(json)
    } catch {
      return
    }
    if (event.event === EVENTS.SAMPLE) this[kNative]?.sampleConsumed()
    if (event.event === EVENTS.RECYCLE && !event.dryRun) {
      this._drain(event).catch((error) => {
        process.emitWarning(`self-recycle: drain failed: ${error && error.stack}`)
      })
      return
    }
    this._emitEvent(event)
  }

  _shouldLog (name) {
    const mode = this[kState].config?.log ?? 'auto'
    if (mode === 'off') return false
    if (mode === 'auto') return this.listenerCount(name) + this.listenerCount('event') === 0
    return true
  }

  /** Emits to listeners (`'event'` gets every event) and logs when due. Never throws. */
  _emitEvent (event) {
    const native = this[kNative]
    if (this._shouldLog(event.event)) binding.logEvent(JSON.stringify(event), this[kState].config?.log ?? 'auto')
    for (const name of [event.event, 'event']) {
      try {
        this.emit(name, event)
      } catch (error) {
        process.emitWarning(`self-recycle: a '${name}' listener threw: ${error && error.stack}`)
      }
    }
  }

  _event (name, msg, extra) {
    return JSON.parse(this[kNative].event(name, msg, JSON.stringify(extra)))
  }

  async _drain (recycleEvent) {
    const state = this[kState]
    const native = this[kNative]
    if (state.draining || !native) return
    state.draining = true
    const leftMs = native.acknowledge() ?? 0
    this._emitEvent(recycleEvent)
    const started = Date.now()
    const deadline = started + leftMs
    const controller = new AbortController()
    // A ref'd timer: the loop must not empty (exit 0) while hooks settle.
    let timedOut = false
    let onTimeout
    const timeout = new Promise((resolve) => {
      onTimeout = setTimeout(() => {
        timedOut = true
        controller.abort(new Error('self-recycle drain deadline passed'))
        resolve()
      }, leftMs)
    })
    const hooks = [...state.hooks]
    this._emitEvent(this._event(EVENTS.DRAIN, `drain started: ${hooks.length} hook(s), ${state.inFlight.size} in-flight task(s), ${leftMs} ms to finish`, {
      phase: 'start',
      reason: recycleEvent.reason,
      inFlight: state.inFlight.size,
      hooks: hooks.length,
      durationMs: 0
    }))
    const errors = []
    const work = (async () => {
      for (const hook of hooks) {
        if (timedOut) break
        try {
          await hook({ reason: recycleEvent.reason, signal: controller.signal, deadline })
        } catch (error) {
          errors.push(String((error && error.message) || error))
        }
      }
      await Promise.allSettled([...state.inFlight])
    })()
    await Promise.race([work, timeout])
    clearTimeout(onTimeout)
    const drained = !timedOut
    const durationMs = Date.now() - started
    const remaining = state.inFlight.size
    const how = drained ? `drain finished in ${durationMs} ms` : `drain deadline passed after ${durationMs} ms with ${remaining} task(s) in flight`
    this._emitEvent(this._event(EVENTS.DRAIN, errors.length ? `${how}; ${errors.length} hook(s) failed: ${errors.join('; ')}` : how, {
      phase: 'end',
      reason: recycleEvent.reason,
      inFlight: remaining,
      durationMs,
      drained,
      errors
    }))
    flushAllHits()
    const snapshot = state.config.heapSnapshot ? writeHeapSnapshot(state.config.reportDir) : undefined
    const exitJson = native.finish(drained, JSON.stringify(snapshot ? { heapSnapshot: snapshot } : {}))
    const exitEvent = exitJson ? JSON.parse(exitJson) : null
    const code = exitEvent?.code ?? state.config.exitCode
    await disconnectFromPrimary(Math.min(2000, Math.max(0, deadline - Date.now())))
    if (exitEvent) {
      // Re-stamped: the envelope and duration as of the moment we leave.
      const { event, schema, time, pid, uptimeMs, rss, heapUsed, heapLimit, msg, ...fields } = exitEvent
      this._emitEvent(this._event(EVENTS.EXIT, msg, { ...fields, durationMs: Date.now() - started }))
    }
    native.shutDown()
    process.exitCode = code
    process.exit(code)
  }

  /**
   * Registers a drain hook; returns a function that unregisters it. Hooks run one after
   * another in registration order, then tracked work is awaited.
   */
  onDrain (hook) {
    if (typeof hook !== 'function') throw new TypeError(`onDrain(hook): hook must be a function, got ${typeof hook}`)
    const hooks = this[kState].hooks
    const entry = (context) => hook(context)
    hooks.add(entry)
    return () => hooks.delete(entry)
  }

  /** Counts a promise as in-flight work; a drain waits for it. Returns the promise. */
  track (promise) {
    if (!promise || typeof promise.then !== 'function') {
      throw new TypeError(`track(promise): expected a promise or thenable, got ${promise === null ? 'null' : typeof promise}`)
    }
    const inFlight = this[kState].inFlight
    const settled = Promise.resolve(promise).then(() => {}, () => {})
    inFlight.add(settled)
    settled.then(() => inFlight.delete(settled))
    return promise
  }

  /** Counts finished jobs for `maxJobs`; returns the total. */
  jobDone (count = 1) {
    if (!Number.isInteger(count) || count < 0 || count > 0xffffffff) {
      throw new TypeError(`jobDone(count): expected a whole number from 0, got ${count}`)
    }
    return this[kNative] ? this[kNative].jobDone(count) : 0
  }

  /** Starts a recycle now, through the same drain path; `false` if one is under way. */
  recycle (reason) {
    if (!this[kNative]) return false
    if (reason !== undefined && typeof reason !== 'string') {
      throw new TypeError(`recycle(reason): reason must be a string, got ${typeof reason}`)
    }
    return this[kNative].trigger(reason ?? 'manual', undefined)
  }

  /** The latest sample, limits in force, counters, baseline and state. */
  stats () {
    const state = this[kState]
    if (!this[kNative]) return { state: state.disabled ? 'disabled' : 'stopped', inFlight: state.inFlight.size }
    const stats = JSON.parse(this[kNative].stats())
    stats.inFlight = state.inFlight.size
    stats.drainHooks = state.hooks.size
    stats.reportPath = this[kNative].reportPath() ?? null
    return stats
  }

  /** Stops sampling (no exit). `false` while a recycle is under way. */
  stop () {
    const state = this[kState]
    const native = this[kNative]
    if (!native) return true
    if (!native.stop()) return false
    clearInterval(state.heapTimer)
    state.gcObserver?.disconnect()
    for (const [name, handler] of state.signalHandlers ?? []) process.removeListener(name, handler)
    state.signalHandlers = null
    process.removeListener('exit', state.onExit)
    this[kNative] = null
    return true
  }
}

/**
 * Starts the recycler (idempotent per process: later calls return the running one).
 * Options override `SELF_RECYCLE_*` env vars.
 */
function start (options) {
  let recycler = globalThis[SINGLETON]
  if (recycler && (recycler.running || recycler.config?.disabled)) return recycler
  if (!recycler) {
    recycler = new Recycler()
    Object.defineProperty(globalThis, SINGLETON, { value: recycler, configurable: true, writable: true })
  }
  return recycler._start(options)
}

module.exports = {
  start,
  once,
  trackInit,
  guardStats,
  EVENTS,
  SelfRecycleConfigError,
  Recycler
}
