import type { IncomingMessage } from 'node:http';
import { TLSSocket } from 'node:tls';
import type { Assertion } from '../assertion.js';
import { HOP_BY_HOP } from '../hop-by-hop.js';
import type { Identity } from '../types.js';

/** Where the identity goes on the upstream request (`forwardIdentity`). */
export interface IdentityHeaders {
  readonly subject: string;
  readonly claims: string;
}

/** The default `forwardIdentity`. */
export const DEFAULT_IDENTITY_HEADERS: IdentityHeaders = { subject: 'x-auth-subject', claims: 'x-auth-claims' };

// Hop-by-hop headers that must not travel on; `connection` and `upgrade` stay, the upgrade needs them.
const DROPPED = new Set(HOP_BY_HOP.filter((name) => name !== 'connection' && name !== 'upgrade'));

// What a header value cannot hold (Node's own rule, validateHeaderValue): controls and characters above U+00FF.
const NOT_HEADER_SAFE = /[^\t\x20-\x7e\x80-\xff]/;

/**
 * The subject as a header value: as it is, or percent-encoded (encodeURIComponent) when it holds a
 * character no header can carry — a line break cannot become a header line of its own, and a user name
 * in any script still reaches the upstream (whose x-auth-claims holds it exactly).
 */
export function subjectHeaderValue(subject: string): string {
  return NOT_HEADER_SAFE.test(subject) ? encodeURIComponent(subject) : subject;
}

/** Claims as the upstream receives them: base64url of the JSON. */
export function encodeClaims(claims: Readonly<Record<string, unknown>>): string {
  return Buffer.from(JSON.stringify(claims)).toString('base64url');
}

/** What a route adds to the upstream request besides the forwarding headers. */
export interface UpstreamIdentity {
  readonly names: IdentityHeaders;
  readonly assertion?: Assertion | undefined;
  /** Headers an authenticator vouched for (forwardAuth `copyHeaders`). */
  readonly extra?: Readonly<Record<string, string>> | undefined;
}

/**
 * Rewrites `req.headers` in place for the upstream: hop-by-hop headers and every client-sent header the
 * gateway sets itself (`x-auth-*`, the identity and assertion names, vouched-for headers) removed first,
 * then `X-Forwarded-For` (appended), `-Proto`, `-Host`, `X-Request-Id`, the identity headers, the signed
 * assertion and the vouched-for headers.
 */
export function setUpstreamHeaders(req: IncomingMessage, requestId: string, identity: Identity, plan: UpstreamIdentity): void {
  const headers = req.headers;
  const subjectHeader = plan.names.subject.toLowerCase();
  const claimsHeader = plan.names.claims.toLowerCase();
  const assertionHeader = plan.assertion?.header;
  const extra = plan.extra && Object.entries(plan.extra).map(([name, value]) => [name.toLowerCase(), value] as const);
  for (const name in headers) {
    const ours = name === subjectHeader || name === claimsHeader || name === assertionHeader || extra?.some(([n]) => n === name);
    if (ours || name.startsWith('x-auth-') || DROPPED.has(name)) delete headers[name];
  }
  const remote = req.socket.remoteAddress;
  if (remote) {
    const prior = headers['x-forwarded-for'];
    headers['x-forwarded-for'] = prior ? `${prior}, ${remote}` : remote;
  }
  headers['x-forwarded-proto'] = req.socket instanceof TLSSocket ? 'https' : 'http';
  if (headers.host) headers['x-forwarded-host'] = headers.host;
  headers['x-request-id'] = requestId;
  if (identity.subject !== null) headers[subjectHeader] = subjectHeaderValue(identity.subject);
  headers[claimsHeader] = encodeClaims(identity.claims);
  if (plan.assertion) headers[plan.assertion.header] = plan.assertion.sign(identity);
  for (const [name, value] of extra ?? []) headers[name] = value;
}
