// Pipe mode's upgrade, without the generic proxy. The benchmark's profile (bench/RESULTS.md) showed
// http-proxy-3's ws path costing most of a handshake on top of the authentication: a new http.Agent per
// request (the only way to hand it our pre-dialed socket), the target URL parsed again, the 101 re-built
// from parsed headers, and a `socket.end()` on already ended sockets that builds a Node error with a
// stack each time. Here Node's own HTTP client writes the request on the dialed socket (no agent) and
// parses the answer; after a 101 the two sockets are piped. http-proxy-3 still serves plain HTTP routes.
import { request as httpRequest, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { upstreamPath } from './target.js';
import { collectBody, writeUpstreamResponse } from './upstream-response.js';

/** One upgrade to forward over an already dialed connection. */
export interface PipeRequest {
  /** The upstream URL the route names (its path, if any, prefixes the request's). */
  readonly target: string;
  readonly upstream: Socket;
  /** Budget for the upstream's answer; past it the attempt fails (→ 502). */
  readonly timeoutMs: number;
  /** The subprotocol marker to answer with when the upstream selects none. */
  readonly marker?: string | undefined;
  /** Called once the upstream answered 101 and both sockets are piped. */
  onOpen(upstream: Socket): void;
  /** Called on a failure; `answered` tells whether the upstream's response already reached the client. */
  onError(err: Error, answered: boolean): void;
}

/** The 101 head for the client: the upstream's headers as it sent them, plus the marker when it chose none. */
function switchingHead(res: IncomingMessage, marker: string | undefined): string {
  const lines = ['HTTP/1.1 101 Switching Protocols'];
  const raw = res.rawHeaders;
  let protocol = false;
  for (let i = 0; i < raw.length; i += 2) {
    if (!protocol && raw[i]!.toLowerCase() === 'sec-websocket-protocol') protocol = true;
    lines.push(`${raw[i]}: ${raw[i + 1]}`);
  }
  if (!protocol && marker !== undefined) lines.push(`Sec-WebSocket-Protocol: ${marker}`);
  return `${lines.join('\r\n')}\r\n\r\n`;
}

/**
 * Sends the (already checked and rewritten) upgrade request to the upstream over `request.upstream` and,
 * on its 101, pipes the client and the upstream; any other answer is passed to the client as it is. No
 * socket outlives the other: the client leaving mid-handshake aborts the upstream request, and after the
 * 101 either side closing or failing ends both.
 */
export function pipeUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, request: PipeRequest): void {
  const { upstream } = request;
  let answered = false;
  const upstreamReq = httpRequest({
    method: 'GET',
    path: upstreamPath(request.target, req.url ?? '/'),
    headers: req.headers,
    setHost: false,
    createConnection: () => upstream,
  });
  const fail = (err: Error) => {
    clearTimeout(timer);
    socket.off('close', abort);
    upstream.destroy();
    request.onError(err, answered);
  };
  const timer = setTimeout(() => upstreamReq.destroy(new Error('upstream handshake timed out')), request.timeoutMs);
  const abort = () => upstreamReq.destroy();
  socket.once('close', abort);
  // A client reset while the upstream answers: the 'close' that follows aborts the upstream request.
  socket.on('error', () => socket.destroy());
  upstreamReq.once('error', fail);
  // Whatever the request emits after it settled must not be an unhandled 'error'.
  upstreamReq.on('error', () => {});

  upstreamReq.once('upgrade', (res: IncomingMessage, upSocket: Duplex, upHead: Buffer) => {
    answered = true;
    clearTimeout(timer);
    socket.off('close', abort);
    upstreamReq.off('error', fail);
    if (socket.destroyed || !socket.writable) return void upSocket.destroy();
    const bothGone = () => {
      socket.destroy();
      upSocket.destroy();
    };
    socket.once('close', bothGone);
    upSocket.once('close', bothGone);
    // An error on either side ends both (the client's own error listener is above); the 'close' that
    // follows is where the connection is counted out.
    upSocket.on('error', (err: Error) => {
      bothGone();
      request.onError(err, true);
    });
    (upSocket as Socket).setNoDelay?.(true);
    (socket as Socket).setNoDelay?.(true);
    socket.write(switchingHead(res, request.marker));
    if (upHead.length > 0) socket.write(upHead);
    if (head.length > 0) upSocket.write(head);
    upSocket.pipe(socket);
    socket.pipe(upSocket);
    request.onOpen(upSocket as Socket);
  });

  // Not a WebSocket answer (a 403, say): passed through as it is, then both ends closed.
  upstreamReq.once('response', (res: IncomingMessage) => {
    answered = true;
    clearTimeout(timer);
    socket.off('close', abort);
    const finish = collectBody(res, (body) => {
      upstream.destroy();
      writeUpstreamResponse(socket, res.statusCode ?? 502, res.headers, body);
    });
    // A slow body is bounded like the handshake.
    setTimeout(finish, request.timeoutMs).unref();
  });
  upstreamReq.end();
}
