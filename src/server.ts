import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { Duplex } from 'node:stream';
import { DEFAULT_MAX_HEADER_BYTES, MAX_URL_BYTES, requestIdOf } from './checks.js';
import { GatewayError, type ErrorCode } from './errors.js';
import type { Gateway } from './gateway.js';
import { rejectionBytes, sendRejection } from './respond.js';

const CLIENT_ERRORS: Record<string, ErrorCode> = {
  HPE_HEADER_OVERFLOW: 'GW_ERR_HEADERS_TOO_LARGE',
  ERR_HTTP_REQUEST_TIMEOUT: 'GW_ERR_REQUEST_TIMEOUT',
};

/**
 * The sidecar's HTTP server: upgrades go to the gateway; plain requests get 426 on a route path and
 * 404 elsewhere; malformed, oversized (431) or too slow (408) request heads get the same JSON answers.
 */
export function createGatewayServer(gateway: Gateway): Server {
  const limits = gateway.config.limits ?? {};
  const handshakeTimeoutMs = limits.handshakeTimeoutMs ?? 5000;
  const tls = gateway.config.listen?.tls;
  // With listen.tls, clients connect with wss:// (an https server emits the same 'upgrade' events).
  const create = (tls ? (options: object, handler: never) => createTlsServer({ ...options, cert: readFileSync(tls.cert), key: readFileSync(tls.key) }, handler) : createServer) as typeof createServer;
  const server = create(
    {
      // Room for an over-long URL on top of the header limit, so it can be told apart (414) from too many
      // header bytes (431): the gateway checks both itself; only a head beyond even that is Node's 431.
      maxHeaderSize: (limits.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES) + MAX_URL_BYTES + 1024,
      headersTimeout: handshakeTimeoutMs,
      requestTimeout: Math.max(handshakeTimeoutMs, 30000),
      connectionsCheckingInterval: Math.min(1000, Math.max(100, Math.floor(handshakeTimeoutMs / 2))),
    },
    async function onRequest(req: IncomingMessage, res: ServerResponse) {
      if (await gateway.handleRequest(req, res)) return;
      const routed = gateway.routeFor(req) !== undefined;
      sendRejection(res, new GatewayError(routed ? 'GW_ERR_UPGRADE_REQUIRED' : 'GW_ERR_ROUTE_NOT_FOUND', undefined, routed ? { Upgrade: 'websocket' } : {}), requestIdOf(req));
    },
  );
  server.on('upgrade', gateway.handleUpgrade);
  server.on('clientError', function onClientError(err: NodeJS.ErrnoException, socket: Duplex) {
    if (!socket.writable || (err.code === 'ECONNRESET' && !socket.writable)) return void socket.destroy();
    const code = CLIENT_ERRORS[err.code ?? ''] ?? 'GW_ERR_BAD_UPGRADE';
    socket.once('finish', socket.destroy);
    socket.end(rejectionBytes(new GatewayError(code), randomUUID()));
  });
  return server;
}
