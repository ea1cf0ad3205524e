// Types for self-recycle/prometheus. Needs prom-client (an optional peer) at run time.
import type { Recycler } from './index'

/** The registry to register on: prom-client's `Registry` (structural, so any prom-client version fits). */
export interface MetricsRegistry {
  registerMetric(metric: unknown): void
  metrics(): Promise<string>
}

export interface CollectOptions {
  /** @default prom-client's default registry */
  register?: MetricsRegistry
  /** @default 'self_recycle_' */
  prefix?: string
  /** @default the running recycler (`start()`) */
  recycler?: Recycler
  /**
   * Job names labelled in `jobs_total`, `job_retained_bytes_per_job` and `job_retained_share`
   * (the most frequent; the rest are counted as `name="(other)"`), 1 to 1000.
   * @default 20
   */
  topJobNames?: number
}

export interface RecycleReportSummary {
  reason: string
  pid: number
  durationMs: number | null
  /** Epoch milliseconds. */
  time: number
}

/**
 * Registers gauges for RSS, heap, limits, pressure, in-flight work, state, the guard and
 * named jobs (finished, heap retained per job, share), and, from the recycle reports in REPORT_DIR, recycles by reason and drain durations.
 */
export declare function collectMetrics(options?: CollectOptions): Record<string, unknown>
/** The recycle reports in `dir`, newest first; null without a directory. */
export declare function readReports(dir: string | null | undefined, limit?: number): RecycleReportSummary[] | null
