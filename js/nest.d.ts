// Types for self-recycle/nest. Needs @nestjs/common and @nestjs/core (and @nestjs/terminus
// for the indicator) at run time. The Nest types are written structurally here rather than
// imported: Nest 12 is ESM-only, and importing its types from this CommonJS file would need
// TypeScript 5.3's `resolution-mode` under node16 (Nest 10 projects run older compilers).
import type { DrainHttpOptions, Options, Recycler, Stats } from './index'

/** Assignable to Nest's `DynamicModule` (in `imports: [...]`). */
export interface DynamicModule {
  module: new (...args: any[]) => any
  global?: boolean
  imports?: any[]
  providers?: any[]
  exports?: any[]
}

/** What the drain needs of a Nest application or application context. */
export interface INestApplicationContext {
  get(typeOrToken: any, options?: any): any
  close(signal?: string): Promise<void>
}

/** Nest terminus' `HealthIndicatorService`, as far as the indicator uses it. */
export interface HealthIndicatorService {
  check(key: string): { up(details?: Record<string, unknown>): any; down(details?: Record<string, unknown>): any }
}

/** A terminus health indicator result: `{ [key]: { status, ...details } }`. */
export type HealthIndicatorResult = Record<string, { status: 'up' | 'down'; [detail: string]: unknown }>

/** Injection token of the running recycler. */
export declare const SELF_RECYCLE: 'SELF_RECYCLE'

/** What the Nest module does besides starting the recycler. */
export interface NestOptions {
  /** Count @nestjs/bullmq jobs: the drain waits for active ones, completed ones count for `maxJobs`. @default true */
  trackBullmq?: boolean
}

export interface SelfRecycleAsyncOptions<A extends unknown[] = any[]> {
  /** Modules that export what `inject` names (a ConfigModule, say). */
  imports?: unknown[]
  /** Providers passed to `useFactory`, in order. */
  inject?: unknown[]
  useFactory: (...args: A) => Options | Promise<Options>
  nestOptions?: NestOptions
}

export declare class SelfRecycleService {
  readonly recycler: Recycler
  /** The drain closes this application (its HTTP server drained with `httpOptions`). Returns it. */
  closeOnDrain<T extends INestApplicationContext>(app: T, httpOptions?: DrainHttpOptions): T
}

export declare class SelfRecycleModule {
  /** Starts the recycler and provides it as SELF_RECYCLE (global module). */
  static forRoot(options?: Options, nestOptions?: NestOptions): DynamicModule
  /** Like forRoot, with the options from a factory (ConfigService...). */
  static forRootAsync<A extends unknown[]>(options: SelfRecycleAsyncOptions<A>): DynamicModule
  /**
   * The drain will close `app` (runs OnModuleDestroy / OnApplicationShutdown); its HTTP
   * server, if any, is drained like `drainHttp(server, httpOptions)` first.
   */
  static closeOnDrain<T extends INestApplicationContext>(app: T, httpOptions?: DrainHttpOptions): T
}

/**
 * A useFactory that builds its value once per process (per thread); the value's Nest
 * lifecycle hooks are hidden from each context (no context may destroy what all share).
 */
export declare function onceProvider<A extends unknown[], T>(key: string, useFactory: (...args: A) => T): (...args: A) => T
/** A useFactory that runs every time but reports `reinit` from the second run. */
export declare function trackProvider<A extends unknown[], T>(key: string, useFactory: (...args: A) => T): (...args: A) => T
/** Which limits are over 80%. */
export declare function pressureOf(stats: Stats): Array<'rss' | 'heap' | 'growth' | 'ceiling'>

export declare class SelfRecycleHealthIndicator {
  constructor(health: HealthIndicatorService, recycler: Recycler)
  /** Down while draining or exiting; up with `{ state, pressure, inFlight }` otherwise. */
  isHealthy(key?: string): HealthIndicatorResult
}
