import { createSecretKey, generateKeyPairSync } from 'node:crypto';
import jsonwebtoken, { type SignOptions } from 'jsonwebtoken';

/** The HS256 secret test configs use (≥ 32 bytes, as the gateway requires). */
export const SECRET = 'test-secret-0123456789abcdef-0123456789';

/** Signs an HS256 token with {@link SECRET} (or another secret); `exp` one hour ahead unless given. */
export function hs256(payload: Record<string, unknown> = { sub: 'alice' }, secret = SECRET, options: SignOptions = {}): string {
  const now = Math.floor(Date.now() / 1000);
  return jsonwebtoken.sign({ iat: now, exp: now + 3600, ...payload }, createSecretKey(Buffer.from(secret)), { algorithm: 'HS256', ...options });
}

/** An RSA key pair made at test time, as PEM. */
export function rsaKeys(): { publicKey: string; privateKey: string } {
  return generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
}

/** A jwt authenticator config for {@link SECRET}. */
export function jwtAuth(extra: Record<string, unknown> = {}) {
  return { type: 'jwt', from: ['bearer', 'query:access_token', 'protocol:bearer.'], secret: SECRET, algorithms: ['HS256'], ...extra };
}
