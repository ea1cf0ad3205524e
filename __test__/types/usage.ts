import recycle, { start, once, trackInit, guardStats, EVENTS, SelfRecycleConfigError, type RecycleEvent, type Options } from 'self-recycle'

const options: Options = { maxRss: '768MiB', maxHeap: '85%', drainTimeout: 30_000, interval: '250ms', dryRun: true, log: 'json' }
const r = start(options)
r.on('recycle', (event: RecycleEvent) => console.log(event.reason, event.value, event.limit, event.msg))
r.on('exit', (event) => console.log(event.code, event.drained, event.forced))
r.on('event', (event) => console.log(event.event, event.msg))
const unregister: () => void = r.onDrain(async ({ reason, signal, deadline }) => {
  if (signal.aborted) return
  console.log(reason, deadline - Date.now())
})
unregister()
const tracked: PromiseLike<number> = r.track(Promise.resolve(1))
const total: number = r.jobDone()
const started: boolean = r.recycle('deploy')
const state: string = r.stats().state
const config = once('config', () => ({ url: 'postgres://' }))
const pool: Promise<number> = once('pool', async () => 42, { scope: 'process' })
const client: { id: number } = trackInit('client', () => ({ id: 1 }))
for (const key of guardStats()) console.log(key.key, key.inits, key.heapDelta, key.scope, client.id)
console.log(EVENTS.RECYCLE, recycle.EVENTS.DRAIN, tracked, total, started, state, config.url, pool)
try { start({ maxRss: 'banana' }) } catch (error) { if (error instanceof SelfRecycleConfigError) console.log(error.code, error.variable) }
