import { STATUS_CODES, type IncomingHttpHeaders } from 'node:http';
import type { Duplex } from 'node:stream';
import { HOP_BY_HOP } from '../hop-by-hop.js';

// Framing and connection headers are the gateway's to write for this response.
const DROP = new Set([...HOP_BY_HOP, 'content-length']);

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
