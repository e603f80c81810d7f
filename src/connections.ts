import { randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { ConnectionCounts } from './limits.js';
import type { Identity } from './types.js';

/** What the gateway knows of one live connection (admin `/connections`, revocation). */
export interface LiveConnection {
  readonly id: string;
  readonly route: string;
  readonly mode: string;
  readonly remoteAddress: string | null;
  readonly startedAt: number;
  /** Replaced when a first message authenticates or a refresh extends the connection. */
  identity: Identity;
  /** Ends the connection for a revocation: a close frame where the gateway speaks WebSocket, else destroy. */
  end(code: number, reason: string): void;
}

/** A live connection as `GET /connections` lists it (SPEC 9: times in ISO 8601). */
export interface ConnectionView {
  id: string;
  route: string;
  subject: string | null;
  remoteAddress: string | null;
  startedAt: string;
  expiresAt: string | null;
  mode: string;
  bytesIn: number;
  bytesOut: number;
}

/** Seconds since the epoch as ISO 8601; null when absent or beyond what a Date holds (a token may say anything). */
function isoTime(seconds: number | undefined): string | null {
  if (seconds === undefined) return null;
  const date = new Date(seconds * 1000);
  return Number.isNaN(date.getTime()) ? null : date.toISOString();
}

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
  readonly #live = new Map<Duplex, LiveConnection>();
  readonly #counts = new ConnectionCounts();
  #reserved = 0;
  #onIdle: (() => void) | undefined;
  /** Called when a tracked connection's client socket closes (metrics count its last bytes). */
  onClose: ((socket: Duplex, connection: LiveConnection) => void) | undefined;

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

  /**
   * Counts `socket` under each key until it closes; the first call for a socket also records what is
   * known of it (later calls only add keys).
   */
  track(socket: Duplex, keys: readonly string[], info?: Omit<LiveConnection, 'id' | 'startedAt' | 'end'>): void {
    if (!this.#live.has(socket)) {
      this.#live.set(socket, { id: randomUUID(), startedAt: Date.now(), route: '', mode: '', remoteAddress: null, identity: { subject: null, authenticator: '', claims: {} }, ...info, end: () => socket.destroy() });
    }
    const releases = keys.map((key) => this.#counts.acquire(key));
    socket.once('close', () => {
      const connection = this.#live.get(socket);
      if (connection && this.onClose) this.onClose(socket, connection);
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

  /** The record of a live connection, to update (identity, how to end it). */
  get(socket: Duplex): LiveConnection | undefined {
    return this.#live.get(socket);
  }

  /** Every live connection. */
  connections(): IterableIterator<LiveConnection> {
    return this.#live.values();
  }

  /** Every live connection with its client socket. */
  live(): IterableIterator<[Duplex, LiveConnection]> {
    return this.#live.entries();
  }

  /** The live connections as `GET /connections` shows them; bytes are what crossed the client socket. */
  list(): ConnectionView[] {
    return [...this.#live].map(([socket, c]) => ({
      id: c.id,
      route: c.route,
      subject: c.identity.subject,
      remoteAddress: c.remoteAddress,
      startedAt: new Date(c.startedAt).toISOString(),
      expiresAt: isoTime(c.identity.expiresAt),
      mode: c.mode,
      bytesIn: (socket as Socket).bytesRead ?? 0,
      bytesOut: (socket as Socket).bytesWritten ?? 0,
    }));
  }

  destroyAll(): void {
    for (const socket of this.#live.keys()) socket.destroy();
  }
}
