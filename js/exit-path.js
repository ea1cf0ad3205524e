'use strict'
// The end of a drain, in JS: timers for any delay, the cluster primary told we leave, the
// exporters' last flush, each bounded so that none holds the exit.

/** The longest delay setTimeout honours (about 24.8 days); longer ones fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1

/** setTimeout for any delay: long ones are chained. Returns a cancel function. */
function setLongTimeout (callback, delayMs) {
  let timer
  const arm = (left) => {
    timer = setTimeout(() => (left > MAX_TIMER_MS ? arm(left - MAX_TIMER_MS) : callback()), Math.min(left, MAX_TIMER_MS))
  }
  arm(Math.max(0, delayMs))
  return () => clearTimeout(timer)
}

/**
 * Waits for the cluster primary to see us disconnect, at most `timeoutMs`.
 * @returns {Promise<void>}
 */
function disconnectFromPrimary (timeoutMs) {
  let cluster
  try {
    // The module is the Cluster object (@types/node types it as an ES namespace).
    cluster = /** @type {import('node:cluster').Cluster} */ (/** @type {unknown} */ (require('node:cluster')))
  } catch {
    return Promise.resolve()
  }
  const worker = cluster.isWorker ? cluster.worker : null
  if (!worker || !worker.isConnected()) return Promise.resolve()
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, Math.max(50, timeoutMs))
    worker.once('disconnect', () => {
      clearTimeout(timer)
      resolve()
    })
    try {
      worker.disconnect()
    } catch {
      clearTimeout(timer)
      resolve()
    }
  })
}

/**
 * Runs the exit flushes (a metrics exporter sending what the drain recorded:
 * self-recycle/otel) together, for at most `timeoutMs`; a failing or slow one never holds
 * the exit.
 * @returns {Promise<void>}
 */
function runExitFlushes (flushes, timeoutMs) {
  if (flushes.size === 0 || !(timeoutMs > 0)) return Promise.resolve()
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, timeoutMs)
    const running = [...flushes].map((flush) => {
      try {
        return flush()
      } catch {}
    })
    Promise.allSettled(running).then(() => {
      clearTimeout(timer)
      resolve()
    })
  })
}

module.exports = { setLongTimeout, disconnectFromPrimary, runExitFlushes }
