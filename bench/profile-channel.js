'use strict'
// What the profile channel costs a worker: one poll with no request waiting (what it does
// once a second, forever), opening the channel (once, just after start), and answering one
// `self-recycle profile` request on a heap of HEAP_MIB (one full GC, the profile read and
// written). Usage: node --expose-gc bench/profile-channel.js [polls] [heap MiB]

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { ProfileChannel } = require('../js/channel.js')

const POLLS = Number(process.argv[2] || 200000)
const HEAP_MIB = Number(process.argv[3] || 200)

process.env.XDG_RUNTIME_DIR = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-bench-'))
const recycler = require('..').start({ log: 'off' })
const ms = (from) => Number(process.hrtime.bigint() - from) / 1e6

let at = process.hrtime.bigint()
const channel = new ProfileChannel(() => recycler._profileNow()).open()
const openMs = ms(at)

at = process.hrtime.bigint()
for (let i = 0; i < POLLS; i++) channel.poll()
const pollUs = (ms(at) * 1000) / POLLS

// A heap of HEAP_MIB in small objects, allocated after the baseline would be: growth.
globalThis.kept = []
const kept = globalThis.kept
for (let i = 0; i < HEAP_MIB * 1024; i++) kept.push(Array.from({ length: 120 }, (_, j) => j + 0.5))
const nonce = 'f'.repeat(32)
fs.writeFileSync(path.join(channel.dir, `${process.pid}.profile-request`), JSON.stringify({ nonce }), { mode: 0o600 })
at = process.hrtime.bigint()
channel.poll()
const answerMs = ms(at)
const answer = JSON.parse(fs.readFileSync(path.join(channel.dir, `${process.pid}.profile-${nonce}.json`), 'utf8'))

console.log(JSON.stringify({
  node: process.version,
  pollWithoutRequestUs: Number(pollUs.toFixed(2)),
  openMs: Number(openMs.toFixed(2)),
  heapUsedMiB: Math.round(process.memoryUsage().heapUsed / 1048576),
  keptArrays: kept.length, // used after the request, so the heap is still there
  answerMs: Math.round(answerMs),
  gcMs: answer.profile?.gc?.ms ?? null,
  heapProfileBytes: answer.profile?.heapProfile ? fs.statSync(answer.profile.heapProfile).size : null,
  topSite: answer.profile?.topSites?.[0]?.site ?? answer.profileSkipped
}))
channel.close()
recycler.stop()
fs.rmSync(process.env.XDG_RUNTIME_DIR, { recursive: true, force: true })
