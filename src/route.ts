import { readFileSync } from 'node:fs';
import type { Authenticator } from './auth/authenticator.js';
import { compileOrigins, compileRequire, type OriginCheck, type RequireCheck } from './checks.js';
import type { RouteConfig } from './config/schema.js';
import { protocolMarker } from './credentials.js';
import { DEFAULT_IDENTITY_HEADERS, type IdentityHeaders } from './handoff/forward.js';
import { compileMatcher, type Matcher } from './router.js';

/** A route with everything per-request work needs precomputed. */
export interface CompiledRoute {
  readonly index: number;
  readonly path: string;
  readonly matches: Matcher;
  readonly mode: 'pipe' | 'local';
  readonly upstream: string | undefined;
  readonly authenticators: readonly Authenticator[];
  readonly originAllowed: OriginCheck;
  readonly requireMet: RequireCheck;
  readonly identityHeaders: IdentityHeaders;
  readonly stripCredentials: boolean;
  readonly enforceExpiry: boolean;
  readonly maxConnections: number;
  readonly tlsVerify: boolean;
  readonly ca: string | undefined;
  /** Prefixes of this route's `protocol:` sources (`bearer.`). */
  readonly protocolPrefixes: readonly string[];
  /** Their markers (`bearer` for `protocol:bearer.`). */
  readonly markers: readonly string[];
}

/** Compiles one route; `authenticators` must hold every name in `route.auth` (validation ensures it). */
export function compileRoute(route: RouteConfig, index: number, authenticators: ReadonlyMap<string, Authenticator>, sources: ReadonlyMap<string, readonly string[]>): CompiledRoute {
  const upstream = Array.isArray(route.upstream) ? route.upstream[0] : route.upstream;
  const protocolPrefixes = route.auth.flatMap((name) => (sources.get(name) ?? []).filter((s) => s.startsWith('protocol:')).map((s) => s.slice(9)));
  return {
    index,
    path: route.path,
    matches: compileMatcher(route),
    mode: route.mode === 'local' || upstream === undefined ? 'local' : 'pipe',
    upstream,
    authenticators: route.auth.map((name) => authenticators.get(name)!),
    originAllowed: compileOrigins(route.origins),
    requireMet: compileRequire(route.require),
    identityHeaders: { ...DEFAULT_IDENTITY_HEADERS, ...route.forwardIdentity },
    stripCredentials: route.stripCredentials ?? true,
    enforceExpiry: route.enforceExpiry ?? true,
    maxConnections: route.maxConnections ?? Infinity,
    tlsVerify: route.tlsVerify ?? true,
    ca: route.ca === undefined ? undefined : readFileSync(route.ca, 'utf8'),
    protocolPrefixes,
    markers: protocolPrefixes.map(protocolMarker),
  };
}
