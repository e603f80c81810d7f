// SPEC 6.3 reload: `gateway.reload(config)` in process, and through the built CLI (SIGHUP, `"watch": true`).
// A valid config is in force at once for new handshakes and live connections are untouched; an invalid
// one changes nothing and its problems are reported. Real sockets and processes throughout.
import { writeFileSync } from 'node:fs';
import t, { type Test } from 'tap';
import { WebSocket } from 'ws';
import { ConfigError } from '../../src/errors.js';
import type { GatewayConfig } from '../../src/config/schema.js';
import { cleanEnv, spawnCli, writeJson, type CliProcess } from '../helpers/cli.js';
import { echo, openClient } from '../helpers/client.js';
import { startGateway } from '../helpers/gateway.js';
import { freePort, sleep } from '../helpers/net.js';
import { hs256 } from '../helpers/tokens.js';
import { rawUpgrade, type RawResponse } from '../helpers/upgrade.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';

// Two HS256 secrets (≥ 32 bytes each): the config starts with OLD and is reloaded with NEW.
const OLD = 'reload-old-secret-0123456789abcdef-0123';
const NEW = 'reload-new-secret-fedcba9876543210-9876';

/** A gateway config with one jwt authenticator on `secret`, a pipe and a relay route, and `extraRoutes`. */
function config(upstream: string, secret: string, extraRoutes: object[] = []) {
  return {
    authenticators: { jwt: { type: 'jwt', from: ['bearer', 'query:access_token'], secret, algorithms: ['HS256'] } },
    routes: [
      { path: '/pipe', auth: ['jwt'], upstream },
      { path: '/relay', auth: ['jwt'], upstream, mode: 'relay' },
      ...extraRoutes,
    ],
  };
}

/** A config with four problems, each on its own path. */
function invalidConfig(upstream: string) {
  return {
    limits: { maxConectionsPerIp: 5 },
    authenticators: { jwt: { type: 'jwt', from: ['bearer'], secret: 'short', algorithms: ['HS256'] } },
    routes: [
      { path: '/pipe', auth: ['nope'], upstream },
      { path: '/relay', auth: ['jwt'], upstream, mode: 'pipe', heartbeatMs: 5 },
    ],
  };
}
const INVALID_PROBLEMS = [
  'limits.maxConectionsPerIp: unknown field',
  'authenticators.jwt.secret: must be at least 32 bytes',
  'routes.0.auth.0: unknown authenticator "nope"',
  'routes.1.heartbeatMs: only for mode "relay"',
];

const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });

function assertSignatureInvalid(t: Test, res: RawResponse, what: string): void {
  t.equal(res.status, 401, `${what}: 401`);
  t.equal(res.headers['www-authenticate'], 'Bearer realm="portcullis", error="invalid_token", error_description="signature invalid"', `${what}: invalid_token challenge`);
  t.ok(res.closed, `${what}: socket closed by the gateway`);
}

t.test('gateway.reload(config) in process', async (t) => {
  t.test('a new JWT secret: new handshakes use it at once, live pipe and relay connections keep echoing', async (t) => {
    const upstream = await startEchoUpstream(t);
    const gw = await startGateway(t, config(upstream.url, OLD));
    const reloaded: GatewayConfig[] = [];
    gw.gateway.on('reloaded', (c) => reloaded.push(c));
    const oldToken = hs256({ sub: 'alice' }, OLD);
    const newToken = hs256({ sub: 'bob' }, NEW);

    const pipe = await openClient(t, gw.url('/pipe'), [], bearer(oldToken));
    const relay = await openClient(t, gw.url('/relay'), [], bearer(oldToken));
    t.equal(await echo(pipe, 'pipe before'), 'pipe before', 'pipe echoes before');
    t.equal(await echo(relay, 'relay before'), 'relay before', 'relay echoes before');
    const before = gw.gateway.config;
    t.equal(before.authenticators?.jwt?.type, 'jwt', 'the config in force before the reload');

    await gw.gateway.reload(config(upstream.url, NEW));
    t.equal(reloaded.length, 1, "one 'reloaded' event");
    t.equal(reloaded[0], gw.gateway.config, "'reloaded' carries the config now in force");
    t.not(gw.gateway.config, before, 'the config in force was replaced');
    t.match(gw.gateway.config.authenticators?.jwt, { secret: NEW }, 'with the new secret');
    t.ok(gw.logs().some((l) => l.msg === 'config reloaded'), "a 'config reloaded' log line");

    t.equal(gw.gateway.connections, 2, 'no connection was dropped');
    t.equal(await echo(pipe, 'pipe after'), 'pipe after', 'the pipe connection opened before keeps echoing');
    t.equal(await echo(relay, 'relay after'), 'relay after', 'the relay connection opened before keeps echoing');
    t.equal(pipe.readyState, WebSocket.OPEN, 'the pipe client is open');
    t.equal(relay.readyState, WebSocket.OPEN, 'the relay client is open');

    const seen = upstream.seen.length;
    assertSignatureInvalid(t, await rawUpgrade(gw.port, '/pipe', bearer(oldToken)), 'old token on /pipe');
    assertSignatureInvalid(t, await rawUpgrade(gw.port, '/relay', bearer(oldToken)), 'old token on /relay');
    t.equal(upstream.seen.length, seen, 'the refused handshakes reached no upstream');

    const res = await rawUpgrade(gw.port, '/pipe', bearer(newToken));
    t.equal(res.status, 101, 'new token on /pipe: 101');
    const fresh = await openClient(t, gw.url('/relay'), [], bearer(newToken));
    t.equal(await echo(fresh, 'new'), 'new', 'new token on /relay: open and echoing');
    t.equal(upstream.seen.at(-1)?.headers['x-auth-subject'], 'bob', 'the new identity went upstream');
  });

  t.test('an invalid config throws ConfigError listing every problem; the old config stays in force', async (t) => {
    const upstream = await startEchoUpstream(t);
    const gw = await startGateway(t, config(upstream.url, OLD));
    const reloaded: GatewayConfig[] = [];
    gw.gateway.on('reloaded', (c) => reloaded.push(c));
    const oldToken = hs256({ sub: 'alice' }, OLD);
    const live = await openClient(t, gw.url('/relay'), [], bearer(oldToken));
    const before = gw.gateway.config;

    const err = await gw.gateway.reload(invalidConfig(upstream.url)).then(
      () => undefined,
      (e: unknown) => e,
    );
    t.ok(err instanceof ConfigError, 'rejects with a ConfigError');
    const problems = [...((err as ConfigError | undefined)?.problems ?? [])];
    for (const problem of INVALID_PROBLEMS) t.ok(problems.includes(problem), `lists "${problem}"`);
    t.equal(problems.length, INVALID_PROBLEMS.length, `and nothing else (${problems.join(' | ')})`);
    for (const problem of INVALID_PROBLEMS) t.match((err as Error).message, problem, 'the message carries every problem');

    const garbage = await gw.gateway.reload('not a config').then(
      () => undefined,
      (e: unknown) => e,
    );
    t.ok(garbage instanceof ConfigError, 'a config that is not even an object: ConfigError too');

    t.equal(reloaded.length, 0, "no 'reloaded' event");
    t.equal(gw.gateway.config, before, 'the config in force is the old one');
    t.equal(await echo(live, 'still here'), 'still here', 'the live connection keeps echoing');
    const pipe = await openClient(t, gw.url('/pipe'), [], bearer(oldToken));
    t.equal(await echo(pipe, 'old token'), 'old token', 'the old token still opens new connections');
    const wrong = await rawUpgrade(gw.port, '/pipe', bearer(hs256({ sub: 'alice' }, NEW)));
    t.equal(wrong.status, 401, 'and a token for another secret is still refused');
    t.equal((await rawUpgrade(gw.port, '/pipe', { Authorization: 'Bearer x' })).status, 401, 'the route still demands a token');
  });

  t.test('a reload that adds a route makes it reachable at once; one that removes a route keeps its connections', async (t) => {
    const upstream = await startEchoUpstream(t);
    const gw = await startGateway(t, config(upstream.url, OLD));
    const token = hs256({ sub: 'alice' }, OLD);
    const onPipe = await openClient(t, gw.url('/pipe'), [], bearer(token));
    t.equal((await rawUpgrade(gw.port, '/added', bearer(token))).status, 404, 'before: /added is 404');

    // /pipe removed, /added (relay) added.
    const next = config(upstream.url, OLD);
    next.routes = [next.routes[1]!, { path: '/added', auth: ['jwt'], upstream: upstream.url, mode: 'relay' }];
    const seen = upstream.seen.length;
    await gw.gateway.reload(next);
    // No wait of any kind between the reload and the handshake.
    const added = await openClient(t, gw.url('/added'), [], bearer(token));
    t.equal(await echo(added, 'on the new route'), 'on the new route', 'the added route answers 101 and relays');
    t.equal(upstream.seen.length, seen + 1, 'through a new upstream connection');
    t.equal((await rawUpgrade(gw.port, '/pipe', bearer(token))).status, 404, 'the removed route is 404 for new handshakes');
    t.equal(await echo(onPipe, 'removed but live'), 'removed but live', 'a connection on the removed route keeps echoing');
  });

  t.test('live connections count against caps set by a reload; drain settings of a reload apply to close()', async (t) => {
    const upstream = await startEchoUpstream(t);
    const gw = await startGateway(t, { ...config(upstream.url, OLD), drain: { timeoutMs: 10000 } });
    const token = hs256({ sub: 'alice' }, OLD);
    const live = await openClient(t, gw.url('/pipe'), [], bearer(token));
    const capped = config(upstream.url, OLD);
    capped.routes[0] = { ...capped.routes[0]!, maxConnections: 1 } as (typeof capped.routes)[0];
    await gw.gateway.reload({ ...capped, drain: { timeoutMs: 300 } });
    const full = await rawUpgrade(gw.port, '/pipe', bearer(token));
    t.equal(full.status, 503, 'the route cap of 1 is reached by the connection opened before the reload');
    t.equal(full.headers['retry-after'], '1', 'Retry-After 1 for a connection cap');
    t.equal(await echo(live, 'counted'), 'counted', 'and that connection keeps echoing');
    const started = Date.now();
    await gw.gateway.close();
    const elapsed = Date.now() - started;
    t.ok(elapsed >= 250 && elapsed < 2000, `close() used the reloaded drain.timeoutMs of 300 (${elapsed} ms, not 10 s)`);
  });

  t.test("every valid reload emits 'reloaded' once, in order", async (t) => {
    const upstream = await startEchoUpstream(t);
    const gw = await startGateway(t, config(upstream.url, OLD));
    const secrets: unknown[] = [];
    gw.gateway.on('reloaded', (c) => secrets.push((c.authenticators?.jwt as { secret?: unknown }).secret));
    await gw.gateway.reload(config(upstream.url, NEW));
    await gw.gateway.reload(invalidConfig(upstream.url)).catch(() => {});
    await gw.gateway.reload(config(upstream.url, OLD));
    t.same(secrets, [NEW, OLD], 'two events for the two valid reloads, none for the invalid one');
  });
});

// ---------------------------------------------------------------------------------------------------
// Through the CLI

/** The sidecar with `config(...)` (plus `extra` top-level fields) in a fresh directory, listening. */
async function startSidecar(t: Test, upstream: EchoUpstream, extra: Record<string, unknown> = {}) {
  const port = await freePort();
  const dir = t.testdir();
  const fileOf = (secret: string) => ({ listen: { host: '127.0.0.1', port }, log: { level: 'info' }, drain: { timeoutMs: 500 }, ...extra, ...config(upstream.url, secret) });
  const file = writeJson(dir, 'gateway.config.json', fileOf(OLD));
  const proc = spawnCli(t, ['--config', file], { env: cleanEnv() });
  await proc.waitFor('listening');
  return { port, file, proc, fileOf, url: (path: string) => `ws://127.0.0.1:${port}${path}` };
}

/** Replaces the config file's content (same inode, like most editors' plain save). */
function rewrite(file: string, value: unknown): void {
  writeFileSync(file, JSON.stringify(value, null, 2));
}

/** Waits for the next line with `msg` written after now. */
function next(proc: CliProcess, msg: string, timeoutMs = 5000) {
  return proc.waitFor(msg, { after: proc.lines().length, timeoutMs });
}

async function stop(t: Test, proc: CliProcess): Promise<void> {
  proc.child.kill('SIGTERM');
  const exit = await proc.exited;
  t.equal(exit.code, 0, 'the process still stops cleanly (exit 0)');
  t.equal(proc.stderr(), '', 'nothing on stderr');
}

t.test('through the CLI', async (t) => {
  t.test('SIGHUP reloads: the old connection keeps echoing, the old token is refused, the new one accepted', async (t) => {
    const upstream = await startEchoUpstream(t);
    const s = await startSidecar(t, upstream);
    const oldToken = hs256({ sub: 'alice' }, OLD);
    const newToken = hs256({ sub: 'bob' }, NEW);
    const pipe = await openClient(t, s.url('/pipe'), [], bearer(oldToken));
    const relay = await openClient(t, s.url('/relay'), [], bearer(oldToken));
    t.equal(await echo(pipe, 'before'), 'before', 'echoes before the reload');

    rewrite(s.file, s.fileOf(NEW));
    const reloaded = next(s.proc, 'config reloaded');
    s.proc.child.kill('SIGHUP');
    const line = await reloaded;
    t.equal(line.level, 30, "'config reloaded' at info level");
    t.equal(s.proc.child.exitCode, null, 'the process is still running');

    t.equal(await echo(pipe, 'pipe after'), 'pipe after', 'the pipe connection opened before keeps echoing');
    t.equal(await echo(relay, 'relay after'), 'relay after', 'the relay connection opened before keeps echoing');
    assertSignatureInvalid(t, await rawUpgrade(s.port, '/pipe', bearer(oldToken)), 'old token');
    const fresh = await openClient(t, s.url('/relay'), [], bearer(newToken));
    t.equal(await echo(fresh, 'new token'), 'new token', 'the new token opens a connection');
    t.notOk(s.proc.stdout().includes(NEW), 'the new secret is not logged');
    await stop(t, s.proc);
  });

  t.test('an invalid config on SIGHUP is reported with every problem; the process keeps serving the old one', async (t) => {
    const upstream = await startEchoUpstream(t);
    const s = await startSidecar(t, upstream);
    const oldToken = hs256({ sub: 'alice' }, OLD);
    const live = await openClient(t, s.url('/relay'), [], bearer(oldToken));

    writeFileSync(s.file, JSON.stringify({ ...invalidConfig(upstream.url), listen: { host: '127.0.0.1', port: s.port } }));
    let failed = next(s.proc, 'config reload failed; the old config stays in force');
    s.proc.child.kill('SIGHUP');
    let line = await failed;
    t.equal(line.level, 50, 'logged at error level');
    const problems = line.problems as unknown;
    t.ok(Array.isArray(problems), `the line carries the problems (${JSON.stringify(line)})`);
    for (const problem of INVALID_PROBLEMS) t.ok((problems as string[]).includes(problem), `lists "${problem}"`);
    t.equal(s.proc.lines().filter((l) => l.msg === 'config reloaded').length, 0, "no 'config reloaded' line");
    t.notOk(s.proc.stdout().includes('"short"'), 'the (bad) secret value is not logged');

    // A file that is not JSON at all is reported the same way.
    writeFileSync(s.file, '{ "routes": [ oops');
    failed = next(s.proc, 'config reload failed; the old config stays in force');
    s.proc.child.kill('SIGHUP');
    line = await failed;
    t.match(line.problems, [/not valid JSON/], 'a file that does not parse: the problem says so');

    t.equal(s.proc.child.exitCode, null, 'the process keeps running');
    t.equal(await echo(live, 'still here'), 'still here', 'the live connection keeps echoing');
    const fresh = await openClient(t, s.url('/pipe'), [], bearer(oldToken));
    t.equal(await echo(fresh, 'old config'), 'old config', 'new handshakes still use the old config');
    t.equal((await rawUpgrade(s.port, '/pipe', bearer(hs256({ sub: 'alice' }, NEW)))).status, 401, 'and it still refuses other tokens');
    await stop(t, s.proc);
  });

  t.test('"watch": true reloads on the file change alone, within ~2 s', async (t) => {
    const upstream = await startEchoUpstream(t);
    const s = await startSidecar(t, upstream, { watch: true });
    const oldToken = hs256({ sub: 'alice' }, OLD);
    const newToken = hs256({ sub: 'bob' }, NEW);
    const live = await openClient(t, s.url('/pipe'), [], bearer(oldToken));

    const reloaded = next(s.proc, 'config reloaded', 2500);
    const written = Date.now();
    rewrite(s.file, { ...s.fileOf(NEW), watch: true });
    await reloaded;
    t.ok(Date.now() - written <= 2000, `reloaded ${Date.now() - written} ms after the write (no signal sent)`);
    t.equal(await echo(live, 'watched'), 'watched', 'the live connection keeps echoing');
    assertSignatureInvalid(t, await rawUpgrade(s.port, '/pipe', bearer(oldToken)), 'old token after the watched reload');
    t.equal((await rawUpgrade(s.port, '/pipe', bearer(newToken))).status, 101, 'new token: 101');

    // An invalid write is reported, and changes nothing.
    const failed = next(s.proc, 'config reload failed; the old config stays in force', 2500);
    writeFileSync(s.file, JSON.stringify({ ...invalidConfig(upstream.url), watch: true }));
    const line = await failed;
    for (const problem of INVALID_PROBLEMS) t.ok((line.problems as string[]).includes(problem), `lists "${problem}"`);
    t.equal((await rawUpgrade(s.port, '/pipe', bearer(newToken))).status, 101, 'the last valid config stays in force');
    await stop(t, s.proc);
  });

  t.test('without "watch", a file change alone does nothing', async (t) => {
    const upstream = await startEchoUpstream(t);
    const s = await startSidecar(t, upstream);
    const oldToken = hs256({ sub: 'alice' }, OLD);
    rewrite(s.file, s.fileOf(NEW));
    await sleep(1000);
    t.equal(s.proc.lines().filter((l) => l.msg === 'config reloaded').length, 0, "no 'config reloaded' line");
    const ws = await openClient(t, s.url('/pipe'), [], bearer(oldToken));
    t.equal(await echo(ws, 'unchanged'), 'unchanged', 'the old token still works');
    await stop(t, s.proc);
  });
});
