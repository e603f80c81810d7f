// The only file that imports the proxy library. http-proxy 1.18.1 crashes the process on a client reset
// mid-handshake (test/integration/http-proxy-crash.test.ts shows it); http-proxy-3 has the same API.
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createProxyServer } from 'http-proxy-3';

/** One upgrade to forward. */
export interface ForwardRequest {
  readonly target: string;
  /** Handshake budget for the upstream's answer; past it the upstream request is aborted (→ 502). */
  readonly timeoutMs: number;
  readonly tlsVerify: boolean;
  readonly ca?: string | undefined;
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

  constructor() {
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
    this.#proxy.ws(
      req,
      socket,
      head,
      { target: request.target, secure: request.tlsVerify, ...(request.ca !== undefined && { ssl: { ca: request.ca } }) },
      (err: Error) => state.onError(err, state.answered),
    );
  }

  close(): void {
    this.#proxy.close();
  }
}
