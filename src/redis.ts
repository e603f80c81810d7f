import { createClient } from '@redis/client';
import type { Logger } from 'pino';

/** The one Redis connection a gateway shares between its stores. */
export interface SharedRedis {
  /** GET a key; fails at once (not queued) while Redis is unreachable, so the handshake fails closed with 503. */
  get(key: string): Promise<string | null>;
  set(key: string, value: string, ttlSec?: number): Promise<void>;
  readonly isReady: boolean;
  readonly url: string;
  /** Resolves once connected or once the first attempt failed (node-redis keeps retrying in the background). */
  ready(): Promise<void>;
  close(): Promise<void>;
}

/** Connects to `redis.url` with node-redis. An error listener is always attached: without one node-redis crashes the process. */
export function connectRedis(url: string, log: Logger): SharedRedis {
  const client = createClient({
    url,
    disableOfflineQueue: true,
    socket: { connectTimeout: 2000, reconnectStrategy: (retries) => Math.min(100 * 2 ** retries, 2000) },
  });
  let lastError = '';
  client.on('error', function onRedisError(err: Error) {
    // One line per distinct failure, not one per reconnect attempt.
    if (err.message !== lastError) log.warn({ error: { message: err.message } }, 'redis error');
    lastError = err.message;
  });
  client.on('ready', () => {
    if (lastError) log.info('redis reconnected');
    lastError = '';
  });
  // connect() only settles once a connection succeeds; start-up must not wait on a Redis that is down.
  const firstAttempt = new Promise<void>((resolve) => {
    client.once('ready', resolve);
    client.once('error', () => resolve());
  });
  client.connect().catch((err: Error) => log.warn({ error: { message: err.message } }, 'redis connect failed'));
  return {
    get: (key) => client.get(key),
    async set(key, value, ttlSec) {
      await client.set(key, value, ttlSec ? { expiration: { type: 'EX', value: ttlSec } } : undefined);
    },
    url,
    get isReady() {
      return client.isReady;
    },
    ready: () => firstAttempt,
    async close() {
      if (client.isReady) await client.close().catch(() => client.destroy());
      else if (client.isOpen) client.destroy(); // also stops the reconnect loop
    },
  };
}
