import type { SharedRedis } from '../redis.js';

/** Where express-session data lives. `get` resolves null for an unknown id and rejects when the store is down. */
export interface SessionStore {
  get(id: string): Promise<Record<string, unknown> | null>;
}

/** An in-process store, for one process and for tests: `set(id, session)` as an app would. */
export class MemorySessionStore implements SessionStore {
  readonly #sessions = new Map<string, string>();

  async get(id: string): Promise<Record<string, unknown> | null> {
    const raw = this.#sessions.get(id);
    return raw === undefined ? null : (JSON.parse(raw) as Record<string, unknown>);
  }

  /** Stores a copy of the session, as a JSON store would. */
  set(id: string, session: Record<string, unknown>): void {
    this.#sessions.set(id, JSON.stringify(session));
  }

  delete(id: string): void {
    this.#sessions.delete(id);
  }
}

/** connect-redis's layout: the session JSON under `PREFIX + id` (prefix `sess:` by default). */
export class RedisSessionStore implements SessionStore {
  readonly #redis: SharedRedis;
  readonly #prefix: string;

  constructor(redis: SharedRedis, prefix = 'sess:') {
    this.#redis = redis;
    this.#prefix = prefix;
  }

  async get(id: string): Promise<Record<string, unknown> | null> {
    const raw = await this.#redis.get(this.#prefix + id);
    if (raw === null) return null;
    const value: unknown = JSON.parse(raw);
    return value !== null && typeof value === 'object' ? (value as Record<string, unknown>) : null;
  }
}
