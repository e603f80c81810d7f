import type { IncomingHttpHeaders } from 'node:http';
import type { Duplex } from 'node:stream';
import { MAX_RESPONSE_BODY } from './upstream-response.js';

/** Largest upstream response head accepted (Node's own default `maxHeaderSize`). */
export const MAX_RESPONSE_HEAD = 16 * 1024;

/** An upstream's response head, as read off the wire. */
export interface ResponseHead {
  readonly status: number;
  /** The header lines exactly as sent (without the status line and the blank line). */
  readonly rawLines: string;
  /** Lower-cased names; repeated headers joined with ", " (set-cookie kept as a list), as Node does. */
  readonly headers: IncomingHttpHeaders;
  /** Bytes of the head, blank line included: what follows belongs to the body or the WebSocket. */
  readonly length: number;
}

const STATUS_LINE = /^HTTP\/1\.[01] (\d{3})(?: [^\r\n]*)?$/;
// RFC 9110 5.1 token, and a field value without control characters other than tab (obs-text allowed).
const FIELD = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\0-\x08\x0a-\x1f\x7f]*?)[ \t]*$/;

/**
 * Reads a response head from the start of `data`: null while incomplete, an Error when it is not HTTP/1.x
 * or too large. Strict on purpose (no obs-fold, no bare LF): the upstream is a WebSocket server, and
 * anything else is "garbage" answered 502.
 */
export function parseResponseHead(data: Buffer): ResponseHead | Error | null {
  const end = data.indexOf('\r\n\r\n');
  if (end === -1) return data.length > MAX_RESPONSE_HEAD ? new Error('upstream response head too large') : null;
  if (end > MAX_RESPONSE_HEAD) return new Error('upstream response head too large');
  const text = data.toString('latin1', 0, end);
  const firstBreak = text.indexOf('\r\n');
  const statusMatch = STATUS_LINE.exec(firstBreak === -1 ? text : text.slice(0, firstBreak));
  if (!statusMatch) return new Error('upstream answered something other than HTTP/1.x');
  const rawLines = firstBreak === -1 ? '' : text.slice(firstBreak + 2);
  const headers: IncomingHttpHeaders = {};
  if (rawLines !== '') {
    for (const line of rawLines.split('\r\n')) {
      const field = FIELD.exec(line);
      if (!field) return new Error('upstream sent a malformed header line');
      const name = field[1]!.toLowerCase();
      const value = field[2]!;
      const prior = headers[name];
      if (name === 'set-cookie') (headers['set-cookie'] ??= []).push(value);
      else headers[name] = prior === undefined ? value : `${prior as string}, ${value}`;
    }
  }
  return { status: Number(statusMatch[1]), rawLines, headers, length: end + 4 };
}

/**
 * Reads the body that follows a non-101 response head off the raw upstream socket (`Content-Length`,
 * chunked, or up to the close), keeping at most {@link MAX_RESPONSE_BODY} bytes, and calls `done` once:
 * when it is complete, at the cap, when the upstream closes, or when the returned function is called
 * (a deadline).
 */
export function readBody(upstream: Duplex, head: ResponseHead, initial: Buffer, done: (body: Buffer) => void): () => void {
  const bodiless = head.status === 204 || head.status === 304;
  const chunked = /(?:^|,)[ \t]*chunked[ \t]*$/i.test(String(head.headers['transfer-encoding'] ?? ''));
  const declared = Number(head.headers['content-length']);
  const length = !chunked && head.headers['content-length'] !== undefined && Number.isSafeInteger(declared) && declared >= 0 ? declared : undefined;
  let data = initial;
  let finished = false;
  const body = () => (chunked ? dechunk(data).body : data.subarray(0, Math.min(length ?? data.length, MAX_RESPONSE_BODY)));
  const complete = () =>
    bodiless || length === 0 || (chunked ? dechunk(data).complete : data.length >= (length ?? Infinity)) || body().length >= MAX_RESPONSE_BODY || data.length > 2 * MAX_RESPONSE_BODY;
  const finish = () => {
    if (finished) return;
    finished = true;
    upstream.off('data', onData);
    done(body());
  };
  const onData = (chunk: Buffer) => {
    data = Buffer.concat([data, chunk]);
    if (complete()) finish();
  };
  if (complete()) finish();
  else {
    upstream.on('data', onData);
    upstream.once('close', finish);
  }
  return finish;
}

/** The body of chunked data so far (capped at {@link MAX_RESPONSE_BODY}), and whether the last chunk came. */
function dechunk(data: Buffer): { body: Buffer; complete: boolean } {
  const parts: Buffer[] = [];
  let size = 0;
  let at = 0;
  for (;;) {
    const lineEnd = data.indexOf('\r\n', at);
    if (lineEnd === -1) break;
    const chunkSize = parseInt(data.toString('latin1', at, lineEnd), 16);
    if (!Number.isSafeInteger(chunkSize) || chunkSize < 0) return { body: Buffer.concat(parts, size), complete: true };
    if (chunkSize === 0) return { body: Buffer.concat(parts, size), complete: true };
    const start = lineEnd + 2;
    const piece = data.subarray(start, Math.min(start + chunkSize, data.length));
    const room = MAX_RESPONSE_BODY - size;
    parts.push(piece.subarray(0, room));
    size += Math.min(room, piece.length);
    if (size >= MAX_RESPONSE_BODY || piece.length < chunkSize) break;
    at = start + chunkSize + 2;
  }
  return { body: Buffer.concat(parts, size), complete: size >= MAX_RESPONSE_BODY };
}
