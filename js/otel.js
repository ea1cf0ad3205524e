'use strict'
// self-recycle/otel: the recycler's figures as OpenTelemetry instruments (@opentelemetry/api
// is an optional peer). Observable instruments read stats() when the SDK collects; the
// recycle, drain and queue instruments are fed by the recycler's events. A worker recycles
// once and then exits: what its drain recorded is sent by a bounded forceFlush() after the
// exit event, before the process ends.

const recycle = require('./index.js')
const { internalsOf } = require('./internal.js')

function otelApi () {
  try {
    return require('@opentelemetry/api')
  } catch (error) {
    throw new Error(`self-recycle/otel needs @opentelemetry/api (npm install @opentelemetry/api, and an SDK such as @opentelemetry/sdk-metrics to export): ${error.message}`)
  }
}

const LIMITS = ['rss', 'heap', 'growth', 'ceiling']
/** Drain durations: the Prometheus entry's buckets (seconds). */
const DRAIN_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60]
/** Waits behind siblings or for a fleet lease (seconds): up to STAGGER_MAX_WAIT's scale. */
const WAIT_BUCKETS = [0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600]

/** Value over limit for each limit in force (1 = at the limit), as the Prometheus entry has it. */
function pressures (stats) {
  return LIMITS.filter((name) => typeof stats.pressure?.[name] === 'number').map((name) => [name, stats.pressure[name]])
}

/** `granted`, `bypass: ...`, `unavailable: ...` -> the word before the colon. */
function outcome (admission) {
  return String(admission).split(':')[0].trim()
}

function packageVersion () {
  try {
    return require('../package.json').version
  } catch {
    return undefined
  }
}

/**
 * Registers self-recycle's instruments on a meter of `meterProvider` (the global one from
 * @opentelemetry/api unless given). Returns a function that unregisters them (idempotent).
 * @example const unregister = register({ meterProvider })
 */
function register (options = {}) {
  const api = otelApi()
  const { meterProvider, recycler = recycle.start(), flushOnExit = true } = options
  const provider = meterProvider ?? api.metrics.getMeterProvider()
  if (provider === null || typeof provider !== 'object' || typeof provider.getMeter !== 'function') {
    throw new TypeError(`self-recycle/otel: option meterProvider must be an OpenTelemetry MeterProvider (with getMeter()), got ${provider === null ? 'null' : typeof provider}`)
  }
  if (recycler === null || typeof recycler !== 'object' || typeof recycler.stats !== 'function' || !internalsOf(recycler)) {
    throw new TypeError(`self-recycle/otel: option recycler must be a Recycler (from start()), got ${recycler === null ? 'null' : typeof recycler}`)
  }
  const meter = provider.getMeter('self-recycle', packageVersion())
  const { ValueType } = api
  const bytes = (description) => ({ description, unit: 'By', valueType: ValueType.INT })

  // Read at collection time, all from one stats() call.
  const observed = {
    rss: meter.createObservableUpDownCounter('process.memory.usage', bytes('The amount of physical memory in use (RSS) at the latest sample')),
    heapUsed: meter.createObservableUpDownCounter('self_recycle.heap.used', bytes('V8 used heap, all spaces, at the latest sample')),
    heapLimit: meter.createObservableUpDownCounter('self_recycle.heap.limit', bytes("V8's heap_size_limit")),
    limit: meter.createObservableUpDownCounter('self_recycle.limit', bytes('Limits in force, by self_recycle.limit.name (absent when off)')),
    pressure: meter.createObservableGauge('self_recycle.pressure', { description: 'Value over limit for each limit in force (1 = at the limit)', unit: '1' }),
    inFlight: meter.createObservableUpDownCounter('self_recycle.in_flight', { description: 'Tracked work in flight (a drain waits for it)', unit: '{operation}', valueType: ValueType.INT }),
    jobsDone: meter.createObservableCounter('self_recycle.jobs.done', { description: 'jobDone() count of this process', unit: '{job}', valueType: ValueType.INT }),
    state: meter.createObservableGauge('self_recycle.state', { description: 'The recycler state (1 for the current one, by self_recycle.state.name)', unit: '1', valueType: ValueType.INT }),
    guardInits: meter.createObservableCounter('self_recycle.guard.inits', { description: 'Initializations per once()/trackInit() key (above 1 for a trackInit key: re-created)', unit: '{init}', valueType: ValueType.INT }),
    guardHits: meter.createObservableCounter('self_recycle.guard.hits', { description: 'Cached values returned per once() key', unit: '{hit}', valueType: ValueType.INT }),
    // The memory cgroup is shared by every process in it: gauges, not additive figures.
    containerWorkingSet: meter.createObservableGauge('self_recycle.container.working_set', bytes("The memory cgroup's working set (usage minus inactive file cache), what the OOM killer acts on")),
    containerLimit: meter.createObservableGauge('self_recycle.container.limit', bytes("The memory cgroup's limit now (it follows an in-place resize)")),
    containerEvents: meter.createObservableCounter('self_recycle.container.memory.events', { description: "The memory cgroup's memory.events counts, by self_recycle.container.event (high, max, oom, oom_kill; v1: oom_kill)", unit: '{event}', valueType: ValueType.INT })
  }
  const collect = (result) => {
    let stats
    try {
      stats = recycler.stats()
    } catch {
      return
    }
    const number = (value) => typeof value === 'number' && Number.isFinite(value)
    const put = (instrument, value, attributes) => {
      if (number(value)) result.observe(instrument, value, attributes)
    }
    put(observed.rss, stats.sample?.rss)
    put(observed.heapUsed, stats.sample?.heapUsed)
    put(observed.heapLimit, stats.sample?.heapLimit)
    for (const name of LIMITS) put(observed.limit, stats.limits?.[name], { 'self_recycle.limit.name': name })
    for (const [name, ratio] of pressures(stats)) put(observed.pressure, ratio, { 'self_recycle.limit.name': name })
    put(observed.inFlight, stats.inFlight)
    put(observed.jobsDone, stats.counters?.jobsDone)
    if (typeof stats.state === 'string') result.observe(observed.state, 1, { 'self_recycle.state.name': stats.state })
    let guard = []
    try {
      guard = recycle.guardStats()
    } catch {}
    for (const key of guard) {
      put(observed.guardInits, key.inits, { 'self_recycle.guard.key': key.key })
      put(observed.guardHits, key.hits, { 'self_recycle.guard.key': key.key })
    }
    const container = stats.container
    if (container) {
      put(observed.containerWorkingSet, container.workingSet)
      put(observed.containerLimit, container.limit)
      for (const [event, count] of Object.entries(container.events ?? {})) {
        put(observed.containerEvents, count, { 'self_recycle.container.event': event })
      }
    }
  }
  const observables = Object.values(observed)
  meter.addBatchObservableCallback(collect, observables)

  // Fed by events.
  const recycles = meter.createCounter('self_recycle.recycles', { description: 'Recycles decided by this process, by self_recycle.reason (DRY_RUN ones with self_recycle.dry_run)', unit: '{recycle}', valueType: ValueType.INT })
  const drainDuration = meter.createHistogram('self_recycle.drain.duration', { description: 'Drain durations, from the decision to the end of the drain', unit: 's', advice: { explicitBucketBoundaries: DRAIN_BUCKETS } })
  const queueWaits = meter.createCounter('self_recycle.queue.waits', { description: 'Due recycles that waited for their turn, by self_recycle.queue.name (siblings, fleet)', unit: '{wait}', valueType: ValueType.INT })
  const queueDuration = meter.createHistogram('self_recycle.queue.duration', { description: 'How long a due recycle waited for its turn, by self_recycle.queue.name and self_recycle.queue.outcome', unit: 's', advice: { explicitBucketBoundaries: WAIT_BUCKETS } })
  const fromEvents = {
    recycle (event) {
      recycles.add(1, { 'self_recycle.reason': String(event.reason), 'self_recycle.dry_run': event.dryRun === true })
      if (typeof event.staggerWaitMs === 'number') {
        queueDuration.record(event.staggerWaitMs / 1000, { 'self_recycle.queue.name': 'siblings', 'self_recycle.queue.outcome': outcome(event.stagger) })
      }
      if (typeof event.fleetWaitMs === 'number') {
        queueDuration.record(event.fleetWaitMs / 1000, { 'self_recycle.queue.name': 'fleet', 'self_recycle.queue.outcome': outcome(event.fleet) })
      }
    },
    queued (event) {
      queueWaits.add(1, { 'self_recycle.queue.name': String(event.waitingFor), 'self_recycle.reason': String(event.reason) })
    },
    drain (event) {
      if (event.phase !== 'end' || typeof event.durationMs !== 'number') return
      drainDuration.record(event.durationMs / 1000, { 'self_recycle.reason': String(event.reason), 'self_recycle.drained': event.drained === true })
    }
  }
  // An observer, not a listener: LOG=auto keeps logging the events the app does not listen to.
  const observeEvent = (event) => {
    if (Object.hasOwn(fromEvents, event?.event)) fromEvents[event.event](event)
  }
  const stopObserving = internalsOf(recycler).observeEvents(observeEvent)

  // The process exits right after its drain: send what it recorded first (bounded by the recycler).
  const removeFlush = flushOnExit && typeof provider.forceFlush === 'function'
    ? internalsOf(recycler).onExitFlush(() => provider.forceFlush())
    : null

  let registered = true
  return function unregister () {
    if (!registered) return
    registered = false
    meter.removeBatchObservableCallback(collect, observables)
    stopObserving()
    removeFlush?.()
  }
}

module.exports = /** @satisfies {typeof import('./otel.js')} */ ({ register })
