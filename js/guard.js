'use strict'
// once(): initialize a heavy singleton once per process (value per thread), share a
// pending async init, never cache failures, and report re-initialization attempts.

const binding = require('./native.js')
const { shouldLog, envLogMode, writeLine } = require('./log.js')
const { current, internalsOf } = require('./internal.js')

const path = require('node:path')

const MAX_KEY_BYTES = 1024
/** Frames of self-recycle itself, Node's internals and the frameworks around the app's code. */
const OWN_DIR = `${__dirname}${path.sep}`
const NOT_THE_APP = [OWN_DIR, 'node:internal', `${path.sep}node_modules${path.sep}@nestjs${path.sep}`, '(native)']

// Hits are counted in JS and flushed to the native registry in batches: the hot path
// (an initialized key) stays a Map lookup plus a WeakSet check, with no native call.
const HIT_FLUSH_EVERY = 1024
let values = null

/** Per-thread store kept by the native side, so module reloads find the same values. */
function store () {
  if (values === null) values = binding.guardStore(new Map())
  return values
}

function flushHits (key, entry) {
  if (entry.pendingHits > 0) {
    binding.guardHit(key, entry.pendingHits)
    entry.pendingHits = 0
  }
}

/** Sends this thread's pending hit counts to the process-wide registry. */
function flushAllHits () {
  if (values === null) return
  for (const [key, entry] of values) flushHits(key, entry)
}

function checkKey (name, key) {
  if (typeof key !== 'string' || key.length === 0) {
    throw new TypeError(`${name}(key, factory): key must be a non-empty string, got ${key === '' ? 'an empty string' : typeof key}`)
  }
  if (Buffer.byteLength(key) > MAX_KEY_BYTES) {
    throw new TypeError(`${name}(key, factory): key must be at most ${MAX_KEY_BYTES} bytes, got ${Buffer.byteLength(key)}`)
  }
}

function checkFactory (name, factory) {
  if (typeof factory !== 'function') {
    throw new TypeError(`${name}(key, factory): factory must be a function, got ${factory === null ? 'null' : typeof factory}`)
  }
}

function isThenable (value) {
  return value !== null && (typeof value === 'object' || typeof value === 'function') && typeof value.then === 'function'
}

/**
 * The caller's stack without self-recycle's frames; the call site is the first frame of
 * the application's own code (not Node's, not Nest's injector, not ours).
 */
function callerStack () {
  const holder = {}
  const limit = Error.stackTraceLimit
  Error.stackTraceLimit = 40
  Error.captureStackTrace(holder)
  Error.stackTraceLimit = limit
  const frames = String(holder.stack).split('\n').slice(1)
    .map((line) => line.trim())
    .filter((line) => !line.includes(OWN_DIR))
  const site = frames.find((line) => /:\d+:\d+\)?$/.test(line) && !NOT_THE_APP.some((part) => line.includes(part))) ?? frames[0]
  // The frame without V8's leading "at ": messages read "from loadConfig (file:1:2)".
  return { site: site ? site.replace(/^at /, '') : 'unknown', frames }
}

/** Emits through the recycler (its listeners and LOG mode), or logs when none exists. */
function emitReinit (key, count, cached, callSite, stack) {
  const heap = require('node:v8').getHeapStatistics()
  const event = binding.reinitEvent({ key, attempts: count.attempts, fromSite: count.fromSite, cached, callSite, stack, uptimeMs: process.uptime() * 1000, heapUsed: heap.used_heap_size, heapLimit: heap.heap_size_limit })
  const recycler = current()
  if (internalsOf(recycler) && recycler.config) {
    internalsOf(recycler).emitEvent(event)
    return
  }
  const mode = envLogMode()
  if (shouldLog(mode, 0)) writeLine(event, mode)
}

function measureStart () {
  return { started: performance.now(), heap: process.memoryUsage().heapUsed, rss: binding.residentBytes() }
}

/** What an init cost since `measureStart()`. */
function measureEnd (before) {
  return {
    durationMs: performance.now() - before.started,
    heapDelta: process.memoryUsage().heapUsed - before.heap,
    rssDelta: binding.residentBytes() - before.rss
  }
}

function reportReinit (key, caller, cached) {
  const count = binding.guardReinit({ key, callSite: caller.site })
  if (count.report) emitReinit(key, count, cached, caller.site, caller.frames.join('\n'))
}

/**
 * Runs `factory` at most once per process per key (each worker thread gets its own value)
 * and returns its value to every caller. A pending async init is shared; a factory that
 * throws or rejects is not cached. A call with another factory for an initialized key is
 * a re-initialization attempt: the cached value is returned and `reinit` is reported.
 */
function once (key, factory, options) {
  // Hot path first: only validated keys are ever stored, so a hit proves the key valid.
  const values = store()
  const entry = typeof factory === 'function' ? values.get(key) : undefined
  if (entry !== undefined) {
    if (++entry.pendingHits >= HIT_FLUSH_EVERY) flushHits(key, entry)
    if (entry.lastFactory !== factory) {
      if (!entry.factories.has(factory)) {
        entry.factories.add(factory)
        reportReinit(key, callerStack(), true)
      }
      entry.lastFactory = factory
    }
    return entry.value
  }
  checkKey('once', key)
  checkFactory('once', factory)
  if (options !== undefined && (options === null || typeof options !== 'object')) {
    throw new TypeError(`once(key, factory, options): options must be an object, got ${options === null ? 'null' : typeof options}`)
  }
  const scope = options?.scope ?? 'thread'
  if (scope !== 'thread' && scope !== 'process') {
    throw new TypeError(`once(key, factory, options): scope must be 'thread' or 'process', got ${String(scope)}`)
  }
  if (!binding.guardBegin(key, scope)) {
    throw Object.assign(new Error(`once('${key}'): this key has scope 'process' and another thread already initialized it; JS values cannot cross threads`), { code: 'ERR_SELF_RECYCLE_GUARD_SCOPE' })
  }
  const before = measureStart()
  let value
  try {
    value = factory()
  } catch (error) {
    binding.guardEnd({ key, succeeded: false, cost: measureEnd(before) })
    throw error
  }
  if (!isThenable(value)) {
    binding.guardEnd({ key, succeeded: true, cost: measureEnd(before) })
    values.set(key, { value, factories: new WeakSet([factory]), lastFactory: factory, pendingHits: 0 })
    return value
  }
  const pending = Promise.resolve(value).then((resolved) => {
    binding.guardEnd({ key, succeeded: true, cost: measureEnd(before) })
    return resolved
  }, (error) => {
    binding.guardEnd({ key, succeeded: false, cost: measureEnd(before) })
    const current = values.get(key)
    if (current?.value === pending) {
      flushHits(key, current)
      values.delete(key)
    }
    throw error
  })
  values.set(key, { value: pending, factories: new WeakSet([factory]), lastFactory: factory, pendingHits: 0 })
  return pending
}

/**
 * Runs `factory` every time (no caching) but counts each run for `key`: from the second
 * one on, `reinit` is reported with the caller's stack. For code you cannot guard yet.
 */
function trackInit (key, factory, caller = callerStack()) {
  checkKey('trackInit', key)
  checkFactory('trackInit', factory)
  const before = measureStart()
  const stack = caller
  const finish = () => {
    const inits = binding.guardTrackInit(key, measureEnd(before))
    if (inits > 1) reportReinit(key, stack, false)
  }
  const value = factory()
  if (isThenable(value)) return Promise.resolve(value).then((resolved) => { finish(); return resolved })
  finish()
  return value
}

/** Per key: inits, hits, reinit attempts, failures, init ms, heap and RSS delta, threads. */
function guardStats () {
  flushAllHits()
  return binding.guardStats()
}

module.exports = { once, trackInit, guardStats, flushAllHits, callerStack }
