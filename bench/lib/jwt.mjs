// A minimal HS256 signer for the load generator: tokens are built ahead of the timed window, so its cost
// never lands inside a measurement. (The peers verify with their own code: jsonwebtoken, HAProxy, portcullis.)
import { createHmac, randomBytes } from 'node:crypto';

const HEADER = Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT' })).toString('base64url');

/** An HS256 JWT for `claims`, signed with `secret` (a string or Buffer). */
export function signHs256(claims, secret) {
  const body = `${HEADER}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

/**
 * A factory of distinct tokens: `next()` returns a token no peer has seen (its own `jti` and `sub`), valid
 * for an hour; with `badSignature` the signature is made with another secret (a rejected handshake).
 */
export function tokenFactory(secret, { badSignature = false } = {}) {
  const run = randomBytes(6).toString('base64url');
  const key = badSignature ? `not-the-secret-${randomBytes(16).toString('hex')}` : secret;
  let i = 0;
  return {
    next() {
      const now = Math.floor(Date.now() / 1000);
      i++;
      return signHs256({ sub: `user-${i % 100000}`, scope: 'chat', iat: now, exp: now + 3600, jti: `${run}-${i}` }, key);
    },
  };
}
