'use strict'
// Which job type leaks, and how much per job: `track(promise, { name })` records when each
// named job finished; at a `leak` or `recycle` event the growth of the post-GC heap between
// consecutive major GCs is fitted as a non-negative sum of (jobs of each name finished in
// that window) x (what one such job leaves behind). A name is reported only when the jobs
// explain enough of the growth (`jobsFit.r2`, uncentered) and the name accounts for a real
// share of it; otherwise it is left out. Nothing is recorded for unnamed jobs, so an app
// that names none pays nothing.

/** Completion times kept per name. */
const KEPT_PER_NAME = 20000
/** Names kept (a name per URL would be a leak of its own). */
const MAX_NAMES = 200
/** The most recent windows fitted (the leak window holds as many post-GC points). */
const MAX_WINDOWS = 240
/** What the fit needs before it names anything. */
const MIN_WINDOWS = 6
const MIN_JOBS = 5
const MIN_R2 = 0.5
/** A name below this share of the explained growth is not reported. */
const MIN_SHARE = 0.05

class JobLedger {
  constructor () {
    this.finished = new Map() // name -> epoch ms of completions, oldest first
    this.totals = new Map() // name -> jobs finished since start
    this.refused = 0
  }

  /** Jobs finished per name since start, most first (at most `limit` names). */
  completedByName (limit = Infinity) {
    return [...this.totals].map(([name, jobs]) => ({ name, jobs })).sort((a, b) => b.jobs - a.jobs).slice(0, limit)
  }

  record (name, at = Date.now()) {
    let times = this.finished.get(name)
    if (!times) {
      if (this.finished.size >= MAX_NAMES) {
        this.refused++
        return
      }
      times = []
      this.finished.set(name, times)
    }
    // Trimmed in halves, not one shift per job (that would be O(n) each time).
    if (times.length >= 2 * KEPT_PER_NAME) times.splice(0, KEPT_PER_NAME)
    times.push(at)
    this.totals.set(name, (this.totals.get(name) ?? 0) + 1)
  }

  get named () {
    return this.finished.size > 0
  }

  /**
   * The attribution over `series` (`[epoch ms, post-GC used bytes]`, oldest first):
   * `{ topJobs, jobsFit }`, or null when no job was named.
   */
  attribute (series) {
    if (!this.named) return null
    const names = [...this.finished.keys()]
    const recent = series.slice(-(MAX_WINDOWS + 1))
    const windows = []
    for (let i = 1; i < recent.length; i++) {
      if (recent[i][0] > recent[i - 1][0]) windows.push([recent[i - 1], recent[i]])
    }
    const counts = names.map((name) => countPerWindow(this.finished.get(name), windows))
    const rows = windows.map((_, w) => names.map((_, k) => counts[k][w]))
    const growth = windows.map(([[, before], [, after]]) => after - before)
    const jobs = names.map((_, k) => rows.reduce((sum, row) => sum + row[k], 0))
    /** @type {import('./index.js').JobsFit} */
    const fit = { windows: rows.length, jobs: jobs.reduce((a, b) => a + b, 0), r2: null }
    if (rows.length < MIN_WINDOWS) {
      return { topJobs: [], jobsFit: { ...fit, why: `${rows.length} windows between major GCs; ${MIN_WINDOWS} needed` } }
    }
    const { beta, r2 } = nonNegativeFit(rows, growth)
    fit.r2 = Number(r2.toFixed(3))
    if (!(r2 >= MIN_R2)) {
      return { topJobs: [], jobsFit: { ...fit, why: `the job counts explain ${Math.round(Math.max(r2, 0) * 100)}% of the growth; ${MIN_R2 * 100}% needed` } }
    }
    const retained = names.map((_, k) => beta[k] * jobs[k])
    const explained = retained.reduce((a, b) => a + b, 0)
    const topJobs = names
      .map((name, k) => ({ name, jobs: jobs[k], retainedPerJob: Math.round(beta[k]), share: explained > 0 ? retained[k] / explained : 0 }))
      .filter((job) => job.jobs >= MIN_JOBS && job.retainedPerJob > 0 && job.share >= MIN_SHARE)
      .sort((a, b) => b.share - a.share)
      .map((job) => ({ ...job, share: Number(job.share.toFixed(3)) }))
    return { topJobs, jobsFit: fit }
  }
}

/** Completions in each window (from, to], in one pass over the sorted times. */
function countPerWindow (times, windows) {
  const counts = new Array(windows.length).fill(0)
  let i = 0
  for (let w = 0; w < windows.length; w++) {
    const [[from], [to]] = windows[w]
    while (i < times.length && times[i] <= from) i++
    let j = i
    while (j < times.length && times[j] <= to) j++
    counts[w] = j - i
    i = j
  }
  return counts
}

/**
 * Least squares of `y ~ X b` with b >= 0 (cyclic coordinate descent: the problem is convex,
 * and K, the number of job names, is small). Returns b and the share of the growth the
 * fit explains (uncentered R^2: 1 - residual / sum of y^2).
 */
function nonNegativeFit (X, y) {
  const n = X.length
  const k = X[0]?.length ?? 0
  const beta = new Array(k).fill(0)
  const norms = new Array(k).fill(0)
  for (const row of X) for (let j = 0; j < k; j++) norms[j] += row[j] * row[j]
  const residual = [...y]
  for (let sweep = 0; sweep < 500; sweep++) {
    let moved = 0
    for (let j = 0; j < k; j++) {
      if (norms[j] === 0) continue
      let dot = 0
      for (let i = 0; i < n; i++) dot += X[i][j] * residual[i]
      const next = Math.max(0, beta[j] + dot / norms[j])
      const delta = next - beta[j]
      if (delta !== 0) {
        for (let i = 0; i < n; i++) residual[i] -= X[i][j] * delta
        beta[j] = next
        moved = Math.max(moved, Math.abs(delta))
      }
    }
    if (moved < 0.5) break // half a byte per job: converged
  }
  const total = y.reduce((sum, v) => sum + v * v, 0)
  const left = residual.reduce((sum, r) => sum + r * r, 0)
  return { beta, r2: total > 0 ? 1 - left / total : 0 }
}

module.exports = { JobLedger, nonNegativeFit }
