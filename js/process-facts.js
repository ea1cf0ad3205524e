'use strict'
// What the native recycler is told about this process at start: systemd's notify
// variables (taken out of the environment), V8's size flags, and the heap figures its
// native probe is checked against.

const binding = require('./native.js')

/** systemd's notify variables, read once: removed from the environment so that child
 *  processes (child_process.fork, spawn) cannot send READY/STOPPING for this service. */
let notifyEnv = null
function takeNotifyEnv () {
  if (notifyEnv === null) {
    notifyEnv = {
      notifySocket: process.env.NOTIFY_SOCKET || undefined,
      watchdogUsec: process.env.WATCHDOG_USEC || undefined,
      watchdogPid: process.env.WATCHDOG_PID || undefined
    }
    for (const name of ['NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID']) delete process.env[name]
  }
  return notifyEnv
}

/**
 * A V8 size flag (`max-old-space-size`) in MiB, as V8 applies it: NODE_OPTIONS first, then
 * the command line, the last one winning. `undefined` when not given.
 */
function v8SizeFlag (name) {
  const pattern = new RegExp(`^--${name.replace(/-/g, '[-_]')}=(\\d+)$`)
  let value
  for (const arg of [...(process.env.NODE_OPTIONS || '').split(/\s+/), ...process.execArgv]) {
    const match = pattern.exec(arg)
    if (match) value = Number(match[1])
  }
  return value
}

/**
 * The semi-space size in MiB: the flag, else V8's default, measured per major (16 MiB up to
 * V8 12, 64 in V8 13 = Node 24, 32 from V8 14 = Node 26). The young generation is three.
 */
function semiSpaceMiB () {
  const given = v8SizeFlag('max-semi-space-size')
  if (given !== undefined) return given
  const major = Number(process.versions.v8.split('.')[0])
  return major <= 12 ? 16 : major === 13 ? 64 : 32
}

/**
 * What the native heap probe is checked against: process.memoryUsage() reads the same V8
 * statistics without `node:v8` (1.6 ms to load). Only when the native probe is refused are
 * V8's statistics needed from JS (the fallback probe then feeds them).
 */
function heapInputs (forceJs) {
  const usage = process.memoryUsage()
  const memory = { heapTotal: usage.heapTotal, heapUsed: usage.heapUsed, external: usage.external }
  if (!forceJs && binding.nativeHeapProbeRefusal(memory) === null) return { memory, heap: undefined }
  const stats = require('node:v8').getHeapStatistics()
  return {
    memory,
    heap: { totalHeapSize: stats.total_heap_size, usedHeapSize: stats.used_heap_size, heapSizeLimit: stats.heap_size_limit, externalMemory: stats.external_memory ?? 0 }
  }
}

module.exports = { takeNotifyEnv, v8SizeFlag, semiSpaceMiB, heapInputs }
