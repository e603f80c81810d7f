import { createPublicKey, createSecretKey, hash, type KeyObject } from 'node:crypto';
import type { JwtHeader, JwtPayload } from 'jsonwebtoken';
import { LRUCache } from 'lru-cache';
import type { JwtConfig } from '../config/schema.js';
import { GatewayError } from '../errors.js';
import type { Identity } from '../types.js';
import type { Authenticator } from './authenticator.js';
import { parseJws, verifyJws, type JwsAlgorithm, type ParsedJws } from './jws.js';
import { tokenAuthenticator } from './token.js';

/**
 * Finds the key for a token from its header. Static keys ignore the header; a JWKS lookup uses `kid`.
 * Keys are KeyObjects built once, never parsed per token.
 */
export type KeyLookup = (header: JwtHeader) => KeyObject | Promise<KeyObject>;

/** The key lookup for a `secret` or `publicKey` (already a PEM after config validation). */
export function staticKeyLookup(config: Pick<JwtConfig, 'secret' | 'publicKey'>): KeyLookup {
  const key = config.secret !== undefined ? createSecretKey(Buffer.from(config.secret)) : createPublicKey(config.publicKey!);
  return () => key;
}

/** The time claims and `iss`/`aud`/`maxAgeSec` checks of a `jwt` authenticator, on a payload whose signature held. */
interface ClaimRules {
  readonly toleranceSec: number;
  readonly issuers: readonly string[] | undefined;
  readonly audiences: readonly string[] | undefined;
  readonly maxAgeSec: number | undefined;
}

/**
 * RFC 7519 4.1 as jsonwebtoken applies it (the same order and tolerance), except that `iat: 0` is 1970 and
 * not "now" when `maxAgeSec` is set.
 * @throws GatewayError
 */
function checkClaims(payload: JwtPayload, rules: ClaimRules, nowSec: number): void {
  const { nbf, exp, iat, iss, aud } = payload;
  if (nbf !== undefined) {
    if (typeof nbf !== 'number') throw new GatewayError('GW_ERR_TOKEN_INVALID', 'invalid nbf value');
    if (nbf > nowSec + rules.toleranceSec) throw new GatewayError('GW_ERR_TOKEN_NOT_YET_VALID', 'jwt not active');
  }
  if (exp !== undefined) {
    if (typeof exp !== 'number') throw new GatewayError('GW_ERR_TOKEN_INVALID', 'invalid exp value');
    if (nowSec >= exp + rules.toleranceSec) throw new GatewayError('GW_ERR_TOKEN_EXPIRED', 'jwt expired');
  }
  if (rules.audiences && !(Array.isArray(aud) ? aud : [aud]).some((a) => rules.audiences!.includes(a as string))) {
    throw new GatewayError('GW_ERR_AUDIENCE_INVALID', 'jwt audience invalid');
  }
  if (rules.issuers && !rules.issuers.includes(iss as string)) throw new GatewayError('GW_ERR_ISSUER_INVALID', 'jwt issuer invalid');
  if (rules.maxAgeSec !== undefined) {
    if (typeof iat !== 'number') throw new GatewayError('GW_ERR_TOKEN_INVALID', 'iat required when maxAge is specified');
    if (nowSec >= iat + rules.maxAgeSec + rules.toleranceSec) throw new GatewayError('GW_ERR_TOKEN_TOO_OLD', 'maxAge exceeded');
  }
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
 * The `jwt` authenticator: the signature checked by {@link verifyJws} against an explicit algorithm
 * allow-list (`none` is never in it) before the payload is even parsed, then nbf/exp/iss/aud with
 * `clockToleranceSec`, `maxAgeSec`, `requiredClaims` with jsonwebtoken's semantics (test/fuzz/jwt.test.ts
 * holds every generated token to jsonwebtoken's verdict). Not jsonwebtoken itself on this path: it
 * decodes each token twice and builds an Error per refusal, most of a refused handshake's JWT cost. Verified tokens are
 * cached (bounded LRU keyed by the token's SHA-256, never past `exp`), so a reconnect storm costs one
 * signature check per token; a hit is a plain lookup.
 */
export function jwtAuthenticator(name: string, config: JwtConfig, lookup: KeyLookup = staticKeyLookup(config)): Authenticator {
  const algorithms = config.algorithms.filter((a) => a !== ('none' as string)) as JwsAlgorithm[];
  const list = (value: string | readonly string[] | undefined) => (value === undefined ? undefined : typeof value === 'string' ? [value] : value);
  const rules: ClaimRules = {
    toleranceSec: config.clockToleranceSec ?? 0,
    issuers: list(config.issuer),
    audiences: list(config.audience),
    maxAgeSec: config.maxAgeSec,
  };
  const required = config.requiredClaims ?? [];
  // Sizes are given with each entry (see identityOf), so lru-cache needs no sizeCalculation.
  const verified = new LRUCache<string, Identity>({ max: TOKEN_CACHE.max, maxSize: TOKEN_CACHE.maxSizeBytes });

  const identityOf = (jws: ParsedJws, key: KeyObject, cacheKey: string): Identity => {
    const payload: JwtPayload = verifyJws(jws, key);
    checkClaims(payload, rules, Math.floor(Date.now() / 1000));
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
    // The claims dominate and are no larger than the token's payload segment; 256 covers the key, the
    // identity object and the cache's own bookkeeping (no JSON.stringify per handshake to measure them).
    if (ttl > 0) verified.set(cacheKey, identity, { ttl, size: jws.signingInput.length + 256 });
    return identity;
  };

  const auth = tokenAuthenticator(name, 'jwt', config.from, (token) => {
    // Keyed by a digest, so the cache never holds a usable token.
    const cacheKey = hash('sha256', token, 'base64url');
    const hit = verified.get(cacheKey);
    if (hit) return hit;
    const jws = parseJws(token, algorithms);
    const key = lookup(jws.header as JwtHeader);
    // A static key is there at once: no promise, no extra turn of the event loop.
    return key instanceof Promise ? key.then((k) => identityOf(jws, k, cacheKey)) : identityOf(jws, key, cacheKey);
  });
  return { ...auth, clockToleranceSec: config.clockToleranceSec ?? 0 };
}
