import { createHash } from 'node:crypto';
import type { Authenticator } from './auth/authenticator.js';
import { buildAuthenticator, type AuthDeps } from './auth/registry.js';
import type { GatewayConfig } from './config/schema.js';
import { RateLimiter, type Limiter } from './limits.js';
import { compileRoute, type CompiledRoute } from './route.js';
import { SharedRateLimiter } from './shared/rate-limit.js';

/** Everything a config compiles to; a reload swaps it whole. */
export interface GatewayState {
  readonly config: GatewayConfig;
  readonly authenticators: ReadonlyMap<string, Authenticator>;
  readonly routes: readonly CompiledRoute[];
  readonly handshakeTimeoutMs: number;
  readonly maxConnections: number;
}

/** Builds the authenticators and compiles the routes of a validated config. */
export function buildState(config: GatewayConfig, deps: AuthDeps): GatewayState {
  const authenticators = new Map<string, Authenticator>();
  const sources = new Map<string, readonly string[]>();
  for (const [name, auth] of Object.entries(config.authenticators ?? {})) {
    authenticators.set(name, buildAuthenticator(name, auth, deps));
    if ('from' in auth && auth.from) sources.set(name, auth.from);
  }
  // The same on every replica and across restarts, and unguessable while the config holds a secret.
  const derivedSecret = createHash('sha256').update(JSON.stringify(config.authenticators ?? {})).digest('hex');
  // With redis, every replica takes from the same buckets.
  const limiter = (scope: string, rate: string, burst: number | undefined): Limiter =>
    config.redis ? new SharedRateLimiter(deps.redis(), scope, rate, burst, deps.log) : new RateLimiter(rate, burst);
  return {
    config,
    authenticators,
    routes: config.routes.map((route, i) => compileRoute(route, i, authenticators, sources, derivedSecret, limiter)),
    handshakeTimeoutMs: config.limits?.handshakeTimeoutMs ?? 5000,
    maxConnections: config.limits?.maxConnections ?? Infinity,
  };
}
