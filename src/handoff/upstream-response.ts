import { STATUS_CODES, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { HOP_BY_HOP } from '../hop-by-hop.js';

// Framing and connection headers are the gateway's to write for this response.
const DROP = new Set([...HOP_BY_HOP, 'content-length']);

/** Largest upstream response body kept for passing through. */
export const MAX_RESPONSE_BODY = 64 * 1024;

/**
 * Keeps the first {@link MAX_RESPONSE_BODY} bytes of an upstream's answer and calls `done` once with
 * them: at its end, at its close (a body cut short by a reset still passes the status through), or as
 * soon as the cap is reached.
 * @returns a function that calls `done` now with what has arrived (a deadline, an error)
 */
export function collectBody(res: IncomingMessage, done: (body: Buffer) => void): () => void {
  const chunks: Buffer[] = [];
  let size = 0;
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    done(Buffer.concat(chunks, size));
  };
  res.on('data', (chunk: Buffer) => {
    if (finished) return;
    const room = MAX_RESPONSE_BODY - size;
    chunks.push(room < chunk.length ? chunk.subarray(0, room) : chunk);
    size += Math.min(room, chunk.length);
    if (size >= MAX_RESPONSE_BODY) finish();
  });
  res.once('end', finish);
  res.once('close', finish);
  res.on('error', () => {});
  return finish;
}

/** Passes an upstream's own HTTP answer to an upgrade (a 403, say) to the client as it is, then closes. */
export function writeUpstreamResponse(socket: Duplex, status: number, headers: IncomingHttpHeaders, body: Buffer): void {
  if (socket.destroyed || !socket.writable) return void socket.destroy();
  const lines = [`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}`, 'Connection: close', `Content-Length: ${body.length}`];
  for (const [name, value] of Object.entries(headers)) {
    if (DROP.has(name) || value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) lines.push(`${name}: ${v}`);
  }
  socket.once('finish', socket.destroy);
  socket.end(Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), body]));
}
