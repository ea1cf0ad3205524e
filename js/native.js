'use strict'
// Loads the addon. Fast path: the file scripts/build.js put next to this one (skips the
// generated loader's platform probing, ~2 ms at startup); otherwise the generated
// loader, which also knows prebuilt per-platform packages.

const fs = require('node:fs')
const path = require('node:path')

function load () {
  const { platform, arch } = process
  for (const suffix of [`${platform}-${arch}-gnu`, `${platform}-${arch}-musl`, `${platform}-${arch}`]) {
    const file = path.join(__dirname, `self-recycle.${suffix}.node`)
    if (fs.existsSync(file)) return require(file)
  }
  return require('./binding.js')
}

module.exports = load()
