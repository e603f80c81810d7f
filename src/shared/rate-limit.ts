import type { Logger } from 'pino';
import { RateLimiter, type Limiter } from '../limits.js';
import { hashedKeyPart, LUA_NOW_MS, SHARED_CHECK_TIMEOUT_MS, within, type SharedRedis } from '../redis.js';

/** Where the shared buckets live; the rest of the key is a hash of route, kind and client key. */
export const RATE_PREFIX = 'portcullis:rate:';

// The same token bucket as RateLimiter, run inside Redis so every replica takes from one bucket. Redis's
// own clock is used: replicas' clocks need not agree. A bucket key expires once it would be full again,
// which is what a missing key means.
const TAKE = `
local perSecond = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
${LUA_NOW_MS}
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * perSecond / 1000)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.max(1, math.ceil((1 - tokens) / perSecond))
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / perSecond * 1000) + 1000)
return wait
`;

/**
 * A handshake rate limit shared by every replica through Redis (one atomic script per take). While Redis
 * is unreachable it falls back to a bucket in this process, so limits still hold per replica and the
 * route keeps serving.
 */
export class SharedRateLimiter implements Limiter {
  readonly #local: RateLimiter;
  readonly #redis: SharedRedis;
  readonly #scope: string;
  readonly #log: Logger;

  /** @param scope names the bucket family (route and `ip` or `sub`), so routes never share buckets */
  constructor(redis: SharedRedis, scope: string, rate: string, burst: number | undefined, log: Logger) {
    this.#local = new RateLimiter(rate, burst);
    this.#redis = redis;
    this.#scope = scope;
    this.#log = log;
  }

  async take(key: string): Promise<number> {
    if (this.#redis.isReady) {
      const bucket = RATE_PREFIX + hashedKeyPart(`${this.#scope}\0${key}`);
      try {
        const reply = this.#redis.evalScript(TAKE, [bucket], [String(this.#local.perSecond), String(this.#local.burst)]);
        return Number(await within(reply, SHARED_CHECK_TIMEOUT_MS));
      } catch (err) {
        this.#log.warn({ error: { message: (err as Error).message } }, 'shared rate limit unavailable; this replica limits alone');
      }
    }
    return this.#local.take(key);
  }
}
