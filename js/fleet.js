'use strict'
// The fleet: recycle leases, status and history in the app's Redis (loaded only when a
// fleet is configured). The native gate (src/fleet.rs) asks for a lease when an automatic
// recycle is due; this client takes it in Redis and answers `granted`, `wait` or
// `unavailable`. Every Redis call is bounded by FLEET_TIMEOUT and refused at once when the
// connection is not ready, so a Redis that is down, slow or failing delays a recycle by at
// most that much: the fleet may delay a recycle, never prevent one.
//
// Keys share the hash tag `{name}`, so the scripts also run on Redis Cluster:
//   self-recycle:{name}:leases   sorted set: lease token -> expiry (ms, Redis clock)
//   self-recycle:{name}:gap      set for `gap` ms after a grant and after a release
//   self-recycle:{name}:queue    sorted set: waiting token -> first ask (us, Redis clock)
//   self-recycle:{name}:asks     sorted set: waiting token -> when its place lapses (ms)
//   self-recycle:{name}:workers  sorted set: worker id -> heartbeat expiry (ms)
//   self-recycle:{name}:w:<id>   the worker's heartbeat (JSON), expires after 3 beats
//   self-recycle:{name}:rules    hash: worker id -> its `maxConcurrent/gap`, to compare
//   self-recycle:{name}:epoch    when this Redis first saw the fleet (gone: Redis lost it all)
//   self-recycle:{name}:settle   set for one renew period after the epoch (re)appears
//   self-recycle:{name}:events   stream of recycle, exit and storm events (capped)
//   self-recycle:{name}:recent   sorted set of recent recycles, for the storm guard
//   self-recycle:{name}:storm    set while a storm lasts (the gap widens)

const os = require('node:os')
const path = require('node:path')
const crypto = require('node:crypto')
const { internalsOf } = require('./internal.js')

const STREAM_LENGTH = 1000
const RETRY_MS = 250
/** Node fires a timer of 2^31 ms or more at once; the settings stay below it, and so do we. */
const MAX_TIMER_MS = 2 ** 31 - 1
const timerMs = (ms) => Math.min(Math.max(Number(ms) || 0, 1), MAX_TIMER_MS)

function keysOf (name) {
  const base = `self-recycle:{${name}}`
  return {
    leases: `${base}:leases`,
    gap: `${base}:gap`,
    queue: `${base}:queue`,
    asks: `${base}:asks`,
    workers: `${base}:workers`,
    worker: (id) => `${base}:w:${id}`,
    rules: `${base}:rules`,
    epoch: `${base}:epoch`,
    settle: `${base}:settle`,
    events: `${base}:events`,
    recent: `${base}:recent`,
    storm: `${base}:storm`
  }
}

// Redis's clock for every expiry, so hosts with skewed clocks agree. replicate_commands
// lets Redis < 7 write after reading TIME (a no-op since 7).
const NOW = `pcall(redis.replicate_commands)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// A Redis that restarted empty or was flushed has forgotten the leases held: their holders
// re-assert them at their next renewal. The epoch key (when this Redis first saw the fleet)
// tells: every script that touches the fleet (heartbeat, ask, renewal) sets it when missing
// and returns it; a worker that knew another epoch has seen Redis forget, and then nobody is
// granted a lease until a renew period has passed since the new epoch. A new fleet (nobody
// knew an epoch) does not wait.
// epoch(epoch key, settle key, settle ms, the epoch the caller knew or '') -> the epoch.
const EPOCH = `local function epoch (key, settle, ms, known)
  local current = redis.call('GET', key)
  if not current then
    current = tostring(now)
    redis.call('SET', key, current)
  end
  if known ~= '' and known ~= current then
    local left = (tonumber(current) or 0) + ms - now
    if left > 0 and redis.call('EXISTS', settle) == 0 then redis.call('SET', settle, current, 'PX', left) end
  end
  return current
end
`

const SCRIPTS = {
  // KEYS leases, gap, storm, queue, asks; ARGV token, ttl, max, gap, storm gap, forced ('1': a
  // bypass registers itself whatever the count, so the others wait for it), place ttl.
  // Grants go in ask order: the first ask fixes a waiter's place, each retry keeps it, and a
  // waiter that stops asking (it died) loses it after the place ttl.
  // KEYS[6], KEYS[7], ARGV[8], ARGV[9]: the epoch, settle, settle ms, known epoch. The
  // epoch comes back last.
  acquire: `${NOW}${EPOCH}
local token, ttl, max = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local ep = epoch(KEYS[6], KEYS[7], tonumber(ARGV[8]), ARGV[9])
local gone = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now)
for _, lapsed in ipairs(gone) do redis.call('ZREM', KEYS[4], lapsed) end
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
if redis.call('ZSCORE', KEYS[1], token) then
  redis.call('ZADD', KEYS[1], now + ttl, token)
  redis.call('ZREM', KEYS[4], token)
  redis.call('ZREM', KEYS[5], token)
  return {1, 'granted', '', 0, ep}
end
if ARGV[6] ~= '1' then
  local place = tonumber(ARGV[7])
  -- As text: Lua would print a 16-digit number rounded to 14.
  redis.call('ZADD', KEYS[4], 'NX', t[1] .. string.format('%06d', tonumber(t[2])), token)
  redis.call('ZADD', KEYS[5], now + place, token)
  redis.call('PEXPIRE', KEYS[4], place * 2)
  redis.call('PEXPIRE', KEYS[5], place * 2)
  local rank = redis.call('ZRANK', KEYS[4], token)
  local settling = redis.call('PTTL', KEYS[7])
  if settling > 0 then return {0, 'settle', settling, rank, ep} end
  local wait = redis.call('PTTL', KEYS[2])
  if wait > 0 then return {0, 'gap', wait, rank, ep} end
  local holders = redis.call('ZRANGE', KEYS[1], 0, -1)
  if #holders >= max then return {0, 'held', holders[1], rank, ep} end
  if rank >= max - #holders then return {0, 'queued', redis.call('ZRANGE', KEYS[4], 0, 0)[1], rank, ep} end
end
redis.call('ZADD', KEYS[1], now + ttl, token)
redis.call('ZREM', KEYS[4], token)
redis.call('ZREM', KEYS[5], token)
local gap = tonumber(ARGV[4])
if redis.call('EXISTS', KEYS[3]) == 1 then gap = tonumber(ARGV[5]) end
if gap > 0 then redis.call('SET', KEYS[2], token, 'PX', gap) end
return {1, 'granted', '', 0, ep}`,
  // KEYS leases, epoch, settle; ARGV token, ttl, settle ms, known epoch. {1 or 0 (the lease
  // was lost: it expired, or Redis forgot it), epoch}.
  renew: `${NOW}${EPOCH}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local ep = epoch(KEYS[2], KEYS[3], tonumber(ARGV[3]), ARGV[4])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  return {1, ep}
end
return {0, ep}`,
  // KEYS leases, gap, storm, queue, asks; ARGV token, gap, storm gap. Compare-and-delete; a
  // waiter that gives up leaves the line.
  release: `redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  local gap = tonumber(ARGV[2])
  if redis.call('EXISTS', KEYS[3]) == 1 then gap = tonumber(ARGV[3]) end
  if gap > 0 then redis.call('SET', KEYS[2], ARGV[1], 'PX', gap) end
  return 1
end
return 0`,
  // KEYS workers, the worker's key, rules; ARGV id, body, ttl, rules. The heartbeat, on
  // Redis's clock so a host whose clock is off is neither dropped early nor kept late.
  // Returns the epoch, then the members whose rules differ from the caller's (id, rules, ...;
  // at most 20). KEYS[4], KEYS[5], ARGV[5], ARGV[6]: the epoch, settle, settle ms, known epoch.
  beat: `${NOW}${EPOCH}
local ep = epoch(KEYS[4], KEYS[5], tonumber(ARGV[5]), ARGV[6])
local ttl = tonumber(ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ttl)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do redis.call('HDEL', KEYS[3], gone) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
local all = redis.call('HGETALL', KEYS[3])
local differ = {ep}
for i = 1, #all, 2 do
  if all[i + 1] ~= ARGV[4] and #differ < 41 then
    differ[#differ + 1] = all[i]
    differ[#differ + 1] = all[i + 1]
  end
end
return differ`,
  // KEYS recent, storm; ARGV member, window, threshold. The recent recycles when this one
  // starts a storm (once per window fleet-wide), else how many there are.
  storm: `${NOW}
local window = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('PEXPIRE', KEYS[1], window)
local count = redis.call('ZCARD', KEYS[1])
if count > tonumber(ARGV[3]) and redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', window) then
  return redis.call('ZRANGE', KEYS[1], 0, -1)
end
return count`
}
const SHAS = Object.fromEntries(Object.entries(SCRIPTS).map(([name, body]) => [name, crypto.createHash('sha1').update(body).digest('hex')]))

class FleetUnavailable extends Error {}

/** A lease token without its random part: `host:pid`. */
function shortToken (token) {
  return String(token).replace(/:[0-9a-f]{8}$/, '')
}

/**
 * Redis's refusals, named: what it says about a password or a database (never the secret,
 * which Redis does not repeat). `null` for any other error.
 */
function refusal (error) {
  const text = String(error?.message ?? error)
  if (/^NOAUTH\b/.test(text)) return { code: 'auth', why: 'Redis requires a password (NOAUTH): none was given' }
  if (/^WRONGPASS\b|invalid password|invalid username-password/i.test(text)) return { code: 'auth', why: 'Redis refused the password (WRONGPASS)' }
  if (/DB index is out of range|invalid DB index|SELECT is not allowed/i.test(text)) return { code: 'redis', why: `Redis refused the database (${text.split('\n')[0]})` }
  return null
}

function describeError (error) {
  return refusal(error)?.why ?? String(error?.message ?? error).split('\n')[0]
}

/**
 * ioredis, from the app: this package only names it as an optional peer. Looked up from
 * here, the app's entry point, the working directory, then BullMQ's own copy.
 */
function loadIoredis () {
  const attempts = [
    () => require('ioredis'),
    () => require('node:module').createRequire(require.main?.filename ?? path.join(process.cwd(), 'index.js'))('ioredis'),
    () => require('node:module').createRequire(path.join(process.cwd(), 'index.js'))('ioredis'),
    () => require('node:module').createRequire(require.resolve('bullmq', { paths: [process.cwd()] }))('ioredis')
  ]
  for (const attempt of attempts) {
    try {
      const loaded = attempt()
      return loaded.default ?? loaded.Redis ?? loaded
    } catch {}
  }
  throw new Error('self-recycle: a fleet given as a URL or options needs the ioredis package (npm install ioredis: BullMQ names it only as an optional peer, so an app may not have it), or pass your ioredis client as fleet.redis')
}

function isClient (value) {
  return value !== null && typeof value === 'object' && typeof value.evalsha === 'function' && typeof value.status === 'string'
}

/**
 * Our own connection: no offline queue, one retry per command, and no reconnect loop of
 * its own (ioredis's retry timers would keep the process alive while Redis is down): the
 * fleet connects on demand, each attempt bounded by connectTimeout, and the socket is
 * unref'd once connected.
 */
function ownClient (target, timeoutMs, onError = () => {}) {
  const Redis = loadIoredis()
  const options = { lazyConnect: true, maxRetriesPerRequest: 1, enableOfflineQueue: false, connectTimeout: Math.max(timeoutMs, 1000), retryStrategy: () => null }
  let client
  if (typeof target === 'string') client = new Redis(target, options)
  else if (typeof target.url === 'string') {
    // BullMQ accepts { url, ...options }; ioredis wants the URL first.
    const { url, ...rest } = target
    client = new Redis(url, { ...rest, ...options })
  } else client = new Redis({ ...target, ...options })
  client.on('error', onError) // unavailability is reported by the calls that fail
  client.on('connect', () => client.stream?.unref?.())
  return client
}

const IDLE_STATES = new Set(['wait', 'end', 'close'])

class Fleet {
  /**
   * `settings`: the effective config (fleetName, fleetMaxConcurrent, fleetGapMs, ...);
   * `redis`: an ioredis client, a URL, ioredis options, or a promise/function of a client.
   * `recycler`: the Recycler (stats, events); `native`: () => the native recycler or null.
   */
  constructor ({ settings, redis, recycler, native, version }) {
    this.name = settings.fleetName
    this.keys = keysOf(this.name)
    this.maxConcurrent = settings.fleetMaxConcurrent
    this.gapMs = settings.fleetGapMs
    this.stormGapMs = settings.fleetStormGapMs ?? settings.fleetGapMs
    this.leaseTtlMs = settings.fleetLeaseTtlMs
    this.timeoutMs = settings.fleetTimeoutMs
    this.heartbeatMs = settings.fleetHeartbeatMs
    this.renewMs = Math.max(Math.floor(this.leaseTtlMs / 3), 200)
    // A holder renews within a renew period; the renewal and the re-registration that
    // follows a lost lease take at most a timeout each.
    this.settleMs = this.renewMs + 2 * this.timeoutMs
    // A waiter retries at least every ~1.1 s (RETRY_MS, or the gap's rest capped at 1 s): its
    // place outlives a few retries, and a dead waiter's lapses within leaseTtl (at least 5 s).
    this.placeMs = Math.max(this.leaseTtlMs, 5000)
    this.storm = settings.fleetStorm
    this.host = settings.fleetHost ?? os.hostname()
    this.id = `${this.host}:${process.pid}`
    this.version = version
    this.recycler = recycler
    this.native = native
    this.token = null // the lease held (granted or registered by a bypass)
    this.candidate = null // the token this recycle asks with
    this.asking = false
    this.draining = false
    this.renewing = null
    this.pendingWork = new Set()
    this.warned = new Set()
    this.timers = new Set()
    this.closed = false
    this.client = null
    this.own = false
    this.clientError = null
    this.refused = null // a refusal our own connection heard: { code, why }
    this.epoch = '' // the fleet's epoch last seen in Redis ('' : none yet)
    this.connected = false // a Redis call got through once: a later failure is a drop
    this.droppedAt = null // when asks first found the connection dropped
    this.ready = this._resolveClient(redis)
  }

  async _resolveClient (redis) {
    try {
      let target = typeof redis === 'function' ? redis() : redis
      target = await target
      if (isClient(target)) {
        this.client = target
      } else if (typeof target === 'string' || (target && typeof target === 'object')) {
        // A refusal (password, database) is what a failed connection reports, not "end".
        this.client = ownClient(target, this.timeoutMs, (error) => { this.refused = refusal(error) ?? this.refused })
        this.own = true
      } else {
        throw new Error(`fleet.redis must be an ioredis client, a redis:// URL or ioredis options, got ${target === null ? 'null' : typeof target}`)
      }
      if (this.closed) this._quit()
    } catch (error) {
      this.clientError = describeError(error)
      process.emitWarning(`self-recycle: the fleet cannot use Redis: ${this.clientError}; recycles follow the local rules`, { code: 'SELF_RECYCLE_FLEET' })
    }
  }

  start () {
    this._every(this.heartbeatMs, () => this.heartbeat())
    // The first beat as soon as the connection is up.
    this.ready.then(() => this.heartbeat()).catch(() => {})
    return this
  }

  _every (ms, fn) {
    const timer = setInterval(() => { fn().catch(() => {}) }, timerMs(ms))
    timer.unref()
    this.timers.add(timer)
    return timer
  }

  _later (ms, fn) {
    const timer = setTimeout(() => { this.timers.delete(timer); fn() }, timerMs(ms))
    timer.unref()
    this.timers.add(timer)
  }

  /** The client given as a promise or function, waited for at most FLEET_TIMEOUT. */
  async _whenReady () {
    let timer
    await Promise.race([this.ready, new Promise((_resolve, reject) => {
      timer = setTimeout(() => reject(new FleetUnavailable(`the fleet's Redis client was not there within ${this.timeoutMs} ms`)), timerMs(this.timeoutMs))
    })]).finally(() => clearTimeout(timer))
  }

  /** Our own connection, (re)connected on demand; waits at most `ms` for it. */
  async _connect (ms) {
    const client = this.client
    if (!this.own || !client || client.status === 'ready') return
    if (IDLE_STATES.has(client.status)) {
      // A new attempt: a password refused before may be accepted now, or Redis be down.
      if (this.refused?.code === 'auth') this.refused = null
      client.connect().catch(() => {})
    }
    let timer
    let onReady
    await new Promise((resolve) => {
      onReady = resolve
      timer = setTimeout(resolve, timerMs(ms))
      client.once('ready', onReady)
      client.once('end', onReady)
    })
    clearTimeout(timer)
    client.removeListener('ready', onReady)
    client.removeListener('end', onReady)
  }

  /**
   * One bounded Redis call: the app's client is used only when ready (its reconnects are
   * the app's business); ours gets one connect attempt; all abandoned after FLEET_TIMEOUT.
   */
  async _call (fn) {
    await this._connect(this.timeoutMs)
    const client = this.client
    if (!client) throw new FleetUnavailable(this.clientError ?? 'no Redis client yet')
    if (this.refused && (client.status !== 'ready' || this.refused.code === 'redis')) throw Object.assign(new FleetUnavailable(this.refused.why), { refused: this.refused })
    if (client.status !== 'ready') throw Object.assign(new FleetUnavailable(`the Redis connection is ${client.status}`), { dropped: this.connected })
    this.connected = true
    let timer
    const timeout = new Promise((_resolve, reject) => {
      timer = setTimeout(() => reject(new FleetUnavailable(`Redis did not answer in ${this.timeoutMs} ms`)), timerMs(this.timeoutMs))
    })
    try {
      return await Promise.race([fn(client), timeout])
    } catch (error) {
      if (error instanceof FleetUnavailable) throw error
      const refused = refusal(error)
      const dropped = !refused && /Connection is closed|ECONNRESET|ECONNREFUSED|EPIPE/.test(String(error?.message))
      throw Object.assign(new FleetUnavailable(refused ? refused.why : `Redis failed: ${describeError(error)}`), { refused, dropped })
    } finally {
      clearTimeout(timer)
    }
  }

  async _script (name, keys, args) {
    return this._call(async (client) => {
      try {
        return await client.evalsha(SHAS[name], keys.length, ...keys, ...args)
      } catch (error) {
        if (!String(error?.message).includes('NOSCRIPT')) throw error
        return client.eval(SCRIPTS[name], keys.length, ...keys, ...args)
      }
    })
  }

  /** Takes a lease: `{ granted: true }` or `{ granted: false, why }`; throws when unavailable. */
  async acquire (forced = false) {
    // One token per recycle: an attempt that timed out here but succeeded in Redis is found
    // again by the next one (the script renews a lease it already holds).
    this.candidate ??= `${this.id}:${crypto.randomBytes(4).toString('hex')}`
    const token = this.token ?? this.candidate
    const { leases, gap, storm, queue, asks, epoch, settle } = this.keys
    const [granted, what, detail, rank, seen] = await this._script('acquire', [leases, gap, storm, queue, asks, epoch, settle], [token, this.leaseTtlMs, this.maxConcurrent, this.gapMs, this.stormGapMs, forced ? '1' : '0', this.placeMs, this.settleMs, this.epoch])
    this._saw(seen)
    if (granted === 1) {
      this.token = token
      return { granted: true }
    }
    const line = rank > 0 ? `; ${rank} ahead in line` : ''
    if (what === 'settle') return { granted: false, why: `the fleet's Redis lost its leases: ${detail} ms for holders to re-assert theirs${line}`, retryMs: Math.min(Math.max(Number(detail), 50), 1000) }
    if (what === 'gap') return { granted: false, why: `fleet gap: ${detail} ms left${line}`, retryMs: Math.min(Math.max(Number(detail), 50), 1000) }
    if (what === 'queued') return { granted: false, why: `${rank} ahead in line (first: ${shortToken(detail)})`, retryMs: RETRY_MS }
    return { granted: false, why: `lease held by ${shortToken(detail)}${line}`, retryMs: RETRY_MS }
  }

  /** The native gate asks for a lease: try until granted, unavailable or no longer wanted. */
  ask () {
    if (this.asking || this.closed) return
    this.asking = true
    const attempt = async () => {
      let status, why, retryMs
      try {
        await this._whenReady()
        const result = await this.acquire(false)
        status = result.granted ? 'granted' : 'wait'
        why = result.why
        retryMs = result.retryMs
        this.droppedAt = null
      } catch (error) {
        status = 'unavailable'
        why = describeError(error)
        // A connection that was up and dropped (a Redis restart, a failover) gets 2x
        // FLEET_TIMEOUT to come back before the recycle goes ahead alone: a short restart
        // must not let every waiter drain at once. Slow or refusing Redis: no grace.
        if (error?.dropped) {
          this.droppedAt ??= Date.now()
          const left = this.droppedAt + 2 * this.timeoutMs - Date.now()
          if (left > 0) {
            status = 'wait'
            why = `the Redis connection dropped (${why}); retrying for ${left} ms`
            retryMs = RETRY_MS
          }
        }
      }
      let wanted = false
      try { wanted = this.native()?.fleetAnswer({ status, why: why ?? null }) ?? false } catch (error) { this._nativeFailed('fleetAnswer', error) }
      if (status === 'wait' && wanted) {
        this._later((retryMs ?? RETRY_MS) + Math.floor(Math.random() * 100), attempt)
        return
      }
      this.asking = false
      // A waiter nobody waits for any more (timeout, or the recycle went ahead): leave the line.
      if (status === 'wait' && !wanted && !this.draining && !this.token) this.release().catch(() => {})
      if (status === 'granted' && wanted) this._keepLease()
      // A grant nobody waits for any more (the recycle went ahead another way): give it back.
      if (status === 'granted' && !wanted && !this.draining) {
        this.release().catch(() => {})
      }
    }
    attempt()
  }

  /** A recycle drains: hold (or register) a lease while it lasts, record it, watch for a storm. */
  onRecycle (event) {
    if (this.closed) return
    if (!event.dryRun) this.draining = true
    if (event.dryRun) {
      if (this.token) this.release().catch(() => {})
      return
    }
    const hold = this.token ? Promise.resolve() : this.acquire(true).catch(() => {})
    hold.then(() => this._keepLease())
    this._pending(this.heartbeat('draining'))
    this._pending(this.append(event))
    if (this.storm) this._pending(this._checkStorm(event))
  }

  /**
   * Renews the lease every third of its TTL from the grant (the recycle may still wait for
   * the sibling queue) until the exit. A lease that lapsed (the loop was blocked longer
   * than leaseTtl) is registered again: the drain goes on, and the others should wait.
   */
  _keepLease () {
    if (!this.token || this.renewing) return
    this.renewing = this._every(this.renewMs, async () => {
      if (!this.token) return
      const [renewed, seen] = await this._script('renew', [this.keys.leases, this.keys.epoch, this.keys.settle], [this.token, this.leaseTtlMs, this.settleMs, this.epoch])
      this._saw(seen)
      if (renewed === 0 && this.token) await this.acquire(true)
    })
  }

  /** Work the exit waits for (within its bound): the stream entries, the storm check. */
  _pending (promise) {
    const settled = promise.catch(() => {})
    this.pendingWork.add(settled)
    settled.then(() => this.pendingWork.delete(settled))
  }

  async _checkStorm (event) {
    const member = JSON.stringify({ t: Date.now(), host: this.host, pid: process.pid, reason: event.reason, uptimeMs: event.uptimeMs })
    const result = await this._script('storm', [this.keys.recent, this.keys.storm], [member, this.storm.windowMs, this.storm.recycles])
    if (!Array.isArray(result)) return
    const reasons = {}
    const hosts = {}
    const uptimes = []
    for (const text of result) {
      try {
        const entry = JSON.parse(text)
        reasons[entry.reason] = (reasons[entry.reason] ?? 0) + 1
        hosts[entry.host] = (hosts[entry.host] ?? 0) + 1
        if (Number.isFinite(entry.uptimeMs)) uptimes.push(entry.uptimeMs)
      } catch {}
    }
    uptimes.sort((a, b) => a - b)
    const native = this.native()
    if (!native) return
    let storm
    try {
      storm = native.stormEvent({
        fleet: this.name,
        recycles: result.length,
        threshold: this.storm.recycles,
        windowMs: this.storm.windowMs,
        reasons,
        hosts,
        medianUptimeMs: uptimes.length ? uptimes[Math.floor(uptimes.length / 2)] : null,
        gapMs: this.stormGapMs !== this.gapMs ? this.stormGapMs : null
      })
    } catch (error) {
      this._nativeFailed('stormEvent', error)
      return
    }
    internalsOf(this.recycler).emitEvent(storm)
    await this.append(storm)
  }

  /** Appends an event to the fleet's stream (capped at about 1000 entries). */
  async append (event) {
    const entry = { ...event, host: this.host }
    delete entry.topSites // kept in the report; the stream stays small
    await this._call((client) => client.xadd(this.keys.events, 'MAXLEN', '~', STREAM_LENGTH, '*', 'event', event.event, 'host', this.host, 'data', JSON.stringify(entry)))
  }

  /** Gives the lease back (compare-and-delete); the fleet gap starts now. */
  async release () {
    const token = this.token ?? this.candidate
    if (!token) return false
    this.token = null
    this.candidate = null
    if (this.renewing) {
      clearInterval(this.renewing)
      this.timers.delete(this.renewing)
      this.renewing = null
    }
    const { leases, gap, storm, queue, asks } = this.keys
    return (await this._script('release', [leases, gap, storm, queue, asks], [token, this.gapMs, this.stormGapMs])) === 1
  }

  heartbeatBody (stateOverride) {
    const stats = this.recycler.stats()
    const sample = stats.sample ?? {}
    const limits = stats.limits ?? {}
    const shares = [stats.pressure?.rss, stats.pressure?.heap].filter((share) => typeof share === 'number')
    return {
      id: this.id,
      host: this.host,
      pid: process.pid,
      state: stateOverride ?? (stats.staggerPending ? 'queued' : stats.state),
      rss: sample.rss ?? null,
      heapUsed: sample.heapUsed ?? null,
      heapLimit: sample.heapLimit ?? null,
      limits: { rss: limits.rss ?? null, heap: limits.heap ?? null },
      pressure: shares.length ? Math.round(Math.max(...shares) * 1000) / 1000 : null,
      uptimeMs: Math.round(process.uptime() * 1000),
      recycles: stats.counters?.recycles ?? 0,
      jobsDone: stats.counters?.jobsDone ?? 0,
      inFlight: stats.inFlight ?? 0,
      lease: this.token !== null,
      version: this.version,
      node: process.version,
      time: Date.now()
    }
  }

  /** Writes this worker's heartbeat (expires after three beats) and compares the fleet's rules. */
  async heartbeat (state) {
    if (this.closed) return
    const body = this.heartbeatBody(state)
    let rules
    try {
      rules = await this._script('beat', [this.keys.workers, this.keys.worker(this.id), this.keys.rules, this.keys.epoch, this.keys.settle], [this.id, JSON.stringify(body), this.heartbeatMs * 3, `${this.maxConcurrent}/${this.gapMs}`, this.settleMs, this.epoch])
    } catch (error) {
      // Said at start (the first beat) rather than at the first recycle.
      const refused = error?.refused ?? refusal(error)
      if (refused) this._warn(refused.code, `${refused.why}; recycles follow the local rules until it is fixed`)
      throw error
    }
    if (!Array.isArray(rules)) return
    this._saw(rules[0])
    this._compareRules(rules.slice(1))
  }

  /** The fleet's epoch as Redis returned it: the next script tells Redis what we knew. */
  _saw (epoch) {
    if (typeof epoch === 'string' && epoch !== '') this.epoch = epoch
  }

  /**
   * Each worker enforces its own maxConcurrent and gap: members that disagree make the
   * strictest wait for the others' grants, so say so once per disagreement.
   */
  _compareRules (flat) {
    if (!Array.isArray(flat)) return
    const mine = `${this.maxConcurrent}/${this.gapMs}`
    const others = {}
    for (let i = 0; i + 1 < flat.length; i += 2) {
      if (flat[i] !== this.id && flat[i + 1] !== mine) others[flat[i]] = flat[i + 1]
    }
    const ids = Object.keys(others).sort()
    if (!ids.length) return
    const show = (rules) => {
      const [max, gap] = String(rules).split('/')
      return `maxConcurrent ${max}, gap ${gap} ms`
    }
    const named = ids.slice(0, 5).map((id) => `${id} (${show(others[id])})`).join(', ')
    this._warn('mismatch', `members disagree on maxConcurrent/gap: this worker has ${show(mine)}, ${named}${ids.length > 5 ? ' and more' : ''}; each enforces its own, so give them all the same`,
      { maxConcurrent: this.maxConcurrent, gapMs: this.gapMs, others: Object.fromEntries(ids.map((id) => { const [max, gap] = others[id].split('/'); return [id, { maxConcurrent: Number(max), gapMs: Number(gap) }] })) },
      `mismatch:${[...new Set(Object.values(others))].sort().join(',')}`)
  }

  /**
   * A `warning` event, once per `key`.
   * @param {string} code
   * @param {string} reason
   * @param {object | null} [detail]
   * @param {string} [key]
   */
  _warn (code, reason, detail = null, key = `${code}:${reason}`) {
    if (this.warned.has(key)) return
    this.warned.add(key)
    try {
      const event = this.native()?.fleetWarningEvent({ fleet: this.name, code, reason, detail })
      if (event) internalsOf(this.recycler).emitEvent(event)
    } catch (error) {
      this._nativeFailed('fleetWarningEvent', error)
    }
  }

  /**
   * A native call the fleet makes refused its input: a defect of this package, never the
   * app's. Said once per call (a process warning), so it cannot hide as the storm event
   * once did; the fleet carries on without what the call would have given.
   * @param {string} call
   * @param {unknown} error
   */
  _nativeFailed (call, error) {
    if (this.warned.has(`native:${call}`)) return
    this.warned.add(`native:${call}`)
    process.emitWarning(`self-recycle: the fleet's native ${call}() failed: ${describeError(error)}`, { code: 'SELF_RECYCLE_FLEET' })
  }

  /**
   * The process exits: record the `exit` event, give the lease back and take this worker
   * off the status, within `boundMs` (the exit never waits longer for Redis).
   */
  async close (exitEvent, boundMs) {
    if (this.closed) return
    const work = (async () => {
      await Promise.allSettled([...this.pendingWork])
      await Promise.allSettled([
        exitEvent ? this.append(exitEvent) : null,
        this.release(),
        this._call((client) => client.pipeline().del(this.keys.worker(this.id)).zrem(this.keys.workers, this.id).hdel(this.keys.rules, this.id).exec())
      ])
    })()
    let timer
    await Promise.race([work, new Promise((resolve) => { timer = setTimeout(resolve, timerMs(boundMs)) })])
    clearTimeout(timer)
    this.stop()
  }

  /** Stops the timers and gives a lease back (best effort); then closes our own connection. */
  stop () {
    if (this.closed) return
    this.closed = true
    for (const timer of this.timers) clearInterval(timer)
    this.timers.clear()
    const releasing = (this.token ?? this.candidate) ? this.release().catch(() => {}) : Promise.resolve()
    releasing.finally(() => this._quit())
  }

  _quit () {
    if (this.own && this.client) {
      const client = this.client
      this.client = null
      client.quit().catch(() => client.disconnect())
    }
  }
}

/**
 * The fleet as stored: live workers' heartbeats and the last events, for the CLI and tests.
 * `client`: an ioredis client.
 */
async function readFleet (client, name, { events = 20 } = {}) {
  const keys = keysOf(name)
  const [seconds, micros] = await client.time()
  const now = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000)
  const ids = await client.zrangebyscore(keys.workers, now, '+inf')
  const bodies = ids.length ? await client.mget(ids.map((id) => keys.worker(id))) : []
  const workers = bodies.filter(Boolean).map((text) => { try { return JSON.parse(text) } catch { return null } }).filter(Boolean)
  workers.sort((a, b) => a.host.localeCompare(b.host) || a.pid - b.pid)
  const entries = await client.xrevrange(keys.events, '+', '-', 'COUNT', events)
  const history = entries.map(([id, fields]) => {
    const data = fields[fields.indexOf('data') + 1]
    try { return { id, ...JSON.parse(data) } } catch { return { id } }
  }).reverse()
  const leases = await client.zrangebyscore(keys.leases, '-inf', '+inf', 'WITHSCORES')
  const storm = await client.pttl(keys.storm)
  const asks = await client.zrangebyscore(keys.asks, now, '+inf')
  const queue = (await client.zrange(keys.queue, 0, -1)).filter((token) => asks.includes(token))
  return { name, workers, events: history, leases: leases.filter((_, i) => i % 2 === 0).map(shortToken), queue: queue.map(shortToken), storm: storm > 0 ? { leftMs: storm } : null }
}

module.exports = { Fleet, readFleet, loadIoredis, refusal }
