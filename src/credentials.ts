import type { IncomingMessage } from 'node:http';
import { parseCookie } from 'cookie';

/** Where one credential was found, so it can be stripped before forwarding. */
export interface FoundCredential {
  readonly kind: 'query' | 'bearer' | 'header' | 'cookie' | 'protocol';
  /** The query parameter, header or cookie name, or the protocol prefix. */
  readonly name: string;
  readonly value: string;
  /** For `protocol:`: the exact offered entry that carried the token. */
  readonly entry?: string;
}

/** A parsed `from` entry: looks for its credential in a request. */
export interface CredentialSource {
  readonly spec: string;
  find(req: IncomingMessage, url: URL): FoundCredential | null;
}

const BEARER = /^bearer[ \t]+(\S+)[ \t]*$/i;

/** The offered `Sec-WebSocket-Protocol` entries, trimmed, in order. */
export function offeredProtocols(req: IncomingMessage): string[] {
  const header = req.headers['sec-websocket-protocol'];
  if (!header) return [];
  return header.split(',').map((p) => p.trim()).filter((p) => p.length > 0);
}

/** The marker a browser offers beside its token entry: the prefix without its trailing separator. */
export function protocolMarker(prefix: string): string {
  return prefix.replace(/[.\-_:]+$/, '');
}

/** Parses one `from` entry (`query:NAME`, `bearer`, `header:NAME`, `cookie:NAME`, `protocol:PREFIX`). */
export function parseSource(spec: string): CredentialSource {
  const colon = spec.indexOf(':');
  const kind = colon === -1 ? spec : spec.slice(0, colon);
  const name = colon === -1 ? '' : spec.slice(colon + 1);
  switch (kind) {
    case 'bearer':
      return {
        spec,
        find(req) {
          const match = BEARER.exec(req.headers.authorization ?? '');
          return match ? { kind: 'bearer', name: 'authorization', value: match[1]! } : null;
        },
      };
    case 'query':
      return {
        spec,
        find(_req, url) {
          const value = url.searchParams.get(name);
          return value ? { kind: 'query', name, value } : null;
        },
      };
    case 'header': {
      const header = name.toLowerCase();
      return {
        spec,
        find(req) {
          const raw = req.headers[header];
          const value = Array.isArray(raw) ? raw[0] : raw;
          return value ? { kind: 'header', name: header, value } : null;
        },
      };
    }
    case 'cookie':
      return {
        spec,
        find(req) {
          const value = cookieValue(req, name);
          return value ? { kind: 'cookie', name, value } : null;
        },
      };
    case 'protocol':
      return {
        spec,
        find(req) {
          const entry = offeredProtocols(req).find((p) => p.startsWith(name) && p.length > name.length);
          return entry ? { kind: 'protocol', name, value: entry.slice(name.length), entry } : null;
        },
      };
    default:
      throw new TypeError(`unknown credential source "${spec}"`);
  }
}

/**
 * The value of one cookie of the request, or undefined. Read as express-session reads it (its `cookie`
 * 0.7): a value in DQUOTEs loses them before it is percent-decoded, so a quoted session cookie the
 * Express app accepts is accepted here too (cookie@1 keeps the quotes).
 */
export function cookieValue(req: IncomingMessage, name: string): string | undefined {
  const header = req.headers.cookie;
  if (!header) return undefined;
  try {
    return parseCookie(header, { decode: unquoteAndDecode })[name];
  } catch {
    return undefined;
  }
}

/** cookie@0.7's value decoding: strip one surrounding DQUOTE pair (a lone `"` is empty), then percent-decode. */
function unquoteAndDecode(raw: string): string {
  const value = raw.startsWith('"') && raw.endsWith('"') ? raw.slice(1, -1) : raw;
  if (!value.includes('%')) return value;
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

/** The first credential any of the sources finds, in their order. */
export function findCredential(sources: readonly CredentialSource[], req: IncomingMessage, url: URL): FoundCredential | null {
  for (const source of sources) {
    const found = source.find(req, url);
    if (found) return found;
  }
  return null;
}

/**
 * Removes a used credential from the request, in place, before it is handed on: the query parameter
 * (rewriting `req.url`), the header, the one cookie (others kept), or the protocol entry.
 */
export function stripCredential(req: IncomingMessage, url: URL, found: FoundCredential): void {
  switch (found.kind) {
    case 'query':
      removeQueryParam(req, url, found.name);
      return;
    case 'bearer':
      delete req.headers.authorization;
      syncRawHeader(req, 'authorization');
      return;
    case 'header':
      delete req.headers[found.name];
      syncRawHeader(req, found.name);
      return;
    case 'cookie':
      removeCookie(req, found.name);
      return;
    case 'protocol':
      removeProtocolEntry(req, found.entry!);
      return;
  }
}

/** Drops one query parameter from `req.url` (and `url`), leaving the others byte for byte. */
export function removeQueryParam(req: IncomingMessage, url: URL, name: string): void {
  const kept = url.search
    .slice(1)
    .split('&')
    .filter((pair) => pair !== '' && decodeName(pair.split('=', 1)[0]!) !== name);
  url.search = kept.length > 0 ? `?${kept.join('&')}` : '';
  req.url = url.pathname + url.search;
}

function decodeName(raw: string): string {
  try {
    return decodeURIComponent(raw.replace(/\+/g, ' '));
  } catch {
    return raw;
  }
}

/** Drops one cookie from the `Cookie` header, keeping the others byte for byte. */
export function removeCookie(req: IncomingMessage, name: string): void {
  const header = req.headers.cookie;
  if (!header) return;
  const kept = header.split(';').filter((pair) => pair.split('=', 1)[0]!.trim() !== name);
  if (kept.length === 0) delete req.headers.cookie;
  else req.headers.cookie = kept.map((p) => p.trim()).join('; ');
  syncRawHeader(req, 'cookie');
}

/** Drops one offered subprotocol entry (a token must never reach the upstream nor be echoed). */
export function removeProtocolEntry(req: IncomingMessage, entry: string): void {
  const rest = offeredProtocols(req).filter((p) => p !== entry);
  if (rest.length === 0) delete req.headers['sec-websocket-protocol'];
  else req.headers['sec-websocket-protocol'] = rest.join(', ');
  syncRawHeader(req, 'sec-websocket-protocol');
}

/**
 * Makes `req.rawHeaders` agree with `req.headers` for one header after it was changed, so an application
 * that reads the raw list (local mode, a Midway host) never sees a stripped credential.
 */
export function syncRawHeader(req: IncomingMessage, name: string): void {
  const raw = req.rawHeaders;
  if (!raw) return;
  const kept: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i]!.toLowerCase() !== name) kept.push(raw[i]!, raw[i + 1]!);
  }
  const value = req.headers[name];
  if (typeof value === 'string') kept.push(name, value);
  raw.splice(0, raw.length, ...kept);
}
