// SPEC 2.2 (forwardAuth), 4, 9: the handshake asks a real HTTP auth service on 127.0.0.1 (Traefik
// ForwardAuth / nginx auth_request / oauth2-proxy `/oauth2/auth` style), which counts its hits and
// records what it received, in front of a real ws upstream. No mocks.
import { createServer, type IncomingHttpHeaders, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import t, { type Test } from 'tap';
import { validateConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { assertNoLeak, assertRejected } from '../helpers/assertions.js';
import { echo, openClient } from '../helpers/client.js';
import { startGatewayWithUpstream, type Setup } from '../helpers/gateway.js';
import { freePort, listenLocal } from '../helpers/net.js';
import { rawUpgrade } from '../helpers/upgrade.js';

// ---------------------------------------------------------------------------------------------------------
// A real auth service

interface Hit {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
}

interface AuthService {
  url: string;
  hits: Hit[];
}

type Answer = (hit: Hit, res: ServerResponse) => void;

/** An auth service answering `answer`; the request's method, URL and headers are recorded. */
async function startAuthService(t: Test, answer: Answer): Promise<AuthService> {
  const hits: Hit[] = [];
  const server = createServer((req, res) => {
    const hit: Hit = { method: req.method ?? '', url: req.url ?? '', headers: req.headers };
    hits.push(hit);
    req.resume();
    answer(hit, res);
  });
  const port = await listenLocal(t, server);
  return { url: `http://127.0.0.1:${port}/oauth2/auth`, hits };
}

/** An answer with a status and headers, and a small body (as real auth services send). */
const reply =
  (status: number, headers: OutgoingHttpHeaders = {}): Answer =>
  (_hit, res) =>
    res.writeHead(status, { 'Content-Type': 'text/plain', ...headers }).end(`status ${status}`);

const ORIGIN = 'https://app.example.com';
const BEARER = 'fa-bearer-ZZZZZZZZZZZZZZZZZZZZZZZZZZZZ';
const COOKIE_VALUE = 'oauth2proxy-cookie-YYYYYYYYYYYYYYYYYYYY';

/** A gateway whose `/ws` route uses a forwardAuth authenticator on `service`. */
function setup(t: Test, service: AuthService, auth: Record<string, unknown> = {}, route: Record<string, unknown> = {}): Promise<Setup> {
  return startGatewayWithUpstream(t, (upstream) => ({
    authenticators: { fa: { type: 'forwardAuth', url: service.url, ...auth } },
    routes: [{ path: '/ws', auth: ['fa'], upstream, origins: [ORIGIN], ...route }],
  }));
}

const claimsOf = (header: unknown) => JSON.parse(Buffer.from(String(header), 'base64url').toString()) as Record<string, unknown>;

// ---------------------------------------------------------------------------------------------------------

t.test('2xx accepts; the auth service gets the original headers and X-Forwarded-*, not the upgrade ones', async (t) => {
  const service = await startAuthService(t, reply(200, { 'X-Auth-Request-User': 'alice' }));
  const s = await setup(t, service);
  const res = await rawUpgrade(s.gw.port, '/ws?room=42&lang=en', {
    Host: 'chat.example.com',
    Origin: ORIGIN,
    Authorization: `Bearer ${BEARER}`,
    Cookie: `_oauth2_proxy=${COOKIE_VALUE}; theme=dark`,
    'X-Custom': 'kept',
    'User-Agent': 'test-agent/1.0',
    'X-Forwarded-For': '203.0.113.7',
    'X-Forwarded-Uri': '/admin',
    'X-Forwarded-Method': 'POST',
    'Sec-WebSocket-Protocol': 'chat',
    'Sec-WebSocket-Extensions': 'permessage-deflate',
  });
  t.equal(res.status, 101);
  t.equal(service.hits.length, 1);
  const hit = service.hits[0]!;
  t.equal(hit.method, 'GET');
  t.equal(hit.url, '/oauth2/auth');
  const h = hit.headers;
  t.equal(h.authorization, `Bearer ${BEARER}`, 'Authorization reaches the auth service');
  t.equal(h.cookie, `_oauth2_proxy=${COOKIE_VALUE}; theme=dark`, 'cookies reach the auth service');
  t.equal(h['x-custom'], 'kept');
  t.equal(h['user-agent'], 'test-agent/1.0');
  t.equal(h.origin, ORIGIN);
  t.equal(h['x-forwarded-method'], 'GET', 'X-Forwarded-Method is set by the gateway, not the client');
  t.equal(h['x-forwarded-proto'], 'http');
  t.equal(h['x-forwarded-host'], 'chat.example.com');
  t.equal(h['x-forwarded-uri'], '/ws?room=42&lang=en', 'X-Forwarded-Uri: path with query, not the client value');
  t.equal(h['x-forwarded-for'], '203.0.113.7, 127.0.0.1', 'X-Forwarded-For: the client address appended');
  t.equal(h.host, new URL(service.url).host, 'Host is the auth service');
  t.equal(h.upgrade, undefined, 'no Upgrade');
  t.not(String(h.connection).toLowerCase(), 'upgrade', 'not the client Connection');
  for (const name of Object.keys(h)) t.notOk(name.startsWith('sec-websocket-'), `${name} is not forwarded`);

  const seen = s.upstream.seen[0]!;
  t.equal(seen.headers['x-auth-subject'], 'alice');
  t.same(claimsOf(seen.headers['x-auth-claims']), {}, 'no copyHeaders: empty claims');
  t.equal(seen.url, '/ws?room=42&lang=en');
  t.match(s.gw.logs().find((l) => l.status === 101), { authenticator: 'fa', subject: 'alice' });
  assertNoLeak(t, s.gw, [BEARER, COOKIE_VALUE]);
});

t.test('oauth2-proxy style: 202 with X-Auth-Request-*; X-Forwarded-User as the fallback subject', async (t) => {
  const service = await startAuthService(t, (hit, res) =>
    hit.headers.cookie?.includes('who=fwd')
      ? reply(202, { 'X-Forwarded-User': 'fwd-user' })(hit, res)
      : reply(202, { 'X-Auth-Request-User': 'alice', 'X-Forwarded-User': 'ignored', 'X-Auth-Request-Email': 'alice@example.com' })(hit, res),
  );
  const s = await setup(t, service);
  const ws = await openClient(t, s.gw.url('/ws'), [], { Cookie: `_oauth2_proxy=${COOKIE_VALUE}`, Origin: ORIGIN });
  t.equal(await echo(ws, 'ping'), 'ping');
  t.equal(s.upstream.seen[0]?.headers['x-auth-subject'], 'alice', 'X-Auth-Request-User wins');
  t.equal((await rawUpgrade(s.gw.port, '/ws', { Cookie: 'who=fwd' })).status, 101);
  t.equal(s.upstream.seen[1]?.headers['x-auth-subject'], 'fwd-user');
});

t.test('2xx without a user header: accepted with a null subject', async (t) => {
  const service = await startAuthService(t, reply(204));
  const s = await setup(t, service);
  t.equal((await rawUpgrade(s.gw.port, '/ws')).status, 101);
  t.equal(s.upstream.seen[0]?.headers['x-auth-subject'], undefined);
  t.match(s.gw.logs().find((l) => l.status === 101), { authenticator: 'fa', subject: null });
});

t.test('it always decides: no credential at all still asks the auth service', async (t) => {
  const service = await startAuthService(t, reply(401));
  const s = await setup(t, service);
  const res = await rawUpgrade(s.gw.port, '/ws');
  t.equal(res.status, 401);
  t.equal(service.hits.length, 1);
});

t.test('origins are checked before the auth service is asked', async (t) => {
  const service = await startAuthService(t, reply(200, { 'X-Auth-Request-User': 'alice' }));
  const s = await setup(t, service);
  const res = await rawUpgrade(s.gw.port, '/ws', { Origin: 'https://evil.example.net', Cookie: `_oauth2_proxy=${COOKIE_VALUE}` });
  t.equal(res.status, 403);
  t.equal(service.hits.length, 0);
});

// ---------------------------------------------------------------------------------------------------------
// copyHeaders

t.test('copyHeaders: listed response headers reach the upstream (and the claims); unlisted ones do not', async (t) => {
  const service = await startAuthService(
    t,
    reply(200, { 'X-Auth-Request-User': 'alice', 'X-Auth-Request-Email': 'alice@example.com', 'X-Tenant': 'acme', 'X-Internal-Role': 'admin' }),
  );
  const s = await setup(t, service, { copyHeaders: ['X-Auth-Request-Email', 'X-Tenant', 'X-Absent'] });
  const res = await rawUpgrade(s.gw.port, '/ws', { 'X-Tenant': 'evil-corp', 'X-Absent': 'client-made' });
  t.equal(res.status, 101);
  const seen = s.upstream.seen[0]!;
  t.same(claimsOf(seen.headers['x-auth-claims']), { 'x-auth-request-email': 'alice@example.com', 'x-tenant': 'acme' }, 'claims = the copied headers, lower-cased');
  t.equal(seen.headers['x-internal-role'], undefined, 'an unlisted response header does not go upstream');
  t.equal(service.hits[0]?.headers['x-tenant'], 'evil-corp', 'the auth service saw what the client sent');
  t.equal(seen.headers['x-auth-request-email'], 'alice@example.com', 'copied header reaches the upstream');
  t.equal(seen.headers['x-tenant'], 'acme', "the auth service's value, never the client's");
  t.equal(seen.headers['x-absent'], undefined, 'a listed header the service did not answer: the client value is dropped');
});

t.test('without copyHeaders nothing of the response goes upstream', async (t) => {
  const service = await startAuthService(t, reply(200, { 'X-Auth-Request-User': 'alice', 'X-Tenant': 'acme' }));
  const s = await setup(t, service);
  t.equal((await rawUpgrade(s.gw.port, '/ws', { 'X-Tenant': 'client' })).status, 101);
  t.equal(s.upstream.seen[0]?.headers['x-tenant'], 'client', 'an unlisted name is an ordinary client header');
  t.same(claimsOf(s.upstream.seen[0]?.headers['x-auth-claims']), {});
});

// ---------------------------------------------------------------------------------------------------------
// Refusals

t.test("401 with a WWW-Authenticate → 401 with exactly that challenge", async (t) => {
  const challenge = 'Basic realm="corp", charset="UTF-8"';
  const service = await startAuthService(t, reply(401, { 'WWW-Authenticate': challenge }));
  const s = await setup(t, service);
  const res = await rawUpgrade(s.gw.port, '/ws', { Authorization: `Bearer ${BEARER}`, Cookie: `_oauth2_proxy=${COOKIE_VALUE}` });
  assertRejected(t, res, s, 401, { error: 'invalid_token', error_description: 'rejected by auth service' }, challenge);
  t.equal(res.statusLine, 'HTTP/1.1 401 Unauthorized');
  t.equal(res.raw.split('\r\n').filter((l) => /^www-authenticate:/i.test(l)).length, 1, 'one challenge');
  t.match(s.gw.logs().find((l) => l.status === 401), { code: 'GW_ERR_FORWARD_AUTH_DENIED', authenticator: 'fa' });
  assertNoLeak(t, s.gw, [BEARER, COOKIE_VALUE], res);
});

t.test('401 without a challenge → our invalid_token challenge', async (t) => {
  const service = await startAuthService(t, reply(401));
  const s = await setup(t, service);
  const res = await rawUpgrade(s.gw.port, '/ws');
  assertRejected(
    t,
    res,
    s,
    401,
    { error: 'invalid_token', error_description: 'rejected by auth service' },
    'Bearer realm="portcullis", error="invalid_token", error_description="rejected by auth service"',
  );
});

t.test('403 → 403 (its WWW-Authenticate passed through when it sends one)', async (t) => {
  const service = await startAuthService(t, (hit, res) =>
    hit.headers['x-with-challenge'] ? reply(403, { 'WWW-Authenticate': 'Bearer error="insufficient_scope"' })(hit, res) : reply(403)(hit, res),
  );
  const s = await setup(t, service);
  const body = { error: 'forbidden', error_description: 'forbidden by auth service' };
  const plain = await rawUpgrade(s.gw.port, '/ws');
  assertRejected(t, plain, s, 403, body, undefined);
  t.equal(plain.statusLine, 'HTTP/1.1 403 Forbidden');
  const challenged = await rawUpgrade(s.gw.port, '/ws', { 'X-With-Challenge': '1' });
  assertRejected(t, challenged, s, 403, body, 'Bearer error="insufficient_scope"');
  t.match(s.gw.logs().find((l) => l.status === 403), { code: 'GW_ERR_FORWARD_AUTH_FORBIDDEN' });
});

const unavailable = { error: 'unavailable', error_description: 'authentication backend unavailable' };

const failures: [string, Answer][] = [
  ['500', reply(500)],
  ['502', reply(502)],
  ['404', reply(404)],
  ['a 302 to a login page', reply(302, { Location: 'https://login.example.com/' })],
  ['429', reply(429)],
];
for (const [name, answer] of failures) {
  t.test(`the auth service answers ${name} → 503`, async (t) => {
    const service = await startAuthService(t, answer);
    const s = await setup(t, service);
    const res = await rawUpgrade(s.gw.port, '/ws', { Authorization: `Bearer ${BEARER}` });
    assertRejected(t, res, s, 503, unavailable, undefined);
    t.match(s.gw.logs().find((l) => l.status === 503), { code: 'GW_ERR_AUTH_UNAVAILABLE', authenticator: 'fa', cause: { message: /^forwardAuth: auth service answered \d+$/ } });
    assertNoLeak(t, s.gw, [BEARER], res);
  });
}

t.test('a slow auth service beyond timeoutMs → 503 in time', async (t) => {
  const service = await startAuthService(t, (hit, res) => {
    const timer = setTimeout(() => reply(200, { 'X-Auth-Request-User': 'alice' })(hit, res), 3000);
    res.on('close', () => clearTimeout(timer));
  });
  const s = await setup(t, service, { timeoutMs: 300 });
  const started = Date.now();
  const res = await rawUpgrade(s.gw.port, '/ws', { Cookie: `_oauth2_proxy=${COOKIE_VALUE}` });
  const took = Date.now() - started;
  assertRejected(t, res, s, 503, unavailable, undefined);
  t.ok(took >= 250 && took < 1500, `answered after timeoutMs, well before the service (${took} ms)`);
  t.match(s.gw.logs().find((l) => l.status === 503), { cause: { message: 'forwardAuth: no answer within 300 ms' } });
  assertNoLeak(t, s.gw, [COOKIE_VALUE], res);
});

t.test('the auth service down → 503', async (t) => {
  const port = await freePort();
  const s = await setup(t, { url: `http://127.0.0.1:${port}/auth`, hits: [] });
  const res = await rawUpgrade(s.gw.port, '/ws', { Authorization: `Bearer ${BEARER}` });
  assertRejected(t, res, s, 503, unavailable, undefined);
  t.match(s.gw.logs().find((l) => l.status === 503), { cause: { message: /^forwardAuth: unreachable/ } });
  assertNoLeak(t, s.gw, [BEARER], res);
});

// ---------------------------------------------------------------------------------------------------------
// Config

t.test('config: a forwardAuth route needs origins (it passes cookies); fields are checked', async (t) => {
  const base = (route: Record<string, unknown> = {}, auth: Record<string, unknown> = {}) => ({
    authenticators: { fa: { type: 'forwardAuth', url: 'http://127.0.0.1:4180/oauth2/auth', ...auth } },
    routes: [{ path: '/ws', auth: ['fa'], upstream: 'ws://127.0.0.1:9001', ...route }],
  });
  const problems = (input: unknown) => {
    try {
      validateConfig(input, { env: {} });
      return [];
    } catch (err) {
      if (err instanceof ConfigError) return [...err.problems];
      throw err;
    }
  };
  t.same(problems(base({ origins: '*' }, { copyHeaders: ['X-Auth-Request-Email'], timeoutMs: 500 })), []);
  t.same(problems(base()), ['routes.0.origins: required on a route that accepts a cookie credential (list the allowed origins, or "*")']);
  t.same(problems(base({ origins: '*' }, { url: 'ftp://x' })), ['authenticators.fa.url: expected an http:// or https:// URL']);
  t.same(problems(base({ origins: '*' }, { timeoutMs: 0 })), ['authenticators.fa.timeoutMs: must be at least 1']);
  const intro = (auth: Record<string, unknown>) => ({
    authenticators: { i: { type: 'introspection', from: ['bearer'], url: 'http://127.0.0.1:1/introspect', ...auth } },
    routes: [{ path: '/ws', auth: ['i'], upstream: 'ws://127.0.0.1:9001' }],
  });
  t.same(problems(intro({ clientId: 'gw', clientSecret: 's', cacheTtlSec: 0, timeoutMs: 100 })), [], 'introspection is accepted');
  t.same(problems(intro({ clientSecret: 's' })), ['authenticators.i.clientId: required with clientSecret']);
});
