// SPEC 2.3 `assertion` and 9: the upstream also gets the identity as a short-lived JWT the gateway signs.
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import jsonwebtoken, { type JwtPayload } from 'jsonwebtoken';
import t from 'tap';
import { ConfigError } from '../../src/errors.js';
import { validateConfig } from '../../src/config/load.js';
import { echo, openClient } from '../helpers/client.js';
import { startGatewayWithUpstream } from '../helpers/gateway.js';
import type { Teardown } from '../helpers/net.js';
import { hs256, jwtAuth } from '../helpers/tokens.js';

const ASSERTION_SECRET = 'assertion-secret-0123456789abcdef-xyz';

function setup(t: Teardown, mode: 'pipe' | 'relay', assertion: Record<string, unknown>, baseDir?: string) {
  return startGatewayWithUpstream(
    t,
    (upstream) => ({ authenticators: { jwt: jwtAuth() }, routes: [{ path: '/chat', auth: ['jwt'], upstream, mode, assertion }] }),
    baseDir === undefined ? {} : { baseDir },
  );
}

for (const mode of ['pipe', 'relay'] as const) {
  t.test(`${mode}: HS256 assertion with sub, iat and exp = iat + ttlSec; a client-sent one is replaced`, async (t) => {
    const s = await setup(t, mode, { key: ASSERTION_SECRET, ttlSec: 30 });
    const ws = await openClient(t, s.gw.url('/chat'), [], { Authorization: `Bearer ${hs256({ sub: 'alice' })}`, 'X-Auth-Assertion': 'forged' });
    t.equal(await echo(ws, 'hi'), 'hi');
    const header = s.upstream.seen[0]!.headers['x-auth-assertion'] as string;
    t.not(header, 'forged', 'the client-sent header never reaches the upstream');
    const payload = jsonwebtoken.verify(header, ASSERTION_SECRET, { algorithms: ['HS256'] }) as JwtPayload;
    t.equal(payload.sub, 'alice');
    t.equal(payload.exp! - payload.iat!, 30);
    t.ok(Math.abs(payload.iat! - Date.now() / 1000) < 5, 'issued now');
    t.throws(() => jsonwebtoken.verify(header, 'another-secret-0123456789abcdef-xyz', { algorithms: ['HS256'] }), 'signed with the configured secret only');
  });
}

t.test('RS256 and ES256 from a file: key; a custom header name; the anonymous identity has no sub', async (t) => {
  const dir = t.testdir({});
  for (const [type, alg] of [['rsa', 'RS256'], ['ec', 'ES256']] as const) {
    const pair = type === 'rsa'
      ? generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } })
      : generateKeyPairSync('ec', { namedCurve: 'P-256', publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
    writeFileSync(join(dir, `${type}.pem`), pair.privateKey);
    const s = await setup(t, 'pipe', { header: 'X-Identity', key: `file:${type}.pem` }, dir);
    const ws = await openClient(t, s.gw.url('/chat'), [], { Authorization: `Bearer ${hs256({ sub: 'bob' })}`, 'X-Identity': 'forged' });
    t.equal(await echo(ws, 'hi'), 'hi');
    const header = s.upstream.seen[0]!.headers['x-identity'] as string;
    const payload = jsonwebtoken.verify(header, pair.publicKey, { algorithms: [alg] }) as JwtPayload;
    t.equal(payload.sub, 'bob', `${alg}: verifies with the public key`);
    t.equal(payload.exp! - payload.iat!, 60, `${alg}: ttlSec defaults to 60`);
    t.equal(s.upstream.seen[0]!.headers['x-auth-assertion'], undefined, 'only the configured header is set');
  }
  const pub = await startGatewayWithUpstream(t, (upstream) => ({ routes: [{ path: '/open', auth: [], upstream, assertion: { key: ASSERTION_SECRET } }] }));
  const ws = await openClient(t, pub.gw.url('/open'));
  t.equal(await echo(ws, 'x'), 'x');
  const payload = jsonwebtoken.verify(pub.upstream.seen[0]!.headers['x-auth-assertion'] as string, ASSERTION_SECRET, { algorithms: ['HS256'] }) as JwtPayload;
  t.equal(payload.sub, undefined, 'no sub for an anonymous identity');
});

t.test('bad assertion keys are config errors naming routes.N.assertion.key, without the key', async (t) => {
  const dir = t.testdir({ 'ed.pem': generateKeyPairSync('ed25519', { privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } }).privateKey });
  for (const [key, message] of [
    ['short-secret', 'routes.0.assertion.key: a secret must be at least 32 bytes'],
    ['-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----', 'routes.0.assertion.key: not a usable signing key (a secret, or an RSA or P-256 EC private key in PEM)'],
    ['file:ed.pem', 'routes.0.assertion.key: not a usable signing key (a secret, or an RSA or P-256 EC private key in PEM)'],
    ['file:missing.pem', `routes.0.assertion.key: file not found (relative paths resolve against ${dir})`],
  ]) {
    let err: unknown;
    try {
      validateConfig({ routes: [{ path: '/c', auth: [], upstream: 'ws://127.0.0.1:1', assertion: { key } }] }, { baseDir: dir, env: {} });
    } catch (e) {
      err = e;
    }
    t.type(err, ConfigError);
    t.same((err as ConfigError).problems, [message]);
  }
});
