'use strict'
// Writes a private supervisord.conf (unix socket only, logs in `dir`) and drives
// supervisord and supervisorctl with it. Shared by the tests and the comparison bench.

const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

/** `sections` are appended as written (program blocks, event listeners, [include]). */
function writeSupervisorConf (dir, sections) {
  const conf = path.join(dir, 'supervisord.conf')
  fs.writeFileSync(conf, `[unix_http_server]
file=${dir}/supervisor.sock
chmod=0700

[supervisord]
logfile=${dir}/supervisord.log
pidfile=${dir}/supervisord.pid
childlogdir=${dir}
user=root

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://${dir}/supervisor.sock

${sections.join('\n\n')}
`)
  return conf
}

/** `environment=` value for a program block (supervisor expands %, so it is doubled). */
function supervisorEnvironment (env) {
  return Object.entries(env).map(([key, value]) => `${key}="${String(value).replace(/%/g, '%%')}"`).join(',')
}

/** Starts `supervisord -n`; `stop()` shuts it down and waits for it. */
function startSupervisord (conf, env) {
  const child = spawn('supervisord', ['-n', '-c', conf], { stdio: 'ignore', env })
  const closed = new Promise((resolve) => child.once('close', resolve))
  return {
    ctl: (...args) => execFileSync('supervisorctl', ['-c', conf, ...args], { encoding: 'utf8' }),
    stop: async () => {
      try { execFileSync('supervisorctl', ['-c', conf, 'shutdown']) } catch { child.kill('SIGTERM') }
      await closed
    }
  }
}

module.exports = { writeSupervisorConf, supervisorEnvironment, startSupervisord }
