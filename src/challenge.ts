import type { GatewayError } from './errors.js';

const REALM = 'portcullis';
const UNSAFE = /[\r\n\0]/;

/** Quotes an auth-param value per RFC 7235 (quoted-string); refuses CR, LF and NUL outright. */
export function quote(value: string): string {
  if (UNSAFE.test(value)) throw new TypeError('header value contains CR, LF or NUL');
  return `"${value.replace(/["\\]/g, '\\$&')}"`;
}

/**
 * The RFC 6750 `WWW-Authenticate` value for a rejection, or null when none belongs on it.
 * No credential → `Bearer realm="portcullis"` only; a bad credential → `error="invalid_token"`;
 * a `require` failure → `error="insufficient_scope"`.
 */
export function challengeFor(err: GatewayError): string | null {
  if (err.headers['WWW-Authenticate']) return err.headers['WWW-Authenticate'];
  if (err.status === 401 && err.error !== 'invalid_token') return `Bearer realm=${quote(REALM)}`;
  if (err.error === 'invalid_token' || err.error === 'insufficient_scope') {
    return `Bearer realm=${quote(REALM)}, error=${quote(err.error)}, error_description=${quote(err.description)}`;
  }
  return null;
}
