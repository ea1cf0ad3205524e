'use strict'
// PROFILE=heap: which code keeps allocating memory that stays alive. V8's sampling heap
// profiler (started natively by the recycler) is read at the baseline and again, after one
// full GC, at a `leak` or `recycle`; live sampled bytes are grouped by allocation site and
// diffed, and only growth beyond sampling noise is named. Where the native path is
// unavailable, node:inspector runs the same profiler (each profile then costs a full GC:
// V8's inspector forces one).

const path = require('node:path')

const binding = require('./native.js')
const { originalPosition } = require('./sourcemap.js')

// self-recycle's own frames (its event logging) are charged to their caller, like Node's.
const OWN_FILES = __dirname + path.sep
const OWN_URLS = require('node:url').pathToFileURL(__dirname).href + '/'

/** How many sites an event names; the report keeps more. */
const EVENT_SITES = 5
const REPORT_SITES = 50

/**
 * Growth a site must show to be named. Bytes over the interval are samples, and samples
 * are Poisson counts: a site's growth is the samples it gained since the baseline less
 * those it lost, and either count of n varies by about sqrt(n). Growth counts only beyond
 * NOISE_SIGMAS standard deviations of that (a steady site whose objects come and go gains
 * and loses alike; a leak only gains) and at least MIN_GROWTH_SAMPLES samples: a handful
 * of samples is noise.
 */
const NOISE_SIGMAS = 4
const MIN_GROWTH_SAMPLES = 4

/** A baseline younger than this says nothing about growth yet (a recycle at the end of warm-up). */
const BASELINE_MIN_AGE_MS = 2000

/**
 * The code frame a sample is charged to: the deepest frame of the application (not
 * node_modules) on its stack; else the deepest frame with a script (a library's own
 * work); else V8 itself. Builtins (`Array.prototype.push`: no url) and Node internals
 * (`node:` urls) are charged to their caller.
 */
function isCode (frame) {
  const url = frame.url
  return typeof url === 'string' && url !== '' && !url.startsWith('node:') && !url.startsWith('internal/') &&
    !url.startsWith(OWN_FILES) && !url.startsWith(OWN_URLS)
}

function isApplication (frame) {
  return isCode(frame) && !/[\\/]node_modules[\\/]/.test(frame.url)
}

function fileOf (url, cwd) {
  let file = url.startsWith('file://') ? decodeURIComponent(url.slice('file://'.length)) : url
  if (cwd && path.isAbsolute(file)) {
    const relative = path.relative(cwd, file)
    if (!relative.startsWith('..') && !path.isAbsolute(relative)) file = relative
  }
  return file
}

function siteKey (frame) {
  return `${frame.functionName}\0${frame.url}\0${frame.lineNumber}\0${frame.columnNumber}`
}

/**
 * Live sampled bytes per allocation site of a DevTools `SamplingHeapProfile`:
 * Map<key, { functionName, url, line, column, bytes, fresh }> (1-based line and column).
 * `fresh`: the bytes of samples newer than ordinal `after` (the baseline's newest): what
 * was allocated since and is still there; null without a samples list.
 *
 * Without a forced GC a profile also holds objects that died but were not collected yet,
 * mostly in the young generation. `recentSamples`: that many of the newest samples
 * (as many as the young generation holds now) are left out, so freed noise
 * does not rank; a leak is older than that by the time it matters.
 */
function sitesOf (profile, { recentSamples = 0, after = 0 } = {}) {
  const sites = new Map()
  const siteOfNode = new Map()
  const siteFor = (frame) => {
    const key = frame ? siteKey(frame) : '(V8)'
    let site = sites.get(key)
    if (!site) {
      site = frame
        ? { functionName: frame.functionName || '(anonymous)', url: frame.url, line: frame.lineNumber + 1, column: frame.columnNumber + 1, bytes: 0, fresh: null }
        : { functionName: '(V8 internals)', url: '', line: 0, column: 0, bytes: 0, fresh: null }
      sites.set(key, site)
    }
    return site
  }
  // Iterative: a profile is up to the stack depth deep, but never trust recursion depth.
  const stack = [{ node: profile.head, app: null, code: null }]
  let entry
  while ((entry = stack.pop()) !== undefined) {
    const { node, app: callerApp, code: callerCode } = entry
    const frame = node.callFrame
    const app = isApplication(frame) ? frame : callerApp
    const code = isCode(frame) ? frame : callerCode
    if (node.selfSize > 0) siteOfNode.set(node.id, siteFor(app ?? code))
    for (const child of node.children ?? []) stack.push({ node: child, app, code })
  }
  const samples = Array.isArray(profile.samples) ? profile.samples : []
  if (samples.length === 0) {
    // No samples list (an older profile): the tree's own sizes.
    const walk = [profile.head]
    while (walk.length > 0) {
      const node = walk.pop()
      if (node.selfSize > 0) siteOfNode.get(node.id).bytes += node.selfSize
      walk.push(...(node.children ?? []))
    }
    return sites
  }
  let newest = -Infinity
  for (const sample of samples) newest = Math.max(newest, sample.ordinal)
  const cutoff = newest - recentSamples
  for (const sample of samples) {
    if (sample.ordinal > cutoff) continue
    const site = siteOfNode.get(sample.nodeId)
    if (!site) continue
    site.bytes += sample.size
    site.fresh = (site.fresh ?? 0) + (sample.ordinal > after ? sample.size : 0)
  }
  return sites
}

/** The ordinal of a profile's newest sample (0: none). */
function newestOrdinal (profile) {
  let newest = 0
  for (const sample of profile.samples ?? []) newest = Math.max(newest, sample.ordinal)
  return newest
}

/** The bytes a profile's tree holds (what a DevTools view of the file adds up to). */
function treeTotal (profile) {
  let total = 0
  const walk = [profile.head]
  while (walk.length > 0) {
    const node = walk.pop()
    total += node.selfSize
    walk.push(...(node.children ?? []))
  }
  return total
}

/** Bytes charged to sites. */
function totalOf (sites) {
  let total = 0
  for (const site of sites.values()) total += site.bytes
  return total
}

/**
 * Sites ranked by growth since `baseline` (a sitesOf map, or null: since the profiler
 * started). `share`: this site's part of all growth, 0-1. `interval`: the profiler's
 * sampling interval; a site's bytes over it are its samples (see NOISE_SIGMAS). Sites that
 * did not grow beyond noise are left out, and out of the shares. `map(url, line, column)`:
 * the original position of a compiled one, or null (js/sourcemap.js).
 */
function grownSites (now, baseline, { limit = EVENT_SITES, cwd = process.cwd(), interval = 1, map = originalPosition } = {}) {
  // The heap as a whole must have grown too: a steady site whose new objects are charged
  // to another function after the baseline (V8 inlined it into its caller) loses what the
  // other gains, and that is not growth.
  if (!heapGrew(now, baseline, interval)) return []
  const rows = []
  let grown = 0
  for (const [key, site] of now) {
    const before = baseline?.get(key)?.bytes ?? 0
    const growth = site.bytes - before
    // Gained: samples newer than the baseline; lost: baseline bytes no longer there. Without
    // ordinals (a tree-only profile), both whole profiles.
    const noise = site.fresh === null || site.fresh === undefined
      ? site.bytes + before
      : site.fresh + Math.max(0, before - (site.bytes - site.fresh))
    if (!beyondNoise(growth, noise, interval)) continue
    grown += growth
    rows.push({ site, growth })
  }
  rows.sort((a, b) => b.growth - a.growth)
  return rows.slice(0, limit).map(({ site, growth }) => {
    // With source maps on, the original file and line (src/jobs.ts, not dist/jobs.js).
    const original = site.url ? map(site.url, site.line, site.column) : null
    const where = original ?? site
    const file = where.url ? fileOf(where.url, cwd) : ''
    return {
      site: file ? `${site.functionName} (${file}:${where.line}:${where.column})` : site.functionName,
      functionName: site.functionName,
      file,
      line: where.line,
      column: where.column,
      ...(original ? { generated: { file: fileOf(site.url, cwd), line: site.line, column: site.column } } : {}),
      bytes: site.bytes,
      growth,
      share: grown > 0 ? Math.round((growth / grown) * 1000) / 1000 : 0
    }
  })
}

/** Whether all sites together grew beyond noise (the same test as one site's). */
function heapGrew (now, baseline, interval) {
  let after = 0
  let fresh = 0
  let ordinals = true
  for (const site of now.values()) {
    after += site.bytes
    if (site.fresh === null || site.fresh === undefined) ordinals = false
    else fresh += site.fresh
  }
  let before = 0
  for (const site of baseline?.values() ?? []) before += site.bytes
  const noise = ordinals ? fresh + Math.max(0, before - (after - fresh)) : after + before
  return beyondNoise(after - before, noise, interval)
}

/**
 * Whether `growth` bytes are growth when `noise` bytes of samples were gained or lost on
 * the way, in samples (bytes over the interval; a large object, sampled almost surely,
 * counts as its size): at least MIN_GROWTH_SAMPLES and over NOISE_SIGMAS sqrt(noise).
 */
function beyondNoise (growth, noise, interval) {
  const more = growth / interval
  return more >= MIN_GROWTH_SAMPLES && more > NOISE_SIGMAS * Math.sqrt(Math.max(0, noise) / interval)
}

/**
 * V8's gc(), without --expose-gc: the flag is set just long enough for a new context to
 * get the function, then cleared (the app's own contexts do not get it). Null if V8 refuses.
 */
let gcFunction
function gcFunctionOf () {
  if (gcFunction !== undefined) return gcFunction
  gcFunction = null
  if (typeof globalThis.gc === 'function') {
    gcFunction = globalThis.gc
    return gcFunction
  }
  try {
    const v8 = require('node:v8')
    v8.setFlagsFromString('--expose-gc')
    try {
      const gc = require('node:vm').runInNewContext('typeof gc === "function" ? gc : null')
      if (typeof gc === 'function') gcFunction = gc
    } finally {
      v8.setFlagsFromString('--no-expose-gc')
    }
  } catch {}
  return gcFunction
}

/** One full GC: `{ ms }`, or `{ error }` (the profile is then read with its garbage). */
function collectGarbage () {
  try {
    const gc = gcFunctionOf()
    if (!gc) return { error: 'V8 would not expose gc()' }
    const started = process.hrtime.bigint()
    gc()
    return { ms: Math.round(Number(process.hrtime.bigint() - started) / 1e4) / 100 }
  } catch (error) {
    return { error: error?.message ?? String(error) }
  }
}

/** The inspector fallback: the same profiler through node:inspector (a full GC per profile). */
class InspectorProfiler {
  constructor (interval) {
    const inspector = require('node:inspector')
    this.session = new inspector.Session()
    this.session.connect()
    this.error = null
    // An in-process session answers synchronously.
    this.session.post('HeapProfiler.startSampling', { samplingInterval: interval, stackDepth: 128 /* as deep as the native profiler's */ }, (error) => { this.error = error })
    if (this.error) throw this.error
  }

  take () {
    let result = null
    let failure = null
    this.session.post('HeapProfiler.getSamplingProfile', (error, answer) => {
      failure = error
      result = answer?.profile ?? null
    })
    if (failure) return null // stopped by another client
    return result
  }

  stop () {
    try { this.session.post('HeapProfiler.stopSampling') } catch {}
    try { this.session.disconnect() } catch {}
  }
}

/**
 * The profiler of one recycler. `status` starts as the native side left it (`native`,
 * `off...`, `busy...`, or `unavailable: why`, which starts the inspector fallback).
 */
class SiteProfiler {
  constructor (status, interval) {
    this.status = status
    this.interval = interval
    this.fallback = null
    this.baseline = null
    this.baselineAtMs = 0
    this.baselineOrdinal = 0
    if (status.startsWith('unavailable: ')) {
      try {
        this.fallback = new InspectorProfiler(interval)
        this.status = `inspector (${status.slice('unavailable: '.length)}): each profile runs a full GC`
      } catch (error) {
        this.status = `off: neither the native profiler (${status.slice('unavailable: '.length)}) nor the inspector (${error?.message ?? error}) could start`
      }
    }
  }

  /**
   * How many of the newest samples may be young objects (dead ones included, until the next
   * scavenge): the young generation's bytes in use, in profiler intervals.
   */
  recentSamples () {
    let young = 0
    for (const space of require('node:v8').getHeapSpaceStatistics()) {
      if (space.space_name === 'new_space' || space.space_name === 'new_large_object_space') young += space.space_used_size
    }
    return Math.ceil(young / this.interval)
  }

  get active () {
    return this.status === 'native' || this.fallback !== null
  }

  /** The current DevTools profile, or null (not profiling, or the profiler was stopped). */
  take () {
    if (this.status === 'native') return binding.heapProfileTake()
    return this.fallback ? this.fallback.take() : null
  }

  /**
   * The baseline: what is live at the end of warm-up is not growth. Read without a forced
   * GC: one would add a post-GC point to the leak detector's series at the baseline. Garbage
   * in it only makes growth look smaller (it counts as objects lost since). A profile that
   * cannot be read leaves no baseline (sites then count from the start) and never throws.
   * `atMs`: the uptime of the baseline sample.
   */
  takeBaseline (atMs = process.uptime() * 1000) {
    try {
      const profile = this.take()
      if (profile) {
        this.baseline = sitesOf(profile)
        this.baselineAtMs = atMs
        this.baselineOrdinal = newestOrdinal(profile)
      }
    } catch (error) {
      this.baseline = null
      this.baselineError = error?.message ?? String(error)
    }
  }

  /**
   * The sites that grew, for an event: `{ profile, sites, since, ... }` or `{ skipped }`.
   * `profile` is the raw DevTools profile (for the .heapprofile file). `atMs`: the uptime
   * the event was decided at; `collect`: run a full GC first, so objects that died but
   * were not collected yet do not count as growth (false where V8 has just collected:
   * near the heap limit).
   */
  grown ({ limit = REPORT_SITES, atMs = process.uptime() * 1000, collect = true } = {}) {
    if (!this.active) return { skipped: this.status }
    let gc = null
    if (collect && !this.fallback) gc = collectGarbage()
    let profile
    try {
      profile = this.take()
    } catch (error) {
      return { skipped: `the profile could not be read: ${error?.message ?? error}` }
    }
    if (!profile) return { skipped: 'the sampling heap profiler was stopped by another inspector client' }
    try {
      // Decided at (or right after) the end of warm-up, a recycle had no time to grow
      // since the baseline: what grew since the process started is the answer.
      const since = this.baseline && atMs - this.baselineAtMs >= BASELINE_MIN_AGE_MS ? 'baseline' : 'start'
      const now = sitesOf(profile, { recentSamples: this.recentSamples(), after: since === 'baseline' ? this.baselineOrdinal : 0 })
      const sites = grownSites(now, since === 'baseline' ? this.baseline : null, { limit, interval: this.interval })
      return { profile, sites, counted: totalOf(now), total: treeTotal(profile), since, gc: this.fallback ? 'inspector' : gc }
    } catch (error) {
      return { skipped: `the profile could not be read: ${error?.message ?? error}` }
    }
  }

  stop () {
    this.fallback?.stop()
    this.fallback = null
  }
}

module.exports = { SiteProfiler, sitesOf, grownSites, beyondNoise, EVENT_SITES, REPORT_SITES }
