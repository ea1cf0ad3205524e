import { SelfRecycleModule, SelfRecycleHealthIndicator, onceProvider, trackProvider, SELF_RECYCLE } from 'self-recycle/nest'
import type { DynamicModule, INestApplicationContext } from '@nestjs/common' with { 'resolution-mode': 'import' }

const mod: DynamicModule = SelfRecycleModule.forRoot({ maxRss: '512MiB' })
declare const app: INestApplicationContext
const same: INestApplicationContext = SelfRecycleModule.closeOnDrain(app)
const factory: (url: string) => { url: string } = onceProvider('db', (url: string) => ({ url }))
const watched = trackProvider('client', () => 42)
declare const indicator: SelfRecycleHealthIndicator
console.log(mod, same, factory('x').url, watched(), SELF_RECYCLE, indicator.isHealthy('worker'))
