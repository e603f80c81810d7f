import { createHash } from 'node:crypto';
import { createClient } from '@redis/client';
import type { Logger } from 'pino';

/** The one Redis connection a gateway shares between its stores (and a second one for pub/sub). */
export interface SharedRedis {
  /** GET a key; fails at once (not queued) while Redis is unreachable, so the handshake fails closed with 503. */
  get(key: string): Promise<string | null>;
  set(key: string, value: string, ttlSec?: number): Promise<void>;
  /** GETDEL: read and remove in one atomic step (one-time tickets across replicas). */
  getDel(key: string): Promise<string | null>;
  /** Every key matching a pattern, with its remaining time to live in ms (SCAN, not KEYS). */
  scan(pattern: string): Promise<{ key: string; ttlMs: number }[]>;
  /**
   * Runs a Lua script atomically (EVALSHA, falling back to EVAL the first time Redis has not seen it).
   * Like every command, fails at once while Redis is unreachable.
   */
  evalScript(script: string, keys: string[], args: string[]): Promise<unknown>;
  publish(channel: string, message: string): Promise<void>;
  /** Calls `onMessage` for every message on `channel`, also after reconnects. */
  subscribe(channel: string, onMessage: (message: string) => void): Promise<void>;
  readonly isReady: boolean;
  readonly url: string;
  /** Calls `fn` every time the command connection becomes ready again (not for the current state). */
  onReady(fn: () => void): void;
  /** Resolves once connected or once the first attempt failed (node-redis keeps retrying in the background). */
  ready(): Promise<void>;
  close(): Promise<void>;
}

function newClient(url: string) {
  return createClient({
    url,
    disableOfflineQueue: true,
    socket: { connectTimeout: 2000, reconnectStrategy: (retries: number) => Math.min(100 * 2 ** retries, 2000) },
  });
}
type Client = ReturnType<typeof newClient>;

function connect(url: string, log: Logger, role: string): { client: Client; firstAttempt: Promise<void> } {
  const client = newClient(url);
  let lastError = '';
  // Always listened for: without an 'error' listener node-redis crashes the process when Redis dies.
  client.on('error', function onRedisError(err: Error) {
    // One line per distinct failure, not one per reconnect attempt.
    if (err.message !== lastError) log.warn({ role, error: { message: err.message } }, 'redis error');
    lastError = err.message;
  });
  client.on('ready', () => {
    if (lastError) log.info({ role }, 'redis reconnected');
    lastError = '';
  });
  // connect() only settles once a connection succeeds; start-up must not wait on a Redis that is down.
  const firstAttempt = new Promise<void>((resolve) => {
    client.once('ready', resolve);
    client.once('error', () => resolve());
  });
  client.connect().catch((err: Error) => log.warn({ role, error: { message: err.message } }, 'redis connect failed'));
  return { client, firstAttempt };
}

async function closeClient(client: Client): Promise<void> {
  if (client.isReady) await client.close().catch(() => client.destroy());
  else if (client.isOpen) client.destroy(); // also stops the reconnect loop
}

const sha1s = new Map<string, string>();
function sha1Of(script: string): string {
  let sha = sha1s.get(script);
  if (!sha) sha1s.set(script, (sha = createHash('sha1').update(script).digest('hex')));
  return sha;
}

/** Connects to `redis.url` with node-redis. */
export function connectRedis(url: string, log: Logger): SharedRedis {
  const { client, firstAttempt } = connect(url, log, 'commands');
  let subscriber: Client | undefined;
  return {
    get: (key) => client.get(key),
    async set(key, value, ttlSec) {
      await client.set(key, value, ttlSec ? { expiration: { type: 'EX', value: ttlSec } } : undefined);
    },
    getDel: (key) => client.getDel(key),
    async scan(pattern) {
      const found: { key: string; ttlMs: number }[] = [];
      for await (const keys of client.scanIterator({ MATCH: pattern, COUNT: 500 })) {
        for (const key of keys) found.push({ key, ttlMs: await client.pTTL(key) });
      }
      return found;
    },
    async evalScript(script, keys, args) {
      const options = { keys, arguments: args };
      try {
        return await client.evalSha(sha1Of(script), options);
      } catch (err) {
        if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
        return client.eval(script, options);
      }
    },
    async publish(channel, message) {
      await client.publish(channel, message);
    },
    async subscribe(channel, onMessage) {
      // A connection in subscriber mode runs no other commands: it gets its own. node-redis subscribes
      // again by itself after a reconnect; a first attempt while Redis is down waits for it to come up.
      subscriber ??= connect(url, log, 'subscriber').client;
      const sub = subscriber;
      const attempt = () => sub.subscribe(channel, onMessage).catch((err: Error) => log.warn({ channel, error: { message: err.message } }, 'redis subscribe failed'));
      if (sub.isReady) await attempt();
      else sub.once('ready', () => void attempt());
    },
    url,
    onReady(fn) {
      client.on('ready', fn);
    },
    get isReady() {
      return client.isReady;
    },
    ready: () => firstAttempt,
    async close() {
      await Promise.all([closeClient(client), subscriber && closeClient(subscriber)]);
    },
  };
}

/** Lua: `now`, Redis's own clock in ms (replicas' clocks need not agree). */
export const LUA_NOW_MS = `local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)`;

/** A key part stored in Redis for a subject, address or route: bounded in length, and not readable. */
export function hashedKeyPart(text: string): string {
  return createHash('sha256').update(text).digest('base64url');
}

/** How long a limit check waits on Redis before this replica decides alone. */
export const SHARED_CHECK_TIMEOUT_MS = 1000;

/** `work`, or a rejection once `ms` have passed (the work itself goes on). */
export function within<T>(work: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis did not answer within ${ms} ms`)), ms);
    work.then(
      (value) => (clearTimeout(timer), resolve(value)),
      (err: unknown) => (clearTimeout(timer), reject(err)),
    );
  });
}
