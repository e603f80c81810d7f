import { readFileSync } from 'node:fs';
import { compileAssertion, type Assertion } from './assertion.js';
import type { Authenticator } from './auth/authenticator.js';
import { compileOrigins, compileRequire, type OriginCheck, type RequireCheck } from './checks.js';
import type { RouteConfig } from './config/schema.js';
import { protocolMarker } from './credentials.js';
import { DEFAULT_IDENTITY_HEADERS, type IdentityHeaders } from './handoff/forward.js';
import { RateLimiter, type Limiter } from './limits.js';
import { StickyCookie } from './sticky.js';
import { compileMatcher, type Matcher } from './router.js';
import { UpstreamPool } from './upstream-pool.js';

/** Route mode after defaults: `local` without an upstream, `pipe` with one unless set. */
export type RouteMode = 'pipe' | 'relay' | 'local';

const DEFAULT_HEARTBEAT_MS = 30_000;
const DEFAULT_MAX_PAYLOAD = 1024 * 1024;

/** A route with everything per-request work needs precomputed. */
export interface CompiledRoute {
  readonly index: number;
  readonly path: string;
  /** Identifies the route across reloads (path and host), for connection counts. */
  readonly key: string;
  readonly matches: Matcher;
  readonly mode: RouteMode;
  readonly pool: UpstreamPool | undefined;
  readonly authenticators: readonly Authenticator[];
  readonly originAllowed: OriginCheck;
  readonly requireMet: RequireCheck;
  readonly identityHeaders: IdentityHeaders;
  /** The signed identity assertion for the upstream (`assertion`). */
  readonly assertion: Assertion | undefined;
  readonly stripCredentials: boolean;
  readonly enforceExpiry: boolean;
  readonly maxConnections: number;
  readonly maxConnectionsPerSubject: number;
  readonly maxConnectionsPerIp: number;
  readonly perIp: Limiter | undefined;
  readonly perSubject: Limiter | undefined;
  readonly tlsVerify: boolean;
  readonly ca: string | undefined;
  readonly heartbeatMs: number;
  readonly maxPayload: number;
  readonly rejectMode: 'http' | 'close';
  /** Plain HTTP requests on this path are proxied too, after the same checks. */
  readonly http: boolean;
  /** Keeps a client on the upstream it first got. */
  readonly sticky: StickyCookie | undefined;
  /** `refresh.graceSec`, when refresh messages are accepted. */
  readonly refreshGraceSec: number | undefined;
  /** Re-check a session or introspection identity every N seconds while connected. */
  readonly revalidateSec: number | undefined;
  /** `firstMessageAuth.timeoutMs`, when the credential comes in the first message. */
  readonly firstMessageTimeoutMs: number | undefined;
  /** Prefixes of this route's `protocol:` sources (`bearer.`). */
  readonly protocolPrefixes: readonly string[];
  /** Their markers (`bearer` for `protocol:bearer.`). */
  readonly markers: readonly string[];
}

/** Compiles one route; `authenticators` must hold every name in `route.auth` (validation ensures it). */
export function compileRoute(
  route: RouteConfig,
  index: number,
  authenticators: ReadonlyMap<string, Authenticator>,
  sources: ReadonlyMap<string, readonly string[]>,
  /** Signs sticky cookies when the route gives no `sticky.secret`. */
  derivedSecret: string,
  /** Builds a rate limit; `scope` tells the route's buckets (and per-IP from per-subject) apart. */
  limiter: (scope: string, rate: string, burst: number | undefined) => Limiter = (_scope, rate, burst) => new RateLimiter(rate, burst),
): CompiledRoute {
  const upstreams = route.upstream === undefined ? [] : Array.isArray(route.upstream) ? route.upstream : [route.upstream];
  const protocolPrefixes = route.auth.flatMap((name) =>
    (sources.get(name) ?? []).filter((s) => s.startsWith('protocol:')).map((s) => s.slice(9)),
  );
  const burst = route.rateLimit?.burst;
  const key = `${route.host ?? '*'}${route.path}`;
  return {
    index,
    path: route.path,
    key,
    matches: compileMatcher(route),
    mode: route.mode ?? (upstreams.length === 0 ? 'local' : 'pipe'),
    pool: upstreams.length === 0 ? undefined : new UpstreamPool(upstreams, route.balance, route.ejectMs),
    authenticators: route.auth.map((name) => authenticators.get(name)!),
    originAllowed: compileOrigins(route.origins),
    requireMet: compileRequire(route.require),
    identityHeaders: { ...DEFAULT_IDENTITY_HEADERS, ...route.forwardIdentity },
    assertion: route.assertion ? compileAssertion(route.assertion) : undefined,
    stripCredentials: route.stripCredentials ?? true,
    enforceExpiry: route.enforceExpiry ?? true,
    maxConnections: route.maxConnections ?? Infinity,
    maxConnectionsPerSubject: route.maxConnectionsPerSubject ?? Infinity,
    maxConnectionsPerIp: route.maxConnectionsPerIp ?? Infinity,
    perIp: route.rateLimit?.perIp ? limiter(`${key}\0ip`, route.rateLimit.perIp, burst) : undefined,
    perSubject: route.rateLimit?.perSubject ? limiter(`${key}\0sub`, route.rateLimit.perSubject, burst) : undefined,
    tlsVerify: route.tlsVerify ?? true,
    ca: route.ca === undefined ? undefined : readFileSync(route.ca, 'utf8'),
    heartbeatMs: route.heartbeatMs ?? DEFAULT_HEARTBEAT_MS,
    maxPayload: route.maxPayload ?? DEFAULT_MAX_PAYLOAD,
    rejectMode: route.rejectMode ?? 'http',
    http: route.http ?? false,
    sticky: route.sticky ? new StickyCookie(upstreams, typeof route.sticky === 'object' ? route.sticky.secret : `${derivedSecret}\0${key}`) : undefined,
    refreshGraceSec: route.refresh ? (route.refresh.graceSec ?? 0) : undefined,
    revalidateSec: route.revalidateSec,
    firstMessageTimeoutMs: route.firstMessageAuth ? (route.firstMessageAuth.timeoutMs ?? 5000) : undefined,
    protocolPrefixes,
    markers: protocolPrefixes.map(protocolMarker),
  };
}
