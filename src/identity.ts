import type { IncomingMessage } from 'node:http';
import type { Identity, UpgradeResult } from './types.js';

const identities = new WeakMap<IncomingMessage, Identity>();

/** The identity the gateway accepted for a request (after `toUpgradeHandler` or in a `connection` handler). */
export function identityOf(req: IncomingMessage): Identity | undefined {
  return identities.get(req);
}

/** Records the accepted identity of a request; no property is added to `req` itself. */
export function setIdentity(req: IncomingMessage, identity: Identity): void {
  identities.set(req, identity);
}

/** The anonymous identity of SPEC 9: no subject, no claims. */
export function anonymous(authenticator: string): Identity {
  return { subject: null, authenticator, claims: {} };
}

/**
 * Reads a handler's answer: true → `base`, an object → that identity (its missing fields from `base`),
 * false → null. Anything else is a programming error in the handler.
 */
export function identityFromResult(result: UpgradeResult, base: Identity): Identity | null {
  if (result === true) return base;
  if (result === false) return null;
  if (result === null || typeof result !== 'object') throw new TypeError('upgrade handler must return a boolean or an identity object');
  const subject = result.subject === undefined ? base.subject : result.subject === null ? null : String(result.subject);
  const expiresAt = result.expiresAt ?? base.expiresAt;
  return {
    ...base,
    subject,
    authenticator: base.authenticator,
    claims: { ...base.claims, ...(result.claims ?? {}) },
    ...(expiresAt !== undefined && { expiresAt }),
  };
}
