'use strict'
// The fleet's cost: N simulated workers (one Fleet client each, its own Redis connection,
// the real recycler's stats) heartbeat against a private redis-server; Redis commands per
// second and the CPU each worker spends, at the default heartbeat and at 1 s.
// Usage: node bench/fleet.js [workers=100] [seconds=30]   -> bench/fleet.md

const fs = require('node:fs')
const path = require('node:path')
const { startRedis } = require('../__test__/redis')
const IORedis = require('ioredis')
const recycle = require('..')
const { Fleet } = require('../js/fleet.js')

const WORKERS = Number(process.argv[2] || 100)
const SECONDS = Number(process.argv[3] || 30)

async function info (client) {
  const text = await client.info()
  const field = (name) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(text)?.[1] ?? 0)
  return { commands: field('total_commands_processed'), cpu: field('used_cpu_user') + field('used_cpu_sys') }
}

async function run (redis, heartbeatMs) {
  const recycler = recycle.start({ maxRss: '1GiB', log: 'off' })
  const settings = { ...recycler.config, fleetName: `bench-${heartbeatMs}`, fleetHeartbeatMs: heartbeatMs }
  const fleets = []
  for (let i = 0; i < WORKERS; i++) {
    const fleet = new Fleet({ settings: { ...settings, fleetHost: `host-${i % 10}` }, redis: redis.url, recycler, native: () => null, version: 'bench' })
    fleet.id = `host-${i % 10}:${10000 + i}`
    fleets.push(fleet)
  }
  await Promise.all(fleets.map((f) => f.ready))
  await new Promise((resolve) => setTimeout(resolve, 1500)) // connected
  // The same process with the connections open and no heartbeat: what the beats are net of.
  const idleBefore = process.cpuUsage()
  const idleStarted = process.hrtime.bigint()
  await new Promise((resolve) => setTimeout(resolve, 10000))
  const idle = process.cpuUsage(idleBefore)
  const idleUsPerSecond = (idle.user + idle.system) / (Number(process.hrtime.bigint() - idleStarted) / 1e9)
  // Spread the beats over one interval, as workers started at different times would be.
  for (const [i, fleet] of fleets.entries()) setTimeout(() => fleet.start(), Math.floor((heartbeatMs * i) / WORKERS)).unref()
  await new Promise((resolve) => setTimeout(resolve, heartbeatMs + 500))
  const admin = new IORedis(redis.url)
  const before = await info(admin)
  const cpuBefore = process.cpuUsage()
  const started = process.hrtime.bigint()
  await new Promise((resolve) => setTimeout(resolve, SECONDS * 1000))
  const cpu = process.cpuUsage(cpuBefore)
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  const after = await info(admin)
  const live = await admin.zcard(`self-recycle:{bench-${heartbeatMs}}:workers`)
  for (const fleet of fleets) fleet.stop()
  await admin.quit()
  return {
    heartbeatMs,
    live,
    commandsPerSecond: (after.commands - before.commands - 2) / seconds,
    redisCpuPercent: ((after.cpu - before.cpu) / seconds) * 100,
    // The one bench process holds all the clients: its CPU over the workers, less what it
    // spends idle with the connections open, is each one's share.
    cpuMsPerWorkerPerMinute: ((cpu.user + cpu.system - idleUsPerSecond * seconds) / 1000 / WORKERS) * (60 / seconds),
    cpuPercentPerWorker: ((cpu.user + cpu.system - idleUsPerSecond * seconds) / 1e6 / seconds / WORKERS) * 100,
    idlePercent: idleUsPerSecond / 1e4
  }
}

async function main () {
  const redis = await startRedis({ own: true })
  try {
    const results = []
    for (const heartbeatMs of [5000, 1000]) results.push(await run(redis, heartbeatMs))
    const lines = [
      `# Fleet heartbeats: ${WORKERS} simulated workers (node ${process.version}, ${SECONDS} s each, 2 cores)`,
      '',
      'Written by `node bench/fleet.js`. Each worker is a Fleet client with its own Redis connection,',
      'writing its heartbeat (one script: SET with expiry, ZADD and ZREMRANGEBYSCORE on the Redis clock).',
      '',
      '| heartbeat | workers seen live | Redis commands/s | redis-server CPU | client CPU per worker |',
      '|---|---|---|---|---|'
    ]
    for (const r of results) {
      lines.push(`| ${r.heartbeatMs / 1000} s | ${r.live} | ${r.commandsPerSecond.toFixed(1)} | ${r.redisCpuPercent.toFixed(2)}% of a core | ${r.cpuMsPerWorkerPerMinute.toFixed(2)} ms/min (${r.cpuPercentPerWorker.toFixed(4)}% of a core) |`)
    }
    lines.push('', `The bench process idle (connections open, no beats): ${results.map((r) => `${r.idlePercent.toFixed(2)}%`).join(' and ')} of a core; the client figures above are net of it.`)
    const text = `${lines.join('\n')}\n`
    fs.writeFileSync(path.join(__dirname, 'fleet.md'), text)
    process.stdout.write(text)
  } finally {
    await redis.stop()
    process.exit(0)
  }
}

main()
