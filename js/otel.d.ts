// Types for self-recycle/otel. Needs @opentelemetry/api (an optional peer) at run time.
import type { Recycler } from './index'

/**
 * The meter provider to register on: @opentelemetry/api's `MeterProvider` (structural, so
 * any API version fits and these types compile without the package).
 */
export interface MeterProviderLike {
  getMeter(name: string, version?: string, options?: any): unknown
  /** The SDK's; called after the exit event (bounded) so a recycle's figures are sent. */
  forceFlush?(options?: any): Promise<void>
}

export interface RegisterOptions {
  /** @default the global provider (`metrics.getMeterProvider()` of @opentelemetry/api) */
  meterProvider?: MeterProviderLike
  /** @default the running recycler (`start()`) */
  recycler?: Recycler
  /**
   * After the exit event, `meterProvider.forceFlush()`, for at most 1 s and never past the
   * drain deadline's grace: what the drain recorded reaches the exporter before the exit.
   * @default true
   */
  flushOnExit?: boolean
}

/**
 * Registers self-recycle's instruments on the meter `self-recycle`: `process.memory.usage`,
 * `self_recycle.heap.used`, `.heap.limit`, `.limit`, `.pressure`, `.in_flight`,
 * `.jobs.done`, `.state`, `.guard.inits`, `.guard.hits`, `.container.*` (read from stats()
 * at collection), and `.recycles`, `.drain.duration`, `.queue.waits`, `.queue.duration`
 * (fed by events). Call it once per provider. Returns a function that unregisters them;
 * calling it again does nothing.
 * Throws when @opentelemetry/api is not installed.
 */
export declare function register(options?: RegisterOptions): () => void
