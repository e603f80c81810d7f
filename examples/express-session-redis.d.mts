import type { Counting, StartOptions } from './types.mjs';

export type { Counting, Started } from './types.mjs';

export interface SessionStartOptions extends Omit<StartOptions, 'secret'> {
  /** Where express-session (connect-redis) and the gateway keep sessions. Default: REDIS_URL, else redis://127.0.0.1:6379. */
  redisUrl?: string;
  /** Signs the session cookie (express-session) and verifies it (the gateway). Default: SESSION_SECRET. */
  sessionSecret?: string;
  /** Allowed `Origin`s of the WebSocket route. Default: http://localhost:PORT and http://127.0.0.1:PORT. */
  origins?: string[];
  /** How often a live connection's session is looked up again (default 5). */
  revalidateSec?: number;
}

export declare function start(port?: number, options?: SessionStartOptions): Promise<Counting>;
