'use strict'
const { Module } = require('@nestjs/common')
const { BullModule } = require('@nestjs/bullmq')
const { SelfRecycleModule, onceProvider } = require('self-recycle/nest')
const { JobsProcessor, Enricher, EffectsStore } = require('./jobs.processor')

const redisUrl = new URL(process.env.REDIS_URL || 'redis://127.0.0.1:6379')
const connection = { host: redisUrl.hostname, port: Number(redisUrl.port || 6379) }
const queueName = process.env.QUEUE_NAME || 'jobs'

class WorkerModule {}
Module({
  imports: [
    // Limits come from SELF_RECYCLE_* (see supervisor.conf). The fleet: workers of this queue
    // on every host drain one at a time, coordinated in the Redis BullModule already uses.
    SelfRecycleModule.forRoot({ fleet: { name: `${queueName}-workers` } }),
    BullModule.forRoot({ connection }),
    BullModule.registerQueue({ name: queueName })
  ],
  providers: [
    JobsProcessor,
    // The heavy dependency: built once per process, however often Nest asks for it.
    { provide: Enricher, useFactory: onceProvider('enricher', () => new Enricher()) },
    { provide: EffectsStore, useFactory: () => new EffectsStore(connection) }
  ]
})(WorkerModule)

module.exports = { WorkerModule, queueName }
