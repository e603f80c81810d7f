import { ConnectionCounts } from './limits.js';

/** How a route picks among its upstreams. */
export type Balance = 'round-robin' | 'least-connections';

/**
 * The upstream targets of one route: round-robin (or least-connections) over the healthy ones, passive
 * ejection for `ejectMs` after a failed connect, and — when every target is ejected — the one ejected
 * longest ago (SPEC 9), so a recovered upstream is found again.
 */
export class UpstreamPool {
  readonly targets: readonly string[];
  readonly #balance: Balance;
  readonly #ejectMs: number;
  readonly #ejectedAt = new Map<string, number>();
  readonly #active = new ConnectionCounts();
  #next = 0;

  constructor(targets: readonly string[], balance: Balance = 'round-robin', ejectMs = 10_000) {
    this.targets = targets;
    this.#balance = balance;
    this.#ejectMs = ejectMs;
  }

  /**
   * The target for the next connection, skipping `tried` (the targets that already failed for it);
   * `preferred` (a sticky client's) when it is healthy.
   */
  pick(tried: ReadonlySet<string> = new Set(), now = Date.now(), preferred?: string): string | undefined {
    if (preferred !== undefined && !tried.has(preferred) && !this.isEjected(preferred, now)) return preferred;
    const candidates = this.targets.filter((t) => !tried.has(t));
    if (candidates.length === 0) return undefined;
    const healthy = candidates.filter((t) => !this.isEjected(t, now));
    if (healthy.length === 0) {
      return candidates.reduce((a, b) => (this.#ejectedAt.get(a)! <= this.#ejectedAt.get(b)! ? a : b));
    }
    if (this.#balance === 'least-connections') {
      return healthy.reduce((a, b) => (this.active(b) < this.active(a) ? b : a));
    }
    // Round-robin over the whole list keeps the rotation stable while targets come and go.
    for (let i = 0; i < this.targets.length; i++) {
      const target = this.targets[(this.#next + i) % this.targets.length]!;
      if (healthy.includes(target)) {
        this.#next = (this.targets.indexOf(target) + 1) % this.targets.length;
        return target;
      }
    }
    return healthy[0];
  }

  isEjected(target: string, now = Date.now()): boolean {
    const at = this.#ejectedAt.get(target);
    if (at === undefined) return false;
    if (now - at < this.#ejectMs) return true;
    this.#ejectedAt.delete(target);
    return false;
  }

  /** Takes a target out of rotation for `ejectMs` (a refused or failed connect). */
  eject(target: string, now = Date.now()): void {
    this.#ejectedAt.set(target, now);
  }

  /** Live connections on a target (for least-connections). */
  active(target: string): number {
    return this.#active.count(target);
  }

  /** Counts a live connection on a target; the returned function uncounts it (once). */
  acquire(target: string): () => void {
    return this.#active.acquire(target);
  }
}
