'use strict'
// drainHttp(server): an HTTP server recycles without dropping a request. On a drain it
// answers every request from then on with `Connection: close` (it sees each request before
// the app's listener, whatever the registration order), stops accepting (in a cluster, once
// a sibling listens), waits for every request in flight (those arriving during the drain
// included: each is tracked work), lets Node close a socket after its last answer, gives a
// socket with no request in flight `idleGraceMs` to send one (closing a socket its client
// is about to reuse is a reset), sends WebSockets a close frame, and at the deadline
// destroys what is left. Works for node:http, node:https and http2 secure servers, and for
// the server under Express, Fastify (fastify.server) and Koa.

const { Server: NetServer } = require('node:net')
const { current, internalsOf } = require('./internal.js')

/** The addon (loaded by start() already): the stagger directory's marks are src/stagger.rs's. */
const nativeBinding = () => require('./native.js')

const kState = Symbol('self-recycle.http')
// A response drainHttp made say `Connection: close`.
const kClosing = Symbol('self-recycle.closing')
const stopListening = NetServer.prototype.close

function recycler () {
  const running = current()
  if (!running?.running) {
    throw new Error('drainHttp(server): no recycler runs in this process: call require(\'self-recycle\').start() first')
  }
  if (!internalsOf(running)) {
    throw new Error('drainHttp(server): the running recycler was started by an older copy of self-recycle; load one copy of the package (npm ls self-recycle)')
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
 * listener: the server's emit, wrapped by httpDrain, asks this first.
 */
function shedUnderPressure (r, settings, state) {
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
  // Answers `req` with a 503 (true) or leaves it to the app (false).
  return (req, res) => {
    if (res.headersSent || !shedding(req)) return false
    state.shed++
    res.writeHead(503, { 'Retry-After': String(settings.retryAfter), 'Content-Type': 'text/plain', ...(req.stream ? {} : { Connection: 'close' }) })
    res.end('Service Unavailable: this worker is under memory pressure; retry on another\n')
    return true
  }
}

/**
 * Rebalance: when a sibling's replacement starts listening (it writes `listening`, with
 * its pid, in the stagger directory), every socket open here answers its next request with
 * `Connection: close`, so its client reconnects and the cluster primary spreads the
 * connections over every worker again, the new one included. Without it the keep-alive
 * connections of the worker that recycled all land on the sibling that stayed up, and the
 * replacement sits idle until the next recycle.
 */
function watchSiblings (dir, onReplacement) {
  const fs = require('node:fs')
  let watcher
  try {
    watcher = fs.watch(dir, (_kind, filename) => {
      if (filename !== 'listening') return
      // The mark's format is src/stagger.rs's: the addon reads it (no symlink followed).
      const pid = nativeBinding().staggerListeningPid(dir)
      if (pid !== null && pid !== process.pid) onReplacement(pid)
    })
  } catch {
    return () => {} // no stagger directory yet, or no inotify: no rebalance
  }
  watcher.on('error', () => {})
  watcher.unref()
  return () => watcher.close()
}

const UPGRADE_DRAIN_ACCEPTS = 'a function (socket, req) or undefined'

/** A WebSocket close frame from a server (unmasked): status 1001, "going away". */
const GOING_AWAY = Buffer.from([0x88, 0x02, 0x03, 0xe9])

/** Whether the socket's parser holds part of a request: begun, not yet complete. */
function partialRequest (socket) {
  // duration(): ms since the current message began, 0 when none is under way (Node 18.?+).
  try {
    const duration = socket.parser?.duration?.()
    if (typeof duration === 'number') return duration > 0
  } catch {}
  return false
}

/**
 * May this worker stop listening now? Only once a sibling listens: a `listening` mark
 * (by another pid) no older than the last recycle's admission in the stagger directory.
 */
function siblingListens (dir) {
  return nativeBinding().staggerSiblingListens(dir)
}

/**
 * Writes `last-recycle` (ms) as the queue's admission does: a recycle that passed the queue
 * never wrote it, and the next sibling must wait for this worker's replacement as well.
 */
function markRecycled (dir) {
  nativeBinding().staggerMarkRecycled(dir) // a failure only loses the wait for the replacement
}

/**
 * What the drain keeps per HTTP/1 socket.
 * @typedef {object} SocketInfo
 * @property {Map<import('node:http').ServerResponse, () => void>} responses unfinished answers, in order
 * @property {number} idleSince
 * @property {number} bytesAtIdle
 * @property {import('node:http').IncomingMessage | null} upgraded the upgrade request, once upgraded
 * @property {(() => void) | null} hold settles the tracked promise that holds the drain
 * @property {NodeJS.Timeout | undefined} timer
 * @property {boolean} chance a silent socket holding part of a request got its second grace
 */

/**
 * The drain of `server` as a function of the drain context, for a caller that orders its hooks.
 * @param {any} server checked here (drainHttp's callers pass anything)
 * @param {import('./index.js').DrainHttpOptions} [options]
 */
function httpDrain (server, { idleGraceMs = 1000, underPressure, rebalance = true, onUpgradeDrain, handOff = false } = {}) {
  if (!server || typeof server.on !== 'function' || typeof server.close !== 'function') {
    throw new TypeError('drainHttp(server): expected a node:http, node:https or http2 server (for Fastify: fastify.server)')
  }
  if (!Number.isFinite(idleGraceMs) || idleGraceMs < 0) {
    throw new TypeError(`drainHttp(server, { idleGraceMs }): expected a number of milliseconds from 0, got ${idleGraceMs}`)
  }
  if (onUpgradeDrain !== undefined && typeof onUpgradeDrain !== 'function') {
    throw new TypeError(`drainHttp(server, { onUpgradeDrain }): expected ${UPGRADE_DRAIN_ACCEPTS}, got ${JSON.stringify(onUpgradeDrain) ?? String(onUpgradeDrain)}`)
  }
  if (typeof handOff !== 'boolean') throw new TypeError(`drainHttp(server, { handOff }): expected true or false, got ${typeof handOff}`)
  const pressure = pressureOptions(underPressure)
  if (server[kState]) return server[kState]
  const r = recycler()
  if (typeof rebalance !== 'boolean') throw new TypeError(`drainHttp(server, { rebalance }): expected true or false, got ${typeof rebalance}`)
  // sockets: socket -> { responses (unfinished, in order), idleSince, bytesAtIdle, upgraded, hold, timer, chance }
  const state = { draining: false, sockets: /** @type {Map<import('node:net').Socket, SocketInfo>} */ (new Map()), sessions: new Set(), shed: 0, closeAfterNext: new Set() }
  const shed = pressure ? shedUnderPressure(r, pressure, state) : () => false

  // Sockets (HTTP/1). A TLS server's requests run on its TLS sockets: those are the ones
  // to count and close.
  const tls = typeof server.setSecureContext === 'function'
  const onConnection = (socket) => {
    /** @type {SocketInfo} */
    const info = { responses: new Map(), idleSince: Date.now(), bytesAtIdle: socket.bytesRead, upgraded: null, hold: null, timer: undefined, chance: false }
    state.sockets.set(socket, info)
    socket.once('close', () => {
      state.sockets.delete(socket)
      clearTimeout(info.timer)
      release(info)
      // Answers queued behind a closed socket may never finish: they no longer hold the drain.
      for (const done of [...info.responses.values()]) done()
    })
    if (state.draining) settle(socket, info)
  }
  // HTTP/2 sessions: a drain sends GOAWAY and lets their streams finish.
  const onSession = (session) => {
    state.sessions.add(session)
    session.once('close', () => state.sessions.delete(session))
    if (state.draining) session.close()
  }

  /** A socket the drain waits for while no request of its own is in flight counts as work. */
  function hold (info) {
    if (info.hold) return
    r.track(new Promise((resolve) => { info.hold = resolve }))
  }
  function release (info) {
    info.hold?.()
    info.hold = null
  }

  /** The newest unanswered response on a socket says Connection: close; those before it keep it open for it. */
  function closeAfter (res, info) {
    for (const earlier of info?.responses.keys() ?? []) {
      if (earlier !== res && earlier[kClosing] && !earlier.headersSent) {
        earlier.shouldKeepAlive = true
        earlier.setHeader('Connection', 'keep-alive')
        earlier[kClosing] = false
      }
    }
    if (res.headersSent) return
    res[kClosing] = true
    res.shouldKeepAlive = false
    res.setHeader('Connection', 'close')
  }

  const onRequest = (req, res) => {
    const socket = req.socket
    const http2 = Boolean(req.stream)
    const info = http2 ? null : state.sockets.get(socket)
    const closing = state.draining || state.closeAfterNext.delete(socket)
    r.track(new Promise((resolve) => {
      const done = () => {
        res.removeListener('finish', done)
        res.removeListener('close', done)
        if (info?.responses.delete(res) && info.responses.size === 0) {
          info.idleSince = Date.now()
          info.bytesAtIdle = socket.bytesRead
          // Node ends a `Connection: close` socket itself, in its own 'finish' listener.
          if (state.draining && !socket.destroyed) settle(socket, info)
        }
        resolve(undefined)
      }
      res.once('finish', done)
      res.once('close', done)
      if (info) {
        info.responses.set(res, done)
        clearTimeout(info.timer)
        release(info) // the request is tracked itself
      }
    }))
    if (closing && !http2) closeAfter(res, info)
  }

  /** A socket upgraded by the app (WebSocket): in flight until it closes. */
  const onUpgrade = (req, socket) => {
    const info = state.sockets.get(socket)
    if (!info) return
    info.upgraded = req
    clearTimeout(info.timer)
    // Upgraded during the drain: after the app's listener wrote its handshake.
    if (state.draining) setImmediate(() => settle(socket, info))
  }

  /**
   * What a draining socket needs once no request of its own is in flight: an upgraded one
   * is closed its way; a socket that Node is closing is waited for; any other gets up to
   * `idleGraceMs` of silence (a request then arriving is answered with Connection: close),
   * and one holding part of a request that long gets a second grace, then a 408.
   */
  function settle (socket, info) {
    if (info.responses.size > 0 || socket.destroyed) return
    if (socket.alpnProtocol === 'h2') return // its session closes it
    hold(info)
    if (info.upgraded) return closeUpgraded(socket, info)
    if (socket.writableEnded) return // Node ends it (Connection: close): its 'close' releases it
    clearTimeout(info.timer)
    const silent = () => socket.bytesRead === info.bytesAtIdle && !partialRequest(socket)
    const left = silent() ? info.idleSince + idleGraceMs - Date.now() : idleGraceMs
    if (left <= 0) return socket.destroySoon()
    info.timer = setTimeout(() => {
      if (info.responses.size > 0 || socket.destroyed) return
      if (silent()) return socket.destroySoon()
      if (!partialRequest(socket) || info.chance) {
        // A request that never completed: answered as Node answers a headers timeout.
        socket.end(partialRequest(socket) ? 'HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n' : undefined)
        socket.destroySoon()
        return
      }
      info.chance = true
      settle(socket, info)
    }, left)
    info.timer.unref()
  }

  function closeUpgraded (socket, info) {
    if (info.upgradeClosing) return
    info.upgradeClosing = true
    if (onUpgradeDrain) {
      try {
        onUpgradeDrain(socket, info.upgraded)
      } catch (error) {
        process.emitWarning(`self-recycle: onUpgradeDrain threw: ${error?.message ?? error}`)
        socket.destroy()
      }
      return
    }
    if (!socket.writableEnded) socket.end(GOING_AWAY)
    // The client answers with its close frame and closes; one that does not, is cut.
    info.timer = setTimeout(() => socket.destroy(), Math.max(idleGraceMs, 1000))
    info.timer.unref()
  }

  /** @type {() => Promise<void>} */
  const finished = () => new Promise((resolve) => {
    const check = () => {
      if (state.sockets.size === 0 && state.sessions.size === 0) return resolve()
      setTimeout(check, 25).unref()
    }
    check()
  })

  /** Resolves once this worker may stop listening without leaving the port unattended. */
  const listenerMayClose = (signal) => {
    const dir = r.config?.staggerDir
    if (!dir || internalsOf(r).mayStopListening() !== false) return Promise.resolve(false)
    return new Promise((resolve) => {
      const check = () => {
        if (siblingListens(dir) || signal.aborted) return resolve(true)
        setTimeout(check, 20).unref()
      }
      check()
    })
  }

  const drain = async ({ signal, reason }) => {
    state.draining = true
    for (const session of state.sessions) session.close()
    for (const [socket, info] of state.sockets) {
      if (info.responses.size > 0) {
        const newest = [...info.responses.keys()].at(-1)
        closeAfter(newest, info)
      } else {
        settle(socket, info)
      }
    }
    const onDeadline = () => {
      for (const socket of state.sockets.keys()) socket.destroy()
      for (const session of state.sessions) session.destroy()
    }
    signal.addEventListener('abort', onDeadline, { once: true })
    // Stop accepting, through net.Server's close: since Node 19 an HTTP server's own
    // close() also closes every idle keep-alive socket at once, racing a client that is
    // reusing it (ECONNRESET). In a cluster, not before a sibling listens.
    const passedQueue = await listenerMayClose(signal)
    // RESTART=exec: the socket stays open for the next generation, which adopts it; the
    // connections that come meanwhile wait in its backlog instead of being refused. Not for
    // a stop (exit 0): no generation comes, and refused connections go elsewhere at once.
    // (The recycler's own copy of the addon keeps it: with two copies of the package
    // loaded, this module's addon is not the one that re-executes.)
    if (handOff && reason !== 'signal' && server.listening && r.stats().probes?.restart === 'exec') {
      const why = internalsOf(r).handOff(server)
      if (why) process.emitWarning(`self-recycle: drainHttp could not hand the socket on (${why}); the next generation binds it again`, { code: 'SELF_RECYCLE_HANDOFF_FAILED' })
    }
    stopListening.call(server, () => {})
    if (passedQueue) markRecycled(r.config.staggerDir)
    await Promise.race([finished(), new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }))])
  }

  // Every request and upgrade is seen before the app's listeners, whatever the order they
  // were registered in: a handler that answers at once has sent its headers by the time a
  // listener after it runs. Wrapping emit adds no listener: an app without an 'upgrade'
  // listener keeps Node's handling of upgrade requests.
  const emit = server.emit
  /** @this {import('node:events').EventEmitter} */
  const wrapped = function (name, ...args) {
    if (name === 'request') {
      onRequest(args[0], args[1])
      if (shed(args[0], args[1])) return true
    } else if (name === 'upgrade' && this.listenerCount('upgrade') > 0) {
      const result = emit.call(this, name, ...args)
      onUpgrade(args[0], args[1])
      return result
    }
    return emit.call(this, name, ...args)
  }
  server.emit = wrapped

  const unserve = internalsOf(r).serves(server)
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
  const detach = () => {
    server.removeListener(connectionEvent, onConnection)
    server.removeListener('session', onSession)
    if (server.emit === wrapped) server.emit = emit
    server.removeListener('listening', watch)
    unwatch()
    unserve()
    delete server[kState]
  }
  server[kState] = { drain, detach, shed: () => state.shed }
  return server[kState]
}

module.exports = { drainHttp, httpDrain }
