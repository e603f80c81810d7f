// The host-framework examples as users would run them: each imports the BUILT package (dist/, built by
// `npm test` before tap) and is started here on port 0, then driven over real sockets with real clients:
// Koa and Fastify with a JWT, Express sharing express-session with the gateway through a real redis-server,
// and a Socket.IO app behind the real CLI (`node dist/cli.js --config examples/socketio.config.json`).
// Each also shows the negative space: a refused handshake gets the gateway's status and no handler of the
// app runs; and stopping leaves nothing listening.
import { once } from 'node:events';
import { connect as tcpConnect } from 'node:net';
import { join } from 'node:path';
import { io } from 'socket.io-client';
import t, { type Test } from 'tap';
import { WebSocket } from 'ws';
import { start as startExpressSession } from '../../examples/express-session-redis.mjs';
import { start as startFastifyApp } from '../../examples/fastify-app.mjs';
import { start as startKoaApp } from '../../examples/koa-app.mjs';
import { start as startSocketIoApp } from '../../examples/socketio-app.mjs';
import { connect as connectSocketIo, whoami } from '../../examples/socketio-client.mjs';
import type { Started } from '../../examples/types.mjs';
import { cleanEnv, ROOT, spawnCli } from '../helpers/cli.js';
import { closeClient, echo } from '../helpers/client.js';
import { startRedis } from '../helpers/redis.js';
import { hs256, SECRET } from '../helpers/tokens.js';
import { rawUpgrade, type RawResponse } from '../helpers/upgrade.js';

/** The exact answer to a handshake without a credential (SPEC 4, 9), for a request id the client chose. */
const UNAUTHORIZED_BYTES = (requestId: string) =>
  'HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 67\r\n' +
  `Cache-Control: no-store\r\nX-Request-Id: ${requestId}\r\nWWW-Authenticate: Bearer realm="portcullis"\r\n\r\n` +
  '{"error":"unauthorized","error_description":"credentials required"}';

const OTHER_SECRET = 'another-secret-0123456789abcdef-0123456789';

function assertUnauthorized(t: Test, res: RawResponse, requestId: string) {
  t.equal(res.raw, UNAUTHORIZED_BYTES(requestId), 'the complete 401, byte for byte, and nothing after it');
  t.ok(res.closed, 'then the server closed the socket');
}

/** `app.close()` once, however many times it is asked for (the test and its teardown). */
function stopper(app: Started): () => Promise<void> {
  let closing: Promise<void> | undefined;
  return () => (closing ??= app.close());
}

/** Resolves true when a TCP connection to `port` is refused. */
function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tcpConnect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
  });
}

/**
 * Opens a WebSocket and resolves it with its first message (the app's greeting), parsed; the listener is
 * in place before the handshake, so a greeting sent with the 101 is not missed. Terminated by teardown.
 */
async function greeted(t: Test, url: string, options: { headers?: Record<string, string>; protocols?: string[]; origin?: string } = {}) {
  const ws = new WebSocket(url, options.protocols ?? [], { headers: options.headers ?? {}, ...(options.origin && { origin: options.origin }) });
  t.teardown(() => ws.terminate());
  const greeting = new Promise<unknown>((resolve, reject) => {
    ws.once('message', (data: Buffer) => resolve(JSON.parse(data.toString())));
    ws.once('unexpected-response', (_req, res) => reject(new Error(`unexpected response ${res.statusCode}`)));
    ws.once('error', reject);
    ws.once('close', (code) => reject(new Error(`closed with ${code} before a greeting`)));
  });
  return { ws, greeting: await greeting };
}

t.test('koa-app: Koa 3 routes plus an attached gateway in local mode', async (t) => {
  const app = await startKoaApp(0, { secret: SECRET, logLevel: 'silent' });
  const stop = stopper(app);
  t.teardown(stop);
  const url = `ws://127.0.0.1:${app.port}/ws`;

  t.test('a bearer token: the app greets the subject, then echoes', async (t) => {
    const { ws, greeting } = await greeted(t, url, { headers: { Authorization: `Bearer ${hs256({ sub: 'alice' })}` } });
    t.same(greeting, { hello: 'alice' });
    t.equal(await echo(ws, 'ping'), 'ping');
    await closeClient(ws);
  });

  t.test('a subprotocol token, as a browser sends it: the bare marker is selected', async (t) => {
    const { ws, greeting } = await greeted(t, url, { protocols: ['bearer', `bearer.${hs256({ sub: 'carol' })}`] });
    t.same(greeting, { hello: 'carol' });
    t.equal(ws.protocol, 'bearer');
    await closeClient(ws);
  });

  t.test('no token: the 401 on the raw socket, and the app never sees a connection', async (t) => {
    const before = app.handled;
    assertUnauthorized(t, await rawUpgrade(app.port, '/ws', { 'X-Request-Id': 'koa-401' }), 'koa-401');
    const res = await rawUpgrade(app.port, '/ws', { Authorization: `Bearer ${hs256({ sub: 'mallory' }, OTHER_SECRET)}` });
    t.equal(res.status, 401, 'a token signed with another secret: 401');
    t.equal(JSON.parse(res.body).error, 'invalid_token');
    t.equal(app.handled, before, 'no connection handler ran');
  });

  t.test('Koa serves its HTTP routes on the same server', async (t) => {
    const res = await fetch(`http://127.0.0.1:${app.port}/`);
    t.equal(res.status, 200);
    t.same(await res.json(), { service: 'koa-app', websocket: '/ws' });
    t.equal((await fetch(`http://127.0.0.1:${app.port}/nothing-here`)).status, 404, "and its own 404 for HTTP");
  });

  t.test('an upgrade on a path with no route, and no other listener, is 404', async (t) => {
    const res = await rawUpgrade(app.port, '/elsewhere');
    t.equal(res.status, 404);
    t.ok(res.closed);
  });

  t.test('close() ends live connections (1001) and stops listening', async (t) => {
    const { ws } = await greeted(t, url, { headers: { Authorization: `Bearer ${hs256({ sub: 'alice' })}` } });
    const closed = once(ws, 'close');
    await stop();
    const [code] = (await closed) as [number];
    t.equal(code, 1001, 'the client was told the server is going away');
    t.ok(await refused(app.port), 'nothing listens any more');
  });
});

t.test('fastify-app: @fastify/websocket routes behind the gateway in an onRequest hook', async (t) => {
  const app = await startFastifyApp(0, { secret: SECRET, logLevel: 'silent' });
  const stop = stopper(app);
  t.teardown(stop);
  const url = `ws://127.0.0.1:${app.port}/ws`;

  t.test("a valid token: Fastify's handler runs and reads identityOf(request.raw)", async (t) => {
    const before = app.handled;
    // A forged identity header changes nothing: the identity travels with the request object.
    const { ws, greeting } = await greeted(t, url, { headers: { Authorization: `Bearer ${hs256({ sub: 'alice' })}`, 'X-Auth-Subject': 'mallory' } });
    t.same(greeting, { hello: 'alice' });
    t.equal(await echo(ws, 'ping'), 'ping');
    t.equal(app.handled, before + 1);
    await closeClient(ws);
  });

  t.test('a subprotocol token, as a browser sends it: the marker is selected, never the token entry', async (t) => {
    const { ws, greeting } = await greeted(t, url, { protocols: ['bearer', `bearer.${hs256({ sub: 'dave' })}`] });
    t.same(greeting, { hello: 'dave' });
    t.equal(ws.protocol, 'bearer');
    await closeClient(ws);
  });

  t.test('a query token is not a credential here (Fastify would log it): 401', async (t) => {
    const res = await rawUpgrade(app.port, `/ws?access_token=${hs256({ sub: 'bob' })}`);
    t.equal(res.status, 401);
    t.equal(JSON.parse(res.body).error, 'unauthorized');
  });

  t.test('no token: the gateway\'s 401, no Fastify 404 after it, and no Fastify handler runs', async (t) => {
    const before = app.handled;
    // Several at once, so a Fastify answer racing the gateway's would show up in one of them.
    const ids = Array.from({ length: 10 }, (_, i) => `fastify-401-${i}`);
    const responses = await Promise.all(ids.map((id) => rawUpgrade(app.port, '/ws', { 'X-Request-Id': id })));
    responses.forEach((res, i) => assertUnauthorized(t, res, ids[i]!));
    const now = Math.floor(Date.now() / 1000);
    const expired = await rawUpgrade(app.port, '/ws', { Authorization: `Bearer ${hs256({ sub: 'alice', iat: now - 7200, exp: now - 3600 })}` });
    t.equal(expired.status, 401, 'an expired token: 401');
    t.same(JSON.parse(expired.body), { error: 'invalid_token', error_description: 'token expired' });
    t.equal(app.handled, before, 'no websocket handler ran');
  });

  t.test('an upgrade on a path the gateway has no route for: the gateway\'s 404, not Fastify\'s', async (t) => {
    const res = await rawUpgrade(app.port, '/not-declared');
    t.equal(res.status, 404);
    t.same(JSON.parse(res.body), { error: 'not_found', error_description: 'no route for this path' });
    t.ok(res.closed);
  });

  t.test('a public websocket route (auth: []) needs no credential', async (t) => {
    const { ws, greeting } = await greeted(t, `ws://127.0.0.1:${app.port}/status`);
    t.match(greeting, { status: 'ok' });
    await once(ws, 'close');
  });

  t.test('plain HTTP passes the hook untouched', async (t) => {
    const res = await fetch(`http://127.0.0.1:${app.port}/`);
    t.equal(res.status, 200);
    t.same(await res.json(), { service: 'fastify-app', websocket: '/ws' });
    // A plain GET on the websocket route gets @fastify/websocket's own 404, not a gateway rejection.
    const plain = await fetch(`http://127.0.0.1:${app.port}/ws`);
    t.equal(plain.status, 404);
    t.notOk(plain.headers.get('www-authenticate'));
  });

  t.test('close() ends live connections and stops listening', async (t) => {
    const { ws } = await greeted(t, url, { headers: { Authorization: `Bearer ${hs256({ sub: 'alice' })}` } });
    const closed = once(ws, 'close');
    await stop();
    await closed;
    t.ok(await refused(app.port), 'nothing listens any more');
  });
});

t.test('express-session-redis: log in over HTTP, then the same session opens the WebSocket', async (t) => {
  const redis = await startRedis(t);
  const sessionSecret = 'session-secret-0123456789abcdef-0123456789';
  const app = await startExpressSession(0, { redisUrl: redis.url, sessionSecret, revalidateSec: 1, logLevel: 'silent' });
  const stop = stopper(app);
  t.teardown(stop);
  const base = `http://127.0.0.1:${app.port}`;
  const url = `ws://127.0.0.1:${app.port}/ws`;

  /** Logs `user` in like the page's form does; resolves the `connect.sid=...` pair to send back. */
  async function login(t: Test, user: string): Promise<string> {
    const res = await fetch(`${base}/login`, { method: 'POST', body: new URLSearchParams({ user }), redirect: 'manual' });
    t.equal(res.status, 303, 'login redirects to the page');
    const cookie = res.headers.getSetCookie().find((c) => c.startsWith('connect.sid='));
    if (!cookie) throw new Error(`no session cookie: ${res.headers.getSetCookie().join(' | ')}`);
    return cookie.split(';')[0]!;
  }

  t.test('the page is served, and without a session nobody is logged in', async (t) => {
    const page = await fetch(`${base}/`);
    t.equal(page.status, 200);
    t.match(await page.text(), /new WebSocket/);
    t.same(await (await fetch(`${base}/me`)).json(), { user: null });
  });

  t.test('a browser-like client: login, then the WebSocket with the cookie and its Origin', async (t) => {
    const cookie = await login(t, 'alice');
    t.same(await (await fetch(`${base}/me`, { headers: { Cookie: cookie } })).json(), { user: 'alice' }, 'Express reads the session');
    const id = decodeURIComponent(cookie.slice('connect.sid='.length)).slice('s:'.length).split('.')[0]!;
    t.ok(await redis.client.get(`sess:${id}`), 'connect-redis stored it under sess:<id>');
    const before = app.handled;
    const { ws, greeting } = await greeted(t, url, { headers: { Cookie: cookie }, origin: base });
    t.same(greeting, { hello: 'alice' }, 'the gateway read the same session from Redis');
    t.equal(await echo(ws, 'ping'), 'ping');
    t.equal(app.handled, before + 1);
    const localhost = await greeted(t, url, { headers: { Cookie: cookie }, origin: `http://localhost:${app.port}` });
    t.same(localhost.greeting, { hello: 'alice' }, 'the other listed origin');
    await Promise.all([closeClient(ws), closeClient(localhost.ws)]);
  });

  t.test('refusals: another Origin 403, no cookie 401, a forged cookie 401; no handler runs', async (t) => {
    const cookie = await login(t, 'bob');
    const before = app.handled;
    const evil = await rawUpgrade(app.port, '/ws', { Cookie: cookie, Origin: 'https://evil.example' });
    t.equal(evil.status, 403, 'a page elsewhere cannot use the cookie (Cross-Site WebSocket Hijacking)');
    t.equal(JSON.parse(evil.body).error, 'forbidden');
    t.ok(evil.closed);
    const anonymous = await rawUpgrade(app.port, '/ws', { Origin: base, 'X-Request-Id': 'session-401' });
    t.equal(anonymous.status, 401, 'no cookie');
    t.equal(anonymous.headers['x-request-id'], 'session-401');
    t.ok(anonymous.closed);
    const forged = `connect.sid=${encodeURIComponent(`s:${'x'.repeat(32)}.${'y'.repeat(43)}`)}`;
    t.equal((await rawUpgrade(app.port, '/ws', { Cookie: forged, Origin: base })).status, 401, 'a cookie the secret did not sign');
    t.equal(app.handled, before, 'no connection handler ran');
  });

  t.test('logout: the live WebSocket closes 4401 and the cookie no longer opens one', async (t) => {
    const cookie = await login(t, 'carol');
    const { ws, greeting } = await greeted(t, url, { headers: { Cookie: cookie }, origin: base });
    t.same(greeting, { hello: 'carol' });
    const closed = once(ws, 'close');
    t.equal((await fetch(`${base}/logout`, { method: 'POST', headers: { Cookie: cookie }, redirect: 'manual' })).status, 303);
    const [code, reason] = (await closed) as [number, Buffer];
    t.equal(code, 4401, 'closed at the next revalidation');
    t.equal(reason.toString(), 'session ended');
    t.equal((await rawUpgrade(app.port, '/ws', { Cookie: cookie, Origin: base })).status, 401);
  });

  t.test('close() leaves nothing: no listener, and no Redis client of the app or the gateway', async (t) => {
    await stop();
    t.ok(await refused(app.port), 'nothing listens any more');
    // The test's own client is the only one left (CLIENT LIST: one line per connected client); the server
    // notices a closed connection a moment after the client is done with it.
    const clients = async () => String(await redis.client.sendCommand(['CLIENT', 'LIST'])).trim().split('\n').length;
    let count = await clients();
    for (const deadline = Date.now() + 5000; count !== 1 && Date.now() < deadline; count = await clients()) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    t.equal(count, 1, 'only the test\'s own Redis connection is left');
  });
});

t.test('socketio-app: a Socket.IO app behind the CLI sidecar, with examples/socketio.config.json', async (t) => {
  const a = await startSocketIoApp(0, { name: 'instance-1' });
  const b = await startSocketIoApp(0, { name: 'instance-2' });
  const stopA = stopper(a);
  const stopB = stopper(b);
  t.teardown(stopA);
  t.teardown(stopB);
  const proc = spawnCli(t, ['--config', join(ROOT, 'examples', 'socketio.config.json')], {
    env: cleanEnv({
      JWT_SECRET: SECRET,
      PORT: '0',
      SOCKETIO_URL_1: `ws://127.0.0.1:${a.port}`,
      SOCKETIO_URL_2: `ws://127.0.0.1:${b.port}`,
    }),
  });
  const { port } = (await proc.waitFor('listening', { timeoutMs: 20000 })) as { port: number };
  const gateway = `http://127.0.0.1:${port}`;
  const token = hs256({ sub: 'alice', scope: 'chat' });

  t.test('the example client: polling, then the upgrade, on the same instance, as alice', async (t) => {
    const socket = connectSocketIo(gateway, token, { reconnection: false, forceNew: true });
    t.teardown(() => void socket.close());
    const opened = new Promise<string>((resolve) => socket.io.once('open', () => resolve(socket.io.engine.transport.name)));
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('connect_error', reject);
    });
    t.equal(await opened, 'polling', 'it starts on long-polling, through the gateway');
    // The upgrade may already be done by the time this is answered: the transport is not asserted here.
    const first = await whoami(socket);
    t.match(first, { subject: 'alice', scope: 'chat' }, 'the app read the identity the gateway forwarded');
    if (socket.io.engine.transport.name !== 'websocket') await new Promise((resolve) => socket.io.engine.once('upgrade', resolve));
    const second = await whoami(socket);
    t.match(second, { subject: 'alice', transport: 'websocket' }, 'then over a WebSocket through the gateway');
    t.equal(second.server, first.server, 'sticky: the same instance');
    socket.close();
    t.notOk(proc.stdout().includes(token), 'the token is never logged');
  });

  t.test('no token, or a bad one: connect_error with the 401, and no instance sees a connection', async (t) => {
    const before = a.handled + b.handled;
    const attempts = [
      { what: 'no token', socket: io(gateway, { reconnection: false, forceNew: true }) },
      { what: 'a token signed with another secret', socket: connectSocketIo(gateway, hs256({ sub: 'mallory' }, OTHER_SECRET), { reconnection: false, forceNew: true }) },
    ];
    for (const { what, socket } of attempts) {
      t.teardown(() => void socket.close());
      const err = await new Promise<Error & { context?: { status?: number } }>((resolve) => socket.once('connect_error', resolve));
      t.equal(err.context?.status, 401, what);
      socket.close();
    }
    t.equal(a.handled + b.handled, before, 'no Socket.IO connection was made');
  });

  t.test('the app refuses a handshake that did not come through the gateway', async (t) => {
    const direct = await fetch(`http://127.0.0.1:${a.port}/socket.io/?EIO=4&transport=polling`);
    t.equal(direct.status, 403);
  });

  t.test('SIGTERM: the sidecar drains and exits 0', async (t) => {
    proc.child.kill('SIGTERM');
    const exit = await proc.exited;
    t.equal(exit.code, 0, `exit code (stderr: ${proc.stderr()})`);
    t.ok(proc.lines().some((l) => l.msg === 'stopped'));
    await Promise.all([stopA(), stopB()]);
    t.ok(await refused(a.port));
    t.ok(await refused(b.port));
  });
});
