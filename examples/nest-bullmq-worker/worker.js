'use strict'
// A NestJS + BullMQ queue worker with self-recycle: the one-line module import, and one
// line in the bootstrap so a recycle drains by closing Nest (BullMQ finishes active jobs).
require('reflect-metadata')
const { NestFactory } = require('@nestjs/core')
const { SelfRecycleModule } = require('self-recycle/nest')
const { WorkerModule } = require('./worker.module')

async function bootstrap () {
  const app = await NestFactory.createApplicationContext(WorkerModule)
  SelfRecycleModule.closeOnDrain(app)
}

bootstrap().catch((error) => {
  console.error(error)
  process.exit(1)
})
