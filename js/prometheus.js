'use strict'
// self-recycle/prometheus: the recycler's figures as prom-client metrics (prom-client is an
// optional peer). Values are read from stats() at scrape time; nothing runs in between.
//
// A worker scraped after a restart also says why its predecessor went away: the recycle
// reports in REPORT_DIR (written before each recycle exit) are read at registration.

const fs = require('node:fs')
const path = require('node:path')
const recycle = require('./index.js')

function promClient () {
  try {
    return require('prom-client')
  } catch (error) {
    throw new Error(`self-recycle/prometheus needs prom-client (npm install prom-client): ${error.message}`)
  }
}

/** Recycle reports in `dir`, newest first (at most `limit`), each { reason, pid, durationMs, time }. */
function readReports (dir, limit = 1000) {
  if (!dir) return null
  let names
  try {
    names = fs.readdirSync(dir).filter((name) => /^self-recycle-\d+-\d+\.json$/.test(name))
  } catch {
    return []
  }
  const reports = []
  for (const name of names) {
    try {
      const report = JSON.parse(fs.readFileSync(path.join(dir, name), 'utf8'))
      reports.push({ reason: String(report.reason), pid: report.pid, durationMs: report.exit?.durationMs ?? null, time: Date.parse(report.time) || 0 })
    } catch {}
  }
  return reports.sort((a, b) => b.time - a.time).slice(0, limit)
}

const LIMITS = ['rss', 'heap', 'growth', 'ceiling']
/** Job names a metric labels by default (a name per URL must not become a series per URL). */
const TOP_JOB_NAMES = 20
const OTHER_JOBS = '(other)'

/**
 * Registers self-recycle's metrics on `register` (prom-client's default registry unless
 * given). Returns the metrics. Call once per registry.
 * @example collectMetrics({ register: new client.Registry() })
 * @param {import('./prometheus.js').CollectOptions} [options]
 */
function collectMetrics ({ register, prefix = 'self_recycle_', recycler = recycle.start(), topJobNames = TOP_JOB_NAMES } = {}) {
  if (!Number.isInteger(topJobNames) || topJobNames < 1 || topJobNames > 1000) {
    throw new TypeError(`collectMetrics({ topJobNames }): expected a whole number from 1 to 1000, got ${JSON.stringify(topJobNames) ?? String(topJobNames)}`)
  }
  const client = promClient()
  // The app's registry is structural (any prom-client version): the metrics only call registerMetric on it.
  const registers = /** @type {import('prom-client').Registry[]} */ ([register ?? client.register])
  const stats = () => recycler.stats()
  const sampleGauge = (name, help, pick) => new client.Gauge({
    name: `${prefix}${name}`,
    help,
    registers,
    collect () {
      const figure = pick(stats())
      if (typeof figure === 'number') this.set(figure)
    }
  })
  const metrics = {
    rss: sampleGauge('rss_bytes', 'Resident set size at the latest sample', (s) => s.sample?.rss),
    heapUsed: sampleGauge('heap_used_bytes', 'V8 used heap at the latest sample', (s) => s.sample?.heapUsed),
    heapLimit: sampleGauge('heap_limit_bytes', "V8's heap_size_limit", (s) => s.sample?.heapLimit),
    inFlight: sampleGauge('in_flight', 'Tracked work in flight (a drain waits for it)', (s) => s.inFlight),
    jobsDone: sampleGauge('jobs_done', 'jobDone() count of this process', (s) => s.counters?.jobsDone),
    containerWorkingSet: sampleGauge('container_working_set_bytes', "The memory cgroup's working set (usage minus inactive file cache), what the OOM killer acts on", (s) => s.container?.workingSet),
    containerLimit: sampleGauge('container_limit_bytes', "The memory cgroup's limit now (it follows an in-place resize)", (s) => s.container?.limit),
    containerEvents: new client.Gauge({
      name: `${prefix}container_memory_events`,
      help: "The memory cgroup's memory.events counts (high, max, oom, oom_kill; v1: oom_kill)",
      labelNames: ['event'],
      registers,
      collect () {
        this.reset()
        for (const [event, count] of Object.entries(stats().container?.events ?? {})) this.set({ event }, count)
      }
    }),
    limit: new client.Gauge({
      name: `${prefix}limit_bytes`,
      help: 'Limits in force (absent when off)',
      labelNames: ['limit'],
      registers,
      collect () {
        this.reset()
        const limits = stats().limits ?? {}
        for (const name of LIMITS) if (typeof limits[name] === 'number') this.set({ limit: name }, limits[name])
      }
    }),
    pressure: new client.Gauge({
      name: `${prefix}pressure_ratio`,
      help: 'Value over limit for each limit in force (1 = at the limit)',
      labelNames: ['limit'],
      registers,
      collect () {
        this.reset()
        const shares = stats().pressure ?? {}
        for (const name of LIMITS) {
          if (typeof shares[name] === 'number') this.set({ limit: name }, shares[name])
        }
      }
    }),
    state: new client.Gauge({
      name: `${prefix}state`,
      help: 'The recycler state (1 for the current one)',
      labelNames: ['state'],
      registers,
      collect () {
        this.reset()
        this.set({ state: stats().state }, 1)
      }
    }),
    guardInits: new client.Gauge({
      name: `${prefix}guard_inits`,
      help: 'Initializations per once()/trackInit() key (above 1 for a trackInit key: re-created)',
      labelNames: ['key'],
      registers,
      collect () {
        this.reset()
        for (const key of recycle.guardStats()) this.set({ key: key.key }, key.inits)
      }
    }),
    // Named jobs (track(promise, { name }); BullMQ job names through self-recycle/nest).
    jobsTotal: new client.Counter({
      name: `${prefix}jobs_total`,
      help: `Named jobs finished by this process, per name (the ${topJobNames} most frequent; the rest as name="${OTHER_JOBS}")`,
      labelNames: ['name'],
      registers,
      collect () {
        this.reset()
        const completed = recycler.jobStats?.()?.completed ?? []
        for (const { name, jobs } of completed.slice(0, topJobNames)) this.inc({ name }, jobs)
        const rest = completed.slice(topJobNames).reduce((sum, { jobs }) => sum + jobs, 0)
        if (rest > 0) this.inc({ name: OTHER_JOBS }, rest)
      }
    }),
    jobRetained: new client.Gauge({
      name: `${prefix}job_retained_bytes_per_job`,
      help: 'Post-GC heap each job of this name leaves behind, by the fit of heap growth on job counts (names that explain growth only)',
      labelNames: ['name'],
      registers,
      collect () {
        this.reset()
        for (const job of (recycler.jobStats?.()?.topJobs ?? []).slice(0, topJobNames)) this.set({ name: job.name }, job.retainedPerJob)
      }
    }),
    jobShare: new client.Gauge({
      name: `${prefix}job_retained_share`,
      help: 'Share (0-1) of the explained post-GC heap growth due to jobs of this name',
      labelNames: ['name'],
      registers,
      collect () {
        this.reset()
        for (const job of (recycler.jobStats?.()?.topJobs ?? []).slice(0, topJobNames)) this.set({ name: job.name }, job.share)
      }
    }),
    guardHits: new client.Gauge({
      name: `${prefix}guard_hits`,
      help: 'Cached values returned per once() key',
      labelNames: ['key'],
      registers,
      collect () {
        this.reset()
        for (const key of recycle.guardStats()) this.set({ key: key.key }, key.hits)
      }
    })
  }

  // The predecessors: a process recycles once, so its reason is only seen by the next one.
  const config = recycler.config
  const reports = readReports(config && !('disabled' in config) ? config.reportDir : undefined)
  metrics.recycleReports = new client.Gauge({
    name: `${prefix}recycle_reports`,
    help: 'Recycles recorded in REPORT_DIR, by reason (-1: REPORT_DIR is not set, so the reasons of earlier recycles cannot be known)',
    labelNames: ['reason'],
    registers
  })
  metrics.drainDuration = new client.Histogram({
    name: `${prefix}drain_duration_seconds`,
    help: 'Drain durations of the recycles recorded in REPORT_DIR',
    buckets: [0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60],
    registers
  })
  if (reports === null) {
    metrics.recycleReports.set({ reason: 'unknown' }, -1)
  } else {
    const byReason = new Map()
    for (const report of reports) {
      byReason.set(report.reason, (byReason.get(report.reason) ?? 0) + 1)
      if (typeof report.durationMs === 'number') metrics.drainDuration.observe(report.durationMs / 1000)
    }
    for (const [reason, count] of byReason) metrics.recycleReports.set({ reason }, count)
  }
  return metrics
}

module.exports = /** @satisfies {typeof import('./prometheus.js')} */ ({ collectMetrics, readReports })
