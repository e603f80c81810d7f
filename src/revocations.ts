import { LRUCache } from 'lru-cache';
import type { Identity } from './types.js';

/** What `POST /revoke` names: a subject, a token id (`jti`) or an express-session id. */
export type RevocationTarget = { subject: string } | { jti: string } | { sessionId: string };

const DEFAULT_TTL_MS = 24 * 3600 * 1000;
const MAX_ENTRIES = 100_000;

function keyOf(target: RevocationTarget): string {
  if ('subject' in target) return `sub:${target.subject}`;
  if ('jti' in target) return `jti:${target.jti}`;
  return `sid:${target.sessionId}`;
}

/** Where revocations are stored in Redis, and the channel replicas hear of them on. */
export const REVOCATION_PREFIX = 'portcullis:revoked:';
export const REVOCATIONS_CHANNEL = 'portcullis:revocations';

/** The Redis key of a revocation. */
export function revocationKey(target: RevocationTarget): string {
  return REVOCATION_PREFIX + keyOf(target);
}

/** The revocation a Redis key stands for, or undefined for a key that is not one. */
export function revocationTargetOf(key: string): RevocationTarget | undefined {
  const rest = key.slice(REVOCATION_PREFIX.length);
  const value = rest.slice(4);
  if (!key.startsWith(REVOCATION_PREFIX) || value === '') return undefined;
  if (rest.startsWith('sub:')) return { subject: value };
  if (rest.startsWith('jti:')) return { jti: value };
  if (rest.startsWith('sid:')) return { sessionId: value };
  return undefined;
}

/** The revocation keys an identity can be refused by. */
function keysOf(identity: Identity): string[] {
  const keys: string[] = [];
  if (identity.subject !== null) keys.push(`sub:${identity.subject}`);
  if (typeof identity.claims.jti === 'string') keys.push(`jti:${identity.claims.jti}`);
  if (identity.sessionId !== undefined) keys.push(`sid:${identity.sessionId}`);
  return keys;
}

/** Whether an identity is one a revocation target names. */
export function matches(identity: Identity, target: RevocationTarget): boolean {
  return keysOf(identity).includes(keyOf(target));
}

/**
 * Revoked subjects, token ids and session ids, each kept until the revoked credential's expiry when it
 * is known, otherwise 24 hours (SPEC 9); bounded, so a flood of revocations cannot exhaust memory.
 */
export class Revocations {
  readonly #entries = new LRUCache<string, true>({ max: MAX_ENTRIES, ttlAutopurge: false, ttl: DEFAULT_TTL_MS });

  /** Records a revocation until `untilSec` (seconds since the epoch), else for 24 hours. */
  add(target: RevocationTarget, untilSec?: number): void {
    const ttl = untilSec === undefined ? DEFAULT_TTL_MS : Math.max(1000, untilSec * 1000 - Date.now());
    this.#entries.set(keyOf(target), true, { ttl });
  }

  isRevoked(identity: Identity): boolean {
    return keysOf(identity).some((key) => this.#entries.has(key));
  }
}
