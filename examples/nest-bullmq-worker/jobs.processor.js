'use strict'
const { Inject } = require('@nestjs/common')
const { Processor, WorkerHost } = require('@nestjs/bullmq')
const IORedis = require('ioredis')

const queueName = process.env.QUEUE_NAME || 'jobs'
const LEAK_BYTES = Number(process.env.LEAK_KIB_PER_JOB || 512) * 1024
const JOB_MS = Number(process.env.JOB_MS || 20)
// LEAK_ON_HEAP=1: the cache keeps arrays (V8 heap) instead of Buffers (off-heap RSS).
const LEAK_ON_HEAP = process.env.LEAK_ON_HEAP === '1'

/** A heavy dependency (think: a DI-built client with big lookup tables). */
class Enricher {
  constructor () {
    this.table = Buffer.alloc(32 << 20, 7)
  }

  enrich (data) {
    return { ...data, region: this.table[data.n % this.table.length] }
  }
}

/** Records each job's side effect in Redis, so a test can prove "exactly once". */
class EffectsStore {
  constructor (connection) {
    this.redis = new IORedis({ ...connection, maxRetriesPerRequest: null })
  }

  record (jobId) {
    return this.redis.hincrby(`${queueName}:effects`, jobId, 1)
  }

  onApplicationShutdown () {
    return this.redis.quit()
  }
}

// The slow leak self-recycle is here for: results cached per job and never trimmed.
const resultCache = []

class JobsProcessor extends WorkerHost {
  constructor (enricher, effects) {
    super()
    this.enricher = enricher
    this.effects = effects
  }

  // Stop taking jobs and let the active ones finish *before* any provider shuts down its
  // connections (BullMQ would otherwise close workers only in onApplicationShutdown, in
  // parallel with EffectsStore quitting Redis under the last jobs).
  async onModuleDestroy () {
    await this.worker.close()
  }

  async process (job) {
    const result = this.enricher.enrich(job.data)
    await new Promise((resolve) => setTimeout(resolve, JOB_MS))
    resultCache.push(LEAK_ON_HEAP ? new Array(LEAK_BYTES / 8).fill(result.region + 0.5) : Buffer.alloc(LEAK_BYTES, result.region))
    await this.effects.record(job.id)
    return { n: job.data.n, pid: process.pid }
  }
}
Processor({ name: queueName, concurrency: Number(process.env.CONCURRENCY || 2) })(JobsProcessor)
Inject(Enricher)(JobsProcessor, undefined, 0)
Inject(EffectsStore)(JobsProcessor, undefined, 1)

module.exports = { JobsProcessor, Enricher, EffectsStore }
