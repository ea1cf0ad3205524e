// Hand-written types for self-recycle. Sizes accept '768MiB', '1.5GB', '90%' or a number
// of bytes; durations accept '250ms', '30s', '10m', '6h' or a number of milliseconds.

import { EventEmitter } from 'node:events'

/** A size (`'768MiB'`, `'1.5GB'`, bytes as a number) or a percentage (`'80%'`). */
export type SizeOrPercent = string | number
/** A duration (`'30s'`, `'10m'`, milliseconds as a number). */
export type Duration = string | number
/** `true`/`false`, or `'on'`/`'off'`. */
export type Switch = boolean | 'on' | 'off'

/** The structural part of an ioredis client this package uses (the app's own client). */
export interface RedisClientLike {
  status: string
  evalsha(...args: unknown[]): Promise<unknown>
  eval(...args: unknown[]): Promise<unknown>
}

/** The `fleet` option; each field overrides the SELF_RECYCLE_FLEET_* variable of its name. */
export interface FleetOptions {
  /**
   * The app's ioredis client (one not busy with blocking commands: BullMQ's Queue client
   * is fine), a `redis://` URL, ioredis options, or a function or promise of a client.
   * @default SELF_RECYCLE_FLEET_REDIS
   */
  redis?: RedisClientLike | string | Record<string, unknown> | (() => RedisClientLike | Promise<RedisClientLike>) | Promise<RedisClientLike>
  /** Workers with the same name (and Redis) coordinate. @default 'default' */
  name?: string
  /** How many workers of the fleet may drain at once. @default 1 */
  maxConcurrent?: number
  /** No lease is granted for this long after a release, nor sooner after another grant. @default '5s' */
  gap?: Duration
  /** A lease not renewed for this long is free again (a dead holder). @default '15s' */
  leaseTtl?: Duration
  /** A Redis call slower than this counts as Redis unavailable (the recycle goes ahead). @default '1s' */
  timeout?: Duration
  /** How often the worker writes its heartbeat (the fleet status). @default '5s' */
  heartbeat?: Duration
  /** More than N recycles fleet-wide within the window emits `storm`: `'20/10m'`. @default '20/10m' */
  storm?: string | { recycles: number; window: Duration } | 'off'
  /** The fleet gap while a storm lasts. @default off (the gap stays) */
  stormGap?: Duration | 'off'
  /** The host name in the fleet's status and history. @default os.hostname() */
  host?: string
}

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
  /** V8 used-heap limit: a size, or a % of the old-space limit (`--max-old-space-size`). @default '85%' */
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
  /** Sampling period far from every limit, at least 10 ms. @default '1s' */
  interval?: Duration
  /** Sampling period near a limit (past 80%, or trending to it); `'off'`: always `interval`. @default '25ms' */
  fastInterval?: Duration | 'off'
  /** Start the drain early when tracked work would carry the value over the limit. @default true */
  predict?: Switch
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
  /**
   * How a recycled worker comes back: `exit` with `exitCode` (the process manager restarts
   * it), or `exec`: it re-executes itself in place (same PID, fresh memory), so a container
   * orchestrator sees no restart. Linux; not with an IPC channel to a parent (cluster, PM2).
   * @default 'exit'
   */
  restart?: 'exit' | 'exec'
  /**
   * The memory cgroup as one budget: when its working set (usage minus inactive file cache)
   * reaches this size or share of its limit, the largest self-recycle worker in it recycles
   * (`reason: 'container'`). @default '90%' when the cgroup has a limit and more than one process
   */
  containerMax?: SizeOrPercent | 'off'
  /** Recycle when the event loop is unresponsive this long. @default off */
  stallTimeout?: Duration | 'off'
  /** Sibling workers sharing this directory recycle one at a time. @default off */
  staggerDir?: string
  /** Minimum gap between sibling recycles. @default '30s' */
  staggerGap?: Duration
  /** The longest a recycle waits for its turn among siblings; then it goes ahead. @default '10m' */
  staggerMaxWait?: Duration
  /**
   * Coordinate recycles with the other workers of a fleet (any number of hosts) through
   * Redis; `false`: no fleet even if SELF_RECYCLE_FLEET_REDIS is set. @default off
   */
  fleet?: FleetOptions | false
  /**
   * Keep a JSON status here (for `self-recycle status|check|preflight`), rewritten every 2 s.
   * `{pid}` becomes the process id, `{instance}` the process manager's instance number
   * (NODE_APP_INSTANCE, else pm_id): one file per instance from one setting. A failed write
   * is a `warning` event, once. @default off
   */
  statusFile?: string
  /** When the worker says it is ready (sd_notify READY=1, process.send('ready')). @default 'start' */
  ready?: 'start' | 'baseline'
  /** The largest share of each limit the baseline may take to be ready. @default '60%' */
  readyMaxBaseline?: string
  /** Write a JSON recycle report here before exiting. @default off */
  reportDir?: string
  /** Write a heap snapshot into `reportDir` on recycle, when memory allows. @default false */
  heapSnapshot?: Switch
  /** V8's sampling heap profiler (main thread): `leak` and `recycle` events name the allocation sites that grew. @default 'heap' */
  profile?: 'heap' | 'off'
  /** Bytes allocated, on average, between two profiler samples (16KiB to 64MiB). @default '512KiB' */
  profileInterval?: string | number
  /** `json` lines on stderr, `pretty`, `off`, or `auto` (json unless the app listens). @default 'auto' */
  log?: 'auto' | 'json' | 'pretty' | 'off'
  /** Decide and emit, never drain or exit. @default false */
  dryRun?: Switch
  /** `start()` returns an inert recycler. @default false */
  disable?: Switch
  /** SIGTERM/SIGINT stop the worker through a drain: a `stop` event, then exit 0 (128 + signal if the drain ran out). @default false */
  signals?: Switch
}

export type RecycleReason =
  | 'rss' | 'heap' | 'growth' | 'leak' | 'near-heap-limit' | 'oom' | 'jobs' | 'age' | 'stall' | 'manual' | 'container'
/** A drain's reason: a recycle's, or `signal` for a stop. */
export type DrainReason = RecycleReason | 'signal'

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
  /** With `restart: 'exec'`: how many times this process re-executed itself (0 at first). */
  generation?: number
  /** One human sentence, ready for a logger. */
  msg: string
}

export interface Probes {
  rss: 'statm' | 'none'
  v8: 'native' | 'js'
  /** Why the native heap probe is not used. */
  v8Fallback: string | null
  gcEpilogue: boolean
  /** sd_notify target and watchdog period, when NOTIFY_SOCKET was set. */
  notify: { socket: string; watchdogMs: number | null } | null
  /** `on`, or why the near-heap-limit callback is not installed. */
  nearHeapLimit: string
  /** `on`, or why V8's OOM handler is Node's. */
  oomHandler: string
  /**
   * How allocation sites are profiled: `native`, `inspector (...)` (each profile runs a full
   * GC), `busy: ...` (another inspector client runs the profiler), `off`, `off: ...`.
   */
  profile: string
  /** What a recycle ends with: `exec` (re-executes in place) or `exit`. */
  restart: 'exit' | 'exec'
}

/** An allocation site and what it holds (sampled live bytes). */
export interface TopSite {
  /**
   * `load (src/enricher.js:42:5)`: function (file:line:column), file relative to the cwd;
   * with source maps on (`--enable-source-maps`, `process.setSourceMapsEnabled(true)`),
   * the original file and line (`src/jobs.processor.ts`).
   */
  site: string
  functionName: string
  file: string
  line: number
  column: number
  /** The compiled position, when `file`/`line`/`column` come from a source map. */
  generated?: { file: string; line: number; column: number }
  /** Live sampled bytes allocated here. */
  bytes: number
  /** Growth since the baseline (end of warm-up; since the process started for a recycle decided within 2 s of it). */
  growth: number
  /** This site's part of all growth, 0-1. */
  share: number
}

export interface TrackOptions {
  /**
   * The job's type (BullMQ's `job.name`, a route): `leak` and `recycle` events then say
   * which type the heap grew with and how much per job (`topJobs`). Up to 200 characters.
   */
  name?: string
}

/** Fields PROFILE=heap adds to `leak` and `recycle` events. */
export interface SiteFields {
  /**
   * The 5 sites that grew most since the baseline, beyond sampling noise (the report keeps
   * 50). Empty when nothing grew: `msg` then ends with `; no heap growth beyond sampling noise since the baseline`
   * (or `since the process started`).
   */
  topSites?: TopSite[]
  /** Why no sites: the profiler is busy or stopped, or the headroom was too small. */
  profileSkipped?: string
  /**
   * With named jobs (`track(promise, { name })`): the job types the post-GC heap grew with,
   * most first; a name is left out rather than guessed (see `jobsFit`).
   */
  topJobs?: TopJob[]
  jobsFit?: JobsFit
}

export interface TopJob {
  name: string
  /** Jobs of this name seen in the fitted windows. */
  jobs: number
  /** Bytes one such job leaves on the heap, estimated. */
  retainedPerJob: number
  /** This name's part of the growth the fit explains, 0-1. */
  share: number
}

/** How sure the job attribution is. */
export interface JobsFit {
  /** Windows between major GCs fitted. */
  windows: number
  /** Named jobs in them. */
  jobs: number
  /** Share of the heap growth the job counts explain (null when too few windows). */
  r2: number | null
  /** Why no name is given, when none is. */
  why?: string
}

export interface MemoryLimit { bytes: number; source: 'cgroup2' | 'cgroup1' | 'physical' }

/** The effective configuration, as in the `start` event. */
export interface EffectiveConfig {
  maxRss: number | null
  rssMetric: 'rss' | 'anon'
  maxHeap: number | null
  maxGrowth: string | null
  leakSlopeBytesPerMin: number | null
  leakWindowMs: number
  nearHeapLimit: boolean
  maxJobs: number | null
  maxAgeMs: number | null
  jitter: number
  intervalMs: number
  fastIntervalMs: number | null
  predict: boolean
  strikes: number
  warmupMs: number
  minUptimeMs: number
  drainTimeoutMs: number
  exitCode: number
  restart: 'exit' | 'exec'
  containerMax: number | string
  stallTimeoutMs: number | null
  staggerDir: string | null
  staggerGapMs: number
  staggerMaxWaitMs: number
  /** FLEET_REDIS without its password. */
  fleetRedis: string | null
  fleetName: string
  fleetHost: string | null
  fleetMaxConcurrent: number
  fleetGapMs: number
  fleetLeaseTtlMs: number
  fleetTimeoutMs: number
  fleetHeartbeatMs: number
  fleetStorm: { recycles: number; windowMs: number } | null
  fleetStormGapMs: number | null
  statusFile: string | null
  ready: 'start' | 'baseline'
  readyMaxBaseline: number
  reportDir: string | null
  heapSnapshot: boolean
  profile: 'heap' | 'off'
  profileIntervalBytes: number
  log: 'auto' | 'json' | 'pretty' | 'off'
  dryRun: boolean
  signals: boolean
}

export interface StartEvent extends BaseEvent {
  event: 'start'
  config: EffectiveConfig
  probes: Probes
  memoryLimit: MemoryLimit | null
  /** Unknown variables (with a hint) and limits that can never act. */
  warnings: string[]
  canExitProcess: boolean
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
export interface LeakEvent extends BaseEvent, SiteFields {
  event: 'leak'
  slopeBytesPerMin: number
  thresholdBytesPerMin: number
  windowMs: number
  /** Post-GC points in the fit. */
  points: number
}
export interface RecycleEvent extends LimitEvent, SiteFields {
  event: 'recycle'
  strikes: number
  dryRun: boolean
  drainTimeoutMs: number
  /** The text given to `recycle(reason)`, or V8's words for an `oom`. */
  detail?: string
  /** Crossed the hard ceiling (95% of the cgroup limit). */
  ceiling?: boolean
  /** How the sibling queue admitted it: `granted`, `bypass: ...`, `unavailable: ...`, `timeout: ...`. */
  stagger?: string
  staggerWaitMs?: number
  /**
   * How the fleet admitted it: `granted` (a lease), `unavailable` (Redis down, slow or
   * failing: the local rules applied), `timeout` (waited STAGGER_MAX_WAIT), `bypass`.
   */
  fleet?: 'granted' | 'unavailable' | 'timeout' | 'bypass'
  fleetWhy?: string
  fleetWaitMs?: number
  /** Heap headroom granted by the near-heap-limit rescue, in bytes. */
  headroom?: number
  /** `jobs` and `age`: MAX_JOBS or MAX_AGE as configured (`limit` is that less JITTER). */
  configuredLimit?: number
  /** Decided before the crossing (PREDICT): the value projected at the drain's end. */
  predicted?: true
  projected?: number
  expectedDrainMs?: number
  slopeBytesPerSec?: number
}
export interface BaselineEvent extends BaseEvent {
  event: 'baseline'
  baselineRss: number
  baselineHeapUsed: number
  rssLimit: number | null
  heapLimitInForce: number | null
  warmupMs: number
  maxShare: number
  /** Under `readyMaxBaseline` of each limit. */
  ready: boolean
  failures: string[]
}
export interface StopEvent extends BaseEvent {
  event: 'stop'
  signal: 'SIGTERM' | 'SIGINT'
  /** A recycle was already draining: the stop joined it. */
  joined: boolean
  drainTimeoutMs: number
}
export interface DrainEvent extends BaseEvent {
  event: 'drain'
  phase: 'start' | 'end'
  reason: DrainReason
  inFlight: number
  /** Since the recycle or stop was decided. */
  durationMs: number
  hooks?: number
  drained?: boolean
  errors?: string[]
}
export interface ExitEvent extends BaseEvent {
  event: 'exit'
  code: number
  drained: boolean
  durationMs: number
  reason: DrainReason
  /** true when the native thread ended the process (JS did not finish in time, or V8 was about to abort). */
  forced: boolean
  /** The stop signal, when the worker stops rather than recycles. */
  signal?: 'SIGTERM' | 'SIGINT'
  /** `exec`: the process re-executes itself in place (`code` is used only if that fails). */
  restart: 'exit' | 'exec'
  /** The recycle report (`REPORT_DIR`): its path, or why it could not be written. */
  report?: { path: string } | { error: string }
  /** The heap snapshot (`HEAP_SNAPSHOT`): its path, or why it was skipped. */
  heapSnapshot?: { path: string } | { skipped: string }
}
export interface ReinitEvent extends BaseEvent {
  event: 'reinit'
  key: string
  attempts: number
  /** The first frame of the application's code that asked. */
  callSite: string
  stack: string
}

/**
 * The status file, said once per occurrence: it cannot be written (once until a write
 * succeeds again), or another live, running process writes it too.
 */
export type StatusFileWarningEvent = BaseEvent & {
  event: 'warning'
  /** The file, placeholders expanded. */
  path: string
  /** What is wrong, in words. */
  reason: string
  fleetName?: undefined
  detail?: undefined
} & (
  | {
      code: 'status-file-unwritable'
      error: string
      /** `EACCES`, `EROFS`, `EISDIR`...; null for a refusal of our own (a symlinked or shared directory). */
      errno: string | null
    }
  | {
      code: 'status-file-shared'
      otherPid: number
    }
)

/**
 * A due recycle waits for its turn: behind siblings (`STAGGER_DIR`) or for a fleet lease.
 * Said once per recycle, when the wait starts; the `recycle` event follows when it goes
 * (`staggerWaitMs`, `fleetWaitMs`), early with `stagger`/`fleet` `bypass` if a hard limit
 * (V8's heap limit, the RSS ceiling) would be reached before a drain could finish.
 */
export interface QueuedEvent extends BaseEvent {
  event: 'queued'
  reason: RecycleReason
  value: number
  limit: number
  waitingFor: 'siblings' | 'fleet'
  /** What it waits for, in words (`a sibling recycled 1200 ms ago, the gap is 30000 ms`). */
  why: string
  /** The longest it will wait (`STAGGER_MAX_WAIT`, or the fleet's timeout). */
  maxWaitMs: number
}

/** The memory cgroup's limit changed while running (an in-place resize); the limits follow it. */
export interface LimitsEvent extends BaseEvent {
  event: 'limits'
  previous: number | null
  current: number | null
  /** `MAX_RSS` in force now. */
  rssLimit: number | null
  /** The hard ceiling in force now. */
  ceiling: number | null
}

/** More recycles fleet-wide than `fleet.storm` allows within its window (emitted once per window). */
export interface StormEvent extends BaseEvent {
  event: 'storm'
  fleetName: string
  recycles: number
  threshold: number
  windowMs: number
  /** Recycles by reason and by host in the window. */
  reasons: Record<string, number>
  hosts: Record<string, number>
  /** Median uptime at recycle: short suggests limits too tight, long a leak. */
  medianUptimeMs: number | null
  /** The widened gap (`fleet.stormGap`), or null. */
  gapMs: number | null
}

/**
 * Something about the fleet this worker cannot fix by itself, once per finding: members that
 * disagree on `maxConcurrent`/`gap` (`mismatch`, checked at each heartbeat), a Redis that
 * refuses the password (`auth`) or another Redis refusal (`redis`). Never carries a secret.
 */
export interface FleetWarningEvent extends BaseEvent {
  event: 'warning'
  fleetName: string
  code: 'mismatch' | 'auth' | 'redis'
  reason: string
  /** `mismatch`: this worker's rules and the others' (`host:pid` -> rules). */
  detail?: { maxConcurrent: number; gapMs: number; others: Record<string, { maxConcurrent: number; gapMs: number }> }
}

/** `warning`: about the fleet (`fleetName` set) or about the status file (`path` set). */
export type WarningEvent = FleetWarningEvent | StatusFileWarningEvent

export interface EventMap {
  start: StartEvent
  sample: SampleEvent
  pressure: PressureEvent
  leak: LeakEvent
  misconfigured: MisconfiguredEvent
  recycle: RecycleEvent
  baseline: BaselineEvent
  stop: StopEvent
  queued: QueuedEvent
  limits: LimitsEvent
  drain: DrainEvent
  exit: ExitEvent
  storm: StormEvent
  warning: WarningEvent
  reinit: ReinitEvent
}
export type AnyEvent = EventMap[keyof EventMap]
export type EventName = keyof EventMap

export interface DrainContext {
  reason: DrainReason
  /** Aborted when the drain deadline passes. */
  signal: AbortSignal
  /** Epoch milliseconds by which the drain must be done. */
  deadline: number
}

export interface SampleFigures {
  uptimeMs: number
  rss: number
  rssAnon: number
  heapUsed: number
  heapTotal: number
  heapLimit: number
  external: number
  jobsDone: number
}

export interface Stats {
  state: 'running' | 'draining' | 'exiting' | 'stopped' | 'disabled'
  inFlight: number
  /** The rest is there while the recycler runs. */
  sample?: SampleFigures
  limits?: {
    rss: number | null
    rssMetric: 'rss' | 'anon'
    ceiling: number | null
    heap: number | null
    growth: number | null
    jobs: number | null
    ageMs: number | null
    strikes: number
    warmupMs: number
    minUptimeMs: number
  }
  /**
   * The share of each limit the latest sample reached (1 = at the limit; null: not in
   * force), computed natively: the one figure the health indicator, the fleet heartbeat
   * and the metrics read.
   */
  pressure?: { rss: number | null; heap: number | null; growth: number | null; ceiling: number | null }
  /** The share of a limit from which the worker counts as under pressure (0.8). */
  pressureAt?: number
  baseline?: { rss: number; heapUsed: number; uptimeMs: number } | null
  counters?: { samples: number; jobsDone: number; pressure: number; misconfigured: number; recycles: number }
  probes?: Probes
  memoryLimit?: MemoryLimit | null
  staggerPending?: { reason: RecycleReason; waitingMs: number } | null
  /** The memory cgroup as one budget (`containerMax`): its last reading; null outside a memory cgroup. */
  container?: {
    workingSet: number
    usage: number
    inactiveFile: number
    limit: number | null
    /** cgroup v2 `memory.high`, when set. */
    high: number | null
    threshold: number | null
    ceiling: number | null
    processes: number
    /** cgroup v2 `memory.events` (`high`, `max`, `oom`, `oom_kill`); v1 `oom_kill`. */
    events: Record<string, number>
  } | null
  heap?: { majorGcs: number; ageMs: number | null }
  /** What keeps failing right now (absent keys: nothing fails). */
  failures?: {
    /** The status file cannot be written: since when nothing succeeded, how many writes failed. */
    statusFile?: { path: string; error: string; errno: string | null; count: number }
  }
  drainHooks?: number
  reportPath?: string | null
  /**
   * The channel `self-recycle profile <pid>` asks through: `on` (`on (the last request failed: why)`), or `off: why` (a refused
   * directory, a worker thread); `off: not opened yet` in the first tick after start.
   */
  profileChannel?: string
}

/** Named jobs of this process (`recycler.jobStats()`). */
export interface JobStats {
  /** Jobs finished per name since start, most first (at most 200 names are kept). */
  completed: { name: string; jobs: number }[]
  /** Jobs whose name came after the 200th: not counted. */
  refusedNames: number
  /** The attribution as of the latest major GC (empty: no name explains the growth, see `jobsFit`). */
  topJobs: TopJob[]
  jobsFit: JobsFit | null
}

type Listener<K extends EventName> = (event: EventMap[K]) => void

export declare class Recycler extends EventEmitter {
  /** The effective configuration, or null before `start()`. */
  readonly config: EffectiveConfig | { disabled: true } | null
  readonly running: boolean
  on<K extends EventName>(event: K, listener: Listener<K>): this
  on(event: 'event', listener: (event: AnyEvent) => void): this
  once<K extends EventName>(event: K, listener: Listener<K>): this
  once(event: 'event', listener: (event: AnyEvent) => void): this
  off<K extends EventName>(event: K, listener: Listener<K>): this
  off(event: 'event', listener: (event: AnyEvent) => void): this
  addListener<K extends EventName>(event: K, listener: Listener<K>): this
  addListener(event: 'event', listener: (event: AnyEvent) => void): this
  removeListener<K extends EventName>(event: K, listener: Listener<K>): this
  removeListener(event: 'event', listener: (event: AnyEvent) => void): this
  /** Registers a drain hook; returns a function that unregisters it. */
  onDrain(hook: (context: DrainContext) => unknown): () => void
  /** Counts in-flight work, including work started during a drain; the drain waits for it. Returns the same promise. */
  track<T>(promise: Promise<T>, options?: TrackOptions): Promise<T>
  track<T>(promise: PromiseLike<T>, options?: TrackOptions): PromiseLike<T>
  /** Counts finished jobs for `maxJobs`; returns the total. */
  jobDone(count?: number): number
  /**
   * Named jobs (`track(promise, { name })`): finished per name, and which names the post-GC
   * heap grew with and by how much per job (the fit a `leak` event names, computed again
   * only after a new major GC); null before a named job finished.
   */
  jobStats(): JobStats | null
  /** Starts a recycle now (reason `manual`, `detail` = the text); `false` if one is under way. */
  recycle(reason?: string): boolean
  /** The latest sample, limits in force, counters, baseline and state. */
  stats(): Stats
  /**
   * The highest share of a limit in force the latest sample reached (RSS, heap, the hard
   * ceiling): 0.93 is 93%; 0 without limits or when not running. Cheap per request.
   */
  pressure(): number
  /** A recycle or stop is draining this process. */
  readonly draining: boolean
  /** Stops sampling (no exit); `false` while a recycle is under way. */
  stop(): boolean
  /**
   * `signal` will be raised again by a library finishing its own shutdown (Nest's
   * `enableShutdownHooks()`): it joins the stop under way instead of counting as a second signal.
   */
  expectSignal(signal: 'SIGTERM' | 'SIGINT'): void
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
  BASELINE: 'baseline'
  STOP: 'stop'
  QUEUED: 'queued'
  LIMITS: 'limits'
  DRAIN: 'drain'
  EXIT: 'exit'
  STORM: 'storm'
  WARNING: 'warning'
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

export interface DrainHttpOptions {
  /**
   * During a drain, how long a socket with no request in flight may stay silent before it
   * is closed (closing it at once races a client reusing it); a request arriving in that
   * time is answered with `Connection: close`. A socket holding part of a request gets a
   * second grace, then a 408. Such sockets count as in flight. @default 1000
   */
  idleGraceMs?: number
  /**
   * Drains an upgraded socket (a WebSocket, from the server's 'upgrade' event) your way:
   * called once per socket when the drain starts (or when it upgrades during the drain).
   * The socket counts as in flight until it closes or the deadline. Without it, the drain
   * writes a close frame (status 1001, going away) and ends the socket; a client that does
   * not close within `idleGraceMs` (at least 1 s) is cut.
   * @default undefined
   */
  onUpgradeDrain?: (socket: import('node:net').Socket, req: import('node:http').IncomingMessage) => void
  /**
   * With `RESTART=exec`: the listening socket is handed to the next generation instead of
   * closed, so no connection is refused across a recycle (those that arrive during the
   * drain and the exec wait in the socket's backlog). The next generation's `start()`
   * makes a `listen()` on the same port adopt it; call `start()` before `listen()`.
   * Ignored with `RESTART=exit`. @default false
   */
  handOff?: boolean
  /**
   * In a cluster (or with STAGGER_DIR): once a sibling's replacement listens, each socket of
   * this server closes after its next answer, so the primary spreads the connections over
   * every worker again instead of leaving the replacement idle. @default true
   */
  rebalance?: boolean
  /**
   * Early relief for servers behind a load balancer that retries elsewhere: answer 503 with
   * `Retry-After` (and `Connection: close`) before the app sees the request: a growing share
   * of requests from `above` to the limit, and all of them while draining. `true` for the
   * defaults.
   * @default off
   */
  underPressure?: boolean | UnderPressureOptions
}

export interface UnderPressureOptions {
  /** The share of a limit (RSS, heap, the hard ceiling) from which requests are shed. @default 0.9 */
  above?: number
  /**
   * The share of requests shed at the limit; it grows from none at `above`. Never all: a
   * worker that grows with its requests would never reach its limit. @default 0.5
   */
  maxShed?: number
  /** Seconds for `Retry-After`. @default 5 */
  retryAfter?: number
  /** Also shed while the worker drains (instead of serving with `Connection: close`). @default true */
  whileDraining?: boolean
  /** Requests never shed (say, a metrics endpoint). */
  exclude?: (req: any) => boolean
}

/** A node:http, node:https or http2 server: what `drainHttp` accepts (Fastify: `fastify.server`). */
export interface HttpServerLike {
  on(event: string, listener: (...args: any[]) => void): unknown
  close(callback?: (error?: Error) => void): unknown
}

/**
 * Drains `server` on every recycle or stop of the running recycler: answers with
 * `Connection: close` (in either registration order), stops accepting (in a cluster, once
 * a sibling listens), waits for every request in flight, closes a socket after its last
 * answer or once silent for `idleGraceMs`, closes WebSockets with a close frame, and
 * destroys what is left at the deadline. Call it after `start()` and before `listen()`.
 * Returns a function that detaches it.
 */
export declare function drainHttp(server: HttpServerLike, options?: DrainHttpOptions): () => void

declare const recycle: {
  start: typeof start
  drainHttp: typeof drainHttp
  once: typeof once
  trackInit: typeof trackInit
  guardStats: typeof guardStats
  EVENTS: typeof EVENTS
  SelfRecycleConfigError: typeof SelfRecycleConfigError
  Recycler: typeof Recycler
}
export default recycle
