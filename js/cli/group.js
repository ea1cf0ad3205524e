'use strict'
// A command run in its own process group, so that everything it starts (its children, a
// shell's commands) can be stopped together: SIGTERM to the group, SIGKILL after a bound.

const fs = require('node:fs')
const { spawn } = require('node:child_process')

/**
 * Whether any process of group `pgid` still runs. A zombie does not count: it has exited,
 * and an orphan's zombie stays until its new parent reaps it (never, under an init that
 * does not reap). Linux reads /proc; elsewhere kill(-pgid, 0) decides.
 */
function groupAlive (pgid) {
  if (process.platform === 'linux') {
    let entries
    try {
      entries = fs.readdirSync('/proc')
    } catch {
      entries = null
    }
    if (entries) {
      for (const entry of entries) {
        if (!/^\d+$/.test(entry)) continue
        let stat
        try {
          stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8')
        } catch {
          continue
        }
        // pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
        if (Number(fields[2]) === pgid && fields[0] !== 'Z' && fields[0] !== 'X') return true
      }
      return false
    }
  }
  try {
    process.kill(-pgid, 0)
    return true
  } catch (error) {
    return error.code === 'EPERM'
  }
}

function signalGroup (pgid, signal) {
  try {
    process.kill(-pgid, signal)
  } catch {}
}

const tick = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Stops the whole group: SIGTERM, then SIGKILL once `graceMs` passed (or at once when
 * `hurry()` turns true: a second signal to us). Resolves true when no process is left.
 */
async function stopGroup (pgid, { graceMs, hurry = () => false }) {
  if (!groupAlive(pgid)) return true
  signalGroup(pgid, 'SIGTERM')
  const killAt = Date.now() + graceMs
  while (groupAlive(pgid)) {
    if (Date.now() >= killAt || hurry()) {
      signalGroup(pgid, 'SIGKILL')
      // SIGKILL cannot be caught; a process in uninterruptible sleep may take a moment.
      const giveUp = Date.now() + 5000
      while (groupAlive(pgid) && Date.now() < giveUp) await tick(20)
      return !groupAlive(pgid)
    }
    await tick(20)
  }
  return true
}

/**
 * How a group's leader ended: `{ code, signal }`, or `{ error }` when it could not start.
 * @typedef {{ code: number | null, signal: NodeJS.Signals | null, error?: undefined } | { error: string, code?: undefined, signal?: undefined }} GroupStatus
 */

/**
 * Spawns `command` as the leader of a new process group, its stdout and stderr piped.
 * `status` is null until the leader ended (then a GroupStatus).
 * @param {string} file
 * @param {string[]} args
 * @param {{ env: NodeJS.ProcessEnv }} options
 */
function spawnGroup (file, args, { env }) {
  const child = spawn(file, args, { env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] })
  /** @type {{ child: typeof child, status: GroupStatus | null }} */
  const state = { child, status: null }
  child.on('error', (error) => { state.status = { error: error.message } })
  child.on('exit', (code, signal) => { state.status = { code, signal } })
  return state
}

/** Copies a stream's lines to `out`, each prefixed, without splitting a line. */
function relayLines (stream, out, prefix) {
  let partial = ''
  stream.setEncoding('utf8')
  stream.on('data', (chunk) => {
    const lines = (partial + chunk).split('\n')
    partial = lines.pop() ?? ''
    if (lines.length) out.write(lines.map((line) => `${prefix}${line}\n`).join(''))
  })
  stream.on('end', () => {
    if (partial) out.write(`${prefix}${partial}\n`)
    partial = ''
  })
}

module.exports = { stopGroup, spawnGroup, relayLines }
