// The only file that imports the proxy library. http-proxy 1.18.1 crashes the process on a client reset
// mid-handshake (test/integration/http-proxy-crash.test.ts shows it); http-proxy-3 has the same API.
import { Agent as HttpAgent, type IncomingMessage, type ServerResponse } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { connect as netConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { createProxyServer } from 'http-proxy-3';

/** How to reach an upstream's TCP (or TLS) port. */
export interface DialOptions {
  readonly timeoutMs: number;
  readonly tlsVerify: boolean;
  readonly ca?: string | undefined;
}

/**
 * Opens the TCP (for `wss://`, TLS) connection to a target before anything is proxied, so a refused or
 * failed connect can be retried on another target while the client socket is still untouched.
 */
export function dial(target: string, options: DialOptions): Promise<Socket> {
  const url = new URL(target);
  const secure = url.protocol === 'wss:';
  const port = Number(url.port) || (secure ? 443 : 80);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  return new Promise((resolve, reject) => {
    const socket = secure
      ? tlsConnect({ host, port, servername: /^[\d.:]+$/.test(host) ? undefined : host, rejectUnauthorized: options.tlsVerify, ...(options.ca !== undefined && { ca: options.ca }) })
      : netConnect({ host, port });
    const timer = setTimeout(() => socket.destroy(new Error('upstream connect timed out')), options.timeoutMs);
    socket.once(secure ? 'secureConnect' : 'connect', () => {
      clearTimeout(timer);
      socket.removeListener('error', onError);
      resolve(socket);
    });
    socket.once('error', onError);
    function onError(err: Error) {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    }
  });
}

// Hands http-proxy-3 the connection `dial` already opened, instead of opening its own.
class DialedHttpAgent extends HttpAgent {
  constructor(readonly socket: Socket) {
    super({ keepAlive: false });
  }
  override createConnection(): Duplex {
    return this.socket;
  }
}
class DialedHttpsAgent extends HttpsAgent {
  constructor(readonly socket: Socket) {
    super({ keepAlive: false });
  }
  override createConnection(): Duplex {
    return this.socket;
  }
}

/** One upgrade to forward over an already dialed connection. */
export interface ForwardRequest {
  readonly target: string;
  readonly upstream: Socket;
  /** Budget for the upstream's answer; past it the upstream request is aborted (→ 502). */
  readonly timeoutMs: number;
  /** The subprotocol marker to answer with when the upstream selects none. */
  readonly marker?: string | undefined;
  /** Called once the upstream answered 101 and both sockets are piped. */
  onOpen(upstream: Socket): void;
  /** Called on a failure; `answered` tells whether the upstream's response already reached the client. */
  onError(err: Error, answered: boolean): void;
}

/**
 * Pipes accepted upgrades to upstream WebSocket servers with http-proxy-3, plus the mitigation that keeps
 * sockets from leaking when the client leaves mid-handshake: the upstream request is aborted when the
 * client closes before the 101, and the upstream socket destroyed when it closes after.
 */
export class UpstreamProxy {
  readonly #proxy = createProxyServer({ ws: true, xfwd: false, changeOrigin: false });
  readonly #pending = new WeakMap<IncomingMessage, ForwardRequest & { answered: boolean }>();
  readonly #cookies = new WeakMap<IncomingMessage, string>();

  constructor() {
    // A sticky cookie is added beside whatever cookies the upstream sets itself.
    this.#proxy.on('proxyRes', (proxyRes, req) => {
      const cookie = this.#cookies.get(req);
      if (cookie === undefined) return;
      const prior = proxyRes.headers['set-cookie'] ?? [];
      proxyRes.headers['set-cookie'] = [...prior, cookie];
    });
    this.#proxy.on('proxyReqWs', (proxyReq, req, socket) => {
      const state = this.#pending.get(req);
      if (!state) return;
      proxyReq.setTimeout(state.timeoutMs, () => proxyReq.destroy(new Error('upstream handshake timed out')));
      const abortUpstream = () => proxyReq.destroy();
      socket.once('close', abortUpstream);
      proxyReq.once('response', () => {
        state.answered = true;
        socket.off('close', abortUpstream);
      });
      // Registered before http-proxy-3's own 'upgrade' listener, so this runs before the 101 is written.
      proxyReq.once('upgrade', (res, upstream: Socket) => {
        state.answered = true;
        socket.off('close', abortUpstream);
        socket.once('close', () => upstream.destroy());
        if (socket.destroyed) return void upstream.destroy();
        if (state.marker && res.headers['sec-websocket-protocol'] === undefined) {
          res.headers['sec-websocket-protocol'] = state.marker;
        }
        state.onOpen(upstream);
      });
    });
    // Never without an error listener: an EventEmitter 'error' with none crashes the process.
    this.#proxy.on('error', () => {});
  }

  /** Forwards the upgrade; `req.headers` and `req.url` are sent as they are now. */
  forward(req: IncomingMessage, socket: Duplex, head: Buffer, request: ForwardRequest): void {
    const state = { ...request, answered: false };
    this.#pending.set(req, state);
    const secure = request.target.startsWith('wss:');
    const agent = secure ? new DialedHttpsAgent(request.upstream) : new DialedHttpAgent(request.upstream);
    this.#proxy.ws(req, socket, head, { target: request.target, agent }, (err: Error) => {
      request.upstream.destroy();
      state.onError(err, state.answered);
    });
  }

  /**
   * Proxies a plain HTTP request (a route with `http: true`) over an already dialed connection; the
   * target's ws:// or wss:// becomes http:// or https://.
   */
  web(req: IncomingMessage, res: ServerResponse, request: { target: string; upstream: Socket; setCookie?: string | undefined; onError(err: Error): void }): void {
    if (request.setCookie !== undefined) this.#cookies.set(req, request.setCookie);
    const secure = request.target.startsWith('wss:');
    const agent = secure ? new DialedHttpsAgent(request.upstream) : new DialedHttpAgent(request.upstream);
    const target = request.target.replace(/^ws/, 'http');
    this.#proxy.web(req, res, { target, agent }, (err: Error) => {
      request.upstream.destroy();
      request.onError(err);
    });
  }

  close(): void {
    this.#proxy.close();
  }
}
