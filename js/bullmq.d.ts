// Types for self-recycle/bullmq. BullMQ's types are not imported (BullMQ is not a dependency):
// what is needed of a Worker and a job is written structurally, so any BullMQ 5+ fits.
import type { Options } from './index'

/** A processor as BullMQ calls it in the child process or worker thread. */
export type SandboxedProcessor<JobType = any, Result = any> =
  (job: JobType, token?: string, signal?: AbortSignal) => Result | Promise<Result>

/**
 * In the processor file (`module.exports = sandboxed(async (job) => ...)`): self-recycle runs
 * in the child, each job is tracked, and a recycle takes the child out of BullMQ's pool once
 * its job's result reached the parent (the parent must call `recycleChildren(worker)`).
 * `options` override the `SELF_RECYCLE_*` variables the child inherits. Defaults in the child:
 * `signals: false` (BullMQ's child handles SIGTERM itself), `fleet: false`; in a worker
 * thread also `maxRss: 'off'`, `containerMax: 'off'` (the RSS is the whole process's) and
 * `minUptime: 0` (Node ends a thread at its heap limit: no near-heap-limit rescue there).
 */
export declare function sandboxed<JobType = any, Result = any>(
  processor: SandboxedProcessor<JobType, Result>,
  options?: Options
): (job: JobType, token?: string, signal?: AbortSignal) => Promise<Awaited<Result>>

/** A child's exit as the parent saw it. */
export interface ChildExit {
  /** The child's process id (a worker thread's threadId with `useWorkerThreads`). */
  pid: number
  code: number | null
  signal: string | null
  /** It left the pool after a recycle (exit code 75 unless EXIT_CODE says otherwise). */
  retired: boolean
  /** The child's 'error' before it exited (a worker thread out of heap: ERR_WORKER_OUT_OF_MEMORY). */
  error?: string
}

export interface RecycleChildrenOptions {
  /** Hears every child's exit (a retired child, one closed with the worker, one that died). */
  onChildExit?: (exit: ChildExit) => void
}

/** What recycleChildren() needs of BullMQ's Worker (created with a processor file). */
export interface SandboxedWorker {
  close(force?: boolean): Promise<void>
}

/**
 * In the process that creates the Worker: a child that recycles leaves the pool between
 * jobs, and the next job gets a fresh child. Throws a TypeError for a Worker whose
 * processor is a function (no child pool). Returns the worker.
 */
export declare function recycleChildren<W extends SandboxedWorker>(worker: W, options?: RecycleChildrenOptions): W
