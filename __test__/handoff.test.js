'use strict'
// RESTART=exec with drainHttp(server, { handOff: true }): the listening socket goes to the
// next generation, so a service recycling in place refuses no connection at all.

const test = require('node:test')
const assert = require('node:assert/strict')
const http = require('node:http')
const net = require('node:net')
const path = require('node:path')
const { spawn } = require('node:child_process')
const { FIXTURES, cleanEnv, parseEvents } = require('./processes')
const { inherited, portOf, addressOf, match } = require('../js/handoff.js')

const freePort = () => new Promise((resolve, reject) => {
  const probe = net.createServer().listen(0, '127.0.0.1', () => {
    const { port } = probe.address()
    probe.close(() => resolve(port))
  }).on('error', reject)
})

/** New connections (no keep-alive) from 16 loops until `done(counts)`; counts answers and errors. */
async function load (port, done) {
  const counts = { ok: 0, generations: {}, errors: {} }
  const one = () => new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk) => { body += chunk })
      res.on('end', () => {
        counts.ok++
        const generation = body.trim().split(' ')[1]
        counts.generations[generation] = (counts.generations[generation] ?? 0) + 1
        resolve()
      })
    })
    req.setTimeout(15000, () => req.destroy(Object.assign(new Error('no answer in 15 s'), { code: 'NO_ANSWER' })))
    req.on('error', (error) => {
      counts.errors[error.code ?? error.message] = (counts.errors[error.code ?? error.message] ?? 0) + 1
      resolve()
    })
  })
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (!done(counts)) await one()
  }))
  return counts
}

/** Runs the service through 3 in-place recycles under load; stops it with SIGTERM. */
async function recycleUnderLoad (handOff) {
  const port = await freePort()
  const child = spawn(process.execPath, [path.join(FIXTURES, 'http-exec.js')], {
    env: cleanEnv({ PORT: String(port), HAND_OFF: handOff ? '1' : '0', FIXTURE_GENERATIONS: '3', FIXTURE_AGE: '700ms', SELF_RECYCLE_LOG: 'json' }),
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let stdout = ''
  let stderr = ''
  const seen = (line) => stdout.split('\n').includes(line)
  const waiters = []
  child.stdout.on('data', (chunk) => {
    stdout += chunk
    for (const waiter of waiters.splice(0)) waiter()
  })
  child.stderr.on('data', (chunk) => { stderr += chunk })
  const closed = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal })))
  const printed = async (line) => {
    while (!seen(line)) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`ended before ${line}:\n${stdout}\n${stderr}`)
      await new Promise((resolve) => { waiters.push(resolve); setTimeout(resolve, 200) })
    }
  }
  await printed('listening 0')
  // Load until the last generation has answered a few requests.
  const counts = await load(port, (so) => (so.generations['3'] ?? 0) >= 50 || child.exitCode !== null)
  child.kill('SIGTERM')
  const { code, signal } = await closed
  return { counts, code, signal, events: parseEvents(stderr), dump: `${JSON.stringify(counts)}\ncode=${code} signal=${signal}\n${stdout}\n${stderr}` }
}

test('RESTART=exec with handOff: three in-place recycles under load refuse no connection; every generation answers', { timeout: 90000 }, async (t) => {
  const { counts, code, events, dump } = await recycleUnderLoad(true)
  t.diagnostic(JSON.stringify(counts))
  assert.deepEqual(counts.errors, {}, dump)
  for (const generation of ['0', '1', '2', '3']) assert.ok(counts.generations[generation] > 0, `generation ${generation} answered: ${dump}`)
  assert.equal(code, 0, dump)
  const exits = events.filter((e) => e.event === 'exit')
  assert.deepEqual(exits.map((e) => e.restart), ['exec', 'exec', 'exec', 'exit'], dump)
  assert.ok(!/SELF_RECYCLE_HANDOFF/.test(dump), 'no hand-off warning')
})

test('without handOff the same recycles refuse connections while the next generation boots (the control)', { timeout: 90000 }, async (t) => {
  const { counts, code, dump } = await recycleUnderLoad(false)
  t.diagnostic(JSON.stringify(counts))
  assert.ok(counts.errors.ECONNREFUSED > 0, dump)
  assert.equal(code, 0, dump)
})

test('inherited sockets: only open sockets passed to this very pid under our names; which one a listen() takes', () => {
  const pid = String(process.pid)
  const yes = () => true
  assert.deepEqual(inherited({ LISTEN_PID: pid, LISTEN_FDS: '3', LISTEN_FDNAMES: 'selfrecycle.8080:other:selfrecycle.443.127.0.0.1' }, yes), [{ port: 8080, host: null, fd: 3 }, { port: 443, host: '127.0.0.1', fd: 5 }])
  assert.deepEqual(inherited({ LISTEN_PID: pid, LISTEN_FDS: '1', LISTEN_FDNAMES: 'selfrecycle.80.--1' }, yes), [{ port: 80, host: '::1', fd: 3 }])
  assert.deepEqual(inherited({ LISTEN_PID: pid, LISTEN_FDS: '1', LISTEN_FDNAMES: 'selfrecycle.8080' }, () => false), [], 'not a socket (any more)')
  assert.deepEqual(inherited({ LISTEN_PID: pid, LISTEN_FDS: '1', LISTEN_FDNAMES: 'selfrecycle.8080' }, () => { throw new Error('EBADF') }), [], 'not open')
  assert.deepEqual(inherited({ LISTEN_PID: '1', LISTEN_FDS: '1', LISTEN_FDNAMES: 'selfrecycle.8080' }, yes), [], 'another process\'s')
  for (const count of ['0', '-1', 'x', '65', '']) assert.deepEqual(inherited({ LISTEN_PID: pid, LISTEN_FDS: count, LISTEN_FDNAMES: 'selfrecycle.1' }, yes), [], count)
  assert.deepEqual(inherited({ LISTEN_PID: pid, LISTEN_FDS: '1', LISTEN_FDNAMES: 'selfrecycle.123456' }, yes), [])
  assert.equal(portOf([8080, '127.0.0.1']), 8080)
  assert.equal(portOf(['8080']), 8080)
  assert.equal(portOf([{ port: 8080, host: '::' }]), 8080)
  for (const args of [[{ fd: 3 }], [{ path: '/tmp/s' }], ['/tmp/s'], [], [() => {}], [{ port: 8080, fd: 3 }]]) assert.equal(portOf(args), null, JSON.stringify(args))
  // Two servers on one port, different addresses: each takes its own.
  const sockets = [{ port: 80, host: '127.0.0.1', fd: 3 }, { port: 80, host: '127.0.0.2', fd: 4 }, { port: 81, host: null, fd: 5 }]
  assert.equal(match(sockets, addressOf([80, '127.0.0.2'])).fd, 4)
  assert.equal(match(sockets, addressOf([{ port: 80, host: '127.0.0.1' }])).fd, 3)
  assert.equal(match(sockets, addressOf([80])), undefined, 'ambiguous: binds again rather than guess')
  assert.equal(match(sockets, addressOf([81, '0.0.0.0'])).fd, 5)
  assert.equal(match(sockets, addressOf([81])).fd, 5)
  assert.equal(match(sockets, addressOf([82])), undefined)
})

test('a generation that hands nothing on (its drain outran DRAIN_TIMEOUT) leaves no stale LISTEN_FDS: the next one binds and serves', { timeout: 90000 }, async () => {
  const port = await freePort()
  const child = spawn(process.execPath, [path.join(FIXTURES, 'http-exec.js')], {
    env: cleanEnv({ PORT: String(port), HAND_OFF: '1', FIXTURE_GENERATIONS: '2', FIXTURE_AGE: '500ms', FIXTURE_HANG_GENERATION: '1', FIXTURE_DRAIN_TIMEOUT: '1s', SELF_RECYCLE_LOG: 'json' }),
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let stdout = ''
  let stderr = ''
  child.stderr.on('data', (chunk) => { stderr += chunk })
  const closed = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal })))
  await new Promise((resolve, reject) => {
    child.stdout.on('data', (chunk) => {
      stdout += chunk
      if (stdout.includes('listening 2\n')) resolve()
    })
    closed.then(() => reject(new Error(`ended before generation 2 listened:\n${stdout}\n${stderr}`)))
  })
  const answer = await new Promise((resolve, reject) => http.get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
    let body = ''
    res.on('data', (chunk) => { body += chunk })
    res.on('end', () => resolve(body))
  }).on('error', reject))
  assert.equal(answer.trim(), 'ok 2')
  child.kill('SIGTERM')
  const { code } = await closed
  assert.equal(code, 0, `${stdout}\n${stderr}`)
  assert.doesNotMatch(stderr, /EINVAL|EBADF|EADDRINUSE/)
  const exits = parseEvents(stderr).filter((e) => e.event === 'exit')
  assert.equal(exits[1]?.drained, false, 'generation 1 was re-executed at its deadline, its socket not handed on')
  assert.match(exits[1].msg, /timed out/)
})
