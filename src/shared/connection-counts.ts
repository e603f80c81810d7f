import type { Logger } from 'pino';
import { hashedKeyPart, LUA_NOW_MS, SHARED_CHECK_TIMEOUT_MS, within, type SharedRedis } from '../redis.js';

/** Each replica's live connection counts: a hash per replica, `PREFIX + replica id`, field → count. */
export const COUNTS_PREFIX = 'portcullis:conns:';
/** The replicas alive: a sorted set, member = replica id, score = when it is presumed dead (ms). */
export const REPLICAS_KEY = 'portcullis:replicas';

/** The default of `redis.replicaTtlSec`. */
export const DEFAULT_REPLICA_TTL_SEC = 15;

// KEYS: replicas, own hash. ARGV: own id, ttl ms, hash prefix, then (field, cap) pairs. Sums each field
// over every live replica and counts the connection under all of them only when every cap has room:
// the check and the increment are one atomic step, so two replicas cannot both take the last slot.
// Replicas whose heartbeat stopped are dropped first; their hashes expire on their own.
const ACQUIRE = `${LUA_NOW_MS}
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
local replicas = redis.call('ZRANGE', KEYS[1], 0, -1)
for i = 4, #ARGV, 2 do
  local total = 0
  for _, id in ipairs(replicas) do
    total = total + (tonumber(redis.call('HGET', ARGV[3] .. id, ARGV[i])) or 0)
  end
  if total >= tonumber(ARGV[i + 1]) then return (i - 2) / 2 end
end
for i = 4, #ARGV, 2 do redis.call('HINCRBY', KEYS[2], ARGV[i], 1) end
redis.call('PEXPIRE', KEYS[2], ttl)
return 0
`;

// KEYS: own hash. ARGV: fields. Never below zero, and a field at zero is removed.
const RELEASE = `for i = 1, #ARGV do
  if redis.call('HINCRBY', KEYS[1], ARGV[i], -1) <= 0 then redis.call('HDEL', KEYS[1], ARGV[i]) end
end
return 0
`;

// KEYS: replicas, own hash. ARGV: own id, ttl ms, then (field, count) pairs, or none for a heartbeat.
// A heartbeat keeps this replica alive; with pairs, the hash is replaced by what this replica holds.
// Returns whether the hash exists (a flushed or restarted Redis has lost it: the caller writes it again).
const SYNC = `${LUA_NOW_MS}
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
if #ARGV > 2 then
  redis.call('DEL', KEYS[2])
  for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
end
redis.call('PEXPIRE', KEYS[2], ttl)
return redis.call('EXISTS', KEYS[2])
`;

/** One cap to respect: a count key (route and subject or client IP) and its limit. */
export interface CapCheck {
  readonly key: string;
  readonly cap: number;
}

/** What {@link SharedConnectionCounts.acquire} decided. */
export type Acquired = { readonly refused: CapCheck } | { readonly release: () => void };

/**
 * Live connection counts shared by every replica through Redis, for the per-subject and per-IP caps.
 * Each replica writes only its own hash, which expires unless its heartbeat renews it: a replica that
 * dies without closing stops counting within `ttlMs`. The counts this replica holds are also kept here,
 * so after Redis was unreachable (or lost its data) the hash is written again from them; while Redis is
 * unreachable a connection is admitted on this replica's own counts alone.
 */
export class SharedConnectionCounts {
  readonly #redis: SharedRedis;
  readonly #id: string;
  readonly #ttlMs: number;
  readonly #log: Logger;
  readonly #ownKey: string;
  /** Field → connections this replica holds under it (what its hash should say). */
  readonly #held = new Map<string, number>();
  readonly #heartbeat: NodeJS.Timeout;
  #closed = false;

  constructor(redis: SharedRedis, replicaId: string, ttlMs: number, log: Logger) {
    this.#redis = redis;
    this.#id = replicaId;
    this.#ttlMs = ttlMs;
    this.#log = log;
    this.#ownKey = COUNTS_PREFIX + replicaId;
    this.#heartbeat = setInterval(() => void this.#sync(false), Math.max(500, Math.floor(ttlMs / 3))).unref();
    redis.onReady(() => void this.#sync(true));
    if (redis.isReady) void this.#sync(false);
  }

  /**
   * Counts one connection under every check's key if each has room across all replicas.
   * @returns the first check without room, or the function that uncounts the connection (once)
   */
  async acquire(checks: readonly CapCheck[]): Promise<Acquired> {
    const fields = checks.map((c) => hashedKeyPart(c.key));
    // Whether Redis counted it: false only when it answered "no room" too late to be waited for.
    let counted = true;
    if (this.#redis.isReady) {
      const args = [this.#id, String(this.#ttlMs), COUNTS_PREFIX, ...checks.flatMap((c, i) => [fields[i]!, String(c.cap)])];
      const reply = this.#redis.evalScript(ACQUIRE, [REPLICAS_KEY, this.#ownKey], args);
      reply.then((r) => (counted = Number(r) === 0), () => {});
      try {
        const refused = Number(await within(reply, SHARED_CHECK_TIMEOUT_MS));
        if (refused > 0) return { refused: checks[refused - 1]! };
      } catch (err) {
        // Admitted on this replica's counts alone. If Redis went away the resync at reconnect writes what
        // is held (this one included); if it was only slow, its late answer says whether to uncount.
        this.#log.warn({ error: { message: (err as Error).message } }, 'shared connection counts unavailable; this replica counts alone');
      }
    }
    for (const field of fields) this.#held.set(field, (this.#held.get(field) ?? 0) + 1);
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        for (const field of fields) {
          const left = this.#held.get(field)! - 1;
          if (left > 0) this.#held.set(field, left);
          else this.#held.delete(field);
        }
        // Not reachable now: the resync at reconnect writes what is still held, without this one.
        if (counted && this.#redis.isReady && !this.#closed) this.#redis.evalScript(RELEASE, [this.#ownKey], fields).catch(() => {});
      },
    };
  }

  /** Renews this replica's heartbeat; with `full` (or when Redis lost the hash) rewrites it from what is held. */
  async #sync(full: boolean): Promise<void> {
    if (!this.#redis.isReady || this.#closed) return;
    const pairs = () => [...this.#held].flatMap(([field, n]) => [field, String(n)]);
    try {
      const exists = await this.#redis.evalScript(SYNC, [REPLICAS_KEY, this.#ownKey], [this.#id, String(this.#ttlMs), ...(full ? pairs() : [])]);
      if (!full && Number(exists) === 0 && this.#held.size > 0) await this.#sync(true);
    } catch (err) {
      this.#log.warn({ error: { message: (err as Error).message } }, 'shared connection counts not renewed');
    }
  }

  /** Stops the heartbeat and takes this replica's counts out of Redis at once (a clean stop). */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#heartbeat);
    if (!this.#redis.isReady) return;
    await this.#redis.evalScript(`redis.call('DEL', KEYS[2]) redis.call('ZREM', KEYS[1], ARGV[1]) return 0`, [REPLICAS_KEY, this.#ownKey], [this.#id]).catch(() => {});
  }
}
