import { start, once } from 'self-recycle'

start({ maxRs: '1GB' })
start({ log: 'loud' })
start().on('recycle', (event) => event.nonexistent)
once(42, () => 1)
