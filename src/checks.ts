import type { IncomingMessage } from 'node:http';
import { randomUUID } from 'node:crypto';

/** URLs longer than this are answered 414. */
export const MAX_URL_BYTES = 8192;
/** Default `limits.maxHeaderBytes`. */
export const DEFAULT_MAX_HEADER_BYTES = 16384;

const KEY = /^[+/0-9A-Za-z]{22}==$/;
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * SPEC 3 step 1: `GET` over HTTP/1.1, `Upgrade: websocket`, a well-formed `Sec-WebSocket-Key`, version 13.
 * HTTP/1.1 exactly: RFC 6455 4.1 needs at least 1.1, and Node's parser also takes 0.9, 1.0 and 2.0 request
 * lines, none of which can be upgraded on this connection.
 */
export function isWellFormedUpgrade(req: IncomingMessage): boolean {
  return (
    req.method === 'GET' &&
    req.httpVersion === '1.1' &&
    (req.headers.upgrade ?? '').toLowerCase() === 'websocket' &&
    KEY.test(req.headers['sec-websocket-key'] ?? '') &&
    req.headers['sec-websocket-version'] === '13'
  );
}

/** Bytes of the header lines of a request (not the request line), as they came on the wire. */
export function headerBytes(req: IncomingMessage): number {
  let total = 0;
  for (const part of req.rawHeaders) total += Buffer.byteLength(part) + 2; // ': ' or CRLF
  return total;
}

/**
 * Whether the header lines fit in `limit` bytes. Node decodes header bytes as latin1, so a character is
 * at most two UTF-8 bytes: most requests are known to fit from their lengths alone, without encoding.
 */
export function headersFit(req: IncomingMessage, limit: number): boolean {
  let chars = 0;
  for (const part of req.rawHeaders) chars += part.length + 2;
  return chars * 2 <= limit || headerBytes(req) <= limit;
}

/** The client's `X-Request-Id` when it is sane (1–128 of `[A-Za-z0-9._:-]`), else a new one. */
export function requestIdOf(req: IncomingMessage): string {
  const sent = req.headers['x-request-id'];
  return typeof sent === 'string' && REQUEST_ID.test(sent) ? sent : randomUUID();
}

/** A compiled `origins` allow-list. */
export type OriginCheck = (origin: string | undefined) => boolean;

/**
 * Compiles an `origins` list: exact `scheme://host[:port]` entries compare case-insensitively with the
 * whole Origin; `*.example.com` matches any scheme and port on a subdomain (not example.com itself).
 * A request without `Origin` is not from a browser and passes.
 */
export function compileOrigins(origins: readonly string[] | '*' | undefined): OriginCheck {
  if (origins === undefined || origins === '*') return () => true;
  const exact = new Set(origins.filter((o) => !o.startsWith('*.')).map((o) => o.toLowerCase()));
  const suffixes = origins.filter((o) => o.startsWith('*.')).map((o) => o.slice(1).toLowerCase());
  return (origin) => {
    if (origin === undefined) return true;
    const lower = origin.toLowerCase();
    if (exact.has(lower)) return true;
    if (suffixes.length === 0) return false;
    let host: string;
    try {
      host = new URL(lower).hostname;
    } catch {
      return false;
    }
    return suffixes.some((suffix) => host.endsWith(suffix) && host.length > suffix.length);
  };
}

/** A compiled `require` block: every entry must hold (SPEC 9). */
export type RequireCheck = (claims: Readonly<Record<string, unknown>>) => boolean;

/**
 * Compiles `require`: each claim is read as a set (an array's elements, or a string split on spaces);
 * a required string must be in it, a required list needs one of its values; a missing claim fails.
 */
export function compileRequire(required: Readonly<Record<string, string | readonly string[]>> | undefined): RequireCheck {
  const entries = Object.entries(required ?? {}).map(([claim, want]) => [claim, typeof want === 'string' ? [want] : want] as const);
  if (entries.length === 0) return () => true;
  return (claims) =>
    entries.every(([claim, wanted]) => {
      const have = claimSet(claims[claim]);
      return wanted.some((w) => have.has(w));
    });
}

function claimSet(value: unknown): Set<string> {
  if (Array.isArray(value)) return new Set(value.map(String));
  if (typeof value === 'string') return new Set(value.split(' ').filter(Boolean));
  if (typeof value === 'number' || typeof value === 'boolean') return new Set([String(value)]);
  return new Set();
}
