import * as http from 'node:http'
import { start, once, drainHttp } from 'self-recycle'

start({ maxRs: '1GB' })
start({ log: 'loud' })
start().on('recycle', (event) => event.nonexistent)
once(42, () => 1)
drainHttp(http.createServer(), { idleGrace: 5 })
start({ fleet: { redis: 'redis://x', maxConcurent: 2 } })
drainHttp(http.createServer(), { handOff: 'yes' })
import { register } from 'self-recycle/otel'
register({ meterProvider: 'global' })
