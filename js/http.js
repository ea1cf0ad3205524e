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
 * idle during a drain before it is closed. Call it before `listen()`: connections accepted
 * earlier are not known to it.
 */
function drainHttp (server, options) {
  const { drain, detach } = httpDrain(server, options)
  const unregister = recycler().onDrain(drain)
  return () => {
    unregister()
    detach()
  }
}

/** The drain of `server` as a function of the drain context, for a caller that orders its hooks. */
function httpDrain (server, { idleGraceMs = 1000 } = {}) {
  if (!server || typeof server.on !== 'function' || typeof server.close !== 'function') {
    throw new TypeError('drainHttp(server): expected a node:http, node:https or http2 server (for Fastify: fastify.server)')
  }
  if (!Number.isFinite(idleGraceMs) || idleGraceMs < 0) {
    throw new TypeError(`drainHttp(server, { idleGraceMs }): expected a number of milliseconds from 0, got ${idleGraceMs}`)
  }
  if (server[kState]) return server[kState]
  const r = recycler()
  const state = { draining: false, sockets: new Map(), sessions: new Set(), idleGraceMs }

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
    if (state.draining && !http2 && !res.headersSent) res.setHeader('Connection', 'close')
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
  const connectionEvent = tls ? 'secureConnection' : 'connection'
  server.on(connectionEvent, onConnection)
  server.on('session', onSession)
  server.on('request', onRequest)
  const detach = () => {
    server.removeListener(connectionEvent, onConnection)
    server.removeListener('session', onSession)
    server.removeListener('request', onRequest)
    unserve()
    delete server[kState]
  }
  server[kState] = { drain, detach }
  return server[kState]
}

module.exports = { drainHttp, httpDrain }
