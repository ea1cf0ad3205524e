'use strict'
// HEAP_SNAPSHOT: a heap snapshot written during the drain, only when memory allows.

const v8 = require('node:v8')
const binding = require('./native.js')

/**
 * A heap snapshot needs about twice the used heap in free memory (V8 serializes it while
 * the heap is alive); below that, writing one could itself get the worker OOM-killed.
 */
function snapshotDecision (heapUsed, available) {
  const needed = 2 * heapUsed
  if (available === null || available === undefined) return { write: false, reason: 'free memory is unknown' }
  if (available < needed) {
    return { write: false, reason: `needs about ${Math.ceil(needed / 1048576)} MiB free, ${Math.floor(available / 1048576)} MiB available` }
  }
  return { write: true }
}

/** Writes a heap snapshot into `dir` (mode 0600, an unpredictable name) when memory allows. */
function writeHeapSnapshot (dir) {
  if (!dir) return { skipped: 'HEAP_SNAPSHOT needs REPORT_DIR' }
  const decision = snapshotDecision(v8.getHeapStatistics().used_heap_size, binding.availableMemory())
  if (!decision.write) return { skipped: decision.reason }
  // Loaded here, not at require(): only a recycle with HEAP_SNAPSHOT=on needs them.
  const fs = require('node:fs')
  const path = require('node:path')
  const crypto = require('node:crypto')
  const file = path.join(dir, `self-recycle-${process.pid}-${Date.now()}-${crypto.randomBytes(6).toString('hex')}.heapsnapshot`)
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
    v8.writeHeapSnapshot(file)
    fs.chmodSync(file, 0o600)
    return { path: file }
  } catch (error) {
    // A full disk leaves a truncated snapshot that no tool can open: remove it.
    try { fs.unlinkSync(file) } catch {}
    return { skipped: `could not write: ${error.message}` }
  }
}

module.exports = { snapshotDecision, writeHeapSnapshot }
