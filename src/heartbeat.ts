import type { WebSocket } from 'ws';

/**
 * Pings WebSockets the gateway terminates (relay and local) and terminates those that did not answer the
 * previous ping: one interval per period for all connections, not a timer each.
 */
export class Heartbeat {
  readonly #groups = new Map<number, { timer: NodeJS.Timeout; sockets: Set<WebSocket> }>();
  readonly #alive = new WeakMap<WebSocket, boolean>();

  /** Starts pinging `ws` every `periodMs` (0 disables) until it closes. */
  add(ws: WebSocket, periodMs: number): void {
    if (periodMs <= 0 || this.#alive.has(ws)) return;
    let group = this.#groups.get(periodMs);
    if (!group) {
      const sockets = new Set<WebSocket>();
      const timer = setInterval(() => this.#beat(sockets), periodMs);
      timer.unref();
      group = { timer, sockets };
      this.#groups.set(periodMs, group);
    }
    const { sockets } = group;
    this.#alive.set(ws, true);
    sockets.add(ws);
    ws.on('pong', () => this.#alive.set(ws, true));
    ws.once('close', () => {
      sockets.delete(ws);
      if (sockets.size === 0) this.#stopGroup(periodMs);
    });
  }

  #beat(sockets: Set<WebSocket>): void {
    for (const ws of sockets) {
      if (!this.#alive.get(ws)) {
        ws.terminate();
        continue;
      }
      this.#alive.set(ws, false);
      ws.ping();
    }
  }

  #stopGroup(periodMs: number): void {
    const group = this.#groups.get(periodMs);
    if (group) clearInterval(group.timer);
    this.#groups.delete(periodMs);
  }

  stop(): void {
    for (const period of [...this.#groups.keys()]) this.#stopGroup(period);
  }
}
