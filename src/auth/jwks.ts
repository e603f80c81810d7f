import { createPublicKey, type KeyObject } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { JwtHeader } from 'jsonwebtoken';
import { JwksClient, type SigningKey } from 'jwks-rsa';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { GatewayError } from '../errors.js';
import type { KeyLookup } from './jwt.js';

/** Options of {@link jwksKeyLookup}. */
export interface JwksLookupOptions {
  /** Where the JSON Web Key Set is published. */
  readonly jwksUri: string;
  /** The least time between two fetches caused by an unknown `kid`; also how long an unknown kid stays unknown. Default 30. */
  readonly cooldownSec?: number;
  /** A fetch that takes longer fails. Default 3000 (below the default 5 s handshake deadline). */
  readonly timeoutMs?: number;
  /** A key set older than this is refreshed in the background while it keeps serving. Default 600 (jwks-rsa's cacheMaxAge). */
  readonly maxAgeSec?: number;
  readonly log: Logger;
}

/** Keys beyond this many in one set are ignored (a set is a handful of keys; this bounds a hostile one). */
const MAX_KEYS = 100;
/** A longer `kid` is refused without a lookup, so junk cannot grow the negative cache's memory. */
const MAX_KID_LENGTH = 256;
/** How many unknown kids are remembered (each for `cooldownSec`). */
const MAX_UNKNOWN_KIDS = 1000;

interface KeyEntry {
  readonly kid: string | undefined;
  /** The JWK's `alg`, when it names one: the key then verifies only that algorithm. */
  readonly alg: string | undefined;
  /** The SPKI PEM jwks-rsa made of the JWK; an unchanged PEM keeps its KeyObject across fetches. */
  readonly pem: string;
  readonly key: KeyObject;
}

/** One successfully fetched JWKS: the last good one keeps serving while the endpoint is down. */
interface KeySet {
  readonly all: readonly KeyEntry[];
  readonly byKid: ReadonlyMap<string, KeyEntry>;
  /** performance.now() of the fetch. */
  readonly fetchedAt: number;
}

const unknownKey = (detail: string) => new GatewayError('GW_ERR_KEY_UNKNOWN', detail);

/** The URI without credentials or query, for log lines (config validation made sure it parses). */
function loggable(uri: string): string {
  const url = new URL(uri);
  return `${url.origin}${url.pathname}`;
}

function withTimeout<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}

/**
 * A {@link KeyLookup} for a `jwt` authenticator with `jwksUri`, built on jwks-rsa (fetching, JWK → public
 * key). The set as a whole is kept here rather than in jwks-rsa's per-kid memo, which can't say which
 * keys a set holds, never caches a miss, and whose rate limiter is global (junk kids use it up and then
 * a genuinely rotated kid fails for a minute):
 *  - a kid in the last good set is served from it (a KeyObject made once per key); a set older than
 *    `maxAgeSec` is refreshed in the background, and a failed refresh keeps the old set serving;
 *  - an unknown kid causes one refetch at most per `cooldownSec` (all kids share the budget, and only one
 *    fetch is ever in flight); a kid the refetch did not find is remembered as unknown for `cooldownSec`
 *    (bounded LRU), and any fetch, whichever kid caused it, teaches every key in the set;
 *  - a token without `kid` is accepted only when the set has exactly one key.
 * Rejections are GatewayErrors (401 `signing key unknown`); an unreachable endpoint with no key for the
 * kid is a plain Error, which the chain turns into 503.
 */
export function jwksKeyLookup(options: JwksLookupOptions): (header: JwtHeader) => Promise<KeyObject> {
  const cooldownMs = (options.cooldownSec ?? 30) * 1000;
  const timeoutMs = options.timeoutMs ?? 3000;
  const maxAgeMs = (options.maxAgeSec ?? 600) * 1000;
  const uri = loggable(options.jwksUri);
  const log = options.log;
  // This module keeps the set itself (see above), so jwks-rsa's per-kid memo and global limiter would only
  // add a second, disagreeing cache and the lock-out this design avoids. getSigningKeys() bypasses both anyway.
  const client = new JwksClient({ jwksUri: options.jwksUri, cache: false, rateLimit: false, timeout: timeoutMs });
  // Kids a fetch has shown not to exist; lru-cache needs a positive ttl, so a zero cooldown remembers nothing.
  const unknownKids = cooldownMs > 0 ? new LRUCache<string, true>({ max: MAX_UNKNOWN_KIDS, ttl: cooldownMs }) : undefined;

  let current: KeySet | undefined;
  let inflight: Promise<KeySet> | undefined;
  let lastAttempt = -Infinity;
  let lastFailed = false;

  async function fetchSet(): Promise<KeySet> {
    lastAttempt = performance.now();
    let signingKeys: SigningKey[];
    try {
      // Rejects on a network error, a non-2xx answer, bad JSON, or a set without usable signing keys.
      signingKeys = await withTimeout(client.getSigningKeys(), timeoutMs, 'JWKS fetch');
    } catch (err) {
      lastFailed = true;
      log.warn({ jwksUri: uri, err: (err as Error).message, serving: current ? current.all.length : 0 }, 'jwks fetch failed');
      throw new Error(`JWKS endpoint ${uri} unavailable`, { cause: err });
    }
    const previous = current;
    const all: KeyEntry[] = [];
    const byKid = new Map<string, KeyEntry>();
    for (const signingKey of signingKeys.slice(0, MAX_KEYS)) {
      const kid = typeof signingKey.kid === 'string' && signingKey.kid !== '' ? signingKey.kid : undefined;
      const pem = signingKey.getPublicKey();
      const before = kid === undefined ? undefined : previous?.byKid.get(kid);
      // jwks-rsa made the PEM from a key it imported, so it parses; an unchanged key keeps its KeyObject.
      const key = before?.pem === pem ? before.key : createPublicKey(pem);
      const entry: KeyEntry = { kid, alg: typeof signingKey.alg === 'string' && signingKey.alg !== '' ? signingKey.alg : undefined, pem, key };
      all.push(entry);
      if (kid !== undefined && !byKid.has(kid)) byKid.set(kid, entry);
    }
    lastFailed = false;
    current = { all, byKid, fetchedAt: performance.now() };
    log.info({ jwksUri: uri, keys: all.length }, 'jwks fetched');
    return current;
  }

  /** Starts a fetch, or joins the one in flight: there is never more than one. */
  function refetch(): Promise<KeySet> {
    if (inflight) return inflight;
    const work = fetchSet();
    inflight = work;
    const clear = () => {
      if (inflight === work) inflight = undefined;
    };
    work.then(clear, clear);
    return work;
  }

  const coolingDown = () => performance.now() - lastAttempt < cooldownMs;

  /** The set's key for the token, undefined when the set has none for it. */
  function pick(set: KeySet, kid: string | undefined, alg: string | undefined): KeyObject | undefined {
    let entry: KeyEntry | undefined;
    if (kid === undefined) {
      if (set.all.length > 1) throw unknownKey('token has no kid and the key set has several keys');
      entry = set.all[0];
    } else {
      entry = set.byKid.get(kid);
    }
    if (!entry) return undefined;
    if (entry.alg !== undefined && entry.alg !== alg) throw new GatewayError('GW_ERR_ALGORITHM_NOT_ALLOWED', 'alg differs from the key’s alg');
    return entry.key;
  }

  return async (header: JwtHeader): Promise<KeyObject> => {
    const kid: unknown = header.kid;
    if (kid !== undefined && (typeof kid !== 'string' || kid === '' || kid.length > MAX_KID_LENGTH)) throw unknownKey('kid malformed');

    let set = current;
    if (set === undefined) {
      // Nothing to serve yet: wait for a fetch; if it fails the handshake is 503, never 401.
      set = await refetch();
    } else if (performance.now() - set.fetchedAt >= maxAgeMs && !inflight && !coolingDown()) {
      // Stale: refresh in the background and keep serving what we have (a failure is logged in fetchSet).
      refetch().catch(() => {});
    }

    const found = pick(set, kid, header.alg);
    if (found) return found;
    if (kid === undefined) throw unknownKey('kid missing');

    // An unknown kid: perhaps a rotated key, perhaps junk.
    if (unknownKids?.has(kid)) throw unknownKey('kid not in the key set (remembered)');
    if (inflight) {
      set = await inflight;
    } else if (coolingDown()) {
      // The endpoint was asked recently. If that failed we cannot tell (503); otherwise the kid is unknown.
      if (lastFailed) throw new Error(`JWKS endpoint ${uri} unavailable (retry after the cooldown)`);
      throw unknownKey('kid not in the key set (refetch cooling down)');
    } else {
      set = await refetch();
    }
    const rotated = pick(set, kid, header.alg);
    if (rotated) return rotated;
    unknownKids?.set(kid, true);
    throw unknownKey('kid not in the key set');
  };
}
