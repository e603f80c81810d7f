import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Teardown } from './net.js';

/** What the upstream saw of one handshake. */
export interface SeenRequest {
  url: string;
  headers: IncomingMessage['headers'];
  protocol: string;
}

/** An http server on 127.0.0.1 that counts the TCP connections it accepts and tracks the open ones. */
class TrackedUpstream {
  readonly server = createServer();
  readonly #sockets = new Set<Socket>();
  #tcp = 0;

  constructor() {
    this.server.on('connection', (socket: Socket) => {
      this.#tcp++;
      this.#sockets.add(socket);
      socket.once('close', () => this.#sockets.delete(socket));
    });
  }

  /** Listens on port 0 and registers `close` with `t.teardown`. */
  async listen(t: Teardown): Promise<this> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    t.teardown(() => this.close());
    return this;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  get url(): string {
    return `ws://127.0.0.1:${this.port}`;
  }

  /** TCP connections the upstream ever accepted (also those that never became a WebSocket). */
  get tcp(): number {
    return this.#tcp;
  }

  /** Upstream-side sockets open right now. */
  get open(): number {
    return this.#sockets.size;
  }

  /** Destroys the open sockets and closes the server. */
  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise((r) => this.server.close(r));
  }
}

type EchoOptions = Omit<NonNullable<ConstructorParameters<typeof WebSocketServer>[0]>, 'server' | 'port' | 'host' | 'noServer'>;

/** A real ws echo server that records each handshake it accepted. */
export class EchoUpstream extends TrackedUpstream {
  readonly wss: WebSocketServer;
  /** Every accepted handshake, in order. */
  readonly seen: SeenRequest[] = [];

  constructor(options: EchoOptions = {}) {
    super();
    this.wss = new WebSocketServer({ ...options, server: this.server });
    // What ws's own server answers to a request that is not an upgrade.
    this.server.on('request', (_req, res) => res.writeHead(426, { 'Content-Type': 'text/plain' }).end('Upgrade Required'));
    this.wss.on('connection', (ws: WebSocket, req: IncomingMessage) => {
      this.seen.push({ url: req.url ?? '', headers: req.headers, protocol: ws.protocol });
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
      ws.on('error', () => {});
    });
  }

  override async close(): Promise<void> {
    for (const ws of this.wss.clients) ws.terminate();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
    await super.close();
  }
}

/** Starts a ws echo upstream on port 0; options go to the WebSocketServer (e.g. `handleProtocols`). Closed by `t.teardown`. */
export function startEchoUpstream(t: Teardown, options: EchoOptions = {}): Promise<EchoUpstream> {
  return new EchoUpstream(options).listen(t);
}

/**
 * An upstream whose 'upgrade' handler waits `delayMs` before answering 101 (if the socket is still there).
 * Like a real server, it notices a peer that goes away while the answer is pending.
 */
export class DelayedUpstream extends TrackedUpstream {
  /** Upgrade requests received. */
  upgrades = 0;
  /** Upgrade requests answered with 101. */
  answered = 0;

  constructor(delayMs: number) {
    super();
    this.server.on('upgrade', (req: IncomingMessage, socket: Socket) => {
      this.upgrades++;
      socket.on('error', () => {});
      socket.on('end', () => socket.destroy());
      socket.resume();
      setTimeout(() => {
        if (socket.destroyed) return;
        this.answered++;
        const accept = createHash('sha1').update(`${req.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
        socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
      }, delayMs);
    });
  }
}

/** Starts a {@link DelayedUpstream} on port 0. Closed by `t.teardown`. */
export function startDelayedUpstream(t: Teardown, delayMs: number): Promise<DelayedUpstream> {
  return new DelayedUpstream(delayMs).listen(t);
}
