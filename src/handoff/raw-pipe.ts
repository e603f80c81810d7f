// Pipe mode's upgrade, without the generic proxy. The benchmark's profile (bench/RESULTS.md) showed
// http-proxy-3's ws path costing most of a handshake on top of the authentication (an http.Agent per
// request, the target URL parsed again, the 101 re-built from parsed headers, `socket.end()` on ended
// sockets building a Node error each time), and after it Node's own HTTP client still cost a
// ClientRequest, an outgoing-message pipeline and a parser per handshake. Here the request head is one
// write on the dialed socket, the answer's head is read with a strict parser (raw-response.ts), and after
// a 101 the upstream's header lines go to the client as they came, in the same write as any bytes that
// followed them. http-proxy-3 still serves plain HTTP routes.
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { parseResponseHead, readBody, type ResponseHead } from './raw-response.js';
import { upstreamPath } from './target.js';
import { writeUpstreamResponse } from './upstream-response.js';

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

// What Node's http client refuses in a header (validateHeaderName/Value): never written raw.
const BAD_NAME = /[^!#$%&'*+.^_`|~0-9A-Za-z-]/;
const BAD_VALUE = /[^\t\x20-\x7e\x80-\xff]/;
const PROTOCOL_HEADER = /(?:^|\r\n)sec-websocket-protocol:/i;

/**
 * The upgrade request head for the upstream: the request's (already rewritten) headers, one line each.
 * @throws TypeError for a header Node's http client would refuse (an identity value with a line break)
 */
export function requestHead(target: string, req: IncomingMessage): string {
  let head = `GET ${upstreamPath(target, req.url ?? '/')} HTTP/1.1\r\n`;
  for (const name in req.headers) {
    const value = req.headers[name];
    if (value === undefined) continue;
    if (BAD_NAME.test(name)) throw new TypeError(`invalid header name ${JSON.stringify(name.slice(0, 40))}`);
    for (const v of typeof value === 'string' ? [value] : value) {
      if (BAD_VALUE.test(v)) throw new TypeError(`invalid character in header ${name}`);
      head += `${name}: ${v}\r\n`;
    }
  }
  return `${head}\r\n`;
}

/** The 101 head for the client: the upstream's header lines as it sent them, plus the marker when it chose none. */
function switchingHead(head: ResponseHead, marker: string | undefined): string {
  const lines = head.rawLines === '' ? '' : `${head.rawLines}\r\n`;
  const protocol = marker !== undefined && !PROTOCOL_HEADER.test(head.rawLines) ? `Sec-WebSocket-Protocol: ${marker}\r\n` : '';
  return `HTTP/1.1 101 Switching Protocols\r\n${lines}${protocol}\r\n`;
}

/**
 * Sends the (already checked and rewritten) upgrade request to the upstream over `request.upstream` and,
 * on its 101, pipes the client and the upstream; any other answer is passed to the client (re-framed,
 * body capped). No socket outlives the other: the client leaving mid-handshake destroys the upstream
 * connection, and after the 101 either side closing or failing ends both.
 * @throws TypeError when a header cannot be written (see {@link requestHead}); the upstream is closed
 */
export function pipeUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, request: PipeRequest): void {
  const { upstream } = request;
  let text: string;
  try {
    text = requestHead(request.target, req);
  } catch (err) {
    upstream.destroy();
    throw err;
  }
  let received: Buffer | undefined;
  let settled = false;
  const settle = () => {
    settled = true;
    clearTimeout(timer);
    socket.off('close', abort);
    upstream.off('data', onData);
    upstream.off('close', onClose);
  };
  const fail = (err: Error) => {
    if (settled) return;
    settle();
    upstream.destroy();
    request.onError(err, false);
  };
  const onClose = () => fail(new Error('upstream closed before answering the upgrade'));
  const abort = () => {
    settle();
    upstream.destroy();
  };
  const timer = setTimeout(() => fail(new Error('upstream handshake timed out')), request.timeoutMs);
  const onData = (chunk: Buffer): void => {
    received = received === undefined ? chunk : Buffer.concat([received, chunk]);
    const answer = parseResponseHead(received);
    if (answer === null) return;
    if (answer instanceof Error) return fail(answer);
    const rest = received.subarray(answer.length);
    // An interim answer (100, 103) is not the one: read on.
    if (answer.status !== 101 && answer.status < 200) {
      received = undefined;
      return rest.length > 0 ? onData(rest) : undefined;
    }
    settle();
    if (answer.status === 101) open(answer, rest);
    else passThrough(answer, rest);
  };

  const open = (answer: ResponseHead, rest: Buffer) => {
    if (socket.destroyed || !socket.writable) return void upstream.destroy();
    const bothGone = () => {
      socket.destroy();
      upstream.destroy();
    };
    socket.once('close', bothGone);
    upstream.once('close', bothGone);
    // An error on either side ends both (the client's own error listener is above); the 'close' that
    // follows is where the connection is counted out.
    upstream.on('error', (err: Error) => {
      bothGone();
      request.onError(err, true);
    });
    upstream.setNoDelay(true);
    (socket as Socket).setNoDelay?.(true);
    const switching = switchingHead(answer, request.marker);
    socket.write(rest.length > 0 ? Buffer.concat([Buffer.from(switching, 'latin1'), rest]) : switching, 'latin1');
    if (head.length > 0) upstream.write(head);
    upstream.pipe(socket);
    socket.pipe(upstream);
    request.onOpen(upstream);
  };

  // Not a WebSocket answer (a 403, say): passed through, then both ends closed.
  const passThrough = (answer: ResponseHead, rest: Buffer) => {
    const finish = readBody(upstream, answer, rest, (body) => {
      upstream.destroy();
      writeUpstreamResponse(socket, answer.status, answer.headers, body);
    });
    // A slow body is bounded like the handshake.
    setTimeout(finish, request.timeoutMs).unref();
    socket.once('close', finish);
  };

  socket.once('close', abort);
  // A client reset while the upstream answers: the 'close' that follows closes the upstream.
  socket.on('error', () => socket.destroy());
  upstream.on('error', fail);
  upstream.on('data', onData);
  upstream.once('close', onClose);
  upstream.write(text, 'latin1');
}
