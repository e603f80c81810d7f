import { createPrivateKey, createSecretKey, type KeyObject } from 'node:crypto';
import jsonwebtoken from 'jsonwebtoken';
import type { Identity } from './types.js';

/** A route's signed identity assertion (`assertion`): the header and how to sign. */
export interface Assertion {
  /** Header name, lower-cased. */
  readonly header: string;
  /** A short-lived JWT for the identity: `sub` (when known), `iat`, `exp` = now + ttlSec. */
  sign(identity: Identity): string;
}

/** The JWT algorithm a signing key implies: HS256 for a secret, RS256 or ES256 for a PEM private key. */
export function assertionKey(key: string): { key: KeyObject; algorithm: 'HS256' | 'RS256' | 'ES256' } {
  if (!key.includes('-----BEGIN')) return { key: createSecretKey(Buffer.from(key)), algorithm: 'HS256' };
  const privateKey = createPrivateKey(key);
  if (privateKey.asymmetricKeyType === 'rsa') return { key: privateKey, algorithm: 'RS256' };
  if (privateKey.asymmetricKeyType === 'ec' && privateKey.asymmetricKeyDetails?.namedCurve === 'prime256v1') {
    return { key: privateKey, algorithm: 'ES256' };
  }
  throw new TypeError('expected an RSA or P-256 EC private key');
}

/** Builds the signer for `assertion` (the key already read from `file:` by config validation). */
export function compileAssertion(config: { header?: string | undefined; key: string; ttlSec?: number | undefined }): Assertion {
  const { key, algorithm } = assertionKey(config.key);
  const ttlSec = config.ttlSec ?? 60;
  return {
    header: (config.header ?? 'x-auth-assertion').toLowerCase(),
    sign(identity) {
      const now = Math.floor(Date.now() / 1000);
      const payload = { ...(identity.subject !== null && { sub: identity.subject }), iat: now, exp: now + ttlSec };
      return jsonwebtoken.sign(payload, key, { algorithm });
    },
  };
}
