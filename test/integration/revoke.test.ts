// SPEC 6.1 (admin endpoints `GET /connections`, `POST /revoke`) and 9 "Admin (6.1)": the admin server of
// src/admin.ts on port 0 in front of a real gateway, real ws clients and upstreams, no mocks.
import { once } from 'node:events';
import { request, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import jsonwebtoken from 'jsonwebtoken';
import { createSecretKey } from 'node:crypto';
import t, { type Test } from 'tap';
import { WebSocket, type RawData } from 'ws';
import { createAdminServer } from '../../src/admin.js';
import { signSessionId } from '../../src/auth/session.js';
import type { ConnectionView } from '../../src/connections.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { eventually, sleep, type Teardown } from '../helpers/net.js';
import { hs256, jwtAuth, SECRET } from '../helpers/tokens.js';
import { rawUpgrade } from '../helpers/upgrade.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';

const ADMIN_TOKEN = 'admin-token-revoke-tests-7d1e9a42c0';
const SESSION_SECRET = 'revoke-session-secret-0123456789abcdefXY';
const ORIGIN = 'https://app.example.com';
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

// ---------------------------------------------------------------------------------------------------------
// Helpers

interface Env {
  gw: TestGateway;
  /** The upstream of the relay and session routes. */
  relayUp: EchoUpstream;
  /** The upstream of the pipe route (its own, so its open sockets are alice's pipe connection alone). */
  pipeUp: EchoUpstream;
  /** Base URL of the admin server. */
  adminPort: number;
  /** Every token handed to a client in the test, to check the log never holds one. */
  tokens: string[];
}

/**
 * A gateway with relay (with `refresh`), pipe, local and session routes, `admin` in its config, and an
 * admin server made with createAdminServer on port 0; local connections echo with an "echo:" prefix.
 */
async function setup(t: Test): Promise<Env> {
  const relayUp = await startEchoUpstream(t);
  const pipeUp = await startEchoUpstream(t);
  const gw = await startGateway(t, {
    admin: { port: 0, token: ADMIN_TOKEN },
    authenticators: {
      jwt: jwtAuth(),
      web: { type: 'session', secrets: [SESSION_SECRET], subjectPath: 'passport.user', store: { type: 'memory' } },
    },
    routes: [
      { path: '/relay', auth: ['jwt'], upstream: relayUp.url, mode: 'relay', refresh: { graceSec: 30 } },
      { path: '/pipe', auth: ['jwt'], upstream: pipeUp.url, mode: 'pipe' },
      { path: '/local', auth: ['jwt'], mode: 'local' },
      { path: '/session', auth: ['web'], upstream: relayUp.url, mode: 'relay', origins: [ORIGIN] },
    ],
  });
  gw.gateway.on('connection', (ws) => {
    ws.on('message', (data) => ws.send(`echo:${String(data)}`));
    ws.on('error', () => {});
  });
  const admin: Server = createAdminServer(gw.gateway, () => true);
  admin.listen(0, '127.0.0.1');
  await once(admin, 'listening');
  t.teardown(async () => {
    admin.closeAllConnections();
    await new Promise((r) => admin.close(r));
  });
  return { gw, relayUp, pipeUp, adminPort: (admin.address() as AddressInfo).port, tokens: [] };
}

interface AdminResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
  /** Set when the request failed without a response (reset, hang up). */
  error?: string;
}

/** One request to the admin server; `token: null` sends no Authorization header. */
function admin(env: Env, method: string, path: string, options: { token?: string | null; authorization?: string; body?: string | Buffer } = {}): Promise<AdminResponse> {
  const headers: Record<string, string> = {};
  const token = options.token === undefined ? ADMIN_TOKEN : options.token;
  if (options.authorization !== undefined) headers.Authorization = options.authorization;
  else if (token !== null) headers.Authorization = `Bearer ${token}`;
  if (options.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    headers['Content-Length'] = String(Buffer.byteLength(options.body));
  }
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port: env.adminPort, method, path, headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on('error', (err) => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, error: err.message }));
    });
    req.on('error', (err) => resolve({ status: 0, headers: {}, body: '', error: `${(err as NodeJS.ErrnoException).code ?? ''} ${err.message}` }));
    if (options.body !== undefined) req.write(options.body);
    req.end();
  });
}

/** `GET /connections` with the admin token, parsed. */
async function connections(env: Env): Promise<ConnectionView[]> {
  const res = await admin(env, 'GET', '/connections');
  if (res.status !== 200) throw new Error(`GET /connections answered ${res.status}: ${res.body}`);
  return JSON.parse(res.body) as ConnectionView[];
}

/** Polls `GET /connections` until `check` holds; fails after `ms`. */
async function connectionsUntil(env: Env, check: (list: ConnectionView[]) => boolean, what: string, ms = 3000): Promise<ConnectionView[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    const list = await connections(env);
    if (check(list)) return list;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last list: ${JSON.stringify(list)}`);
    await sleep(25);
  }
}

/** The `closed` count of a `POST /revoke` answer (undefined when the answer is not such JSON). */
function closedOf(res: AdminResponse): unknown {
  try {
    return (JSON.parse(res.body) as { closed?: unknown }).closed;
  } catch {
    return undefined;
  }
}

/** `POST /revoke` with a JSON body. */
const revoke = (env: Env, target: Record<string, unknown>) => admin(env, 'POST', '/revoke', { body: JSON.stringify(target) });

interface Closed {
  code: number;
  reason: string;
}

/** A client that must complete its handshake; records its close; terminated by `t.teardown`. */
interface Client {
  ws: WebSocket;
  closed: Promise<Closed>;
  /** The close, once it happened. */
  closeEvent: Closed | undefined;
}

async function connect(t: Teardown, url: string, headers: Record<string, string> = {}): Promise<Client> {
  const ws = new WebSocket(url, [], { headers });
  t.teardown(() => ws.terminate());
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`unexpected response ${res.statusCode}`)));
  });
  ws.on('error', () => {});
  const client: Client = { ws, closeEvent: undefined, closed: undefined as unknown as Promise<Closed> };
  client.closed = new Promise((resolve) =>
    ws.once('close', (code, reason) => {
      client.closeEvent = { code, reason: reason.toString() };
      resolve(client.closeEvent);
    }),
  );
  return client;
}

/** Sends `text` and resolves with the next message (rejects after `ms`). */
function roundTrip(ws: WebSocket, text: string, ms = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no reply to ${text} within ${ms} ms`)), ms);
    ws.once('message', (data: RawData) => {
      clearTimeout(timer);
      resolve(String(data));
    });
    ws.send(text);
  });
}

/** Settles like `p`, or rejects after `ms`. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });

/** A token for `sub` (with `extra` claims), recorded in `env.tokens`. */
function token(env: Env, sub: string, extra: Record<string, unknown> = {}): string {
  const value = hs256({ sub, ...extra });
  env.tokens.push(value);
  return value;
}

/** An HS256 token without `exp`. */
function tokenWithoutExp(env: Env, sub: string): string {
  const value = jsonwebtoken.sign({ sub, iat: Math.floor(Date.now() / 1000) }, createSecretKey(Buffer.from(SECRET)), { algorithm: 'HS256' });
  env.tokens.push(value);
  return value;
}

const REVOKED_BODY = '{"error":"invalid_token","error_description":"token revoked"}';

/** The exact bytes of the 401 for a revoked credential (SPEC 4, 9), with the request id the client sent. */
const revokedBytes = (requestId: string) =>
  'HTTP/1.1 401 Unauthorized\r\n' +
  'Connection: close\r\n' +
  'Content-Type: application/json\r\n' +
  `Content-Length: ${Buffer.byteLength(REVOKED_BODY)}\r\n` +
  'Cache-Control: no-store\r\n' +
  `X-Request-Id: ${requestId}\r\n` +
  'WWW-Authenticate: Bearer realm="portcullis", error="invalid_token", error_description="token revoked"\r\n' +
  '\r\n' +
  REVOKED_BODY;

/** A refused handshake: 401 `token revoked`, on the wire and in the log; nothing new reached an upstream. */
async function assertRevoked(t: Test, env: Env, path: string, headers: Record<string, string>, requestId: string): Promise<void> {
  const seen = env.relayUp.seen.length + env.pipeUp.seen.length;
  const res = await rawUpgrade(env.gw.port, path, { ...headers, 'X-Request-Id': requestId });
  t.equal(res.status, 401, `${requestId}: 401`);
  t.equal(res.raw, revokedBytes(requestId), `${requestId}: the exact 401 bytes`);
  t.equal(res.headers['www-authenticate'], 'Bearer realm="portcullis", error="invalid_token", error_description="token revoked"');
  t.same(JSON.parse(res.body || 'null'), { error: 'invalid_token', error_description: 'token revoked' });
  t.ok(res.closed, `${requestId}: socket closed by the gateway`);
  t.equal(env.relayUp.seen.length + env.pipeUp.seen.length, seen, `${requestId}: nothing reached an upstream`);
  t.match(env.gw.logs().find((l) => l.reqId === requestId), { status: 401, msg: 'upgrade rejected', code: 'GW_ERR_TOKEN_REVOKED' }, `${requestId}: the decision was logged`);
}

/** A handshake that must be accepted (101). */
async function assertAccepted(t: Test, env: Env, path: string, headers: Record<string, string>, what: string): Promise<void> {
  const res = await rawUpgrade(env.gw.port, path, headers);
  t.equal(res.status, 101, `${what}: accepted (${res.status} ${res.body})`);
}

/** Neither the admin token nor any token the test used appears in the gateway log. */
function assertLogClean(t: Test, env: Env, extra: string[] = []): void {
  const log = env.gw.logText();
  t.ok(log.length > 0, 'the gateway logged something');
  t.notOk(log.includes(ADMIN_TOKEN), 'the log does not contain the admin token');
  const secrets = [...env.tokens, ...extra];
  t.ok(secrets.length > 0, 'there are credentials to look for');
  t.same(
    secrets.filter((s) => log.includes(s)),
    [],
    'the log contains none of the tokens',
  );
  // Not even the signature part of one (a log line that cut a token would still leak it).
  t.same(
    env.tokens.map((s) => s.split('.')[2]!).filter((sig) => log.includes(sig)),
    [],
    'nor any token signature',
  );
}

const sessionCookie = (id: string) => `connect.sid=${encodeURIComponent(signSessionId(id, SESSION_SECRET))}`;
const session = (user: string, expiresInMs = 3_600_000) => ({
  cookie: { originalMaxAge: expiresInMs, expires: new Date(Date.now() + expiresInMs).toISOString(), httpOnly: true, path: '/' },
  passport: { user },
});

// ---------------------------------------------------------------------------------------------------------
// Admin token

t.test('admin token: /healthz needs none; /connections and /revoke answer 401 without the right one', async (t) => {
  const env = await setup(t);
  const health = await admin(env, 'GET', '/healthz', { token: null });
  t.equal(health.status, 200, '/healthz without a token: 200');

  const cases: [string, { token?: string | null; authorization?: string }][] = [
    ['no Authorization header', { token: null }],
    ['a wrong token', { token: 'admin-token-revoke-tests-7d1e9a42c1' }],
    ['a prefix of the token', { token: ADMIN_TOKEN.slice(0, -1) }],
    ['the token plus a character', { token: `${ADMIN_TOKEN}x` }],
    ['the token under the Basic scheme', { authorization: `Basic ${ADMIN_TOKEN}` }],
    ['the bare token, no scheme', { authorization: ADMIN_TOKEN }],
    ['an empty bearer', { authorization: 'Bearer ' }],
  ];
  for (const [name, options] of cases) {
    const res = await admin(env, 'GET', '/connections', options);
    t.equal(res.status, 401, `GET /connections, ${name}: 401`);
    t.notOk(res.body.includes(ADMIN_TOKEN), `GET /connections, ${name}: the answer does not hold the admin token`);
    t.notMatch(res.body, /^\[/, `GET /connections, ${name}: no list`);
  }

  // A revoke without the token does nothing.
  const alice = token(env, 'alice');
  const unauth = await admin(env, 'POST', '/revoke', { token: null, body: JSON.stringify({ subject: 'alice' }) });
  t.equal(unauth.status, 401, 'POST /revoke without a token: 401');
  const wrong = await admin(env, 'POST', '/revoke', { token: 'not-the-admin-token', body: JSON.stringify({ subject: 'alice' }) });
  t.equal(wrong.status, 401, 'POST /revoke with a wrong token: 401');
  await assertAccepted(t, env, '/relay', bearer(alice), 'alice after the refused revokes');

  const ok = await admin(env, 'GET', '/connections');
  t.equal(ok.status, 200, 'GET /connections with the token: 200');
  t.match(ok.headers['content-type'], /^application\/json/, 'JSON');
  t.ok(Array.isArray(JSON.parse(ok.body)), 'a JSON list');
  const lower = await admin(env, 'GET', '/connections', { authorization: `bearer ${ADMIN_TOKEN}` });
  t.equal(lower.status, 200, 'the scheme is case-insensitive');
  assertLogClean(t, env);
});

// ---------------------------------------------------------------------------------------------------------
// GET /connections

t.test('GET /connections: one item per live connection, with every field; bytes grow; closed ones go', async (t) => {
  const env = await setup(t);
  t.same(await connections(env), [], 'empty before any connection');

  const exp = Math.floor(Date.now() / 1000) + 600;
  const before = Date.now();
  const alice = await connect(t, env.gw.url('/relay'), bearer(token(env, 'alice', { exp })));
  const bob = await connect(t, env.gw.url('/pipe'), bearer(tokenWithoutExp(env, 'bob')));
  const carol = await connect(t, env.gw.url('/local'), bearer(token(env, 'carol', { exp: exp + 1 })));
  const after = Date.now();

  const list = await connectionsUntil(env, (l) => l.length === 3, 'three connections');
  const by = (subject: string) => list.find((c) => c.subject === subject);
  for (const c of list) {
    t.same(Object.keys(c).sort(), ['bytesIn', 'bytesOut', 'expiresAt', 'id', 'mode', 'remoteAddress', 'route', 'startedAt', 'subject'], `${c.subject}: exactly the documented fields`);
    t.type(c.id, 'string', `${c.subject}: id is a string`);
    t.ok(c.id.length > 0, `${c.subject}: id not empty`);
    t.match(c.startedAt, ISO, `${c.subject}: startedAt is ISO 8601`);
    const started = Date.parse(c.startedAt);
    t.ok(started >= before - 5 && started <= after + 5, `${c.subject}: startedAt is when it connected`);
    t.match(c.remoteAddress, /^(::ffff:)?127\.0\.0\.1$/, `${c.subject}: remoteAddress is the client's`);
    t.type(c.bytesIn, 'number', `${c.subject}: bytesIn is a number`);
    t.type(c.bytesOut, 'number', `${c.subject}: bytesOut is a number`);
  }
  t.equal(new Set(list.map((c) => c.id)).size, 3, 'ids are distinct');
  t.match(by('alice'), { route: '/relay', mode: 'relay', expiresAt: new Date(exp * 1000).toISOString() }, 'alice: relay, expiresAt from exp');
  t.match(by('bob'), { route: '/pipe', mode: 'pipe', expiresAt: null }, 'bob: pipe, expiresAt null without exp');
  t.match(by('carol'), { route: '/local', mode: 'local', expiresAt: new Date((exp + 1) * 1000).toISOString() }, 'carol: local');
  t.ok(by('bob')!.bytesOut > 0, 'bob: the 101 went out on the client socket');

  // Bytes grow with messages, in both directions, on every mode.
  const payload = 'x'.repeat(1000);
  t.equal(await roundTrip(alice.ws, payload), payload, 'alice: echoed');
  t.equal(await roundTrip(bob.ws, payload), payload, 'bob: echoed');
  t.equal(await roundTrip(carol.ws, payload), `echo:${payload}`, 'carol: echoed');
  const grown = await connections(env);
  for (const subject of ['alice', 'bob', 'carol']) {
    const was = by(subject)!;
    const now = grown.find((c) => c.subject === subject)!;
    t.equal(now.id, was.id, `${subject}: same id`);
    t.ok(now.bytesIn >= was.bytesIn + 1000, `${subject}: bytesIn grew by the message (${was.bytesIn} → ${now.bytesIn})`);
    t.ok(now.bytesOut >= was.bytesOut + 1000, `${subject}: bytesOut grew by the echo (${was.bytesOut} → ${now.bytesOut})`);
  }

  // Entries disappear when connections close.
  alice.ws.close();
  await within(alice.closed, 2000, 'alice closed');
  const two = await connectionsUntil(env, (l) => l.length === 2, 'alice gone');
  t.same(two.map((c) => c.subject).sort(), ['bob', 'carol'], 'alice is no longer listed');
  bob.ws.terminate();
  carol.ws.close();
  await connectionsUntil(env, (l) => l.length === 0, 'all gone');
  t.equal(env.gw.gateway.connections, 0, 'the gateway counts none either');
  assertLogClean(t, env);
});

// ---------------------------------------------------------------------------------------------------------
// POST /revoke { subject }

t.test('POST /revoke {subject}: every live connection of alice ends, bob untouched, alice refused', async (t) => {
  const env = await setup(t);
  const aliceToken = token(env, 'alice');
  const bobToken = token(env, 'bob');
  const relay = await connect(t, env.gw.url('/relay'), bearer(aliceToken));
  const local = await connect(t, env.gw.url('/local'), bearer(aliceToken));
  const pipe = await connect(t, env.gw.url('/pipe'), bearer(aliceToken));
  const bob = await connect(t, env.gw.url('/relay'), bearer(bobToken));
  const bobLocal = await connect(t, env.gw.url('/local'), bearer(bobToken));
  t.equal(await roundTrip(pipe.ws, 'through the pipe'), 'through the pipe', 'the pipe works before');
  t.equal(await roundTrip(relay.ws, 'through the relay'), 'through the relay', 'the relay works before');
  await eventually(() => env.relayUp.open === 2 && env.pipeUp.open === 1, 2000, 'upstream sides open');
  await connectionsUntil(env, (l) => l.length === 5, 'five connections');

  const res = await revoke(env, { subject: 'alice' });
  t.equal(res.status, 200, 'POST /revoke: 200');
  t.match(res.headers['content-type'], /^application\/json/);
  t.equal(closedOf(res), 3, 'closed count: alice relay, local and pipe');

  const relayClose = await within(relay.closed, 2000, "alice's relay close");
  t.same(relayClose, { code: 4403, reason: 'revoked' }, "alice's relay connection: close 4403 'revoked'");
  const localClose = await within(local.closed, 2000, "alice's local close");
  t.same(localClose, { code: 4403, reason: 'revoked' }, "alice's local connection: close 4403 'revoked'");
  const pipeClose = await within(pipe.closed, 2000, "alice's pipe close");
  t.equal(pipeClose.code, 1006, "alice's pipe connection: destroyed (1006, no close frame)");
  await eventually(() => env.pipeUp.open === 0, 2000).catch(() => {});
  t.equal(env.pipeUp.open, 0, 'the upstream side of the pipe is closed');
  await eventually(() => env.relayUp.open === 1, 2000).catch(() => {});
  t.equal(env.relayUp.open, 1, "the upstream side of alice's relay is closed, bob's stays");

  // Bob is untouched.
  t.equal(bob.closeEvent, undefined, "bob's relay connection still open");
  t.equal(bobLocal.closeEvent, undefined, "bob's local connection still open");
  t.equal(await roundTrip(bob.ws, 'still here'), 'still here', 'bob still relays');
  t.equal(await roundTrip(bobLocal.ws, 'still here'), 'echo:still here', 'bob local still echoes');
  const left = await connectionsUntil(env, (l) => l.length === 2, "only bob's connections left");
  t.same(left.map((c) => c.subject), ['bob', 'bob'], 'only bob is listed');

  // New handshakes: alice refused on every route, bob accepted.
  await assertRevoked(t, env, '/relay', bearer(aliceToken), 'rev-relay-1');
  await assertRevoked(t, env, '/pipe', bearer(aliceToken), 'rev-pipe-1');
  await assertRevoked(t, env, '/local', bearer(aliceToken), 'rev-local-1');
  await assertRevoked(t, env, '/relay', bearer(token(env, 'alice', { jti: 'fresh-one' })), 'rev-relay-2');
  await assertAccepted(t, env, '/relay', bearer(bobToken), 'bob');
  await assertAccepted(t, env, '/pipe', bearer(token(env, 'bob')), 'bob with a new token');

  // A second revoke of the same subject finds nothing live.
  const again = await revoke(env, { subject: 'alice' });
  t.equal(again.status, 200);
  t.equal(closedOf(again), 0, 'nothing left to close');
  t.match(env.gw.logs().find((l) => l.msg === 'revoked'), { closed: 3 }, 'the revocation was logged');
  assertLogClean(t, env);
});

t.test('a revoked subject stays refused after the expiry of the connections it closed', async (t) => {
  const env = await setup(t);
  const now = Math.floor(Date.now() / 1000);
  // Alice has two tokens: one (short) in use, one (long) not connected when she is revoked.
  const short = token(env, 'alice', { exp: now + 2 });
  const long = token(env, 'alice', { exp: now + 3600 });
  const live = await connect(t, env.gw.url('/relay'), bearer(short));
  const res = await revoke(env, { subject: 'alice' });
  t.equal(closedOf(res), 1, 'closed count 1');
  t.same(await within(live.closed, 2000, 'the close'), { code: 4403, reason: 'revoked' }, "the live connection: 4403 'revoked'");
  await assertRevoked(t, env, '/relay', bearer(long), 'long-1');
  // Past the short token's exp (+ the 1 s minimum the store keeps an entry).
  await sleep(Math.max(0, (now + 3) * 1000 + 300 - Date.now()));
  const later = await rawUpgrade(env.gw.port, '/relay', { ...bearer(long), 'X-Request-Id': 'long-2' });
  t.equal(later.status, 401, "alice's other token is still refused once the closed connection's token has expired");
});

// ---------------------------------------------------------------------------------------------------------
// POST /revoke { jti } and { sessionId }

t.test('POST /revoke {jti}: only that token is refused; the same subject with another jti is accepted', async (t) => {
  const env = await setup(t);
  const t1 = token(env, 'alice', { jti: 't-1' });
  const t2 = token(env, 'alice', { jti: 't-2' });
  const one = await connect(t, env.gw.url('/relay'), bearer(t1));
  const two = await connect(t, env.gw.url('/relay'), bearer(t2));
  const res = await revoke(env, { jti: 't-1' });
  t.equal(res.status, 200, 'POST /revoke: 200');
  t.equal(closedOf(res), 1, 'one connection closed');
  t.same(await within(one.closed, 2000, 'the close'), { code: 4403, reason: 'revoked' }, "the t-1 connection: 4403 'revoked'");
  t.equal(two.closeEvent, undefined, 'the t-2 connection stays');
  t.equal(await roundTrip(two.ws, 'hi'), 'hi', 'and still relays');
  await assertRevoked(t, env, '/relay', bearer(t1), 'jti-1');
  await assertRevoked(t, env, '/pipe', bearer(t1), 'jti-2');
  await assertAccepted(t, env, '/relay', bearer(t2), 'alice with jti t-2');
  await assertAccepted(t, env, '/relay', bearer(token(env, 'alice', { jti: 't-3' })), 'alice with jti t-3');
  await assertAccepted(t, env, '/relay', bearer(token(env, 'alice')), 'alice without a jti');
  await assertAccepted(t, env, '/relay', bearer(token(env, 't-1')), "a subject named like the jti (the kinds don't mix)");
  assertLogClean(t, env);
});

t.test('POST /revoke {sessionId}: that session is refused, another session of the same user accepted', async (t) => {
  const env = await setup(t);
  const store = env.gw.gateway.sessionStore('web')!;
  t.ok(store, 'the memory store');
  const s1 = `sid-revoke-1-${process.pid}-${Math.random().toString(36).slice(2)}`;
  const s2 = `sid-revoke-2-${process.pid}-${Math.random().toString(36).slice(2)}`;
  store.set(s1, session('alice'));
  store.set(s2, session('alice'));
  const headers = (id: string) => ({ Cookie: sessionCookie(id), Origin: ORIGIN });
  const one = await connect(t, env.gw.url('/session'), headers(s1));
  const two = await connect(t, env.gw.url('/session'), headers(s2));
  const list = await connectionsUntil(env, (l) => l.length === 2, 'two session connections');
  t.same(list.map((c) => [c.subject, c.mode, c.route]), [['alice', 'relay', '/session'], ['alice', 'relay', '/session']]);

  const res = await revoke(env, { sessionId: s1 });
  t.equal(res.status, 200, 'POST /revoke: 200');
  t.equal(closedOf(res), 1, 'one connection closed');
  t.same(await within(one.closed, 2000, 'the close'), { code: 4403, reason: 'revoked' }, "the session's connection: 4403 'revoked'");
  t.equal(two.closeEvent, undefined, "the other session's connection stays");
  t.equal(await roundTrip(two.ws, 'hi'), 'hi', 'and still relays');
  await assertRevoked(t, env, '/session', headers(s1), 'sid-1');
  await assertAccepted(t, env, '/session', headers(s2), 'the other session of alice');
  const s3 = `sid-revoke-3-${process.pid}`;
  store.set(s3, session('alice'));
  await assertAccepted(t, env, '/session', headers(s3), 'a new session of alice');
  assertLogClean(t, env, [SESSION_SECRET, s1, s2, s3, encodeURIComponent(signSessionId(s1, SESSION_SECRET)), signSessionId(s1, SESSION_SECRET)]);
});

t.test('a revocation may name something not seen yet: carol, a jti, a session id', async (t) => {
  const env = await setup(t);
  const res = await revoke(env, { subject: 'carol' });
  t.equal(res.status, 200, 'POST /revoke: 200');
  t.equal(closedOf(res), 0, 'nothing was live');
  t.equal((await revoke(env, { jti: 'future-jti' })).status, 200, 'revoke an unseen jti: 200');
  const sid = `sid-future-${process.pid}`;
  t.equal((await revoke(env, { sessionId: sid })).status, 200, 'revoke an unseen session id: 200');

  await assertRevoked(t, env, '/relay', bearer(token(env, 'carol')), 'carol-1');
  await assertRevoked(t, env, '/local', bearer(token(env, 'carol')), 'carol-2');
  await assertRevoked(t, env, '/pipe', bearer(token(env, 'dave', { jti: 'future-jti' })), 'future-jti-1');
  await assertAccepted(t, env, '/pipe', bearer(token(env, 'dave', { jti: 'other-jti' })), 'dave with another jti');
  env.gw.gateway.sessionStore('web')!.set(sid, session('erin'));
  await assertRevoked(t, env, '/session', { Cookie: sessionCookie(sid), Origin: ORIGIN }, 'future-sid-1');
  await assertAccepted(t, env, '/relay', bearer(token(env, 'dave')), 'dave');
  assertLogClean(t, env);
});

// ---------------------------------------------------------------------------------------------------------
// Bad requests

t.test('POST /revoke: bad bodies are 400 and revoke nothing; GET /revoke is 405', async (t) => {
  const env = await setup(t);
  const bad: [string, string | Buffer][] = [
    ['not JSON', 'subject=alice'],
    ['truncated JSON', '{"subject":"alice"'],
    ['empty body', ''],
    ['JSON null', 'null'],
    ['a JSON string', '"alice"'],
    ['a JSON array', '[{"subject":"alice"}]'],
    ['an empty object', '{}'],
    ['two keys', JSON.stringify({ subject: 'alice', jti: 't-1' })],
    ['a known key and an unknown one', JSON.stringify({ subject: 'alice', reason: 'x' })],
    ['an unknown key', JSON.stringify({ user: 'alice' })],
    ['an empty string', JSON.stringify({ subject: '' })],
    ['a number value', JSON.stringify({ subject: 42 })],
    ['a null value', JSON.stringify({ jti: null })],
    ['an object value', JSON.stringify({ sessionId: { id: 'x' } })],
  ];
  for (const [name, body] of bad) {
    const res = await admin(env, 'POST', '/revoke', { body });
    t.equal(res.status, 400, `${name}: 400`);
    t.match(res.body, /"error":"bad_request"/, `${name}: a JSON error body`);
  }
  // Over 4 KiB: the value itself would be fine but the body is too large.
  const big = JSON.stringify({ subject: 'alice', pad: 'x'.repeat(5000) });
  const huge = await admin(env, 'POST', '/revoke', { body: `{"subject":"alice"${' '.repeat(4200)}}` });
  t.equal(huge.status, 400, `a body over 4 KiB (whitespace-padded, valid JSON): 400 (got ${huge.status}${huge.error ? `, ${huge.error}` : ''})`);
  const bigger = await admin(env, 'POST', '/revoke', { body: big });
  t.equal(bigger.status, 400, `a body of ${big.length} bytes: 400 (got ${bigger.status}${bigger.error ? `, ${bigger.error}` : ''})`);
  t.notOk(bigger.status === 200, 'an oversized body is never accepted');
  t.notOk(huge.status === 200, 'an oversized (valid JSON) body is never accepted');

  const get = await admin(env, 'GET', '/revoke');
  t.equal(get.status, 405, 'GET /revoke: 405');
  t.equal(get.headers.allow, 'POST', 'Allow: POST');
  const put = await admin(env, 'PUT', '/revoke', { body: JSON.stringify({ subject: 'alice' }) });
  t.equal(put.status, 405, 'PUT /revoke: 405');

  // None of the refused requests revoked anything.
  const alice = await connect(t, env.gw.url('/relay'), bearer(token(env, 'alice', { jti: 't-1' })));
  t.equal(await roundTrip(alice.ws, 'ok'), 'ok', 'alice (jti t-1) still accepted after all of that');
  // The admin server still answers.
  t.equal((await admin(env, 'GET', '/connections')).status, 200, 'the admin server still serves');
  assertLogClean(t, env);
});

// ---------------------------------------------------------------------------------------------------------
// refresh with a revoked token

t.test('relay refresh with a token of a revoked jti is refused: closed 4401', async (t) => {
  const env = await setup(t);
  const live = await connect(t, env.gw.url('/relay'), bearer(token(env, 'alice', { jti: 'r-1' })));
  const res = await revoke(env, { jti: 'r-2' });
  t.equal(closedOf(res), 0, 'the live connection has another jti');
  t.equal(await roundTrip(live.ws, 'before'), 'before', 'the connection is untouched');
  live.ws.send(JSON.stringify({ type: 'refresh', token: token(env, 'alice', { jti: 'r-2' }) }));
  const closed = await within(live.closed, 3000, 'the 4401 close');
  t.equal(closed.code, 4401, `closed 4401 (reason '${closed.reason}')`);
  t.equal(env.relayUp.seen.length, 1, 'the connection had reached the upstream (and only it)');
  t.match(env.gw.logs().find((l) => l.msg === 'refresh rejected'), { subject: 'alice' }, 'the refused refresh was logged');

  // A refresh with a token that is not revoked still extends, on another connection.
  const other = await connect(t, env.gw.url('/relay'), bearer(token(env, 'alice', { jti: 'r-3' })));
  other.ws.send(JSON.stringify({ type: 'refresh', token: token(env, 'alice', { jti: 'r-4' }) }));
  await sleep(300);
  t.equal(other.closeEvent, undefined, 'a good refresh does not close');
  t.equal(await roundTrip(other.ws, 'after'), 'after', 'and still relays');
  // The refreshed identity is what a revocation now matches.
  const byNew = await revoke(env, { jti: 'r-4' });
  t.equal(closedOf(byNew), 1, 'revoking the refreshed jti closes the connection');
  t.same(await within(other.closed, 2000, 'the close'), { code: 4403, reason: 'revoked' }, "closed 4403 'revoked'");
  assertLogClean(t, env);
});
