// Regression tests for the bugs the fuzzers found in src/ (issue 7). Each one shows the bug with the
// smallest input, and its failing assertion is marked `{ todo }` with the bug's description (harness.ts
// KNOWN): CI stays green, and the day the bug is fixed the todo passes and can lose its mark (and its KNOWN
// entry: the fuzzers then check those inputs like any other). A bug already fixed keeps a plain test.
import { createHmac } from 'node:crypto';
import { connect } from 'node:net';
import { createRequire } from 'node:module';
import t from 'tap';
import { signSessionId } from '../../src/auth/session.js';
import { validateConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { createGateway } from '../../src/gateway.js';
import { cleanEnv, isAlive, spawnCli, writeJson } from '../helpers/cli.js';
import { startSidecar } from '../helpers/gateway.js';
import { freePort } from '../helpers/net.js';
import { SECRET, hs256, jwtAuth, rsaKeys } from '../helpers/tokens.js';
import { rawUpgrade, wsKey } from '../helpers/upgrade.js';
import { startEchoUpstream } from '../helpers/upstream.js';
import { KNOWN, bytesOf, descriptionOf, exchange, problemsOf } from './harness.js';

const b64 = (text: string) => Buffer.from(text).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);
const upgradeHead = (requestLine: string, extra = '') =>
  bytesOf(`${requestLine}\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${wsKey()}\r\n${extra}\r\n`);

/** Captures what a function throws. */
function thrownBy(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}

const ROUTE = (upstream: string) => ({ path: '/chat', auth: [], upstream });

// ---------------------------------------------------------------------------------------------------------
// Handshakes

t.test('connect-no-answer: a CONNECT request gets a 4xx answer, not a silent close', async (t) => {
  const upstream = await startEchoUpstream(t);
  const gw = await startSidecar(t, { routes: [ROUTE(upstream.url)] });
  for (const target of ['/chat', '127.0.0.1:443']) {
    const res = await exchange(gw.port, upgradeHead(`CONNECT ${target} HTTP/1.1`));
    t.ok(res.closed, `CONNECT ${target}: the connection is closed`);
    t.ok(res.status >= 400 && res.status < 500, `CONNECT ${target}: answered with a 4xx (got ${res.status || 'no answer'})`);
    t.equal(res.status, 405, `CONNECT ${target}: 405`);
    t.equal(res.headers.allow, 'GET', 'Allow: GET (a handshake is a GET)');
    t.same(problemsOf(res), [], 'a complete JSON refusal like every other');
  }
  t.equal(upstream.tcp, 0, 'nothing reached the upstream');
});

t.test('http-version: an upgrade with HTTP/1.0, 0.9 or 2.0 in the request line is 400', async (t) => {
  const upstream = await startEchoUpstream(t);
  const gw = await startSidecar(t, { limits: { handshakeTimeoutMs: 1000 }, routes: [ROUTE(upstream.url)] });
  for (const version of ['HTTP/1.0', 'HTTP/0.9', 'HTTP/2.0']) {
    const res = await exchange(gw.port, upgradeHead(`GET /chat ${version}`));
    t.comment(`${version}: ${res.statusLine || 'no answer'}`);
    t.equal(res.status, 400, `${version}: 400`);
    t.equal(descriptionOf(res), 'malformed websocket upgrade', `${version}: refused at step 1`);
  }
  t.equal(upstream.tcp, 0, 'nothing reached the upstream');
  const res = await exchange(gw.port, upgradeHead('GET /chat HTTP/1.1'));
  t.equal(res.status, 101, 'HTTP/1.1 is still upgraded');
});

t.test('plain-no-host: a plain request without Host gets the gateway\'s JSON answer', async (t) => {
  const upstream = await startEchoUpstream(t);
  const gw = await startSidecar(t, { routes: [ROUTE(upstream.url)] });
  const res = await exchange(gw.port, bytesOf('GET /chat HTTP/1.1\r\n\r\n'));
  t.ok(res.status >= 400 && res.status < 500, `a 4xx (${res.statusLine})`);
  t.equal(res.headers['content-type'], 'application/json', 'a JSON body, as every other refusal of the sidecar');
  t.ok(res.headers['x-request-id'], 'with an X-Request-Id');
  t.equal(res.status, 400, 'HTTP/1.1 requires Host (RFC 9112 3.2): 400');
  t.equal(res.headers.connection, 'close', 'and the connection is closed, as Node did');
  t.same(problemsOf(res), [], 'a complete JSON refusal like every other');
  // HTTP/1.0 may leave Host out: answered as any plain request, 426 on a route path and 404 elsewhere.
  for (const [path, status] of [['/chat', 426], ['/elsewhere', 404]] as const) {
    const old = await exchange(gw.port, bytesOf(`GET ${path} HTTP/1.0\r\n\r\n`));
    t.equal(old.status, status, `HTTP/1.0 GET ${path} without Host: ${status}`);
    t.same(problemsOf(old), [], `HTTP/1.0 GET ${path}: a complete JSON refusal`);
  }
  t.equal(upstream.tcp, 0, 'nothing reached the upstream');
});

// ---------------------------------------------------------------------------------------------------------
// Cookies

t.test('cookie-quoted: a quoted express-session cookie that express-session accepts is accepted', async (t) => {
  const SECRET_S = 'session-secret-0123456789abcdef-regression';
  const upstream = await startEchoUpstream(t);
  const gw = await startSidecar(t, {
    authenticators: { web: { type: 'session', secrets: [SECRET_S], subjectPath: 'user' } },
    routes: [{ path: '/live', auth: ['web'], upstream: upstream.url, origins: '*' }],
  });
  gw.gateway.sessionStore('web')!.set('sid-1', { cookie: { expires: null }, user: 'alice' });
  const cookie = `connect.sid="${encodeURIComponent(signSessionId('sid-1', SECRET_S))}"`;
  // What express-session itself reads from this header (its own `cookie` package).
  const expressCookie = createRequire(createRequire(import.meta.url).resolve('express-session'))('cookie') as { parse(h: string): Record<string, string> };
  t.equal(expressCookie.parse(cookie)['connect.sid'], signSessionId('sid-1', SECRET_S), 'express-session strips the quotes and reads the signed value');
  const res = await rawUpgrade(gw.port, '/live', { Cookie: cookie });
  t.equal(res.status, 101, `the gateway accepts it too (got ${res.status} ${descriptionOf(res) ?? ''})`);
});

// ---------------------------------------------------------------------------------------------------------
// JWTs

t.test('jwt-array-payload: a signed JWS whose payload is an array is not a JWT', async (t) => {
  const keys = rsaKeys();
  const upstream = await startEchoUpstream(t);
  const gw = await startSidecar(t, {
    authenticators: { jwt: { type: 'jwt', from: ['bearer'], publicKey: keys.publicKey, algorithms: ['RS256'] } },
    routes: [{ path: '/chat', auth: ['jwt'], upstream: upstream.url }],
  });
  const { sign } = await import('node:crypto');
  for (const payload of ['[]', '[1,2]']) {
    const input = `${b64('{"alg":"RS256","typ":"JWT"}')}.${b64(payload)}`;
    const token = `${input}.${sign('sha256', Buffer.from(input), keys.privateKey).toString('base64url')}`;
    const res = await rawUpgrade(gw.port, '/chat', { Authorization: `Bearer ${token}` });
    t.equal(res.status, 401, `payload ${payload}: 401 (got ${res.status})`);
  }
});

t.test('jwt-iat-zero: maxAgeSec refuses a token issued at 0 (1970)', async (t) => {
  const upstream = await startEchoUpstream(t);
  const gw = await startSidecar(t, { authenticators: { jwt: jwtAuth({ maxAgeSec: 3600 }) }, routes: [{ path: '/chat', auth: ['jwt'], upstream: upstream.url }] });
  const old = hs256({ sub: 'alice', iat: -1 });
  t.equal(descriptionOf(await rawUpgrade(gw.port, '/chat', { Authorization: `Bearer ${old}` })), 'token too old', 'iat -1 is too old');
  // hs256 cannot write iat 0 (it means "now" to jsonwebtoken's sign too): signed by hand.
  const input = `${b64('{"alg":"HS256","typ":"JWT"}')}.${b64(JSON.stringify({ sub: 'alice', iat: 0, exp: now() + 3600 }))}`;
  const zero = `${input}.${createHmac('sha256', SECRET).update(input).digest('base64url')}`;
  const res = await rawUpgrade(gw.port, '/chat', { Authorization: `Bearer ${zero}` });
  t.equal(descriptionOf(res), 'token too old', `iat 0 is too old (got ${res.status} ${descriptionOf(res) ?? ''})`);
});

t.test('GET /connections with a live token whose exp is beyond the Date range (found by fuzzing, fixed in bc3d2bb)', async (t) => {
  // The CLI in a child process: the bug took the whole process down (src/connections.ts list() threw
  // RangeError "Invalid time value" inside the admin request handler).
  const upstream = await startEchoUpstream(t);
  const port = await freePort();
  let adminPort = await freePort();
  while (adminPort === port) adminPort = await freePort();
  const ADMIN = 'admin-token-regression-0123456789';
  const file = writeJson(t.testdir(), 'gateway.config.json', {
    listen: { host: '127.0.0.1', port },
    admin: { host: '127.0.0.1', port: adminPort, token: ADMIN },
    authenticators: { jwt: jwtAuth({ from: ['bearer'] }) },
    routes: [{ path: '/chat', auth: ['jwt'], upstream: upstream.url }],
  });
  const proc = spawnCli(t, ['--config', file], { env: cleanEnv() });
  await proc.waitFor('admin listening', { timeoutMs: 20000 });
  // Number.MAX_SAFE_INTEGER: how some issuers write "never expires"; validly signed.
  const input = `${b64('{"alg":"HS256","typ":"JWT"}')}.${b64(`{"sub":"alice","iat":${now()},"exp":9007199254740991}`)}`;
  const token = `${input}.${createHmac('sha256', SECRET).update(input).digest('base64url')}`;
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => {});
  t.teardown(() => void socket.destroy());
  socket.write(upgradeHead('GET /chat HTTP/1.1', `Authorization: Bearer ${token}\r\n`));
  const head = await new Promise<string>((resolve) => {
    let raw = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => (raw += chunk).includes('\r\n\r\n') && resolve(raw));
    socket.on('close', () => resolve(raw));
  });
  t.match(head, /^HTTP\/1\.1 101 /, 'the validly signed token is accepted');
  const res = await fetch(`http://127.0.0.1:${adminPort}/connections`, { headers: { Authorization: `Bearer ${ADMIN}` } }).catch((err: Error) => err);
  t.equal(res instanceof Error ? `failed: ${res.message}` : res.status, 200, 'GET /connections answers 200');
  if (!(res instanceof Error)) t.match(await res.json(), [{ subject: 'alice', expiresAt: null }], 'the connection is listed, without a date it cannot hold');
  await new Promise((r) => setTimeout(r, 300));
  t.ok(isAlive(proc.child.pid!), 'the gateway process is still running');
  t.comment(`stderr: ${proc.stderr().split('\n').find((l) => l.includes('RangeError')) ?? '(none)'}`);
});

// ---------------------------------------------------------------------------------------------------------
// Config files

const BASE = (upstream = 'ws://127.0.0.1:9001') => ({ authenticators: { jwt: jwtAuth() }, routes: [{ path: '/chat', auth: ['jwt'], upstream }] });

t.test('config-proto-key: an own "__proto__" field is an unknown field, and nothing is read through it', async (t) => {
  const root = JSON.parse(`{"__proto__": {"admin": {"port": 9090}}, ${JSON.stringify(BASE()).slice(1)}`) as unknown;
  const err = thrownBy(() => validateConfig(root));
  t.ok(err instanceof ConfigError, 'a ConfigError');
  const problems = err instanceof ConfigError ? err.problems : [];
  t.comment(`problems: ${JSON.stringify(problems)}`);
  t.ok(problems.includes('__proto__: unknown field'), '"__proto__: unknown field"');
  t.notOk(problems.some((p) => p.startsWith('admin.')), 'no problem about an admin block that is not there');
  const limits = JSON.parse(`{"limits": {"__proto__": {"maxConnections": 1}}, ${JSON.stringify(BASE()).slice(1)}`) as unknown;
  const again = thrownBy(() => validateConfig(limits));
  t.ok(again instanceof ConfigError && again.problems.includes('limits.__proto__: unknown field'), 'limits.__proto__: unknown field');
});

t.test('config-auth-prototype-name: routes[].auth naming an Object.prototype member is an unknown authenticator', async (t) => {
  for (const name of ['toString', 'constructor', 'hasOwnProperty', '__proto__']) {
    const config = { authenticators: { jwt: jwtAuth() }, routes: [{ path: '/chat', auth: [name], upstream: 'ws://127.0.0.1:9001' }] };
    const err = thrownBy(() => validateConfig(config));
    t.ok(err instanceof ConfigError && err.problems.includes(`routes.0.auth.0: unknown authenticator "${name}"`), `"${name}": unknown authenticator`);
  }
  // It made every handshake on the route a 500: such a sidecar now does not start.
  const upstream = await startEchoUpstream(t);
  const gw = await startSidecar(t, { authenticators: { jwt: jwtAuth() }, routes: [{ path: '/chat', auth: ['toString'], upstream: upstream.url }] }).catch((err: Error) => err);
  t.equal((gw as Error).name, 'ConfigError', `a sidecar with auth ["toString"] does not start (got ${(gw as Error).name ?? 'a running sidecar'})`);
});

t.test('config-range-error: very deep or very wide configs are a ConfigError', async (t) => {
  let deep: unknown = {};
  for (let i = 0; i < 20_000; i++) deep = { a: deep };
  const wide: Record<string, unknown> = { path: '/chat', auth: [], upstream: 'ws://127.0.0.1:9001' };
  for (let i = 0; i < 200_000; i++) wide[`k${i}`] = 1;
  for (const [what, config] of [['nested 20 000 deep', { ...BASE(), limits: deep }], ['200 000 unknown fields', { routes: [wide] }]] as const) {
    const err = thrownBy(() => validateConfig(config));
    t.ok(err !== undefined, `${what}: refused`);
    t.equal((err as Error)?.name, 'ConfigError', `${what}: a ConfigError (got ${(err as Error)?.name}: ${(err as Error)?.message.slice(0, 60)})`);
  }
});

t.test('config-path-quotes-value: an inline PEM private key in listen.tls.key is not printed', async (t) => {
  const body = 'MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKjMzEfYyjiWA4R4';
  const pem = `-----BEGIN PRIVATE KEY-----\n${body}\n-----END PRIVATE KEY-----\n`;
  const err = thrownBy(() => validateConfig({ ...BASE(), listen: { port: 8443, tls: { cert: 'cert.pem', key: pem } } }));
  t.ok(err instanceof ConfigError && err.problems.some((p) => p.startsWith('listen.tls.key: ')), 'listen.tls.key is reported');
  t.notOk(String((err as Error)?.message).includes(body), 'the message does not hold the key');
});

t.test('config-newline-in-key: an unknown field named with a line break is still one line', async (t) => {
  const err = thrownBy(() => validateConfig({ ...BASE(), limits: { 'a\nb: c': 1 } }));
  t.ok(err instanceof ConfigError, 'a ConfigError');
  t.ok(err instanceof ConfigError && err.problems.every((p) => !/[\r\n]/.test(p)), `one line per problem: ${JSON.stringify(err instanceof ConfigError ? err.problems : [])}`);
});

t.test('config-url-unparseable: URLs that do not parse are config errors', async (t) => {
  for (const upstream of ['ws://127.0.0.1:99999', 'ws://[', 'wss://[::1']) {
    const err = thrownBy(() => validateConfig(BASE(upstream)));
    t.ok(err instanceof ConfigError, `upstream ${upstream}: a ConfigError`);
  }
  const redis = thrownBy(() => createGateway({ ...BASE(), redis: { url: 'redis://[' } }));
  t.equal((redis as Error)?.name, 'ConfigError', `redis.url "redis://[": a ConfigError (got ${(redis as Error)?.name})`);
  const jwks = thrownBy(() => createGateway({ authenticators: { jwt: { type: 'jwt', from: ['bearer'], jwksUri: 'http://[', algorithms: ['RS256'] } }, routes: [{ path: '/chat', auth: ['jwt'], upstream: 'ws://127.0.0.1:9001' }] }));
  t.equal((jwks as Error)?.name, 'ConfigError', `jwksUri "http://[": a ConfigError (got ${(jwks as Error)?.name})`);
  // An unparseable upstream got every handshake closed without any answer: the sidecar now refuses to start.
  const gw = await startSidecar(t, { routes: [ROUTE('ws://127.0.0.1:99999')] }).catch((err: Error) => err);
  t.equal((gw as Error).name, 'ConfigError', `a sidecar with upstream ws://127.0.0.1:99999 does not start (got ${(gw as Error).name ?? 'a running sidecar'})`);
});

t.test('config-nested-reference: a nested default never leaves "${...}" in the config', async (t) => {
  const env = { FALLBACK_ADMIN_TOKEN: 'fallback-admin-token-0123456789' };
  const config = { ...BASE(), admin: { port: 9090, token: '${UNSET_ADMIN_TOKEN:-${FALLBACK_ADMIN_TOKEN}}' } };
  let token: string | undefined;
  const err = thrownBy(() => (token = validateConfig(config, { env }).admin?.token));
  t.comment(`admin.token after validation: ${JSON.stringify(token)}; error: ${(err as Error)?.message ?? 'none'}`);
  t.ok(err instanceof ConfigError || token === env.FALLBACK_ADMIN_TOKEN, 'either expanded (bash-like) or refused, never the literal text');
});
