'use strict'
// Listening sockets handed from one generation to the next (RESTART=exec with
// drainHttp(server, { handOff: true })): no connection is refused across a recycle.
//
// The old generation, as its drain stops listening, keeps a duplicate of the server's
// socket (native, src/reexec.rs): the socket keeps listening, and connections that arrive
// during the drain and the exec wait in its backlog. The new generation gets it as
// descriptor 3.. with systemd's LISTEN_FDS / LISTEN_PID / LISTEN_FDNAMES, named
// `selfrecycle.<port>` (`selfrecycle.<port>.<address>` for a specific address, `:` written
// `-`). Its start() adopts them: a server.listen() on that port (and address) listens on
// the inherited socket instead of binding again (which would fail with EADDRINUSE). What
// is not adopted within ADOPT_WITHIN_MS is closed, with a warning.

const net = require('node:net')
const fs = require('node:fs')

const PREFIX = 'selfrecycle.'
const ADOPT_WITHIN_MS = 60000
const UNSPECIFIED = new Set(['::', '0.0.0.0'])

/** The name the next generation finds `server`'s socket under, or null (not TCP). */
function nameOf (server) {
  const address = server.address?.()
  if (!address || typeof address !== 'object' || !Number.isInteger(address.port)) return null
  const host = UNSPECIFIED.has(address.address) ? '' : `.${String(address.address).replace(/:/g, '-')}`
  return `${PREFIX}${address.port}${host}`
}

/**
 * Hands `server`'s listening socket to the next generation through `native` (call before
 * it stops listening). Returns null when done, else why not (the drain goes on either way).
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

/** Sockets our previous generation handed to this process: [{ port, host, fd }]. */
function inherited (env = process.env, isSocket = (fd) => fs.fstatSync(fd).isSocket()) {
  if (env.LISTEN_PID !== String(process.pid)) return []
  const count = Number(env.LISTEN_FDS)
  const names = (env.LISTEN_FDNAMES ?? '').split(':')
  const sockets = []
  if (!Number.isInteger(count) || count < 1 || count > 64) return sockets
  for (let i = 0; i < count; i++) {
    const match = /^selfrecycle\.(\d{1,5})(?:\.([0-9a-fA-F.-]+))?$/.exec(names[i] ?? '')
    if (!match) continue
    const fd = 3 + i
    try {
      if (!isSocket(fd)) continue
    } catch {
      continue // not open: not ours to take
    }
    sockets.push({ port: Number(match[1]), host: match[2] ? match[2].replace(/-/g, ':') : null, fd })
  }
  return sockets
}

/** The port and address a listen() call asks for: { port, host } or null (a path, an fd...). */
function addressOf (args) {
  const [first, second] = args
  if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
    return { port: Number(first), host: typeof second === 'string' ? second : null }
  }
  if (first && typeof first === 'object' && first.fd === undefined && first.path === undefined && first._handle === undefined && first.handle === undefined) {
    const port = Number(first.port)
    return Number.isInteger(port) ? { port, host: typeof first.host === 'string' ? first.host : null } : null
  }
  return null
}

/** The port a listen() call asks for, or null. */
function portOf (args) {
  return addressOf(args)?.port ?? null
}

/** Which inherited socket a listen() for `wanted` takes: same port, then same address. */
function match (sockets, wanted) {
  const candidates = sockets.filter((s) => s.port === wanted.port)
  if (wanted.host !== null) {
    const exact = candidates.find((s) => s.host === wanted.host || (s.host === null && UNSPECIFIED.has(wanted.host)))
    if (exact) return exact
    return candidates.length === 1 && candidates[0].host === null ? candidates[0] : undefined
  }
  return candidates.find((s) => s.host === null) ?? (candidates.length === 1 ? candidates[0] : undefined)
}

/**
 * At start, in the main thread: adopt what the previous generation handed on. Patches
 * net.Server's listen only while an inherited socket waits for its server; returns the
 * ports it waits for, or null when nothing was inherited.
 */
function adopt (warn) {
  if (process.env.LISTEN_PID !== String(process.pid)) return null
  // A worker thread's copy of the environment may still hold what the main thread took.
  if (!require('node:worker_threads').isMainThread) return null
  // One the app already listens on (it read LISTEN_FDS before start()) is adopted.
  const inUse = new Set()
  try {
    // @ts-expect-error: Node's undocumented list of live handles (no public equivalent)
    for (const handle of process._getActiveHandles()) if (Number.isInteger(handle?._handle?.fd)) inUse.add(handle._handle.fd)
  } catch {}
  const sockets = inherited().filter((s) => !inUse.has(s.fd))
  if (sockets.length === 0) return null
  // Children must not take these for their own (systemd's rule: unset once taken).
  delete process.env.LISTEN_PID
  delete process.env.LISTEN_FDS
  delete process.env.LISTEN_FDNAMES
  const listen = net.Server.prototype.listen
  const take = (socket) => {
    sockets.splice(sockets.indexOf(socket), 1)
    if (sockets.length === 0) restore()
  }
  const restore = () => {
    if (net.Server.prototype.listen === adopting) net.Server.prototype.listen = listen
    clearTimeout(timer)
  }
  /**
   * @this {net.Server}
   * @param {...any} args listen()'s arguments, in any of its forms
   */
  function adopting (...args) {
    // The app took an inherited descriptor itself (systemd style): it is adopted.
    const given = args[0] && typeof args[0] === 'object' ? sockets.find((s) => s.fd === args[0].fd) : undefined
    if (given) {
      take(given)
      return Reflect.apply(listen, this, args)
    }
    const wanted = addressOf(args)
    const socket = wanted && match(sockets, wanted)
    if (!socket) return Reflect.apply(listen, this, args)
    take(socket)
    const callback = typeof args.at(-1) === 'function' ? args.at(-1) : undefined
    // The object form keeps its other options (signal, backlog, exclusive...).
    let options = { fd: socket.fd }
    if (args[0] && typeof args[0] === 'object') {
      const { port, host, ...rest } = args[0]
      options = { ...rest, fd: socket.fd }
    }
    return callback ? listen.call(this, options, callback) : listen.call(this, options)
  }
  net.Server.prototype.listen = adopting
  const timer = setTimeout(() => {
    restore()
    for (const socket of sockets.splice(0)) {
      try { fs.closeSync(socket.fd) } catch {}
      warn(`self-recycle: the socket of port ${socket.port} handed on by the previous generation was not adopted by a listen() on that port within ${ADOPT_WITHIN_MS / 1000} s; closed`)
    }
  }, ADOPT_WITHIN_MS)
  timer.unref()
  return sockets.map((s) => s.port)
}

module.exports = { handOff, adopt, inherited, portOf, addressOf, match }
