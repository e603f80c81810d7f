// A real server on a fixed loopback port whose behaviour a fault test switches between healthy and broken:
// the same address the gateway was configured with goes down, hangs, answers garbage or dies mid-answer,
// then comes back, so a test can watch one gateway fail and recover.
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import type { Teardown } from './net.js';

/**
 * How the server behaves for the next connection:
 * - `ok`: the healthy handler answers;
 * - `down`: nothing listens on the port (connections are refused);
 * - `hang`: TCP accepted, the request read, never an answer;
 * - `slow`: the healthy answer, `slowMs` late;
 * - `garbage`: bytes that are not HTTP (another protocol on the port), then the connection is closed;
 * - `eof`: TCP accepted and closed at once (FIN) without a byte;
 * - `reset`: half an HTTP head, then a TCP reset (the process died mid-answer).
 */
export type Fault = 'ok' | 'down' | 'hang' | 'slow' | 'garbage' | 'eof' | 'reset';

/** What another service on the port would say: not HTTP at all. */
export const GARBAGE = 'SSH-2.0-OpenSSH_9.6\r\n\0\xff\xfe garbage \r\n\r\n';

/** The healthy behaviour: a plain request, and (for an upstream) an upgrade. */
export interface Healthy {
  request?(req: IncomingMessage, res: ServerResponse): void;
  upgrade?(req: IncomingMessage, socket: Duplex, head: Buffer): void;
}

/** A {@link Fault}-switchable HTTP server on 127.0.0.1; `connections` counts every TCP connection it accepted. */
export class FaultServer {
  mode: Fault = 'ok';
  /** How late `slow` answers. */
  slowMs = 3000;
  /** TCP connections accepted so far, whatever the mode. */
  connections = 0;
  /** Requests (plain or upgrade) that reached a handler. */
  requests = 0;
  readonly #server = createServer();
  readonly #sockets = new Set<Socket>();
  readonly #timers = new Set<NodeJS.Timeout>();
  /** Requests held by `hang` or `slow` whose connection is still open. */
  readonly #waiting = new Set<Duplex | ServerResponse>();
  #port = 0;

  constructor(healthy: Healthy) {
    const waiting = this.#waiting;
    this.held = {
      get open() {
        return waiting.size;
      },
    };
    this.#server.on('connection', (socket: Socket) => {
      this.connections++;
      this.#sockets.add(socket);
      socket.once('close', () => this.#sockets.delete(socket));
      socket.on('error', () => {});
      if (this.mode === 'garbage') socket.end(Buffer.from(GARBAGE, 'latin1'));
      else if (this.mode === 'eof') socket.end();
      else if (this.mode === 'reset') socket.write('HTTP/1.1 200 OK\r\nContent-Ty', () => socket.resetAndDestroy());
    });
    const handle = (answer: () => void, gone: Duplex | ServerResponse) => {
      this.requests++;
      if (this.mode !== 'hang' && this.mode !== 'slow') return answer();
      this.#waiting.add(gone);
      gone.once('close', () => this.#waiting.delete(gone));
      if (this.mode === 'hang') return;
      const timer = setTimeout(() => {
        this.#timers.delete(timer);
        this.#waiting.delete(gone);
        answer();
      }, this.slowMs);
      this.#timers.add(timer);
      gone.once('close', () => clearTimeout(timer));
    };
    this.#server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      if (this.mode === 'garbage' || this.mode === 'eof' || this.mode === 'reset') return;
      req.resume();
      handle(() => (healthy.request ? healthy.request(req, res) : res.writeHead(404).end()), res);
    });
    this.#server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      if (this.mode === 'garbage' || this.mode === 'eof' || this.mode === 'reset') return;
      // Like a real server, it notices a peer that goes away while the answer is pending.
      socket.on('end', () => socket.destroy());
      handle(() => (healthy.upgrade ? healthy.upgrade(req, socket, head) : socket.destroy()), socket);
    });
  }

  /** Listens on a free port and registers the teardown. */
  async start(t: Teardown): Promise<this> {
    await this.#listen(0);
    this.#port = (this.#server.address() as AddressInfo).port;
    t.teardown(() => this.#stop());
    return this;
  }

  get port(): number {
    return this.#port;
  }

  /** `http://127.0.0.1:PORT` + path. */
  http(path = '/'): string {
    return `http://127.0.0.1:${this.#port}${path}`;
  }

  /** `ws://127.0.0.1:PORT`. */
  get ws(): string {
    return `ws://127.0.0.1:${this.#port}`;
  }

  /**
   * Held requests (`hang`, `slow`) still open: what a client that gave up must have closed. Unlike
   * {@link open}, not counting the idle keep-alive connections fetch's pool keeps (and sometimes opens
   * spare) for a few seconds.
   */
  readonly held: { readonly open: number };

  /** Connections open on the server side right now. */
  get open(): number {
    return this.#sockets.size;
  }

  /**
   * Switches the behaviour, as a restart would: open connections are dropped (a client's pooled keep-alive
   * connection would otherwise carry the next request past a fault that acts on new connections); `down`
   * stops listening, leaving it listens again on the same port.
   */
  async set(mode: Fault): Promise<void> {
    const closing = [...this.#sockets].map((socket) => once(socket, 'close'));
    this.dropAll();
    await Promise.all(closing);
    // Lets the clients of those connections see them close before anything is sent again.
    await new Promise((r) => setTimeout(r, 20));
    if (mode === 'down' && this.#server.listening) await this.#stop();
    else if (mode !== 'down' && !this.#server.listening) await this.#listen(this.#port);
    this.mode = mode;
  }

  /** Drops every open connection (a hung request included). */
  dropAll(): void {
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    for (const socket of this.#sockets) socket.destroy();
  }

  async #listen(port: number): Promise<void> {
    this.#server.listen(port, '127.0.0.1');
    await once(this.#server, 'listening');
  }

  async #stop(): Promise<void> {
    this.dropAll();
    if (!this.#server.listening) return;
    await new Promise((r) => this.#server.close(r));
  }
}

/** A ws echo upstream behind a {@link FaultServer}: healthy until told otherwise. */
export function echoFaultServer(t: Teardown): Promise<FaultServer> {
  const wss = new WebSocketServer({ noServer: true });
  wss.on('connection', (ws) => {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    ws.on('error', () => {});
  });
  t.teardown(() => {
    for (const ws of wss.clients) ws.terminate();
    wss.close();
  });
  return new FaultServer({ upgrade: (req, socket: Duplex, head) => wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req)) }).start(t);
}
