// PM2 process file for monitor-scheduler (see docs/operations.md).
//
//   pm2 start ecosystem.config.js                 web + worker (+ dispatcher) from this directory
//   pm2 start ecosystem.config.js --only worker   just the RQ workers
//   pm2 scale worker 4                            more or fewer worker processes
//   pm2 reload ecosystem.config.js                restart everything; running jobs finish first
//   pm2 logs worker                               or read logs/<app>.out.log / logs/<app>.err.log
//
// Every app runs the project's own .venv/bin/monitor-scheduler by absolute path: PM2 resolves a
// bare `script` against its own PATH, not the app's. Settings come from the environment PM2 was
// started with plus the project's .env (the environment wins), exactly as for the CLI. The few
// values PM2 itself needs (worker count, kill timeout, web address) are read here the same way.
"use strict";

const fs = require("fs");
const path = require("path");

const root = __dirname;
const bin = path.join(root, ".venv", "bin", "monitor-scheduler");
const logs = path.join(root, "logs");

// KEY=VALUE lines of .env (comments, blank lines and `export ` prefixes ignored; quotes stripped).
function readDotEnv(file) {
  const values = {};
  let text;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    return values;
  }
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const match = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
    if (!match) continue;
    let value = match[2].trim();
    if (/^(['"]).*\1$/.test(value)) value = value.slice(1, -1);
    values[match[1]] = value;
  }
  return values;
}

const dotenv = readDotEnv(path.join(root, ".env"));

function setting(name, fallback) {
  const value = process.env[name] !== undefined && process.env[name] !== "" ? process.env[name] : dotenv[name];
  return value === undefined || value === "" ? fallback : value;
}

function positiveInt(name, fallback) {
  const value = Number(setting(name, fallback));
  if (!Number.isInteger(value) || value < 1) {
    throw new Error(`ecosystem.config.js: invalid setting ${name}: ${setting(name, fallback)}`);
  }
  return value;
}

const workerInstances = positiveInt("WORKER_CONCURRENCY", 2);
// Runs each worker process executes at once (docs/operations.md "Threads"): instances x threads
// runs at once in all.
const workerThreads = positiveInt("WORKER_THREADS", 1);
// A restart must not kill a running job: PM2 sends SIGINT (warm shutdown: the job finishes, then
// the worker exits) and only SIGKILLs after kill_timeout, so it must outlast JOB_TIMEOUT.
const jobTimeoutMs = positiveInt("JOB_TIMEOUT", 600) * 1000;
const webHost = setting("WEB_HOST", "127.0.0.1");
const webPort = positiveInt("WEB_PORT", 10111);

try {
  fs.mkdirSync(logs, { recursive: true });
} catch (err) {
  // PM2 reports the unwritable log file itself.
}

function app(name, args, extra) {
  return Object.assign(
    {
      name,
      script: bin,
      args,
      interpreter: "none",
      cwd: root,
      exec_mode: "fork",
      instances: 1,
      autorestart: true,
      max_memory_restart: "300M",
      kill_signal: "SIGINT",
      out_file: path.join(logs, `${name}.out.log`),
      error_file: path.join(logs, `${name}.err.log`),
      merge_logs: true, // one file per app, not one per instance
      // No `env` values of substance: the environment PM2 was started with passes through.
      env: { PYTHONUNBUFFERED: "1" },
    },
    extra,
  );
}

module.exports = {
  apps: [
    app("web", ["web", "--host", webHost, "--port", String(webPort)], {
      kill_timeout: 15000,
    }),
    app("worker", ["worker", "--concurrency", "1", "--threads", String(workerThreads)], {
      // One RQ worker per PM2 instance (`pm2 scale worker N`), no pool; each runs up to
      // WORKER_THREADS jobs at once. A warm stop waits for all of them (each ends by JOB_TIMEOUT).
      instances: workerInstances,
      kill_timeout: jobTimeoutMs + 5000,
    }),
    // Optional: the dispatcher loop, for hosts without crontab. Harmless beside cron or a second
    // loop on another host: leases make sure no user is started twice.
    // `pm2 start ecosystem.config.js --only web,worker` leaves it out.
    app("dispatcher", ["dispatch", "--loop", "--every", "10s"], {
      // A pass is never cut short: SIGINT stops the loop between passes; a sync pass takes at most
      // SYNC_TIME_BUDGET (50 s by default).
      kill_timeout: Math.ceil((Number(setting("SYNC_TIME_BUDGET", 50)) || 50) * 1000) + 10000,
    }),
  ],
};
