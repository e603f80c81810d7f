import type { GatewayConfig, RouteConfig } from './schema.js';

const DEFAULT_PORT = 8080;

function modeOf(route: RouteConfig): string {
  return route.mode ?? (route.upstream === undefined ? 'local' : 'pipe');
}

function upstreamsOf(route: RouteConfig): string {
  if (route.upstream === undefined) return 'the application (local)';
  const list = Array.isArray(route.upstream) ? route.upstream : [route.upstream];
  return list.length === 1 ? list[0]! : `${list.join(', ')} (${route.balance ?? 'round-robin'})`;
}

/** What else a route does, in a few words each (only what is configured). */
function extrasOf(route: RouteConfig): string[] {
  const extras: string[] = [];
  if (route.origins !== undefined) extras.push(route.origins === '*' ? 'any origin' : `origins ${route.origins.join(' ')}`);
  if (route.require) extras.push(`requires ${Object.entries(route.require).map(([k, v]) => `${k}=${Array.isArray(v) ? v.join('|') : v}`).join(' ')}`);
  if (route.rateLimit) extras.push(`rate ${[route.rateLimit.perIp && `${route.rateLimit.perIp}/ip`, route.rateLimit.perSubject && `${route.rateLimit.perSubject}/subject`].filter(Boolean).join(' ')}`);
  const caps = [
    route.maxConnections && `${route.maxConnections}`,
    route.maxConnectionsPerSubject && `${route.maxConnectionsPerSubject}/subject`,
    route.maxConnectionsPerIp && `${route.maxConnectionsPerIp}/ip`,
  ].filter(Boolean);
  if (caps.length > 0) extras.push(`max ${caps.join(' ')}`);
  if (route.firstMessageAuth) extras.push('first-message auth');
  if (route.refresh) extras.push('refresh');
  if (route.revalidateSec) extras.push(`revalidate ${route.revalidateSec}s`);
  if (route.enforceExpiry === false) extras.push('expiry NOT enforced');
  if (route.rejectMode === 'close') extras.push('reject by close');
  if (route.http) extras.push('plain HTTP too');
  if (route.sticky) extras.push('sticky');
  if (route.assertion) extras.push(`assertion in ${route.assertion.header ?? 'x-auth-assertion'}`);
  return extras;
}

/**
 * A dry-run summary of a valid config, as `portcullis check` prints it: where it listens, each route
 * (public ones called out), each authenticator and the routes that use it, and what is shared.
 */
export function summarizeConfig(config: GatewayConfig): string {
  const lines: string[] = [];
  const listen = `${config.listen?.tls ? 'wss' : 'ws'}://${config.listen?.host ?? '0.0.0.0'}:${config.listen?.port ?? DEFAULT_PORT}`;
  lines.push(`listens on ${listen}${config.workers && config.workers > 1 ? ` with ${config.workers} workers` : ''}`);
  lines.push(config.admin ? `admin on http://${config.admin.host ?? '127.0.0.1'}:${config.admin.port}` : 'no admin listener');
  lines.push(config.redis ? 'shared state in Redis (tickets, revocations, rate limits, connection counts)' : 'state kept per process (no redis)');
  if (config.tickets) lines.push(`one-time tickets: POST ${config.tickets.path} (valid ${config.tickets.ttlSec ?? 30}s)`);
  lines.push('', `routes (${config.routes.length}, matched in order):`);
  config.routes.forEach((route, i) => {
    const who = route.auth.length === 0 ? 'PUBLIC (no authentication)' : `auth ${route.auth.join(' or ')}`;
    const where = `${route.host ? `${route.host} ` : ''}${route.path}`;
    lines.push(`  ${i}. ${where} [${modeOf(route)}] ${who} -> ${upstreamsOf(route)}`);
    const extras = extrasOf(route);
    if (extras.length > 0) lines.push(`       ${extras.join('; ')}`);
  });
  const authenticators = Object.entries(config.authenticators ?? {});
  lines.push('', `authenticators (${authenticators.length}):`);
  for (const [name, auth] of authenticators) {
    const users = config.routes.map((r, i) => (r.auth.includes(name) ? `${i}` : undefined)).filter(Boolean);
    const from = 'from' in auth && auth.from ? ` from ${auth.from.join(', ')}` : '';
    lines.push(`  ${name}: ${auth.type}${from}; ${users.length > 0 ? `used by route ${users.join(', ')}` : 'not used by any route'}`);
  }
  return `${lines.join('\n')}\n`;
}
