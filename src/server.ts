import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { Duplex } from 'node:stream';
import { DEFAULT_MAX_HEADER_BYTES, MAX_URL_BYTES, requestIdOf } from './checks.js';
import { GatewayError, type ErrorCode } from './errors.js';
import type { Gateway } from './gateway.js';
import { rejectionBytes, sendRejection, writeRejection } from './respond.js';

const CLIENT_ERRORS: Record<string, ErrorCode> = {
  HPE_HEADER_OVERFLOW: 'GW_ERR_HEADERS_TOO_LARGE',
  ERR_HTTP_REQUEST_TIMEOUT: 'GW_ERR_REQUEST_TIMEOUT',
};

/**
 * The sidecar's HTTP server: upgrades go to the gateway; plain requests get 426 on a route path and
 * 404 elsewhere (400 for an HTTP/1.1 request without `Host`); `CONNECT` gets 405; malformed, oversized
 * (431) or too slow (408) request heads get the same JSON answers.
 */
export function createGatewayServer(gateway: Gateway): Server {
  const limits = gateway.config.limits ?? {};
  const handshakeTimeoutMs = limits.handshakeTimeoutMs ?? 5000;
  const tls = gateway.config.listen?.tls;
  // With listen.tls, clients connect with wss:// (an https server emits the same 'upgrade' events).
  // The response under way on each connection, so a parse error in a request pipelined behind it does not
  // write into it (Node's own clientError handler checks its private socket._httpMessage for the same).
  const answering = new WeakMap<Duplex, ServerResponse>();
  const create = (tls ? (options: object, handler: never) => createTlsServer({ ...options, cert: readFileSync(tls.cert), key: readFileSync(tls.key) }, handler) : createServer) as typeof createServer;
  const server = create(
    {
      // Room for an over-long URL on top of the header limit, so it can be told apart (414) from too many
      // header bytes (431): the gateway checks both itself; only a head beyond even that is Node's 431.
      maxHeaderSize: (limits.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES) + MAX_URL_BYTES + 1024,
      headersTimeout: handshakeTimeoutMs,
      requestTimeout: Math.max(handshakeTimeoutMs, 30000),
      connectionsCheckingInterval: Math.min(1000, Math.max(100, Math.floor(handshakeTimeoutMs / 2))),
      // Node's own check answers a bare 400 (no JSON, no X-Request-Id): the gateway answers it below.
      requireHostHeader: false,
    },
    async function onRequest(req: IncomingMessage, res: ServerResponse) {
      const socket = req.socket;
      answering.set(socket, res);
      res.once('close', () => answering.get(socket) === res && answering.delete(socket));
      // RFC 9112 3.2: an HTTP/1.1 request without Host is 400 (HTTP/1.0 may omit it), and, as Node's own
      // check did, the connection is closed: what follows on it cannot be trusted to be a request.
      if (req.httpVersion === '1.1' && req.headers.host === undefined) {
        res.shouldKeepAlive = false;
        return sendRejection(res, new GatewayError('GW_ERR_BAD_UPGRADE'), requestIdOf(req));
      }
      if (await gateway.handleRequest(req, res)) return;
      const routed = gateway.routeFor(req) !== undefined;
      sendRejection(res, new GatewayError(routed ? 'GW_ERR_UPGRADE_REQUIRED' : 'GW_ERR_ROUTE_NOT_FOUND', undefined, routed ? { Upgrade: 'websocket' } : {}), requestIdOf(req));
    },
  );
  server.on('upgrade', gateway.handleUpgrade);
  // Without a listener Node destroys a CONNECT request's socket without a word. The gateway is no
  // forward proxy: a handshake is a GET.
  server.on('connect', function onConnect(req: IncomingMessage, socket: Duplex) {
    // Node hands the socket over without its error listener; a reset must not become an uncaught error.
    socket.on('error', () => socket.destroy());
    writeRejection(socket, new GatewayError('GW_ERR_METHOD_NOT_ALLOWED', 'CONNECT', { Allow: 'GET' }), requestIdOf(req));
  });
  server.on('clientError', function onClientError(err: NodeJS.ErrnoException, socket: Duplex) {
    if (!socket.writable || (err.code === 'ECONNRESET' && !socket.writable)) return void socket.destroy();
    const closeSocket = () => {
      if (socket.destroyed) return;
      socket.once('finish', socket.destroy);
      socket.end();
    };
    // A request came after one still being answered: no second answer into (or after) it; the parser has
    // given up on this connection, so it is closed once that answer is out.
    const answer = answering.get(socket);
    if (answer) return void (answer.writableFinished ? closeSocket() : answer.once('close', closeSocket));
    const code = CLIENT_ERRORS[err.code ?? ''] ?? 'GW_ERR_BAD_UPGRADE';
    socket.once('finish', socket.destroy);
    socket.end(rejectionBytes(new GatewayError(code), randomUUID()));
  });
  return server;
}
