// The peers the benchmark compares, each started as its own process on the system-under-test core.
//   direct      no proxy: the load generator talks to the echo upstream itself (the floor)
//   baseline    bench/baselines/handwritten.mjs: http + jsonwebtoken (KeyObject) + http-proxy 1.18.1 proxy.ws
//   nginx       nginx (Debian) as a WebSocket proxy — it has no JWT check (auth_jwt is NGINX Plus only),
//               so it is a proxying-cost reference only
//   haproxy     HAProxy 2.6 (Debian) with http_auth_bearer + jwt_verify(HS256) + an exp check
//   pipe        portcullis CLI, one jwt route, mode pipe
//   relay       the same, mode relay
//   pipe-full   portcullis with every feature configured (admin, tickets, 8 authenticators, 4 other routes
//               with limits, origins, assertion, sticky, ...) but the measured route identical to `pipe`
//   workers-1 / workers-2   `pipe` with workers: 1 / 2, not pinned (the scaling scenario)
import { spawn, spawnSync } from 'node:child_process';
import { generateKeyPairSync, createHash } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { signHs256 } from './lib/jwt.mjs';

export const BENCH = fileURLToPath(new URL('.', import.meta.url));
export const ROOT = join(BENCH, '..');
export const CLI = join(ROOT, 'dist', 'cli.js');

const HAS_TASKSET = spawnSync('sh', ['-c', 'command -v taskset'], { encoding: 'utf8' }).status === 0;
// Every core of the machine (not nproc, which counts only the cores this process may use).
export const CPU_COUNT = cpus().length || 1;
/** Pinning needs taskset and two cores: core 0 for the system under test, core 1 for load + echo. */
export const pinning = HAS_TASKSET && CPU_COUNT >= 2;

/**
 * argv prefixed with `taskset -c CPUS` when pinning is possible; `cpus` 'all' spreads over every core
 * (explicitly, since the runner itself is pinned and children inherit its affinity).
 */
export function pinned(cpus, argv) {
  if (!pinning || !cpus) return argv;
  return ['taskset', '-c', cpus === 'all' ? `0-${CPU_COUNT - 1}` : cpus, ...argv];
}

/**
 * Environment for every child: no NODE_OPTIONS and no NODE_V8_COVERAGE (a test runner's coverage hooks
 * and V8's precise coverage slow a process down and must not be measured).
 */
export function childEnv(extra = {}) {
  const env = { ...process.env, ...extra };
  delete env.NODE_OPTIONS;
  delete env.NODE_V8_COVERAGE;
  return env;
}

export function binary(name) {
  for (const dir of ['/usr/sbin', '/usr/bin', '/usr/local/sbin', '/usr/local/bin']) if (existsSync(join(dir, name))) return join(dir, name);
  return null;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Spawns `argv`, keeping the tail of its output for error messages. */
export function startProcess(argv, { env, cwd } = {}) {
  const child = spawn(argv[0], argv.slice(1), { env: childEnv(env), cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let tail = '';
  const keep = (d) => {
    tail = (tail + d.toString()).slice(-4000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  child.once('error', (err) => keep(String(err)));
  return {
    child,
    pid: child.pid,
    exited,
    output: () => tail,
    alive: () => child.exitCode === null && child.signalCode === null,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 4000);
      await exited;
      clearTimeout(t);
    },
  };
}

/** Resolves the status of one upgrade with `token` (0 when the connection fails). */
export function probe(port, token, path = '/echo') {
  return new Promise((resolve) => {
    const s = connect({ port, host: '127.0.0.1' });
    let head = '';
    const timer = setTimeout(() => s.destroy(), 2000);
    s.on('data', (d) => {
      head += d.toString('latin1');
      if (head.includes('\r\n\r\n')) {
        clearTimeout(timer);
        s.destroy();
        resolve(Number(head.slice(9, 12)) || -1);
      }
    });
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(timer);
      resolve(0);
    });
    const auth = token ? `Authorization: Bearer ${token}\r\n` : '';
    s.write(
      `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${auth}\r\n`,
    );
  });
}

/** Waits until a valid-token upgrade on `port` answers 101. */
export async function waitReady(port, secret, proc, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  const now = Math.floor(Date.now() / 1000);
  const token = signHs256({ sub: 'probe', iat: now, exp: now + 3600 }, secret);
  for (;;) {
    if (proc && (proc.child.exitCode !== null || proc.child.signalCode !== null)) {
      throw new Error(`exited before it was ready: ${proc.output().trim().split('\n').slice(-5).join(' | ')}`);
    }
    const status = await probe(port, token);
    if (status === 101) return;
    if (Date.now() > deadline) throw new Error(`not ready after ${timeoutMs} ms (last status ${status}): ${proc?.output().slice(-500) ?? ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// ------------------------------------------------------------------------------------------ configs
function portcullisConfig(ctx, port, { mode = 'pipe', workers, full = false } = {}) {
  const upstream = `ws://127.0.0.1:${ctx.echoPort}`;
  const jwt = { type: 'jwt', from: ['bearer'], secret: '${JWT_SECRET}', algorithms: ['HS256'] };
  const measured = { path: '/echo', auth: ['jwt'], upstream, mode };
  const config = {
    listen: { host: '127.0.0.1', port },
    log: { level: 'warn' },
    drain: { timeoutMs: 1000 },
    ...(workers ? { workers } : {}),
    authenticators: { jwt },
    routes: [measured],
  };
  if (!full) return config;
  const { publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const sha = createHash('sha256').update('bench-api-key-0123456789').digest('hex');
  return {
    ...config,
    admin: { host: '127.0.0.1', port: ctx.adminPort, token: 'bench-admin-token-0123456789abcdef' },
    limits: { maxConnections: 100000, handshakeTimeoutMs: 5000, maxHeaderBytes: 16384 },
    tickets: { path: '/tickets', ttlSec: 30 },
    authenticators: {
      jwt,
      'jwt-rs': {
        type: 'jwt',
        from: ['protocol:bearer.', 'query:access_token'],
        publicKey: publicKey.export({ type: 'spki', format: 'pem' }),
        algorithms: ['RS256'],
        issuer: 'https://issuer.example',
        audience: 'bench',
        clockToleranceSec: 5,
        maxAgeSec: 86400,
        requiredClaims: ['sub'],
      },
      keys: { type: 'apiKey', from: ['header:x-api-key'], keys: [{ sha256: sha, subject: 'svc-a', claims: { role: 'svc' } }] },
      sess: { type: 'session', secrets: ['bench-session-secret-0123456789abcdef'], store: { type: 'memory' }, subjectPath: 'user.id' },
      intro: { type: 'introspection', from: ['query:opaque'], url: 'http://127.0.0.1:9/introspect', clientId: 'bench', clientSecret: 'x', cacheTtlSec: 30 },
      fwd: { type: 'forwardAuth', url: 'http://127.0.0.1:9/auth', copyHeaders: ['x-auth-request-user'] },
      mod: { type: 'module', path: join(BENCH, 'fixtures', 'allow-module.mjs') },
      tix: { type: 'ticket' },
    },
    routes: [
      {
        path: '/live',
        auth: ['jwt-rs', 'sess', 'tix'],
        upstream: [upstream, upstream],
        mode: 'relay',
        origins: ['https://app.example.com', '*.example.org'],
        require: { scope: 'chat' },
        rateLimit: { perIp: '20/s', perSubject: '5/s', burst: 40 },
        maxConnections: 5000,
        maxConnectionsPerSubject: 10,
        maxConnectionsPerIp: 100,
        refresh: { graceSec: 25 },
        heartbeatMs: 20000,
        maxPayload: 65536,
        rejectMode: 'close',
        revalidateSec: 60,
        assertion: { header: 'x-auth-assertion', key: 'bench-assertion-key-0123456789abcdef', ttlSec: 60 },
      },
      { path: '/first/*', auth: ['jwt'], upstream, mode: 'relay', firstMessageAuth: { timeoutMs: 5000 } },
      {
        path: '/svc/*',
        host: 'svc.example',
        auth: ['keys', 'intro'],
        upstream: [upstream, upstream],
        balance: 'least-connections',
        ejectMs: 5000,
        http: true,
        sticky: true,
        forwardIdentity: { subject: 'x-user', claims: 'x-user-claims' },
        revalidateSec: 30,
      },
      { path: '/fwd', auth: ['fwd', 'mod'], upstream, origins: '*', rateLimit: { perIp: '100/s' } },
      // The measured route is last (every other route is tried first) and identical to the `pipe` peer's.
      measured,
    ],
  };
}

function nginxConfig(dir, port, echoPort) {
  return `worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 40000; }
http {
  access_log off;
  client_body_temp_path ${dir}/tmp-body;
  proxy_temp_path ${dir}/tmp-proxy;
  fastcgi_temp_path ${dir}/tmp-fastcgi;
  uwsgi_temp_path ${dir}/tmp-uwsgi;
  scgi_temp_path ${dir}/tmp-scgi;
  upstream echo { server 127.0.0.1:${echoPort}; }
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location / {
      proxy_pass http://echo;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_set_header Authorization "";
      proxy_read_timeout 3600s;
      proxy_send_timeout 3600s;
    }
  }
}
`;
}

function haproxyConfig(port, echoPort, secret) {
  return `global
  maxconn 9900
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout tunnel 1h
  timeout http-request 5s
frontend fe
  bind 127.0.0.1:${port}
  maxconn 9900
  http-request set-var(txn.bearer) http_auth_bearer
  http-request deny deny_status 401 unless { var(txn.bearer) -m found }
  http-request deny deny_status 401 unless { var(txn.bearer),jwt_header_query('$.alg') -m str HS256 }
  http-request deny deny_status 401 unless { var(txn.bearer),jwt_verify(HS256,"${secret}") -m int 1 }
  http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('$.exp','int')
  http-request set-var(txn.now) date()
  http-request deny deny_status 401 if { var(txn.exp),sub(txn.now) -m int lt 0 }
  http-request set-header x-auth-subject %[var(txn.bearer),jwt_payload_query('$.sub')]
  http-request set-header x-auth-claims %[var(txn.bearer),field(2,.)]
  http-request del-header authorization
  default_backend echo
backend echo
  server echo 127.0.0.1:${echoPort} maxconn 10000
`;
}

// -------------------------------------------------------------------------------------------- peers
/**
 * Every peer: `available()` says why it cannot run (or null), `start(ctx)` starts it and resolves
 * { pid, port, stop() }. `auth`: whether it checks the JWT (peers without it skip the rejected scenario).
 */
export const PEERS = {
  direct: {
    label: 'direct (no proxy)',
    auth: false,
    available: () => null,
    async start(ctx) {
      return { pid: null, port: ctx.echoPort, stop: async () => {}, alive: () => true, output: () => '' };
    },
  },
  baseline: {
    label: 'hand-written Node (http + jsonwebtoken + http-proxy)',
    auth: true,
    available: () => (existsSync(join(ROOT, 'node_modules', 'http-proxy')) ? null : 'node_modules/http-proxy missing (npm ci)'),
    async start(ctx, { cpus = '0' } = {}) {
      const port = await freePort();
      const proc = startProcess(pinned(cpus, [process.execPath, join(BENCH, 'baselines', 'handwritten.mjs')]), {
        env: { PORT: String(port), UPSTREAM_URL: `ws://127.0.0.1:${ctx.echoPort}`, JWT_SECRET: ctx.secret },
        cwd: ROOT,
      });
      await waitReady(port, ctx.secret, proc);
      return { pid: proc.pid, port, stop: () => proc.stop(), alive: () => proc.alive(), output: proc.output };
    },
  },
  nginx: {
    label: 'nginx (proxy only, no JWT check)',
    auth: false,
    available: () => (binary('nginx') ? null : 'nginx not installed (bash bench/setup.sh)'),
    async start(ctx, { cpus = '0' } = {}) {
      const port = await freePort();
      const dir = join(ctx.tmp, `nginx-${port}`);
      mkdirSync(dir, { recursive: true, mode: 0o755 });
      writeFileSync(join(dir, 'nginx.conf'), nginxConfig(dir, port, ctx.echoPort));
      const proc = startProcess(pinned(cpus, [binary('nginx'), '-p', dir, '-c', join(dir, 'nginx.conf')]));
      await waitReady(port, ctx.secret, proc);
      return { pid: proc.pid, port, stop: () => proc.stop(), alive: () => proc.alive(), output: proc.output };
    },
  },
  haproxy: {
    label: 'HAProxy 2.6 (jwt_verify HS256 + exp)',
    auth: true,
    available: () => {
      const bin = binary('haproxy');
      if (!bin) return 'haproxy not installed (bash bench/setup.sh)';
      const v = spawnSync(bin, ['-v'], { encoding: 'utf8' }).stdout;
      return /version (2\.[5-9]|[3-9]\.)/.test(v) ? null : `haproxy without jwt_verify: ${v.split('\n')[0]}`;
    },
    async start(ctx, { cpus = '0' } = {}) {
      const port = await freePort();
      const file = join(ctx.tmp, `haproxy-${port}.cfg`);
      writeFileSync(file, haproxyConfig(port, ctx.echoPort, ctx.secret));
      const proc = startProcess(pinned(cpus, [binary('haproxy'), '-f', file, '-db']));
      await waitReady(port, ctx.secret, proc);
      return { pid: proc.pid, port, stop: () => proc.stop(), alive: () => proc.alive(), output: proc.output };
    },
  },
  pipe: portcullisPeer('portcullis pipe', { mode: 'pipe' }),
  relay: portcullisPeer('portcullis relay', { mode: 'relay' }),
  'pipe-full': portcullisPeer('portcullis pipe, every feature configured', { mode: 'pipe', full: true }),
  'workers-1': portcullisPeer('portcullis pipe, workers: 1 (unpinned)', { mode: 'pipe', workers: 1 }, 'all'),
  'workers-2': portcullisPeer('portcullis pipe, workers: 2 (unpinned)', { mode: 'pipe', workers: 2 }, 'all'),
};

function portcullisPeer(label, options, defaultCpus = '0') {
  return {
    label,
    auth: true,
    portcullis: true,
    available: () => (existsSync(CLI) ? null : 'dist/cli.js missing (npm run build)'),
    /** `portcullis check` on this peer's config: null when valid, else its message. */
    check(ctx) {
      const file = join(ctx.tmp, `check-${label.replace(/\W+/g, '-')}.json`);
      writeFileSync(file, JSON.stringify(portcullisConfig({ ...ctx, adminPort: 1 }, 1, options), null, 2));
      const r = spawnSync(process.execPath, [CLI, 'check', '--config', file], { env: childEnv({ JWT_SECRET: ctx.secret }), encoding: 'utf8' });
      return r.status === 0 ? null : (r.stderr || r.stdout).trim().split('\n').slice(0, 3).join(' | ');
    },
    async start(ctx, { cpus = defaultCpus } = {}) {
      const port = await freePort();
      const adminPort = await freePort();
      const file = join(ctx.tmp, `portcullis-${port}.json`);
      writeFileSync(file, JSON.stringify(portcullisConfig({ ...ctx, adminPort }, port, options), null, 2));
      const proc = startProcess(pinned(cpus, [process.execPath, CLI, '--config', file]), { env: { JWT_SECRET: ctx.secret }, cwd: ROOT });
      await waitReady(port, ctx.secret, proc);
      return { pid: proc.pid, port, stop: () => proc.stop(), alive: () => proc.alive(), output: proc.output, config: file };
    },
  };
}

export { portcullisConfig, nginxConfig, haproxyConfig };
