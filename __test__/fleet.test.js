'use strict'
// Fleet-wide staggering on a real Redis: leases, gap, a dead holder, Redis going away and
// coming back, the storm guard and `self-recycle fleet`.

const test = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const crypto = require('node:crypto')
const { spawn, execFile } = require('node:child_process')
const IORedis = require('ioredis')
const { cleanEnv, parseEvents, FIXTURES } = require('./processes')
const { startRedis } = require('./redis')

const CLI = path.join(__dirname, '..', 'js', 'cli.js')

function worker (env) {
  const child = spawn(process.execPath, [path.join(FIXTURES, 'fleet-worker.js')], {
    env: cleanEnv({
      SELF_RECYCLE_INTERVAL: '50ms',
      SELF_RECYCLE_MIN_UPTIME: '0',
      SELF_RECYCLE_WARMUP: '0',
      SELF_RECYCLE_JITTER: '0%',
      SELF_RECYCLE_STRIKES: '1',
      SELF_RECYCLE_LOG: 'json',
      ...env
    }),
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let stdout = ''
  let stderr = ''
  const waiters = []
  child.stdout.on('data', (chunk) => {
    stdout += chunk
    for (const waiter of waiters.splice(0)) waiter()
  })
  child.stderr.on('data', (chunk) => { stderr += chunk })
  const done = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr, events: parseEvents(stderr), pid: child.pid })))
  const until = async (marker, timeoutMs = 30000) => {
    const deadline = Date.now() + timeoutMs
    while (!stdout.includes(marker)) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`no ${marker} from ${child.pid}: ${stdout}\n${stderr}`)
      await new Promise((resolve) => { waiters.push(resolve); setTimeout(resolve, 100) })
    }
  }
  return { child, done, until }
}

const fleetName = () => `t-${crypto.randomBytes(4).toString('hex')}`

/** A fleet this Redis has known for a while: its epoch is old, and the workers learn it. */
async function settled (name, on = client) {
  await on.set(`self-recycle:{${name}}:epoch`, '0')
}

/** The fleet's stream: [{ event, host, pid, time, ... }] oldest first. */
async function history (client, name) {
  const entries = await client.xrange(`self-recycle:{${name}}:events`, '-', '+')
  return entries.map(([, fields]) => JSON.parse(fields[fields.indexOf('data') + 1]))
}

/** Drains from the stream: [start, end] per pid (recycle event to exit event). */
function drains (events) {
  const byPid = new Map()
  for (const event of events) {
    const entry = byPid.get(event.pid) ?? {}
    if (event.event === 'recycle') entry.start = Date.parse(event.time)
    if (event.event === 'exit') entry.end = Date.parse(event.time)
    byPid.set(event.pid, entry)
  }
  return [...byPid.values()].filter((d) => d.start && d.end).sort((a, b) => a.start - b.start)
}

function maxOverlap (intervals) {
  const points = intervals.flatMap((d) => [[d.start, 1], [d.end, -1]]).sort((a, b) => a[0] - b[0] || a[1] - b[1])
  let now = 0
  let max = 0
  for (const [, step] of points) { now += step; max = Math.max(max, now) }
  return max
}

let redis
let client
test.before(async () => {
  redis = await startRedis()
  client = new IORedis(redis.url)
})
test.after(async () => {
  await client?.quit()
  await redis?.stop()
})

// Each leaks 105 MiB at 40 MiB/s and then holds, over a 100 MiB limit and under the 1.25x
// ceiling: they all cross together and wait their turn.
const LEAKING = { LEAK_MIB: '105', LEAK_MIB_PER_S: '40', SELF_RECYCLE_MAX_RSS: '100MiB', SELF_RECYCLE_RSS_METRIC: 'anon' }

test('8 workers on 4 hosts leaking together with maxConcurrent 1: drains never overlap and are a gap apart', async () => {
  const name = fleetName()
  const env = { ...LEAKING, SELF_RECYCLE_FLEET_REDIS: redis.url, SELF_RECYCLE_FLEET_NAME: name, SELF_RECYCLE_FLEET_GAP: '400ms', DRAIN_MS: '300' }
  const workers = [...Array(8).keys()].map((i) => worker({ ...env, SELF_RECYCLE_FLEET_HOST: `host-${i % 4}` }))
  const results = await Promise.all(workers.map((w) => w.done))
  for (const result of results) {
    assert.equal(result.code, 75, result.stderr)
    const recycle = result.events.find((e) => e.event === 'recycle')
    assert.equal(recycle.fleet, 'granted', JSON.stringify(recycle))
    assert.ok(!recycle.ceiling)
  }
  // They waited for each other: most recycles queued for a lease.
  const waits = results.map((r) => r.events.find((e) => e.event === 'recycle').fleetWaitMs)
  assert.ok(waits.filter((ms) => ms >= 500).length >= 6, `waits ${waits}`)
  const events = await history(client, name)
  assert.deepEqual(new Set(events.map((e) => e.host)), new Set(['host-0', 'host-1', 'host-2', 'host-3']))
  const intervals = drains(events)
  assert.equal(intervals.length, 8, JSON.stringify(events.map((e) => [e.event, e.pid, e.time])))
  assert.equal(maxOverlap(intervals), 1)
  for (let i = 1; i < intervals.length; i++) {
    assert.ok(intervals[i].start - intervals[i - 1].end >= 380, `drain ${i} starts ${intervals[i].start - intervals[i - 1].end} ms after the previous ended`)
  }
})

test('with maxConcurrent 2 at most 2 workers drain at once (and 2 do)', async () => {
  const name = fleetName()
  const env = { ...LEAKING, SELF_RECYCLE_FLEET_REDIS: redis.url, SELF_RECYCLE_FLEET_NAME: name, SELF_RECYCLE_FLEET_GAP: '0', SELF_RECYCLE_FLEET_MAX_CONCURRENT: '2', DRAIN_MS: '800' }
  const results = await Promise.all([...Array(6).keys()].map((i) => worker({ ...env, SELF_RECYCLE_FLEET_HOST: `host-${i % 3}` }).done))
  for (const result of results) assert.equal(result.code, 75, result.stderr)
  const intervals = drains(await history(client, name))
  assert.equal(intervals.length, 6)
  assert.equal(maxOverlap(intervals), 2, JSON.stringify(intervals))
})

test('a lease holder killed mid-drain: the next worker gets the lease within leaseTtl + 1 s', async () => {
  const name = fleetName()
  const env = { SELF_RECYCLE_FLEET_REDIS: redis.url, SELF_RECYCLE_FLEET_NAME: name, SELF_RECYCLE_FLEET_GAP: '0', SELF_RECYCLE_FLEET_LEASE_TTL: '2s', SELF_RECYCLE_DRAIN_TIMEOUT: '60s' }
  const holder = worker({ ...env, SELF_RECYCLE_MAX_AGE: '500ms', DRAIN_MS: 'forever' })
  await holder.until('drain-start')
  const next = worker({ ...env, SELF_RECYCLE_FLEET_HOST: 'next', SELF_RECYCLE_MAX_AGE: '200ms', DRAIN_MS: '100' })
  // The next worker is due and waits for the held lease: Redis lists it in the queue.
  await queued(name, 'next')
  assert.ok(!next.child.stdout.destroyed && next.child.exitCode === null, 'the next worker waited for the lease')
  const killedAt = Date.now()
  holder.child.kill('SIGKILL')
  await next.until('drain-start')
  const tookMs = Date.now() - killedAt
  assert.ok(tookMs <= 3000, `the lease came free ${tookMs} ms after the kill (ttl 2 s)`)
  const result = await next.done
  assert.equal(result.code, 75, result.stderr)
  const recycle = result.events.find((e) => e.event === 'recycle')
  assert.equal(recycle.fleet, 'granted')
  // Granted only once the killed holder's lease lapsed: after the kill.
  assert.ok(Date.parse(recycle.time) >= killedAt - 5, JSON.stringify(recycle))
  assert.ok(recycle.fleetWaitMs > 0, JSON.stringify(recycle))
  assert.equal((await holder.done).signal, 'SIGKILL')
})

/** Waits until Redis lists a waiter of `host` in the fleet's queue (a fact, not a sleep). */
async function queued (name, host, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const line = await client.zrange(`self-recycle:{${name}}:queue`, 0, -1)
    if (line.some((token) => token.startsWith(`${host}:`))) return line
    if (Date.now() > deadline) throw new Error(`${host} never queued: ${line}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

test('grants go in ask order: 6 workers asking one after another are granted in that order, and one killed while queued blocks nobody', async () => {
  const name = fleetName()
  const env = { SELF_RECYCLE_FLEET_REDIS: redis.url, SELF_RECYCLE_FLEET_NAME: name, SELF_RECYCLE_FLEET_GAP: '0', SELF_RECYCLE_FLEET_LEASE_TTL: '2s', SELF_RECYCLE_DRAIN_TIMEOUT: '60s' }
  const holder = worker({ ...env, SELF_RECYCLE_FLEET_HOST: 'holder', SELF_RECYCLE_MAX_AGE: '300ms', DRAIN_MS: 'forever' })
  const waiters = []
  try {
    await holder.until('drain-start')
    for (let i = 0; i < 6; i++) {
      waiters.push(worker({ ...env, SELF_RECYCLE_FLEET_HOST: `q${i}`, SELF_RECYCLE_MAX_AGE: '100ms', DRAIN_MS: '50' }))
      await queued(name, `q${i}`)
    }
    // q2 dies in line; then the holder dies: its lease lapses after 2 s.
    waiters[2].child.kill('SIGKILL')
    holder.child.kill('SIGKILL')
    const killedAt = Date.now()
    const results = await Promise.all(waiters.map((w) => w.done))
    // The dead waiter's place lapses 5 s after its last ask (leaseTtl, at least 5 s).
    assert.ok(Date.now() - killedAt < 9000, `the line moved on ${Date.now() - killedAt} ms after the kill`)
    for (const [i, result] of results.entries()) {
      if (i === 2) continue
      assert.equal(result.code, 75, result.stderr)
      assert.equal(result.events.find((e) => e.event === 'recycle').fleet, 'granted', result.stderr)
    }
    const order = (await history(client, name)).filter((e) => e.event === 'recycle').map((e) => e.host)
    assert.deepEqual(order, ['holder', 'q0', 'q1', 'q3', 'q4', 'q5'])
    assert.deepEqual(await client.zrange(`self-recycle:{${name}}:queue`, 0, -1), [])
  } finally {
    holder.child.kill('SIGKILL')
    for (const w of waiters) w.child.kill('SIGKILL')
  }
})

test('members that disagree on maxConcurrent or gap: each says so once, in a warning event naming the others', async () => {
  const name = fleetName()
  const env = { SELF_RECYCLE_FLEET_REDIS: redis.url, SELF_RECYCLE_FLEET_NAME: name, SELF_RECYCLE_FLEET_HEARTBEAT: '500ms', SELF_RECYCLE_MAX_RSS: '1GiB', IDLE_EXIT_MS: '20000' }
  const one = worker({ ...env, SELF_RECYCLE_FLEET_HOST: 'one', SELF_RECYCLE_FLEET_MAX_CONCURRENT: '1' })
  const three = worker({ ...env, SELF_RECYCLE_FLEET_HOST: 'three', SELF_RECYCLE_FLEET_MAX_CONCURRENT: '3' })
  const same = worker({ ...env, SELF_RECYCLE_FLEET_HOST: 'same', SELF_RECYCLE_FLEET_MAX_CONCURRENT: '3' })
  try {
    await Promise.all([one.until('warning '), three.until('warning '), same.until('warning ')])
    // Three more beats each (their heartbeat times in Redis say so): no second warning.
    const since = Date.now()
    for (;;) {
      const times = await Promise.all([one, three, same].map(async (w) => {
        const ids = await client.zrange(`self-recycle:{${name}}:workers`, 0, -1)
        const id = ids.find((i) => i.endsWith(`:${w.child.pid}`))
        const body = id && await client.get(`self-recycle:{${name}}:w:${id}`)
        return body ? JSON.parse(body).time : 0
      }))
      if (times.every((t) => t >= since + 1500)) break
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  } finally {
    for (const w of [one, three, same]) w.child.kill('SIGKILL')
  }
  const results = await Promise.all([one, three, same].map((w) => w.done))
  const parsed = results.map((r) => r.stdout.split('\n').filter((l) => l.startsWith('warning ')).map((l) => JSON.parse(l.slice(8))))
  for (const [i, hosts] of [[0, null], [1, ['one']], [2, ['one']]]) {
    assert.equal(parsed[i].length, 1, JSON.stringify(parsed[i]))
    const [warning] = parsed[i]
    assert.equal(warning.event, 'warning')
    assert.equal(warning.code, 'mismatch')
    assert.equal(warning.fleetName, name)
    assert.match(warning.msg, /members disagree on maxConcurrent\/gap/)
    const named = Object.keys(warning.detail.others).map((id) => id.split(':')[0])
    if (hosts) assert.deepEqual(named, hosts)
    else assert.ok(named.length >= 1 && named.every((h) => h === 'three' || h === 'same'), JSON.stringify(warning))
  }
  assert.equal(parsed[0][0].detail.others[Object.keys(parsed[0][0].detail.others)[0]].maxConcurrent, 3)
})

test('Redis loses the leases (FLUSHALL) while one drains with maxConcurrent 1: the holder re-asserts its lease and nobody else drains until it releases', async () => {
  const own = await startRedis({ own: true })
  const admin = new IORedis(own.url)
  try {
    const name = fleetName()
    const env = { SELF_RECYCLE_FLEET_REDIS: own.url, SELF_RECYCLE_FLEET_NAME: name, SELF_RECYCLE_FLEET_GAP: '0', SELF_RECYCLE_FLEET_LEASE_TTL: '3s', SELF_RECYCLE_FLEET_TIMEOUT: '300ms', SELF_RECYCLE_DRAIN_TIMEOUT: '60s' }
    await settled(name, admin)
    const holder = worker({ ...env, SELF_RECYCLE_FLEET_HOST: 'holder', SELF_RECYCLE_MAX_AGE: '300ms', DRAIN_MS: '4000' })
    await holder.until('drain-start')
    const waiters = [0, 1].map((i) => worker({ ...env, SELF_RECYCLE_FLEET_HOST: `w${i}`, SELF_RECYCLE_MAX_AGE: '100ms', DRAIN_MS: '50' }))
    for (let i = 0; i < 2; i++) {
      for (;;) {
        if ((await admin.zrange(`self-recycle:{${name}}:queue`, 0, -1)).some((t) => t.startsWith(`w${i}:`))) break
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
    }
    const flushedAt = Date.now()
    await admin.flushall()
    const [held, ...rest] = await Promise.all([holder.done, ...waiters.map((w) => w.done)])
    assert.equal(held.code, 75, held.stderr)
    const releasedAt = Date.parse(held.events.find((e) => e.event === 'exit').time)
    assert.ok(releasedAt - flushedAt > 2000, 'the holder still drained well after the flush')
    for (const result of rest) {
      assert.equal(result.code, 75, result.stderr)
      const recycle = result.events.find((e) => e.event === 'recycle')
      assert.equal(recycle.fleet, 'granted', JSON.stringify(recycle))
      assert.ok(Date.parse(recycle.time) >= releasedAt, `granted ${releasedAt - Date.parse(recycle.time)} ms before the holder released`)
    }
    const starts = rest.map((r) => Date.parse(r.events.find((e) => e.event === 'recycle').time)).sort((a, b) => a - b)
    assert.ok(starts[1] >= Date.parse(rest.find((r) => Date.parse(r.events.find((e) => e.event === 'recycle').time) === starts[0]).events.find((e) => e.event === 'exit').time), 'the two waiters took turns')
  } finally {
    admin.disconnect()
    await own.stop()
  }
})

test('Redis restarts (down 1 s) while one drains with maxConcurrent 1: the waiters ride it out and drain one at a time after the holder', async () => {
  let own = await startRedis({ own: true })
  const admin = new IORedis(own.url)
  const name = fleetName()
  const env = { SELF_RECYCLE_FLEET_REDIS: own.url, SELF_RECYCLE_FLEET_NAME: name, SELF_RECYCLE_FLEET_GAP: '0', SELF_RECYCLE_FLEET_LEASE_TTL: '3s', SELF_RECYCLE_DRAIN_TIMEOUT: '60s' }
  const holder = worker({ ...env, SELF_RECYCLE_FLEET_HOST: 'holder', SELF_RECYCLE_MAX_AGE: '300ms', DRAIN_MS: '5000' })
  const waiters = []
  try {
    await holder.until('drain-start')
    for (let i = 0; i < 3; i++) {
      waiters.push(worker({ ...env, SELF_RECYCLE_FLEET_HOST: `w${i}`, SELF_RECYCLE_MAX_AGE: '100ms', DRAIN_MS: '300' }))
      for (;;) {
        if ((await admin.zrange(`self-recycle:{${name}}:queue`, 0, -1)).some((t) => t.startsWith(`w${i}:`))) break
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
    }
    admin.disconnect()
    await own.stop()
    await new Promise((resolve) => setTimeout(resolve, 1000))
    own = await startRedis({ own: true, port: own.port })
    const [held, ...rest] = await Promise.all([holder.done, ...waiters.map((w) => w.done)])
    assert.equal(held.code, 75, held.stderr)
    const intervals = [held, ...rest].map((r) => ({ start: Date.parse(r.events.find((e) => e.event === 'recycle').time), end: Date.parse(r.events.find((e) => e.event === 'exit').time) }))
    assert.equal(maxOverlap(intervals), 1, JSON.stringify(intervals))
    for (const result of rest) {
      const recycle = result.events.find((e) => e.event === 'recycle')
      assert.equal(result.code, 75, result.stderr)
      assert.equal(recycle.fleet, 'granted', JSON.stringify(recycle))
    }
  } finally {
    holder.child.kill('SIGKILL')
    for (const w of waiters) w.child.kill('SIGKILL')
    await own.stop()
  }
})

test('a held lease never holds a recycle back for good: STAGGER_MAX_WAIT ends the wait (timeout), 1.25x the limit skips it (bypass)', async () => {
  const name = fleetName()
  const env = { SELF_RECYCLE_FLEET_REDIS: redis.url, SELF_RECYCLE_FLEET_NAME: name, SELF_RECYCLE_FLEET_GAP: '0', SELF_RECYCLE_FLEET_LEASE_TTL: '60s', SELF_RECYCLE_DRAIN_TIMEOUT: '60s' }
  const holder = worker({ ...env, SELF_RECYCLE_MAX_AGE: '300ms', DRAIN_MS: 'forever' })
  try {
    await holder.until('drain-start')
    const [patient, leaking] = await Promise.all([
      worker({ ...env, SELF_RECYCLE_MAX_AGE: '200ms', SELF_RECYCLE_STAGGER_MAX_WAIT: '1500ms', DRAIN_MS: '50' }).done,
      worker({ ...env, SELF_RECYCLE_MAX_RSS: '60MiB', SELF_RECYCLE_RSS_METRIC: 'anon', LEAK_MIB: '120', LEAK_MIB_PER_S: '60', DRAIN_MS: '50' }).done
    ])
    const waited = patient.events.find((e) => e.event === 'recycle')
    assert.equal(patient.code, 75, patient.stderr)
    assert.equal(waited.fleet, 'timeout', JSON.stringify(waited))
    assert.match(waited.fleetWhy, /waited \d+ ms \(lease held by /)
    assert.ok(waited.fleetWaitMs >= 1500 && waited.fleetWaitMs < 3500, JSON.stringify(waited))
    const bypassed = leaking.events.find((e) => e.event === 'recycle')
    assert.equal(leaking.code, 75, leaking.stderr)
    assert.equal(bypassed.fleet, 'bypass', JSON.stringify(bypassed))
    assert.ok(bypassed.value >= bypassed.limit * 1.25, JSON.stringify(bypassed))
  } finally {
    holder.child.kill('SIGKILL')
    await holder.done
  }
})

test('Redis killed mid-run: recycles go on with local rules and say why; coordination resumes once it is back', async () => {
  const own = await startRedis({ own: true })
  const name = fleetName()
  const env = { SELF_RECYCLE_FLEET_NAME: name, SELF_RECYCLE_FLEET_GAP: '0', FLEET_URL: own.url, SELF_RECYCLE_FLEET_REDIS: own.url }
  const admin = new IORedis(own.url)
  await settled(name, admin)
  admin.disconnect()
  // An env-only worker (our own connection) and one given the app's BullMQ-style client.
  const before = worker({ ...env, SELF_RECYCLE_MAX_AGE: '300ms' })
  const duringOwn = worker({ ...env, SELF_RECYCLE_MAX_AGE: '2500ms' })
  const duringApp = worker({ ...env, SELF_RECYCLE_FLEET_REDIS: '', FLEET_CLIENT: 'app', SELF_RECYCLE_MAX_AGE: '2500ms' })
  const first = await before.done
  assert.equal(first.events.find((e) => e.event === 'recycle').fleet, 'granted', first.stderr)
  await own.stop()
  const startedAt = Date.now()
  const [a, b] = await Promise.all([duringOwn.done, duringApp.done])
  for (const result of [a, b]) {
    assert.equal(result.code, 75, result.stderr)
    const recycle = result.events.find((e) => e.event === 'recycle')
    assert.equal(recycle.fleet, 'unavailable', JSON.stringify(recycle))
    assert.match(recycle.fleetWhy, /Redis/)
    assert.ok(recycle.fleetWaitMs < 3500, JSON.stringify(recycle))
    assert.doesNotMatch(result.stdout + result.stderr, /unhandled|UnhandledPromiseRejection/i)
  }
  assert.ok(Date.now() - startedAt < 15000)
  // Back on the same port: a worker that started while it was down coordinates again.
  const waiting = worker({ ...env, SELF_RECYCLE_MAX_AGE: '3s' })
  await waiting.until('ready')
  const again = await startRedis({ own: true, port: own.port })
  try {
    const result = await waiting.done
    assert.equal(result.code, 75, result.stderr)
    assert.equal(result.events.find((e) => e.event === 'recycle').fleet, 'granted', result.stderr)
  } finally {
    await again.stop()
  }
})

test('a slow Redis (paused) and a failing one (a key of the wrong type): the recycle goes ahead within FLEET_TIMEOUT and says why', async () => {
  const own = await startRedis({ own: true })
  const admin = new IORedis(own.url)
  try {
    const name = fleetName()
    const env = { SELF_RECYCLE_FLEET_REDIS: own.url, SELF_RECYCLE_FLEET_NAME: name, SELF_RECYCLE_FLEET_TIMEOUT: '300ms' }
    const slow = worker({ ...env, SELF_RECYCLE_MAX_JOBS: '1' })
    await slow.until('ready')
    // Its first heartbeat is in Redis (the connection is up); Redis is paused; then the
    // recycle becomes due (one job done, MAX_JOBS=1).
    while (!(await admin.keys(`self-recycle:{${name}}:w:*`)).length) await new Promise((resolve) => setTimeout(resolve, 50))
    await admin.client('PAUSE', 8000, 'ALL')
    slow.child.kill('SIGUSR2')
    const paused = await slow.done
    assert.equal(paused.code, 75, paused.stderr)
    const recycle = paused.events.find((e) => e.event === 'recycle')
    assert.equal(recycle.fleet, 'unavailable', JSON.stringify(recycle))
    assert.match(recycle.fleetWhy, /Redis did not answer in 300 ms/)
    assert.ok(recycle.fleetWaitMs < 1500, JSON.stringify(recycle))
    await admin.client('UNPAUSE')
    await admin.set(`self-recycle:{${name}}:leases`, 'not a sorted set')
    const failing = await worker({ ...env, SELF_RECYCLE_MAX_AGE: '300ms' }).done
    assert.equal(failing.code, 75, failing.stderr)
    const second = failing.events.find((e) => e.event === 'recycle')
    assert.equal(second.fleet, 'unavailable')
    assert.match(second.fleetWhy, /Redis failed: WRONGTYPE/)
    for (const result of [paused, failing]) assert.doesNotMatch(result.stdout + result.stderr, /unhandled/i)
  } finally {
    await admin.quit().catch(() => {})
    await own.stop()
  }
})

test('a Redis that accepts and never answers: the recycle goes ahead within the bound, and nothing hangs', async () => {
  const net = require('node:net')
  const sockets = new Set()
  const blackhole = net.createServer((socket) => { sockets.add(socket); socket.on('error', () => {}) })
  await new Promise((resolve) => blackhole.listen(0, '127.0.0.1', resolve))
  try {
    const url = `redis://127.0.0.1:${blackhole.address().port}`
    const started = Date.now()
    const result = await worker({ SELF_RECYCLE_FLEET_REDIS: url, SELF_RECYCLE_FLEET_NAME: fleetName(), SELF_RECYCLE_MAX_AGE: '300ms' }).done
    assert.equal(result.code, 75, result.stderr)
    const recycle = result.events.find((e) => e.event === 'recycle')
    assert.equal(recycle.fleet, 'unavailable', JSON.stringify(recycle))
    assert.match(recycle.fleetWhy, /Redis (connection is|did not answer)/)
    assert.ok(recycle.fleetWaitMs < 3500, JSON.stringify(recycle))
    assert.ok(sockets.size >= 1, 'it did connect')
    assert.ok(Date.now() - started < 10000)
  } finally {
    for (const socket of sockets) socket.destroy()
    blackhole.close()
  }
})

function cliWith (args, env, timeoutMs = 15000) {
  return new Promise((resolve) => {
    const started = Date.now()
    execFile(process.execPath, [CLI, ...args], { env: cleanEnv({ NO_COLOR: '1', ...env }), timeout: timeoutMs }, (error, stdout, stderr) => resolve({ code: error?.code ?? 0, killed: error?.killed ?? false, stdout, stderr, ms: Date.now() - started }))
  })
}

test('self-recycle fleet waits for Redis at most FLEET_TIMEOUT: a port that accepts and never answers, a Redis in DEBUG SLEEP', async () => {
  const net = require('node:net')
  const sockets = new Set()
  const blackhole = net.createServer((socket) => { sockets.add(socket); socket.on('error', () => {}) })
  await new Promise((resolve) => blackhole.listen(0, '127.0.0.1', resolve))
  const own = await startRedis({ own: true, args: ['--enable-debug-command', 'yes'] })
  const admin = new IORedis(own.url)
  try {
    const silent = await cliWith(['fleet', '--redis', `redis://127.0.0.1:${blackhole.address().port}`, '--json'], { SELF_RECYCLE_FLEET_TIMEOUT: '500ms' })
    assert.equal(silent.killed, false, 'the command hung')
    assert.equal(silent.code, 1, silent.stderr)
    assert.match(JSON.parse(silent.stdout).error, /Redis did not answer in 500 ms/)
    assert.ok(silent.ms < 5000, `${silent.ms} ms`)
    assert.ok(sockets.size >= 1, 'it did connect')
    // A Redis that is up but busy (DEBUG SLEEP blocks it for 25 s): the flag wins over the env.
    const sleeping = admin.debug('SLEEP', 25).catch(() => {})
    const busy = await cliWith(['fleet', '--redis', own.url, '--timeout', '700ms'], { SELF_RECYCLE_FLEET_TIMEOUT: '30s' })
    assert.equal(busy.killed, false, 'the command hung')
    assert.equal(busy.code, 1, busy.stderr)
    assert.match(busy.stderr, /Redis did not answer in 700 ms/)
    assert.ok(busy.ms < 5000, `${busy.ms} ms`)
    void sleeping
    const bad = await cliWith(['fleet', '--redis', own.url, '--timeout', '5m'], {})
    assert.equal(bad.code, 2)
    assert.match(bad.stderr, /--timeout="5m": expected a duration .*from 50ms to 60s/)
  } finally {
    for (const socket of sockets) socket.destroy()
    blackhole.close()
    admin.disconnect()
    await own.stop()
  }
})

test('a worker whose Redis sleeps (DEBUG SLEEP): the recycle goes ahead within FLEET_TIMEOUT and says why', async () => {
  const own = await startRedis({ own: true, args: ['--enable-debug-command', 'yes'] })
  const admin = new IORedis(own.url)
  try {
    const slow = worker({ SELF_RECYCLE_FLEET_REDIS: own.url, SELF_RECYCLE_FLEET_NAME: fleetName(), SELF_RECYCLE_FLEET_TIMEOUT: '300ms', SELF_RECYCLE_MAX_JOBS: '1', SELF_RECYCLE_FLEET_HEARTBEAT: '500ms' })
    await slow.until('ready')
    // Its first heartbeat is in Redis: the connection is up; then Redis goes to sleep, and
    // then the recycle becomes due (one job done, MAX_JOBS=1).
    for (;;) {
      if ((await admin.keys('self-recycle:*:w:*')).length) break
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    admin.debug('SLEEP', 10).catch(() => {})
    // The command is written to Redis's socket now; the worker asks at its next sample.
    slow.child.kill('SIGUSR2')
    const result = await slow.done
    assert.equal(result.code, 75, result.stderr)
    const recycle = result.events.find((e) => e.event === 'recycle')
    assert.equal(recycle.fleet, 'unavailable', JSON.stringify(recycle))
    assert.match(recycle.fleetWhy, /Redis did not answer in 300 ms/)
    assert.ok(recycle.fleetWaitMs < 1500, JSON.stringify(recycle))
  } finally {
    admin.disconnect()
    await own.stop()
  }
})

test('a Redis that refuses the password or the database: the worker warns at start and names it, the CLI exits 1 with the reason, the secret is never printed', async () => {
  const secret = 'hunter2-' + crypto.randomBytes(4).toString('hex')
  const wrong = 'not-it-' + crypto.randomBytes(4).toString('hex')
  const own = await startRedis({ own: true, args: ['--requirepass', secret] })
  try {
    const at = (auth, db = '') => `redis://${auth}127.0.0.1:${own.port}${db}`
    const cases = [
      [at(`:${wrong}@`), /Redis refused the password \(WRONGPASS\)/],
      [at(''), /Redis requires a password \(NOAUTH\)/]
    ]
    for (const [url, named] of cases) {
      const w = worker({ SELF_RECYCLE_FLEET_REDIS: url, SELF_RECYCLE_FLEET_NAME: fleetName(), SELF_RECYCLE_MAX_AGE: '1500ms' })
      await w.until('warning ')
      const result = await w.done
      assert.equal(result.code, 75, result.stderr)
      const warning = JSON.parse(result.stdout.split('\n').find((l) => l.startsWith('warning ')).slice(8))
      assert.equal(warning.code, 'auth')
      assert.match(warning.msg, named)
      const recycle = result.events.find((e) => e.event === 'recycle')
      assert.equal(recycle.fleet, 'unavailable', JSON.stringify(recycle))
      assert.match(recycle.fleetWhy, named)
      assert.doesNotMatch(result.stdout + result.stderr, new RegExp(`${secret}|${wrong}`))
      const shown = await cliWith(['fleet', '--redis', url, '--json'], {})
      assert.equal(shown.code, 1, shown.stderr)
      assert.match(JSON.parse(shown.stdout).error, named)
      assert.doesNotMatch(shown.stdout + shown.stderr, new RegExp(`${secret}|${wrong}`))
    }
    // The right password, a database Redis does not have: the worker warns and counts the
    // fleet unavailable (not database 0); the CLI exits 1 with the reason, not an empty fleet.
    const inDb = worker({ SELF_RECYCLE_FLEET_REDIS: at(`:${secret}@`, '/99'), SELF_RECYCLE_FLEET_NAME: fleetName(), SELF_RECYCLE_MAX_AGE: '1500ms' })
    await inDb.until('warning ')
    const dbResult = await inDb.done
    assert.equal(dbResult.code, 75, dbResult.stderr)
    const dbWarning = JSON.parse(dbResult.stdout.split('\n').find((l) => l.startsWith('warning ')).slice(8))
    assert.equal(dbWarning.code, 'redis')
    assert.match(dbWarning.msg, /Redis refused the database \(ERR DB index is out of range\)/)
    assert.equal(dbResult.events.find((e) => e.event === 'recycle').fleet, 'unavailable')
    assert.doesNotMatch(dbResult.stdout + dbResult.stderr, new RegExp(secret))
    const db = await cliWith(['fleet', '--redis', at(`:${secret}@`, '/99')], {})
    assert.equal(db.code, 1, db.stdout)
    assert.match(db.stderr, /Redis refused the database \(ERR DB index is out of range\)/)
    assert.doesNotMatch(db.stdout + db.stderr, new RegExp(secret))
    const fine = await cliWith(['fleet', '--redis', at(`:${secret}@`, '/2'), '--json'], {})
    assert.equal(fine.code, 0, fine.stderr)
    assert.deepEqual(JSON.parse(fine.stdout).workers, [])
  } finally {
    await own.stop()
  }
})

test('a storm: more recycles than FLEET_STORM in its window emits storm once, with reasons and hosts', async () => {
  const name = fleetName()
  const env = { SELF_RECYCLE_FLEET_REDIS: redis.url, SELF_RECYCLE_FLEET_NAME: name, SELF_RECYCLE_FLEET_GAP: '0', SELF_RECYCLE_FLEET_STORM: '3/1m', SELF_RECYCLE_FLEET_STORM_GAP: '200ms', SELF_RECYCLE_FLEET_MAX_CONCURRENT: '10', SELF_RECYCLE_MAX_AGE: '300ms', DRAIN_MS: '50' }
  const results = []
  for (let i = 0; i < 5; i++) results.push(await worker({ ...env, SELF_RECYCLE_FLEET_HOST: `h${i % 2}` }).done)
  const storms = results.flatMap((r) => r.events.filter((e) => e.event === 'storm'))
  assert.equal(storms.length, 1, JSON.stringify(storms))
  const [storm] = storms
  assert.equal(storm.recycles, 4)
  assert.equal(storm.threshold, 3)
  assert.equal(storm.fleetName, name)
  assert.deepEqual(storm.reasons, { age: 4 })
  assert.deepEqual(Object.keys(storm.hosts).sort(), ['h0', 'h1'])
  assert.equal(storm.gapMs, 200)
  assert.match(storm.msg, /recycle storm in fleet t-\w+: 4 recycles in 1\.0m \(more than 3\)/)
  assert.match(storm.msg, /limits too tight/)
  assert.ok((await history(client, name)).some((e) => e.event === 'storm'))
  // The storm lasts its window (the gap is widened meanwhile); the fleet's status says so.
  const left = await client.pttl(`self-recycle:{${name}}:storm`)
  assert.ok(left > 50000 && left <= 60000, `storm key ttl ${left}`)
  const shown = JSON.parse((await cli(['fleet', '--redis', redis.url, '--name', name, '--json'])).stdout)
  assert.ok(shown.storm.leftMs > 0)
})

test('a storm without FLEET_STORM_GAP (the gap stays as it is) is emitted too, with gapMs null', async () => {
  const name = fleetName()
  const env = { SELF_RECYCLE_FLEET_REDIS: redis.url, SELF_RECYCLE_FLEET_NAME: name, SELF_RECYCLE_FLEET_GAP: '0', SELF_RECYCLE_FLEET_STORM: '2/1m', SELF_RECYCLE_FLEET_MAX_CONCURRENT: '10', SELF_RECYCLE_MAX_AGE: '300ms', DRAIN_MS: '50' }
  const results = []
  for (let i = 0; i < 3; i++) results.push(await worker(env).done)
  const storms = results.flatMap((r) => r.events.filter((e) => e.event === 'storm'))
  assert.equal(storms.length, 1, JSON.stringify(results.map((r) => r.events.map((e) => e.event))))
  assert.equal(storms[0].recycles, 3)
  assert.equal(storms[0].gapMs, null)
  assert.ok((await history(client, name)).some((e) => e.event === 'storm'))
})

function cli (args) {
  return new Promise((resolve) => execFile(process.execPath, [CLI, ...args], { env: cleanEnv({ NO_COLOR: '1' }) }, (error, stdout, stderr) => resolve({ code: error?.code ?? 0, stdout, stderr })))
}

test('self-recycle fleet --json lists every live worker and the last recycles', async () => {
  const name = fleetName()
  const env = { SELF_RECYCLE_FLEET_REDIS: redis.url, SELF_RECYCLE_FLEET_NAME: name, SELF_RECYCLE_FLEET_HEARTBEAT: '500ms', SELF_RECYCLE_FLEET_GAP: '0' }
  const gone = await worker({ ...env, SELF_RECYCLE_FLEET_HOST: 'old', SELF_RECYCLE_MAX_AGE: '200ms' }).done
  assert.equal(gone.code, 75)
  const live = [0, 1, 2].map((i) => worker({ ...env, SELF_RECYCLE_FLEET_HOST: `web-${i}`, SELF_RECYCLE_MAX_RSS: '1GiB', IDLE_EXIT_MS: '20000' }))
  try {
    await Promise.all(live.map((w) => w.until('ready')))
    // Each live worker's first heartbeat is in Redis.
    const hosts = async () => Promise.all((await client.keys(`self-recycle:{${name}}:w:*`)).map(async (key) => JSON.parse(await client.get(key) ?? '{}').host))
    for (const deadline = Date.now() + 20000; (await hosts()).filter((h) => /^web-/.test(h)).length < 3 && Date.now() < deadline;) await new Promise((resolve) => setTimeout(resolve, 50))
    const { code, stdout, stderr } = await cli(['fleet', '--redis', redis.url, '--name', name, '--json'])
    assert.equal(code, 0, stderr)
    const fleet = JSON.parse(stdout)
    assert.equal(fleet.name, name)
    assert.deepEqual(fleet.workers.map((w) => w.host), ['web-0', 'web-1', 'web-2'])
    assert.deepEqual(fleet.workers.map((w) => w.pid).sort(), live.map((w) => w.child.pid).sort())
    for (const w of fleet.workers) {
      assert.equal(w.state, 'running')
      assert.equal(w.limits.rss, 1 << 30)
      assert.ok(w.rss > 10 << 20 && w.pressure > 0 && w.pressure < 1, JSON.stringify(w))
    }
    assert.deepEqual(fleet.events.map((e) => [e.event, e.host]), [['recycle', 'old'], ['exit', 'old']])
    const table = await cli(['fleet', '--redis', redis.url, '--name', name])
    assert.equal(table.code, 0, table.stderr)
    for (const w of live) assert.match(table.stdout, new RegExp(`web-\\d\\s+${w.child.pid}`))
    assert.match(table.stdout, /age/)
  } finally {
    for (const w of live) w.child.kill('SIGKILL')
  }
  const down = await cli(['fleet', '--redis', 'redis://u:secret@127.0.0.1:1', '--name', name, '--json'])
  assert.equal(down.code, 1)
  const error = JSON.parse(down.stdout)
  assert.equal(error.ok, false)
  assert.match(error.error, /cannot reach Redis at redis:\/\/u:\*\*\*@127\.0\.0\.1:1/)
  assert.doesNotMatch(down.stdout, /secret/)
})

test('the fleet never keeps a process alive: with Redis unreachable, or up, the app ends when its work ends', async () => {
  for (const url of ['redis://127.0.0.1:1', redis.url]) {
    const started = Date.now()
    const result = await new Promise((resolve) => {
      const child = spawn(process.execPath, ['-e', `
        const r = require(${JSON.stringify(path.join(__dirname, '..'))}).start({ fleet: { redis: ${JSON.stringify(url)}, name: 'alive' }, log: 'off' })
        setTimeout(() => console.log('work done'), 300)`], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] })
      let out = ''
      child.stdout.on('data', (chunk) => { out += chunk })
      const kill = setTimeout(() => child.kill('SIGKILL'), 10000)
      child.on('close', (code, signal) => { clearTimeout(kill); resolve({ code, signal, out }) })
    })
    assert.equal(result.signal, null, `${url}: the process had to be killed`)
    assert.equal(result.code, 0)
    assert.match(result.out, /work done/)
    assert.ok(Date.now() - started < 5000, `${url}: ${Date.now() - started} ms`)
  }
})

test('lease scripts: maxConcurrent, the gap after a release and between grants, forced bypass, a retried grant, a lost lease', async () => {
  const { Fleet } = require('../js/fleet.js')
  const name = fleetName()
  const settings = { fleetName: name, fleetMaxConcurrent: 2, fleetGapMs: 0, fleetStormGapMs: null, fleetLeaseTtlMs: 1000, fleetTimeoutMs: 1000, fleetHeartbeatMs: 5000, fleetStorm: null, fleetHost: 'unit' }
  const recycler = { stats: () => ({}), _emitEvent () {} }
  const make = (extra = {}, id) => {
    const fleet = new Fleet({ settings: { ...settings, ...extra }, redis: redis.url, recycler, native: () => null, version: 'test' })
    fleet.id = id
    return fleet
  }
  const [a, b, c] = ['unit:1', 'unit:2', 'unit:3'].map((id) => make({}, id))
  try {
    await Promise.all([a, b, c].map((f) => f.ready))
    await settled(name)
    assert.deepEqual(await a.acquire(), { granted: true })
    assert.deepEqual(await b.acquire(), { granted: true })
    const third = await c.acquire()
    assert.equal(third.granted, false)
    assert.match(third.why, /^lease held by unit:[12]$/)
    // A retry of a grant that already happened (an answer lost to a timeout) finds it again.
    assert.deepEqual(await a.acquire(), { granted: true })
    assert.equal(await client.zcard(`self-recycle:{${name}}:leases`), 2)
    // A bypass registers whatever the count.
    assert.deepEqual(await c.acquire(true), { granted: true })
    assert.equal(await client.zcard(`self-recycle:{${name}}:leases`), 3)
    // Compare-and-delete: releasing twice frees one lease once.
    assert.equal(await c.release(), true)
    assert.equal(await c.release(), false)
    // Leases expire when not renewed; a renewal of a lost lease says so.
    await new Promise((resolve) => setTimeout(resolve, 1100))
    assert.deepEqual(await b._script('renew', [b.keys.leases, b.keys.epoch, b.keys.settle], [b.token, 1000, b.settleMs, b.epoch]), [0, '0'])
    assert.deepEqual(await c.acquire(), { granted: true })
    assert.equal(await client.zcard(`self-recycle:{${name}}:leases`), 1)
    await c.release()
  } finally {
    for (const f of [a, b, c]) f.stop()
  }
  // A new fleet grants at once; once Redis forgets the fleet (its epoch changes), a worker
  // that knew the old epoch holds grants back while the holder re-asserts its lease.
  const freshName = fleetName()
  const [f, g] = ['unit:6', 'unit:7'].map((id) => make({ fleetName: freshName, fleetMaxConcurrent: 1, fleetGapMs: 0, fleetLeaseTtlMs: 3000, fleetTimeoutMs: 100 }, id))
  try {
    await Promise.all([f, g].map((x) => x.ready))
    assert.deepEqual(await f.acquire(), { granted: true }, 'no wait on a new fleet')
    assert.equal((await g.acquire()).granted, false)
    await client.del(`self-recycle:{${freshName}}:epoch`, `self-recycle:{${freshName}}:leases`)
    const held = await g.acquire()
    assert.equal(held.granted, false)
    assert.match(held.why, /^the fleet's Redis lost its leases: \d+ ms for holders to re-assert theirs$/)
    assert.deepEqual((await f._script('renew', [f.keys.leases, f.keys.epoch, f.keys.settle], [f.token, 3000, f.settleMs, f.epoch]))[0], 0)
    assert.deepEqual(await f.acquire(true), { granted: true }, 'the holder re-asserts')
    await new Promise((resolve) => setTimeout(resolve, g.settleMs + 50))
    assert.match((await g.acquire()).why, /^lease held by unit:6$/)
  } finally {
    for (const x of [f, g]) x.stop()
  }
  // The gap: after a release, and after a grant.
  const gapName = fleetName()
  const [d, e] = ['unit:4', 'unit:5'].map((id) => make({ fleetName: gapName, fleetMaxConcurrent: 5, fleetGapMs: 2000 }, id))
  try {
    await Promise.all([d, e].map((f) => f.ready))
    await settled(gapName)
    assert.deepEqual(await d.acquire(), { granted: true })
    const waiting = await e.acquire()
    assert.equal(waiting.granted, false)
    assert.match(waiting.why, /^fleet gap: \d+ ms left$/)
    assert.ok(waiting.retryMs > 0 && waiting.retryMs <= 2000)
    // The gap is 2 s so that a stalled machine between a release and the next ask still
    // asks inside it; the waits are at least the gap (longer only makes them surer).
    await new Promise((resolve) => setTimeout(resolve, 2050))
    await d.release()
    assert.equal((await e.acquire()).granted, false, 'a release starts the gap again')
    await new Promise((resolve) => setTimeout(resolve, 2050))
    assert.deepEqual(await e.acquire(), { granted: true })
  } finally {
    for (const f of [d, e]) f.stop()
  }
})

test('fleet options: bad values name the option, the value and what is accepted', () => {
  const { start } = require('..')
  const cases = [
    [{ fleet: { redis: 'redis://x', gap: 'soon' } }, /option fleet\.gap="soon" is not valid: expected a duration/],
    [{ fleet: { redis: 'redis://x', maxConcurrent: 0 } }, /option fleet\.maxConcurrent="0" .*1 to 10000/],
    [{ fleet: { redis: 'redis://x', name: 'a b' } }, /option fleet\.name="a b" .*letters, digits/],
    [{ fleet: { redis: 'redis://x', storm: '20' } }, /option fleet\.storm="20" .*N\/window/],
    // Durations a JS timer cannot hold (Node fires them at once): refused, like every duration setting.
    [{ fleet: { redis: 'redis://x', heartbeat: '25d' } }, /option fleet\.heartbeat="25d" is not valid: expected .*at most 24d \(2147483647 ms\)/],
    [{ fleet: { redis: 'redis://x', leaseTtl: '100d' } }, /option fleet\.leaseTtl="100d" is not valid: expected .*at most 24d/],
    [{ fleet: { redis: 'redis://x', gap: 2 ** 31 } }, /option fleet\.gap="2147483648" is not valid: expected .*at most 24d/],
    [{ fleet: { redis: 'redis://x', color: 'red' } }, /option fleet\.color is not a fleet option/],
    [{ fleet: { name: 'a' } }, /option fleet\.redis is missing/],
    [{ fleet: 'redis://x' }, /option fleet=redis:\/\/x is not valid/],
    [{ fleetRedis: 'http://x' }, /option fleetRedis="http:\/\/x" .*redis:\/\//],
    [{ fleet: { redis: 42 } }, /option fleet\.redis=42 is not valid: expected an ioredis client/],
    [{ fleet: { redis: 'localhost:6379' } }, /option fleet\.redis="localhost:6379" is not valid/],
    [{ fleet: { redis: ['redis://x'] } }, /option fleet\.redis=redis:\/\/x is not valid/]
  ]
  for (const [options, pattern] of cases) {
    assert.throws(() => start(options), (error) => error.code === 'ERR_SELF_RECYCLE_CONFIG' && pattern.test(error.message), JSON.stringify(options))
  }
})

test('whether a fleet runs, and on which URL, is the settings parser\'s answer: FLEET_REDIS=off is none, a URL option is FLEET_REDIS (shown without its password)', async () => {
  const off = await worker({ SELF_RECYCLE_FLEET_REDIS: 'off', SELF_RECYCLE_MAX_AGE: '300ms' }).done
  assert.equal(off.code, 75, off.stderr)
  const recycle = off.events.find((e) => e.event === 'recycle')
  assert.equal(recycle.fleet, undefined, JSON.stringify(recycle))
  assert.equal(off.events.find((e) => e.event === 'start').config.fleetRedis, null)
  assert.doesNotMatch(off.stderr, /SELF_RECYCLE_FLEET/)
  // The same worker on a URL in force asks the fleet (here: a port nobody listens on).
  const on = await worker({ SELF_RECYCLE_FLEET_REDIS: 'redis://127.0.0.1:1', SELF_RECYCLE_FLEET_NAME: fleetName(), SELF_RECYCLE_FLEET_TIMEOUT: '300ms', SELF_RECYCLE_MAX_AGE: '300ms' }).done
  assert.equal(on.code, 75, on.stderr)
  assert.equal(on.events.find((e) => e.event === 'recycle').fleet, 'unavailable')
  // fleet.redis as a URL: connected with its password, shown without it.
  const secret = crypto.randomBytes(6).toString('hex')
  const url = redis.url.replace('redis://', `redis://default:${secret}@`)
  const shown = await new Promise((resolve) => {
    execFile(process.execPath, ['-e', `
      const r = require(${JSON.stringify(path.join(__dirname, '..'))}).start({ fleet: { redis: ${JSON.stringify(url)}, name: 'shown' }, log: 'off' })
      console.log(JSON.stringify(r.config.fleetRedis)); r.stop()`], { env: cleanEnv(), timeout: 10000 }, (error, stdout, stderr) => resolve({ error, stdout, stderr }))
  })
  assert.equal(shown.error, null, shown.stderr)
  assert.equal(JSON.parse(shown.stdout), url.replace(secret, '***'))
  assert.doesNotMatch(shown.stdout + shown.stderr, new RegExp(secret))
})

test('Nest: forRoot({ fleet: { name } }) takes the connection of BullModule.forRoot, and of forRootAsync resolved later', { timeout: 60000 }, async () => {
  const { runFixture } = require('./processes')
  for (const async of ['0', '1']) {
    const name = fleetName()
    const result = await runFixture('nest-fleet.js', {
      env: { REDIS_URL: redis.url, FLEET_NAME: name, FIXTURE_ASYNC: async, SELF_RECYCLE_MAX_AGE: '1500ms', SELF_RECYCLE_MIN_UPTIME: '0', SELF_RECYCLE_WARMUP: '0', SELF_RECYCLE_JITTER: '0%', SELF_RECYCLE_LOG: 'json' },
      timeoutMs: 20000
    })
    assert.equal(result.code, 75, `${async}: ${result.stderr}`)
    const recycle = JSON.parse(result.lines.find((l) => l.startsWith('recycle ')).slice('recycle '.length))
    assert.equal(recycle.fleet, 'granted', `${async}: ${JSON.stringify(recycle)}`)
    const events = await history(client, name)
    assert.deepEqual(events.map((e) => e.event), ['recycle', 'exit'], `${async}: ${JSON.stringify(events)}`)
  }
})
