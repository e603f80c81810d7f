import type { IncomingMessage } from 'node:http';
import { TLSSocket } from 'node:tls';
import type { AuthenticatorConfig } from '../config/schema.js';
import { GatewayError } from '../errors.js';
import { HOP_BY_HOP } from '../hop-by-hop.js';
import type { Authenticator } from './authenticator.js';
import { callBackend, DEFAULT_BACKEND_TIMEOUT_MS } from './introspection.js';

export type ForwardAuthConfig = Extract<AuthenticatorConfig, { type: 'forwardAuth' }>;

// Headers that describe this hop or this upgrade, not the caller: never sent to the auth service.
// `host` goes as X-Forwarded-Host instead; a GET carries no body, so no content-length either.
const NOT_FORWARDED = new Set([...HOP_BY_HOP, 'host', 'content-length', 'expect', 'http2-settings']);
// The gateway sets these itself, so a client cannot pretend to be elsewhere.
const OURS = new Set(['x-forwarded-method', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-uri', 'x-forwarded-for']);

/**
 * The headers of the request to the auth service: the original request's headers (the `Authorization`
 * and `Cookie` the caller sent included), minus hop-by-hop ones (and any named in `Connection`), the
 * upgrade's own (`Upgrade`, `Sec-WebSocket-*`) and `Host`; plus `X-Forwarded-Method`, `-Proto`, `-Host`,
 * `-Uri` (path and query as the client sent them) and `-For` (the client's address appended).
 */
export function forwardAuthHeaders(req: IncomingMessage): Record<string, string> {
  const dropped = new Set(NOT_FORWARDED);
  for (const token of String(req.headers.connection ?? '').split(',')) dropped.add(token.trim().toLowerCase());
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined || dropped.has(name) || OURS.has(name) || name.startsWith('sec-websocket-')) continue;
    headers[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  headers['x-forwarded-method'] = req.method ?? 'GET';
  headers['x-forwarded-proto'] = req.socket instanceof TLSSocket ? 'https' : 'http';
  if (req.headers.host) headers['x-forwarded-host'] = req.headers.host;
  headers['x-forwarded-uri'] = req.url ?? '/';
  const prior = req.headers['x-forwarded-for'];
  const remote = req.socket.remoteAddress;
  const chain = [Array.isArray(prior) ? prior.join(', ') : prior, remote].filter((v): v is string => !!v);
  if (chain.length > 0) headers['x-forwarded-for'] = chain.join(', ');
  return headers;
}

/**
 * The `forwardAuth` authenticator, like Traefik ForwardAuth or nginx `auth_request` (and compatible with
 * oauth2-proxy's `/oauth2/auth`, which answers 202 or 401): a GET to `url` with the original request's
 * headers (see {@link forwardAuthHeaders}).
 *
 * - 2xx → accepted: `subject` = the response's `X-Auth-Request-User`, else `X-Forwarded-User`, else null;
 *   `claims` = the `copyHeaders` found on the response (names lower-cased), which also go to the upstream
 *   as `upstreamHeaders`. Client-sent headers of the `copyHeaders` names are removed from the request,
 *   so one the service did not answer cannot be supplied by the client.
 * - 401 / 403 → rejected with that status, the service's `WWW-Authenticate` passed through.
 * - anything else, the service unreachable or slower than `timeoutMs` (default 2000) → a plain Error (503).
 *
 * It always decides: there is no "no credential of mine", so it never hands over to a later authenticator
 * (put it last in a route's `auth`). Nothing it forwards is logged; the response body is discarded.
 */
export function forwardAuthAuthenticator(name: string, config: ForwardAuthConfig): Authenticator {
  const timeoutMs = config.timeoutMs ?? DEFAULT_BACKEND_TIMEOUT_MS;
  const copy = [...new Set((config.copyHeaders ?? []).map((h) => h.toLowerCase()))];
  return {
    name,
    type: 'forwardAuth',
    async authenticate({ req, signal }) {
      const res = await callBackend(config.url, { method: 'GET', headers: forwardAuthHeaders(req) }, { timeoutMs, signal, maxBodyBytes: 0, what: 'forwardAuth' });
      if (res.status === 401 || res.status === 403) {
        const challenge = res.headers.get('www-authenticate');
        const code = res.status === 401 ? 'GW_ERR_FORWARD_AUTH_DENIED' : 'GW_ERR_FORWARD_AUTH_FORBIDDEN';
        throw new GatewayError(code, `forwardAuth: auth service answered ${res.status}`, challenge ? { 'WWW-Authenticate': challenge } : {});
      }
      if (res.status < 200 || res.status > 299) throw new Error(`forwardAuth: auth service answered ${res.status}`);
      const copied: Record<string, string> = {};
      for (const header of copy) {
        const value = res.headers.get(header);
        if (value !== null) copied[header] = value;
      }
      // As Traefik does: a listed header the client sent itself never reaches the upstream, even when the
      // auth service did not answer it (the upstream trusts these names to come from the auth service).
      for (const header of copy) delete req.headers[header];
      const subject = res.headers.get('x-auth-request-user') || res.headers.get('x-forwarded-user') || null;
      return {
        identity: { subject, authenticator: name, claims: { ...copied } },
        ...(Object.keys(copied).length > 0 && { upstreamHeaders: copied }),
      };
    },
  };
}
