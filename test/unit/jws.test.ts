// src/auth/jws.ts, the compact-JWS verifier the jwt authenticator runs instead of jsonwebtoken: every
// algorithm family against jsonwebtoken's own verdict (EdDSA, which jsonwebtoken lacks, against
// node:crypto), and the key-confusion rules.
import t from 'tap';
import { createPublicKey, createSecretKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import jsonwebtoken, { type Algorithm } from 'jsonwebtoken';
import { parseJws, verifyJws, type JwsAlgorithm } from '../../src/auth/jws.js';
import { GatewayError } from '../../src/errors.js';

const secret = createSecretKey(Buffer.from('a-secret-of-at-least-thirty-two-bytes!'));
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
// @types/node types saltLength as a string; node:crypto wants a number.
const pssKeys = (saltLength: number) => generateKeyPairSync('rsa-pss', { modulusLength: 2048, hashAlgorithm: 'sha256', mgf1HashAlgorithm: 'sha256', saltLength: saltLength as unknown as string });
const pss = pssKeys(32);
const ec = { ES256: generateKeyPairSync('ec', { namedCurve: 'P-256' }), ES384: generateKeyPairSync('ec', { namedCurve: 'P-384' }), ES512: generateKeyPairSync('ec', { namedCurve: 'P-521' }) };
const ed = generateKeyPairSync('ed25519');

const b64 = (value: unknown) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
const claims = () => ({ sub: 'alice', exp: Math.floor(Date.now() / 1000) + 60 });

/** [alg, signing key, verifying key] for every algorithm jsonwebtoken can also sign. */
const PAIRS: [Algorithm & JwsAlgorithm, KeyObject, KeyObject][] = [
  ['HS256', secret, secret],
  ['HS384', secret, secret],
  ['HS512', secret, secret],
  ['RS256', rsa.privateKey, rsa.publicKey],
  ['RS384', rsa.privateKey, rsa.publicKey],
  ['RS512', rsa.privateKey, rsa.publicKey],
  ['PS256', rsa.privateKey, rsa.publicKey],
  ['PS384', rsa.privateKey, rsa.publicKey],
  ['PS512', rsa.privateKey, rsa.publicKey],
  ['PS256', pss.privateKey, pss.publicKey],
  ['ES256', ec.ES256.privateKey, ec.ES256.publicKey],
  ['ES384', ec.ES384.privateKey, ec.ES384.publicKey],
  ['ES512', ec.ES512.privateKey, ec.ES512.publicKey],
];

function code(fn: () => unknown): string {
  try {
    fn();
    return 'ok';
  } catch (err) {
    return err instanceof GatewayError ? err.code : `not a GatewayError: ${String(err)}`;
  }
}

function verdict(token: string, alg: JwsAlgorithm, key: KeyObject): string {
  return code(() => verifyJws(parseJws(token, [alg]), key));
}

t.test('every algorithm: a good signature verifies, a tampered one does not, as jsonwebtoken says', async (t) => {
  for (const [alg, signing, verifying] of PAIRS) {
    const token = jsonwebtoken.sign(claims(), signing, { algorithm: alg });
    t.same(verifyJws(parseJws(token, [alg]), verifying).sub, 'alice', `${alg} (${verifying.asymmetricKeyType ?? 'secret'})`);
    const [h, p, s] = token.split('.') as [string, string, string];
    const flipped = `${h}.${p}.${s[0] === 'A' ? 'B' : 'A'}${s.slice(1)}`;
    const other = `${h}.${b64({ ...claims(), sub: 'admin' })}.${s}`;
    for (const bad of [flipped, other, `${h}.${p}.${s.slice(0, -2)}`]) {
      t.equal(verdict(bad, alg, verifying), 'GW_ERR_SIGNATURE_INVALID', `${alg}: tampered`);
      t.throws(() => jsonwebtoken.verify(bad, verifying, { algorithms: [alg] }), `${alg}: jsonwebtoken agrees`);
    }
  }
});

t.test('EdDSA (which jsonwebtoken cannot verify) through node:crypto', async (t) => {
  const input = `${b64({ alg: 'EdDSA', typ: 'JWT' })}.${b64(claims())}`;
  const token = `${input}.${sign(null, Buffer.from(input), ed.privateKey).toString('base64url')}`;
  t.equal(verdict(token, 'EdDSA', ed.publicKey), 'ok');
  t.equal(verdict(`${input}.${sign(null, Buffer.from(input), generateKeyPairSync('ed25519').privateKey).toString('base64url')}`, 'EdDSA', ed.publicKey), 'GW_ERR_SIGNATURE_INVALID');
  t.equal(verdict(token, 'EdDSA', rsa.publicKey), 'GW_ERR_TOKEN_INVALID', 'an RSA key cannot verify EdDSA');
});

t.test('key confusion: a key only verifies the algorithms of its type', async (t) => {
  const rsaPem = rsa.publicKey.export({ type: 'spki', format: 'pem' });
  // The classic: HS256 signed with the RSA public key's PEM as the secret, sent to an RS256 verifier.
  const confused = jsonwebtoken.sign(claims(), createSecretKey(Buffer.from(rsaPem)), { algorithm: 'HS256' });
  t.equal(verdict(confused, 'HS256', rsa.publicKey), 'GW_ERR_TOKEN_INVALID', 'HS256 with a public key');
  t.equal(code(() => parseJws(confused, ['RS256'])), 'GW_ERR_ALGORITHM_NOT_ALLOWED', 'HS256 outside an RS256 allow-list');
  const es256 = jsonwebtoken.sign(claims(), ec.ES256.privateKey, { algorithm: 'ES256' });
  t.equal(verdict(es256, 'ES256', ec.ES384.publicKey), 'GW_ERR_TOKEN_INVALID', 'ES256 with a P-384 key');
  t.equal(verdict(es256, 'ES256', rsa.publicKey), 'GW_ERR_TOKEN_INVALID', 'ES256 with an RSA key');
  t.equal(verdict(es256, 'ES256', secret), 'GW_ERR_TOKEN_INVALID', 'ES256 with a secret');
  const rs = jsonwebtoken.sign(claims(), rsa.privateKey, { algorithm: 'RS256' });
  t.equal(verdict(rs, 'RS256', ec.ES256.publicKey), 'GW_ERR_TOKEN_INVALID', 'RS256 with an EC key');
  t.equal(verdict(rs, 'RS256', pss.publicKey), 'GW_ERR_TOKEN_INVALID', 'RS256 with an RSA-PSS key');
  t.equal(verdict(rs, 'RS256', rsa.privateKey), 'GW_ERR_TOKEN_INVALID', 'a private key is not a verifying key');
  const ps384 = jsonwebtoken.sign(claims(), rsa.privateKey, { algorithm: 'PS384' });
  t.equal(verdict(ps384, 'PS384', pss.publicKey), 'GW_ERR_TOKEN_INVALID', 'an RSA-PSS key bound to SHA-256 cannot verify PS384');
  const wideSalt = pssKeys(64);
  t.equal(verdict(jsonwebtoken.sign(claims(), rsa.privateKey, { algorithm: 'PS256' }), 'PS256', wideSalt.publicKey), 'GW_ERR_TOKEN_INVALID', 'an RSA-PSS key with a salt longer than the hash');
  t.equal(verdict(jsonwebtoken.sign(claims(), secret, { algorithm: 'HS256' }), 'HS256', createPublicKey(rsaPem)), 'GW_ERR_TOKEN_INVALID');
});

t.test('an ECDSA signature of the wrong size (DER instead of R || S, or cut) is invalid, not an exception', async (t) => {
  const input = `${b64({ alg: 'ES256' })}.${b64(claims())}`;
  const der = sign('sha256', Buffer.from(input), ec.ES256.privateKey).toString('base64url');
  t.equal(verdict(`${input}.${der}`, 'ES256', ec.ES256.publicKey), 'GW_ERR_SIGNATURE_INVALID', 'DER');
  const jose = sign('sha256', Buffer.from(input), { key: ec.ES256.privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url');
  t.equal(verdict(`${input}.${jose}`, 'ES256', ec.ES256.publicKey), 'ok', 'R || S');
  t.equal(verdict(`${input}.${jose.slice(0, 40)}`, 'ES256', ec.ES256.publicKey), 'GW_ERR_SIGNATURE_INVALID', 'cut');
  t.equal(verdict(`${input}.${jose}AAAA`, 'ES256', ec.ES256.publicKey), 'GW_ERR_SIGNATURE_INVALID', 'padded');
});

t.test('an HMAC is compared on its canonical base64url: another encoding of the same bytes is refused', async (t) => {
  const token = jsonwebtoken.sign(claims(), secret, { algorithm: 'HS256' });
  const [h, p, s] = token.split('.') as [string, string, string];
  // 32 bytes end on 4 spare bits: a different last character decodes to the same bytes in lenient decoders.
  const last = s.at(-1)!;
  const alias = 'AEIMQUYcgkosw048'.includes(last) ? String.fromCharCode(last.charCodeAt(0) + 1) : null;
  if (alias) t.equal(verdict(`${h}.${p}.${s.slice(0, -1)}${alias}`, 'HS256', secret), 'GW_ERR_SIGNATURE_INVALID', 'non-canonical encoding');
  t.equal(verdict(`${h}.${p}.${s}=`, 'HS256', secret), 'GW_ERR_TOKEN_MALFORMED', 'padding is not base64url');
});

t.test('structure: segments, header and payload are checked before any key is used', async (t) => {
  const p = b64(claims());
  const cases: [string, string][] = [
    ['two segments', `${b64({ alg: 'HS256' })}.${p}`],
    ['four segments', `${b64({ alg: 'HS256' })}.${p}.c2ln.x`],
    ['header not JSON', `${b64('nope')}.${p}.c2ln`],
    ['header an array', `${b64([])}.${p}.c2ln`],
    ['header null', `${b64('null')}.${p}.c2ln`],
    ['payload not JSON', `${b64({ alg: 'HS256' })}.${b64('nope')}.c2ln`],
    ['payload an array', `${b64({ alg: 'HS256' })}.${b64([1, 2])}.c2ln`],
    ['payload a string', `${b64({ alg: 'HS256' })}.${b64('"alice"')}.c2ln`],
    ['a character outside base64url', `${b64({ alg: 'HS256' })}.${p}!.c2ln`],
  ];
  for (const [name, token] of cases) t.equal(code(() => parseJws(token, ['HS256'])), 'GW_ERR_TOKEN_MALFORMED', name);
  t.equal(code(() => parseJws(`${b64({ alg: 'HS256' })}.${p}.`, ['HS256'])), 'GW_ERR_ALGORITHM_NOT_ALLOWED', 'no signature');
  for (const alg of ['none', 'NONE', 'HS384', null, ['HS256'], 256]) {
    t.equal(code(() => parseJws(`${b64({ alg })}.${p}.c2ln`, ['HS256'])), 'GW_ERR_ALGORITHM_NOT_ALLOWED', `alg ${JSON.stringify(alg)}`);
  }
  t.equal(code(() => parseJws(`${b64({ alg: 'HS256', crit: ['exp'] })}.${p}.c2ln`, ['HS256'])), 'GW_ERR_TOKEN_INVALID', 'crit');
});
