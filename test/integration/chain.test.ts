// SPEC 2.2 (module), 2.3 (auth chain, require, origins), 3, 4, 7, 9: the authenticator chain and the
// checks around it, over real handshakes against a real ws upstream.
import type { IncomingMessage } from 'node:http';
import t, { type Test } from 'tap';
import { hashApiKey } from '../../src/auth/api-key.js';
import type { Identity } from '../../src/types.js';
import { assertNoLeak, assertRejected } from '../helpers/assertions.js';
import { echo, openClient } from '../helpers/client.js';
import { startGateway, startGatewayWithUpstream, type Setup } from '../helpers/gateway.js';
import { SECRET, hs256, jwtAuth } from '../helpers/tokens.js';
import { rawUpgrade } from '../helpers/upgrade.js';

const API_KEY = 'pk_live_chain_0123456789abcdefghij';
const OTHER_KEY = 'pk_live_chain_zzzzzzzzzzzzzzzzzzzz';
const claimsOf = (header: unknown) => JSON.parse(Buffer.from(String(header), 'base64url').toString()) as Record<string, unknown>;
const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });
const apiKeyAuth = () => ({ type: 'apiKey', from: ['header:x-api-key'], keys: [{ sha256: hashApiKey(API_KEY), subject: 'svc-a', claims: { scope: 'ingest' } }] });

const setup = (t: Test, authenticators: Record<string, unknown>, route: Record<string, unknown>, options: { baseDir?: string } = {}): Promise<Setup> =>
  startGatewayWithUpstream(t, (upstream) => ({ authenticators, routes: [{ path: '/chat', upstream, ...route }] }), options);

const invalid = (description: string) => `Bearer realm="portcullis", error="invalid_token", error_description="${description}"`;

// ---- the chain rule (SPEC 9) ----

t.test('chain [jwt, apiKey]: a valid api key alone is accepted by the second authenticator', async (t) => {
  const s = await setup(t, { jwt: jwtAuth(), key: apiKeyAuth() }, { auth: ['jwt', 'key'] });
  const ws = await openClient(t, s.gw.url('/chat'), [], { 'x-api-key': API_KEY });
  t.equal(await echo(ws, 'hi'), 'hi');
  const seen = s.upstream.seen[0]!;
  t.equal(seen.headers['x-auth-subject'], 'svc-a');
  t.same(claimsOf(seen.headers['x-auth-claims']), { scope: 'ingest' });
  t.equal(seen.headers['x-api-key'], undefined, 'the used credential is stripped');
  t.match(s.gw.logs().find((l) => l.status === 101), { authenticator: 'key', subject: 'svc-a' });
  assertNoLeak(t, s.gw, [API_KEY]);
});

t.test('chain [jwt, apiKey]: an INVALID jwt decides even when a valid api key follows', async (t) => {
  const s = await setup(t, { jwt: jwtAuth(), key: apiKeyAuth() }, { auth: ['jwt', 'key'] });
  const forged = hs256({ sub: 'alice' }, 'another-secret-0123456789abcdef-01234567');
  const res = await rawUpgrade(s.gw.port, '/chat', { ...bearer(forged), 'x-api-key': API_KEY });
  assertRejected(t, res, s, 401, { error: 'invalid_token', error_description: 'signature invalid' }, invalid('signature invalid'));
  const expired = hs256({ sub: 'alice', exp: Math.floor(Date.now() / 1000) - 5 });
  const res2 = await rawUpgrade(s.gw.port, '/chat', { ...bearer(expired), 'x-api-key': API_KEY });
  assertRejected(t, res2, s, 401, { error: 'invalid_token', error_description: 'token expired' }, invalid('token expired'));
  assertNoLeak(t, s.gw, [API_KEY, forged, expired]);
});

t.test('chain [jwt, apiKey]: a valid jwt decides; the invalid api key beside it is not looked at', async (t) => {
  const s = await setup(t, { jwt: jwtAuth(), key: apiKeyAuth() }, { auth: ['jwt', 'key'] });
  const token = hs256({ sub: 'alice' });
  const res = await rawUpgrade(s.gw.port, '/chat', { ...bearer(token), 'x-api-key': OTHER_KEY });
  t.equal(res.status, 101);
  t.equal(s.upstream.seen[0]?.headers['x-auth-subject'], 'alice');
  t.equal(s.upstream.seen[0]?.headers['x-api-key'], OTHER_KEY, 'only the credential that was used is stripped');
});

t.test('SPEC 6.5: the log line of a rejection names the authenticator that decided', async (t) => {
  const s = await setup(t, { jwt: jwtAuth(), key: apiKeyAuth() }, { auth: ['jwt', 'key'] });
  const forged = hs256({ sub: 'alice' }, 'another-secret-0123456789abcdef-01234567');
  const res = await rawUpgrade(s.gw.port, '/chat', { 'x-api-key': OTHER_KEY, 'X-Request-Id': 'log-key-1' });
  t.equal(res.status, 401);
  const res2 = await rawUpgrade(s.gw.port, '/chat', { ...bearer(forged), 'X-Request-Id': 'log-jwt-1' });
  t.equal(res2.status, 401);
  const lines = s.gw.logs();
  const keyLine = lines.find((l) => l.reqId === 'log-key-1');
  const jwtLine = lines.find((l) => l.reqId === 'log-jwt-1');
  t.match(keyLine, { route: '/chat', remoteAddress: '127.0.0.1', status: 401, reason: String, durationMs: Number });
  t.match(jwtLine, { route: '/chat', remoteAddress: '127.0.0.1', status: 401 });
  t.equal(keyLine?.authenticator, 'key', 'the api key authenticator decided');
  t.equal(jwtLine?.authenticator, 'jwt', 'the jwt authenticator decided');
  assertNoLeak(t, s.gw, [OTHER_KEY, forged]);
});

t.test('chain [apiKey, jwt]: order matters; an invalid api key decides', async (t) => {
  const s = await setup(t, { jwt: jwtAuth(), key: apiKeyAuth() }, { auth: ['key', 'jwt'] });
  const token = hs256({ sub: 'alice' });
  const res = await rawUpgrade(s.gw.port, '/chat', { ...bearer(token), 'x-api-key': OTHER_KEY });
  assertRejected(t, res, s, 401, { error: 'invalid_token', error_description: 'api key invalid' }, invalid('api key invalid'));
  assertNoLeak(t, s.gw, [OTHER_KEY, token]);
});

t.test('chain: no credential for anyone is 401 with the bare challenge and error "unauthorized"', async (t) => {
  const s = await setup(t, { jwt: jwtAuth(), key: apiKeyAuth() }, { auth: ['jwt', 'key'] });
  const res = await rawUpgrade(s.gw.port, '/chat', { 'X-Request-Id': 'chain-none-1' });
  assertRejected(t, res, s, 401, { error: 'unauthorized', error_description: 'credentials required' }, 'Bearer realm="portcullis"');
  t.equal(res.headers['x-request-id'], 'chain-none-1');
  t.match(s.gw.logs().find((l) => l.status === 401), { reqId: 'chain-none-1', route: '/chat' });
  // An empty Authorization or a bare scheme is not a credential either.
  const res2 = await rawUpgrade(s.gw.port, '/chat', { Authorization: 'Bearer' });
  assertRejected(t, res2, s, 401, { error: 'unauthorized', error_description: 'credentials required' }, 'Bearer realm="portcullis"');
});

t.test('a public route (auth: []) accepts anonymously', async (t) => {
  const s = await setup(t, {}, { auth: [] });
  const res = await rawUpgrade(s.gw.port, '/chat', { 'X-Auth-Subject': 'mallory' });
  t.equal(res.status, 101);
  const seen = s.upstream.seen[0]!;
  t.notOk('x-auth-subject' in seen.headers, 'no subject header for an anonymous identity');
  t.equal(seen.headers['x-auth-claims'], Buffer.from('{}').toString('base64url'));
});

// ---- module authenticators (SPEC 2.2) ----

const MODULE = `
export default async function handler(request, socket, head) {
  if (typeof socket.write !== 'function' || !Buffer.isBuffer(head)) throw new Error('bad arguments');
  switch (request.headers['x-mode']) {
    case 'throw': throw new Error('kaboom: db password hunter2 at line 7');
    case 'false': return false;
    case 'true': return true;
    case 'bob': return { subject: 'bob', claims: { role: 'admin' } };
    case 'sync-bob': return { subject: 'bob' };
    default: return false;
  }
}
`;

async function moduleSetup(t: Test, route: Record<string, unknown> = {}): Promise<Setup> {
  const dir = t.testdir({ 'auth.mjs': MODULE });
  return setup(t, { mod: { type: 'module', path: 'auth.mjs' } }, { auth: ['mod'], ...route }, { baseDir: dir });
}

t.test('module: a thrown error is 500 internal_error, logged, and nothing of it reaches the client', async (t) => {
  const s = await moduleSetup(t);
  const res = await rawUpgrade(s.gw.port, '/chat', { 'x-mode': 'throw' });
  assertRejected(t, res, s, 500, { error: 'internal_error', error_description: 'internal error' }, undefined);
  t.equal(res.statusLine, 'HTTP/1.1 500 Internal Server Error');
  t.notOk(res.raw.includes('kaboom'), 'the message is not sent');
  t.notOk(res.raw.includes('hunter2'));
  t.notOk(/\bat .*\.mjs/.test(res.raw), 'no stack is sent');
  const line = s.gw.logs().find((l) => l.status === 500);
  t.ok(line, 'the rejection is logged');
  t.match(line, { route: '/chat', code: 'GW_ERR_INTERNAL', cause: { message: /kaboom/ } }, 'the error is logged for the operator');
  t.notOk(JSON.stringify(line).includes('"stack"'), 'the log line carries no stack either');
  t.equal(line?.authenticator, 'mod', 'SPEC 6.5: the line names the authenticator');
  // The gateway keeps serving.
  t.equal((await rawUpgrade(s.gw.port, '/chat', { 'x-mode': 'true' })).status, 101);
});

t.test('module: false is 401', async (t) => {
  const s = await moduleSetup(t);
  const res = await rawUpgrade(s.gw.port, '/chat', { 'x-mode': 'false' });
  t.equal(res.status, 401);
  t.ok(res.headers['www-authenticate']?.startsWith('Bearer realm="portcullis"'), 'a Bearer challenge on the 401');
  t.equal(JSON.parse(res.body).error_description, 'rejected by upgrade handler');
  t.ok(res.closed);
  t.equal(s.upstream.seen.length, 0);
});

t.test('module: true accepts with the anonymous identity', async (t) => {
  const s = await moduleSetup(t);
  const accepted: Identity[] = [];
  s.gw.gateway.on('accepted', (_req, identity) => accepted.push(identity));
  const res = await rawUpgrade(s.gw.port, '/chat', { 'x-mode': 'true', 'X-Auth-Subject': 'mallory' });
  t.equal(res.status, 101);
  const seen = s.upstream.seen[0]!;
  t.notOk('x-auth-subject' in seen.headers, 'no x-auth-subject upstream');
  t.equal(seen.headers['x-auth-claims'], Buffer.from('{}').toString('base64url'), 'claims are base64url of {}');
  t.same(accepted[0], { subject: null, authenticator: 'mod', claims: {} });
});

t.test('module: an identity object is what the upstream sees', async (t) => {
  const s = await moduleSetup(t);
  const accepted: Identity[] = [];
  s.gw.gateway.on('accepted', (_req, identity) => accepted.push(identity));
  const res = await rawUpgrade(s.gw.port, '/chat', { 'x-mode': 'bob', 'X-Auth-Subject': 'mallory' });
  t.equal(res.status, 101);
  const seen = s.upstream.seen[0]!;
  t.equal(seen.headers['x-auth-subject'], 'bob');
  t.same(claimsOf(seen.headers['x-auth-claims']), { role: 'admin' });
  t.match(accepted[0], { subject: 'bob', authenticator: 'mod', claims: { role: 'admin' } });
});

t.test('module: a missing file or a module without a default function is a startup error', async (t) => {
  const dir = t.testdir({ 'named.mjs': 'export const handler = () => true;\n' });
  await t.rejects(startGateway(t, { authenticators: { mod: { type: 'module', path: 'nope.mjs' } }, routes: [{ path: '/chat', auth: ['mod'] }] }, { baseDir: dir }), {
    name: 'ConfigError',
    message: /authenticators\.mod\.path/,
  });
  await t.rejects(startGateway(t, { authenticators: { mod: { type: 'module', path: 'named.mjs' } }, routes: [{ path: '/chat', auth: ['mod'] }] }, { baseDir: dir }), {
    message: /default export/,
  });
});

// ---- require (SPEC 2.3, 9) ----

t.test('require { scope: "chat" }: space-separated or array claim passes; otherwise 403 insufficient_scope', async (t) => {
  const s = await setup(t, { jwt: jwtAuth() }, { auth: ['jwt'], require: { scope: 'chat' } });
  const pass = [hs256({ sub: 'a', scope: 'read chat' }), hs256({ sub: 'b', scope: 'chat' }), hs256({ sub: 'c', scope: ['write', 'chat'] })];
  for (const token of pass) t.equal((await rawUpgrade(s.gw.port, '/chat', bearer(token))).status, 101);
  t.same(s.upstream.seen.map((x) => x.headers['x-auth-subject']), ['a', 'b', 'c']);
  const fail = [hs256({ sub: 'd', scope: 'read' }), hs256({ sub: 'e', scope: 'chatty read' }), hs256({ sub: 'f' }), hs256({ sub: 'g', scope: 'read,chat' }), hs256({ sub: 'h', scope: ['read'] })];
  for (const token of fail) {
    const res = await rawUpgrade(s.gw.port, '/chat', bearer(token));
    assertRejected(
      t,
      res,
      s,
      403,
      { error: 'insufficient_scope', error_description: 'required claims missing' },
      'Bearer realm="portcullis", error="insufficient_scope", error_description="required claims missing"',
      3,
    );
    t.equal(res.statusLine, 'HTTP/1.1 403 Forbidden');
  }
  assertNoLeak(t, s.gw, [...pass, ...fail]);
});

t.test('require { role: ["admin","ops"] } is any-of', async (t) => {
  const s = await setup(t, { jwt: jwtAuth() }, { auth: ['jwt'], require: { role: ['admin', 'ops'], scope: 'chat' } });
  const ok = [hs256({ sub: 'a', role: 'ops', scope: 'chat' }), hs256({ sub: 'b', role: ['viewer', 'admin'], scope: 'chat' }), hs256({ sub: 'c', role: 'viewer admin', scope: 'chat' })];
  for (const token of ok) t.equal((await rawUpgrade(s.gw.port, '/chat', bearer(token))).status, 101);
  const no = [hs256({ sub: 'd', role: 'viewer', scope: 'chat' }), hs256({ sub: 'e', role: 'admin' }), hs256({ sub: 'f', role: 'Admin', scope: 'chat' })];
  for (const token of no) {
    const res = await rawUpgrade(s.gw.port, '/chat', bearer(token));
    t.equal(res.status, 403);
    t.equal(JSON.parse(res.body).error, 'insufficient_scope');
  }
  t.equal(s.upstream.seen.length, 3, 'only the three that passed reached the upstream');
});

// ---- origins (SPEC 2.3, 3 step 4, 9) ----

t.test('origins: exact (case-insensitive) and *.example.com pass, others are 403 before authentication', async (t) => {
  const s = await setup(t, { jwt: jwtAuth() }, { auth: ['jwt'], origins: ['http://localhost:3000', '*.example.com'] });
  const token = hs256({ sub: 'alice' });
  const allowed = ['http://localhost:3000', 'HTTP://LOCALHOST:3000', 'https://app.example.com', 'http://a.b.example.com:8443', undefined];
  for (const origin of allowed) {
    const res = await rawUpgrade(s.gw.port, '/chat', { ...bearer(token), Origin: origin });
    t.equal(res.status, 101, `origin ${origin ?? '(none)'} passes`);
  }
  const refused = ['https://evil.example', 'https://example.com', 'https://evilexample.com', 'http://localhost:3001', 'https://localhost:3000', 'null', 'https://example.com.evil.io'];
  for (const origin of refused) {
    const res = await rawUpgrade(s.gw.port, '/chat', { ...bearer(token), Origin: origin });
    assertRejected(t, res, s, 403, { error: 'forbidden', error_description: 'origin not allowed' }, undefined, allowed.length);
  }
  // The origin check comes before authentication: no credential from a bad origin is 403, not 401.
  const res = await rawUpgrade(s.gw.port, '/chat', { Origin: 'https://evil.example' });
  t.equal(res.status, 403);
  assertNoLeak(t, s.gw, [token]);
});

// ---- onWebSocketUpgrade (SPEC 7) ----

t.test('onWebSocketUpgrade: chainable, runs after the chain, in order; false vetoes with 401', async (t) => {
  const s = await setup(t, { jwt: jwtAuth() }, { auth: ['jwt'] });
  const calls: string[] = [];
  const returned = s.gw.gateway
    .onWebSocketUpgrade((req: IncomingMessage) => {
      calls.push(`first:${String(req.headers['x-veto'] ?? '')}`);
      return req.headers['x-veto'] !== 'yes';
    })
    .onWebSocketUpgrade(() => {
      calls.push('second');
      return true;
    });
  t.equal(returned, s.gw.gateway, 'onWebSocketUpgrade returns the gateway');
  // The chain rejects first: the handlers are not called.
  const none = await rawUpgrade(s.gw.port, '/chat');
  t.equal(none.status, 401);
  t.same(calls, [], 'handlers do not run when the chain rejects');
  const token = hs256({ sub: 'alice' });
  const vetoed = await rawUpgrade(s.gw.port, '/chat', { ...bearer(token), 'x-veto': 'yes' });
  t.equal(vetoed.status, 401);
  t.ok(vetoed.headers['www-authenticate']?.startsWith('Bearer realm="portcullis"'));
  t.ok(vetoed.closed);
  t.same(calls, ['first:yes'], 'the veto stops the rest');
  t.equal(s.upstream.seen.length, 0);
  const ok = await rawUpgrade(s.gw.port, '/chat', bearer(token));
  t.equal(ok.status, 101);
  t.same(calls, ['first:yes', 'first:', 'second']);
  t.equal(s.upstream.seen[0]?.headers['x-auth-subject'], 'alice');
  assertNoLeak(t, s.gw, [token]);
});

t.test('onWebSocketUpgrade: an identity object enriches the identity; the upstream sees it', async (t) => {
  const s = await setup(t, { jwt: jwtAuth() }, { auth: ['jwt'] });
  const accepted: Identity[] = [];
  s.gw.gateway.on('accepted', (_req, identity) => accepted.push(identity));
  s.gw.gateway.onWebSocketUpgrade(async () => ({ claims: { tenant: 't-42' } })).onWebSocketUpgrade(() => ({ subject: 'alice@t-42' }));
  const token = hs256({ sub: 'alice', scope: 'chat' });
  const res = await rawUpgrade(s.gw.port, '/chat', bearer(token));
  t.equal(res.status, 101);
  const seen = s.upstream.seen[0]!;
  t.equal(seen.headers['x-auth-subject'], 'alice@t-42');
  t.match(claimsOf(seen.headers['x-auth-claims']), { sub: 'alice', scope: 'chat', tenant: 't-42' });
  t.match(accepted[0], { subject: 'alice@t-42', authenticator: 'jwt', claims: { tenant: 't-42', scope: 'chat' } }, 'authenticator is the one that decided');
});

t.test('onWebSocketUpgrade: a throwing handler is 500 and the gateway keeps serving', async (t) => {
  const s = await setup(t, { jwt: jwtAuth() }, { auth: ['jwt'] });
  let fail = true;
  s.gw.gateway.onWebSocketUpgrade(() => {
    if (fail) throw new Error('handler exploded');
    return true;
  });
  const token = hs256({ sub: 'alice' });
  const res = await rawUpgrade(s.gw.port, '/chat', bearer(token));
  assertRejected(t, res, s, 500, { error: 'internal_error', error_description: 'internal error' }, undefined);
  t.notOk(res.raw.includes('exploded'));
  fail = false;
  t.equal((await rawUpgrade(s.gw.port, '/chat', bearer(token))).status, 101);
  assertNoLeak(t, s.gw, [token, SECRET]);
});
