import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';

const markers = new WeakMap<IncomingMessage, string>();

/** Remembers the subprotocol marker a request offered, to select it when nothing else is offered. */
export function rememberMarker(req: IncomingMessage, marker: string): void {
  markers.set(req, marker);
}

/** The marker remembered for a request, if any. */
export function markerOf(req: IncomingMessage): string | undefined {
  return markers.get(req);
}

/**
 * Picks the subprotocol for a local connection: the first offered one that is not the credential marker,
 * else the marker (so a browser that offered only `bearer` + its token still completes the handshake).
 */
export function selectProtocol(protocols: Set<string>, req: IncomingMessage): string | false {
  const marker = markers.get(req);
  for (const p of protocols) if (p !== marker) return p;
  return marker !== undefined && protocols.has(marker) ? marker : false;
}

/** Hands accepted upgrades to the application through a `noServer` ws server. */
export class LocalHandoff {
  readonly #wss: WebSocketServer;

  constructor(maxPayload: number) {
    this.#wss = new WebSocketServer({ noServer: true, maxPayload, handleProtocols: selectProtocol, clientTracking: true });
  }

  accept(req: IncomingMessage, socket: Duplex, head: Buffer, done: (ws: WebSocket) => void): void {
    this.#wss.handleUpgrade(req, socket, head, done);
  }

  /** Live local connections. */
  get clients(): Set<WebSocket> {
    return this.#wss.clients;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.#wss.close(() => resolve()));
  }
}
