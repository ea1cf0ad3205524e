'use strict'
// What naming jobs costs: track() of settled promises with and without { name }, rounds
// interleaved in one process, medians; then the attribution fit itself on 4096 post-GC
// points and 50 names. `node bench/jobs.js`
const recycle = require('..')
const { JobLedger } = require('../js/jobs.js')
const r = recycle.start({ log: 'off' })
const N = 200000
async function round (named) {
  const started = process.hrtime.bigint()
  for (let i = 0; i < N; i += 1000) {
    const batch = []
    for (let j = 0; j < 1000; j++) batch.push(named ? r.track(Promise.resolve(), { name: `job-${j % 8}` }) : r.track(Promise.resolve()))
    await Promise.all(batch)
    await new Promise(setImmediate)
  }
  return Number(process.hrtime.bigint() - started) / N
}
const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]
async function main () {
  const plain = []
  const named = []
  for (let i = 0; i < 8; i++) {
    if (i % 2) { plain.push(await round(false)); named.push(await round(true)) } else { named.push(await round(true)); plain.push(await round(false)) }
  }
  const ledger = new JobLedger()
  const series = []
  for (let i = 0; i < 4096; i++) {
    series.push([i * 100, 1e8 + i * 1000])
    for (let j = 0; j < 10; j++) ledger.record(`job-${(i + j) % 50}`, i * 100 + j)
  }
  const fitStart = process.hrtime.bigint()
  ledger.attribute(series)
  const fitMs = Number(process.hrtime.bigint() - fitStart) / 1e6
  console.log(`track(): ${median(plain).toFixed(0)} ns per job unnamed, ${median(named).toFixed(0)} ns named (ratio ${(median(named) / median(plain)).toFixed(3)}); the fit over 4096 windows and 50 names: ${fitMs.toFixed(1)} ms`)
  r.stop()
}
main()
