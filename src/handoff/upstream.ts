// The only file that imports the proxy library. http-proxy 1.18.1 crashes the process on a client reset
// mid-handshake (test/integration/http-proxy-crash.test.ts shows it); http-proxy-3 has the same API.
// Upgrades no longer go through it (see raw-pipe.ts for why); plain HTTP routes do.
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

/**
 * Plain HTTP requests on `http: true` routes, proxied with http-proxy-3 over an already dialed connection
 * (upgrades in pipe mode go through the leaner raw-pipe.ts).
 */
export class UpstreamProxy {
  readonly #proxy = createProxyServer({ xfwd: false, changeOrigin: false });
  readonly #cookies = new WeakMap<IncomingMessage, string>();

  constructor() {
    // A sticky cookie is added beside whatever cookies the upstream sets itself.
    this.#proxy.on('proxyRes', (proxyRes, req) => {
      const cookie = this.#cookies.get(req);
      if (cookie === undefined) return;
      const prior = proxyRes.headers['set-cookie'] ?? [];
      proxyRes.headers['set-cookie'] = [...prior, cookie];
    });
    // Never without an error listener: an EventEmitter 'error' with none crashes the process.
    this.#proxy.on('error', () => {});
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
