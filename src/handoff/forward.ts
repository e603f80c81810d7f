import type { IncomingMessage } from 'node:http';
import { TLSSocket } from 'node:tls';
import type { Identity } from '../types.js';

/** Where the identity goes on the upstream request (`forwardIdentity`). */
export interface IdentityHeaders {
  readonly subject: string;
  readonly claims: string;
}

/** The default `forwardIdentity`. */
export const DEFAULT_IDENTITY_HEADERS: IdentityHeaders = { subject: 'x-auth-subject', claims: 'x-auth-claims' };

// Hop-by-hop headers that must not travel on; `connection` and `upgrade` stay, the upgrade needs them.
const HOP_BY_HOP = ['keep-alive', 'proxy-connection', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding'];

/** Claims as the upstream receives them: base64url of the JSON. */
export function encodeClaims(claims: Readonly<Record<string, unknown>>): string {
  return Buffer.from(JSON.stringify(claims)).toString('base64url');
}

/**
 * Rewrites `req.headers` in place for the upstream: hop-by-hop headers and every client-sent `x-auth-*`
 * (and configured identity) header removed first, then `X-Forwarded-For` (appended), `-Proto`, `-Host`,
 * `X-Request-Id` and the identity headers set by the gateway.
 */
export function setUpstreamHeaders(req: IncomingMessage, requestId: string, identity: Identity, names: IdentityHeaders): void {
  const headers = req.headers;
  const subjectHeader = names.subject.toLowerCase();
  const claimsHeader = names.claims.toLowerCase();
  for (const name of Object.keys(headers)) {
    if (name.startsWith('x-auth-') || name === subjectHeader || name === claimsHeader || HOP_BY_HOP.includes(name)) {
      delete headers[name];
    }
  }
  const remote = req.socket.remoteAddress;
  if (remote) {
    const prior = headers['x-forwarded-for'];
    headers['x-forwarded-for'] = prior ? `${prior}, ${remote}` : remote;
  }
  headers['x-forwarded-proto'] = req.socket instanceof TLSSocket ? 'https' : 'http';
  if (headers.host) headers['x-forwarded-host'] = headers.host;
  headers['x-request-id'] = requestId;
  if (identity.subject !== null) headers[subjectHeader] = identity.subject;
  headers[claimsHeader] = encodeClaims(identity.claims);
}
