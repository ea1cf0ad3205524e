// ESM entry: the same instance as the CommonJS entry (one recycler per process).
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const recycle = require('./index.js')

export const { start, drainHttp, once, trackInit, guardStats, EVENTS, SelfRecycleConfigError, Recycler } = recycle
export default recycle
