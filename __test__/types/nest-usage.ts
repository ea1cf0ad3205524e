import { SelfRecycleModule, SelfRecycleHealthIndicator, onceProvider, trackProvider, SELF_RECYCLE, type NestOptions } from 'self-recycle/nest'

const nestOptions: NestOptions = { trackBullmq: false }
const mod = SelfRecycleModule.forRoot({ maxRss: '512MiB' }, nestOptions)
const asyncMod = SelfRecycleModule.forRootAsync({
  inject: ['CONFIG'],
  useFactory: (config: { get (name: string): string }) => ({ maxRss: config.get('MAX_RSS'), signals: true })
})
// Structural stand-ins of Nest's types (Nest 12 is ESM-only: a CommonJS test file under
// node16 could not import them); the module must fit Nest's `imports`.
interface NestApp { get(token: unknown): unknown; close(): Promise<void>; getHttpServer?(): unknown }
declare const app: NestApp
const same: NestApp = SelfRecycleModule.closeOnDrain(app)
SelfRecycleModule.closeOnDrain(app, { handOff: true, idleGraceMs: 500 })
const imports: Array<{ module: new (...args: any[]) => any }> = [mod, asyncMod]
const factory: (url: string) => { url: string } = onceProvider('db', (url: string) => ({ url }))
const watched = trackProvider('client', () => 42)
declare const indicator: SelfRecycleHealthIndicator
console.log(imports, same, factory('x').url, watched(), SELF_RECYCLE, indicator.isHealthy('worker'))
