import { createHash, timingSafeEqual } from 'node:crypto';
import type { ApiKeyConfig } from '../config/schema.js';
import { GatewayError } from '../errors.js';
import type { Authenticator } from './authenticator.js';
import { tokenAuthenticator } from './token.js';

/** The hex SHA-256 of an API key, as written in `keys[].sha256`. */
export function hashApiKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

/**
 * The `apiKey` authenticator. Keys are stored hashed; the presented key's hash is compared with every
 * stored hash in constant time, without stopping at the first match, so timing tells nothing.
 */
export function apiKeyAuthenticator(name: string, config: ApiKeyConfig): Authenticator {
  const keys = config.keys.flatMap((entry) =>
    'sha256' in entry ? [{ hash: Buffer.from(entry.sha256, 'hex'), subject: entry.subject, claims: entry.claims ?? {} }] : [],
  );
  return tokenAuthenticator(name, 'apiKey', config.from, (token) => {
    const presented = createHash('sha256').update(token).digest();
    let match: (typeof keys)[number] | undefined;
    for (const key of keys) {
      if (timingSafeEqual(key.hash, presented) && match === undefined) match = key;
    }
    if (!match) throw new GatewayError('GW_ERR_API_KEY_INVALID');
    return { subject: match.subject, authenticator: name, claims: { ...match.claims } };
  });
}
