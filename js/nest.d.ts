// Types for self-recycle/nest. Needs @nestjs/common (and @nestjs/terminus for the indicator).
import type { DynamicModule, INestApplicationContext } from '@nestjs/common' with { 'resolution-mode': 'import' }
import type { HealthIndicatorResult, HealthIndicatorService } from '@nestjs/terminus' with { 'resolution-mode': 'import' }
import type { Options, Recycler, Stats } from './index'

/** Injection token of the running recycler. */
export declare const SELF_RECYCLE: 'SELF_RECYCLE'

export declare class SelfRecycleService {
  readonly recycler: Recycler
  /** The drain closes this application. Returns it. */
  closeOnDrain<T extends INestApplicationContext>(app: T): T
}

export declare class SelfRecycleModule {
  /** Starts the recycler and provides it as SELF_RECYCLE (global module). */
  static forRoot(options?: Options): DynamicModule
  /** The drain will close `app` (runs OnModuleDestroy / OnApplicationShutdown). */
  static closeOnDrain<T extends INestApplicationContext>(app: T): T
}

/** A useFactory that builds its value once per process (per thread). */
export declare function onceProvider<A extends unknown[], T>(key: string, useFactory: (...args: A) => T): (...args: A) => T
/** A useFactory that runs every time but reports `reinit` from the second run. */
export declare function trackProvider<A extends unknown[], T>(key: string, useFactory: (...args: A) => T): (...args: A) => T
/** Which limits are over 80%. */
export declare function pressureOf(stats: Stats): Array<'rss' | 'heap' | 'growth'>

export declare class SelfRecycleHealthIndicator {
  constructor(health: HealthIndicatorService, recycler: Recycler)
  /** Down while draining or exiting; up with `{ state, pressure, inFlight }` otherwise. */
  isHealthy(key?: string): HealthIndicatorResult
}
