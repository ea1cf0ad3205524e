'use strict'
// Healthy memory shapes near a limit, at default settings (MAX_RSS=400MiB, everything else
// default): how many recycles each gets with PREDICT on (the default) and off, each worker
// restarted on exit as a process manager would, over the same seconds, side by side. Then a
// slow leak for contrast. Also: seconds from SIGTERM to exit for a worker stuck in JS with
// SIGNALS=on and DRAIN_TIMEOUT=3s.
//
//   node bench/shapes.js [seconds per shape, default 90]   -> bench/shapes.md

const { spawn } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const seconds = Number(process.argv[2] || 90)
const SHAPES = ['sawtooth', 'burst', 'steady', 'plateau', 'refill', 'late-gc', 'leak']

/** Runs the shape for `seconds`, restarting the worker on each exit; counts recycles. */
async function runShape (shape, predict) {
  const until = Date.now() + seconds * 1000
  const startedAt = Date.now()
  let recycles = 0
  let peakShare = 0
  let peakRss = 0
  const uptimes = []
  while (Date.now() < until) {
    const child = spawn(process.execPath, ['--expose-gc', path.join(__dirname, 'shape-worker.js')], {
      env: {
        ...process.env,
        SHAPE: shape,
        // The shape's clock runs across restarts, as a workload's would.
        SHAPE_OFFSET_MS: String(Date.now() - startedAt),
        SELF_RECYCLE_MAX_RSS: '400MiB',
        SELF_RECYCLE_PREDICT: predict ? 'on' : 'off',
        SELF_RECYCLE_LOG: 'json'
      },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    child.stdout.on('data', (chunk) => {
      for (const match of String(chunk).matchAll(/share:([\d.]+)/g)) peakRss = Math.max(peakRss, Number(match[1]))
    })
    let stderr = ''
    child.stderr.on('data', (chunk) => { stderr += chunk })
    const timer = setTimeout(() => child.kill('SIGKILL'), Math.max(until - Date.now(), 0))
    const code = await new Promise((resolve) => child.on('close', (c) => resolve(c)))
    clearTimeout(timer)
    for (const line of stderr.split('\n')) {
      if (!line.startsWith('{')) continue
      const event = JSON.parse(line)
      if (event.event === 'recycle') {
        recycles++
        uptimes.push(event.uptimeMs)
        peakShare = Math.max(peakShare, event.value / event.limit)
      }
    }
    if (code !== 75) break
  }
  return { recycles, uptimes, peakShare, peakRss }
}

async function stuckStop () {
  const script = "require('self-recycle').start({ signals: true, drainTimeout: '3s' }); setTimeout(() => { console.log('ready'); for (;;); }, 200)"
  const times = []
  for (let i = 0; i < 5; i++) {
    const child = spawn(process.execPath, ['-e', script.replace("'self-recycle'", JSON.stringify(path.join(__dirname, '..')))], { stdio: ['ignore', 'pipe', 'ignore'] })
    let sentAt = 0
    child.stdout.on('data', () => { if (!sentAt) { sentAt = performance.now(); child.kill('SIGTERM') } })
    const code = await new Promise((resolve) => child.on('close', (c) => resolve(c)))
    times.push({ seconds: (performance.now() - sentAt) / 1000, code })
  }
  return times
}

async function main () {
  const rows = []
  for (const shape of SHAPES) {
    const on = await runShape(shape, true)
    const off = await runShape(shape, false)
    rows.push(`| ${shape} | ${(on.peakRss * 100).toFixed(1)}% | ${on.recycles} | ${off.recycles} | ${on.uptimes.map((u) => (u / 1000).toFixed(1)).join(', ') || '-'} |`)
    console.error(rows[rows.length - 1])
  }
  const stops = await stuckStop()
  const out = [
    '# Healthy shapes near a limit, and a stuck worker told to stop',
    '',
    `node ${process.version}, ${require('node:os').cpus().length} cores; command: \`node bench/shapes.js ${seconds}\``,
    '',
    `\`MAX_RSS=400MiB\`, every other setting default; 4 tracked jobs of 0.5-3 s; each worker restarted on exit; ${seconds} s per shape and setting, run one after the other.`,
    '',
    '| shape | highest RSS seen (share of the limit) | recycles, PREDICT on (default) | recycles, PREDICT off | uptimes at recycle (s), on |',
    '|---|---|---|---|---|',
    ...rows,
    '',
    'Shapes: sawtooth 60% to a 90-97% peak every 9 s, freed; burst +30% for 2 s of every 8 s from 60%; steady at 98%; plateau: a warm-up ramp from 30% that levels at 85% by 40 s; refill: 65% to 90% over 10 s at 50 s; late-gc: a 60-78% sawtooth whose GC runs late once (an 18 s rise, to 96%); leak: 0.2 MiB/s from 97% (the only one that should recycle, once it crosses the limit at about 60 s, and again in each replacement).',
    '',
    '## A worker stuck in JS, SIGTERM with `SIGNALS=on`, `DRAIN_TIMEOUT=3s`',
    '',
    '| run | seconds from SIGTERM to exit | exit code |',
    '|---|---|---|',
    ...stops.map((s, i) => `| ${i + 1} | ${s.seconds.toFixed(2)} | ${s.code} |`),
    ''
  ].join('\n')
  fs.writeFileSync(path.join(__dirname, 'shapes.md'), out)
  console.log(out)
}

main()
