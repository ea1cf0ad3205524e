'use strict'
// Listening sockets handed from one generation to the next (RESTART=exec with
// drainHttp(server, { handOff: true })): no connection is refused across a recycle.
//
// The old generation, as its drain stops listening, keeps a duplicate of the server's
// socket (native, src/reexec.rs): the socket keeps listening, and connections that arrive
// during the drain and the exec wait in its backlog. The new generation gets it as
// descriptor 3.. with systemd's LISTEN_FDS / LISTEN_PID / LISTEN_FDNAMES, each named
// `selfrecycle.<port>`. Its start() adopts them: a server.listen() on that port (any net
// server: http, https, http2, Express, Fastify, Nest) listens on the inherited socket
// instead of binding again (which would fail with EADDRINUSE). What is not adopted within
// ADOPT_WITHIN_MS is closed, with a warning: its waiting connections are reset.

const net = require('node:net')
const fs = require('node:fs')

const PREFIX = 'selfrecycle.'
const ADOPT_WITHIN_MS = 60000

/** The name the next generation finds `server`'s socket under, or null (not TCP). */
function nameOf (server) {
  const address = server.address?.()
  return address && typeof address === 'object' && Number.isInteger(address.port) ? `${PREFIX}${address.port}` : null
}

/**
 * Hands `server`'s listening socket to the next generation (call before it stops
 * listening). Returns null when done, else why not (the drain goes on either way).
 */
function handOff (server, native) {
  const fd = server._handle?.fd
  const name = nameOf(server)
  if (!Number.isInteger(fd) || fd < 0 || !name) return 'the server has no listening TCP socket of its own'
  try {
    native.handOffSocket(fd, name)
    return null
  } catch (error) {
    return error.message
  }
}

/** Sockets our previous generation handed to this process: port -> fd. */
function inherited (env = process.env) {
  if (env.LISTEN_PID !== String(process.pid)) return new Map()
  const count = Number(env.LISTEN_FDS)
  const names = (env.LISTEN_FDNAMES ?? '').split(':')
  const sockets = new Map()
  if (!Number.isInteger(count) || count < 1 || count > 64) return sockets
  for (let i = 0; i < count; i++) {
    const match = /^selfrecycle\.(\d{1,5})$/.exec(names[i] ?? '')
    if (match) sockets.set(Number(match[1]), 3 + i)
  }
  return sockets
}

/** The port a listen() call asks for, or null (a path, a handle, an fd, no port). */
function portOf (args) {
  const [first] = args
  if (typeof first === 'number') return first
  if (typeof first === 'string' && /^\d+$/.test(first)) return Number(first)
  if (first && typeof first === 'object' && first.fd === undefined && first.path === undefined && first._handle === undefined && first.handle === undefined) {
    const port = Number(first.port)
    return Number.isInteger(port) ? port : null
  }
  return null
}

/**
 * At start: adopt what the previous generation handed on. Patches net.Server's listen
 * only while an inherited socket waits for its server; returns what it did (for the
 * start event's probes) or null when nothing was inherited.
 */
function adopt (warn) {
  const sockets = inherited()
  if (sockets.size === 0) return null
  // Children must not take these for their own (systemd's rule: unset once taken).
  delete process.env.LISTEN_PID
  delete process.env.LISTEN_FDS
  delete process.env.LISTEN_FDNAMES
  const listen = net.Server.prototype.listen
  const restore = () => {
    if (net.Server.prototype.listen === adopting) net.Server.prototype.listen = listen
    clearTimeout(timer)
  }
  function adopting (...args) {
    const port = portOf(args)
    const fd = port === null ? undefined : sockets.get(port)
    if (fd === undefined) return listen.apply(this, args)
    sockets.delete(port)
    if (sockets.size === 0) restore()
    const callback = typeof args.at(-1) === 'function' ? args.at(-1) : undefined
    return callback ? listen.call(this, { fd }, callback) : listen.call(this, { fd })
  }
  net.Server.prototype.listen = adopting
  const timer = setTimeout(() => {
    restore()
    for (const [port, fd] of sockets) {
      try { fs.closeSync(fd) } catch {}
      warn(`self-recycle: the socket of port ${port} handed on by the previous generation was not adopted by a listen() on that port within ${ADOPT_WITHIN_MS / 1000} s; closed`)
    }
    sockets.clear()
  }, ADOPT_WITHIN_MS)
  timer.unref()
  return [...sockets.keys()]
}

module.exports = { handOff, adopt, inherited, portOf, nameOf }
