'use strict'
// A small HTTP service for `self-recycle preflight --load`: each request renders a page for
// one of 5,000 keys and keeps it in a cache (bounded: it warms to about 20 MiB, then stays).
// LEAK=1 builds the leaky variant: every request also keeps 1 KiB for good.
// PORT (default 3000) is where it listens.
const http = require('node:http')
const recycler = require('../..').start()

const CACHE_KEYS = 5000
const cache = new Map()
const leaked = []

function render (key) {
  const rows = []
  for (let i = 0; i < 40; i++) rows.push({ key, i, label: `row ${i} of ${key}`, at: Date.now() })
  return JSON.stringify(rows)
}

const server = http.createServer((req, res) => {
  const key = Math.floor(Math.random() * CACHE_KEYS)
  let page = cache.get(key)
  if (page === undefined) {
    page = render(key)
    cache.set(key, page)
  }
  if (process.env.LEAK === '1') leaked.push(Buffer.alloc(1024, 1).toString('latin1'))
  // Per-request garbage, as a real handler makes: parse the cached page and answer a slice.
  const body = JSON.stringify(JSON.parse(page).slice(0, 5))
  res.writeHead(200, { 'content-type': 'application/json' })
  res.end(body)
})
server.listen(Number(process.env.PORT || 3000), '127.0.0.1', () => console.log(`listening on ${server.address().port}`))
recycler.onDrain(() => new Promise((resolve) => server.close(resolve)))
