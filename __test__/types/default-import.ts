// Compiled without esModuleInterop and run: the default import must work at run time.
import recycle from 'self-recycle'

const r = recycle.start({ log: 'off' })
console.log(typeof r.onDrain, r.stop())
