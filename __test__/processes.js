'use strict'
// Spawns fixture processes and parses the JSON events they write on stderr.

const { spawn } = require('node:child_process')
const path = require('node:path')

const FIXTURES = path.join(__dirname, 'fixtures')

/** Every `SELF_RECYCLE_*` of the test runner's own environment removed. */
function cleanEnv (extra = {}) {
  const env = {}
  for (const [name, value] of Object.entries(process.env)) {
    if (!name.startsWith('SELF_RECYCLE_')) env[name] = value
  }
  return { ...env, ...extra }
}

function parseEvents (text) {
  const events = []
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue
    try {
      const event = JSON.parse(line)
      if (event.schema === 1 && typeof event.event === 'string') events.push(event)
    } catch {}
  }
  return events
}

/**
 * Runs `node fixtures/<name>` (or an absolute path) and resolves with its exit code, signal, output, events
 * and wall time. Kills it (and fails the assertion that follows) after `timeoutMs`.
 */
function runFixture (name, { env = {}, args = [], nodeArgs = [], timeoutMs = 20000, cwd } = {}) {
  return new Promise((resolve, reject) => {
    const started = Date.now()
    const script = path.isAbsolute(name) ? name : path.join(FIXTURES, name)
    const child = spawn(process.execPath, [...nodeArgs, script, ...args], {
      env: cleanEnv(env),
      cwd,
      stdio: ['ignore', 'pipe', 'pipe']
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk) => { stdout += chunk })
    child.stderr.on('data', (chunk) => { stderr += chunk })
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      child.kill('SIGKILL')
    }, timeoutMs)
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({
        code,
        signal,
        stdout,
        stderr,
        timedOut,
        durationMs: Date.now() - started,
        events: parseEvents(stderr),
        lines: stdout.split('\n').filter(Boolean)
      })
    })
  })
}

function eventsNamed (result, name) {
  return result.events.filter((e) => e.event === name)
}

/** A readable dump for assertion messages. */
function describe (result) {
  return `code=${result.code} signal=${result.signal} timedOut=${result.timedOut} ms=${result.durationMs}\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`
}

module.exports = { runFixture, eventsNamed, describe, parseEvents, cleanEnv, FIXTURES }
