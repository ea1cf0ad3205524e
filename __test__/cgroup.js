'use strict'
// A real memory cgroup for a test process: cgroup v1 (memory controller) or v2. Needs
// root and a writable cgroup hierarchy; `memoryCgroupUnavailable()` says why not.

const fs = require('node:fs')
const path = require('node:path')

const V1 = '/sys/fs/cgroup/memory'
const V2 = '/sys/fs/cgroup'

function v2Root () {
  try {
    return fs.readFileSync(path.join(V2, 'cgroup.controllers'), 'utf8').split(/\s+/).includes('memory') ? V2 : null
  } catch {
    return null
  }
}

/** Why a memory cgroup cannot be made here, or null when it can. */
function memoryCgroupUnavailable () {
  if (process.getuid?.() !== 0) return 'creating a memory cgroup needs root'
  if (fs.existsSync(path.join(V1, 'memory.limit_in_bytes'))) return null
  if (v2Root()) return null
  return 'no cgroup v1 memory controller nor a cgroup v2 hierarchy with the memory controller'
}

/** Creates a cgroup limited to `bytes`; returns its procs file and a remover. */
function createMemoryCgroup (name, bytes) {
  if (fs.existsSync(path.join(V1, 'memory.limit_in_bytes'))) {
    const dir = path.join(V1, `${name}-${process.pid}`)
    fs.mkdirSync(dir)
    fs.writeFileSync(path.join(dir, 'memory.limit_in_bytes'), String(bytes))
    try { fs.writeFileSync(path.join(dir, 'memory.swappiness'), '0') } catch {}
    return { procs: path.join(dir, 'cgroup.procs'), remove: () => removeWhenEmpty(dir) }
  }
  const root = v2Root()
  try { fs.writeFileSync(path.join(root, 'cgroup.subtree_control'), '+memory') } catch {}
  const dir = path.join(root, `${name}-${process.pid}`)
  fs.mkdirSync(dir)
  fs.writeFileSync(path.join(dir, 'memory.max'), String(bytes))
  try { fs.writeFileSync(path.join(dir, 'memory.swap.max'), '0') } catch {}
  return { procs: path.join(dir, 'cgroup.procs'), remove: () => removeWhenEmpty(dir) }
}

function removeWhenEmpty (dir) {
  for (let i = 0; i < 50; i++) {
    try {
      fs.rmdirSync(dir)
      return
    } catch {
      const start = Date.now()
      while (Date.now() - start < 20) {}
    }
  }
}

/** `sh -c` arguments that move the shell into the cgroup, then exec the command. */
function inCgroup (procs, command, args) {
  const quoted = [command, ...args].map((a) => `'${String(a).replace(/'/g, "'\\''")}'`).join(' ')
  return ['sh', ['-c', `echo $$ > '${procs}' && exec ${quoted}`]]
}

module.exports = { memoryCgroupUnavailable, createMemoryCgroup, inCgroup }
