'use strict'
// self-recycle/nest: a NestJS module that starts the recycler, drains by closing the Nest
// application (so OnModuleDestroy / OnApplicationShutdown run and @nestjs/bullmq workers
// finish their active jobs), logs events through Nest's Logger, and a terminus health
// indicator. @nestjs/common (and @nestjs/terminus for the indicator) are optional peers.

const recycle = require('./index.js')

let common
try {
  common = require('@nestjs/common')
} catch (error) {
  throw new Error(`self-recycle/nest needs @nestjs/common (npm install @nestjs/common @nestjs/core): ${error.message}`)
}
const { Module, Injectable, Inject, Logger } = common

/** Injection token of the running recycler (the object `start()` returns). */
const SELF_RECYCLE = 'SELF_RECYCLE'
const SELF_RECYCLE_OPTIONS = 'SELF_RECYCLE_OPTIONS'

const WARN_EVENTS = new Set(['recycle', 'pressure', 'misconfigured', 'leak', 'reinit'])

class SelfRecycleService {
  constructor (recycler) {
    this.recycler = recycler
    this.logger = new Logger('SelfRecycle')
    this.app = null
    this.unregister = null
    this.onEvent = (event) => {
      const line = `${event.event}: ${event.msg}`
      if (WARN_EVENTS.has(event.event)) this.logger.warn(line)
      else this.logger.log(line)
    }
  }

  onModuleInit () {
    this.recycler.on('event', this.onEvent)
    this.unregister = this.recycler.onDrain(async ({ reason }) => {
      if (!this.app) {
        this.logger.warn(`draining (${reason}) without closing Nest: call SelfRecycleModule.closeOnDrain(app) after creating the app`)
        return
      }
      this.logger.log(`draining (${reason}): closing the Nest application`)
      await this.app.close()
    })
  }

  /** The drain closes this application (`INestApplication` or `INestApplicationContext`). */
  closeOnDrain (app) {
    this.app = app
    return app
  }

  onApplicationShutdown () {
    this.recycler.removeListener('event', this.onEvent)
    this.unregister?.()
    this.unregister = null
  }
}
Injectable()(SelfRecycleService)
Inject(SELF_RECYCLE)(SelfRecycleService, undefined, 0)

class SelfRecycleModule {
  /**
   * Starts the recycler (options override SELF_RECYCLE_* env vars) and provides it as
   * `SELF_RECYCLE`, plus `SelfRecycleService`. Global: import it once, in the root module.
   */
  static forRoot (options = {}) {
    return {
      module: SelfRecycleModule,
      global: true,
      providers: [
        { provide: SELF_RECYCLE_OPTIONS, useValue: options },
        { provide: SELF_RECYCLE, useFactory: (opts) => recycle.start(opts), inject: [SELF_RECYCLE_OPTIONS] },
        SelfRecycleService
      ],
      exports: [SELF_RECYCLE, SelfRecycleService]
    }
  }

  /** One line in the bootstrap: the drain will close `app`. Returns `app`. */
  static closeOnDrain (app) {
    return app.get(SelfRecycleService).closeOnDrain(app)
  }
}
Module({})(SelfRecycleModule)

/**
 * A provider `useFactory` that builds its value once per process (per thread), however
 * many times Nest creates the context or a REQUEST/TRANSIENT scope asks for it.
 * @example { provide: 'DB', useFactory: onceProvider('db', (config) => new Pool(config)), inject: [Config] }
 */
function onceProvider (key, useFactory) {
  if (typeof useFactory !== 'function') throw new TypeError(`onceProvider(key, useFactory): useFactory must be a function, got ${typeof useFactory}`)
  let args = []
  // One stable factory: the guard sees the same initializer on every call (hits, not reinit).
  const factory = () => useFactory(...args)
  return (...injected) => {
    args = injected
    return recycle.once(key, factory)
  }
}

/**
 * A provider `useFactory` left unguarded but watched: it runs every time, and from the
 * second run on a `reinit` event points at it. For providers you cannot guard yet.
 */
function trackProvider (key, useFactory) {
  if (typeof useFactory !== 'function') throw new TypeError(`trackProvider(key, useFactory): useFactory must be a function, got ${typeof useFactory}`)
  return (...injected) => recycle.trackInit(key, () => useFactory(...injected))
}

/** Fraction of a limit over which the indicator reports pressure. */
const PRESSURE = 0.8

function pressureOf (stats) {
  const sample = stats.sample ?? {}
  const limits = stats.limits ?? {}
  const rss = limits.rssMetric === 'anon' ? sample.rssAnon : sample.rss
  const pressure = []
  if (limits.rss && rss >= limits.rss * PRESSURE) pressure.push('rss')
  if (limits.heap && sample.heapUsed >= limits.heap * PRESSURE) pressure.push('heap')
  if (limits.growth && rss >= limits.growth * PRESSURE) pressure.push('growth')
  return pressure
}

let indicatorClass = null

/**
 * The terminus health indicator class (needs @nestjs/terminus). `isHealthy(key)` is down
 * while the worker drains or exits, up otherwise, with the pressure it is under.
 */
function createHealthIndicator () {
  if (indicatorClass) return indicatorClass
  let terminus
  try {
    terminus = require('@nestjs/terminus')
  } catch (error) {
    throw new Error(`SelfRecycleHealthIndicator needs @nestjs/terminus: ${error.message}`)
  }
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

module.exports = {
  SELF_RECYCLE,
  SelfRecycleModule,
  SelfRecycleService,
  onceProvider,
  trackProvider,
  pressureOf,
  get SelfRecycleHealthIndicator () {
    return createHealthIndicator()
  }
}
