'use strict'
// Load for `self-recycle preflight --load`: keeps CONCURRENCY (default 8) keep-alive
// requests in flight against URL until stopped; waits for the server to listen first.
// Usage: node load.js http://127.0.0.1:3000/
const http = require('node:http')

const url = new URL(process.argv[2] || 'http://127.0.0.1:3000/')
const agent = new http.Agent({ keepAlive: true })
const concurrency = Number(process.env.CONCURRENCY || 8)
let done = 0
let errors = 0

function one () {
  return new Promise((resolve) => {
    const req = http.get(url, { agent }, (res) => {
      res.resume()
      res.on('end', () => { done++; resolve(true) })
    })
    req.on('error', () => { errors++; resolve(false) })
  })
}

async function loop () {
  for (;;) {
    if (!await one()) await new Promise((resolve) => setTimeout(resolve, 100)) // not listening yet
  }
}

for (let i = 0; i < concurrency; i++) loop()
setInterval(() => console.log(`${done} requests, ${errors} errors`), 5000).unref()
