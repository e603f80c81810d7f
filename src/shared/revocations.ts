import type { Logger } from 'pino';
import type { SharedRedis } from '../redis.js';
import { REVOCATION_PREFIX, REVOCATIONS_CHANNEL, revocationKey, revocationTargetOf, type RevocationTarget } from '../revocations.js';

/**
 * What a replica does with a revocation it hears of or loads: refuse it until `untilSec` and close its
 * live connections. `stored`: loaded from Redis (at start or reconnect), not just published.
 */
export type ApplyRevocation = (target: RevocationTarget, untilSec: number, options: { stored: boolean }) => void;

/**
 * Revocations across replicas through Redis: each is stored with its TTL (loaded when a replica starts or
 * reconnects, so it also binds replicas that could not hear it) and published, so every replica closes
 * the revoked connections within moments.
 */
export class SharedRevocations {
  readonly #redis: SharedRedis;
  /** Tells this replica's own messages from the others'. */
  readonly #replicaId: string;
  readonly #log: Logger;
  readonly #apply: ApplyRevocation;
  /** Subscribed and the stored ones loaded (what ready() waits for). */
  readonly started: Promise<void>;

  constructor(redis: SharedRedis, replicaId: string, log: Logger, apply: ApplyRevocation) {
    this.#redis = redis;
    this.#replicaId = replicaId;
    this.#log = log;
    this.#apply = apply;
    this.started = this.#start();
  }

  /** Stores and publishes a revocation made on this replica (already applied here). */
  share(target: RevocationTarget, untilSec: number): void {
    const ttlSec = Math.max(1, untilSec - Math.floor(Date.now() / 1000));
    void Promise.all([
      this.#redis.set(revocationKey(target), '1', ttlSec),
      this.#redis.publish(REVOCATIONS_CHANNEL, JSON.stringify({ from: this.#replicaId, target, untilSec })),
    ]).catch((err: Error) => this.#log.error({ error: { message: err.message } }, 'revocation not shared: redis unavailable'));
  }

  async #start(): Promise<void> {
    const redis = this.#redis;
    // Loaded at every (re)connect: what was revoked while this replica could not hear it counts too.
    redis.onReady(() => void this.#load());
    await redis.ready();
    await redis.subscribe(REVOCATIONS_CHANNEL, (message) => {
      try {
        const { from, target, untilSec } = JSON.parse(message) as { from: string; target: RevocationTarget; untilSec: number };
        if (from !== this.#replicaId) this.#apply(target, untilSec, { stored: false });
      } catch (err) {
        this.#log.warn({ error: { message: (err as Error).message } }, 'unreadable revocation message ignored');
      }
    });
    if (redis.isReady) await this.#load();
  }

  async #load(): Promise<void> {
    try {
      for (const { key, ttlMs } of await this.#redis.scan(`${REVOCATION_PREFIX}*`)) {
        const target = revocationTargetOf(key);
        if (target && ttlMs > 0) this.#apply(target, Math.floor((Date.now() + ttlMs) / 1000), { stored: true });
      }
    } catch (err) {
      this.#log.error({ error: { message: (err as Error).message } }, 'stored revocations not loaded: redis unavailable');
    }
  }
}
