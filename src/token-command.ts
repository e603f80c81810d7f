import { createSecretKey } from 'node:crypto';
import jsonwebtoken from 'jsonwebtoken';
import { parseDuration } from './duration.js';

/** Arguments of `portcullis token`. */
export interface TokenArgs {
  secret?: string | undefined;
  sub?: string | undefined;
  ttl?: string | undefined;
  iss?: string | undefined;
  aud?: string | undefined;
  claim?: string[] | undefined;
}

/**
 * Signs the HS256 JWT that `portcullis token` prints, for trying a gateway out.
 * @throws Error with a one-line reason on bad arguments
 */
export function makeToken(args: TokenArgs, now = Math.floor(Date.now() / 1000)): string {
  if (!args.secret) throw new Error('--secret is required');
  const ttl = parseDuration(args.ttl ?? '1h');
  if (ttl === null) throw new Error(`--ttl: expected Ns, Nm, Nh, Nd or seconds`);
  const payload: Record<string, unknown> = {};
  for (const pair of args.claim ?? []) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new Error(`--claim: expected key=value`);
    const raw = pair.slice(eq + 1);
    try {
      payload[pair.slice(0, eq)] = JSON.parse(raw);
    } catch {
      payload[pair.slice(0, eq)] = raw;
    }
  }
  if (args.sub !== undefined) payload.sub = args.sub;
  if (args.iss !== undefined) payload.iss = args.iss;
  if (args.aud !== undefined) payload.aud = args.aud;
  payload.iat = now;
  payload.exp = now + ttl;
  return jsonwebtoken.sign(payload, createSecretKey(Buffer.from(args.secret)), { algorithm: 'HS256' });
}
