'use strict'
// drainHttp at the socket level, one server (fixtures/http-single.js) and raw clients: a
// handler that answers inside the request listener in either registration order, a
// response streaming past the drain start, pipelined requests, a client that trickles a
// request and never ends, one that never reads, one that leaves mid-response, and
// WebSockets (a hand-written handshake and frames, no library). Every wait is for a fact
// the fixture prints or a byte the client reads.

const test = require('node:test')
const assert = require('node:assert/strict')
const http = require('node:http')
const net = require('node:net')
const crypto = require('node:crypto')
const { spawn } = require('node:child_process')
const path = require('node:path')
const { FIXTURES, cleanEnv, parseEvents } = require('./processes')

/** The fixture in a child process; `line(text)` resolves once stdout printed that line. */
function startSingle (env) {
  const child = spawn(process.execPath, [path.join(FIXTURES, 'http-single.js')], { env: cleanEnv({ SELF_RECYCLE_LOG: 'json', ...env }), stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  const waiters = []
  child.stdout.on('data', (chunk) => {
    stdout += chunk
    for (const w of waiters.splice(0)) if (!w()) waiters.push(w)
  })
  child.stderr.on('data', (chunk) => { stderr += chunk })
  const line = (pattern) => new Promise((resolve) => {
    const check = () => {
      const match = pattern.exec(stdout)
      if (match) resolve(match)
      return Boolean(match)
    }
    if (!check()) waiters.push(check)
  })
  const closed = new Promise((resolve) => child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr, events: parseEvents(stderr) })))
  const port = line(/port:(\d+)/).then((m) => Number(m[1]))
  return { child, port, line, closed }
}

/** GET `urlPath`; resolves with status, headers, body and whether the socket was reused. */
function get (port, urlPath, agent) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, agent }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk) => { body += chunk })
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body, reused: req.reusedSocket }))
    })
    req.on('error', reject)
  })
}

/** Starts a recycle and waits until the fixture's drain hook ran (drainHttp's runs next). */
async function recycle (service, port) {
  await get(port, '/recycle', false)
  await service.line(/drain:start/)
}

function drainEnd (events) {
  return events.find((e) => e.event === 'drain' && e.phase === 'end')
}

for (const handler of ['sync', 'async']) {
  for (const order of ['readme', 'first']) {
    test(`a ${handler} handler, drainHttp registered ${order === 'first' ? 'before' : 'after'} the app's listener: a kept-alive socket's next answer says Connection: close, then the socket ends`, { timeout: 30000 }, async () => {
      const service = startSingle({ HANDLER: handler, ORDER: order, SELF_RECYCLE_DRAIN_TIMEOUT: '20s', IDLE_GRACE_MS: '10000' })
      const port = await service.port
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
      const first = await get(port, '/', agent)
      assert.equal(first.headers.connection, 'keep-alive')
      const socket = Object.values(agent.freeSockets)[0][0]
      const ended = new Promise((resolve) => socket.once('close', resolve))
      await recycle(service, port)
      const during = await get(port, '/', agent)
      assert.deepEqual([during.status, during.reused, during.headers.connection], [200, true, 'close'])
      await ended
      const { code, events } = await service.closed
      assert.equal(code, 75)
      assert.deepEqual([drainEnd(events).drained, drainEnd(events).inFlight], [true, 0])
      // The socket closed after its answer, not after the 10 s grace.
      assert.ok(drainEnd(events).durationMs < 8000, JSON.stringify(drainEnd(events)))
      agent.destroy()
    })
  }
}

test('a response streaming past the drain start is written in full; its socket (headers said keep-alive) answers the next request with Connection: close', { timeout: 30000 }, async () => {
  const service = startSingle({ SELF_RECYCLE_DRAIN_TIMEOUT: '20s' })
  const port = await service.port
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  const streamed = await new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/stream?ms=1500', agent }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      recycle(service, port).then(() => {
        res.on('data', (chunk) => { body += chunk })
        res.on('end', () => resolve({ connection: res.headers.connection, body }))
      }, reject)
    }).on('error', reject)
  })
  assert.equal(streamed.connection, 'keep-alive')
  assert.match(streamed.body, /piece 9\ndone\n$/)
  const next = await get(port, '/', agent)
  assert.deepEqual([next.status, next.reused, next.headers.connection], [200, true, 'close'])
  const { code, events } = await service.closed
  assert.equal(code, 75)
  assert.equal(drainEnd(events).drained, true)
  agent.destroy()
})

/** A raw connection: `read(pattern)` resolves once the bytes received match. */
function raw (port) {
  const socket = net.connect(port, '127.0.0.1')
  let received = Buffer.alloc(0)
  const waiters = []
  socket.on('data', (chunk) => {
    received = Buffer.concat([received, chunk])
    for (const w of waiters.splice(0)) if (!w()) waiters.push(w)
  })
  socket.on('error', () => {})
  const closed = new Promise((resolve) => socket.once('close', resolve))
  const ended = new Promise((resolve) => socket.once('end', resolve))
  const read = (test) => new Promise((resolve) => {
    const check = () => (test(received) ? (resolve(received), true) : false)
    if (!check()) waiters.push(check)
  })
  const connected = new Promise((resolve) => socket.once('connect', resolve))
  return { socket, read, closed, ended, connected, received: () => received }
}

test('pipelined requests sent during the drain are all answered; only the last answer says Connection: close', { timeout: 30000 }, async () => {
  const service = startSingle({ SELF_RECYCLE_DRAIN_TIMEOUT: '20s', IDLE_GRACE_MS: '10000' })
  const port = await service.port
  const client = raw(port)
  client.socket.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n')
  await client.read((b) => b.includes('ok /\n'))
  await recycle(service, port)
  client.socket.write('GET /slow?ms=200 HTTP/1.1\r\nHost: a\r\n\r\nGET /slow?ms=100 HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n')
  await client.ended
  const text = client.received().toString('latin1')
  const answers = text.split('HTTP/1.1 ').slice(1)
  assert.equal(answers.length, 4, text)
  assert.deepEqual(answers.map((a) => /connection: (\S+)/i.exec(a)[1].toLowerCase()), ['keep-alive', 'keep-alive', 'keep-alive', 'close'])
  assert.deepEqual(answers.map((a) => /\r\n\r\n[0-9a-f]+\r\n([^\n]*)\n/.exec(a)[1]), ['ok /', 'ok /slow', 'ok /slow', 'ok /'])
  const { code, events } = await service.closed
  assert.equal(code, 75)
  assert.equal(drainEnd(events).drained, true)
})

test('a client that trickles a request and never ends gets a bounded chance, then a 408: the drain ends long before its deadline', { timeout: 40000 }, async () => {
  const service = startSingle({ SELF_RECYCLE_DRAIN_TIMEOUT: '25s', IDLE_GRACE_MS: '500' })
  const port = await service.port
  const client = raw(port)
  await client.connected
  client.socket.write('GET / HTTP/1.1\r\nHost: a\r\n')
  const trickle = setInterval(() => client.socket.write('x'), 100)
  await recycle(service, port)
  const { code, events } = await service.closed
  clearInterval(trickle)
  assert.equal(code, 75)
  const end = drainEnd(events)
  assert.deepEqual([end.drained, end.inFlight], [true, 0])
  assert.ok(end.durationMs < 10000, JSON.stringify(end))
  assert.match(client.received().toString('latin1'), /^HTTP\/1.1 408/)
})

test('a trickling client still open at the deadline is counted in flight: drained false, inFlight 1', { timeout: 30000 }, async () => {
  const service = startSingle({ SELF_RECYCLE_DRAIN_TIMEOUT: '1s', IDLE_GRACE_MS: '60000' })
  const port = await service.port
  const client = raw(port)
  await client.connected
  client.socket.write('GET / HTTP/1.1\r\nHost: a\r\n')
  const trickle = setInterval(() => client.socket.write('x'), 100)
  await recycle(service, port)
  const { code, events } = await service.closed
  clearInterval(trickle)
  assert.equal(code, 75)
  assert.deepEqual([drainEnd(events).drained, drainEnd(events).inFlight], [false, 1])
})

test('a client that never reads its response holds the drain to the deadline and is counted: drained false, inFlight 1', { timeout: 30000 }, async () => {
  const service = startSingle({ SELF_RECYCLE_DRAIN_TIMEOUT: '2s' })
  const port = await service.port
  const client = raw(port)
  client.socket.write('GET /big?mib=64 HTTP/1.1\r\nHost: a\r\n\r\n')
  await client.read((b) => b.length > 0)
  client.socket.pause()
  await recycle(service, port)
  const { code, events } = await service.closed
  assert.equal(code, 75)
  assert.deepEqual([drainEnd(events).drained, drainEnd(events).inFlight], [false, 1])
  client.socket.destroy()
})

test('a client that leaves mid-response does not hold the drain', { timeout: 30000 }, async () => {
  const service = startSingle({ SELF_RECYCLE_DRAIN_TIMEOUT: '20s' })
  const port = await service.port
  const client = raw(port)
  client.socket.write('GET /stream?ms=30000 HTTP/1.1\r\nHost: a\r\n\r\n')
  await client.read((b) => b.includes('piece 0'))
  await recycle(service, port)
  client.socket.destroy()
  const { code, events } = await service.closed
  assert.equal(code, 75)
  const end = drainEnd(events)
  assert.deepEqual([end.drained, end.inFlight], [true, 0])
  assert.ok(end.durationMs < 10000, JSON.stringify(end))
})

/** A WebSocket client by hand: the upgrade request, then frames (RFC 6455). */
async function webSocket (port) {
  const client = raw(port)
  const key = crypto.randomBytes(16).toString('base64')
  client.socket.write(`GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`)
  const head = await client.read((b) => b.includes('\r\n\r\n'))
  const accept = crypto.createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64')
  assert.match(head.toString('latin1'), new RegExp(`^HTTP/1.1 101[^]*Sec-WebSocket-Accept: ${accept.replace(/[+/]/g, '\\$&')}`))
  const offset = head.indexOf('\r\n\r\n') + 4
  /** The first frame after the handshake: { opcode, status, reason }. */
  const frame = async () => {
    const bytes = (await client.read((b) => b.length >= offset + 2 && b.length >= offset + 2 + (b[offset + 1] & 0x7f))).subarray(offset)
    const length = bytes[1] & 0x7f
    const payload = bytes.subarray(2, 2 + length)
    return { opcode: bytes[0] & 0x0f, status: length >= 2 ? payload.readUInt16BE(0) : null, reason: payload.subarray(2).toString() }
  }
  /** A masked close frame, as a client must send. */
  const close = (status) => {
    const mask = crypto.randomBytes(4)
    const payload = Buffer.alloc(2)
    payload.writeUInt16BE(status)
    for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4]
    client.socket.write(Buffer.concat([Buffer.from([0x88, 0x80 | payload.length]), mask, payload]))
  }
  return { ...client, frame, close }
}

test('a WebSocket open during the drain gets a close frame (1001 going away), is in flight until it closes, and the drain ends drained', { timeout: 30000 }, async () => {
  const service = startSingle({ WS: '1', SELF_RECYCLE_DRAIN_TIMEOUT: '20s', IDLE_GRACE_MS: '10000' })
  const port = await service.port
  const ws = await webSocket(port)
  await service.line(/ws:open/)
  await recycle(service, port)
  const frame = await ws.frame()
  assert.deepEqual([frame.opcode, frame.status], [8, 1001])
  ws.close(1001)
  await ws.closed
  const { code, events } = await service.closed
  assert.equal(code, 75)
  assert.deepEqual([drainEnd(events).drained, drainEnd(events).inFlight], [true, 0])
})

test('a WebSocket that never closes is in flight until the deadline: drained false, inFlight 1', { timeout: 30000 }, async () => {
  const service = startSingle({ WS: '1', WS_DRAIN: 'app', SELF_RECYCLE_DRAIN_TIMEOUT: '1500ms' })
  const port = await service.port
  const ws = await webSocket(port)
  await service.line(/ws:open/)
  ws.socket.on('end', () => {}) // half-open on purpose: the client never closes its side
  ws.socket.allowHalfOpen = true
  await recycle(service, port)
  const frame = await ws.frame()
  // onUpgradeDrain: the app closed it its own way (status 4000, reason "app").
  assert.deepEqual([frame.opcode, frame.status, frame.reason], [8, 4000, 'app'])
  const { code, events } = await service.closed
  assert.equal(code, 75)
  assert.deepEqual([drainEnd(events).drained, drainEnd(events).inFlight], [false, 1])
})

test('onUpgradeDrain is checked: a TypeError that names the option, the value and what is accepted', () => {
  const script = `
    const http = require('node:http')
    const r = require(${JSON.stringify(path.join(__dirname, '..'))})
    const recycler = r.start({ interval: '1s' })
    const out = []
    for (const onUpgradeDrain of ['close', 5, {}]) {
      try { r.drainHttp(http.createServer(), { onUpgradeDrain }); out.push('ok') } catch (e) { out.push(e.name + ': ' + e.message) }
    }
    console.log(JSON.stringify(out))
    recycler.stop()
  `
  const { execFileSync } = require('node:child_process')
  const out = JSON.parse(execFileSync(process.execPath, ['-e', script], { env: cleanEnv(), encoding: 'utf8' }))
  assert.match(out[0], /^TypeError: drainHttp\(server, \{ onUpgradeDrain \}\): expected a function \(socket, req\) or undefined, got "close"/)
  assert.match(out[1], /onUpgradeDrain.*got 5/)
  assert.match(out[2], /onUpgradeDrain.*got \{\}/)
})
