'use strict'
// The one loader of the native addon. It tries, in order:
//   1. a development build next to this file (scripts/build.js puts it there in a checkout;
//      the published package never contains one),
//   2. the prebuilt platform package (`self-recycle-linux-x64-gnu`, ...: an optional
//      dependency npm, pnpm and yarn install only on the matching os/cpu/libc),
// and otherwise throws one error that says what was looked for and how to get a binary.

const fs = require('node:fs')
const path = require('node:path')
const { platformSuffix, glibcVersion } = require('./platform.js')

const BINARY = 'self-recycle'

/** The main package's version (read only when a platform package must match it). */
function mainVersion () {
  return JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')).version
}

function describeError (error) {
  return String(error?.message ?? error).split('\n')[0]
}

class NativeBindingError extends Error {
  constructor (message, attempts) {
    super(message)
    this.name = 'SelfRecycleNativeBindingError'
    this.code = 'ERR_SELF_RECYCLE_NO_BINARY'
    this.attempts = attempts
  }
}

function noBinaryError (suffix, attempts) {
  const libc = process.platform === 'linux'
    ? ` (${suffix.endsWith('musl') ? 'musl' : `glibc ${glibcVersion() ?? 'unknown'}`})`
    : ''
  const packageName = `${BINARY}-${suffix}`
  const lines = [
    `self-recycle: no native binary loads on ${process.platform}-${process.arch}${libc}, Node ${process.version} (N-API, ABI ${process.versions.modules}).`,
    'Looked for:',
    ...attempts.map(({ what, where, outcome }) => `  - ${what}: ${where}: ${outcome}`),
    'Ways out:',
    `  - install the platform package: npm install ${packageName}@${mainVersion()}`,
    '    (it is an optional dependency: --omit=optional, --no-optional or a lockfile made on another',
    '    platform leaves it out; delete node_modules and the lockfile, then install again)',
    '  - or build from source in a checkout of self-recycle: needs Rust (https://rustup.rs) and a C',
    '    linker (cc); then npm install && npm run build'
  ]
  return new NativeBindingError(lines.join('\n'), attempts)
}

function load () {
  const suffix = platformSuffix()
  const attempts = []
  const devBuild = path.join(__dirname, `${BINARY}.${suffix}.node`)
  try {
    return require(devBuild)
  } catch (error) {
    const missing = error?.code === 'MODULE_NOT_FOUND'
    attempts.push({ what: 'development build', where: devBuild, outcome: missing ? 'not present' : `failed to load: ${describeError(error)}` })
  }
  const packageName = `${BINARY}-${suffix}`
  try {
    const installed = require(`${packageName}/package.json`).version
    const wanted = mainVersion()
    if (installed !== wanted) {
      attempts.push({ what: 'platform package', where: packageName, outcome: `version ${installed} installed, ${wanted} needed` })
    } else {
      return require(packageName)
    }
  } catch (error) {
    const missing = error?.code === 'MODULE_NOT_FOUND' && String(error.message).includes(packageName)
    attempts.push({ what: 'platform package', where: packageName, outcome: missing ? 'not installed' : `failed to load: ${describeError(error)}` })
  }
  throw noBinaryError(suffix, attempts)
}

module.exports = load()
