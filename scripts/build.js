'use strict'
// Builds the addon from source with cargo and puts it where js/binding.js looks for it.
// Skips the build when the .node file is newer than every Rust source (pass --force).

const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const root = path.join(__dirname, '..')
const force = process.argv.includes('--force')
const debug = process.argv.includes('--debug')

function platformSuffix () {
  const { platform, arch } = process
  if (platform === 'linux') {
    const musl = !process.report?.getReport?.().header?.glibcVersionRuntime
    return `linux-${arch}-${musl ? 'musl' : 'gnu'}`
  }
  if (platform === 'win32') return `win32-${arch}-msvc`
  return `${platform}-${arch}`
}

const target = path.join(root, 'js', `self-recycle.${platformSuffix()}.node`)

function newestSource () {
  let newest = 0
  const visit = (file) => {
    const stat = fs.statSync(file)
    if (stat.isDirectory()) {
      for (const entry of fs.readdirSync(file)) visit(path.join(file, entry))
    } else {
      newest = Math.max(newest, stat.mtimeMs)
    }
  }
  for (const entry of ['src', 'Cargo.toml', 'Cargo.lock', 'build.rs']) {
    const file = path.join(root, entry)
    if (fs.existsSync(file)) visit(file)
  }
  return newest
}

if (!force && fs.existsSync(target) && fs.statSync(target).mtimeMs >= newestSource()) {
  process.exit(0)
}

const args = ['build', '--lib', '--message-format=json-render-diagnostics']
if (!debug) args.push('--release')
const result = spawnSync('cargo', args, { cwd: root, stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8', maxBuffer: 64 << 20 })
if (result.error) {
  console.error(`self-recycle: cannot run cargo (${result.error.message}). Building from source needs a Rust toolchain: https://rustup.rs`)
  process.exit(1)
}
if (result.status !== 0) {
  console.error(`self-recycle: cargo build failed with status ${result.status}`)
  process.exit(result.status || 1)
}
let artifact
for (const line of result.stdout.split('\n')) {
  if (!line.startsWith('{')) continue
  const message = JSON.parse(line)
  if (message.reason === 'compiler-artifact' && message.target?.kind?.includes('cdylib')) {
    artifact = message.filenames.find((f) => /\.(so|dylib|dll)$/.test(f))
  }
}
if (!artifact) {
  console.error('self-recycle: cargo did not report the cdylib artifact')
  process.exit(1)
}
// Copy to a temporary name then rename: a running process may have the old file mapped.
const temporary = `${target}.${process.pid}.tmp`
fs.copyFileSync(artifact, temporary)
fs.renameSync(temporary, target)
console.error(`self-recycle: built ${path.relative(root, target)} (${fs.statSync(target).size} bytes)`)
