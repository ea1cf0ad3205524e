'use strict'
// The shape docs/ARCHITECTURE.md describes, checked: no import circle between the Rust
// modules, and the decision modules (policy, units, config) do no I/O, start no thread
// and read no clock.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')

const src = path.join(__dirname, '..', 'src')

/** Top-level module name of a file: src/probe/v8.rs -> probe, src/policy.rs -> policy. */
function moduleOf (file) {
  const relative = path.relative(src, file).split(path.sep)
  return relative.length > 1 ? relative[0] : relative[0].replace(/\.rs$/, '')
}

function rustFiles (dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name)
    return entry.isDirectory() ? rustFiles(full) : entry.name.endsWith('.rs') ? [full] : []
  })
}

/** Imports between top-level modules, from `use crate::x` and `crate::x::` paths (tests excluded). */
function importGraph () {
  const graph = new Map()
  for (const file of rustFiles(src)) {
    const from = moduleOf(file)
    if (from === 'lib') continue // the napi surface uses everything, and nothing uses it
    const code = fs.readFileSync(file, 'utf8').split(/#\[cfg\(test\)\]/)[0]
    const targets = graph.get(from) ?? new Set()
    for (const match of code.matchAll(/crate::(\w+)/g)) {
      if (match[1] !== from) targets.add(match[1])
    }
    for (const match of code.matchAll(/use crate::\{([^}]*)\}/g)) {
      for (const name of match[1].split(',')) targets.add(name.trim().split('::')[0])
    }
    graph.set(from, targets)
  }
  return graph
}

test('no import circle between the Rust modules', () => {
  const graph = importGraph()
  assert.ok(graph.size >= 10, [...graph.keys()].join(','))
  const state = new Map()
  const cycle = []
  const visit = (node, trail) => {
    if (state.get(node) === 'done') return false
    if (state.get(node) === 'open') {
      cycle.push(...trail.slice(trail.indexOf(node)), node)
      return true
    }
    state.set(node, 'open')
    for (const next of graph.get(node) ?? []) if (visit(next, [...trail, node])) return true
    state.set(node, 'done')
    return false
  }
  for (const node of graph.keys()) {
    if (visit(node, [])) break
  }
  assert.deepEqual(cycle, [], `import circle: ${cycle.join(' -> ')}`)
})

test('the decision modules do no I/O, start no thread and read no clock', () => {
  for (const name of ['policy', 'trend', 'units', 'config']) {
    // A module's submodules (src/config/machine.rs) are held to the same rule.
    const dir = path.join(src, name)
    const files = [path.join(src, `${name}.rs`), ...(fs.existsSync(dir) ? rustFiles(dir) : [])]
    for (const file of files) {
      const code = fs.readFileSync(file, 'utf8').split(/#\[cfg\(test\)\]/)[0]
      for (const forbidden of [/std::fs/, /std::thread/, /std::net/, /std::io::/, /Instant::now/, /SystemTime/, /libc::/]) {
        const hits = code.split('\n').filter((line) => forbidden.test(line))
        assert.deepEqual(hits, [], `${path.relative(src, file)} uses ${forbidden}`)
      }
    }
  }
})

test('the layers in docs/ARCHITECTURE.md name every JS module and every Rust module', () => {
  const doc = fs.readFileSync(path.join(__dirname, '..', 'docs', 'ARCHITECTURE.md'), 'utf8')
  const layers = doc.split('## Layers')[1].split('```')[1]
  const js = fs.readdirSync(path.join(__dirname, '..', 'js')).filter((name) => name.endsWith('.js')).map((name) => `js/${name}`)
  const rust = fs.readdirSync(src, { withFileTypes: true })
    .filter((entry) => entry.isDirectory() || (entry.name.endsWith('.rs') && entry.name !== 'lib.rs'))
    .map((entry) => entry.isDirectory() ? `src/${entry.name}/` : `src/${entry.name}`)
  const missing = [...js, ...rust].filter((name) => !layers.includes(name))
  assert.deepEqual(missing, [], 'modules missing from the Layers block of docs/ARCHITECTURE.md')
})
