// SPEC 2.2: verified JWTs are cached (lru-cache, bounded, never past `exp`) so a reconnect storm does not
// re-run signature checks. Verifications are counted through the authenticator's KeyLookup, which runs
// once per signature check.
import { createSecretKey } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingMessage } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import jsonwebtoken from 'jsonwebtoken';
import t, { type Test } from 'tap';
import type { AuthRequest } from '../../src/auth/authenticator.js';
import { TOKEN_CACHE, jwtAuthenticator, staticKeyLookup, type KeyLookup } from '../../src/auth/jwt.js';
import type { JwtConfig } from '../../src/config/schema.js';
import { sleep } from '../helpers/net.js';
import { SECRET, hs256 } from '../helpers/tokens.js';

const now = () => Math.floor(Date.now() / 1000);
const CONFIG: JwtConfig = { type: 'jwt', from: ['bearer'], secret: SECRET, algorithms: ['HS256'] };

/** A jwt authenticator whose key lookups (one per signature check) are counted. */
function counted(config: JwtConfig = CONFIG) {
  const inner = staticKeyLookup(config);
  const counter = { lookups: 0 };
  const lookup: KeyLookup = (header) => {
    counter.lookups++;
    return inner(header);
  };
  return { auth: jwtAuthenticator('jwt', config, lookup), counter };
}

/** A real upgrade request as the gateway would hand it over (the jwt verifier only needs the token). */
async function realRequest(t: Test): Promise<AuthRequest> {
  const server = createServer();
  const arrived = new Promise<[IncomingMessage, Duplex, Buffer]>((resolve) => server.once('upgrade', (req, socket, head) => resolve([req, socket, head])));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const client = connect((server.address() as AddressInfo).port, '127.0.0.1');
  client.write('GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
  const [req, socket, head] = await arrived;
  t.teardown(() => {
    client.destroy();
    socket.destroy();
    server.close();
  });
  return { req, socket, head, url: new URL(req.url ?? '/', 'http://gateway.invalid'), signal: new AbortController().signal };
}

t.test('a reused token is verified once; different tokens each once', async (t) => {
  const request = await realRequest(t);
  const { auth, counter } = counted();
  const token = hs256({ sub: 'alice' });
  const first = await auth.verifyToken!(token, request);
  for (let i = 0; i < 20; i++) t.same(await auth.verifyToken!(token, request), first);
  t.equal(counter.lookups, 1, 'one signature check for 21 uses');
  t.equal(first.subject, 'alice');
  t.equal(first.expiresAt, (jsonwebtoken.decode(token) as { exp: number }).exp, 'expiresAt = exp');
  await auth.verifyToken!(hs256({ sub: 'bob' }), request);
  await auth.verifyToken!(hs256({ sub: 'carol' }), request);
  t.equal(counter.lookups, 3, 'each new token is checked');
});

t.test('concurrent uses of a new token each verify until one is cached, then none do', async (t) => {
  const request = await realRequest(t);
  const { auth, counter } = counted();
  const token = hs256({ sub: 'alice' });
  await Promise.all(Array.from({ length: 5 }, () => auth.verifyToken!(token, request)));
  const afterBurst = counter.lookups;
  t.ok(afterBurst >= 1 && afterBurst <= 5);
  await auth.verifyToken!(token, request);
  t.equal(counter.lookups, afterBurst, 'cached after the burst');
});

t.test('an expired cached token is not accepted: the entry never outlives exp', async (t) => {
  const request = await realRequest(t);
  const { auth, counter } = counted();
  const exp = now() + 2;
  const token = hs256({ sub: 'alice', exp });
  await auth.verifyToken!(token, request);
  await auth.verifyToken!(token, request);
  t.equal(counter.lookups, 1, 'cached while valid');
  await sleep(exp * 1000 - Date.now() + 50);
  await t.rejects(auth.verifyToken!(token, request), { code: 'GW_ERR_TOKEN_EXPIRED' }, 'refused once exp has passed');
  t.equal(counter.lookups, 2, 'checked again, not served from the cache');
});

t.test('maxAgeSec bounds the entry too', async (t) => {
  const request = await realRequest(t);
  const { auth, counter } = counted({ ...CONFIG, maxAgeSec: 10 });
  const token = hs256({ sub: 'alice', iat: now() - 9 });
  await auth.verifyToken!(token, request);
  t.equal(counter.lookups, 1);
  await sleep(1600);
  await t.rejects(auth.verifyToken!(token, request), { code: 'GW_ERR_TOKEN_TOO_OLD' });
  t.equal(counter.lookups, 2);
});

t.test('not cached: a token without exp, and any refused token', async (t) => {
  const request = await realRequest(t);
  const { auth, counter } = counted();
  const noExp = jsonwebtoken.sign({ sub: 'alice' }, createSecretKey(Buffer.from(SECRET)), { algorithm: 'HS256' });
  await auth.verifyToken!(noExp, request);
  await auth.verifyToken!(noExp, request);
  t.equal(counter.lookups, 2, 'no exp: verified every time');
  const forged = hs256({ sub: 'mallory' }, `${SECRET}-wrong`);
  await t.rejects(auth.verifyToken!(forged, request), { code: 'GW_ERR_SIGNATURE_INVALID' });
  await t.rejects(auth.verifyToken!(forged, request), { code: 'GW_ERR_SIGNATURE_INVALID' });
  t.equal(counter.lookups, 4, 'a refused token is checked every time');
  const missing = counted({ ...CONFIG, requiredClaims: ['tenant'] });
  const noTenant = hs256({ sub: 'alice' });
  await t.rejects(missing.auth.verifyToken!(noTenant, request), { code: 'GW_ERR_CLAIM_MISSING' });
  await t.rejects(missing.auth.verifyToken!(noTenant, request), { code: 'GW_ERR_CLAIM_MISSING' });
  t.equal(missing.counter.lookups, 2, 'a token failing a claim check is not cached either');
});

t.test('the cache is per authenticator and bounded', async (t) => {
  const request = await realRequest(t);
  const a = counted();
  const b = counted({ ...CONFIG, audience: 'api' });
  const token = hs256({ sub: 'alice' });
  await a.auth.verifyToken!(token, request);
  await t.rejects(b.auth.verifyToken!(token, request), { code: 'GW_ERR_AUDIENCE_INVALID' }, 'another authenticator does not see a’s entry');
  t.ok(TOKEN_CACHE.max <= 10_000 && TOKEN_CACHE.maxSizeBytes <= 64 * 1024 * 1024, 'bounded by count and bytes');
});
