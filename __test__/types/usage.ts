import * as http from 'node:http'
import recycle, { start, drainHttp, once, trackInit, guardStats, EVENTS, SelfRecycleConfigError, type RecycleEvent, type Options, type Stats, type StopEvent } from 'self-recycle'

const options: Options = { maxRss: '768MiB', maxHeap: '85%', drainTimeout: 30_000, interval: '250ms', dryRun: true, log: 'json', staggerMaxWait: '5m' }
const r = start(options)
r.on('recycle', (event: RecycleEvent) => console.log(event.reason, event.value, event.limit, event.msg, event.stagger, event.staggerWaitMs, event.headroom))
r.on('exit', (event) => console.log(event.code, event.drained, event.forced, event.report, event.heapSnapshot, event.signal))
r.on('leak', (event) => console.log(event.thresholdBytesPerMin, event.points, event.topSites?.[0]?.site))
r.on('recycle', (event) => console.log(event.topSites?.map((s) => `${s.functionName} ${s.file}:${s.line} ${Math.round(s.share * 100)}% ${s.generated?.file ?? ''}`), event.profileSkipped))
r.on('start', (event) => console.log(event.probes.profile, event.config.profile, event.config.profileIntervalBytes))
start({ profile: 'off', profileInterval: '1MiB' })
r.once('stop', (event: StopEvent) => console.log(event.signal, event.joined))
r.off('start', (event) => console.log(event.probes.nearHeapLimit, event.probes.notify, event.probes.oomHandler, event.config.intervalMs))
r.on('event', (event) => console.log(event.event, event.msg))
r.on('warning', (event) => {
  if (event.code === 'status-file-unwritable') console.log(event.path, event.errno ?? event.error)
  else if (event.code === 'status-file-shared') console.log(event.path, event.otherPid)
  else console.log(event.fleetName, event.reason)
})
const statusFailure: number | undefined = r.stats().failures?.statusFile?.count
const unregister: () => void = r.onDrain(async ({ reason, signal, deadline }) => {
  if (signal.aborted) return
  console.log(reason, deadline - Date.now())
})
unregister()
const tracked: Promise<number> = r.track(Promise.resolve(1))
tracked.catch(() => {})
const total: number = r.jobDone()
const started: boolean = r.recycle('deploy')
const stats: Stats = r.stats()
const channel: string | undefined = stats.profileChannel
const jobs = r.jobStats()
if (jobs) console.log(jobs.completed[0]?.name, jobs.completed[0]?.jobs, jobs.refusedNames, jobs.topJobs[0]?.retainedPerJob, jobs.jobsFit?.r2, channel)
const rssNow: number | undefined = stats.sample?.rss
const config = once('config', () => ({ url: 'postgres://' }))
const pool: Promise<number> = once('pool', async () => 42, { scope: 'process' })
const client: { id: number } = trackInit('client', () => ({ id: 1 }))
for (const key of guardStats()) console.log(key.key, key.inits, key.heapDelta, key.scope, client.id)
console.log(EVENTS.RECYCLE, EVENTS.STOP, recycle.EVENTS.DRAIN, total, started, stats.state, rssNow, config.url, pool)
try { start({ maxRss: 'banana' }) } catch (error) { if (error instanceof SelfRecycleConfigError) console.log(error.code, error.variable) }
const detach: () => void = drainHttp(http.createServer(), { idleGraceMs: 500 })
detach()
recycle.drainHttp(http.createServer())
recycle.drainHttp(http.createServer(), { onUpgradeDrain: (socket, req) => { socket.end(); console.log(req.url) } })
recycle.drainHttp(http.createServer(), { handOff: true })
// A fleet on the app's Redis client, and its events.
const fleetRedis = { status: 'ready', evalsha: async (..._args: unknown[]) => null, eval: async (..._args: unknown[]) => null }
start({ fleet: { redis: fleetRedis, name: 'invoices-workers', maxConcurrent: 2, gap: '10s', leaseTtl: 15000, storm: { recycles: 10, window: '5m' }, stormGap: '1m' } })
start({ fleet: { redis: 'redis://redis:6379', storm: 'off' } })
start({ fleet: false })
start().on('storm', (event) => console.log(event.fleetName, event.recycles, event.reasons.rss, event.hosts, event.medianUptimeMs))
start().on('warning', (event) => console.log(event.fleetName, event.code === 'mismatch', event.reason, event.detail?.others))
start().on('recycle', (event) => console.log(event.fleet === 'unavailable' ? event.fleetWhy : event.fleetWaitMs))
