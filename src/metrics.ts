import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { LiveConnection } from './connections.js';

/** How a handshake decision ended, for `portcullis_upgrades_total{result}`. */
export type UpgradeResult = 'accepted' | 'rejected' | 'abandoned';

/** What the metrics read at scrape time: the live connections and their client sockets. */
export interface MetricsSource {
  live(): Iterable<[Duplex, LiveConnection]>;
}

interface Counted {
  bytesIn: number;
  bytesOut: number;
}

/**
 * The SPEC 6.2 metrics of one gateway, in a registry of its own (two gateways in one process, or a
 * reload, never collide). Labels are bounded by the config: route paths, authenticator names, upstream
 * targets; never a subject or a client address. Connection counts and bytes are read when scraped, so
 * the hot path pays nothing for them.
 */
export class GatewayMetrics {
  readonly #registry = new Registry();
  #defaults = false;
  readonly #upgrades: Counter<'route' | 'result' | 'status'>;
  readonly #authDuration: Histogram<'authenticator'>;
  readonly #upstreamErrors: Counter<'route' | 'target'>;
  readonly #bytes: Counter<'route' | 'direction'>;
  readonly #revocations: Counter;
  /** Bytes of each live connection already added to `portcullis_bytes_total`. */
  readonly #counted = new WeakMap<Duplex, Counted>();
  // The hot path only adds to plain maps; prom-client's label hashing runs at scrape time (collect).
  readonly #pendingUpgrades = new Map<string, number>();
  readonly #pendingBytes = new Map<string, number>();
  readonly #durations = new Map<string, { observe(seconds: number): void }>();

  constructor(source: MetricsSource) {
    const registers = [this.#registry];
    const addBytes = (socket: Duplex, route: string) => this.#addBytes(socket, route);
    const pendingUpgrades = this.#pendingUpgrades;
    const pendingBytes = this.#pendingBytes;
    this.#upgrades = new Counter({
      name: 'portcullis_upgrades_total',
      help: 'Upgrade handshakes decided, by route, result and HTTP status (101 when accepted).',
      labelNames: ['route', 'result', 'status'],
      registers,
      collect() {
        for (const [key, n] of pendingUpgrades) {
          const [route, result, status] = key.split('\0') as [string, string, string];
          this.inc({ route, result, status }, n);
        }
        pendingUpgrades.clear();
      },
    });
    this.#authDuration = new Histogram({
      name: 'portcullis_auth_duration_seconds',
      help: 'Time an authenticator took to decide a handshake.',
      labelNames: ['authenticator'],
      buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
      registers,
    });
    this.#bytes = new Counter({
      name: 'portcullis_bytes_total',
      help: 'Bytes on client connections handed on, by route and direction (in: from clients).',
      labelNames: ['route', 'direction'],
      registers,
      collect() {
        for (const [socket, connection] of source.live()) addBytes(socket, connection.route);
        for (const [key, n] of pendingBytes) {
          const [route, direction] = key.split('\0') as [string, string];
          this.inc({ route, direction }, n);
        }
        pendingBytes.clear();
      },
    });
    // A route and mode seen once stays in the output, at 0 when nothing is connected.
    const seen = new Map<string, { route: string; mode: string }>();
    new Gauge({
      name: 'portcullis_connections',
      help: 'Live connections, by route and mode.',
      labelNames: ['route', 'mode'],
      registers,
      collect() {
        for (const labels of seen.values()) this.set(labels, 0);
        for (const [, { route, mode }] of source.live()) {
          const labels = { route, mode };
          if (!seen.has(`${route}\0${mode}`)) seen.set(`${route}\0${mode}`, labels);
          this.inc(labels);
        }
      },
    });
    this.#upstreamErrors = new Counter({ name: 'portcullis_upstream_errors_total', help: 'Upstream connections that failed (refused, reset, timed out, bad handshake answer), by route and target.', labelNames: ['route', 'target'], registers });
    this.#revocations = new Counter({ name: 'portcullis_revocations_total', help: 'Revocations made through this gateway (POST /revoke, gateway.revoke).', registers });
  }

  /** Counts a decided handshake; `route` is empty when no route matched. */
  upgrade(route: string, result: UpgradeResult, status: number): void {
    const key = `${route}\0${result}\0${result === 'abandoned' ? '' : status}`;
    this.#pendingUpgrades.set(key, (this.#pendingUpgrades.get(key) ?? 0) + 1);
  }

  authDuration(authenticator: string, seconds: number): void {
    let child = this.#durations.get(authenticator);
    if (!child) this.#durations.set(authenticator, (child = this.#authDuration.labels({ authenticator })));
    child.observe(seconds);
  }

  upstreamError(route: string, target: string): void {
    this.#upstreamErrors.inc({ route, target });
  }

  revocation(): void {
    this.#revocations.inc();
  }

  /** A connection ended: what it moved since the last scrape is counted now. */
  closed(socket: Duplex, route: string): void {
    this.#addBytes(socket, route, false);
  }

  /**
   * The registry, with the default process metrics added on first use (they keep observers running,
   * which a gateway nobody scrapes should not pay for).
   */
  get registry(): Registry {
    if (!this.#defaults) {
      this.#defaults = true;
      collectDefaultMetrics({ register: this.#registry });
    }
    return this.#registry;
  }

  /** The Prometheus text format. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  /** Adds what `socket` moved since last time; `live` false: it is closed, forget it. */
  #addBytes(socket: Duplex, route: string, live = true): void {
    const counted = this.#counted.get(socket);
    const { bytesRead = 0, bytesWritten = 0 } = socket as Partial<Socket>;
    this.#addPending(`${route}\0in`, bytesRead - (counted?.bytesIn ?? 0));
    this.#addPending(`${route}\0out`, bytesWritten - (counted?.bytesOut ?? 0));
    if (!live) this.#counted.delete(socket);
    else if (counted) {
      counted.bytesIn = bytesRead;
      counted.bytesOut = bytesWritten;
    } else this.#counted.set(socket, { bytesIn: bytesRead, bytesOut: bytesWritten });
  }

  #addPending(key: string, n: number): void {
    if (n > 0) this.#pendingBytes.set(key, (this.#pendingBytes.get(key) ?? 0) + n);
  }
}
