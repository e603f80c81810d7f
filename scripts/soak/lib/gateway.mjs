// The system under soak: the echo upstream of the benchmark and `portcullis --config` (dist/cli.js) as
// child processes, started the way bench/peers.mjs starts them, plus what the soak measures of the
// gateway from outside: its fds (/proc/<pid>/fd), resident memory, V8 heap after a full GC (inspector)
// and its live connections (admin /metrics).
import { randomBytes } from 'node:crypto';
import { readdirSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { CLI, freePort, probe, ROOT, startProcess, waitReady } from '../../../bench/peers.mjs';
import { signHs256 } from '../../../bench/lib/jwt.mjs';
import { rssKiB } from '../../../bench/lib/proc.mjs';
import { connectInspector, inspectorUrl } from './inspector.mjs';

export { probe };

const ECHO = join(ROOT, 'bench', 'echo-upstream.mjs');

/** Secrets of one soak run: the JWT secret and the admin token, random each time. */
export function runSecrets() {
  return { secret: randomBytes(32).toString('hex'), adminToken: randomBytes(24).toString('hex') };
}

/**
 * Tokens of a population of `users` subjects, each token distinct (its own `jti`), as clients that each
 * log in on their own would present. Subjects repeat, so per-subject state saturates instead of growing
 * with the number of handshakes. `bad`: signed with another secret (401).
 */
export function tokens(secret, { users = 1000, ttlSec = 7200 } = {}) {
  const run = randomBytes(4).toString('hex');
  const wrong = randomBytes(32).toString('hex');
  let i = 0;
  return (bad = false) => {
    const now = Math.floor(Date.now() / 1000);
    i++;
    return signHs256({ sub: `soak-user-${i % users}`, scope: 'chat', iat: now, exp: now + ttlSec, jti: `${run}-${i}` }, bad ? wrong : secret);
  };
}

/** Starts the benchmark's echo upstream (bench/echo-upstream.mjs) as its own process. */
export async function startEcho() {
  const proc = startProcess([process.execPath, ECHO, '0'], { cwd: ROOT });
  const deadline = Date.now() + 10000;
  for (;;) {
    const m = /"event":"listening","port":(\d+)/.exec(proc.output());
    if (m) return { ...proc, port: Number(m[1]) };
    if (!proc.alive() || Date.now() > deadline) throw new Error(`echo upstream did not start: ${proc.output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * The soak's gateway config: `/echo` (pipe) and `/relay` (relay, heartbeats every `heartbeatMs`), both
 * JWT-authenticated (`/relay` with `require`), rate limits and connection caps configured (generous: the soak is
 * not about refusals, but their bookkeeping must not leak), admin with metrics. `generation` adds a route
 * `/gen-<n>` whose presence shows which config is in force; `invalid` adds an unknown field.
 */
export function soakConfig({ port, adminPort, echoPort, heartbeatMs = 20000, drain = { timeoutMs: 5000, spreadMs: 0 }, generation, invalid = false }) {
  const upstream = `ws://127.0.0.1:${echoPort}`;
  const common = {
    auth: ['jwt'],
    upstream,
    rateLimit: { perIp: '100000/s', perSubject: '1000/s' },
    maxConnectionsPerIp: 20000,
    maxConnectionsPerSubject: 100,
  };
  return {
    listen: { host: '127.0.0.1', port },
    admin: { host: '127.0.0.1', port: adminPort, token: '${ADMIN_TOKEN}' },
    log: { level: 'warn' },
    limits: { maxConnections: 20000, handshakeTimeoutMs: 5000, maxHeaderBytes: 16384 },
    drain,
    authenticators: { jwt: { type: 'jwt', from: ['bearer'], secret: '${JWT_SECRET}', algorithms: ['HS256'] } },
    routes: [
      { path: '/echo', mode: 'pipe', ...common },
      { path: '/relay', mode: 'relay', heartbeatMs, require: { scope: 'chat' }, ...common },
      ...(generation === undefined ? [] : [{ path: `/gen-${generation}`, auth: ['jwt'], upstream }]),
    ],
    ...(invalid ? { reloadMarker: 'an unknown field: this config must be refused' } : {}),
  };
}

function get(port, path, token) {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false, headers: token ? { authorization: `Bearer ${token}` } : {} }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('error', () => resolve({ status: 0, body: '' }));
    req.setTimeout(10000, () => req.destroy());
    req.end();
  });
}

/**
 * Starts `portcullis --config <file>` under `--inspect=127.0.0.1:0` with the soak config (`options` as for
 * {@link soakConfig}) and waits until it answers a valid upgrade with 101.
 */
export async function startGateway(ctx, name, options = {}) {
  const port = await freePort();
  const adminPort = await freePort();
  const file = join(ctx.tmp, `gateway-${name}.json`);
  const configOf = (more = {}) => soakConfig({ port, adminPort, echoPort: ctx.echo.port, ...options, ...more });
  writeFileSync(file, JSON.stringify(configOf(), null, 2));
  const proc = startProcess([process.execPath, '--inspect=127.0.0.1:0', CLI, '--config', file], {
    env: { JWT_SECRET: ctx.secret, ADMIN_TOKEN: ctx.adminToken },
    cwd: ROOT,
  });
  let inspector;
  try {
    await waitReady(port, ctx.secret, proc);
    const url = inspectorUrl(proc.output());
    if (!url) throw new Error(`no inspector URL in the gateway's output: ${proc.output().slice(-500)}`);
    inspector = await connectInspector(url);
  } catch (err) {
    await proc.stop();
    throw err;
  }

  const gw = {
    port,
    adminPort,
    pid: proc.pid,
    file,
    proc,
    exited: proc.exited,
    /** Rewrites the config file (the next SIGHUP reads it). */
    writeConfig: (more) => writeFileSync(file, JSON.stringify(configOf(more), null, 2)),
    signal: (sig) => proc.child.kill(sig),
    fds: () => readdirSync(`/proc/${proc.pid}/fd`).length,
    rssKiB: () => rssKiB([proc.pid]),
    heapAfterGc: () => inspector.heapAfterGc(),
    readyz: async () => (await get(adminPort, '/readyz')).status,
    /** Live connections by `portcullis_connections{route,mode}` (summed over routes). */
    async connections() {
      const { status, body } = await get(adminPort, '/metrics', ctx.adminToken);
      if (status !== 200) throw new Error(`GET /metrics answered ${status}`);
      let n = 0;
      for (const m of body.matchAll(/^portcullis_connections\{[^}]*\} (\d+)/gm)) n += Number(m[1]);
      return n;
    },
    /** Waits until the gateway counts `n` live connections; resolves the last count seen. */
    async waitConnections(n, timeoutMs = 15000) {
      const deadline = Date.now() + timeoutMs;
      let seen;
      while ((seen = await gw.connections()) !== n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
      return seen;
    },
    /** fds, heap after GC and RSS, after `settleMs` of quiet (sockets being closed finish closing). */
    async snapshot(settleMs = 500) {
      await new Promise((r) => setTimeout(r, settleMs));
      const heap = await gw.heapAfterGc();
      return { fds: gw.fds(), heapBytes: heap, rssKiB: gw.rssKiB() };
    },
    /** Closes the inspector session (before a signal that makes the process exit). */
    detach: () => inspector.close(),
    async stop() {
      inspector.close();
      await proc.stop();
    },
  };
  return gw;
}

/** MB with one decimal. */
export const mb = (bytes) => Math.round((bytes / 1048576) * 10) / 10;
