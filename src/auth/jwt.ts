import { createHash, createPublicKey, createSecretKey, type KeyObject } from 'node:crypto';
import jsonwebtoken, { type JwtHeader, type JwtPayload, type VerifyOptions } from 'jsonwebtoken';
import { LRUCache } from 'lru-cache';
import type { JwtConfig } from '../config/schema.js';
import { GatewayError, withoutStacks, type ErrorCode } from '../errors.js';
import type { Identity } from '../types.js';
import type { Authenticator } from './authenticator.js';
import { tokenAuthenticator } from './token.js';

/**
 * Finds the key for a token from its header. Static keys ignore the header; a JWKS lookup uses `kid`.
 * Keys are KeyObjects built once: a string secret costs jsonwebtoken a failed PEM parse on every verify.
 */
export type KeyLookup = (header: JwtHeader) => KeyObject | Promise<KeyObject>;

/** The key lookup for a `secret` or `publicKey` (already a PEM after config validation). */
export function staticKeyLookup(config: Pick<JwtConfig, 'secret' | 'publicKey'>): KeyLookup {
  const key = config.secret !== undefined ? createSecretKey(Buffer.from(config.secret)) : createPublicKey(config.publicKey!);
  return () => key;
}

const MESSAGES: Record<string, ErrorCode> = {
  'invalid signature': 'GW_ERR_SIGNATURE_INVALID',
  'invalid algorithm': 'GW_ERR_ALGORITHM_NOT_ALLOWED',
  'jwt malformed': 'GW_ERR_TOKEN_MALFORMED',
  'jwt signature is required': 'GW_ERR_ALGORITHM_NOT_ALLOWED',
  'maxAge exceeded': 'GW_ERR_TOKEN_TOO_OLD',
  'jwt expired': 'GW_ERR_TOKEN_EXPIRED',
};

function rejection(err: unknown): GatewayError {
  const e = err as Error;
  if (e.name === 'NotBeforeError') return new GatewayError('GW_ERR_TOKEN_NOT_YET_VALID', e.message);
  if (e.message.startsWith('jwt issuer invalid')) return new GatewayError('GW_ERR_ISSUER_INVALID', 'jwt issuer invalid');
  if (e.message.startsWith('jwt audience invalid')) return new GatewayError('GW_ERR_AUDIENCE_INVALID', 'jwt audience invalid');
  const code = MESSAGES[e.message] ?? (e.name === 'TokenExpiredError' ? 'GW_ERR_TOKEN_EXPIRED' : 'GW_ERR_TOKEN_INVALID');
  // jsonwebtoken's messages are fixed text, but never log a message that could quote the token.
  return new GatewayError(code, e.name === 'JsonWebTokenError' || e.name === 'TokenExpiredError' ? e.message : e.name);
}

/** Bounds of the verified-token cache (per authenticator): tokens, bytes, and the longest an entry lives. */
export const TOKEN_CACHE = { max: 10_000, maxSizeBytes: 16 * 1024 * 1024, maxTtlMs: 10 * 60 * 1000 } as const;

/**
 * How long a verified token may be served from the cache: never past `exp` (nor `iat + maxAgeSec`), and
 * at most {@link TOKEN_CACHE}.maxTtlMs so a key withdrawn from a JWKS stops being honoured soon. 0: do not cache.
 */
function cacheTtlMs(payload: JwtPayload, maxAgeSec: number | undefined): number {
  if (typeof payload.exp !== 'number') return 0;
  let until = payload.exp * 1000;
  if (maxAgeSec !== undefined && typeof payload.iat === 'number') until = Math.min(until, (payload.iat + maxAgeSec) * 1000);
  const ttl = Math.floor(Math.min(until - Date.now(), TOKEN_CACHE.maxTtlMs));
  return ttl >= 1 ? ttl : 0;
}

/**
 * The `jwt` authenticator: jsonwebtoken with an explicit algorithm allow-list (`none` is never in it),
 * issuer/audience/nbf/exp with `clockToleranceSec`, `maxAgeSec`, `requiredClaims`. Verified tokens are
 * cached (bounded LRU keyed by the token's SHA-256, never past `exp`), so a reconnect storm costs one
 * signature check per token; a hit is a plain lookup.
 */
export function jwtAuthenticator(name: string, config: JwtConfig, lookup: KeyLookup = staticKeyLookup(config)): Authenticator {
  const algorithms = config.algorithms.filter((a) => a !== ('none' as string));
  const options: VerifyOptions & { complete: false } = {
    algorithms: algorithms as VerifyOptions['algorithms'],
    clockTolerance: config.clockToleranceSec ?? 0,
    complete: false,
    ...(config.issuer !== undefined && { issuer: config.issuer as string | [string, ...string[]] }),
    ...(config.audience !== undefined && { audience: config.audience as string | [string, ...string[]] }),
    ...(config.maxAgeSec !== undefined && { maxAge: config.maxAgeSec }),
  };
  const required = config.requiredClaims ?? [];
  const verified = new LRUCache<string, Identity>({
    max: TOKEN_CACHE.max,
    maxSize: TOKEN_CACHE.maxSizeBytes,
    // The claims dominate; the rest covers the key, the identity object and the cache's own bookkeeping.
    sizeCalculation: (identity) => Buffer.byteLength(JSON.stringify(identity.claims)) + 256,
  });

  const auth = tokenAuthenticator(name, 'jwt', config.from, async (token) => {
    // Keyed by a digest, so the cache never holds a usable token.
    const cacheKey = createHash('sha256').update(token).digest('base64url');
    const hit = verified.get(cacheKey);
    if (hit) return hit;
    let decoded: jsonwebtoken.Jwt | null;
    try {
      decoded = jsonwebtoken.decode(token, { complete: true });
    } catch {
      decoded = null;
    }
    if (!decoded || typeof decoded.payload === 'string') throw new GatewayError('GW_ERR_TOKEN_MALFORMED');
    if (!algorithms.includes(decoded.header.alg as (typeof algorithms)[number])) {
      throw new GatewayError('GW_ERR_ALGORITHM_NOT_ALLOWED', `alg ${String(decoded.header.alg).slice(0, 16)}`);
    }
    const key = await lookup(decoded.header);
    let payload: JwtPayload;
    try {
      payload = withoutStacks(() => jsonwebtoken.verify(token, key, options)) as JwtPayload;
    } catch (err) {
      throw rejection(err);
    }
    if (typeof payload !== 'object' || payload === null) throw new GatewayError('GW_ERR_TOKEN_MALFORMED');
    if (payload.sub !== undefined && typeof payload.sub !== 'string') throw new GatewayError('GW_ERR_TOKEN_INVALID', 'sub is not a string');
    const missing = required.find((claim) => payload[claim] === undefined);
    if (missing !== undefined) throw new GatewayError('GW_ERR_CLAIM_MISSING', `missing claim ${missing}`);
    const identity: Identity = {
      subject: payload.sub ?? null,
      authenticator: name,
      claims: payload,
      ...(typeof payload.exp === 'number' && { expiresAt: payload.exp }),
    };
    const ttl = cacheTtlMs(payload, config.maxAgeSec);
    if (ttl > 0) verified.set(cacheKey, identity, { ttl });
    return identity;
  });
  return { ...auth, clockToleranceSec: config.clockToleranceSec ?? 0 };
}
