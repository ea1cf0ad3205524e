'use strict'
// Checks what `npm test` needs beyond npm packages before anything runs. Where something
// is missing and this machine allows it (root with apt-get), installs it and says
// so; otherwise stops at once with the exact command to run. No dependencies: runs before
// `npm ci` too (.ci/run).

const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

/** What the tests run, and where it comes from on Debian/Ubuntu. */
const NEEDS = [
  { command: 'cargo', why: 'builds the addon', manual: 'install Rust: https://rustup.rs' },
  { command: 'cc', apt: 'gcc', why: 'links the addon' },
  { command: 'supervisord', apt: 'supervisor', why: 'the Supervisor tests' },
  { command: 'supervisorctl', apt: 'supervisor', why: 'the Supervisor tests' },
  { command: 'redis-server', apt: 'redis-server', why: 'the BullMQ tests (real Redis)' },
  { command: 'python3', apt: 'python3', why: "plays systemd's side of sd_notify" },
  { command: 'systemd-analyze', apt: 'systemd', why: 'verifies the example systemd unit' },
  { command: 'readelf', apt: 'binutils', why: 'checks the glibc symbols of the portable binary' },
  { command: 'openssl', apt: 'openssl', why: 'self-signed certificates for the https and http2 drain tests' },
  { command: 'xz', apt: 'xz-utils', why: 'unpacks the glibc 2.17 cross toolchain' }
]

/** Absolute path of `command` on PATH, or null. */
function findCommand (command) {
  const dirs = (process.env.PATH || '').split(path.delimiter).filter(Boolean)
  for (const dir of dirs) {
    const file = path.join(dir, command)
    try {
      fs.accessSync(file, fs.constants.X_OK)
      return file
    } catch {}
  }
  return null
}

function missing () {
  return NEEDS.filter((need) => !findCommand(need.command))
}

function canApt () {
  return process.getuid?.() === 0 && findCommand('apt-get') !== null
}

function install (needs) {
  const aptPackages = [...new Set(needs.filter((n) => n.apt).map((n) => n.apt))]
  if (aptPackages.length > 0 && canApt()) {
    console.error(`self-recycle tests: installing ${aptPackages.join(', ')} with apt-get (needed by ${needs.filter((n) => n.apt).map((n) => n.why).join('; ')})`)
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
    spawnSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env })
    spawnSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...aptPackages], { stdio: ['ignore', 'ignore', 'inherit'], env })
    // Debian's packages start their own daemons; the tests start private ones.
    for (const service of ['redis-server', 'supervisor']) spawnSync('service', [service, 'stop'], { stdio: 'ignore' })
  }
}

function instructions (needs) {
  const apt = [...new Set(needs.filter((n) => n.apt).map((n) => n.apt))]
  const lines = ['self-recycle tests: missing prerequisites:']
  for (const need of needs) lines.push(`  - ${need.command} (${need.why})`)
  lines.push('Run:')
  if (apt.length) lines.push(`  sudo apt-get install -y ${apt.join(' ')}`)
  for (const need of needs.filter((n) => n.manual)) lines.push(`  ${need.manual}`)
  lines.push('then npm test again (or run .ci/run, which does all of this as root).')
  return lines.join('\n')
}

function main () {
  let absent = missing()
  if (absent.length > 0 && !process.argv.includes('--check-only')) {
    install(absent)
    absent = missing()
  }
  if (absent.length > 0) {
    console.error(instructions(absent))
    process.exit(1)
  }
}

if (require.main === module) main()

module.exports = { findCommand, NEEDS }
