'use strict'
// The JS facade over the native addon: an EventEmitter per process, the drain path
// (onDrain hooks, tracked work, the exit), stop signals, and option validation. Every
// event is built natively (js/native.js); JS only adds what only JS knows (listeners,
// hooks, tracked promises) and writes log lines through process.stderr.

const { EventEmitter } = require('node:events')
const binding = require('./native.js')
const { once, trackInit, guardStats, flushAllHits } = require('./guard.js')
const { shouldLog, writeLine } = require('./log.js')
const { SelfRecycleConfigError, describeError, readEnv, normalizeOptions, splitFleet, readSettings, fleetRedis, fleetOptionName, clusterStagger } = require('./options.js')
const { takeNotifyEnv, v8SizeFlag, semiSpaceMiB, heapInputs } = require('./process-facts.js')
const { setLongTimeout, disconnectFromPrimary, runExitFlushes } = require('./exit-path.js')
const { current, adopt, INTERNALS } = require('./internal.js')
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
  BASELINE: 'baseline',
  STOP: 'stop',
  QUEUED: 'queued',
  LIMITS: 'limits',
  DRAIN: 'drain',
  EXIT: 'exit',
  STORM: 'storm',
  WARNING: 'warning',
  REINIT: 'reinit'
})

const SIGNAL_NUMBERS = { SIGTERM: 15, SIGINT: 2 }
/** Headroom a near-heap-limit recycle needs for its profile to be taken. */
const PROFILE_MIN_HEADROOM = 16 * 1048576

/** Tracked-job durations kept for the drain estimate. */
const DURATIONS_KEPT = 64

/**
 * What a Recycler keeps between calls (`this[kState]`).
 * @typedef {object} RecyclerState
 * @property {Set<(context: import('./index.js').DrainContext) => unknown>} hooks
 * @property {Set<() => unknown>} exitFlushes
 * @property {Set<(event: any) => void>} observers
 * @property {Set<Promise<void>>} inFlight
 * @property {any} config the start event's config as built natively (`{ disabled: true }` when disabled)
 * @property {string | undefined} options the first start()'s normalized options, as JSON
 * @property {boolean} disabled
 * @property {boolean} draining
 * @property {NodeJS.Timeout | undefined} heapTimer
 * @property {import('node:perf_hooks').PerformanceObserver} [gcObserver]
 * @property {(() => void) | null} onExit
 * @property {Array<[string, () => void]> | null} signalHandlers
 * @property {boolean} nativeSignals
 * @property {Set<string>} expectedSignals
 * @property {number[]} durations
 * @property {Map<Promise<void>, number>} startedAt
 * @property {{ p90: number | null, youngest: number | null, concurrent?: boolean }} drainEstimate
 * @property {import('./profile.js').SiteProfiler | null} [profiler]
 * @property {string | null} [profilerStatus]
 * @property {string} [profileProbe]
 * @property {boolean} [canExitProcess]
 * @property {import('./fleet.js').Fleet | null} [fleet]
 * @property {NodeJS.Immediate | undefined} [channelOpening]
 * @property {{ status: string, close (): void } | null} [channel]
 * @property {import('./jobs.js').JobLedger | null} [jobs]
 * @property {{ key: string, fit: any }} [jobFit]
 * @property {any} [decision] the recycle or stop event being drained
 */

class Recycler extends EventEmitter {
  constructor () {
    super()
    this[kNative] = null
    // For self-recycle's own modules (js/internal.js): not public API.
    Object.defineProperty(this, INTERNALS, {
      value: Object.freeze({
        emitEvent: (event) => this._emitEvent(event),
        observeEvents: (observer) => this._observeEvents(observer),
        onExitFlush: (flush) => this._onExitFlush(flush),
        serves: (server) => this._serves(server),
        mayStopListening: () => this._mayStopListening(),
        handOff: (server) => require('./handoff.js').handOff(server, binding)
      })
    })
    /** @type {RecyclerState} */
    this[kState] = {
      hooks: new Set(),
      // Functions awaited (bounded) after the exit event, before the process exits.
      exitFlushes: new Set(),
      // Internal event observers: not listeners, so they do not silence LOG=auto.
      observers: new Set(),
      inFlight: new Set(),
      config: null,
      options: undefined,
      disabled: false,
      draining: false,
      heapTimer: undefined,
      onExit: null,
      signalHandlers: null,
      // The native watcher sees stop signals (Linux): the listeners only keep libuv's
      // handler installed.
      nativeSignals: false,
      // Signals a library is about to re-raise for its own shutdown (Nest's
      // enableShutdownHooks): they belong to the stop under way.
      expectedSignals: new Set(),
      // Durations (ms) of the last tracked jobs, for the drain time the policy plans for.
      durations: [],
      startedAt: new Map(),
      drainEstimate: { p90: null, youngest: null }
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
    // Sockets the previous generation handed on (RESTART=exec): adopted by the app's
    // listen() on their port, which must not bind again.
    if (process.env.LISTEN_PID === String(process.pid)) {
      require('./handoff.js').adopt((message) => process.emitWarning(message, { code: 'SELF_RECYCLE_HANDOFF_UNUSED' }))
    }
    const { options: rest, fleet } = splitFleet(options)
    const given = normalizeOptions(rest)
    // Parsed natively, as the recycler will: which variables are in force, the fleet's URL.
    const settings = readSettings(given, null, fleet)
    const normalized = clusterStagger(given, settings.given)
    const redis = fleetRedis(fleet, settings)
    const forceJsHeapProbe = process.env.SELF_RECYCLE_TEST_FORCE_JS_HEAP_PROBE === '1'
    let native
    try {
      native = new binding.NativeRecycler(
        {
          env: readEnv(process.env),
          options: normalized,
          uptimeMs: process.uptime() * 1000,
          ...heapInputs(forceJsHeapProbe),
          semiSpaceMib: semiSpaceMiB(),
          oldSpaceMib: v8SizeFlag('max-old-space-size'),
          // Linux: the addon asks the OS; elsewhere worker_threads says (it costs ~0.8 ms).
          mainThread: process.platform === 'linux' ? undefined : require('node:worker_threads').isMainThread,
          forceJsHeapProbe,
          fleet: redis !== null,
          versions: { node: process.version, v8: process.versions.v8, platform: process.platform, arch: process.arch },
          startedEpochMs: Date.now(),
          nodeOwnsNearHeapLimit: [...process.execArgv, ...(process.env.NODE_OPTIONS || '').split(/\s+/)]
            .some((arg) => arg.startsWith('--heapsnapshot-near-heap-limit')),
          nodeReportsFatalErrors: process.report?.reportOnFatalError === true,
          // RESTART=exec would cut an IPC channel to the parent (cluster, PM2, fork).
          ipcChannel: typeof process.send === 'function',
          ...takeNotifyEnv()
        },
        (event) => this._receive(event)
      )
    } catch (error) {
      if (error?.code === 'ERR_SELF_RECYCLE_CONFIG') throw fleetOptionName(new SelfRecycleConfigError(error), fleet)
      throw error
    }
    state.options = JSON.stringify(normalized)
    if (native.disabled) {
      state.disabled = true
      state.config = { disabled: true }
      return this
    }
    state.disabled = false
    this[kNative] = native
    let startEvent = native.startEvent()
    state.config = startEvent.config
    state.profiler = null
    state.profilerStatus = null
    let profileStatus = startEvent.probes.profile
    if (profileStatus === 'native' && process.env.SELF_RECYCLE_TEST_FORCE_INSPECTOR_PROFILE === '1') {
      binding.heapProfileStop()
      profileStatus = 'unavailable: the native profiler is turned off by a test'
    }
    if (profileStatus.startsWith('unavailable: ')) {
      // The inspector fallback must start sampling now; the native profiler already runs,
      // and js/profile.js (0.9 ms to load) waits for the baseline or the first event.
      const profiler = /** @type {import('./profile.js').SiteProfiler} (a status was given) */ (this._profiler(profileStatus))
      // The start event that says how sites are profiled now (the one above is not logged).
      startEvent = native.setProfileStatus(profiler.status)
    } else if (profileStatus !== 'off' && !profileStatus.startsWith('off:')) {
      state.profilerStatus = profileStatus
    }
    state.profileProbe = startEvent.probes.profile
    state.canExitProcess = startEvent.canExitProcess
    if (startEvent.probes.v8 === 'js') this._startJsHeapProbe(startEvent.config.intervalMs)
    if (this.listenerCount(EVENTS.SAMPLE) > 0) native.setSampleEvents(true)
    // Cleanup hooks do not run on process.exit(): join the sampler thread here instead.
    state.onExit = () => native.shutDown()
    process.on('exit', state.onExit)
    if (startEvent.config.signals) this._installSignalHandlers()
    state.fleet = null
    if (redis !== null) this._startFleet(redis)
    this._openProfileChannel(native)
    // Deferred so listeners attached right after start() see it.
    process.nextTick(() => this._emitEvent(startEvent))
    return this
  }

  /**
   * `self-recycle profile <pid>` asks through a private directory (js/channel.js), opened
   * just after start (off its path) and looked at once a second; it never keeps the process
   * alive, and a failure only leaves it off (`stats().profileChannel` says why).
   */
  _openProfileChannel (native) {
    const state = this[kState]
    state.channelOpening = setImmediate(() => {
      state.channelOpening = undefined
      if (this[kNative] !== native) return
      try {
        const { ProfileChannel } = require('./channel.js')
        // Only the main thread's recycler may end the process (canExitProcess): it answers for it.
        state.channel = new ProfileChannel(() => this._profileNow(), { mainThread: state.canExitProcess !== false }).open()
      } catch (error) {
        state.channel = { status: `off: ${describeError(error)}`, close () {} }
      }
    })
    state.channelOpening.unref()
  }

  /**
   * What `self-recycle profile` is answered (js/channel.js): the sites grown so far (after one
   * full GC) and the job attribution, as a `leak` would name them. Never recycles.
   */
  _profileNow () {
    const state = this[kState]
    const stats = this.stats()
    const answer = {
      schema: 1,
      time: new Date().toISOString(),
      state: stats.state,
      uptimeMs: stats.uptimeMs ?? Math.round(process.uptime() * 1000),
      sample: stats.sample ?? null,
      limits: stats.limits ?? null
    }
    let profile = null
    const profiler = this._profiler()
    if (!profiler) {
      answer.profileSkipped = state.config?.profile === 'heap' ? `the profiler is ${state.profileProbe}` : 'PROFILE=off (SELF_RECYCLE_PROFILE=heap names allocation sites)'
    } else {
      const { REPORT_SITES } = require('./profile.js')
      const grown = profiler.grown({ limit: REPORT_SITES, atMs: answer.uptimeMs })
      if (grown.skipped) {
        answer.profileSkipped = grown.skipped
      } else {
        profile = grown.profile
        answer.profile = { since: grown.since, intervalBytes: state.config.profileIntervalBytes, sampledBytes: grown.total, gc: grown.gc, topSites: grown.sites, heapProfile: null }
      }
    }
    // After the GC above: the fit has the newest post-GC point.
    const jobs = this.jobStats()
    answer.topJobs = jobs?.topJobs ?? null
    answer.jobsFit = jobs?.jobsFit ?? null
    answer.jobs = jobs?.completed ?? []
    return { answer, profile }
  }

  /**
   * Named jobs (`track(promise, { name })`): jobs finished per name (most first) and the
   * attribution of post-GC heap growth as of the latest major GC (`topJobs`, `jobsFit`: the
   * fit a `leak` event names); null before a named job finished. The fit is computed again
   * only after a new major GC.
   */
  jobStats () {
    const state = this[kState]
    const ledger = state.jobs
    if (!ledger?.named) return null
    const native = this[kNative]
    let fit = null
    if (native) {
      const series = native.postGcSeries()
      const key = `${series.length}:${series.at(-1)?.[0]}:${ledger.finished.size}`
      if (state.jobFit?.key === key) {
        fit = state.jobFit.fit
      } else {
        fit = ledger.attribute(series)
        state.jobFit = { key, fit }
      }
    }
    return { completed: ledger.completedByName(), refusedNames: ledger.refused, topJobs: fit?.topJobs ?? [], jobsFit: fit?.jobsFit ?? null }
  }

  /**
   * The fleet client (js/fleet.js, loaded only here): leases, heartbeat, history. `redis`:
   * options.js fleetRedis()'s answer (a client, options, a function of one, or the URL).
   */
  _startFleet (redis) {
    const state = this[kState]
    const { Fleet } = require('./fleet.js')
    state.fleet = new Fleet({
      settings: state.config,
      redis,
      recycler: this,
      native: () => this[kNative],
      version: require('../package.json').version
    }).start()
  }

  /**
   * SIGTERM/SIGINT stop the worker: the same drain as a recycle, then exit 0 (128 + the
   * signal number if the drain ran out of time). A signal during a recycle drain joins it;
   * a second signal of the same stop exits at once with 128 + the signal number; the same
   * signal again within 100 ms is the same stop. On Linux the native side sees the signal
   * too (chained in front of the listeners added here): JS decides while it runs; a
   * delivery JS has not taken within 250 ms is acted on natively (a stop drain whose
   * deadline counts from the signal, or the exit of a second signal).
   */
  _installSignalHandlers () {
    const state = this[kState]
    state.signalHandlers = Object.keys(SIGNAL_NUMBERS).map((name) => {
      const handler = () => this._onSignal(name)
      process.on(name, handler)
      return [name, handler]
    })
    state.nativeSignals = this[kNative].armStopSignals() === null
  }

  _onSignal (name) {
    const state = this[kState]
    const native = this[kNative]
    if (!native) return
    if (state.expectedSignals.delete(name)) return // a library's re-raise of this stop
    const { outcome, event } = native.requestStop(name, SIGNAL_NUMBERS[name])
    if (outcome === 'native') {
      // The native watcher started (or joined) this stop while JS was stuck: say so now,
      // and drain what can still be drained.
      if (event) {
        this._emitEvent(event)
        if (!event.joined) this._drain(event)
      }
      return
    }
    if (outcome === 'again') {
      const exit = native.interrupt(name, SIGNAL_NUMBERS[name])
      if (exit) this._emitEvent(exit)
      native.shutDown()
      process.exit(exit?.code ?? 128 + SIGNAL_NUMBERS[name])
    }
    this._emitEvent(event)
    if (outcome === 'started') this._drain(event)
  }

  /**
   * Says that `signal` will be raised again by a library finishing its own shutdown (Nest's
   * `enableShutdownHooks()` re-raises the signal after `app.close()`): it then joins the stop
   * under way instead of counting as a second signal. Used by `self-recycle/nest`.
   */
  expectSignal (signal) {
    if (!(signal in SIGNAL_NUMBERS)) return
    const state = this[kState]
    state.expectedSignals.add(signal)
    // The native handler lets the re-raise through to JS without counting it.
    if (state.nativeSignals) this[kNative]?.expectSignal(SIGNAL_NUMBERS[signal])
  }

  /** JS fallback heap probe: an unref'd timer; it cannot sample a blocked loop. */
  _startJsHeapProbe (intervalMs) {
    const v8 = require('node:v8')
    const report = () => {
      const stats = v8.getHeapStatistics()
      this[kNative]?.reportHeap({ usedHeapSize: stats.used_heap_size, totalHeapSize: stats.total_heap_size, heapSizeLimit: stats.heap_size_limit, externalMemory: stats.external_memory })
    }
    this[kState].heapTimer = setInterval(report, intervalMs)
    this[kState].heapTimer.unref()
    // Post-GC points for the leak slope: major GCs seen through perf_hooks.
    const { PerformanceObserver, constants } = require('node:perf_hooks')
    const observer = new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) {
        // A gc entry's detail (@types/node leaves it out of PerformanceEntry).
        const gc = /** @type {import('node:perf_hooks').PerformanceEntry & { detail?: import('node:perf_hooks').NodeGCPerformanceDetail }} */ (entry)
        if (gc.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) {
          this[kNative]?.reportPostGc(v8.getHeapStatistics().used_heap_size)
        }
      }
    })
    observer.observe({ entryTypes: ['gc'] })
    this[kState].gcObserver = observer
  }

  _receive (message) {
    if (message === null || typeof message !== 'object') return // a liveness ping, answered natively
    if (message.fleetAsk) {
      // A recycle is due and asks the fleet for a lease (not an event).
      if (this[kState].fleet) this[kState].fleet.ask()
      else this[kNative]?.fleetAnswer({ status: 'unavailable', why: 'no fleet client' })
      return
    }
    const event = message.draft ? this._complete(message) : message
    if (event.event === EVENTS.SAMPLE) this[kNative]?.sampleConsumed()
    // READY=baseline: PM2's wait_ready (and a cluster primary) hear it once the baseline passes.
    if (event.event === EVENTS.BASELINE && event.ready && this[kState].config?.ready === 'baseline' && typeof process.send === 'function') {
      try { process.send('ready') } catch {}
    }
    if (event.event === EVENTS.BASELINE) {
      // Without a baseline, sites count from the start; the event goes out regardless.
      try {
        this._profiler()?.takeBaseline(event.uptimeMs)
      } catch (error) {
        process.emitWarning(`self-recycle: could not take the profile baseline: ${describeError(error)}`)
      }
    }
    if (event.event === EVENTS.RECYCLE) this[kState].fleet?.onRecycle(event)
    if (event.event === EVENTS.RECYCLE && !event.dryRun) {
      this._emitEvent(event)
      this._drain(event)
      return
    }
    this._emitEvent(event)
  }

  /**
   * A `leak` or `recycle` the native side decided, as a draft: JS measures where the heap
   * grew (allocation sites, named jobs) and the native side completes the event with it
   * (typed fields, the msg), renders it once and keeps that rendering for the report.
   * Returns the event to emit as it is; never throws (the draft stands in).
   */
  _complete ({ draftId, draft }) {
    const attribution = {}
    // The profiler names sites; it must never be why an event (or a recycle) is lost.
    try {
      this._attributeSites(draft, attribution)
      this._attributeJobs(attribution)
    } catch (error) {
      attribution.profileSkipped = `the profile could not be read: ${describeError(error)}`
    }
    try {
      return this[kNative]?.completeEvent(draftId, attribution) ?? draft
    } catch (error) {
      process.emitWarning(`self-recycle: could not complete the ${draft.event} event: ${describeError(error)}`)
      return draft
    }
  }

  /** The site profiler, made on first use (`status`: the native side's, at start). */
  _profiler (status = this[kState].profilerStatus) {
    const state = this[kState]
    if (!state.profiler && status) {
      const { SiteProfiler } = require('./profile.js')
      state.profiler = new SiteProfiler(status, state.config.profileIntervalBytes)
    }
    return state.profiler
  }

  /**
   * Named jobs (`track(promise, { name })`): which job type the post-GC heap grew with, and
   * by how much per job (`topJobs`, `jobsFit`), for a `leak` or `recycle` and its report.
   */
  _attributeJobs (attribution) {
    const ledger = this[kState].jobs
    const native = this[kNative]
    if (!ledger?.named || !native) return
    const attributed = ledger.attribute(native.postGcSeries())
    if (!attributed) return
    attribution.topJobs = attributed.topJobs
    attribution.jobsFit = attributed.jobsFit
  }

  /**
   * PROFILE=heap: the allocation sites that grew since the baseline, for a `leak` or
   * `recycle` (`topSites`, `since`; or `profileSkipped`); a recycle also keeps the top 50
   * (`reportProfile`) and the raw profile (`.heapprofile`, for DevTools) beside its report.
   */
  _attributeSites (draft, attribution) {
    const state = this[kState]
    const native = this[kNative]
    const profiler = this._profiler()
    if (!profiler || !native) return
    let grown
    // Near V8's heap limit a profile must fit in the headroom granted: a small one does.
    if (draft.reason === 'near-heap-limit' && (draft.headroom ?? 0) < PROFILE_MIN_HEADROOM) {
      grown = { skipped: `near the heap limit with ${Math.floor((draft.headroom ?? 0) / 1048576)} MiB of headroom (a profile needs ${PROFILE_MIN_HEADROOM / 1048576} MiB)` }
    } else {
      // V8 has just collected near its limit; anywhere else one full GC first, so garbage
      // not collected yet is not growth.
      grown = profiler.grown({ atMs: draft.uptimeMs, collect: draft.reason !== 'near-heap-limit' })
    }
    if ('skipped' in grown) {
      attribution.profileSkipped = grown.skipped
      return
    }
    const { EVENT_SITES } = require('./profile.js')
    // No site beyond sampling noise: `topSites: []` and the msg says "no heap growth".
    attribution.topSites = grown.sites.slice(0, EVENT_SITES)
    attribution.since = grown.since
    if (draft.event !== EVENTS.RECYCLE || draft.dryRun) return
    try {
      const written = native.writeBesideReport({ extension: 'heapprofile', text: JSON.stringify(grown.profile) })
      attribution.reportProfile = {
        since: grown.since,
        intervalBytes: state.config.profileIntervalBytes,
        sampledBytes: grown.total,
        // Left out of the sites: the newest samples, allocated in the last young generation's worth.
        recentBytesLeftOut: grown.total - grown.counted,
        // The full GC before the read: { ms } or { error }; 'inspector' forces its own.
        gc: grown.gc,
        topSites: grown.sites,
        heapProfile: written?.path ?? null,
        ...(written?.error ? { heapProfileError: written.error } : {})
      }
    } catch (error) {
      process.emitWarning(`self-recycle: could not keep the profile for the report: ${describeError(error)}`)
    }
  }

  _logMode () {
    return this[kState].config?.log ?? 'auto'
  }

  /** Emits to listeners (`'event'` gets every event) and logs when due. Never throws. */
  _emitEvent (event) {
    const mode = this._logMode()
    if (shouldLog(mode, this.listenerCount(event.event) + this.listenerCount('event'))) writeLine(event, mode)
    // Observers (self-recycle/otel) see every event without counting as a listener: LOG=auto
    // still logs what the app does not listen to.
    for (const observer of this[kState].observers) {
      try {
        observer(event)
      } catch (error) {
        process.emitWarning(`self-recycle: an event observer threw: ${error && error.stack}`)
      }
    }
    for (const name of [event.event, 'event']) {
      try {
        this.emit(name, event)
      } catch (error) {
        process.emitWarning(`self-recycle: a '${name}' listener threw: ${error && error.stack}`)
      }
    }
  }

  /** Runs the drain; never rejects (a failure still ends in the configured exit). */
  _drain (decision) {
    this._drainSteps(decision).catch((error) => {
      process.emitWarning(`self-recycle: drain failed: ${describeError(error)}`)
      const native = this[kNative]
      const exit = native?.finish({ drained: false, heapSnapshot: null })
      native?.shutDown()
      process.exit(exit?.code ?? this[kState].config?.exitCode ?? 75)
    })
  }

  async _drainSteps (decision) {
    const state = this[kState]
    const native = this[kNative]
    if (state.draining || !native) return
    state.draining = true
    state.decision = decision
    const leftMs = native.acknowledge() ?? 0
    const deadline = Date.now() + leftMs
    const controller = new AbortController()
    // A ref'd timer: the loop must not empty (exit 0) while hooks settle.
    let timedOut = false
    let cancelTimer = () => {}
    /** @type {Promise<void>} */
    const timeout = new Promise((resolve) => {
      cancelTimer = setLongTimeout(() => {
        timedOut = true
        controller.abort(new Error('self-recycle drain deadline passed'))
        resolve()
      }, leftMs)
    })
    const hooks = [...state.hooks]
    const drainStart = native.drainStarted({ hooks: hooks.length, inFlight: state.inFlight.size })
    if (drainStart) this._emitEvent(drainStart)
    const errors = []
    const work = (async () => {
      for (const hook of hooks) {
        // No hook starts after the deadline: its work could not be waited for.
        if (timedOut) break
        try {
          await hook({ reason: decision.reason ?? 'signal', signal: controller.signal, deadline })
        } catch (error) {
          errors.push(describeError(error))
        }
      }
      // Work tracked during the drain is waited for too, until nothing is in flight.
      while (state.inFlight.size > 0 && !timedOut) {
        await Promise.race([Promise.allSettled([...state.inFlight]), timeout])
      }
    })()
    await Promise.race([work, timeout])
    cancelTimer()
    const remaining = state.inFlight.size
    const drained = !timedOut && remaining === 0
    const drainEnd = native.drainFinished({ inFlight: remaining, drained, errors })
    if (drainEnd) this._emitEvent(drainEnd)
    flushAllHits()
    const snapshot = state.config.heapSnapshot && decision.event === EVENTS.RECYCLE
      ? require('./snapshot.js').writeHeapSnapshot(state.config.reportDir)
      : undefined
    await disconnectFromPrimary(Math.min(2000, Math.max(0, deadline - Date.now())))
    const exit = native.finish({ drained, heapSnapshot: snapshot ?? null })
    if (exit) this._emitEvent(exit)
    // The fleet hears of the exit and gets its lease back; Redis gets at most a second.
    await state.fleet?.close(exit, Math.min(1000, state.config.fleetTimeoutMs))
    // Exporters get what is left before the native deadline (its grace is 500 ms), at most 1 s.
    await runExitFlushes(state.exitFlushes, Math.min(1000, deadline + 250 - Date.now()))
    native.shutDown()
    const code = exit?.code ?? state.config.exitCode
    process.exitCode = code
    // RESTART=exec: the process re-executes itself once every `exit` listener ran (this
    // one is added last); it returns only if that failed, and the exit goes on.
    if (exit?.restart === 'exec') {
      process.once('exit', () => {
        const why = binding.execSelf(code)
        process.stderr.write(`self-recycle: could not re-execute in place (${why}); exiting with code ${code}\n`)
      })
    }
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

  /**
   * Internal (self-recycle/otel): `flush` runs after the exit event, with the time left
   * before the native deadline (at most 1 s). Returns a function that removes it.
   */
  _onExitFlush (flush) {
    const flushes = this[kState].exitFlushes
    const entry = () => flush()
    flushes.add(entry)
    return () => flushes.delete(entry)
  }

  /**
   * Internal (self-recycle/otel): `observer` sees every event, before the listeners, without
   * counting as one for LOG=auto. Returns a function that removes it.
   */
  _observeEvents (observer) {
    const observers = this[kState].observers
    const entry = (event) => observer(event)
    observers.add(entry)
    return () => observers.delete(entry)
  }

  /**
   * Counts a promise as in-flight work; a drain waits for it, including work tracked
   * after the drain started. Returns the promise.
   */
  track (promise, options) {
    if (!promise || typeof promise.then !== 'function') {
      throw new TypeError(`track(promise): expected a promise or thenable, got ${promise === null ? 'null' : typeof promise}`)
    }
    const name = options?.name
    if (options !== undefined && (options === null || typeof options !== 'object' || (name !== undefined && (typeof name !== 'string' || name === '' || name.length > 200)))) {
      throw new TypeError(`track(promise, { name }): name must be a non-empty string of at most 200 characters, got ${options === null ? 'null' : typeof options !== 'object' ? typeof options : JSON.stringify(name)}`)
    }
    const state = this[kState]
    const inFlight = state.inFlight
    const started = Date.now()
    const settled = Promise.resolve(promise).then(() => {}, () => {})
    inFlight.add(settled)
    state.startedAt.set(settled, started)
    settled.then(() => {
      inFlight.delete(settled)
      state.startedAt.delete(settled)
      if (name !== undefined) (state.jobs ??= new (require('./jobs.js').JobLedger)()).record(name)
      const durations = state.durations
      if (durations.length === DURATIONS_KEPT) durations.shift()
      durations.push(Date.now() - started)
      this._estimateDrain()
    })
    this._estimateDrain()
    return promise
  }

  /**
   * Tells the policy how long a drain would take: a drain waits for every job in flight,
   * the youngest last, so it ends about when the youngest reaches the 90th percentile of
   * recent job durations. Sent as (p90, the youngest's start) on each change; the native
   * side works out what is left at each sample. No work in flight: nothing to wait for.
   */
  _estimateDrain () {
    const state = this[kState]
    const native = this[kNative]
    if (!native || !state.config?.predict) return
    let youngest = null
    for (const at of state.startedAt.values()) youngest = youngest === null ? at : Math.max(youngest, at)
    const sorted = youngest !== null && state.durations.length > 0 ? [...state.durations].sort((a, b) => a - b) : null
    const p90 = sorted ? Math.round(sorted[Math.floor(sorted.length * 0.9)] ?? sorted.at(-1)) : null
    const concurrent = state.inFlight.size > 1
    const estimate = state.drainEstimate
    if (p90 === estimate.p90 && youngest === estimate.youngest && concurrent === estimate.concurrent) return
    estimate.p90 = p90
    estimate.youngest = youngest
    estimate.concurrent = concurrent
    native.setExpectedDrain(p90 === null || youngest === null ? null : { p90Ms: p90, youngestStartedMs: youngest, concurrent })
  }

  /**
   * `server` serves this worker's port (drainHttp): with a stagger queue, this worker
   * drains only once the last sibling to recycle has a replacement listening, and says so
   * itself each time `server` listens, so a cluster never has nobody listening.
   */
  _serves (server) {
    const native = this[kNative]
    if (!native || !native.staggerServe()) return () => {}
    const listening = () => {
      // An unusable queue directory is reported by the recycle that needs it.
      try { native.staggerListening() } catch {}
    }
    server.on('listening', listening)
    if (server.listening) listening()
    return () => server.removeListener('listening', listening)
  }

  /**
   * Whether the drain under way may stop listening at once (drainHttp): the sibling queue
   * granted it, so the last recycled sibling's replacement already listens. A recycle that
   * passed the queue over its ceiling, or after STAGGER_MAX_WAIT, was not checked: its
   * server must first see a sibling listen. Stops and queue-less recycles need not wait.
   */
  _mayStopListening () {
    const stagger = this[kState].decision?.stagger
    return typeof stagger !== 'string' || !/^(bypass|timeout)/.test(stagger)
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
    if (reason !== undefined && typeof reason !== 'string') {
      throw new TypeError(`recycle(reason): reason must be a string, got ${typeof reason}`)
    }
    const native = this[kNative]
    if (!native) return false
    const event = native.trigger(reason === undefined || reason === 'manual' ? undefined : reason)
    if (!event) return false
    // Drained from here, not through the threadsafe function (which does not keep the
    // loop alive): with nothing else alive the process would end (exit 0) before the
    // event arrived. nextTick keeps the events in order after a `start` of this tick.
    process.nextTick(() => this._receive(event))
    return true
  }

  /**
   * The highest share of a limit in force that the latest sample reached (RSS, heap, the
   * hard ceiling): 0.93 is 93% of a limit; 0 without limits or when not running. Cheap
   * enough to ask per request.
   */
  pressure () {
    return this[kNative]?.pressure() ?? 0
  }

  /** Whether a recycle or stop is draining (or exiting) this process. */
  get draining () {
    return this[kState].draining
  }

  /** The latest sample, limits in force, counters, baseline and state. */
  stats () {
    const state = this[kState]
    if (!this[kNative]) return { state: state.disabled ? 'disabled' : 'stopped', inFlight: state.inFlight.size }
    const stats = this[kNative].stats()
    stats.inFlight = state.inFlight.size
    stats.drainHooks = state.hooks.size
    stats.reportPath = this[kNative].reportPath() ?? null
    stats.profileChannel = state.channel?.status ?? 'off: not opened yet'
    return stats
  }

  /** Stops sampling (no exit). `false` while a recycle is under way. */
  stop () {
    const state = this[kState]
    const native = this[kNative]
    if (!native) return true
    if (!native.stop()) return false
    state.profiler?.stop()
    state.profiler = null
    state.profilerStatus = null
    clearInterval(state.heapTimer)
    state.gcObserver?.disconnect()
    for (const [name, handler] of state.signalHandlers ?? []) process.removeListener(name, handler)
    state.signalHandlers = null
    if (state.onExit) process.removeListener('exit', state.onExit)
    state.fleet?.stop()
    state.fleet = null
    clearImmediate(state.channelOpening)
    state.channel?.close()
    state.channel = null
    this[kNative] = null
    return true
  }
}

/**
 * Starts the recycler (idempotent per process: later calls return the running one, and
 * say so when their options differ). Options override `SELF_RECYCLE_*` env vars.
 */
function start (options) {
  let recycler = current()
  if (recycler && (recycler.running || recycler.config?.disabled)) {
    const asked = JSON.stringify(normalizeOptions(splitFleet(options).options))
    if (options !== undefined && asked !== recycler[kState]?.options) {
      process.emitWarning('self-recycle: start() was called again with other options; the recycler already runs with the options of the first call', { code: 'SELF_RECYCLE_ALREADY_STARTED' })
    }
    return recycler
  }
  if (!recycler) {
    recycler = new Recycler()
    adopt(recycler)
  }
  return recycler._start(options)
}

/** See js/http.js (loaded on first use). */
function drainHttp (server, options) {
  return require('./http.js').drainHttp(server, options)
}

module.exports = /** @satisfies {Omit<typeof import('./index.js'), 'default'>} */ ({
  start,
  drainHttp,
  once,
  trackInit,
  guardStats,
  EVENTS,
  SelfRecycleConfigError,
  Recycler
})
// `import recycle from 'self-recycle'` compiled by TypeScript without esModuleInterop reads
// `.default`: give it the same object.
module.exports.default = module.exports
