// With Nest's real types (bundler resolution, where importing ESM-only Nest 12 is fine): the
// module fits `imports`, closeOnDrain takes a real application context.
import type { DynamicModule, INestApplicationContext } from '@nestjs/common'
import { SelfRecycleModule } from 'self-recycle/nest'

const imports: DynamicModule[] = [SelfRecycleModule.forRoot(), SelfRecycleModule.forRootAsync({ useFactory: () => ({}) })]
declare const app: INestApplicationContext
const same: INestApplicationContext = SelfRecycleModule.closeOnDrain(app)
console.log(imports, same)
