import type { IncomingMessage } from 'node:http';

/** What a route needs from its config to be matched. */
export interface RouteMatch {
  readonly path: string;
  readonly host?: string;
}

/** A compiled path/host test, built once per route. */
export type Matcher = (pathname: string, host: string | undefined) => boolean;

/** Compiles `path` (exact, or a prefix when it ends in `/*`: `/x/*` matches `/x` and `/x/...`) and `host`. */
export function compileMatcher(route: RouteMatch): Matcher {
  const host = route.host?.toLowerCase();
  const hostOk = (h: string | undefined) => host === undefined || hostname(h) === host;
  if (route.path.endsWith('/*')) {
    const base = route.path.slice(0, -2);
    const prefix = `${base}/`;
    return (pathname, h) => (pathname === base || pathname.startsWith(prefix)) && hostOk(h);
  }
  return (pathname, h) => pathname === route.path && hostOk(h);
}

/** The Host header's name without the port, lower-cased. */
export function hostname(host: string | undefined): string | undefined {
  if (!host) return undefined;
  const h = host.toLowerCase();
  if (h.startsWith('[')) return h.slice(0, h.indexOf(']') + 1);
  const colon = h.lastIndexOf(':');
  return colon === -1 ? h : h.slice(0, colon);
}

/**
 * Parses `req.url` (origin-form only) with WHATWG rules, so dot segments, `%2e` and backslashes are
 * resolved exactly once; null when it is not origin-form or does not parse. The caller forwards the
 * normalised form, so the upstream serves the path that was authorised.
 */
export function parseRequestUrl(req: IncomingMessage): URL | null {
  const raw = req.url ?? '/';
  if (!raw.startsWith('/')) return null;
  try {
    // Concatenated, not resolved against a base: `//evil.com/x` must stay a path, not become a host.
    return new URL(`http://gateway.invalid${raw}`);
  } catch {
    return null;
  }
}
