// Hand-written types for self-recycle. Sizes accept '768MiB', '1.5GB', '90%' or a number
// of bytes; durations accept '250ms', '30s', '10m', '6h' or a number of milliseconds.

import { EventEmitter } from 'node:events'

/** A size (`'768MiB'`, `'1.5GB'`, bytes as a number) or a percentage (`'80%'`). */
export type SizeOrPercent = string | number
/** A duration (`'30s'`, `'10m'`, milliseconds as a number). */
export type Duration = string | number
/** `true`/`false`, or `'on'`/`'off'`. */
export type Switch = boolean | 'on' | 'off'

/**
 * Options override the `SELF_RECYCLE_*` environment variable of the same name.
 * @example
 * const recycle = require('self-recycle')
 * const r = recycle.start({ maxRss: '768MiB', drainTimeout: '20s' })
 * r.onDrain(async ({ signal }) => { await worker.close() })
 */
export interface Options {
  /** RSS limit: a size, or a % of the cgroup limit (else physical RAM); `'off'` disables. @default '90%' when a cgroup limit exists, else off */
  maxRss?: SizeOrPercent | 'off'
  /** What the RSS limits measure: `rss`, or `anon` (RssAnon: ignores file-backed pages). @default 'rss' */
  rssMetric?: 'rss' | 'anon'
  /** V8 used-heap limit: a size, or a % of `heap_size_limit`. @default '85%' */
  maxHeap?: SizeOrPercent | 'off'
  /** Growth over the RSS baseline taken after warm-up: `'+300MiB'` or `'2x'`. @default off */
  maxGrowth?: string
  /** Recycle when the post-GC heap grows faster than this over `leakWindow` (`'10MiB/min'`). @default off */
  leakSlope?: string
  /** Window for `leakSlope`. @default '10m' */
  leakWindow?: Duration
  /** Grant V8 headroom and recycle at once instead of a heap OOM abort. @default true */
  nearHeapLimit?: Switch
  /** Recycle after this many `jobDone()`. @default off */
  maxJobs?: number | 'off'
  /** Recycle after this process uptime. @default off */
  maxAge?: Duration | 'off'
  /** Random spread (downwards) of `maxJobs` and `maxAge` per process, 0% to 50%. @default '10%' */
  jitter?: string
  /** Sampling period, at least 10 ms. @default '1s' */
  interval?: Duration
  /** Consecutive samples over a limit before recycling. @default 3 */
  strikes?: number
  /** No growth/leak decisions before this uptime; the baseline is taken at its end. @default '30s' */
  warmup?: Duration
  /** No automatic recycle before this uptime. @default '30s' */
  minUptime?: Duration
  /** Drain hooks and tracked work get this long; then the native thread exits regardless. @default '30s' */
  drainTimeout?: Duration
  /** Exit code after a recycle (75 = EX_TEMPFAIL, restarted by every process manager). @default 75 */
  exitCode?: number
  /** Recycle when the event loop is unresponsive this long. @default off */
  stallTimeout?: Duration | 'off'
  /** Sibling workers sharing this directory recycle one at a time. @default off */
  staggerDir?: string
  /** Minimum gap between sibling recycles. @default '30s' */
  staggerGap?: Duration
  /** Write a JSON recycle report here before exiting. @default off */
  reportDir?: string
  /** Write a heap snapshot into `reportDir` on recycle, when memory allows. @default false */
  heapSnapshot?: Switch
  /** `json` lines on stderr, `pretty`, `off`, or `auto` (json unless the app listens). @default 'auto' */
  log?: 'auto' | 'json' | 'pretty' | 'off'
  /** Decide and emit, never drain or exit. @default false */
  dryRun?: Switch
  /** `start()` returns an inert recycler. @default false */
  disable?: Switch
  /** SIGTERM/SIGINT go through the drain path (reason `signal`). @default false */
  signals?: Switch
}

export type RecycleReason =
  | 'rss' | 'heap' | 'growth' | 'leak' | 'near-heap-limit' | 'jobs' | 'age' | 'stall' | 'manual' | 'signal'

/** Fields every event carries. */
export interface BaseEvent {
  event: string
  schema: 1
  /** ISO-8601 */
  time: string
  pid: number
  uptimeMs: number
  rss: number
  heapUsed: number
  heapLimit: number
  /** One human sentence, ready for a logger. */
  msg: string
}

export interface StartEvent extends BaseEvent {
  event: 'start'
  config: Record<string, unknown>
  probes: { rss: 'statm' | 'none'; v8: 'native' | 'js'; v8Fallback: string | null; gcEpilogue: boolean }
  memoryLimit: { bytes: number; source: 'cgroup2' | 'cgroup1' | 'physical' } | null
  warnings: string[]
}
export interface SampleEvent extends BaseEvent {
  event: 'sample'
  rssAnon: number
  heapTotal: number
  external: number
  jobsDone: number
}
export interface LimitEvent extends BaseEvent {
  reason: RecycleReason
  value: number
  limit: number
}
export interface PressureEvent extends LimitEvent { event: 'pressure' }
export interface MisconfiguredEvent extends LimitEvent { event: 'misconfigured' }
export interface LeakEvent extends BaseEvent { event: 'leak'; slopeBytesPerMin: number; windowMs: number }
export interface RecycleEvent extends LimitEvent {
  event: 'recycle'
  strikes: number
  dryRun: boolean
  drainTimeoutMs: number
  detail?: string
}
export interface DrainEvent extends BaseEvent {
  event: 'drain'
  phase: 'start' | 'end'
  reason: RecycleReason
  inFlight: number
  durationMs: number
  drained?: boolean
  errors?: string[]
}
export interface ExitEvent extends BaseEvent {
  event: 'exit'
  code: number
  drained: boolean
  durationMs: number
  reason: RecycleReason
  /** true when the native thread ended the process (JS did not finish in time). */
  forced: boolean
}
export interface ReinitEvent extends BaseEvent { event: 'reinit'; key: string; attempts: number; callSite: string; stack: string }

export interface EventMap {
  start: StartEvent
  sample: SampleEvent
  pressure: PressureEvent
  leak: LeakEvent
  misconfigured: MisconfiguredEvent
  recycle: RecycleEvent
  drain: DrainEvent
  exit: ExitEvent
  reinit: ReinitEvent
}
export type AnyEvent = EventMap[keyof EventMap]

export interface DrainContext {
  reason: RecycleReason
  /** Aborted when the drain deadline passes. */
  signal: AbortSignal
  /** Epoch milliseconds by which the drain must be done. */
  deadline: number
}

export interface Stats {
  state: 'running' | 'draining' | 'exiting' | 'stopped' | 'disabled'
  inFlight: number
  [key: string]: unknown
}

export declare class Recycler extends EventEmitter {
  /** The effective configuration, or null before `start()`. */
  readonly config: Record<string, unknown> | null
  readonly running: boolean
  on<K extends keyof EventMap>(event: K, listener: (event: EventMap[K]) => void): this
  on(event: 'event', listener: (event: AnyEvent) => void): this
  once<K extends keyof EventMap>(event: K, listener: (event: EventMap[K]) => void): this
  off<K extends keyof EventMap>(event: K, listener: (event: EventMap[K]) => void): this
  /** Registers a drain hook; returns a function that unregisters it. */
  onDrain(hook: (context: DrainContext) => unknown | Promise<unknown>): () => void
  /** Counts in-flight work; the drain waits for it. Returns the same promise. */
  track<T>(promise: PromiseLike<T>): PromiseLike<T>
  /** Counts finished jobs for `maxJobs`; returns the total. */
  jobDone(count?: number): number
  /** Manual trigger, same path as an automatic one; `false` if one is under way. */
  recycle(reason?: string): boolean
  stats(): Stats
  /** Stops sampling (no exit); `false` while a recycle is under way. */
  stop(): boolean
}

export declare class SelfRecycleConfigError extends Error {
  readonly code: 'ERR_SELF_RECYCLE_CONFIG'
  /** `SELF_RECYCLE_MAX_RSS` or `option maxRss` */
  readonly variable: string
  readonly value: string
  readonly accepts: string
}

export interface OnceOptions {
  /** `'process'` refuses a second worker thread's initialization. @default 'thread' */
  scope?: 'thread' | 'process'
}

export interface GuardKeyStats {
  key: string
  inits: number
  /** Flushed in batches of 1,024 and on every guardStats() call. */
  hits: number
  reinitAttempts: number
  failures: number
  initMs: number
  heapDelta: number
  rssDelta: number
  threads: number
  scope: 'thread' | 'process'
}

export declare const EVENTS: Readonly<{
  START: 'start'
  SAMPLE: 'sample'
  PRESSURE: 'pressure'
  LEAK: 'leak'
  MISCONFIGURED: 'misconfigured'
  RECYCLE: 'recycle'
  DRAIN: 'drain'
  EXIT: 'exit'
  REINIT: 'reinit'
}>

/** Starts the recycler (idempotent per process); options override env vars. */
export declare function start(options?: Options): Recycler

/**
 * Runs `factory` at most once per process (per thread for the value) and returns its value
 * to every caller; an async factory's pending promise is shared; failures are not cached.
 */
export declare function once<T>(key: string, factory: () => T, options?: OnceOptions): T
/**
 * Runs `factory` every time (no caching) but counts its runs for `key`; from the second run
 * on a `reinit` event points at the caller. For code you cannot guard yet.
 */
export declare function trackInit<T>(key: string, factory: () => T): T
/** Per key: inits, hits, reinit attempts, init time, heap/RSS delta. */
export declare function guardStats(): GuardKeyStats[]

declare const recycle: {
  start: typeof start
  once: typeof once
  trackInit: typeof trackInit
  guardStats: typeof guardStats
  EVENTS: typeof EVENTS
  SelfRecycleConfigError: typeof SelfRecycleConfigError
  Recycler: typeof Recycler
}
export default recycle
