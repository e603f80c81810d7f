// SPEC 2.2 (introspection), 4, 9: OAuth 2.0 token introspection (RFC 7662) against a real HTTP
// introspection endpoint on 127.0.0.1 that counts its hits and records what it received, in front of a
// real ws upstream. No mocks.
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import t, { type Test } from 'tap';
import { WebSocket } from 'ws';
import { assertInvalidToken, assertNoLeak, assertRejected } from '../helpers/assertions.js';
import { echo, openClient } from '../helpers/client.js';
import { startGatewayWithUpstream, type Setup } from '../helpers/gateway.js';
import { freePort, listenLocal, sleep } from '../helpers/net.js';
import { rawUpgrade } from '../helpers/upgrade.js';

// ---------------------------------------------------------------------------------------------------------
// A real introspection endpoint

interface Hit {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
  /** The `token` form field. */
  token: string | null;
}

interface Endpoint {
  url: string;
  hits: Hit[];
  /** Hits for one token. */
  hitsFor(token: string): number;
}

type Answer = (hit: Hit, res: ServerResponse) => void;

const json = (res: ServerResponse, body: unknown, status = 200) =>
  res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify(body));

/** An introspection endpoint answering `answer` (by default: the JSON in `table` for the token, else inactive). */
async function startEndpoint(t: Test, answer: Answer): Promise<Endpoint> {
  const hits: Hit[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (body += chunk));
    req.on('end', () => {
      const hit: Hit = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body, token: new URLSearchParams(body).get('token') };
      hits.push(hit);
      answer(hit, res);
    });
  });
  const port = await listenLocal(t, server);
  return {
    url: `http://127.0.0.1:${port}/oauth2/introspect`,
    hits,
    hitsFor: (token) => hits.filter((h) => h.token === token).length,
  };
}

/** Answers from a table: token → the JSON to send; unknown tokens are `{ active: false }`. */
const fromTable = (table: Record<string, Record<string, unknown>>): Answer => (hit, res) => json(res, table[hit.token ?? ''] ?? { active: false });

const now = () => Math.floor(Date.now() / 1000);
const claimsOf = (header: unknown) => JSON.parse(Buffer.from(String(header), 'base64url').toString()) as Record<string, unknown>;

const TOKEN = 'opaque-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';
const TOKEN_B = 'opaque-BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB';
const INACTIVE = 'opaque-IIIIIIIIIIIIIIIIIIIIIIIIIIIIIIII';

const table = () => ({
  [TOKEN]: { active: true, sub: 'alice', scope: 'chat:read chat:write', client_id: 'web', exp: now() + 3600 },
  [TOKEN_B]: { active: true, username: 'bob', scope: 'chat:read' },
});

/** A gateway whose `/chat` route uses an introspection authenticator on `endpoint`. */
function setup(t: Test, endpoint: Endpoint, auth: Record<string, unknown> = {}, route: Record<string, unknown> = {}): Promise<Setup> {
  return startGatewayWithUpstream(t, (upstream) => ({
    authenticators: { opaque: { type: 'introspection', from: ['bearer', 'query:access_token'], url: endpoint.url, ...auth } },
    routes: [{ path: '/chat', auth: ['opaque'], upstream, ...route }],
  }));
}

const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });

// ---------------------------------------------------------------------------------------------------------

t.test('active → 101: the endpoint gets a form POST with the token; the upstream gets the identity, not the token', async (t) => {
  const endpoint = await startEndpoint(t, fromTable(table()));
  const s = await setup(t, endpoint);
  const ws = await openClient(t, s.gw.url('/chat?room=1'), [], bearer(TOKEN));
  t.equal(await echo(ws, 'hi'), 'hi');

  t.equal(endpoint.hits.length, 1);
  const hit = endpoint.hits[0]!;
  t.equal(hit.method, 'POST');
  t.equal(hit.url, '/oauth2/introspect');
  t.equal(hit.headers['content-type'], 'application/x-www-form-urlencoded');
  t.equal(hit.body, `token=${TOKEN}`, 'exactly token=<token>');
  t.equal(hit.headers.authorization, undefined, 'no client credentials configured: no Authorization');

  const seen = s.upstream.seen[0]!;
  t.equal(seen.headers['x-auth-subject'], 'alice');
  t.match(claimsOf(seen.headers['x-auth-claims']), { active: true, sub: 'alice', scope: 'chat:read chat:write', client_id: 'web' }, 'claims = the response');
  t.equal(seen.headers.authorization, undefined, 'the bearer token is stripped');
  t.equal(seen.url, '/chat?room=1');
  t.match(s.gw.logs().find((l) => l.status === 101), { authenticator: 'opaque', subject: 'alice' });
  assertNoLeak(t, s.gw, [TOKEN]);
});

t.test('subject falls back to username; the query source works and is stripped', async (t) => {
  const endpoint = await startEndpoint(t, fromTable(table()));
  const s = await setup(t, endpoint);
  const res = await rawUpgrade(s.gw.port, `/chat?x=1&access_token=${TOKEN_B}`);
  t.equal(res.status, 101);
  t.equal(s.upstream.seen[0]?.headers['x-auth-subject'], 'bob');
  t.equal(s.upstream.seen[0]?.url, '/chat?x=1');
  t.equal(endpoint.hits[0]?.token, TOKEN_B);
});

t.test('no sub nor username: accepted with a null subject (no x-auth-subject upstream)', async (t) => {
  const endpoint = await startEndpoint(t, (_hit, res) => json(res, { active: true, scope: 'svc' }));
  const s = await setup(t, endpoint);
  t.equal((await rawUpgrade(s.gw.port, '/chat', bearer(TOKEN))).status, 101);
  t.equal(s.upstream.seen[0]?.headers['x-auth-subject'], undefined);
  t.match(claimsOf(s.upstream.seen[0]?.headers['x-auth-claims']), { active: true, scope: 'svc' });
});

t.test('the response claims serve `require`', async (t) => {
  const endpoint = await startEndpoint(t, fromTable(table()));
  const s = await setup(t, endpoint, {}, { require: { scope: 'chat:write' } });
  t.equal((await rawUpgrade(s.gw.port, '/chat', bearer(TOKEN))).status, 101);
  const res = await rawUpgrade(s.gw.port, '/chat', bearer(TOKEN_B));
  t.equal(res.status, 403, 'bob has only chat:read');
  t.equal(JSON.parse(res.body).error, 'insufficient_scope');
});

t.test('active: false → 401 token inactive, byte for byte', async (t) => {
  const endpoint = await startEndpoint(t, fromTable(table()));
  const s = await setup(t, endpoint);
  const res = await rawUpgrade(s.gw.port, '/chat', { ...bearer(INACTIVE), 'X-Request-Id': 'req-inactive-1' });
  const body = '{"error":"invalid_token","error_description":"token inactive"}';
  t.equal(
    res.raw,
    'HTTP/1.1 401 Unauthorized\r\n' +
      'Connection: close\r\n' +
      'Content-Type: application/json\r\n' +
      `Content-Length: ${body.length}\r\n` +
      'Cache-Control: no-store\r\n' +
      'X-Request-Id: req-inactive-1\r\n' +
      'WWW-Authenticate: Bearer realm="portcullis", error="invalid_token", error_description="token inactive"\r\n' +
      '\r\n' +
      body,
  );
  assertInvalidToken(t, res, 'token inactive', s, [INACTIVE]);
  t.match(s.gw.logs().find((l) => l.status === 401), { code: 'GW_ERR_TOKEN_INACTIVE', authenticator: 'opaque' });
});

t.test('active but exp in the past → 401 token expired', async (t) => {
  const endpoint = await startEndpoint(t, (_hit, res) => json(res, { active: true, sub: 'alice', exp: now() - 5 }));
  const s = await setup(t, endpoint);
  const res = await rawUpgrade(s.gw.port, '/chat', bearer(TOKEN));
  assertInvalidToken(t, res, 'token expired', s, [TOKEN]);
});

t.test('no credential → the bare challenge, the endpoint is not called', async (t) => {
  const endpoint = await startEndpoint(t, fromTable(table()));
  const s = await setup(t, endpoint);
  const res = await rawUpgrade(s.gw.port, '/chat');
  assertRejected(t, res, s, 401, { error: 'unauthorized', error_description: 'credentials required' }, 'Bearer realm="portcullis"');
  t.equal(endpoint.hits.length, 0);
});

// ---------------------------------------------------------------------------------------------------------
// Caching

t.test('cache: a second handshake with the same token within cacheTtlSec does not hit the endpoint', async (t) => {
  const endpoint = await startEndpoint(t, fromTable(table()));
  const s = await setup(t, endpoint, { cacheTtlSec: 60 });
  for (let i = 0; i < 3; i++) t.equal((await rawUpgrade(s.gw.port, '/chat', bearer(TOKEN))).status, 101);
  t.equal(endpoint.hitsFor(TOKEN), 1, 'one introspection for three handshakes');
  t.equal(s.upstream.seen[2]?.headers['x-auth-subject'], 'alice', 'the cached identity is the same');
  t.match(claimsOf(s.upstream.seen[2]?.headers['x-auth-claims']), { scope: 'chat:read chat:write' });
  // Another token is its own entry.
  t.equal((await rawUpgrade(s.gw.port, '/chat', bearer(TOKEN_B))).status, 101);
  t.equal(endpoint.hitsFor(TOKEN_B), 1);
  t.equal(endpoint.hits.length, 2);
});

t.test('cache: the default (30 s) caches too', async (t) => {
  const endpoint = await startEndpoint(t, fromTable(table()));
  const s = await setup(t, endpoint);
  t.equal((await rawUpgrade(s.gw.port, '/chat', bearer(TOKEN))).status, 101);
  t.equal((await rawUpgrade(s.gw.port, '/chat', bearer(TOKEN))).status, 101);
  t.equal(endpoint.hits.length, 1);
});

t.test('cache: a negative answer is cached too', async (t) => {
  const endpoint = await startEndpoint(t, fromTable(table()));
  const s = await setup(t, endpoint, { cacheTtlSec: 60 });
  for (let i = 0; i < 3; i++) assertInvalidToken(t, await rawUpgrade(s.gw.port, '/chat', bearer(INACTIVE)), 'token inactive', s, [INACTIVE]);
  t.equal(endpoint.hitsFor(INACTIVE), 1, 'one introspection for three refusals');
});

t.test('cache: cacheTtlSec 0 turns it off', async (t) => {
  const endpoint = await startEndpoint(t, fromTable(table()));
  const s = await setup(t, endpoint, { cacheTtlSec: 0 });
  t.equal((await rawUpgrade(s.gw.port, '/chat', bearer(TOKEN))).status, 101);
  t.equal((await rawUpgrade(s.gw.port, '/chat', bearer(TOKEN))).status, 101);
  assertInvalidToken(t, await rawUpgrade(s.gw.port, '/chat', bearer(INACTIVE)), 'token inactive', s, [INACTIVE], 2);
  assertInvalidToken(t, await rawUpgrade(s.gw.port, '/chat', bearer(INACTIVE)), 'token inactive', s, [INACTIVE], 2);
  t.equal(endpoint.hitsFor(TOKEN), 2);
  t.equal(endpoint.hitsFor(INACTIVE), 2);
});

t.test('cache: entries end after cacheTtlSec; a revoked token is then refused', async (t) => {
  let active = true;
  const endpoint = await startEndpoint(t, (_hit, res) => json(res, active ? { active: true, sub: 'alice' } : { active: false }));
  const s = await setup(t, endpoint, { cacheTtlSec: 1 });
  t.equal((await rawUpgrade(s.gw.port, '/chat', bearer(TOKEN))).status, 101);
  active = false; // revoked at the authorization server
  t.equal((await rawUpgrade(s.gw.port, '/chat', bearer(TOKEN))).status, 101, 'still served from the cache');
  t.equal(endpoint.hits.length, 1);
  await sleep(1100);
  assertInvalidToken(t, await rawUpgrade(s.gw.port, '/chat', bearer(TOKEN)), 'token inactive', s, [TOKEN], 2);
  t.equal(endpoint.hits.length, 2, 'asked again after the ttl');
});

t.test('cache: never past the token exp (exp 1 s away, cacheTtlSec 60)', async (t) => {
  const exp = Math.ceil(Date.now() / 1000) + 1;
  const endpoint = await startEndpoint(t, (_hit, res) => json(res, { active: true, sub: 'alice', exp }));
  const s = await setup(t, endpoint, { cacheTtlSec: 60 });
  t.equal((await rawUpgrade(s.gw.port, '/chat', bearer(TOKEN))).status, 101);
  t.equal(endpoint.hits.length, 1);
  await sleep(exp * 1000 - Date.now() + 50);
  const res = await rawUpgrade(s.gw.port, '/chat', bearer(TOKEN));
  t.equal(endpoint.hits.length, 2, 'not served from the cache after exp');
  assertInvalidToken(t, res, 'token expired', s, [TOKEN], 1);
});

// ---------------------------------------------------------------------------------------------------------
// Client credentials

t.test('client credentials arrive as HTTP Basic', async (t) => {
  const endpoint = await startEndpoint(t, fromTable(table()));
  const s = await setup(t, endpoint, { clientId: 'portcullis', clientSecret: 'introspect-secret-1' });
  t.equal((await rawUpgrade(s.gw.port, '/chat', bearer(TOKEN))).status, 101);
  const hit = endpoint.hits[0]!;
  t.equal(hit.headers.authorization, `Basic ${Buffer.from('portcullis:introspect-secret-1').toString('base64')}`);
  t.equal(hit.body, `token=${TOKEN}`, 'the credentials are not in the body');
  assertNoLeak(t, s.gw, [TOKEN, 'introspect-secret-1']);
});

t.test('client credentials are form-encoded before Basic (RFC 6749 2.3.1)', async (t) => {
  const endpoint = await startEndpoint(t, fromTable(table()));
  const s = await setup(t, endpoint, { clientId: 'gw:1', clientSecret: 'p@ss word' });
  t.equal((await rawUpgrade(s.gw.port, '/chat', bearer(TOKEN))).status, 101);
  const basic = Buffer.from(String(endpoint.hits[0]?.headers.authorization).replace(/^Basic /, ''), 'base64').toString();
  t.equal(basic, 'gw%3A1:p%40ss+word');
});

t.test('clientId alone is sent as client_id in the form', async (t) => {
  const endpoint = await startEndpoint(t, fromTable(table()));
  const s = await setup(t, endpoint, { clientId: 'public-gw' });
  t.equal((await rawUpgrade(s.gw.port, '/chat', bearer(TOKEN))).status, 101);
  t.equal(endpoint.hits[0]?.headers.authorization, undefined);
  t.same(Object.fromEntries(new URLSearchParams(endpoint.hits[0]?.body)), { token: TOKEN, client_id: 'public-gw' });
});

// ---------------------------------------------------------------------------------------------------------
// The endpoint failing: 503, never cached

const unavailable = { error: 'unavailable', error_description: 'authentication backend unavailable' };

t.test('endpoint down → 503', async (t) => {
  const port = await freePort();
  const s = await setup(t, { url: `http://127.0.0.1:${port}/introspect`, hits: [], hitsFor: () => 0 });
  const res = await rawUpgrade(s.gw.port, '/chat', bearer(TOKEN));
  assertRejected(t, res, s, 503, unavailable, undefined);
  const line = s.gw.logs().find((l) => l.status === 503);
  t.match(line, { code: 'GW_ERR_AUTH_UNAVAILABLE', authenticator: 'opaque', cause: { message: /introspection: unreachable/ } });
  assertNoLeak(t, s.gw, [TOKEN], res);
});

t.test('slow endpoint beyond timeoutMs → 503 in time; not cached', async (t) => {
  let delay = 3000;
  const endpoint = await startEndpoint(t, (_hit, res) => {
    const timer = setTimeout(() => json(res, { active: true, sub: 'alice' }), delay);
    res.on('close', () => clearTimeout(timer));
  });
  const s = await setup(t, endpoint, { timeoutMs: 300 });
  const started = Date.now();
  const res = await rawUpgrade(s.gw.port, '/chat', bearer(TOKEN));
  const took = Date.now() - started;
  assertRejected(t, res, s, 503, unavailable, undefined);
  t.ok(took >= 250 && took < 1500, `answered after the timeout, well before the endpoint (${took} ms)`);
  t.match(s.gw.logs().find((l) => l.status === 503), { cause: { message: 'introspection: no answer within 300 ms' } });
  // A failure is not a verdict: the next handshake asks again, and succeeds when the endpoint is quick.
  delay = 0;
  t.equal((await rawUpgrade(s.gw.port, '/chat', bearer(TOKEN))).status, 101);
  t.equal(endpoint.hits.length, 2);
});

const badAnswers: [string, Answer][] = [
  ['non-JSON', (_hit, res) => res.writeHead(200, { 'Content-Type': 'text/html' }).end('<html>login</html>')],
  ['a JSON array', (_hit, res) => json(res, [{ active: true }])],
  ['JSON without a boolean active', (_hit, res) => json(res, { active: 'true', sub: 'alice' })],
  ['a 500', (_hit, res) => json(res, { active: true, sub: 'alice' }, 500)],
  ['a 401 (wrong client credentials)', (_hit, res) => json(res, { error: 'invalid_client' }, 401)],
  ['a redirect', (_hit, res) => res.writeHead(302, { Location: '/elsewhere' }).end()],
  ['a huge body', (_hit, res) => json(res, { active: true, sub: 'alice', pad: 'x'.repeat(100_000) })],
];
for (const [name, answer] of badAnswers) {
  t.test(`endpoint answers ${name} → 503`, async (t) => {
    const endpoint = await startEndpoint(t, answer);
    const s = await setup(t, endpoint);
    const res = await rawUpgrade(s.gw.port, '/chat', bearer(TOKEN));
    assertRejected(t, res, s, 503, unavailable, undefined);
    t.equal((await rawUpgrade(s.gw.port, '/chat', bearer(TOKEN))).status, 503, 'not cached as a verdict');
    t.equal(endpoint.hits.length, 2);
    assertNoLeak(t, s.gw, [TOKEN], res);
  });
}

// ---------------------------------------------------------------------------------------------------------
// verifyToken (a relay route's first-message auth) goes through the same introspection and cache

t.test('first-message auth on a relay route is introspected (and cached) like a handshake token', async (t) => {
  const endpoint = await startEndpoint(t, fromTable(table()));
  const s = await setup(t, endpoint, {}, { mode: 'relay', firstMessageAuth: { timeoutMs: 2000 } });
  const ws = await openClient(t, s.gw.url('/chat'));
  ws.send(JSON.stringify({ type: 'auth', token: TOKEN }));
  t.equal(await echo(ws, 'after-auth'), 'after-auth');
  t.equal(s.upstream.seen[0]?.headers['x-auth-subject'], 'alice');
  t.equal(endpoint.hitsFor(TOKEN), 1);

  const bad = await openClient(t, s.gw.url('/chat'));
  const closed = new Promise<number>((resolve) => bad.once('close', (code) => resolve(code)));
  bad.send(JSON.stringify({ type: 'auth', token: INACTIVE }));
  t.equal(await closed, 4401, 'an inactive token closes 4401');
  t.equal(bad.readyState, WebSocket.CLOSED);
  assertNoLeak(t, s.gw, [TOKEN, INACTIVE]);
});
