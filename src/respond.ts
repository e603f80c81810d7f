import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { challengeFor } from './challenge.js';
import type { GatewayError } from './errors.js';

const UNSAFE = /[\r\n\0]/;

/** The JSON body of every rejection: `{ error, error_description }`. */
export function rejectionBody(err: GatewayError): string {
  return JSON.stringify({ error: err.error, error_description: err.description });
}

/** The headers of a rejection, in wire order (after the status line). Values are checked for CR/LF. */
export function rejectionHeaders(err: GatewayError, requestId: string, body: string): [string, string][] {
  const headers: [string, string][] = [
    ['Connection', 'close'],
    ['Content-Type', 'application/json'],
    ['Content-Length', String(Buffer.byteLength(body))],
    ['Cache-Control', 'no-store'],
    ['X-Request-Id', requestId],
  ];
  const challenge = challengeFor(err);
  if (challenge) headers.push(['WWW-Authenticate', challenge]);
  for (const [name, value] of Object.entries(err.headers)) {
    if (name !== 'WWW-Authenticate') headers.push([name, value]);
  }
  for (const [name, value] of headers) {
    if (UNSAFE.test(name) || UNSAFE.test(value)) throw new TypeError(`unsafe value for header ${name}`);
  }
  return headers;
}

// Most refusals carry no extra header: their bytes, around the request id, are the same every time.
const TEMPLATES = new Map<string, readonly [string, string]>();
const PLACEHOLDER = '\u0001';

/** The complete HTTP/1.1 response for a rejection, as bytes for a raw socket. */
export function rejectionBytes(err: GatewayError, requestId: string): string {
  for (const _ in err.headers) return buildRejection(err, requestId);
  if (UNSAFE.test(requestId)) throw new TypeError('unsafe value for header X-Request-Id');
  let template = TEMPLATES.get(err.code);
  if (!template) {
    const bytes = buildRejection(err, PLACEHOLDER);
    const at = bytes.indexOf(PLACEHOLDER);
    TEMPLATES.set(err.code, (template = [bytes.slice(0, at), bytes.slice(at + PLACEHOLDER.length)]));
  }
  return template[0] + requestId + template[1];
}

function buildRejection(err: GatewayError, requestId: string): string {
  const body = rejectionBody(err);
  const lines = [`HTTP/1.1 ${err.status} ${STATUS_CODES[err.status] ?? 'Error'}`];
  for (const [name, value] of rejectionHeaders(err, requestId, body)) lines.push(`${name}: ${value}`);
  return `${lines.join('\r\n')}\r\n\r\n${body}`;
}

/**
 * Answers a refused upgrade on the raw socket, as ws's `abortHandshake` does: the whole response,
 * `end()`, then destroy once it is flushed. Silent when someone already answered or the socket is gone.
 * @returns whether anything was written
 */
export function writeRejection(socket: Duplex, err: GatewayError, requestId: string): boolean {
  if (socket.destroyed) return false;
  if (!socket.writable || socket.writableEnded) {
    socket.destroy();
    return false;
  }
  socket.once('finish', socket.destroy);
  socket.end(rejectionBytes(err, requestId));
  return true;
}

/** The same rejection as an ordinary HTTP response (plain requests, the admin port). */
export function sendRejection(res: ServerResponse, err: GatewayError, requestId: string): void {
  if (res.headersSent) return void res.destroy();
  const body = rejectionBody(err);
  const headers = rejectionHeaders(err, requestId, body).filter(([name]) => name !== 'Connection');
  res.writeHead(err.status, Object.fromEntries(headers));
  res.end(body);
}
