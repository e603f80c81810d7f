import { LRUCache } from 'lru-cache';

const UNIT_SECONDS = { s: 1, m: 60, h: 3600 } as const;
/** Buckets kept at most; the least recently used are forgotten first (a forgotten bucket is a full one). */
const MAX_KEYS = 100_000;

/** Parses `20/s`, `100/m` or `1000/h` into tokens per second. */
export function parseRate(rate: string): number {
  const match = /^(\d+(?:\.\d+)?)\/(s|m|h)$/.exec(rate);
  if (!match) throw new TypeError(`bad rate "${rate}"`);
  return Number(match[1]) / UNIT_SECONDS[match[2] as keyof typeof UNIT_SECONDS];
}

interface Bucket {
  tokens: number;
  at: number;
}

/** A handshake rate limit: per-process ({@link RateLimiter}) or shared by replicas through Redis. */
export interface Limiter {
  /** Takes one token for `key`: 0 when allowed, else the whole seconds (≥ 1) until a token is there. */
  take(key: string): number | Promise<number>;
}

/**
 * A token bucket per key (SPEC 9): capacity `burst` (default: the per-second count, at least 1),
 * refilled continuously. Buckets live in a bounded LRU, so a flood of distinct keys costs bounded memory.
 */
export class RateLimiter implements Limiter {
  /** Tokens added per second. */
  readonly perSecond: number;
  /** The bucket's capacity. */
  readonly burst: number;
  readonly #buckets = new LRUCache<string, Bucket>({ max: MAX_KEYS });

  constructor(rate: string, burst?: number) {
    this.perSecond = parseRate(rate);
    this.burst = burst ?? Math.max(1, Math.ceil(this.perSecond));
  }

  /**
   * Takes one token for `key`.
   * @returns 0 when allowed, else the whole seconds (≥ 1) until a token is there
   */
  take(key: string, now = performance.now()): number {
    let bucket = this.#buckets.get(key);
    if (!bucket) {
      bucket = { tokens: this.burst, at: now };
      this.#buckets.set(key, bucket);
    } else {
      bucket.tokens = Math.min(this.burst, bucket.tokens + ((now - bucket.at) / 1000) * this.perSecond);
      bucket.at = now;
    }
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - bucket.tokens) / this.perSecond));
  }
}

/** Live connections per key (subject, client IP); a key is forgotten when its count drops to 0. */
export class ConnectionCounts {
  readonly #counts = new Map<string, number>();

  count(key: string): number {
    return this.#counts.get(key) ?? 0;
  }

  /** Counts one connection; the returned function uncounts it (once). */
  acquire(key: string): () => void {
    this.#counts.set(key, this.count(key) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = this.count(key) - 1;
      if (left > 0) this.#counts.set(key, left);
      else this.#counts.delete(key);
    };
  }
}
