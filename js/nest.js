'use strict'
// self-recycle/nest: a NestJS module that starts the recycler, drains by closing the Nest
// application (so OnModuleDestroy / OnApplicationShutdown run and @nestjs/bullmq workers
// finish their active jobs), counts @nestjs/bullmq jobs in flight and done, logs events
// through Nest's Logger (or straight to stderr when that logger is silenced), cooperates
// with Nest's enableShutdownHooks(), and a terminus health indicator. @nestjs/common and
// @nestjs/core (and @nestjs/terminus for the indicator) are optional peers.

const recycle = require('./index.js')
const { writeLine } = require('./log.js')
const { trackInit, callerStack } = require('./guard.js')

/**
 * A Nest peer, resolved from the application first: when self-recycle is linked or
 * installed from a directory (npm link, a workspace, `npm install ../self-recycle`), its own
 * realpath may hold another copy of @nestjs/core, and Nest's dependency injection tells
 * copies apart (`ModuleRef` of one is not `ModuleRef` of the other).
 */
function requirePeer (name, what) {
  const { createRequire } = require('node:module')
  const path = require('node:path')
  const entry = require.main?.filename ?? (process.argv[1] ? path.resolve(process.argv[1]) : null)
  for (const from of [entry, path.join(process.cwd(), 'noop.js')]) {
    if (!from) continue
    try {
      return createRequire(from)(name)
    } catch {}
  }
  try {
    return require(name)
  } catch (error) {
    throw new Error(`${what} needs ${name} (npm install ${name}): ${error.message}`)
  }
}

const { Module, Injectable, Inject, Logger } = requirePeer('@nestjs/common', 'self-recycle/nest')
const { DiscoveryModule, DiscoveryService, ModuleRef } = requirePeer('@nestjs/core', 'self-recycle/nest')

/** Injection token of the running recycler (the object `start()` returns). */
const SELF_RECYCLE = 'SELF_RECYCLE'
const SELF_RECYCLE_OPTIONS = 'SELF_RECYCLE_OPTIONS'
const SELF_RECYCLE_NEST_OPTIONS = 'SELF_RECYCLE_NEST_OPTIONS'

/** Events worth a warning; the rest are information. */
const WARN_EVENTS = new Set(['recycle', 'pressure', 'misconfigured', 'leak', 'reinit', 'storm'])

/** Whether Nest's Logger would print at `level` (false after `logger: false`). */
function nestLogs (level) {
  try {
    return typeof Logger.isLevelEnabled !== 'function' || Logger.isLevelEnabled(level) !== false
  } catch {
    return true
  }
}

/** Whether Nest's own shutdown hooks listen to `signal` (Nest 10 to 12), or, without the
 *  app at hand, whether anyone but the recycler does. */
function nestHandlesSignal (app, signal) {
  if (app?.shutdownCleanupRefs instanceof Map) return app.shutdownCleanupRefs.has(signal)
  if (Array.isArray(app?.activeShutdownSignals)) return app.activeShutdownSignals.includes(signal)
  return process.listenerCount(signal) > 1
}

/** A BullMQ Worker as @nestjs/bullmq keeps it on a processor (WorkerHost). */
function bullmqWorkerOf (instance) {
  const worker = instance && typeof instance === 'object' ? instance._worker : undefined
  return worker && typeof worker.on === 'function' && typeof worker.isRunning === 'function' ? worker : null
}

class SelfRecycleService {
  constructor (recycler, nestOptions, discovery) {
    this.recycler = recycler
    this.nestOptions = { trackBullmq: true, ...nestOptions }
    this.discovery = discovery
    this.logger = new Logger('SelfRecycle')
    this.app = null
    this.unregister = null
    this.detachWorkers = []
    this.onEvent = (event) => this.log(event)
    this.onStop = (event) => {
      // Nest closes the app on this signal too, then raises it again: that second signal
      // is the end of the same stop, not an operator insisting.
      if (nestHandlesSignal(this.app, event.signal)) this.recycler.expectSignal(event.signal)
    }
  }

  /** Nest's Logger while it prints; the recycler's own line (its LOG format) otherwise. */
  log (event) {
    const level = WARN_EVENTS.has(event.event) ? 'warn' : 'log'
    if (!nestLogs(level)) {
      // LOG=json/pretty: the recycler writes every event itself; LOG=off: nothing. Only
      // LOG=auto, which stays quiet because we listen, needs the line written here.
      if ((this.recycler.config?.log ?? 'auto') === 'auto') writeLine(event, 'json')
      return
    }
    this.logger[level](`${event.event}: ${event.msg}`)
  }

  onModuleInit () {
    this.recycler.on('event', this.onEvent)
    this.recycler.on('stop', this.onStop)
    this.unregister = this.recycler.onDrain(async (context) => {
      if (!this.app) {
        this.logger.warn(`draining (${context.reason}) without closing Nest: call SelfRecycleModule.closeOnDrain(app) after creating the app`)
        return
      }
      // An HTTP app: finish every request and close its keep-alive sockets first, so that
      // app.close() (which waits for the server) does not wait for the deadline.
      if (this.httpDrain) {
        this.logger.log(`draining (${context.reason}): finishing HTTP requests`)
        await this.httpDrain(context)
      }
      this.logger.log(`draining (${context.reason}): closing the Nest application`)
      await this.app.close()
    })
  }

  /** Counts every @nestjs/bullmq job: in flight (the drain waits for it) and done (MAX_JOBS). */
  onApplicationBootstrap () {
    if (!this.nestOptions.trackBullmq) return
    for (const wrapper of this.discovery.getProviders()) {
      const worker = bullmqWorkerOf(wrapper.instance)
      if (worker) this.detachWorkers.push(this.trackWorker(worker))
    }
  }

  trackWorker (worker) {
    // job id -> the function that settles the promise tracked for it
    const running = new Map()
    const onActive = (job) => {
      // The job's name lets a leak or recycle say which job type the heap grew with.
      const name = typeof job?.name === 'string' && job.name !== '' ? job.name.slice(0, 200) : undefined
      this.recycler.track(new Promise((resolve) => running.set(job.id, resolve)), name === undefined ? undefined : { name })
    }
    const onSettled = (job, done) => {
      running.get(job?.id)?.()
      running.delete(job?.id)
      if (done) this.recycler.jobDone()
    }
    const onCompleted = (job) => onSettled(job, true)
    const onFailed = (job) => onSettled(job, false)
    const onClosed = () => { for (const job of running.keys()) onSettled({ id: job }, false) }
    worker.on('active', onActive)
    worker.on('completed', onCompleted)
    worker.on('failed', onFailed)
    worker.on('closed', onClosed)
    return () => {
      worker.off('active', onActive)
      worker.off('completed', onCompleted)
      worker.off('failed', onFailed)
      worker.off('closed', onClosed)
    }
  }

  /** The drain closes this application (`INestApplication` or `INestApplicationContext`). */
  closeOnDrain (app, httpOptions) {
    this.app = app
    const server = typeof app.getHttpServer === 'function' ? app.getHttpServer() : null
    if (server && typeof server.on === 'function') this.httpDrain = require('./http.js').httpDrain(server, httpOptions).drain
    return app
  }

  onApplicationShutdown () {
    // Closed by our own drain: keep logging the drain's end and the exit the same way.
    const state = this.recycler.stats().state
    if (state !== 'draining' && state !== 'exiting') this.recycler.removeListener('event', this.onEvent)
    this.recycler.removeListener('stop', this.onStop)
    for (const detach of this.detachWorkers.splice(0)) detach()
    this.unregister?.()
    this.unregister = null
  }
}
Injectable()(SelfRecycleService)
Inject(SELF_RECYCLE)(SelfRecycleService, undefined, 0)
Inject(SELF_RECYCLE_NEST_OPTIONS)(SelfRecycleService, undefined, 1)
Inject(DiscoveryService)(SelfRecycleService, undefined, 2)

/** @nestjs/bullmq's shared config (`BullModule.forRoot`), under its default key. */
const BULLMQ_SHARED_CONFIG = 'BULLMQ_CONFIG(default)'

/**
 * Whether the settings give the fleet a Redis URL (SELF_RECYCLE_FLEET_REDIS, or the
 * fleetRedis option), as the native settings parser reads them. A malformed option counts
 * as given: start() then names it, instead of a missing BullMQ connection.
 */
function fleetRedisInForce (options) {
  const { splitFleet, normalizeOptions, readSettings } = require('./options.js')
  try {
    return (readSettings(normalizeOptions(splitFleet(options).options), ['FLEET_REDIS']).fleetRedis ?? null) !== null
  } catch {
    return true
  }
}

/**
 * `fleet` without `redis` (and no SELF_RECYCLE_FLEET_REDIS): the connection
 * `BullModule.forRoot({ connection })` gave @nestjs/bullmq, an ioredis client as it is or
 * the same connection options. Resolved when the recycler starts.
 */
function withBullmqFleet (options, moduleRef) {
  const fleet = options?.fleet
  if (!fleet || typeof fleet !== 'object' || fleet.redis !== undefined) return options
  if (fleetRedisInForce(options)) return options
  const connection = () => {
    try {
      return moduleRef.get(BULLMQ_SHARED_CONFIG, { strict: false })?.connection
    } catch {
      return undefined
    }
  }
  // BullModule.forRootAsync resolves its config later than this provider may: wait for it.
  const redis = connection() ?? (async () => {
    for (let i = 0; i < 50; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100))
      const found = connection()
      if (found) return found
    }
    throw new Error('fleet has no redis, and no BullModule.forRoot({ connection }) was found to take it from: give fleet.redis or SELF_RECYCLE_FLEET_REDIS')
  })
  return { ...options, fleet: { ...fleet, redis } }
}

/** The module's providers once the options provider is known. */
function moduleOf (optionsProvider, nestOptions, imports = []) {
  return {
    module: SelfRecycleModule,
    global: true,
    imports: [...imports, DiscoveryModule],
    providers: [
      optionsProvider,
      { provide: SELF_RECYCLE_NEST_OPTIONS, useValue: nestOptions },
      { provide: SELF_RECYCLE, useFactory: (opts, moduleRef) => recycle.start(withBullmqFleet(opts, moduleRef)), inject: [SELF_RECYCLE_OPTIONS, ModuleRef] },
      SelfRecycleService
    ],
    exports: [SELF_RECYCLE, SelfRecycleService]
  }
}

class SelfRecycleModule {
  /**
   * Starts the recycler (options override SELF_RECYCLE_* env vars) and provides it as
   * `SELF_RECYCLE`, plus `SelfRecycleService`. Global: import it once, in the root module.
   * `nestOptions.trackBullmq` (default true): count @nestjs/bullmq jobs for the drain and MAX_JOBS.
   */
  static forRoot (options = {}, nestOptions = {}) {
    return moduleOf({ provide: SELF_RECYCLE_OPTIONS, useValue: options }, nestOptions)
  }

  /**
   * Like `forRoot`, with options from a factory (a ConfigService, say):
   * `forRootAsync({ imports: [ConfigModule], inject: [ConfigService], useFactory: (config) => ({ maxRss: config.get('MAX_RSS') }) })`.
   * @param {Partial<import('./nest.js').SelfRecycleAsyncOptions>} [options] checked here (useFactory is required)
   */
  static forRootAsync ({ imports = [], inject = [], useFactory, nestOptions = {} } = {}) {
    if (typeof useFactory !== 'function') throw new TypeError('SelfRecycleModule.forRootAsync({ useFactory }): useFactory must be a function')
    return moduleOf({ provide: SELF_RECYCLE_OPTIONS, useFactory, inject }, nestOptions, imports)
  }

  /** One line in the bootstrap: the drain will close `app`. Returns `app`. */
  static closeOnDrain (app, httpOptions) {
    return app.get(SelfRecycleService).closeOnDrain(app, httpOptions)
  }
}
Module({})(SelfRecycleModule)

/** Nest lifecycle hooks: a value shared across contexts must not get them from each one. */
/** @type {Set<string | symbol>} */
const LIFECYCLE_HOOKS = new Set(['onModuleInit', 'onApplicationBootstrap', 'onModuleDestroy', 'beforeApplicationShutdown', 'onApplicationShutdown'])

/**
 * The shared value as each Nest context sees it: without lifecycle hooks (a context that
 * closes would otherwise destroy the instance every other context and the next job use);
 * methods stay bound to the real instance. Values without hooks are returned as they are.
 */
const shielded = new WeakMap()
function shieldLifecycle (value) {
  if (value === null || typeof value !== 'object') return value
  if (![...LIFECYCLE_HOOKS].some((hook) => typeof value[hook] === 'function')) return value
  if (!shielded.has(value)) {
    shielded.set(value, new Proxy(value, {
      get (target, property) {
        if (LIFECYCLE_HOOKS.has(property)) return undefined
        const found = Reflect.get(target, property, target)
        return typeof found === 'function' ? found.bind(target) : found
      },
      has (target, property) {
        return !LIFECYCLE_HOOKS.has(property) && Reflect.has(target, property)
      }
    }))
  }
  return shielded.get(value)
}

/**
 * A provider `useFactory` that builds its value once per process (per thread), however
 * many times Nest creates the context or a REQUEST/TRANSIENT scope asks for it. Its
 * lifecycle hooks (onModuleDestroy...) are hidden from the contexts: no context may tear
 * down what the others share. Better still, provide it from the root module once.
 * @example { provide: 'DB', useFactory: onceProvider('db', (config) => new Pool(config)), inject: [Config] }
 */
function onceProvider (key, useFactory) {
  if (typeof useFactory !== 'function') throw new TypeError(`onceProvider(key, useFactory): useFactory must be a function, got ${typeof useFactory}`)
  let args = []
  // One stable factory: the guard sees the same initializer on every call (hits, not reinit).
  const factory = () => useFactory(...args)
  return (...injected) => {
    args = injected
    const value = recycle.once(key, factory)
    return value && typeof value.then === 'function' ? value.then(shieldLifecycle) : shieldLifecycle(value)
  }
}

/**
 * A provider `useFactory` left unguarded but watched: it runs every time, and from the
 * second run on a `reinit` event points at it. For providers you cannot guard yet.
 */
function trackProvider (key, useFactory) {
  if (typeof useFactory !== 'function') throw new TypeError(`trackProvider(key, useFactory): useFactory must be a function, got ${typeof useFactory}`)
  // Nest calls the factory from its injector, far from the app's code: the site worth
  // naming is where the provider is declared, here.
  const declaredAt = callerStack()
  return (...injected) => trackInit(key, () => useFactory(...injected), declaredAt)
}

/**
 * The limits whose share (computed natively: stats().pressure) is past pressureAt.
 * @param {import('./index.js').Stats} stats
 */
function pressureOf (stats) {
  const at = stats.pressureAt ?? 0.8
  return Object.entries(stats.pressure ?? {})
    .filter(([, share]) => typeof share === 'number' && share >= at)
    .map(([name]) => /** @type {keyof NonNullable<import('./index.js').Stats['pressure']>} */ (name))
}

let indicatorClass = null

/**
 * The terminus health indicator class (needs @nestjs/terminus). `isHealthy(key)` is down
 * while the worker drains or exits, up otherwise, with the pressure it is under.
 */
function createHealthIndicator () {
  if (indicatorClass) return indicatorClass
  const terminus = requirePeer('@nestjs/terminus', 'SelfRecycleHealthIndicator')
  class SelfRecycleHealthIndicator {
    constructor (health, recycler) {
      this.health = health
      this.recycler = recycler
    }

    isHealthy (key = 'self-recycle') {
      const indicator = this.health.check(key)
      const stats = this.recycler.stats()
      const details = { state: stats.state, pressure: stats.sample ? pressureOf(stats) : [], inFlight: stats.inFlight }
      return stats.state === 'draining' || stats.state === 'exiting' ? indicator.down(details) : indicator.up(details)
    }
  }
  Injectable()(SelfRecycleHealthIndicator)
  Inject(terminus.HealthIndicatorService)(SelfRecycleHealthIndicator, undefined, 0)
  Inject(SELF_RECYCLE)(SelfRecycleHealthIndicator, undefined, 1)
  indicatorClass = SelfRecycleHealthIndicator
  return indicatorClass
}

module.exports = /** @satisfies {typeof import('./nest.js')} */ ({
  SELF_RECYCLE,
  SelfRecycleModule,
  SelfRecycleService,
  onceProvider,
  trackProvider,
  pressureOf,
  get SelfRecycleHealthIndicator () {
    return createHealthIndicator()
  }
})
