'use strict'
// A quick check of whatever binary the loader finds, on any platform (the release workflow
// runs it on each target it builds): the addon loads, start() reports its probes, and a
// manual recycle in a child process drains and exits with code 75.

const { spawnSync } = require('node:child_process')
const assert = require('node:assert/strict')
const path = require('node:path')

const entry = path.join(__dirname, '..', 'js', 'index.js')

if (process.argv[2] === 'child') {
  const r = require(entry).start({ log: 'json', minUptime: 0 })
  r.onDrain(() => console.log('drained'))
  setTimeout(() => r.recycle('smoke'), 50)
  setInterval(() => {}, 1000)
} else {
  const recycle = require(entry)
  const r = recycle.start({ log: 'off' })
  r.once('start', (event) => {
    const probes = event.probes
    r.stop()
    const child = spawnSync(process.execPath, [__filename, 'child'], { encoding: 'utf8', timeout: 30000 })
    assert.equal(child.status, 75, `child exit ${child.status}\n${child.stderr}`)
    assert.match(child.stdout, /drained/)
    assert.match(child.stderr, /"event":"exit"/)
    console.log(`smoke ok: ${process.platform}-${process.arch} node ${process.version}, v8 probe ${probes.v8}, rss probe ${probes.rss}, near-heap-limit ${probes.nearHeapLimit}`)
  })
}
