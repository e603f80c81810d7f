import { findCredential, parseSource } from '../credentials.js';
import { GatewayError } from '../errors.js';
import type { Identity } from '../types.js';
import type { Authenticator, AuthRequest } from './authenticator.js';

/** Tokens above this size are refused before any parsing (SPEC 9: 401 `invalid_token`). */
export const MAX_TOKEN_BYTES = 8192;

/** Checks one token; throws GatewayError when it is wrong, anything else when it cannot tell. */
export type TokenVerifier = (token: string, request: AuthRequest) => Identity | Promise<Identity>;

/**
 * An authenticator made of credential sources (`from`) and a verifier: the first source that finds a
 * credential decides, and none found means "not mine".
 */
export function tokenAuthenticator(name: string, type: string, from: readonly string[], verify: TokenVerifier): Authenticator {
  const sources = from.map(parseSource);
  const check = (token: string, request: AuthRequest) => {
    // Length first: the byte count only matters when some characters take several bytes.
    if (token.length > MAX_TOKEN_BYTES || (token.length * 3 > MAX_TOKEN_BYTES && Buffer.byteLength(token) > MAX_TOKEN_BYTES)) throw new GatewayError('GW_ERR_TOKEN_TOO_LARGE');
    return verify(token, request);
  };
  return {
    name,
    type,
    verifyToken: async (token, request) => check(token, request),
    authenticate(request) {
      const credential = findCredential(sources, request.req, request.url);
      if (!credential) return null;
      const identity = check(credential.value, request);
      return identity instanceof Promise ? identity.then((resolved) => ({ identity: resolved, credential })) : { identity, credential };
    },
  };
}
