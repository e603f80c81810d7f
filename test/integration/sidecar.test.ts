// The sidecar as users run it: the BUILT CLI (`node dist/cli.js`, built by `npm test` before tap) as a
// child process, a config file on disk, a real echo upstream, real sockets. Covers SPEC 1 (commands,
// exit codes, signals), 2 (config file, env expansion, check output) and 6.1 (admin health endpoints).
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { WebSocket } from 'ws';
import { eventually, freePort, type Teardown } from '../helpers/net.js';
import { hs256, SECRET } from '../helpers/tokens.js';
import { rawUpgrade } from '../helpers/upgrade.js';
import { startEchoUpstream } from '../helpers/upstream.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = join(ROOT, 'dist', 'cli.js');
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const ADMIN_TOKEN = 'admin-token-for-tests-4f9c2e';
// Variables the CLI reads; the test decides each of them, whatever the developer's shell has set.
const CONTROLLED = ['PORTCULLIS_CONFIG', 'JWT_SECRET', 'ADMIN_TOKEN', 'PORT', 'ADMIN_PORT', 'HOST', 'ADMIN_HOST', 'LOG_LEVEL', 'UPSTREAM_URL', 'BAD_PORT'];

function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const name of CONTROLLED) delete env[name];
  // tap preloads its process tracker into every child through NODE_OPTIONS, for coverage; that costs
  // ~0.6 s per spawn, so without coverage the children start bare.
  if (env.TAP_DISABLE_COVERAGE === '1' && env.NODE_OPTIONS) {
    env.NODE_OPTIONS = env.NODE_OPTIONS.replace(/"?--import=\S*@tapjs\/processinfo\S*?"?(?=\s|$)/g, '').trim();
  }
  return { ...env, ...extra };
}

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** A CLI child process, killed by `t.teardown` if it is still running. */
function spawnCli(t: Teardown, args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}) {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: options.cwd ?? ROOT, env: options.env ?? cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<Run>((resolve) => child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return { child, exited, stdout: () => stdout, stderr: () => stderr };
}

/** Runs a CLI command to completion (bounded: a hang fails the test instead of stalling the suite). */
async function runCli(t: Teardown, args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<Run> {
  const run = spawnCli(t, args, options);
  const timer = setTimeout(() => run.child.kill('SIGKILL'), 15000);
  const result = await run.exited;
  clearTimeout(timer);
  return result;
}

/** The JSON log lines a process wrote to stdout (anything else on stdout is a failure of its own). */
function logLines(stdout: string): Record<string, unknown>[] {
  return stdout
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

/** Resolves once a log line with `msg` appears; rejects if the process exits first or 10 s pass. */
function waitForLog(proc: ReturnType<typeof spawnCli>, msg: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const find = () => logLines(proc.stdout().split('\n').slice(0, -1).join('\n')).find((line) => line.msg === msg);
    const timer = setTimeout(() => done(new Error(`no "${msg}" log line within 10 s; stdout: ${proc.stdout()} stderr: ${proc.stderr()}`)), 10000);
    const onData = () => {
      try {
        const line = find();
        if (line) done(undefined, line);
      } catch (err) {
        done(new Error(`stdout is not JSON lines: ${(err as Error).message}; stdout: ${proc.stdout()}`));
      }
    };
    const onExit = () => done(new Error(`exited before "${msg}": code ${proc.child.exitCode}; stdout: ${proc.stdout()} stderr: ${proc.stderr()}`));
    proc.child.stdout!.on('data', onData);
    proc.child.once('exit', onExit);
    onData();
    function done(err?: Error, line?: Record<string, unknown>) {
      clearTimeout(timer);
      proc.child.stdout!.off('data', onData);
      proc.child.off('exit', onExit);
      if (err) reject(err);
      else resolve(line!);
    }
  });
}

function payloadOf(jwt: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
}

/** Opens a WebSocket, sends one message and resolves the echo. */
async function echoThrough(url: string, headers: Record<string, string>, message: string): Promise<string> {
  const ws = new WebSocket(url, { headers });
  try {
    await once(ws, 'open');
    ws.send(message);
    const [data] = (await once(ws, 'message')) as [Buffer];
    return data.toString();
  } finally {
    ws.close();
    if (ws.readyState !== WebSocket.CLOSED) await once(ws, 'close');
  }
}

/** Every stderr line of a failed `check` has the `path.to.field: message` shape, and nothing else is there. */
function assertProblemLines(t: Test, stderr: string): string[] {
  const lines = stderr.split('\n').filter((line) => line !== '');
  t.ok(lines.length > 0, 'at least one problem line');
  for (const line of lines) t.match(line, /^[A-Za-z0-9_$.-]+: \S/, `problem line shape: ${line}`);
  t.notMatch(stderr, /^\s+at /m, 'no stack trace');
  return lines;
}

function writeJson(dir: string, name: string, value: unknown): string {
  const file = join(dir, name);
  writeFileSync(file, JSON.stringify(value, null, 2));
  return file;
}

t.test('a running sidecar', async (t) => {
  const upstream = await startEchoUpstream(t);
  const port = await freePort();
  let adminPort = await freePort();
  while (adminPort === port) adminPort = await freePort();
  const dir = t.testdir();
  const configFile = writeJson(dir, 'gateway.config.json', {
    listen: { host: '127.0.0.1', port },
    admin: { host: '127.0.0.1', port: adminPort, token: ADMIN_TOKEN },
    log: { level: 'debug' },
    drain: { timeoutMs: 2000 },
    authenticators: {
      // The secret comes from the environment, as in production.
      'user-jwt': { type: 'jwt', from: ['bearer', 'query:access_token'], secret: '${JWT_SECRET}', algorithms: ['HS256'] },
    },
    routes: [{ path: '/echo', auth: ['user-jwt'], upstream: upstream.url }],
  });
  const env = cleanEnv({ JWT_SECRET: SECRET });
  const gateway = spawnCli(t, ['--config', configFile], { env });
  const tokenRunning = runCli(t, ['token', '--secret', SECRET, '--sub', 'alice'], { env });
  const listening = await waitForLog(gateway, 'listening');
  await waitForLog(gateway, 'admin listening');
  t.equal(listening.port, port, 'the listening line carries the port');
  t.match(String(listening.address), `:${port}`, 'and the address');

  const tokenRun = await tokenRunning;
  t.equal(tokenRun.code, 0, 'token exits 0');
  const token = tokenRun.stdout.trim();
  t.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/, 'token prints one JWT');
  const claims = payloadOf(token);
  t.equal(claims.sub, 'alice');
  t.equal(Number(claims.exp) - Number(claims.iat), 3600, 'default ttl 1h');
  t.equal((JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString()) as { alg: string }).alg, 'HS256');

  t.test('an authenticated echo through the gateway', async (t) => {
    const url = `ws://127.0.0.1:${port}/echo`;
    t.equal(await echoThrough(url, { Authorization: `Bearer ${token}` }, 'hello sidecar'), 'hello sidecar');
    t.equal(await echoThrough(`${url}?access_token=${token}&room=1`, {}, 'by query'), 'by query');
    t.equal(upstream.seen.length, 2, 'both reached the upstream');
    for (const seen of upstream.seen) {
      t.equal(seen.headers['x-auth-subject'], 'alice', 'identity forwarded');
      t.equal(seen.headers.authorization, undefined, 'bearer credential stripped');
      t.notMatch(seen.url, /access_token/, 'query credential stripped');
    }
    t.equal(upstream.seen[1]!.url, '/echo?room=1', 'the rest of the query is kept');
  });

  t.test('no token: 401 on the raw socket, nothing upstream', async (t) => {
    const before = upstream.seen.length;
    const res = await rawUpgrade(port, '/echo', { 'X-Request-Id': 'sidecar-401' });
    t.equal(res.statusLine, 'HTTP/1.1 401 Unauthorized');
    t.equal(res.headers['www-authenticate'], 'Bearer realm="portcullis"');
    t.equal(res.headers['x-request-id'], 'sidecar-401');
    t.same(JSON.parse(res.body), { error: 'unauthorized', error_description: 'credentials required' });
    t.ok(res.closed, 'socket closed by the gateway');
    const forged = await rawUpgrade(port, '/echo', { Authorization: `Bearer ${token}x` });
    t.equal(forged.status, 401, 'a bad signature is 401 too');
    t.match(forged.headers['www-authenticate'], /error="invalid_token"/);
    t.equal(upstream.seen.length, before, 'the upstream saw neither');
  });

  t.test('plain HTTP: 426 on the route path, 404 elsewhere, both JSON', async (t) => {
    const onRoute = await fetch(`http://127.0.0.1:${port}/echo`);
    t.equal(onRoute.status, 426);
    t.match(onRoute.headers.get('content-type'), /^application\/json/);
    t.equal(onRoute.headers.get('upgrade')?.toLowerCase(), 'websocket');
    t.match(await onRoute.json(), { error: /^[a-z_]+$/, error_description: String });
    const elsewhere = await fetch(`http://127.0.0.1:${port}/nowhere`);
    t.equal(elsewhere.status, 404);
    t.match(elsewhere.headers.get('content-type'), /^application\/json/);
    t.match(await elsewhere.json(), { error: 'not_found', error_description: String });
    const upgradeElsewhere = await rawUpgrade(port, '/nowhere');
    t.equal(upgradeElsewhere.status, 404, 'an upgrade on no route is 404 in the sidecar');
  });

  t.test('admin endpoints', async (t) => {
    const admin = `http://127.0.0.1:${adminPort}`;
    const healthz = await fetch(`${admin}/healthz`);
    t.equal(healthz.status, 200, '/healthz');
    await healthz.arrayBuffer();
    const readyz = await fetch(`${admin}/readyz`);
    t.equal(readyz.status, 200, '/readyz');
    await readyz.arrayBuffer();
    const anonymous = await fetch(`${admin}/connections`);
    t.equal(anonymous.status, 401, '/connections without a token');
    await anonymous.arrayBuffer();
    const wrong = await fetch(`${admin}/connections`, { headers: { Authorization: `Bearer ${ADMIN_TOKEN}x` } });
    t.equal(wrong.status, 401, '/connections with the wrong token');
    await wrong.arrayBuffer();
    const onMain = await fetch(`http://127.0.0.1:${port}/healthz`);
    t.equal(onMain.status, 404, 'admin endpoints are not on the main port');
    await onMain.arrayBuffer();
  });

  t.test('a second instance on the same port exits 2', async (t) => {
    // Started through PORTCULLIS_CONFIG from a directory without a gateway.config.json: exit 2 (not 1)
    // also shows the variable was used when --config is absent.
    const cwd = join(dir, 'elsewhere');
    mkdirSync(cwd);
    const second = await runCli(t, [], { env: { ...env, PORTCULLIS_CONFIG: configFile }, cwd });
    t.equal(second.code, 2, `exit code (stderr: ${second.stderr})`);
    t.match(second.stdout, /could not listen/);
    t.match(second.stdout, /EADDRINUSE/);
    t.equal(gateway.child.exitCode, null, 'the first instance keeps running');
  });

  t.test('SIGTERM drains and exits 0', async (t) => {
    gateway.child.kill('SIGTERM');
    const result = await gateway.exited;
    t.equal(result.code, 0, 'exit code');
    t.equal(result.signal, null, 'exited by itself, not killed by the signal');
    const lines = logLines(result.stdout);
    t.ok(lines.some((l) => l.msg === 'stopped'), "a 'stopped' log line");
    t.ok(lines.some((l) => l.msg === 'upgrade accepted' && l.subject === 'alice'), 'handshake decisions are logged');
    t.notOk(result.stdout.includes(token), 'the log never contains the token');
    t.notOk(result.stdout.includes(token.split('.')[2]!), 'nor its signature');
    t.notOk(result.stdout.includes(SECRET), 'nor the secret');
    t.notOk(result.stdout.includes(ADMIN_TOKEN), 'nor the admin token');
    t.equal(result.stderr, '', 'nothing on stderr');
  });
});

t.test('portcullis check', async (t) => {
  const dir = t.testdir({ elsewhere: {} });
  const valid = writeJson(dir, 'valid.json', {
    listen: { port: 0 },
    authenticators: { 'user-jwt': { type: 'jwt', from: ['bearer'], secret: '${JWT_SECRET}', algorithms: ['HS256'] } },
    routes: [{ path: '/echo', auth: ['user-jwt'], upstream: 'ws://127.0.0.1:9' }],
  });
  const invalid = writeJson(dir, 'invalid.json', {
    listen: { port: '${BAD_PORT}' },
    limits: { maxConectionsPerIp: 5 },
    authenticators: { cookie: { type: 'jwt', from: ['cookie:access_token'], secret: SECRET, algorithms: ['HS256'] } },
    routes: [{ path: '/chat', auth: ['cookie'], upstream: 'ws://127.0.0.1:9' }],
  });
  const origins = writeJson(dir, 'origins.json', {
    authenticators: { cookie: { type: 'jwt', from: ['cookie:access_token'], secret: SECRET, algorithms: ['HS256'] } },
    routes: [{ path: '/chat', auth: ['cookie'], upstream: 'ws://127.0.0.1:9' }],
  });
  const env = cleanEnv({ JWT_SECRET: SECRET });
  const cwd = join(dir, 'elsewhere');
  const bundled = join(ROOT, 'gateway.config.json');
  // Independent processes: started together, checked one by one.
  const runs = {
    valid: runCli(t, ['check', '--config', valid], { env }),
    missingVar: runCli(t, ['check', '--config', valid]),
    invalid: runCli(t, ['check', '--config', invalid], { env: cleanEnv({ BAD_PORT: 'eighty' }) }),
    origins: runCli(t, ['check', '--config', origins], { env }),
    fromEnv: runCli(t, ['check'], { env: { ...env, PORTCULLIS_CONFIG: valid }, cwd }),
    neither: runCli(t, ['check'], { env, cwd }),
    both: runCli(t, ['check', '--config', valid], { env: { ...env, PORTCULLIS_CONFIG: invalid }, cwd }),
    bundledOk: runCli(t, ['check', '--config', bundled], { env: cleanEnv({ JWT_SECRET: SECRET, ADMIN_TOKEN }) }),
    bundledNoSecret: runCli(t, ['check', '--config', bundled], { env: cleanEnv({ ADMIN_TOKEN }) }),
  };

  t.test('a valid config: exit 0 and "configuration OK"', async (t) => {
    const run = await runs.valid;
    t.equal(run.code, 0, `exit code (stderr: ${run.stderr})`);
    t.match(run.stdout, /configuration OK/);
    t.equal(run.stderr, '');
    // A dry run: what the config does follows (src/config/summary.ts, unit-tested in detail).
    t.match(run.stdout, /\nlistens on ws:\/\/[^\n]*\n[\s\S]*\nroutes \(1, matched in order\):\n  0\. \/echo \[pipe\] auth user-jwt -> /);
    t.match(run.stdout, /authenticators \(\d+\):/);
  });

  t.test('a missing ${VAR} fails, naming the field', async (t) => {
    const run = await runs.missingVar;
    t.equal(run.code, 1);
    const lines = assertProblemLines(t, run.stderr);
    t.ok(lines.some((l) => l.startsWith('authenticators.user-jwt.secret: ')), 'names authenticators.user-jwt.secret');
    t.notMatch(run.stdout, /configuration OK/);
  });

  t.test('an invalid config: exit 1, every problem on its own line, no stack', async (t) => {
    const run = await runs.invalid;
    t.equal(run.code, 1, 'exit code');
    t.equal(run.stdout, '', 'nothing on stdout');
    const lines = assertProblemLines(t, run.stderr);
    t.ok(lines.includes('limits.maxConectionsPerIp: unknown field'), 'the unknown field, by its own path');
    t.ok(lines.some((l) => l.startsWith('listen.port: ')), 'the ${BAD_PORT} that is not a number');
    t.ok(lines.some((l) => l.startsWith('routes.0.origins: ')), 'the missing origins on the cookie route');
  });

  t.test('one problem alone is reported the same way', async (t) => {
    const run = await runs.origins;
    t.equal(run.code, 1);
    const lines = assertProblemLines(t, run.stderr);
    t.equal(lines.length, 1);
    t.match(lines[0], /^routes\.0\.origins: /);
  });

  t.test('PORTCULLIS_CONFIG is used when --config is absent, --config wins over it', async (t) => {
    const fromEnv = await runs.fromEnv;
    t.equal(fromEnv.code, 0, `exit code (stderr: ${fromEnv.stderr})`);
    t.match(fromEnv.stdout, `configuration OK: ${valid}`);
    const neither = await runs.neither;
    t.equal(neither.code, 1, 'no variable and no ./gateway.config.json: exit 1');
    t.match(neither.stderr, /gateway\.config\.json/);
    const both = await runs.both;
    t.equal(both.code, 0, '--config takes precedence');
  });

  t.test('the bundled gateway.config.json', async (t) => {
    const ok = await runs.bundledOk;
    t.equal(ok.code, 0, `passes with JWT_SECRET and ADMIN_TOKEN set (stderr: ${ok.stderr})`);
    t.match(ok.stdout, /configuration OK/);
    const noSecret = await runs.bundledNoSecret;
    t.equal(noSecret.code, 1, 'fails without JWT_SECRET');
    const lines = assertProblemLines(t, noSecret.stderr);
    t.ok(lines.some((l) => l.startsWith('authenticators.user-jwt.secret: ')), 'naming authenticators.user-jwt.secret');
    t.notOk(lines.some((l) => l.startsWith('admin.')), 'and nothing about the admin token that is set');
  });
});

t.test('arguments', async (t) => {
  const runs = {
    version: runCli(t, ['--version']),
    help: runCli(t, ['--help']),
    unknownCommand: runCli(t, ['frobnicate']),
    unknownOption: runCli(t, ['--frobnicate']),
    noSecret: runCli(t, ['token', '--sub', 'alice']),
    token: runCli(t, ['token', '--secret', SECRET, '--sub', 'bob', '--ttl', '5m', '--claim', 'scope=chat', '--claim', 'n=3']),
  };
  t.test('--version prints the package version', async (t) => {
    const run = await runs.version;
    t.equal(run.code, 0);
    t.equal(run.stdout, `${VERSION}\n`);
  });

  t.test('--help prints usage and exits 0', async (t) => {
    const run = await runs.help;
    t.equal(run.code, 0);
    t.match(run.stdout, /portcullis check/);
    t.match(run.stdout, /portcullis token/);
    t.equal(run.stderr, '');
  });

  t.test('an unknown command exits 1 with a one-line reason', async (t) => {
    const run = await runs.unknownCommand;
    t.equal(run.code, 1);
    t.match(run.stderr, /frobnicate/);
    t.notMatch(run.stderr, /^\s+at /m, 'no stack trace');
    t.equal(run.stdout, '');
  });

  t.test('an unknown option exits 1', async (t) => {
    const run = await runs.unknownOption;
    t.equal(run.code, 1);
    t.notMatch(run.stderr, /^\s+at /m, 'no stack trace');
  });

  t.test('token without --secret exits 1', async (t) => {
    const run = await runs.noSecret;
    t.equal(run.code, 1);
    t.match(run.stderr, /--secret/);
    t.equal(run.stdout, '', 'no token printed');
    t.notMatch(run.stderr, /^\s+at /m, 'no stack trace');
  });

  t.test('token --ttl and --claim', async (t) => {
    const run = await runs.token;
    t.equal(run.code, 0);
    const claims = payloadOf(run.stdout.trim());
    t.equal(Number(claims.exp) - Number(claims.iat), 300);
    t.match(claims, { sub: 'bob', scope: 'chat', n: 3 });
  });
});

t.test('--pretty: readable log lines instead of JSON, secrets still redacted', async (t) => {
  const upstream = await startEchoUpstream(t);
  const port = await freePort();
  const configFile = writeJson(t.testdir(), 'gateway.config.json', {
    listen: { host: '127.0.0.1', port },
    authenticators: { 'user-jwt': { type: 'jwt', from: ['bearer'], secret: '${JWT_SECRET}', algorithms: ['HS256'] } },
    routes: [{ path: '/echo', auth: ['user-jwt'], upstream: upstream.url }],
  });
  const gateway = spawnCli(t, ['--config', configFile, '--pretty'], { env: cleanEnv({ JWT_SECRET: SECRET }) });
  await eventually(() => gateway.stdout().includes('listening'), 10000, 'the listening line');
  const bad = `Bearer ${hs256({ sub: 'mallory' }, 'another-secret-of-at-least-32-bytes-000')}`;
  t.equal((await rawUpgrade(port, '/echo', { Authorization: bad })).status, 401);
  await eventually(() => gateway.stdout().includes('upgrade rejected'), 5000, 'the rejection line');
  gateway.child.kill('SIGTERM');
  const run = await gateway.exited;
  t.equal(run.code, 0);
  t.match(run.stdout, /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: listening$/m, 'pino-pretty lines: time, level, message');
  t.match(run.stdout, /^\s+code: "GW_ERR_SIGNATURE_INVALID"$/m, 'fields indented below');
  t.notOk(run.stdout.split('\n').some((line) => line.startsWith('{')), 'no JSON line');
  t.notOk(run.stdout.includes(bad.slice(7)) || run.stdout.includes(SECRET), 'no token or secret');
});
