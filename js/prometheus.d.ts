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
}

export interface RecycleReportSummary {
  reason: string
  pid: number
  durationMs: number | null
  /** Epoch milliseconds. */
  time: number
}

/**
 * Registers gauges for RSS, heap, limits, pressure, in-flight work, state and the guard,
 * and, from the recycle reports in REPORT_DIR, recycles by reason and drain durations.
 */
export declare function collectMetrics(options?: CollectOptions): Record<string, unknown>
/** The recycle reports in `dir`, newest first; null without a directory. */
export declare function readReports(dir: string | null | undefined, limit?: number): RecycleReportSummary[] | null
