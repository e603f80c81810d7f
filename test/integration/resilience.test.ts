// Socket faults, deadlines, leaks and expiry (SPEC 3 "Decisions never wait on the socket", 5, 8, 9).
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { WebSocket } from 'ws';
import { startGateway, startGatewayWithUpstream, type Setup, type TestGateway } from '../helpers/gateway.js';
import { crashSpy, eventually, openFds, sleep, type Teardown } from '../helpers/net.js';
import { hs256, jwtAuth } from '../helpers/tokens.js';
import { rawUpgrade, requestHead, sendRaw, upgradeHeaders } from '../helpers/upgrade.js';
import { startDelayedUpstream, startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';

/** Records every uncaught exception / unhandled rejection while the test runs; the test fails on any. */
function crashWatch(t: Teardown & { same(a: unknown, b: unknown, msg: string): unknown }) {
  const seen = crashSpy(t);
  return {
    seen,
    check: () => t.same(seen, [], 'no uncaught exception or unhandled rejection'),
  };
}

/** An echo upstream behind a gateway (with the config `extra`) whose one route, `/chat`, needs no credential. */
const openRoute = (t: Teardown, extra: Record<string, unknown> = {}): Promise<Setup> =>
  startGatewayWithUpstream(t, (upstream) => ({ ...extra, routes: [{ path: '/chat', auth: [], upstream }] }));

/** A client on `/chat` that has had one message echoed: the upstream holds exactly its connection. */
async function echoedClient(t: Test, gw: TestGateway, upstream: EchoUpstream): Promise<WebSocket> {
  const ws = new WebSocket(gw.url('/chat'));
  ws.on('error', () => {});
  await once(ws, 'open');
  ws.send('hello');
  await once(ws, 'message');
  t.equal(upstream.open, 1);
  return ws;
}

/** Server-side connections of the gateway's HTTP server right now. */
function serverConnections(gw: TestGateway): Promise<number> {
  return new Promise((resolve, reject) => gw.server.getConnections((err, n) => (err ? reject(err) : resolve(n))));
}

async function eventuallyAsync(check: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Opens a raw upgrade and waits for the TCP connect; the socket ignores errors. */
async function rawClient(port: number, path: string, headers: Record<string, string> = {}): Promise<Socket> {
  const socket = sendRaw(port, requestHead(path, upgradeHeaders(headers)));
  socket.on('error', () => {});
  await once(socket, 'connect');
  return socket;
}

function logMessages(gw: TestGateway): string[] {
  return gw.logs().map((l) => String(l.msg));
}

t.test('(a) client reset while a slow module authenticator is pending', async (t) => {
  const crashes = crashWatch(t);
  const dir = t.testdir({
    'slow.mjs': `
      export default async function slow() {
        globalThis.__slowCalls = (globalThis.__slowCalls ?? 0) + 1;
        await new Promise((r) => setTimeout(r, 300));
        globalThis.__slowDone = (globalThis.__slowDone ?? 0) + 1;
        return { subject: 'late' };
      }
    `,
  });
  const g = globalThis as { __slowCalls?: number; __slowDone?: number };
  g.__slowCalls = 0;
  g.__slowDone = 0;
  const upstream = await startEchoUpstream(t);
  const gw = await startGateway(t, {
    authenticators: { slow: { type: 'module', path: join(dir, 'slow.mjs') } },
    routes: [{ path: '/chat', auth: ['slow'], upstream: upstream.url }],
  });
  const events: string[] = [];
  gw.gateway.on('accepted', () => events.push('accepted'));
  gw.gateway.on('rejected', (_r, status) => events.push(`rejected ${status}`));
  gw.gateway.on('connection', () => events.push('connection'));

  const client = await rawClient(gw.port, '/chat', { 'X-Request-Id': 'reset-a' });
  await eventually(() => g.__slowCalls === 1, 2000, 'the module handler to be called');
  client.resetAndDestroy();
  await eventually(() => g.__slowDone === 1, 2000, 'the module handler to finish');
  await sleep(100);

  const abandoned = gw.logs().find((l) => l.msg === 'upgrade abandoned');
  t.ok(abandoned, "the log says 'upgrade abandoned'");
  t.equal(abandoned?.reqId, 'reset-a');
  t.notOk(logMessages(gw).includes('upgrade accepted'), "the handler's late result is dropped (never accepted)");
  t.same(events, [], 'no accepted, rejected or connection event');
  t.equal(upstream.tcp, 0, 'nothing reached the upstream');
  t.equal(upstream.open, 0);
  t.equal(gw.gateway.connections, 0);
  t.equal(await serverConnections(gw), 0, 'the gateway-side socket is closed');
  crashes.check();
});

t.test('(a) client reset while an onWebSocketUpgrade handler awaits 300ms', async (t) => {
  const crashes = crashWatch(t);
  const { upstream, gw } = await openRoute(t);
  let calls = 0;
  let done = 0;
  gw.gateway.onWebSocketUpgrade(async () => {
    calls++;
    await sleep(300);
    done++;
    return true;
  });
  const events: string[] = [];
  gw.gateway.on('accepted', () => events.push('accepted'));
  gw.gateway.on('rejected', (_r, status) => events.push(`rejected ${status}`));

  const client = await rawClient(gw.port, '/chat', { 'X-Request-Id': 'reset-a2' });
  await eventually(() => calls === 1, 2000, 'the handler to be called');
  client.resetAndDestroy();
  // The decision does not wait for the handler: the abandonment is logged right after the reset.
  await eventually(() => logMessages(gw).includes('upgrade abandoned'), 250, "'upgrade abandoned' before the handler returns");
  t.equal(done, 0, 'logged while the handler was still pending');
  await eventually(() => done === 1, 2000, 'the handler to finish');
  await sleep(100);
  t.same(events, [], "the handler's result is dropped");
  t.equal(upstream.tcp, 0, 'nothing reached the upstream');
  t.equal(gw.gateway.connections, 0);
  t.equal(await serverConnections(gw), 0, 'no socket stays open');
  crashes.check();
});

t.test('(b) client reset after auth while the upstream delays its 101', async (t) => {
  const crashes = crashWatch(t);
  const upstream = await startDelayedUpstream(t, 400);
  const gw = await startGateway(t, {
    authenticators: { jwt: jwtAuth() },
    routes: [{ path: '/chat', auth: ['jwt'], upstream: upstream.url }],
  });
  const client = await rawClient(gw.port, '/chat', { Authorization: `Bearer ${hs256({ sub: 'alice' })}` });
  await eventually(() => upstream.upgrades === 1, 2000, 'the upstream to receive the upgrade');
  t.equal(upstream.open, 1, 'the upstream-side socket is open while the 101 is pending');
  client.resetAndDestroy();
  // The mitigation aborts the upstream request as soon as the client is gone, well before the 101.
  await eventually(() => upstream.open === 0, 300, 'the upstream-side socket to close');
  t.equal(upstream.open, 0, 'upstream-side socket closed before the delayed 101');
  await sleep(500);
  t.equal(upstream.answered, 0, 'the upstream never got to answer on that socket');
  t.equal(upstream.open, 0, 'still nothing open after the 101 would have been sent');
  t.equal(gw.gateway.connections, 0);
  t.equal(await serverConnections(gw), 0);
  crashes.check();
});

t.test('(c) no fd or socket leak after 200 rejected and 200 accepted-and-closed handshakes', async (t) => {
  const crashes = crashWatch(t);
  const upstream = await startEchoUpstream(t);
  const gw = await startGateway(t, {
    authenticators: { jwt: jwtAuth() },
    routes: [{ path: '/chat', auth: ['jwt'], upstream: upstream.url }],
  });
  const token = hs256({ sub: 'alice' });
  const reject = async () => {
    const res = await rawUpgrade(gw.port, '/chat', {});
    if (res.status !== 401 || !res.closed) throw new Error(`expected a closed 401, got ${res.status}`);
  };
  const acceptAndClose = async () => {
    const ws = new WebSocket(gw.url('/chat'), { headers: { Authorization: `Bearer ${token}` } });
    await once(ws, 'open');
    ws.send('x');
    await once(ws, 'message');
    const closed = once(ws, 'close');
    ws.close();
    await closed;
  };
  const batches = async (n: number, fn: () => Promise<void>) => {
    for (let i = 0; i < n; i += 20) await Promise.all(Array.from({ length: Math.min(20, n - i) }, fn));
  };
  // Warm up lazily created state (proxy, module caches) before taking the baseline.
  await batches(5, reject);
  await batches(5, acceptAndClose);
  await eventually(() => gw.gateway.connections === 0 && upstream.open === 0, 3000, 'warm-up connections closed');
  const baseline = openFds();

  await batches(200, reject);
  await batches(200, acceptAndClose);

  await eventually(() => openFds() <= baseline + 3, 3000, `fds back near the baseline of ${baseline}`).catch(() => {});
  const after = openFds();
  t.ok(after <= baseline + 3, `open fds ${after} vs baseline ${baseline}`);
  await eventually(() => gw.gateway.connections === 0 && upstream.open === 0, 3000, 'connections closed').catch(() => {});
  t.equal(gw.gateway.connections, 0, 'gateway.connections === 0');
  t.equal(upstream.open, 0, 'upstream.open === 0');
  await eventuallyAsync(async () => (await serverConnections(gw)) === 0, 2000, 'server connections closed').catch(() => {});
  t.equal(await serverConnections(gw), 0, 'no gateway-side socket left');
  t.equal(upstream.seen.length, 205, 'every accepted handshake reached the upstream, no rejected one did');
  crashes.check();
});

t.test('(d) auth deadline: a handler that never resolves gets 503 after handshakeTimeoutMs', async (t) => {
  const crashes = crashWatch(t);
  const { upstream, gw } = await openRoute(t, { limits: { handshakeTimeoutMs: 200 } });
  gw.gateway.onWebSocketUpgrade(() => new Promise<boolean>(() => {}));
  const rejected: [number, string][] = [];
  gw.gateway.on('rejected', (_req, status, reason) => rejected.push([status, reason]));
  const started = Date.now();
  const res = await rawUpgrade(gw.port, '/chat', { 'X-Request-Id': 'deadline-1' });
  const took = Date.now() - started;
  const body = '{"error":"unavailable","error_description":"authentication timed out"}';
  t.equal(
    res.raw,
    `HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nCache-Control: no-store\r\nX-Request-Id: deadline-1\r\n\r\n${body}`,
  );
  t.ok(res.closed);
  t.ok(took >= 190 && took < 1000, `answered at the deadline (${took} ms)`);
  t.same(rejected, [[503, 'authentication timed out']]);
  t.equal(upstream.tcp, 0);
  t.equal(gw.gateway.connections, 0);
  crashes.check();
});

t.test('(e) gateway.close() during a pending auth answers 503 "gateway is shutting down"', async (t) => {
  const crashes = crashWatch(t);
  const { upstream, gw } = await openRoute(t, { drain: { timeoutMs: 5000 } });
  let calls = 0;
  gw.gateway.onWebSocketUpgrade(() => {
    calls++;
    return new Promise<boolean>(() => {});
  });
  const pending = rawUpgrade(gw.port, '/chat', { 'X-Request-Id': 'close-1' });
  await eventually(() => calls === 1, 2000, 'the handler to be called');
  const started = Date.now();
  const closing = gw.gateway.close();
  const res = await pending;
  t.ok(Date.now() - started < 500, 'answered at once, not after the drain timeout');
  t.equal(res.status, 503);
  t.equal(res.body, '{"error":"unavailable","error_description":"gateway is shutting down"}');
  t.equal(res.headers['x-request-id'], 'close-1');
  t.equal(res.headers['cache-control'], 'no-store');
  t.ok(res.closed);
  // SPEC 9: "Retry-After is ... the remaining drain time in seconds while draining" (≈ 5 here).
  const retryAfter = Number(res.headers['retry-after']);
  t.ok(retryAfter >= 4 && retryAfter <= 5, `Retry-After is the remaining drain time (${res.headers['retry-after']})`);
  const body = '{"error":"unavailable","error_description":"gateway is shutting down"}';
  t.equal(
    res.raw,
    `HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nCache-Control: no-store\r\nX-Request-Id: close-1\r\nRetry-After: ${retryAfter}\r\n\r\n${body}`,
  );
  await closing;
  t.ok(Date.now() - started < 1000, 'close() resolves promptly with no live connection');
  t.equal(upstream.tcp, 0);
  crashes.check();
});

t.test('(f) upstream dies mid-stream: the client is closed, nothing left open', async (t) => {
  const crashes = crashWatch(t);
  const { upstream, gw } = await openRoute(t);
  for (const how of ['terminate', 'reset'] as const) {
    const ws = await echoedClient(t, gw, upstream);
    const closed = once(ws, 'close');
    for (const peer of upstream.wss.clients) {
      if (how === 'terminate') peer.terminate();
      else (peer as unknown as { _socket: Socket })._socket.resetAndDestroy();
    }
    const [code] = (await closed) as [number];
    t.equal(code, 1006, `${how}: the client sees an abnormal close`);
    await eventually(() => gw.gateway.connections === 0 && upstream.open === 0, 2000, 'both sides closed');
    t.equal(gw.gateway.connections, 0, `${how}: gateway.connections === 0`);
    await eventuallyAsync(async () => (await serverConnections(gw)) === 0, 2000, 'gateway-side socket closed');
    t.equal(await serverConnections(gw), 0, `${how}: no gateway-side socket left`);
  }
  crashes.check();
});

t.test('(f) client destroys mid-stream: the upstream side is closed', async (t) => {
  const crashes = crashWatch(t);
  const { upstream, gw } = await openRoute(t);
  for (const how of ['destroy', 'reset'] as const) {
    const ws = await echoedClient(t, gw, upstream);
    const upstreamClosed = once([...upstream.wss.clients][0]!, 'close');
    const socket = (ws as unknown as { _socket: Socket })._socket;
    if (how === 'destroy') socket.destroy();
    else socket.resetAndDestroy();
    await upstreamClosed;
    t.pass(`${how}: the upstream connection closed`);
    await eventually(() => gw.gateway.connections === 0 && upstream.open === 0, 2000, 'both sides closed');
    t.equal(upstream.open, 0, `${how}: upstream.open === 0`);
    t.equal(gw.gateway.connections, 0, `${how}: gateway.connections === 0`);
  }
  crashes.check();
});

t.test('(g) token expiry on a pipe connection', async (t) => {
  const crashes = crashWatch(t);
  const upstream = await startEchoUpstream(t);
  const gw = await startGateway(t, {
    authenticators: { jwt: jwtAuth() },
    routes: [
      { path: '/strict', auth: ['jwt'], upstream: upstream.url },
      { path: '/lenient', auth: ['jwt'], upstream: upstream.url, enforceExpiry: false },
    ],
  });
  const exp = Math.ceil(Date.now() / 1000) + 1; // 1–2 s ahead
  const token = hs256({ sub: 'alice', exp });
  const open = async (path: string) => {
    const ws = new WebSocket(gw.url(path), { headers: { Authorization: `Bearer ${token}` } });
    ws.on('error', () => {});
    await once(ws, 'open');
    return ws;
  };
  const strict = await open('/strict');
  const lenient = await open('/lenient');
  t.equal(upstream.open, 2);
  const [code] = (await once(strict, 'close')) as [number];
  const closedAt = Date.now();
  t.ok(closedAt >= exp * 1000 - 50 && closedAt <= exp * 1000 + 1000, `strict: closed around exp (${closedAt - exp * 1000} ms from exp)`);
  t.equal(code, 1006, 'pipe mode: sockets destroyed, no close frame');
  await eventually(() => upstream.open === 1, 2000, 'the upstream side of the strict connection to close');
  t.equal(upstream.open, 1, 'the upstream side of the expired connection is closed too');

  await sleep(Math.max(0, exp * 1000 + 300 - Date.now()));
  t.equal(lenient.readyState, WebSocket.OPEN, 'enforceExpiry: false keeps the connection past exp');
  lenient.send('after exp');
  const [echo] = (await once(lenient, 'message')) as [Buffer];
  t.equal(echo.toString(), 'after exp', 'and it still carries messages');
  const closed = once(lenient, 'close');
  lenient.close();
  await closed;
  await eventually(() => gw.gateway.connections === 0 && upstream.open === 0, 2000, 'all closed');
  t.match(gw.logText(), /connection closed: identity expired/);
  crashes.check();
});

/** A client-to-server (masked) text frame, payload < 126 bytes. */
function maskedTextFrame(text: string): Buffer {
  const payload = Buffer.from(text);
  const mask = randomBytes(4);
  const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!));
  return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, masked]);
}

/** Reads off a raw socket until the 101 head and one unmasked server frame of `payloadLength` have arrived. */
function readUpgradeAndFrame(socket: Socket, payloadLength: number, timeoutMs = 3000): Promise<{ head: string; frame: Buffer }> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => reject(new Error(`timed out; got ${JSON.stringify(buf.toString('latin1'))}`)), timeoutMs);
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf('\r\n\r\n');
      if (end !== -1 && buf.length >= end + 4 + 2 + payloadLength) {
        clearTimeout(timer);
        resolve({ head: buf.subarray(0, end).toString('latin1'), frame: buf.subarray(end + 4) });
      }
    });
  });
}

t.test('(h) a first frame sent in the same TCP write as the upgrade request is echoed', async (t) => {
  const crashes = crashWatch(t);
  const upstream = await startEchoUpstream(t);
  const gw = await startGateway(t, {
    authenticators: { jwt: jwtAuth() },
    routes: [{ path: '/chat', auth: ['jwt'], upstream: upstream.url }],
  });
  const text = 'first frame, in the head packet';
  const request = Buffer.concat([
    Buffer.from(requestHead('/chat', upgradeHeaders({ Authorization: `Bearer ${hs256({ sub: 'alice' })}` })), 'latin1'),
    maskedTextFrame(text),
  ]);
  const socket = connect(gw.port, '127.0.0.1');
  socket.on('error', () => {});
  t.teardown(() => void socket.destroy());
  socket.write(request);
  const { head, frame } = await readUpgradeAndFrame(socket, Buffer.byteLength(text));
  t.match(head, /^HTTP\/1\.1 101 /);
  t.same(frame, Buffer.concat([Buffer.from([0x81, Buffer.byteLength(text)]), Buffer.from(text)]), 'the echo of the head-packet frame');
  socket.destroy();
  await eventually(() => upstream.open === 0 && gw.gateway.connections === 0, 2000, 'closed');
  crashes.check();
});

t.test('(h) a frame sent while authentication is still pending is not lost', async (t) => {
  const crashes = crashWatch(t);
  const { upstream, gw } = await openRoute(t);
  let calls = 0;
  gw.gateway.onWebSocketUpgrade(async () => {
    calls++;
    await sleep(150);
    return true;
  });
  const text = 'sent during auth';
  const socket = connect(gw.port, '127.0.0.1');
  socket.on('error', () => {});
  t.teardown(() => void socket.destroy());
  socket.write(requestHead('/chat', upgradeHeaders()));
  const reading = readUpgradeAndFrame(socket, Buffer.byteLength(text));
  await eventually(() => calls === 1, 2000, 'the handler to be called');
  socket.write(maskedTextFrame(text));
  const { head, frame } = await reading;
  t.match(head, /^HTTP\/1\.1 101 /);
  t.same(frame, Buffer.concat([Buffer.from([0x81, Buffer.byteLength(text)]), Buffer.from(text)]));
  socket.destroy();
  await eventually(() => upstream.open === 0 && gw.gateway.connections === 0, 2000, 'closed');
  crashes.check();
});
