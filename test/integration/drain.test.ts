// SPEC 6.4 and 9 "Drain": `gateway.close()` in process, and SIGTERM/SIGINT on the built CLI. New upgrades
// get 503 with `Retry-After` (the remaining drain time), relay and local clients get close 1001 (spread
// over `drain.spreadMs`), pipe connections run on until they end or `drain.timeoutMs` destroys them, and
// close() resolves (the process exits 0) once nothing is left. Real sockets and processes throughout.
import t, { type Test } from 'tap';
import { WebSocket } from 'ws';
import { rejection } from '../helpers/assertions.js';
import { cleanEnv, spawnCli, writeJson, type CliProcess } from '../helpers/cli.js';
import { echo, openClient } from '../helpers/client.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { eventually, freePort, sleep } from '../helpers/net.js';
import { hs256, jwtAuth } from '../helpers/tokens.js';
import { rawUpgrade, type RawResponse } from '../helpers/upgrade.js';
import { startDelayedUpstream, startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';

const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });

/** A config with a pipe, a relay and a local route behind one jwt authenticator. */
function config(upstream: string, drain: { timeoutMs?: number; spreadMs?: number }) {
  return {
    drain,
    authenticators: { jwt: jwtAuth() },
    routes: [
      { path: '/pipe', auth: ['jwt'], upstream },
      { path: '/relay', auth: ['jwt'], upstream, mode: 'relay' },
      { path: '/local', auth: ['jwt'], mode: 'local' },
    ],
  };
}

/** Starts an echo upstream and a gateway whose local route echoes too. */
async function setup(t: Test, drain: { timeoutMs?: number; spreadMs?: number }): Promise<{ gw: TestGateway; upstream: EchoUpstream; token: string }> {
  const upstream = await startEchoUpstream(t);
  const gw = await startGateway(t, config(upstream.url, drain));
  gw.gateway.on('connection', (ws) => {
    ws.on('error', () => {});
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
  return { gw, upstream, token: hs256({ sub: 'alice' }) };
}

interface Closed {
  code: number;
  reason: string;
  /** Date.now() when the close event fired. */
  at: number;
}

/** Resolves when `ws` closes (never rejects; a 'error' before the close is swallowed). */
function closeOf(ws: WebSocket): Promise<Closed> {
  ws.on('error', () => {});
  if (ws.readyState === WebSocket.CLOSED) return Promise.reject(new Error('already closed'));
  return new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString(), at: Date.now() })));
}

/** close(), with the time it resolved. */
function timedClose(gw: TestGateway): { started: number; done: Promise<number> } {
  const started = Date.now();
  return { started, done: gw.gateway.close().then(() => Date.now()) };
}

/** Checks a drain 503 byte for byte; returns its Retry-After in seconds. */
function assertDrain503(t: Test, res: RawResponse, requestId: string, maxSeconds: number): number {
  const retryAfter = res.headers['retry-after'] ?? '';
  const seconds = Number(retryAfter);
  t.match(retryAfter, /^[1-9][0-9]*$/, `Retry-After is whole seconds, at least 1 (got ${JSON.stringify(retryAfter)})`);
  t.ok(seconds <= maxSeconds, `Retry-After ${seconds} ≤ ${maxSeconds} (the remaining drain time)`);
  const expected = rejection('503 Service Unavailable', 'unavailable', 'gateway is shutting down', requestId, [`Retry-After: ${retryAfter}`]);
  t.equal(res.raw, expected, 'the exact 503 bytes');
  t.ok(res.closed, 'the socket is closed by the gateway');
  return seconds;
}

t.test('close() with drain { timeoutMs: 1500, spreadMs: 0 }', async (t) => {
  const TIMEOUT = 1500;
  const { gw, upstream, token } = await setup(t, { timeoutMs: TIMEOUT, spreadMs: 0 });
  const pipe = await openClient(t, gw.url('/pipe'), [], bearer(token));
  const relay = await openClient(t, gw.url('/relay'), [], bearer(token));
  const local = await openClient(t, gw.url('/local'), [], bearer(token));
  for (const [ws, name] of [[pipe, 'pipe'], [relay, 'relay'], [local, 'local']] as const) t.equal(await echo(ws, name), name, `${name} echoes before`);
  t.equal(gw.gateway.connections, 3, 'three live connections');
  t.notOk(gw.gateway.draining, 'not draining before close()');
  const pipeClosed = closeOf(pipe);
  const relayClosed = closeOf(relay);
  const localClosed = closeOf(local);
  let resolvedAt: number | undefined;

  const { started, done } = timedClose(gw);
  void done.then((at) => (resolvedAt = at));
  t.ok(gw.gateway.draining, 'draining once close() is called');

  const [r, l] = await Promise.all([relayClosed, localClosed]);
  t.equal(r.code, 1001, 'the relay client gets close 1001');
  t.equal(l.code, 1001, 'the local client gets close 1001');
  t.ok(r.at - started < 300, `the relay close arrives at once (${r.at - started} ms)`);
  t.ok(l.at - started < 300, `the local close arrives at once (${l.at - started} ms)`);
  t.equal(resolvedAt, undefined, 'close() has not resolved while the pipe connection is open');

  // The pipe connection runs on.
  t.equal(await echo(pipe, 'during the drain'), 'during the drain', 'the pipe connection keeps echoing during the drain');

  // New upgrades: 503 with the remaining drain time in Retry-After, on every route, token or not.
  const seen = upstream.seen.length;
  const early = await rawUpgrade(gw.port, '/pipe', { ...bearer(token), 'X-Request-Id': 'drain-early' });
  const earlyAt = Date.now() - started;
  const earlySeconds = assertDrain503(t, early, 'drain-early', Math.ceil(TIMEOUT / 1000));
  t.equal(earlySeconds, Math.ceil((TIMEOUT - earlyAt) / 1000), `~${TIMEOUT - earlyAt} ms left: Retry-After ${earlySeconds}`);
  assertDrain503(t, await rawUpgrade(gw.port, '/relay', { 'X-Request-Id': 'drain-anon' }), 'drain-anon', 2);
  await sleep(Math.max(0, 700 - (Date.now() - started)));
  t.equal(await echo(pipe, 'halfway'), 'halfway', 'the pipe connection still echoes halfway through');
  await sleep(Math.max(0, 1100 - (Date.now() - started)));
  const late = await rawUpgrade(gw.port, '/local', { ...bearer(token), 'X-Request-Id': 'drain-late' });
  t.equal(assertDrain503(t, late, 'drain-late', 2), 1, 'with < 1 s left: Retry-After 1');
  t.equal(upstream.seen.length, seen, 'none of them reached the upstream');
  t.equal(pipe.readyState, WebSocket.OPEN, 'the pipe connection is open until timeoutMs');
  t.equal(resolvedAt, undefined, 'close() has not resolved yet');

  // At timeoutMs the pipe connection is destroyed, and close() resolves once everything is gone.
  const p = await pipeClosed;
  const elapsed = p.at - started;
  t.ok(elapsed >= TIMEOUT - 50, `the pipe connection is not destroyed before timeoutMs (${elapsed} ms)`);
  t.ok(elapsed <= TIMEOUT + 500, `it is destroyed at ~timeoutMs (${elapsed} ms)`);
  t.not(p.code, 1001, `destroyed, not closed with a close frame (code ${p.code})`);
  const at = await done;
  t.ok(at >= p.at - 20, `close() resolved after the last connection was gone (${at - started} ms)`);
  t.ok(at - started <= TIMEOUT + 1000, `and not much later (${at - started} ms)`);
  t.equal(gw.gateway.connections, 0, 'no connection is counted any more when close() resolves');
  await eventually(() => gw.gateway.connections === 0, 1000, 'the count to reach 0');
  t.equal(gw.gateway.connections, 0, 'no connection left shortly after');
  await eventually(() => upstream.open === 0, 1000, 'the upstream side to be closed');
  t.equal(upstream.open, 0, 'no upstream socket left open');
});

t.test('a check still pending when close() is called is answered 503', async (t) => {
  const { gw, upstream, token } = await setup(t, { timeoutMs: 1000 });
  let entered = false;
  gw.gateway.onWebSocketUpgrade(async () => {
    entered = true;
    await sleep(400);
    return true;
  });
  const pending = rawUpgrade(gw.port, '/pipe', { ...bearer(token), 'X-Request-Id': 'pending-check' });
  await eventually(() => entered, 2000, 'the handler to run');
  void gw.gateway.close();
  const res = await pending;
  assertDrain503(t, res, 'pending-check', 1);
  t.equal(upstream.seen.length, 0, 'nothing reached the upstream');
});

t.test('a relay handshake still connecting upstream when close() is called does not outlive the drain', async (t) => {
  // The upstream answers 400 ms after the upgrade request: close() is called while the gateway waits.
  const TIMEOUT = 3000;
  const upstream = await startDelayedUpstream(t, 400);
  const gw = await startGateway(t, { drain: { timeoutMs: TIMEOUT }, routes: [{ path: '/relay', auth: [], upstream: upstream.url, mode: 'relay' }] });
  const ws = new WebSocket(gw.url('/relay'));
  t.teardown(() => ws.terminate());
  ws.on('error', () => {});
  const outcome = new Promise<{ status?: number; code?: number; at: number }>((resolve) => {
    ws.once('unexpected-response', (_req, res) => resolve({ status: res.statusCode ?? 0, at: Date.now() }));
    ws.once('close', (code) => resolve({ code, at: Date.now() }));
  });
  await eventually(() => upstream.upgrades === 1, 2000, 'the upstream to get the upgrade');
  const { started, done } = timedClose(gw);
  const result = await outcome;
  const elapsed = result.at - started;
  t.ok(result.status === 503 || result.code === 1001, `answered 503 or closed with 1001 (got ${JSON.stringify({ ...result, at: elapsed })})`);
  t.ok(elapsed < 1500, `and well before drain.timeoutMs (${elapsed} ms)`);
  t.equal(gw.gateway.close(), gw.gateway.close(), 'close() called again returns the same promise');
  await done;
});

t.test('drain.spreadMs 1000: ten relay clients get their 1001 spread over ~1 s', async (t) => {
  const { gw, token } = await setup(t, { timeoutMs: 5000, spreadMs: 1000 });
  const clients = await Promise.all(Array.from({ length: 10 }, () => openClient(t, gw.url('/relay'), [], bearer(token))));
  t.equal(gw.gateway.connections, 10, 'ten live connections');
  const closes = clients.map(closeOf);
  const { started, done } = timedClose(gw);
  const closed = await Promise.all(closes);
  const at = closed.map((c) => c.at - started).sort((a, b) => a - b);
  t.same(closed.map((c) => c.code), Array(10).fill(1001), 'every client gets close 1001');
  const first = at[0]!;
  const last = at.at(-1)!;
  t.ok(first < 300, `the first close comes at once (${first} ms)`);
  t.ok(last - first >= 600, `first and last at least ~600 ms apart (${at.join(', ')} ms)`);
  t.ok(last <= 1500, `all within ~the spread (last at ${last} ms)`);
  t.ok(at.filter((ms) => ms - first < 200).length <= 3, `not all at once: at most 3 in the first 200 ms (${at.join(', ')})`);
  const resolved = await done;
  t.ok(resolved - started < 2500, `close() resolves once they are gone, long before timeoutMs (${resolved - started} ms)`);
  t.equal(gw.gateway.connections, 0, 'none left');
});

t.test('close() resolves early when every connection ends before timeoutMs', async (t) => {
  t.test('no connection at all: at once', async (t) => {
    const { gw } = await setup(t, { timeoutMs: 5000 });
    const { started, done } = timedClose(gw);
    t.ok((await done) - started < 200, 'resolved at once');
  });

  t.test('relay and local clients that answer the 1001: at once', async (t) => {
    const { gw, token } = await setup(t, { timeoutMs: 5000 });
    await openClient(t, gw.url('/relay'), [], bearer(token));
    await openClient(t, gw.url('/local'), [], bearer(token));
    const { started, done } = timedClose(gw);
    const elapsed = (await done) - started;
    t.ok(elapsed < 1000, `resolved after ${elapsed} ms, not at timeoutMs`);
    t.equal(gw.gateway.connections, 0, 'none left');
  });

  t.test('a pipe connection the client closes during the drain', async (t) => {
    const { gw, upstream, token } = await setup(t, { timeoutMs: 5000 });
    const pipe = await openClient(t, gw.url('/pipe'), [], bearer(token));
    const { started, done } = timedClose(gw);
    let resolved = false;
    void done.then(() => (resolved = true));
    await sleep(300);
    t.notOk(resolved, 'close() waits while the pipe connection is open');
    t.equal(await echo(pipe, 'still piping'), 'still piping', 'the pipe connection echoes during the drain');
    const closing = closeOf(pipe);
    pipe.close(1000, 'bye');
    const c = await closing;
    t.equal(c.code, 1000, 'the close handshake went through the pipe');
    const at = await done;
    t.ok(at - started < 1500, `close() resolved ${at - started} ms after it was called (timeoutMs 5000)`);
    t.ok(at >= c.at - 50, 'after the connection ended');
    await eventually(() => upstream.open === 0, 1000, 'the upstream side to be closed');
  });
});

// ---------------------------------------------------------------------------------------------------
// Through the CLI

const ADMIN_TOKEN = 'admin-token-for-drain-tests-83b1';

async function startSidecar(t: Test, upstream: EchoUpstream, timeoutMs: number) {
  const port = await freePort();
  let adminPort = await freePort();
  while (adminPort === port) adminPort = await freePort();
  const file = writeJson(t.testdir(), 'gateway.config.json', {
    listen: { host: '127.0.0.1', port },
    admin: { host: '127.0.0.1', port: adminPort, token: ADMIN_TOKEN },
    log: { level: 'info' },
    drain: { timeoutMs },
    authenticators: {},
    routes: [{ path: '/pipe', auth: [], upstream: upstream.url }],
  });
  const proc = spawnCli(t, ['--config', file], { env: cleanEnv() });
  await proc.waitFor('admin listening');
  return { port, proc, admin: `http://127.0.0.1:${adminPort}`, url: `ws://127.0.0.1:${port}/pipe` };
}

async function probe(url: string): Promise<{ status: number; body: unknown }> {
  const res = await fetch(url, { headers: { Connection: 'close' } });
  return { status: res.status, body: await res.json().catch(() => null) };
}

/** Sends `signal` and waits for the 'stopping' line; returns when it was sent. */
async function signal(proc: CliProcess, name: NodeJS.Signals): Promise<{ sent: number; line: Record<string, unknown> }> {
  const stopping = proc.waitFor('stopping', { after: proc.lines().length, timeoutMs: 3000 });
  const sent = Date.now();
  proc.child.kill(name);
  return { sent, line: await stopping };
}

t.test('through the CLI', async (t) => {
  t.test('SIGTERM: /readyz 503 at once while a pipe connection is open; exit 0 once the client closes it', async (t) => {
    const DRAIN = 10000;
    const upstream = await startEchoUpstream(t);
    const s = await startSidecar(t, upstream, DRAIN);
    t.equal((await probe(`${s.admin}/readyz`)).status, 200, '/readyz 200 before');
    const ws = await openClient(t, s.url);
    t.equal(await echo(ws, 'before'), 'before', 'echoes before the signal');

    const { sent, line } = await signal(s.proc, 'SIGTERM');
    t.equal(line.signal, 'SIGTERM', "'stopping' names the signal");
    t.equal(line.connections, 1, "'stopping' counts the open connection");
    const readyz = await probe(`${s.admin}/readyz`);
    t.equal(readyz.status, 503, '/readyz 503 at once');
    t.match(readyz.body, { status: 'draining' });
    t.equal((await probe(`${s.admin}/healthz`)).status, 200, '/healthz still 200');
    t.equal(await echo(ws, 'during the drain'), 'during the drain', 'the pipe connection keeps echoing');

    const res = await rawUpgrade(s.port, '/pipe', { 'X-Request-Id': 'cli-drain' });
    t.equal(res.status, 503, `a new upgrade during the drain is answered 503 (got ${JSON.stringify(res.raw.slice(0, 40))})`);
    if (res.status === 503) assertDrain503(t, res, 'cli-drain', Math.ceil(DRAIN / 1000));

    await sleep(300);
    t.equal(s.proc.child.exitCode, null, 'still running while the connection is open');
    t.equal((await probe(`${s.admin}/readyz`)).status, 503, '/readyz still 503 during the drain');
    const closed = closeOf(ws);
    const closedAt = Date.now();
    ws.close(1000, 'done');
    await closed;
    const exit = await s.proc.exited;
    const exitedAt = Date.now();
    t.equal(exit.code, 0, 'exit code 0');
    t.equal(exit.signal, null, 'exited by itself');
    t.ok(exitedAt - closedAt < 2000, `exited ${exitedAt - closedAt} ms after the client closed`);
    t.ok(exitedAt - sent < DRAIN, `long before drain.timeoutMs (${exitedAt - sent} ms after the signal)`);
    t.ok(s.proc.lines().some((l) => l.msg === 'stopped'), "a 'stopped' line");
    t.equal(s.proc.stderr(), '', 'nothing on stderr');
  });

  t.test('SIGINT: the same; a pipe connection left open is destroyed at drain.timeoutMs, then exit 0', async (t) => {
    const DRAIN = 1500;
    const upstream = await startEchoUpstream(t);
    const s = await startSidecar(t, upstream, DRAIN);
    const ws = await openClient(t, s.url);
    t.equal(await echo(ws, 'before'), 'before', 'echoes before the signal');
    const closed = closeOf(ws);

    const { sent, line } = await signal(s.proc, 'SIGINT');
    t.equal(line.signal, 'SIGINT', "'stopping' names the signal");
    t.equal((await probe(`${s.admin}/readyz`)).status, 503, '/readyz 503 at once');
    t.equal(await echo(ws, 'during the drain'), 'during the drain', 'the pipe connection keeps echoing');
    await sleep(Math.max(0, 1000 - (Date.now() - sent)));
    t.equal((await probe(`${s.admin}/readyz`)).status, 503, '/readyz still 503 ~1 s into the drain');
    t.equal(ws.readyState, WebSocket.OPEN, 'the connection is still open ~1 s into the drain');

    const c = await closed;
    t.ok(c.at - sent >= DRAIN - 100, `the connection is destroyed at ~timeoutMs, not before (${c.at - sent} ms)`);
    t.ok(c.at - sent <= DRAIN + 1000, `at ~timeoutMs (${c.at - sent} ms)`);
    const exit = await s.proc.exited;
    const exitedAt = Date.now();
    t.equal(exit.code, 0, 'exit code 0');
    t.equal(exit.signal, null, 'exited by itself');
    t.ok(exitedAt - sent <= DRAIN + 1500, `exited at ~timeoutMs (${exitedAt - sent} ms after the signal)`);
    t.equal(s.proc.stderr(), '', 'nothing on stderr');
  });

  t.test('SIGTERM with no connection: exit 0 at once', async (t) => {
    const upstream = await startEchoUpstream(t);
    const s = await startSidecar(t, upstream, 10000);
    const { sent } = await signal(s.proc, 'SIGTERM');
    const exit = await s.proc.exited;
    t.equal(exit.code, 0, 'exit code 0');
    t.ok(Date.now() - sent < 1500, `exited ${Date.now() - sent} ms after the signal`);
  });
});
