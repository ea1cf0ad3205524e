'use strict'
// Builds the addon from source with cargo.
//
//   node scripts/build.js             development build for this machine, into js/ (where the
//                                     loader looks first); skipped while it is newer than every
//                                     Rust source. This is the checkout's `prepare` script: it
//                                     never runs when the package is installed as a dependency.
//   --force                           build even if fresh
//   --debug                           debug profile
//   --portable                        linux-x64-gnu release binary for glibc >= 2.17, linked with
//                                     napi-rs's prebuilt GCC cross toolchain (an npm package)
//   --out DIR                         write the .node file into DIR instead of js/
//
// A development build into js/ also regenerates js/native.d.ts, the binding's types, from
// the same compile (scripts/native-dts.js; that script alone regenerates it without a build).

const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const { platformSuffix } = require('../js/platform.js')

const root = path.join(__dirname, '..')
const args = process.argv.slice(2)
const force = args.includes('--force')
const debug = args.includes('--debug')
const portable = args.includes('--portable')
const outIndex = args.indexOf('--out')
const outDir = outIndex >= 0 ? path.resolve(args[outIndex + 1] ?? '') : path.join(root, 'js')
const writesTypes = outIndex < 0 && !portable

const PORTABLE_TARGET = 'x86_64-unknown-linux-gnu'
// napi-rs's prebuilt GCC 4.8 / glibc 2.17 toolchain, the one `napi build --use-napi-cross`
// uses; pinned and checked, fetched only by --portable (it is 48 MiB, x64 hosts only).
const TOOLCHAIN = {
  spec: '@napi-rs/cross-toolchain-x64-target-x86_64@1.0.0',
  integrity: 'sha512-lecoghCfoTAX9MLFcIx9/nL9M8xdkZ9n8Pki8qjKUNzjiq1zbECdEbzIZAMMHRtrXxifK9dAyYuh8gSxNbr2og=='
}

function fail (message) {
  console.error(`self-recycle: ${message}`)
  process.exit(1)
}

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

function hasCommand (command) {
  return spawnSync(command, ['--version'], { stdio: 'ignore' }).status === 0
}

/**
 * Fetches and unpacks the cross toolchain into target/ once, and returns the environment
 * that makes cargo compile and link with it.
 */
function portableToolchainEnv () {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    fail(`--portable builds linux-x64-gnu on a linux-x64 host; this is ${process.platform}-${process.arch} (the release workflow builds the other targets)`)
  }
  const cache = path.join(root, 'target', 'napi-cross')
  const toolchain = path.join(cache, TOOLCHAIN.spec.replace(/[@/]/g, '_'))
  const gcc = path.join(toolchain, 'bin', `${PORTABLE_TARGET}-gcc`)
  if (!fs.existsSync(gcc)) {
    const partial = `${toolchain}.partial`
    fs.rmSync(partial, { recursive: true, force: true })
    fs.mkdirSync(partial, { recursive: true })
    const packed = spawnSync('npm', ['pack', TOOLCHAIN.spec, '--json', '--silent', '--pack-destination', partial], { encoding: 'utf8' })
    if (packed.status !== 0) fail(`cannot fetch ${TOOLCHAIN.spec} from the npm registry: ${packed.stderr}`)
    const tarball = path.join(partial, JSON.parse(packed.stdout)[0].filename)
    const digest = `sha512-${require('node:crypto').createHash('sha512').update(fs.readFileSync(tarball)).digest('base64')}`
    if (digest !== TOOLCHAIN.integrity) fail(`${TOOLCHAIN.spec} does not match its pinned integrity (${digest})`)
    const steps = [
      ['-xzf', tarball, '-C', partial, `package/${PORTABLE_TARGET}.tar.xz`],
      ['-xJf', path.join(partial, 'package', `${PORTABLE_TARGET}.tar.xz`), '-C', partial]
    ]
    for (const step of steps) {
      if (spawnSync('tar', step, { stdio: 'inherit' }).status !== 0) fail(`cannot unpack ${tarball} (tar with gzip and xz is needed)`)
    }
    fs.rmSync(tarball)
    fs.rmSync(path.join(partial, 'package'), { recursive: true, force: true })
    fs.rmSync(toolchain, { recursive: true, force: true })
    fs.renameSync(partial, toolchain)
  }
  return {
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER: gcc,
    TARGET_CC: gcc,
    TARGET_AR: path.join(toolchain, 'bin', `${PORTABLE_TARGET}-ar`),
    TARGET_SYSROOT: path.join(toolchain, PORTABLE_TARGET, 'sysroot')
  }
}

const suffix = portable ? 'linux-x64-gnu' : platformSuffix()
const target = path.join(outDir, `self-recycle.${suffix}.node`)

if (!force && fs.existsSync(target) && fs.statSync(target).mtimeMs >= newestSource()) {
  process.exit(0)
}
if (!hasCommand('cargo')) {
  fail('cannot run cargo. Building from source needs a Rust toolchain (https://rustup.rs) and a C linker (cc); ' +
    'users of the npm package never build: the prebuilt platform package is installed instead')
}

const cargoArgs = ['build', '--lib', '--message-format=json-render-diagnostics']
if (!debug) cargoArgs.push('--release')
let env = process.env
if (portable) {
  cargoArgs.push('--target', PORTABLE_TARGET)
  env = { ...process.env, ...portableToolchainEnv() }
}
const nativeDts = writesTypes ? require('./native-dts.js') : null
const typeDefDir = path.join(root, 'target', 'napi-type-def', 'build')
if (nativeDts) env = { ...env, ...nativeDts.typeDefEnv(typeDefDir) }
const result = spawnSync('cargo', cargoArgs, { cwd: root, env, stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8', maxBuffer: 64 << 20 })
if (result.error) fail(`cannot run cargo (${result.error.message})`)
if (result.status !== 0) {
  const linker = hasCommand('cc') ? '' : ' (no C linker `cc` on PATH: install gcc or clang)'
  fail(`cargo build failed with status ${result.status}${linker}`)
}
let artifact
for (const line of result.stdout.split('\n')) {
  if (!line.startsWith('{')) continue
  const message = JSON.parse(line)
  if (message.reason === 'compiler-artifact' && message.target?.kind?.includes('cdylib')) {
    artifact = message.filenames.find((f) => /\.(so|dylib|dll)$/.test(f))
  }
}
if (!artifact) fail('cargo did not report the cdylib artifact')
fs.mkdirSync(outDir, { recursive: true })
// Copy to a temporary name then rename: a running process may have the old file mapped.
const temporary = `${target}.${process.pid}.tmp`
fs.copyFileSync(artifact, temporary)
fs.renameSync(temporary, target)
console.error(`self-recycle: built ${path.relative(process.cwd(), target)} (${fs.statSync(target).size} bytes)`)
if (nativeDts) {
  nativeDts.render(typeDefDir).then((dts) => {
    fs.writeFileSync(nativeDts.DTS, dts)
  }, (error) => fail(`cannot write js/native.d.ts: ${error.message}`))
}
