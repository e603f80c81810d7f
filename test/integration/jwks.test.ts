// SPEC 2.2 (jwt with jwksUri, jwksCooldownSec), 9: JWKS key lookup over real handshakes, against a real
// JWKS HTTP server on 127.0.0.1 that counts its hits. Covers RS256/ES256/PS256, caching, key rotation,
// junk kids (the refetch budget is per cooldown and cannot lock out a rotated key, unlike jwks-rsa's global
// limiter), the endpoint going down (the last good set serves; otherwise 503, never 401) and tokens
// without a kid.
import { generateKeyPairSync, randomUUID, type JsonWebKey, type KeyObject } from 'node:crypto';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import jsonwebtoken, { type Algorithm } from 'jsonwebtoken';
import t, { type Test } from 'tap';
import { jwksKeyLookup } from '../../src/auth/jwks.js';
import { assertInvalidToken, assertNoLeak, assertRejected } from '../helpers/assertions.js';
import { captureLog, startGateway, startGatewayWithUpstream, type Setup } from '../helpers/gateway.js';
import { freePort, sleep } from '../helpers/net.js';
import { hs256 } from '../helpers/tokens.js';
import { rawUpgrade } from '../helpers/upgrade.js';

interface TestKey {
  readonly kid: string;
  readonly alg: Algorithm;
  readonly privateKey: KeyObject;
  /** The public key as published. */
  readonly jwk: JsonWebKey;
}

/** A key pair made at test time; the public half exported as a JWK with `kid`, `alg` and `use`. */
function makeKey(kid: string, alg: 'RS256' | 'PS256' | 'ES256', publishAlg = true): TestKey {
  const { publicKey, privateKey } = alg === 'ES256' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { kid, alg, privateKey, jwk: { ...publicKey.export({ format: 'jwk' }), kid, use: 'sig', ...(publishAlg && { alg }) } };
}

const now = () => Math.floor(Date.now() / 1000);

/** A fresh token (its own `jti`, so the verified-token cache never hides a key lookup). */
function sign(key: TestKey, payload: Record<string, unknown> = { sub: 'alice' }, options: { kid?: string | null; alg?: Algorithm } = {}): string {
  const kid = options.kid === undefined ? key.kid : options.kid;
  return jsonwebtoken.sign({ iat: now(), exp: now() + 3600, jti: randomUUID(), ...payload }, key.privateKey, {
    algorithm: options.alg ?? key.alg,
    ...(kid !== null && { keyid: kid }),
  });
}

const RSA = makeKey('rsa-1', 'RS256');
const EC = makeKey('ec-1', 'ES256');
const PSS = makeKey('pss-1', 'PS256');
const ROTATED = makeKey('rsa-2', 'RS256');
const LATER = makeKey('rsa-3', 'RS256');
/** Never published: signs the junk-kid tokens. */
const ROGUE = makeKey('rogue', 'RS256');

/** A JWKS endpoint on 127.0.0.1: serves `keys` (or `status` when it is not 200) and counts requests. */
interface JwksServer {
  keys: TestKey[];
  status: number;
  /** Answers this much later (a slow IdP). */
  delayMs: number;
  hits: number;
  readonly url: string;
  /** Stops listening and drops open connections: the endpoint is down. */
  stop(): Promise<void>;
}

async function startJwks(t: Test, keys: TestKey[]): Promise<JwksServer> {
  const server = createServer((_req, res) => {
    jwks.hits++;
    const answer = () => {
      if (jwks.status !== 200) return void res.writeHead(jwks.status, { 'content-type': 'text/plain' }).end('nope');
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: jwks.keys.map((k) => k.jwk) }));
    };
    if (jwks.delayMs > 0) timers.add(setTimeout(answer, jwks.delayMs));
    else answer();
  });
  const timers = new Set<NodeJS.Timeout>();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const stop = async () => {
    for (const timer of timers) clearTimeout(timer);
    if (!server.listening) return;
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  };
  const jwks: JwksServer = { keys: [...keys], status: 200, delayMs: 0, hits: 0, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`, stop };
  t.teardown(stop);
  return jwks;
}

/** An echo upstream behind a gateway whose route `/chat` is guarded by a jwks authenticator. */
function setup(t: Test, jwksUri: string, extra: Record<string, unknown> = {}): Promise<Setup> {
  const auth = { type: 'jwt', from: ['bearer'], jwksUri, algorithms: ['RS256', 'ES256', 'PS256'], ...extra };
  return startGatewayWithUpstream(t, (upstream) => ({ authenticators: { idp: auth }, routes: [{ path: '/chat', auth: ['idp'], upstream }] }));
}

const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });
const connect = (s: Setup, token: string) => rawUpgrade(s.gw.port, '/chat', bearer(token));
const UNAVAILABLE = { error: 'unavailable', error_description: 'authentication backend unavailable' };

t.test('RS256, ES256 and PS256 tokens are accepted; the set is fetched once for many handshakes', async (t) => {
  const jwks = await startJwks(t, [RSA, EC, PSS]);
  const s = await setup(t, jwks.url);
  // A burst of first handshakes shares one fetch.
  const first = await Promise.all([RSA, EC, PSS, RSA, EC, PSS].map((key, i) => connect(s, sign(key, { sub: `user-${i}` }))));
  t.same(first.map((r) => r.status), [101, 101, 101, 101, 101, 101], 'every algorithm accepted');
  t.equal(jwks.hits, 1, 'one fetch for a concurrent burst');
  for (let i = 0; i < 10; i++) {
    const key = [RSA, EC, PSS][i % 3]!;
    t.equal((await connect(s, sign(key, { sub: `again-${i}` }))).status, 101);
  }
  t.equal(jwks.hits, 1, 'still one fetch after 16 handshakes with fresh tokens');
  t.equal(s.upstream.seen.length, 16);
  t.equal(s.upstream.seen[6]?.headers['x-auth-subject'], 'again-0', 'the identity is the token’s');
  t.ok(s.gw.logs().some((l) => l.msg === 'jwks fetched' && l.keys === 3), 'the fetch is logged with the key count');
});

t.test('a key whose JWK names an alg verifies only that alg; HS256 is refused before any lookup', async (t) => {
  const jwks = await startJwks(t, [RSA, PSS]);
  const s = await setup(t, jwks.url);
  const mismatched = sign(PSS, { sub: 'alice' }, { alg: 'RS256' });
  assertInvalidToken(t, await connect(s, mismatched), 'algorithm not allowed', s, [mismatched]);
  const hmac = hs256({ sub: 'mallory' });
  assertInvalidToken(t, await connect(s, hmac), 'algorithm not allowed', s, [hmac]);
  t.equal((await connect(s, sign(PSS))).status, 101, 'control: the right alg passes');
  const unlabelled = makeKey('plain-1', 'PS256', false);
  jwks.keys = [unlabelled];
  const direct = jwksKeyLookup({ jwksUri: jwks.url, log: captureLog().logger });
  t.ok(await direct({ alg: 'PS256', kid: 'plain-1' }), 'a JWK without alg serves any allowed RSA alg');
});

t.test('config: HS algorithms with jwksUri, and jwksUri next to another key source, are config errors', async (t) => {
  const jwksUri = 'http://127.0.0.1:1/jwks.json';
  await t.rejects(setup(t, jwksUri, { algorithms: ['RS256', 'HS256'] }), { name: 'ConfigError', problems: ['authenticators.idp.algorithms: HS256 needs a secret, not a JWKS'] });
  await t.rejects(setup(t, jwksUri, { publicKey: 'x' }), { name: 'ConfigError' });
  await t.rejects(setup(t, 'ftp://example.com/jwks'), { name: 'ConfigError' });
  // A valid jwksUri config starts without contacting the endpoint (the set is fetched on first use).
  await t.resolves(setup(t, jwksUri, { jwksCooldownSec: 5 }));
});

t.test('a rotated key (new kid) causes one refetch and is accepted; the old key keeps working', async (t) => {
  const jwks = await startJwks(t, [RSA]);
  const s = await setup(t, jwks.url, { jwksCooldownSec: 1 });
  t.equal((await connect(s, sign(RSA))).status, 101);
  t.equal(jwks.hits, 1);
  jwks.keys = [RSA, ROTATED];
  await sleep(1100); // past the cooldown of the first fetch
  t.equal((await connect(s, sign(ROTATED, { sub: 'bob' }))).status, 101, 'the rotated kid is accepted');
  t.equal(jwks.hits, 2, 'after exactly one refetch');
  for (let i = 0; i < 5; i++) t.equal((await connect(s, sign(ROTATED, { sub: 'bob' }))).status, 101);
  t.equal((await connect(s, sign(RSA))).status, 101, 'the old kid still works');
  t.equal(jwks.hits, 2, 'no more fetches');
});

t.test('junk kids: 401 signing key unknown, at most one refetch per cooldown, and a rotated kid still gets in', async (t) => {
  const jwks = await startJwks(t, [RSA]);
  const s = await setup(t, jwks.url, { jwksCooldownSec: 1 });
  t.equal((await connect(s, sign(RSA))).status, 101);
  await sleep(1100);

  // A burst of 30 distinct junk kids: one refetch between them.
  const burstStart = Date.now();
  const junk = Array.from({ length: 30 }, (_, i) => sign(ROGUE, { sub: 'mallory' }, { kid: `junk-${i}` }));
  const answers = await Promise.all(junk.map((token) => connect(s, token)));
  t.same(new Set(answers.map((r) => r.status)), new Set([401]), 'every junk kid is refused');
  t.equal(jwks.hits, 2, 'one refetch for the whole burst');
  assertInvalidToken(t, answers[0]!, 'signing key unknown', s, junk, 1);
  const again = await connect(s, junk[0]!);
  t.equal(again.status, 401, 'a junk kid again');
  t.equal(jwks.hits, 2, 'is answered from memory');

  // The IdP rotates while a flood of junk kids goes on for more than two cooldowns.
  jwks.keys = [RSA, ROTATED];
  const before = jwks.hits;
  const started = Date.now();
  let sent = 0;
  while (Date.now() - started < 2300) {
    const batch = Array.from({ length: 10 }, () => sign(ROGUE, { sub: 'mallory' }, { kid: `flood-${randomUUID()}` }));
    const res = await Promise.all(batch.map((token) => connect(s, token)));
    t.ok(res.every((r) => r.status === 401), 'flood refused');
    sent += batch.length;
    await sleep(50);
  }
  const refetches = jwks.hits - before;
  // Each refetch comes at least a cooldown after the previous one, the first after the burst's.
  const budget = Math.floor((Date.now() - burstStart) / 1000);
  t.ok(sent >= 50, `${sent} junk handshakes`);
  t.ok(refetches >= 1 && refetches <= budget, `${refetches} refetches in ${Date.now() - started} ms of flood with a 1 s cooldown (at most ${budget})`);
  // The rotated key arrived in a refetch some junk kid caused: it is accepted without another fetch.
  const rotated = await connect(s, sign(ROTATED, { sub: 'bob' }));
  t.equal(rotated.status, 101, 'the rotated kid is accepted after the flood');
  t.equal(jwks.hits - before, refetches, 'without a fetch of its own');

  // And a kid rotated in during a cooldown is refused only until the cooldown ends.
  await sleep(1100);
  t.equal((await connect(s, sign(ROGUE, {}, { kid: 'one-more-junk' }))).status, 401);
  jwks.keys = [RSA, ROTATED, LATER];
  const early = await connect(s, sign(LATER, { sub: 'carol' }));
  t.equal(early.status, 401, 'inside the cooldown a new kid is not fetched');
  await sleep(1100);
  t.equal((await connect(s, sign(LATER, { sub: 'carol' }))).status, 101, 'after the cooldown it is');
  t.equal(s.upstream.seen.length, 3, 'only the genuine tokens reached the upstream');
  assertNoLeak(t, s.gw, junk);
});

t.test('a kid a refetch did not find stays unknown for cooldownSec, even once the refetch budget is back', async (t) => {
  const jwks = await startJwks(t, [RSA]);
  const s = await setup(t, jwks.url, { jwksCooldownSec: 1 });
  t.equal((await connect(s, sign(RSA))).status, 101);
  await sleep(1100);
  jwks.delayMs = 400; // the budget counts from the start of a fetch, the memory of a miss from its end
  const junk = sign(ROGUE, {}, { kid: 'junk' });
  assertInvalidToken(t, await connect(s, junk), 'signing key unknown', s, [junk], 1);
  t.equal(jwks.hits, 2, 'the junk kid caused one refetch');
  jwks.delayMs = 0;
  await sleep(800); // the budget is back (≥ 1 s since that refetch started), the miss is remembered (< 1 s since it ended)
  t.equal((await connect(s, junk)).status, 401);
  t.equal(jwks.hits, 2, 'the remembered kid does not spend the refetch');
  jwks.keys = [RSA, ROTATED];
  t.equal((await connect(s, sign(ROTATED, { sub: 'bob' }))).status, 101, 'which a genuinely new kid then gets');
  t.equal(jwks.hits, 3);
});

t.test('endpoint down after the first fetch: cached kids keep working, an unknown kid is 503', async (t) => {
  const jwks = await startJwks(t, [RSA, EC]);
  const s = await setup(t, jwks.url, { jwksCooldownSec: 1 });
  t.equal((await connect(s, sign(RSA))).status, 101);
  await jwks.stop();
  t.equal((await connect(s, sign(RSA))).status, 101, 'the cached kid is accepted');
  t.equal((await connect(s, sign(EC))).status, 101, 'so is every kid of the last good set');
  await sleep(1100);
  const unknown = await connect(s, sign(ROTATED));
  assertRejected(t, unknown, s, 503, UNAVAILABLE, undefined, 3);
  const next = await connect(s, sign(LATER));
  t.equal(next.status, 503, 'within the cooldown after a failed fetch: still 503, not 401');
  t.equal((await connect(s, sign(RSA))).status, 101, 'cached kid still accepted');
  t.ok(s.gw.logs().some((l) => l.msg === 'jwks fetch failed' && l.level === 40), 'the failure is logged as a warning');
});

t.test('endpoint down (or failing) at first use: 503, never 401', async (t) => {
  const dead = `http://127.0.0.1:${await freePort()}/jwks.json`;
  const s = await setup(t, dead);
  for (let i = 0; i < 2; i++) assertRejected(t, await connect(s, sign(RSA)), s, 503, UNAVAILABLE, undefined);

  const jwks = await startJwks(t, [RSA]);
  jwks.status = 500;
  const failing = await setup(t, jwks.url);
  assertRejected(t, await connect(failing, sign(RSA)), failing, 503, UNAVAILABLE, undefined);
  jwks.status = 200;
  t.equal((await connect(failing, sign(RSA))).status, 101, 'accepted once the endpoint recovers');

  jwks.keys = [];
  const empty = await setup(t, `${jwks.url}?empty`);
  assertRejected(t, await connect(empty, sign(RSA)), empty, 503, UNAVAILABLE, undefined);
});

t.test('a token without kid: 401 when the set has several keys, accepted when it has one', async (t) => {
  const many = await startJwks(t, [RSA, ROTATED]);
  const s = await setup(t, many.url);
  const noKid = sign(RSA, { sub: 'alice' }, { kid: null });
  assertInvalidToken(t, await connect(s, noKid), 'signing key unknown', s, [noKid]);
  assertInvalidToken(t, await connect(s, sign(RSA, { sub: 'alice' }, { kid: null })), 'signing key unknown', s, [noKid]);
  t.equal(many.hits, 1, 'no refetch for a missing kid');

  const one = await startJwks(t, [RSA]);
  const single = await setup(t, one.url);
  t.equal((await connect(single, sign(RSA, { sub: 'alice' }, { kid: null }))).status, 101);
});

t.test('the lookup directly: a stale set refreshes in the background, serves while down, drops a withdrawn key', async (t) => {
  const jwks = await startJwks(t, [RSA, ROTATED]);
  const { logger, lines } = captureLog();
  const lookup = jwksKeyLookup({ jwksUri: jwks.url, cooldownSec: 0, maxAgeSec: 0, timeoutMs: 1000, log: logger });
  const key = await lookup({ alg: 'RS256', kid: 'rsa-1' });
  t.equal(key.asymmetricKeyType, 'rsa', 'a KeyObject');
  await t.rejects(lookup({ alg: 'RS256', kid: 'nope' }), { code: 'GW_ERR_KEY_UNKNOWN' }, 'an unknown kid: a refetch that finds nothing');
  t.equal(jwks.hits, 2, 'that refetch happened (cooldown 0)');
  t.equal(await lookup({ alg: 'RS256', kid: 'rsa-1' }), key, 'the same KeyObject after a refetch of an unchanged key');
  await jwks.stop();
  t.equal(await lookup({ alg: 'RS256', kid: 'rsa-2' }), await lookup({ alg: 'RS256', kid: 'rsa-2' }), 'served while the endpoint is down');
  await t.rejects(lookup({ alg: 'RS256', kid: 'nope' }), { message: /unavailable/ }, 'unknown kid while down is a plain error (503)');
  t.ok(lines.some((l) => l.includes('jwks fetch failed')));
  await t.rejects(lookup({ alg: 'RS256', kid: 'x'.repeat(300) }), { code: 'GW_ERR_KEY_UNKNOWN' }, 'an absurd kid is refused outright');

  // An endpoint that never answers fails after timeoutMs, not after the handshake deadline.
  const hanging = await startJwks(t, [RSA]);
  hanging.delayMs = 60_000;
  const slow = jwksKeyLookup({ jwksUri: hanging.url, timeoutMs: 200, log: logger });
  const started = Date.now();
  await t.rejects(slow({ alg: 'RS256', kid: 'rsa-1' }), { message: /unavailable/, cause: { message: /timed out after 200 ms/ } });
  t.ok(Date.now() - started < 1000, 'gave up after about timeoutMs');

  // The endpoint is back without rsa-1: once the refresh lands, rsa-1 is unknown.
  const back = await startJwks(t, [ROTATED]);
  const lookup2 = jwksKeyLookup({ jwksUri: back.url, cooldownSec: 0, maxAgeSec: 0, log: logger });
  back.keys = [RSA, ROTATED];
  await lookup2({ alg: 'RS256', kid: 'rsa-1' });
  back.keys = [ROTATED];
  await lookup2({ alg: 'RS256', kid: 'rsa-2' }); // starts the background refresh
  await sleep(200);
  await t.rejects(lookup2({ alg: 'RS256', kid: 'rsa-1' }), { code: 'GW_ERR_KEY_UNKNOWN' }, 'a withdrawn key is no longer served');
});
