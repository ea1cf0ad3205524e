'use strict'
// Shared helpers for process-manager tests: the ledger the managed workers write.

const fs = require('node:fs')

function readLedger (file) {
  const lines = fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean) : []
  const started = new Set()
  const done = new Set()
  const recycles = []
  const boots = []
  for (const line of lines) {
    const [kind, pid, arg] = line.split(' ')
    if (kind === 'start') started.add(`${pid}:${arg}`)
    if (kind === 'done') done.add(`${pid}:${arg}`)
    if (kind === 'recycle') recycles.push({ pid: Number(pid), reason: arg })
    if (kind === 'boot') boots.push(Number(pid))
  }
  const lost = [...started].filter((job) => !done.has(job))
  return { started: started.size, done: done.size, lost, recycles, boots }
}

async function waitFor (predicate, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await predicate()) return
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
}

/** Env for a managed worker that recycles every couple of seconds. */
function workerEnv (ledger, extra = {}) {
  return {
    LEDGER: ledger,
    SELF_RECYCLE_MAX_RSS: '140MiB',
    SELF_RECYCLE_MAX_HEAP: 'off',
    SELF_RECYCLE_INTERVAL: '100ms',
    SELF_RECYCLE_STRIKES: '2',
    SELF_RECYCLE_WARMUP: '0',
    SELF_RECYCLE_MIN_UPTIME: '500ms',
    SELF_RECYCLE_DRAIN_TIMEOUT: '5s',
    SELF_RECYCLE_SIGNALS: 'on',
    SELF_RECYCLE_LOG: 'json',
    ...extra
  }
}

module.exports = { readLedger, waitFor, workerEnv }
