import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { AuthenticatorConfig } from '../config/schema.js';
import { GatewayError, type ErrorCode } from '../errors.js';
import type { Identity } from '../types.js';
import type { Authenticator } from './authenticator.js';
import { tokenAuthenticator } from './token.js';

export type IntrospectionConfig = Extract<AuthenticatorConfig, { type: 'introspection' }>;

/** How long an introspection answer (positive or negative) is reused by default; 0 turns caching off. */
export const DEFAULT_INTROSPECTION_CACHE_TTL_SEC = 30;
/** How long an auth backend (introspection, forwardAuth) may take by default. */
export const DEFAULT_BACKEND_TIMEOUT_MS = 2000;
/** At most this many tokens are remembered, and their answers take at most this many bytes. */
const CACHE_MAX_ENTRIES = 10_000;
const CACHE_MAX_BYTES = 32 * 1024 * 1024;
/** An introspection answer above this size is a backend fault, not a token to trust. */
const MAX_RESPONSE_BYTES = 64 * 1024;

/** A backend's answer, body read (up to a bound). */
export interface BackendResponse {
  readonly status: number;
  readonly headers: Headers;
  readonly body: Buffer;
}

/**
 * One HTTP call to an auth backend, bounded by `timeoutMs` and dropped when `signal` aborts (the client
 * went away, the handshake deadline passed). Redirects are not followed (a 3xx is just a status). Every
 * failure is a plain Error whose message names neither the request's headers nor its body, so it can be
 * logged. With `maxBodyBytes` 0 the body is discarded unread.
 */
export async function callBackend(
  url: string,
  init: { method: string; headers: Record<string, string>; body?: string },
  options: { timeoutMs: number; signal: AbortSignal; maxBodyBytes: number; what: string },
): Promise<BackendResponse> {
  const { timeoutMs, signal, maxBodyBytes, what } = options;
  if (signal.aborted) throw new Error(`${what}: request aborted`);
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, timeoutMs);
  const onAbort = () => controller.abort();
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    const res = await fetch(url, { ...init, redirect: 'manual', signal: controller.signal });
    if (maxBodyBytes === 0) {
      await res.body?.cancel().catch(() => {});
      return { status: res.status, headers: res.headers, body: Buffer.alloc(0) };
    }
    const chunks: Uint8Array[] = [];
    let size = 0;
    if (res.body) {
      for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
        size += chunk.byteLength;
        if (size > maxBodyBytes) throw new Error(`${what}: response body above ${maxBodyBytes} bytes`);
        chunks.push(chunk);
      }
    }
    return { status: res.status, headers: res.headers, body: Buffer.concat(chunks) };
  } catch (err) {
    if (timedOut) throw new Error(`${what}: no answer within ${timeoutMs} ms`);
    if (signal.aborted) throw new Error(`${what}: request aborted`);
    if (err instanceof Error && err.message.startsWith(`${what}:`)) throw err;
    // fetch says "fetch failed"; the useful part (ECONNREFUSED, ...) is its cause. Never the request.
    const cause = (err as { cause?: { code?: unknown } }).cause;
    const code = typeof cause?.code === 'string' ? cause.code : (err as Error).name;
    throw new Error(`${what}: unreachable (${code})`);
  } finally {
    clearTimeout(timer);
    signal.removeEventListener('abort', onAbort);
    controller.abort();
  }
}

/** What an introspection said about one token: an identity, or which rejection. */
type Verdict = { readonly identity: Identity } | { readonly code: ErrorCode };

/** RFC 6749 2.3.1: client id and secret are form-urlencoded before going into HTTP Basic. */
function formEncode(value: string): string {
  return new URLSearchParams({ v: value }).toString().slice(2);
}

/**
 * The `introspection` authenticator: OAuth 2.0 token introspection (RFC 7662) for opaque tokens.
 *
 * The token found by `from` is POSTed as `token=<token>` (form-urlencoded) to `url`, with the client
 * credentials as HTTP Basic when `clientSecret` is set (only `clientId`: sent as `client_id` in the body).
 * `active: true` accepts with `subject` = `sub` (else `username`, else null), `claims` = the response and
 * `expiresAt` = `exp`; `active: false` is 401 `token inactive`; an `exp` in the past is 401 `token expired`.
 * The endpoint down, slower than `timeoutMs` (default 2000), answering non-2xx, or answering something
 * other than a JSON object with a boolean `active` → a plain Error (503, fail closed).
 *
 * Answers, positive and negative, are cached for `cacheTtlSec` (default 30; 0 disables), never past the
 * token's `exp`, in a bounded LRU keyed by the SHA-256 of the token (the token itself is never kept).
 */
export function introspectionAuthenticator(name: string, config: IntrospectionConfig): Authenticator {
  const timeoutMs = config.timeoutMs ?? DEFAULT_BACKEND_TIMEOUT_MS;
  const ttlMs = (config.cacheTtlSec ?? DEFAULT_INTROSPECTION_CACHE_TTL_SEC) * 1000;
  const cache =
    ttlMs > 0
      ? new LRUCache<string, Verdict & { size: number }>({
          max: CACHE_MAX_ENTRIES,
          maxSize: CACHE_MAX_BYTES,
          sizeCalculation: (v) => v.size,
        })
      : null;
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
  if (config.clientSecret !== undefined) {
    const basic = `${formEncode(config.clientId ?? '')}:${formEncode(config.clientSecret)}`;
    headers.authorization = `Basic ${Buffer.from(basic).toString('base64')}`;
  }

  const introspect = async (token: string, signal: AbortSignal): Promise<Verdict & { size: number }> => {
    const form = new URLSearchParams({ token });
    if (config.clientSecret === undefined && config.clientId !== undefined) form.set('client_id', config.clientId);
    const res = await callBackend(config.url, { method: 'POST', headers, body: form.toString() }, { timeoutMs, signal, maxBodyBytes: MAX_RESPONSE_BYTES, what: 'introspection' });
    if (res.status < 200 || res.status > 299) throw new Error(`introspection: endpoint answered ${res.status}`);
    let body: unknown;
    try {
      body = JSON.parse(res.body.toString('utf8'));
    } catch {
      throw new Error('introspection: response is not JSON');
    }
    if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new Error('introspection: response is not a JSON object');
    const claims = body as Record<string, unknown>;
    if (claims.active === false) return { code: 'GW_ERR_TOKEN_INACTIVE', size: 1 };
    if (claims.active !== true) throw new Error('introspection: response has no boolean "active"');
    const exp = typeof claims.exp === 'number' && Number.isFinite(claims.exp) ? claims.exp : undefined;
    if (exp !== undefined && exp * 1000 <= Date.now()) return { code: 'GW_ERR_TOKEN_EXPIRED', size: 1 };
    const subject = typeof claims.sub === 'string' ? claims.sub : typeof claims.username === 'string' ? claims.username : null;
    const identity: Identity = { subject, authenticator: name, claims, ...(exp !== undefined && { expiresAt: exp }) };
    return { identity, size: res.body.length };
  };

  const settle = (verdict: Verdict): Identity => {
    if ('code' in verdict) throw new GatewayError(verdict.code, `introspection: ${REASONS[verdict.code] ?? verdict.code}`);
    // A cached identity is never served past its exp (the cache ttl says so too; this is the exact check).
    if (verdict.identity.expiresAt !== undefined && verdict.identity.expiresAt * 1000 <= Date.now()) {
      throw new GatewayError('GW_ERR_TOKEN_EXPIRED', 'introspection: token expired');
    }
    return verdict.identity;
  };

  const auth = tokenAuthenticator(name, 'introspection', config.from, async (token, request) => {
    const key = cache ? createHash('sha256').update(token).digest('hex') : '';
    const hit = cache?.get(key);
    if (hit) return settle(hit);
    const verdict = await introspect(token, request.signal);
    if (cache) {
      const exp = 'identity' in verdict ? verdict.identity.expiresAt : undefined;
      const ttl = exp === undefined ? ttlMs : Math.min(ttlMs, Math.floor(exp * 1000 - Date.now()));
      if (ttl > 0) cache.set(key, verdict, { ttl });
    }
    return settle(verdict);
  });
  return {
    ...auth,
    // Asks the endpoint again, past the cache: the point is to notice a token revoked at the source.
    async revalidate(_identity, token) {
      if (token === undefined) return false;
      const verdict = await introspect(token, AbortSignal.timeout(timeoutMs));
      return 'identity' in verdict;
    },
  };
}

const REASONS: Partial<Record<ErrorCode, string>> = {
  GW_ERR_TOKEN_INACTIVE: 'token inactive',
  GW_ERR_TOKEN_EXPIRED: 'token expired',
};
