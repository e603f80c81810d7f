import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';

/** A response read off a raw socket, byte for byte. */
export interface RawResponse {
  /** Everything the server wrote before closing. */
  raw: string;
  status: number;
  statusLine: string;
  /** Header names lower-cased; repeated headers joined with ', '. */
  headers: Record<string, string>;
  body: string;
  /** True when the server closed the connection (not a client-side timeout). */
  closed: boolean;
}

/** A new random `Sec-WebSocket-Key`. */
export const wsKey = () => randomBytes(16).toString('base64');

/** Headers of a well-formed upgrade, before the caller's own. */
export function upgradeHeaders(extra: Record<string, string | undefined> = {}): Record<string, string> {
  const headers: Record<string, string | undefined> = {
    Host: '127.0.0.1',
    Connection: 'Upgrade',
    Upgrade: 'websocket',
    'Sec-WebSocket-Version': '13',
    'Sec-WebSocket-Key': wsKey(),
    ...extra,
  };
  return Object.fromEntries(Object.entries(headers).filter((e): e is [string, string] => e[1] !== undefined));
}

/** Writes a hand-made request head (and optional extra bytes) and returns the socket. */
export function sendRaw(port: number, text: string): Socket {
  const socket = connect(port, '127.0.0.1');
  socket.write(text);
  return socket;
}

/** Formats a request head. */
export function requestHead(path: string, headers: Record<string, string>, method = 'GET'): string {
  return `${method} ${path} HTTP/1.1\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}`).join('\r\n')}\r\n\r\n`;
}

/** Parses whatever a server wrote into status, headers and body. */
export function parseResponse(raw: string, closed: boolean): RawResponse {
  const end = raw.indexOf('\r\n\r\n');
  const head = end === -1 ? raw : raw.slice(0, end);
  const [statusLine = '', ...lines] = head.split('\r\n');
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    if (colon === -1) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
  }
  return { raw, status: Number(statusLine.split(' ')[1] ?? 0), statusLine, headers, body: end === -1 ? '' : raw.slice(end + 4), closed };
}

/**
 * Reads until the server closes (or `timeoutMs`), then parses; with `complete`, stops (and destroys the
 * socket) as soon as what arrived so far satisfies it.
 */
export function readResponse(socket: Socket, timeoutMs = 3000, complete?: (raw: string) => boolean): Promise<RawResponse> {
  return new Promise((resolve) => {
    let raw = '';
    let closed = false;
    const timer = setTimeout(() => finish(), timeoutMs);
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      raw += chunk;
      if (complete?.(raw)) finish();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      closed = true;
      finish();
    });
    function finish() {
      clearTimeout(timer);
      socket.destroy();
      resolve(parseResponse(raw, closed));
    }
  });
}

/** True once a whole 101 head has arrived (the server keeps the socket open after it). */
const switched = (raw: string) => raw.startsWith('HTTP/1.1 101') && raw.includes('\r\n\r\n');

/**
 * Sends an upgrade request over a raw socket and reads the whole answer until the server closes.
 * For a 101 the socket stays open, so this returns once the head has arrived (and destroys the socket).
 */
export function rawUpgrade(
  port: number,
  path: string,
  headers: Record<string, string | undefined> = {},
  options: { method?: string; timeoutMs?: number } = {},
): Promise<RawResponse> {
  const socket = sendRaw(port, requestHead(path, upgradeHeaders(headers), options.method));
  return readResponse(socket, options.timeoutMs, switched);
}
