import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';

const markers = new WeakMap<IncomingMessage, string>();
const chosen = new WeakMap<IncomingMessage, string>();

/** Remembers the subprotocol marker a request offered, to select it when nothing else is chosen. */
export function rememberMarker(req: IncomingMessage, marker: string): void {
  markers.set(req, marker);
}

/** The marker remembered for a request, if any. */
export function markerOf(req: IncomingMessage): string | undefined {
  return markers.get(req);
}

/** Fixes the subprotocol to answer (relay: the one the upstream selected). */
export function chooseProtocol(req: IncomingMessage, protocol: string): void {
  chosen.set(req, protocol);
}

/**
 * Picks the subprotocol answered to the client: the one fixed with {@link chooseProtocol}, else the first
 * offered one that is not the credential marker, else the marker (so a browser that offered only
 * `bearer` + its token still completes the handshake).
 */
export function selectProtocol(protocols: Set<string>, req: IncomingMessage): string | false {
  const fixed = chosen.get(req);
  if (fixed !== undefined && protocols.has(fixed)) return fixed;
  const marker = markers.get(req);
  if (fixed === undefined) for (const p of protocols) if (p !== marker) return p;
  return marker !== undefined && protocols.has(marker) ? marker : false;
}

/**
 * Completes WebSocket handshakes on the gateway itself (local and relay routes, `rejectMode: "close"`),
 * through `noServer` ws servers, one per `maxPayload` value since ws takes it per server.
 */
export class Acceptor {
  readonly #servers = new Map<number, WebSocketServer>();

  /** Completes the upgrade; resolves the client WebSocket. */
  accept(req: IncomingMessage, socket: Duplex, head: Buffer, maxPayload: number): Promise<WebSocket> {
    let wss = this.#servers.get(maxPayload);
    if (!wss) {
      wss = new WebSocketServer({ noServer: true, maxPayload, handleProtocols: selectProtocol, perMessageDeflate: false });
      this.#servers.set(maxPayload, wss);
    }
    const server = wss;
    return new Promise((resolve) => server.handleUpgrade(req, socket, head, resolve));
  }

  /** Every client WebSocket still open. */
  *clients(): Iterable<WebSocket> {
    for (const wss of this.#servers.values()) yield* wss.clients;
  }

  close(): Promise<void> {
    return Promise.all([...this.#servers.values()].map((wss) => new Promise<void>((r) => wss.close(() => r())))).then(() => undefined);
  }
}
