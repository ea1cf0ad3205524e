'use strict'
// drainHttp(server): an HTTP server recycles without dropping a request. On a drain it
// stops accepting, answers every request from then on with `Connection: close`, waits for
// every request in flight (those arriving during the drain included: each is tracked
// work), closes a keep-alive socket once it has been idle for `idleGraceMs` (closing an
// idle socket at once races a client reusing it: ECONNRESET), and at the deadline
// destroys what is left. Works for node:http, node:https and http2 secure servers, and for
// the server under Express, Fastify (fastify.server) and Koa.

const { Server: NetServer } = require('node:net')

const kState = Symbol('self-recycle.http')
const stopListening = NetServer.prototype.close

function recycler () {
  const running = globalThis[Symbol.for('self-recycle.recycler')]
  if (!running?.running) {
    throw new Error('drainHttp(server): no recycler runs in this process: call require(\'self-recycle\').start() first')
  }
  return running
}

/**
 * Drains `server` on every recycle or stop of the running recycler. Returns a function that
 * detaches it. Options: `idleGraceMs` (default 1000): how long a keep-alive socket may stay
 * idle during a drain before it is closed; `rebalance` (default true): once a sibling's
 * replacement listens, each socket here closes after its next answer, so the cluster
 * spreads the connections again; `underPressure` (off): answer 503 with
 * Retry-After while memory pressure is high (and, by default, while draining) so a load
 * balancer shifts traffic first. Call it before `listen()`: connections accepted earlier
 * are not known to it.
 */
function drainHttp (server, options) {
  const { drain, detach } = httpDrain(server, options)
  const unregister = recycler().onDrain(drain)
  return () => {
    unregister()
    detach()
  }
}

const PRESSURE_ACCEPTS = '{ above: a share of the limit from 0.1 to 1 (default 0.9), maxShed: the share of requests shed at the limit, above 0 and at most 1 (default 0.5), retryAfter: seconds from 1 to 3600 (default 5), whileDraining: boolean (default true), exclude: (req) => boolean }'

/** `underPressure` as given -> its settings, or a TypeError that names what is accepted. */
function pressureOptions (given) {
  if (given === undefined || given === false || given === null) return null
  const options = given === true ? {} : given
  if (typeof options !== 'object') throw new TypeError(`drainHttp(server, { underPressure }): expected true or ${PRESSURE_ACCEPTS}, got ${typeof options}`)
  const { above = 0.9, maxShed = 0.5, retryAfter = 5, whileDraining = true, exclude = null, ...unknown } = options
  const bad = (what, value) => new TypeError(`drainHttp(server, { underPressure: { ${what} } }): ${JSON.stringify(value) ?? String(value)} is not valid; expected ${PRESSURE_ACCEPTS}`)
  if (Object.keys(unknown).length > 0) throw bad(Object.keys(unknown)[0], unknown[Object.keys(unknown)[0]])
  if (typeof above !== 'number' || !(above >= 0.1 && above <= 1)) throw bad('above', above)
  if (typeof maxShed !== 'number' || !(maxShed > 0 && maxShed <= 1)) throw bad('maxShed', maxShed)
  if (!Number.isInteger(retryAfter) || retryAfter < 1 || retryAfter > 3600) throw bad('retryAfter', retryAfter)
  if (typeof whileDraining !== 'boolean') throw bad('whileDraining', whileDraining)
  if (exclude !== null && typeof exclude !== 'function') throw bad('exclude', exclude)
  return { above, maxShed, retryAfter, whileDraining, exclude }
}

/**
 * Early relief: from `above`, a growing share of requests is answered 503 before the app
 * sees it: none at `above`, `maxShed` at the limit (all of them while draining). Never all
 * before the drain: a worker whose growth comes from its requests would stop growing, never
 * reach its limit and shed forever. Node's EventEmitter cannot stop the app's 'request'
 * listener, so the server's emit is wrapped (and restored on detach).
 */
function shedUnderPressure (server, r, settings, state) {
  let checkedAt = 0
  let share = 0
  const shedding = (req) => {
    if (settings.exclude?.(req)) return false
    if (state.draining) return settings.whileDraining
    const now = Date.now()
    if (now - checkedAt >= 50) {
      checkedAt = now
      const over = (r.pressure() - settings.above) / Math.max(1 - settings.above, 0.01)
      share = Math.min(Math.max(over, 0), 1) * settings.maxShed
    }
    return share > 0 && Math.random() < share
  }
  const emit = server.emit
  const wrapped = function (name, req, res, ...rest) {
    if (name === 'request' && !res.headersSent && shedding(req)) {
      state.shed++
      res.writeHead(503, { 'Retry-After': String(settings.retryAfter), 'Content-Type': 'text/plain', ...(req.stream ? {} : { Connection: 'close' }) })
      res.end('Service Unavailable: this worker is under memory pressure; retry on another\n')
      return true
    }
    return emit.call(this, name, req, res, ...rest)
  }
  server.emit = wrapped
  return () => {
    if (server.emit === wrapped) server.emit = emit
  }
}

/**
 * Rebalance: when a sibling's replacement starts listening (it writes `listening`, "<ms>
 * <pid>", in the stagger directory), every socket open here answers its next request with
 * `Connection: close`, so its client reconnects and the cluster primary spreads the
 * connections over every worker again, the new one included. Without it the keep-alive
 * connections of the worker that recycled all land on the sibling that stayed up, and the
 * replacement sits idle until the next recycle.
 */
function watchSiblings (dir, onReplacement) {
  const fs = require('node:fs')
  const path = require('node:path')
  let watcher
  try {
    watcher = fs.watch(dir, (kind, filename) => {
      if (filename !== 'listening') return
      let text = ''
      try {
        const fd = fs.openSync(path.join(dir, 'listening'), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW)
        try { text = fs.readFileSync(fd, 'latin1').slice(0, 64) } finally { fs.closeSync(fd) }
      } catch {
        return
      }
      const pid = Number(text.trim().split(/\s+/)[1])
      if (Number.isInteger(pid) && pid !== process.pid) onReplacement(pid)
    })
  } catch {
    return () => {} // no stagger directory yet, or no inotify: no rebalance
  }
  watcher.on('error', () => {})
  watcher.unref()
  return () => watcher.close()
}

/** The drain of `server` as a function of the drain context, for a caller that orders its hooks. */
function httpDrain (server, { idleGraceMs = 1000, underPressure, rebalance = true } = {}) {
  if (!server || typeof server.on !== 'function' || typeof server.close !== 'function') {
    throw new TypeError('drainHttp(server): expected a node:http, node:https or http2 server (for Fastify: fastify.server)')
  }
  if (!Number.isFinite(idleGraceMs) || idleGraceMs < 0) {
    throw new TypeError(`drainHttp(server, { idleGraceMs }): expected a number of milliseconds from 0, got ${idleGraceMs}`)
  }
  const pressure = pressureOptions(underPressure)
  if (server[kState]) return server[kState]
  const r = recycler()
  if (typeof rebalance !== 'boolean') throw new TypeError(`drainHttp(server, { rebalance }): expected true or false, got ${typeof rebalance}`)
  const state = { draining: false, sockets: new Map(), sessions: new Set(), idleGraceMs, shed: 0, closeAfterNext: new Set() }
  const unshed = pressure ? shedUnderPressure(server, r, pressure, state) : () => {}

  // Sockets and how many requests are in flight on each (HTTP/1). A TLS server's requests
  // run on its TLS sockets: those are the ones to count and close.
  const tls = typeof server.setSecureContext === 'function'
  const onConnection = (socket) => {
    state.sockets.set(socket, 0)
    socket.once('close', () => state.sockets.delete(socket))
  }
  // HTTP/2 sessions: a drain sends GOAWAY and lets their streams finish.
  const onSession = (session) => {
    state.sessions.add(session)
    session.once('close', () => state.sessions.delete(session))
    if (state.draining) session.close()
  }
  const onRequest = (req, res) => {
    const socket = req.socket
    const http2 = Boolean(req.stream)
    if (!http2) state.sockets.set(socket, (state.sockets.get(socket) ?? 0) + 1)
    const closing = state.draining || state.closeAfterNext.delete(socket)
    if (closing && !http2 && !res.headersSent) res.setHeader('Connection', 'close')
    r.track(new Promise((resolve) => {
      const done = () => {
        res.removeListener('finish', done)
        res.removeListener('close', done)
        if (!http2 && state.sockets.has(socket)) {
          const active = state.sockets.get(socket) - 1
          state.sockets.set(socket, active)
          if (state.draining && active === 0) closeWhenIdle(socket)
        }
        resolve()
      }
      res.once('finish', done)
      res.once('close', done)
    }))
  }

  function closeWhenIdle (socket) {
    setTimeout(() => {
      if (state.sockets.get(socket) === 0) socket.end()
    }, state.idleGraceMs).unref()
  }

  const finished = () => new Promise((resolve) => {
    const check = () => {
      if (state.sockets.size === 0 && state.sessions.size === 0) return resolve()
      setTimeout(check, 25).unref()
    }
    check()
  })

  const drain = async ({ signal }) => {
    state.draining = true
    // Stop accepting, through net.Server's close: since Node 19 an HTTP server's own close()
    // also closes every idle keep-alive socket at once, racing a client that is reusing it
    // (ECONNRESET). Idle sockets are closed below, after the grace.
    stopListening.call(server, () => {})
    for (const session of state.sessions) session.close()
    for (const [socket, active] of state.sockets) if (active === 0) closeWhenIdle(socket)
    const onDeadline = () => {
      for (const socket of state.sockets.keys()) socket.destroy()
      for (const session of state.sessions) session.destroy()
    }
    signal.addEventListener('abort', onDeadline, { once: true })
    await Promise.race([finished(), new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }))])
  }

  const unserve = r._serves(server)
  // Watched once this worker listens: by then its own `listening` mark made the directory.
  const staggerDir = r.config?.staggerDir
  let unwatch = () => {}
  const watch = () => {
    unwatch()
    unwatch = watchSiblings(staggerDir, () => {
      if (!state.draining) state.closeAfterNext = new Set(state.sockets.keys())
    })
  }
  if (rebalance && staggerDir) {
    server.on('listening', watch)
    if (server.listening) watch()
  }
  const connectionEvent = tls ? 'secureConnection' : 'connection'
  server.on(connectionEvent, onConnection)
  server.on('session', onSession)
  server.on('request', onRequest)
  const detach = () => {
    server.removeListener(connectionEvent, onConnection)
    server.removeListener('session', onSession)
    server.removeListener('request', onRequest)
    unshed()
    server.removeListener('listening', watch)
    unwatch()
    unserve()
    delete server[kState]
  }
  server[kState] = { drain, detach, shed: () => state.shed }
  return server[kState]
}

module.exports = { drainHttp, httpDrain }
