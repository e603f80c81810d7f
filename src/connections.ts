import type { Duplex } from 'node:stream';
import { ConnectionCounts } from './limits.js';

/** The keys live connections are counted under, for the route, per-IP and per-subject caps. */
export const countKey = {
  route: (routeKey: string) => `route:${routeKey}`,
  ip: (routeKey: string, ip: string) => `ip:${routeKey}:${ip}`,
  subject: (routeKey: string, subject: string) => `sub:${routeKey}:${subject}`,
};

/**
 * The live connections a gateway handed on, with counts per key (route, route+subject, route+IP) for the
 * connection caps. A connection is counted from its handoff until its client socket closes.
 */
export class ConnectionTracker {
  readonly #live = new Set<Duplex>();
  readonly #counts = new ConnectionCounts();
  #reserved = 0;
  #onIdle: (() => void) | undefined;

  get size(): number {
    return this.#live.size;
  }

  /** Live connections plus the handshakes that hold a reservation: what the connection caps compare. */
  get load(): number {
    return this.#live.size + this.#reserved;
  }

  /**
   * Holds a slot under each key while a handshake is being decided, so simultaneous handshakes cannot
   * all pass a cap that only one of them fits under. Release it once the connection is tracked (or refused).
   * @returns the release function (idempotent)
   */
  reserve(keys: readonly string[]): () => void {
    this.#reserved++;
    const releases = keys.map((key) => this.#counts.acquire(key));
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#reserved--;
      for (const release of releases) release();
    };
  }

  count(key: string): number {
    return this.#counts.count(key);
  }

  /** Counts `socket` under each key until it closes. */
  track(socket: Duplex, keys: readonly string[]): void {
    this.#live.add(socket);
    const releases = keys.map((key) => this.#counts.acquire(key));
    socket.once('close', () => {
      this.#live.delete(socket);
      for (const release of releases) release();
      if (this.#live.size === 0) this.#onIdle?.();
    });
  }

  /** Resolves when no connection is left, or after `ms`. */
  idle(ms: number): Promise<void> {
    if (this.#live.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.#onIdle = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  destroyAll(): void {
    for (const socket of this.#live) socket.destroy();
  }
}
