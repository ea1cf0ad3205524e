import { Worker } from 'bullmq'
import { sandboxed, recycleChildren, type ChildExit } from 'self-recycle/bullmq'

interface ResizeJob { name: string, data: { url: string } }

const processor = sandboxed(async (job: ResizeJob) => ({ resized: job.data.url }), { maxRss: '512MiB', drainTimeout: '20s' })
processor({ name: 'resize', data: { url: 'x' } }).then((result) => console.log(result.resized))
sandboxed((job: ResizeJob, token?: string, signal?: AbortSignal) => `${job.name} ${token} ${signal?.aborted}`)

const worker: Worker = recycleChildren(new Worker('images', './processor.js', { connection: { host: 'localhost' } }), {
  onChildExit: (exit: ChildExit) => console.log(exit.pid, exit.code, exit.signal, exit.retired)
})
worker.on('completed', () => {})
