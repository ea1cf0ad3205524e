// PM2: `pm2 start ecosystem.config.js`. PM2 restarts on any exit, so exit code 75 works;
// keep max_memory_restart off (self-recycle reacts earlier and drains first), and give
// kill_timeout room for the drain (PM2's default 1.6 s would cut long jobs short).
module.exports = {
  apps: [{
    name: 'nest-bullmq-worker',
    script: `${__dirname}/worker.js`,
    cwd: __dirname,
    instances: 2,
    exec_mode: 'fork',
    autorestart: true,
    kill_timeout: 35000,
    env: {
      SELF_RECYCLE_MAX_RSS: '256MiB',
      SELF_RECYCLE_WARMUP: '3s',
      SELF_RECYCLE_MIN_UPTIME: '3s',
      SELF_RECYCLE_INTERVAL: '250ms',
      SELF_RECYCLE_STRIKES: '2',
      SELF_RECYCLE_SIGNALS: 'on',
      SELF_RECYCLE_FLEET_GAP: '1s'
    }
  }]
}
