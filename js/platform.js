'use strict'
// Which prebuilt binary fits this process: the napi-rs platform suffix
// (`linux-x64-gnu`, `linux-arm64-musl`, `darwin-arm64`, `win32-x64-msvc`).

const fs = require('node:fs')

const MUSL_ARCH = { x64: 'x86_64', arm64: 'aarch64', arm: 'armhf', ia32: 'i386', ppc64: 'powerpc64le', s390x: 's390x' }

/** The glibc version Node runs on, from its diagnostic report (none on musl). */
function glibcVersion () {
  // @types/node types the report as a bare object.
  const report = /** @type {{ header?: { glibcVersionRuntime?: string } } | undefined} */ (process.report?.getReport?.())
  return report?.header?.glibcVersionRuntime
}

/** `gnu` or `musl`: the C library Node itself runs on (Linux only). */
function linuxLibc (arch = process.arch) {
  // No musl loader on the machine: glibc (a stat, ~20 us; this is nearly every host).
  if (!fs.existsSync(`/lib/ld-musl-${MUSL_ARCH[arch] ?? arch}.so.1`)) return 'gnu'
  // Both may be installed (Debian's musl package): this process's maps name the one in use.
  try {
    const maps = fs.readFileSync('/proc/self/maps', 'latin1')
    if (/\/(ld-musl-|libc\.musl-)[^/\s]*\.so/.test(maps)) return 'musl'
    if (/\/libc[.-][^/\s]*so/.test(maps)) return 'gnu'
  } catch {}
  return glibcVersion() ? 'gnu' : 'musl'
}

function platformSuffix (platform = process.platform, arch = process.arch) {
  if (platform === 'linux') return `linux-${arch}-${linuxLibc(arch)}`
  if (platform === 'win32') return `win32-${arch}-msvc`
  return `${platform}-${arch}`
}

module.exports = { platformSuffix, glibcVersion }
