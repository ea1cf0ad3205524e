'use strict'
// Preloaded into the worker by `self-recycle preflight` (NODE_OPTIONS --expose-gc --require):
// a full GC every twentieth of the warm-up. V8 runs no major GC while the old generation does
// not grow, so a healthy worker would leave the post-GC slope without points; forced full
// GCs give it one point each, the live heap, whatever the load.
const { settings } = require('./args.js')

if (typeof global.gc === 'function') {
  // WARMUP as the worker reads it; a malformed one is the worker's own start() error.
  let warmupMs = 30000
  try {
    warmupMs = settings({}, ['WARMUP']).warmupMs
  } catch {}
  const gc = global.gc
  setInterval(() => gc(), Math.max(250, Math.floor(warmupMs / 20))).unref()
}
