// SPEC 2.1, 2.2 (jwt), 2.3 (forwardIdentity, stripCredentials), 4, 8, 9: the jwt authenticator over
// real handshakes. Every rejection is checked on the wire (status, RFC 6750 challenge, JSON body, closed
// socket), and for the negative space: the upstream saw nothing and the log never holds the token.
import { writeFileSync } from 'node:fs';
import { createSecretKey } from 'node:crypto';
import jsonwebtoken from 'jsonwebtoken';
import t, { type Test } from 'tap';
import { WebSocket } from 'ws';
import { assertInvalidToken, assertNoLeak } from '../helpers/assertions.js';
import { echo, openClient } from '../helpers/client.js';
import { startGateway, startGatewayWithUpstream, type Setup } from '../helpers/gateway.js';
import { SECRET, hs256, jwtAuth, rsaKeys } from '../helpers/tokens.js';
import { rawUpgrade } from '../helpers/upgrade.js';

const now = () => Math.floor(Date.now() / 1000);
const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
const claimsOf = (header: unknown) => JSON.parse(Buffer.from(String(header), 'base64url').toString()) as Record<string, unknown>;
const KEYS = rsaKeys();
const rs256 = (payload: Record<string, unknown> = { sub: 'alice' }, privateKey = KEYS.privateKey) =>
  jsonwebtoken.sign({ iat: now(), exp: now() + 3600, ...payload }, privateKey, { algorithm: 'RS256' });

/** An echo upstream and a gateway with one route `/chat` guarded by the authenticator `jwt`. */
const setup = (t: Test, auth: Record<string, unknown> = jwtAuth(), route: Record<string, unknown> = {}, options: { baseDir?: string } = {}): Promise<Setup> =>
  startGatewayWithUpstream(t, (upstream) => ({ authenticators: { jwt: auth }, routes: [{ path: '/chat', auth: ['jwt'], upstream, ...route }] }), options);

const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });

t.test('SPEC 8: alg none is refused in every spelling', async (t) => {
  const s = await setup(t);
  const signed = hs256({ sub: 'alice' });
  const signature = signed.split('.')[2]!;
  const tokens: string[] = [];
  for (const alg of ['none', 'None', 'NONE', 'nOnE']) {
    const unsigned = `${b64({ alg, typ: 'JWT' })}.${b64({ sub: 'alice', iat: now(), exp: now() + 3600 })}.`;
    tokens.push(unsigned, unsigned + signature);
    for (const token of [unsigned, unsigned + signature]) {
      const res = await rawUpgrade(s.gw.port, '/chat', bearer(token));
      assertInvalidToken(t, res, 'algorithm not allowed', s, [token]);
    }
  }
  // Control: the same gateway accepts a properly signed token.
  const ok = await rawUpgrade(s.gw.port, '/chat', bearer(signed));
  t.equal(ok.status, 101);
  assertNoLeak(t, s.gw, [...tokens, signed, SECRET]);
});

t.test('SPEC 8: "none" cannot even be configured', async (t) => {
  await t.rejects(setup(t, jwtAuth({ algorithms: ['HS256', 'none'] })), { name: 'ConfigError' });
});

t.test('SPEC 8: HS256 signed with the RSA public key is refused by a publicKey authenticator (key confusion)', async (t) => {
  const s = await setup(t, { type: 'jwt', from: ['bearer'], publicKey: KEYS.publicKey, algorithms: ['RS256'] });
  const forged = hs256({ sub: 'mallory' }, KEYS.publicKey);
  // The forgery is a valid HMAC over the PEM bytes: a verifier that trusted the header would accept it.
  t.doesNotThrow(() => jsonwebtoken.verify(forged, createSecretKey(Buffer.from(KEYS.publicKey)), { algorithms: ['HS256'] }));
  const res = await rawUpgrade(s.gw.port, '/chat', bearer(forged));
  assertInvalidToken(t, res, 'algorithm not allowed', s, [forged]);
  // Control: the genuine RS256 token is accepted.
  const genuine = rs256({ sub: 'alice' });
  t.equal((await rawUpgrade(s.gw.port, '/chat', bearer(genuine))).status, 101);
  t.equal(s.upstream.seen[0]?.headers['x-auth-subject'], 'alice');
});

t.test('SPEC 8: a publicKey authenticator cannot be configured for HS256', async (t) => {
  await t.rejects(
    startGateway(t, { authenticators: { jwt: { type: 'jwt', from: ['bearer'], publicKey: KEYS.publicKey, algorithms: ['RS256', 'HS256'] } }, routes: [{ path: '/chat', auth: ['jwt'] }] }),
    { name: 'ConfigError' },
  );
});

t.test('SPEC 8: wrong iss is 401 issuer invalid', async (t) => {
  const s = await setup(t, jwtAuth({ issuer: 'https://issuer.example' }));
  const wrong = hs256({ sub: 'alice', iss: 'https://evil.example' });
  assertInvalidToken(t, await rawUpgrade(s.gw.port, '/chat', bearer(wrong)), 'issuer invalid', s, [wrong]);
  const none = hs256({ sub: 'alice' });
  assertInvalidToken(t, await rawUpgrade(s.gw.port, '/chat', bearer(none)), 'issuer invalid', s, [none]);
  const right = hs256({ sub: 'alice', iss: 'https://issuer.example' });
  t.equal((await rawUpgrade(s.gw.port, '/chat', bearer(right))).status, 101, 'control: the right issuer passes');
});

t.test('SPEC 8: wrong aud is 401 audience invalid', async (t) => {
  const s = await setup(t, jwtAuth({ audience: ['chat-api', 'chat-api-v2'] }));
  const wrong = hs256({ sub: 'alice', aud: 'billing-api' });
  assertInvalidToken(t, await rawUpgrade(s.gw.port, '/chat', bearer(wrong)), 'audience invalid', s, [wrong]);
  const wrongList = hs256({ sub: 'alice', aud: ['billing-api', 'other'] });
  assertInvalidToken(t, await rawUpgrade(s.gw.port, '/chat', bearer(wrongList)), 'audience invalid', s, [wrongList]);
  const right = hs256({ sub: 'alice', aud: ['x', 'chat-api-v2'] });
  t.equal((await rawUpgrade(s.gw.port, '/chat', bearer(right))).status, 101, 'control: one matching audience passes');
});

t.test('SPEC 8: exp in the past is 401 token expired', async (t) => {
  const s = await setup(t);
  const expired = hs256({ sub: 'alice', iat: now() - 120, exp: now() - 60 });
  assertInvalidToken(t, await rawUpgrade(s.gw.port, '/chat', bearer(expired)), 'token expired', s, [expired]);
  const justExpired = hs256({ sub: 'alice', iat: now() - 120, exp: now() - 1 });
  assertInvalidToken(t, await rawUpgrade(s.gw.port, '/chat', bearer(justExpired)), 'token expired', s, [justExpired]);
});

t.test('SPEC 8: nbf in the future is 401 token not yet valid', async (t) => {
  const s = await setup(t);
  const early = hs256({ sub: 'alice', nbf: now() + 3600 });
  assertInvalidToken(t, await rawUpgrade(s.gw.port, '/chat', bearer(early)), 'token not yet valid', s, [early]);
  const ok = hs256({ sub: 'alice', nbf: now() - 5 });
  t.equal((await rawUpgrade(s.gw.port, '/chat', bearer(ok))).status, 101, 'control: nbf in the past passes');
});

t.test('clockToleranceSec accepts a token expired 2 s ago; without it the same token is refused', async (t) => {
  const token = hs256({ sub: 'alice', iat: now() - 60, exp: now() - 2 });
  const strict = await setup(t);
  assertInvalidToken(t, await rawUpgrade(strict.gw.port, '/chat', bearer(token)), 'token expired', strict, [token]);
  const tolerant = await setup(t, jwtAuth({ clockToleranceSec: 30 }));
  const res = await rawUpgrade(tolerant.gw.port, '/chat', bearer(token));
  t.equal(res.status, 101, 'accepted within the tolerance');
  t.equal(tolerant.upstream.seen[0]?.headers['x-auth-subject'], 'alice');
  const early = hs256({ sub: 'alice', nbf: now() + 10 });
  t.equal((await rawUpgrade(tolerant.gw.port, '/chat', bearer(early))).status, 101, 'nbf 10 s ahead is within the tolerance too');
  const tooOld = hs256({ sub: 'alice', iat: now() - 600, exp: now() - 60 });
  const before = tolerant.upstream.seen.length;
  assertInvalidToken(t, await rawUpgrade(tolerant.gw.port, '/chat', bearer(tooOld)), 'token expired', tolerant, [tooOld], before);
  assertNoLeak(t, tolerant.gw, [token, early, tooOld]);
});

t.test('a connection accepted within clockToleranceSec is not torn down at once by enforceExpiry', async (t) => {
  // SPEC 2.2: clockToleranceSec makes a token expired by less than the tolerance valid. The expiry timer
  // of enforceExpiry fires at `exp`, which is already past: the connection that was just accepted is
  // destroyed immediately, so the tolerance is useless on a pipe route. A user would expect the
  // connection to live (at least until exp + tolerance).
  const s = await setup(t, jwtAuth({ clockToleranceSec: 30 }));
  const token = hs256({ sub: 'alice', iat: now() - 60, exp: now() - 2 });
  let ws: WebSocket;
  try {
    ws = await openClient(t, s.gw.url('/chat'), [], bearer(token));
  } catch (err) {
    t.fail(`handshake failed: ${(err as Error).message}`);
    return;
  }
  const closed = new Promise<string>((resolve) => ws.once('close', (code) => resolve(`closed ${code}`)));
  const outcome = await Promise.race([
    echo(ws, 'still here?').then((m) => `echo ${m}`),
    closed,
    new Promise<string>((r) => setTimeout(() => r('timeout'), 1000)),
  ]);
  t.comment(`outcome: ${outcome}`);
  t.equal(outcome, 'echo still here?', 'the accepted connection carries messages');
});

t.test('maxAgeSec: a token issued too long ago is 401 token too old', async (t) => {
  const s = await setup(t, jwtAuth({ maxAgeSec: 60 }));
  const old = hs256({ sub: 'alice', iat: now() - 3600, exp: now() + 3600 });
  assertInvalidToken(t, await rawUpgrade(s.gw.port, '/chat', bearer(old)), 'token too old', s, [old]);
  const fresh = hs256({ sub: 'alice' });
  t.equal((await rawUpgrade(s.gw.port, '/chat', bearer(fresh))).status, 101, 'control: a fresh token passes');
});

t.test('requiredClaims: a token without one of them is 401 required claim missing', async (t) => {
  const s = await setup(t, jwtAuth({ requiredClaims: ['tenant', 'sid'] }));
  const missing = hs256({ sub: 'alice', tenant: 't1' });
  assertInvalidToken(t, await rawUpgrade(s.gw.port, '/chat', bearer(missing)), 'required claim missing', s, [missing]);
  const complete = hs256({ sub: 'alice', tenant: 't1', sid: 's-9' });
  t.equal((await rawUpgrade(s.gw.port, '/chat', bearer(complete))).status, 101, 'control: all claims present passes');
  t.match(claimsOf(s.upstream.seen[0]?.headers['x-auth-claims']), { tenant: 't1', sid: 's-9' });
});

t.test('SPEC 8: bad signature is 401 signature invalid', async (t) => {
  const s = await setup(t);
  const otherKey = hs256({ sub: 'alice' }, 'another-secret-0123456789abcdef-01234567');
  assertInvalidToken(t, await rawUpgrade(s.gw.port, '/chat', bearer(otherKey)), 'signature invalid', s, [otherKey]);
  // A tampered payload under the original signature.
  const [header, , signature] = hs256({ sub: 'alice' }).split('.');
  const tampered = `${header}.${b64({ sub: 'admin', iat: now(), exp: now() + 3600 })}.${signature}`;
  assertInvalidToken(t, await rawUpgrade(s.gw.port, '/chat', bearer(tampered)), 'signature invalid', s, [tampered]);
  // A truncated signature.
  const good = hs256({ sub: 'alice' });
  const truncated = good.slice(0, -4);
  assertInvalidToken(t, await rawUpgrade(s.gw.port, '/chat', bearer(truncated)), 'signature invalid', s, [truncated]);
  assertNoLeak(t, s.gw, [SECRET]);
});

t.test('SPEC 8: malformed tokens are 401 token malformed and the gateway keeps serving', async (t) => {
  const s = await setup(t);
  const header = b64({ alg: 'HS256', typ: 'JWT' });
  const cases: [string, string][] = [
    ['two segments', `${header}.${b64({ sub: 'alice' })}`],
    ['garbage', 'garbage'],
    ['not base64url', '####.$$$$.%%%%'],
    ['base64 that is not JSON', 'aaaa.bbbb.cccc'],
    ['payload that is not JSON', `${header}.${Buffer.from('not json').toString('base64url')}.c2ln`],
    ['four segments', `${header}.${b64({ sub: 'alice' })}.c2ln.extra`],
    ['dots only', '...'],
  ];
  for (const [name, token] of cases) {
    const res = await rawUpgrade(s.gw.port, '/chat', bearer(token));
    t.equal(res.headers['www-authenticate']?.includes('token malformed'), true, name);
    assertInvalidToken(t, res, 'token malformed', s, []);
  }
  // Still serving, and the token leaks nowhere.
  const good = hs256({ sub: 'alice' });
  t.equal((await rawUpgrade(s.gw.port, '/chat', bearer(good))).status, 101);
  assertNoLeak(t, s.gw, [good, '####.$$$$.%%%%', `${header}.${b64({ sub: 'alice' })}.c2ln.extra`]);
});

t.test('SPEC 9: a signed token above 8 KiB is 401 token too large (not 431); 8 KiB exactly passes', async (t) => {
  const s = await setup(t);
  /** A correctly signed token of exactly `length` characters. */
  const tokenOfLength = (length: number): string => {
    const exp = now() + 3600;
    const start = Math.floor((length * 3) / 4) - 120;
    for (let n = start; n < start + 60; n++) {
      const token = hs256({ sub: 'alice', iat: exp - 3600, exp, pad: 'x'.repeat(n) });
      if (token.length === length) return token;
    }
    throw new Error(`no token of length ${length}`);
  };
  const big = tokenOfLength(8193);
  const fits = tokenOfLength(8192);
  const huge = hs256({ sub: 'alice', pad: 'y'.repeat(10000) });
  t.ok(huge.length > 8192 && huge.length < 15000, 'huge still fits the 16 KiB header limit');
  for (const token of [big, huge]) {
    const res = await rawUpgrade(s.gw.port, '/chat', bearer(token));
    assertInvalidToken(t, res, 'token too large', s, [token]);
    t.notOk(res.raw.includes(token.slice(0, 64)), 'the response does not quote the token');
  }
  const res = await rawUpgrade(s.gw.port, '/chat', bearer(fits));
  t.equal(res.status, 101, 'a token of exactly 8192 bytes is verified and accepted');
  assertNoLeak(t, s.gw, [big.slice(40, 200), huge.slice(40, 200), fits.slice(40, 200)]);
});

t.test('RS256 with publicKey inline', async (t) => {
  const s = await setup(t, { type: 'jwt', from: ['bearer'], publicKey: KEYS.publicKey, algorithms: ['RS256'] });
  const token = rs256({ sub: 'alice', scope: 'chat' });
  t.equal((await rawUpgrade(s.gw.port, '/chat', bearer(token))).status, 101);
  t.equal(s.upstream.seen[0]?.headers['x-auth-subject'], 'alice');
  const other = rsaKeys();
  const forged = rs256({ sub: 'alice' }, other.privateKey);
  assertInvalidToken(t, await rawUpgrade(s.gw.port, '/chat', bearer(forged)), 'signature invalid', s, [forged], 1);
  t.equal(s.upstream.seen.length, 1, 'only the genuine token reached the upstream');
  assertNoLeak(t, s.gw, [token]);
});

t.test('RS256 with publicKey as file:key.pem relative to baseDir', async (t) => {
  const dir = t.testdir({ keys: { 'key.pem': KEYS.publicKey } });
  const s = await setup(t, { type: 'jwt', from: ['bearer'], publicKey: 'file:keys/key.pem', algorithms: ['RS256'] }, {}, { baseDir: dir });
  const token = rs256({ sub: 'carol' });
  t.equal((await rawUpgrade(s.gw.port, '/chat', bearer(token))).status, 101);
  t.equal(s.upstream.seen[0]?.headers['x-auth-subject'], 'carol');
  const hs = hs256({ sub: 'carol' }, KEYS.publicKey);
  assertInvalidToken(t, await rawUpgrade(s.gw.port, '/chat', bearer(hs)), 'algorithm not allowed', s, [hs], 1);
  // The path is resolved against baseDir, not the working directory: a missing file is a config error.
  await t.rejects(
    startGateway(t, { authenticators: { jwt: { type: 'jwt', from: ['bearer'], publicKey: 'file:keys/nope.pem', algorithms: ['RS256'] } }, routes: [{ path: '/chat', auth: ['jwt'] }] }, { baseDir: dir }),
    { name: 'ConfigError', message: /publicKey/ },
  );
  writeFileSync(`${dir}/keys/bad.pem`, 'not a pem');
  await t.rejects(
    startGateway(t, { authenticators: { jwt: { type: 'jwt', from: ['bearer'], publicKey: 'file:keys/bad.pem', algorithms: ['RS256'] } }, routes: [{ path: '/chat', auth: ['jwt'] }] }, { baseDir: dir }),
    { name: 'ConfigError', message: /publicKey/ },
  );
});

// ---- credential sources (SPEC 2.1) and stripCredentials (SPEC 9) ----

t.test('query:access_token is removed from the URL upstream; the other parameters are kept', async (t) => {
  const s = await setup(t, jwtAuth({ from: ['query:access_token'] }));
  const token = hs256({ sub: 'alice' });
  const ws = await openClient(t, s.gw.url(`/chat?room=1&access_token=${token}&lang=en`));
  t.equal(await echo(ws, 'hi'), 'hi');
  const seen = s.upstream.seen[0]!;
  t.equal(seen.url, '/chat?room=1&lang=en');
  t.notOk(seen.url.includes(token));
  t.equal(seen.headers['x-auth-subject'], 'alice');
  assertNoLeak(t, s.gw, [token]);
  // A bad token in the query is 401 and leaks nowhere.
  const bad = hs256({ sub: 'alice' }, 'another-secret-0123456789abcdef-01234567');
  const res = await rawUpgrade(s.gw.port, `/chat?access_token=${bad}`);
  t.equal(res.status, 401);
  t.equal(res.headers['www-authenticate'], 'Bearer realm="portcullis", error="invalid_token", error_description="signature invalid"');
  t.equal(s.upstream.seen.length, 1, 'the rejected one did not reach the upstream');
  assertNoLeak(t, s.gw, [bad], res);
});

t.test('query:access_token: the other parameters reach the upstream byte for byte', async (t) => {
  const s = await setup(t, jwtAuth({ from: ['query:access_token'] }));
  const token = hs256({ sub: 'alice' });
  const res = await rawUpgrade(s.gw.port, `/chat?q=a%20b&access_token=${token}&path=/x/y&flag`);
  t.equal(res.status, 101);
  t.comment(`upstream url: ${s.upstream.seen[0]?.url}`);
  t.equal(s.upstream.seen[0]?.url, '/chat?q=a%20b&path=/x/y&flag', 'untouched parameters are not re-encoded');
  t.notOk(s.upstream.seen[0]?.url.includes(token));
});

t.test('bearer: the Authorization header is not forwarded (scheme case-insensitive)', async (t) => {
  const s = await setup(t, jwtAuth({ from: ['bearer'] }));
  const token = hs256({ sub: 'alice' });
  const ws = await openClient(t, s.gw.url('/chat'), [], { Authorization: `bEaReR ${token}` });
  t.equal(await echo(ws, 'x'), 'x');
  t.equal(s.upstream.seen[0]?.headers.authorization, undefined);
  t.equal(s.upstream.seen[0]?.headers['x-auth-subject'], 'alice');
  // Another scheme is not a bearer credential: no credential → bare challenge.
  const res = await rawUpgrade(s.gw.port, '/chat', { Authorization: `Basic ${Buffer.from('alice:pw').toString('base64')}` });
  t.equal(res.status, 401);
  t.equal(res.headers['www-authenticate'], 'Bearer realm="portcullis"');
  t.same(JSON.parse(res.body), { error: 'unauthorized', error_description: 'credentials required' });
  assertNoLeak(t, s.gw, [token]);
});

t.test('header:x-token: the header is used and not forwarded', async (t) => {
  const s = await setup(t, jwtAuth({ from: ['header:X-Token'] }));
  const token = hs256({ sub: 'alice' });
  const ws = await openClient(t, s.gw.url('/chat'), [], { 'x-token': token, 'x-other': 'kept' });
  t.equal(await echo(ws, 'x'), 'x');
  const seen = s.upstream.seen[0]!;
  t.equal(seen.headers['x-token'], undefined);
  t.equal(seen.headers['x-other'], 'kept');
  t.equal(seen.headers['x-auth-subject'], 'alice');
  const expired = hs256({ sub: 'alice', exp: now() - 100 });
  const res = await rawUpgrade(s.gw.port, '/chat', { 'X-Token': expired });
  assertInvalidToken(t, res, 'token expired', s, [expired, token], 1);
});

t.test('cookie:token: only that cookie is removed; the other cookies are forwarded', async (t) => {
  const s = await setup(t, jwtAuth({ from: ['cookie:token'] }), { origins: ['https://app.example.com'] });
  const token = hs256({ sub: 'alice' });
  const ws = await openClient(t, s.gw.url('/chat'), [], { Cookie: `theme=dark; token=${token}; lang=en`, Origin: 'https://app.example.com' });
  t.equal(await echo(ws, 'x'), 'x');
  const seen = s.upstream.seen[0]!;
  t.equal(seen.headers.cookie, 'theme=dark; lang=en');
  t.equal(seen.headers['x-auth-subject'], 'alice');
  // Only cookie: the header disappears altogether.
  t.equal((await rawUpgrade(s.gw.port, '/chat', { Cookie: `token=${token}` })).status, 101);
  t.equal(s.upstream.seen[1]?.headers.cookie, undefined);
  // A cross-site page cannot ride the cookie (SPEC 8, CSWSH).
  const res = await rawUpgrade(s.gw.port, '/chat', { Cookie: `token=${token}`, Origin: 'https://evil.example' });
  t.equal(res.status, 403);
  t.same(JSON.parse(res.body), { error: 'forbidden', error_description: 'origin not allowed' });
  t.equal(s.upstream.seen.length, 2);
  assertNoLeak(t, s.gw, [token]);
});

t.test('SPEC 8: a cookie: route without origins is a config error', async (t) => {
  await t.rejects(setup(t, jwtAuth({ from: ['cookie:token'] })), { name: 'ConfigError', message: /routes\.0\.origins/ });
});

t.test('protocol:bearer.: the token entry is never forwarded nor echoed; the client gets the marker', async (t) => {
  const s = await setup(t, jwtAuth({ from: ['protocol:bearer.'] }));
  const token = hs256({ sub: 'alice' });
  const ws = await openClient(t, s.gw.url('/chat'), ['bearer', `bearer.${token}`]);
  t.equal(ws.protocol, 'bearer', 'the gateway answers the bare marker');
  t.equal(await echo(ws, 'x'), 'x');
  const seen = s.upstream.seen[0]!;
  t.notOk(String(seen.headers['sec-websocket-protocol'] ?? '').includes(token), 'the token entry did not reach the upstream');
  t.equal(seen.headers['sec-websocket-protocol'], undefined, 'nothing else was offered');
  t.equal(seen.headers['x-auth-subject'], 'alice');
  // On the wire: the 101 names only the marker.
  const raw = await rawUpgrade(s.gw.port, '/chat', { 'Sec-WebSocket-Protocol': `bearer, bearer.${token}` });
  t.equal(raw.status, 101);
  t.equal(raw.headers['sec-websocket-protocol'], 'bearer');
  t.notOk(raw.raw.includes(token), 'the token is not echoed');
  assertNoLeak(t, s.gw, [token]);
});

t.test('protocol:bearer. beside an application subprotocol: the upstream selects graphql-ws', async (t) => {
  const s = await setup(t, jwtAuth({ from: ['protocol:bearer.'] }));
  const token = hs256({ sub: 'alice' });
  const ws = await openClient(t, s.gw.url('/chat'), ['graphql-ws', 'bearer', `bearer.${token}`]);
  t.equal(ws.protocol, 'graphql-ws');
  t.equal(await echo(ws, 'x'), 'x');
  const seen = s.upstream.seen[0]!;
  t.equal(seen.protocol, 'graphql-ws', 'the upstream selected graphql-ws');
  t.notOk(String(seen.headers['sec-websocket-protocol']).includes(token));
  t.notOk(String(seen.headers['sec-websocket-protocol']).includes('bearer'), 'the marker is the gateway\'s business');
  assertNoLeak(t, s.gw, [token]);
});

t.test('protocol:bearer.: a bad token is 401 and never echoed', async (t) => {
  const s = await setup(t, jwtAuth({ from: ['protocol:bearer.'] }));
  const bad = hs256({ sub: 'alice' }, 'another-secret-0123456789abcdef-01234567');
  const res = await rawUpgrade(s.gw.port, '/chat', { 'Sec-WebSocket-Protocol': `bearer, bearer.${bad}` });
  assertInvalidToken(t, res, 'signature invalid', s, [bad]);
  t.notOk(res.raw.includes(bad));
});

t.test('stripCredentials: false keeps Authorization upstream, but the protocol token entry is still never forwarded', async (t) => {
  const s = await setup(t, jwtAuth({ from: ['bearer', 'protocol:bearer.'] }), { stripCredentials: false });
  const token = hs256({ sub: 'alice' });
  const ws1 = await openClient(t, s.gw.url('/chat'), [], bearer(token));
  t.equal(await echo(ws1, 'a'), 'a');
  t.equal(s.upstream.seen[0]?.headers.authorization, `Bearer ${token}`, 'Authorization forwarded as sent');
  const ws2 = await openClient(t, s.gw.url('/chat'), ['bearer', `bearer.${token}`]);
  t.equal(ws2.protocol, 'bearer');
  t.equal(await echo(ws2, 'b'), 'b');
  t.notOk(String(s.upstream.seen[1]?.headers['sec-websocket-protocol'] ?? '').includes(token), 'protocol entry stripped anyway');
  // Even when the token was taken from Authorization, a token entry offered beside it is not forwarded.
  const ws3 = await openClient(t, s.gw.url('/chat'), ['graphql-ws', `bearer.${token}`], bearer(token));
  t.equal(ws3.protocol, 'graphql-ws');
  t.equal(s.upstream.seen[2]?.headers['sec-websocket-protocol'], 'graphql-ws');
  assertNoLeak(t, s.gw, [token]);
});

t.test('SPEC 8: client-sent identity headers never reach the upstream', async (t) => {
  const s = await setup(t);
  const token = hs256({ sub: 'alice', role: 'user' });
  const forged = Buffer.from(JSON.stringify({ sub: 'admin', role: 'admin' })).toString('base64url');
  const ws = await openClient(t, s.gw.url('/chat'), [], {
    ...bearer(token),
    'X-Auth-Subject': 'mallory',
    'X-Auth-Claims': forged,
    'X-Auth-Anything': 'sneaky',
    'x-auth-role': 'admin',
  });
  t.equal(await echo(ws, 'x'), 'x');
  const seen = s.upstream.seen[0]!;
  t.equal(seen.headers['x-auth-subject'], 'alice');
  t.match(claimsOf(seen.headers['x-auth-claims']), { sub: 'alice', role: 'user' });
  t.equal(seen.headers['x-auth-anything'], undefined);
  t.equal(seen.headers['x-auth-role'], undefined);
  t.notOk(JSON.stringify(seen.headers).includes('mallory'));
});

t.test('custom forwardIdentity header names: set by the gateway, client copies removed', async (t) => {
  const s = await setup(t, jwtAuth(), { forwardIdentity: { subject: 'X-User', claims: 'X-User-Claims' } });
  const token = hs256({ sub: 'alice', role: 'user' });
  const ws = await openClient(t, s.gw.url('/chat'), [], { ...bearer(token), 'X-User': 'mallory', 'X-User-Claims': 'e30', 'X-Auth-Subject': 'mallory' });
  t.equal(await echo(ws, 'x'), 'x');
  const seen = s.upstream.seen[0]!;
  t.equal(seen.headers['x-user'], 'alice');
  t.match(claimsOf(seen.headers['x-user-claims']), { sub: 'alice', role: 'user' });
  t.equal(seen.headers['x-auth-subject'], undefined, 'the default names are not used, and the forged one is gone');
  t.equal(seen.headers['x-auth-claims'], undefined);
});

t.test('a token without sub sends no subject header (and a forged one is removed)', async (t) => {
  const s = await setup(t);
  const token = hs256({ scope: 'chat' });
  t.equal(jsonwebtoken.decode(token, { json: true })?.sub, undefined);
  const ws = await openClient(t, s.gw.url('/chat'), [], { ...bearer(token), 'X-Auth-Subject': 'mallory' });
  t.equal(await echo(ws, 'x'), 'x');
  const seen = s.upstream.seen[0]!;
  t.notOk('x-auth-subject' in seen.headers, 'no x-auth-subject header at all');
  t.match(claimsOf(seen.headers['x-auth-claims']), { scope: 'chat' });
});

t.test('SPEC 8: the gateway survives a burst of bad tokens and keeps serving', async (t) => {
  const s = await setup(t);
  const bad = [
    'x'.repeat(9000),
    `${b64({ alg: 'none' })}.${b64({ sub: 'a' })}.`,
    '....',
    `${b64({ alg: 'HS256' })}.${b64('string payload')}.`,
    hs256({ sub: 'a', exp: now() - 10 }),
    `${b64({ alg: 'RS256' })}.${b64({ sub: 'a' })}.${'A'.repeat(342)}`,
  ];
  const results = await Promise.all(bad.flatMap((token) => [0, 1, 2].map(() => rawUpgrade(s.gw.port, '/chat', bearer(token)))));
  t.same([...new Set(results.map((r) => r.status))], [401], 'all 401');
  t.ok(results.every((r) => r.closed), 'all closed by the gateway');
  t.equal(s.upstream.seen.length, 0);
  const good = hs256({ sub: 'alice' });
  t.equal((await rawUpgrade(s.gw.port, '/chat', bearer(good))).status, 101);
  assertNoLeak(t, s.gw, [good, bad[0]!, bad[3]!, bad[5]!]);
});
