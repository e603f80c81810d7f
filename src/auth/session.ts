import signature from 'cookie-signature';
import type { SessionConfig } from '../config/schema.js';
import { cookieValue } from '../credentials.js';
import { GatewayError } from '../errors.js';
import type { Authenticator } from './authenticator.js';
import type { SessionStore } from './session-store.js';

/** Unsigns an express-session cookie value (`s:<id>.<sig>`) with any of the secrets; null when none verifies. */
export function unsignSessionId(value: string, secrets: readonly string[]): string | null {
  if (!value.startsWith('s:')) return null;
  for (const secret of secrets) {
    const id = signature.unsign(value.slice(2), secret);
    if (id !== false) return id;
  }
  return null;
}

/** Signs a session id as express-session does (the first secret signs). */
export function signSessionId(id: string, secret: string): string {
  return `s:${signature.sign(id, secret)}`;
}

function at(object: unknown, path: string): unknown {
  let node = object;
  for (const key of path.split('.')) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<string, unknown>)[key];
  }
  return node;
}

/**
 * The `session` authenticator: an express-session cookie, verified with the secrets (rotation: all
 * verify), looked up in the store; a session without `subjectPath` is not logged in.
 */
export function sessionAuthenticator<S extends SessionStore>(name: string, config: SessionConfig, store: S): Authenticator & { readonly store: S } {
  const cookie = config.cookie ?? 'connect.sid';
  return {
    name,
    type: 'session',
    store,
    async revalidate(identity) {
      if (identity.sessionId === undefined) return false;
      const session = await store.get(identity.sessionId);
      const expires = at(session, 'cookie.expires');
      const expiresMs = typeof expires === 'string' || typeof expires === 'number' ? new Date(expires).getTime() : NaN;
      return session !== null && !(expiresMs <= Date.now()) && at(session, config.subjectPath) !== undefined;
    },
    async authenticate({ req }) {
      const value = cookieValue(req, cookie);
      if (!value) return null;
      const id = unsignSessionId(value, config.secrets);
      if (id === null) throw new GatewayError('GW_ERR_SESSION_INVALID');
      const session = await store.get(id);
      if (!session) throw new GatewayError('GW_ERR_SESSION_NOT_FOUND');
      const expires = at(session, 'cookie.expires');
      const expiresMs = typeof expires === 'string' || typeof expires === 'number' ? new Date(expires).getTime() : NaN;
      if (!Number.isNaN(expiresMs) && expiresMs <= Date.now()) throw new GatewayError('GW_ERR_SESSION_EXPIRED');
      const subject = at(session, config.subjectPath);
      if (typeof subject !== 'string' && typeof subject !== 'number') throw new GatewayError('GW_ERR_SESSION_ANONYMOUS');
      const { cookie: _cookie, ...claims } = session;
      return {
        identity: {
          subject: String(subject),
          authenticator: name,
          sessionId: id,
          claims,
          ...(!Number.isNaN(expiresMs) && { expiresAt: Math.floor(expiresMs / 1000) }),
        },
        credential: { kind: 'cookie', name: cookie, value },
      };
    },
  };
}
