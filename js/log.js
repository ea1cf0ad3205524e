'use strict'
// Where event lines go: one decision (LOG mode and who listens) and one writer. Lines go
// through process.stderr, so process managers that capture JS streams (PM2 cluster mode)
// file them with the app's output; the native side writes to fd 2 only when JS cannot run.

const MODES = new Set(['auto', 'json', 'pretty', 'off'])

/** `LOG=auto` logs an event only when the app does not listen to it (or to `'event'`). */
function shouldLog (mode, listeners) {
  if (mode === 'off') return false
  if (mode === 'auto') return listeners === 0
  return true
}

/**
 * The LOG mode before any recycler is started: SELF_RECYCLE_LOG as the settings table reads
 * it, `auto` when unset or malformed (start() is where a bad value is refused).
 */
function envLogMode () {
  try {
    const { log } = require('./options.js').readSettings({}, ['LOG'])
    return MODES.has(log) ? log : 'auto'
  } catch {
    return 'auto'
  }
}

/** The same two formats the native side writes when JS cannot (src/event/line.rs). */
function formatLine (event, mode) {
  if (mode === 'off') return null
  if (mode === 'pretty') return `${event.time} self-recycle[${event.pid}] ${event.event}: ${event.msg}`
  return JSON.stringify(event)
}

function writeLine (event, mode) {
  const line = formatLine(event, mode)
  if (line === null) return
  try {
    process.stderr.write(`${line}\n`)
  } catch {}
}

module.exports = { shouldLog, envLogMode, writeLine }
