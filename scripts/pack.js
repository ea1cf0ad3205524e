'use strict'
// Writes the npm tarballs into dist/ (and nothing else there):
//   self-recycle-<version>.tgz              the main package: JS, types, README; no .node,
//                                           no sources, no tests; lists every platform
//                                           package in optionalDependencies
//   self-recycle-linux-x64-gnu-<version>.tgz  the portable release binary built here
//
//   node scripts/pack.js                  builds the portable binary (scripts/build.js --portable)
//   node scripts/pack.js --artifacts DIR  release workflow: packs every platform whose
//                                         self-recycle.<platform>.node is somewhere under DIR,
//                                         builds nothing
//
// Each package is staged under target/pack/ first so the checkout is never modified.

const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const root = path.join(__dirname, '..')
const dist = path.join(root, 'dist')
const staging = path.join(root, 'target', 'pack')
const args = process.argv.slice(2)
const artifactsIndex = args.indexOf('--artifacts')
const artifactsDir = artifactsIndex >= 0 ? path.resolve(args[artifactsIndex + 1] ?? '') : null

const mainManifest = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))

function fail (message) {
  console.error(`self-recycle pack: ${message}`)
  process.exit(1)
}

function run (command, commandArgs, options = {}) {
  const result = spawnSync(command, commandArgs, { cwd: root, encoding: 'utf8', ...options })
  if (result.status !== 0) fail(`${command} ${commandArgs.join(' ')} failed: ${result.stderr || result.error?.message}`)
  return result.stdout
}

/** Every platform package: its directory under npm/ and its manifest. */
function platforms () {
  const npmDir = path.join(root, 'npm')
  return fs.readdirSync(npmDir).sort().map((dir) => {
    const manifest = JSON.parse(fs.readFileSync(path.join(npmDir, dir, 'package.json'), 'utf8'))
    if (manifest.version !== mainManifest.version) {
      fail(`npm/${dir} is at ${manifest.version} but the package is at ${mainManifest.version}: run npx napi version`)
    }
    return { dir, source: path.join(npmDir, dir), manifest }
  })
}

/**
 * Files matched by the main package's `files` globs (only `dir/*.ext`, plain names and
 * `!name` exclusions).
 */
function mainFiles () {
  const files = []
  const excluded = new Set(mainManifest.files.filter((p) => p.startsWith('!')).map((p) => path.normalize(p.slice(1))))
  for (const pattern of mainManifest.files) {
    if (pattern.startsWith('!')) continue
    const star = pattern.indexOf('*')
    if (star < 0) {
      if (fs.existsSync(path.join(root, pattern))) files.push(pattern)
      continue
    }
    const dir = path.dirname(pattern)
    const ending = pattern.slice(star + 1)
    for (const name of fs.readdirSync(path.join(root, dir)).sort()) {
      if (name.endsWith(ending)) files.push(path.join(dir, name))
    }
  }
  return files.filter((file) => !excluded.has(path.normalize(file)))
}

function stage (name) {
  const dir = path.join(staging, name)
  fs.rmSync(dir, { recursive: true, force: true })
  fs.mkdirSync(dir, { recursive: true })
  return dir
}

function npmPack (dir) {
  const output = run('npm', ['pack', dir, '--pack-destination', dist, '--ignore-scripts', '--json', '--silent'])
  const [info] = JSON.parse(output)
  return path.join(dist, info.filename)
}

function packMain (all) {
  const dir = stage('self-recycle')
  for (const file of mainFiles()) {
    fs.mkdirSync(path.join(dir, path.dirname(file)), { recursive: true })
    fs.copyFileSync(path.join(root, file), path.join(dir, file))
  }
  // The published manifest: what a user's install needs, nothing that builds or tests.
  const { scripts, devDependencies, ...published } = mainManifest
  published.optionalDependencies = Object.fromEntries(all.map(({ manifest }) => [manifest.name, mainManifest.version]))
  fs.writeFileSync(path.join(dir, 'package.json'), `${JSON.stringify(published, null, 2)}\n`)
  return npmPack(dir)
}

function packPlatform ({ dir: name, source, manifest }, binary) {
  const dir = stage(name)
  for (const file of fs.readdirSync(source)) fs.copyFileSync(path.join(source, file), path.join(dir, file))
  fs.copyFileSync(binary, path.join(dir, manifest.main))
  fs.copyFileSync(path.join(root, 'LICENSE'), path.join(dir, 'LICENSE'))
  return npmPack(dir)
}

function findFile (dir, name) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name)
    if (entry.isFile() && entry.name === name) return full
    if (entry.isDirectory()) {
      const found = findFile(full, name)
      if (found) return found
    }
  }
  return null
}

const all = platforms()
const binaries = new Map()
if (artifactsDir) {
  for (const platform of all) {
    const found = findFile(artifactsDir, platform.manifest.main)
    if (found) binaries.set(platform.dir, found)
  }
  if (binaries.size === 0) fail(`no self-recycle.*.node under ${artifactsDir}`)
} else {
  const out = path.join(staging, 'bin')
  run(process.execPath, [path.join(__dirname, 'build.js'), '--portable', '--out', out], { stdio: ['ignore', 'inherit', 'inherit'] })
  binaries.set('linux-x64-gnu', path.join(out, 'self-recycle.linux-x64-gnu.node'))
}

fs.rmSync(dist, { recursive: true, force: true })
fs.mkdirSync(dist, { recursive: true })
const written = [packMain(all)]
for (const platform of all) {
  const binary = binaries.get(platform.dir)
  if (binary) written.push(packPlatform(platform, binary))
}
for (const file of written) {
  console.log(`${path.relative(root, file)}  ${(fs.statSync(file).size / 1024).toFixed(1)} KiB`)
}
