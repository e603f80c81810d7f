import { constants, createHmac, timingSafeEqual, verify, type KeyObject } from 'node:crypto';
import { GatewayError } from '../errors.js';

/** The JOSE algorithms a `jwt` authenticator may list (`none` is not one of them). */
export type JwsAlgorithm = 'HS256' | 'HS384' | 'HS512' | 'RS256' | 'RS384' | 'RS512' | 'PS256' | 'PS384' | 'PS512' | 'ES256' | 'ES384' | 'ES512' | 'EdDSA';

/** A compact JWS decoded once: its header and payload (not to be trusted before {@link verifyJws}), and the segments the signature covers. */
export interface ParsedJws {
  readonly header: Readonly<Record<string, unknown>> & { readonly alg: JwsAlgorithm; readonly kid?: unknown };
  readonly payload: Record<string, unknown>;
  /** `header.payload`, the bytes the signature is over. */
  readonly signingInput: string;
  readonly signatureSegment: string;
}

// Three base64url segments, the signature possibly empty (then refused as unsigned): what jws accepts.
const COMPACT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;
// jsonwebtoken's rules for which key may verify which algorithm (lib/validateAsymmetricKey.js), plus EdDSA.
const CURVES: Readonly<Record<string, string>> = { ES256: 'prime256v1', ES384: 'secp384r1', ES512: 'secp521r1' };
// An ES signature is R || S, each the size of the curve order (RFC 7518 3.4).
const ES_SIGNATURE_BYTES: Readonly<Record<string, number>> = { ES256: 64, ES384: 96, ES512: 132 };

function decodeJson(segment: string): unknown {
  try {
    return JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Splits and decodes a compact JWS. Refuses what is not three base64url segments with a JSON object header
 * and payload (401 token malformed; RFC 7519 7.2: the claims set is an object), an `alg` outside
 * `algorithms` (401 algorithm not allowed), an empty signature (likewise: unsigned) and a `crit` header
 * parameter (401 token invalid).
 * @throws GatewayError
 */
export function parseJws(token: string, algorithms: readonly JwsAlgorithm[]): ParsedJws {
  if (!COMPACT.test(token)) throw new GatewayError('GW_ERR_TOKEN_MALFORMED');
  const first = token.indexOf('.');
  const last = token.lastIndexOf('.');
  const header = decodeJson(token.slice(0, first));
  if (!isObject(header)) throw new GatewayError('GW_ERR_TOKEN_MALFORMED', 'header is not a JSON object');
  const payload = decodeJson(token.slice(first + 1, last));
  if (!isObject(payload)) throw new GatewayError('GW_ERR_TOKEN_MALFORMED', 'payload is not a JSON object');
  const alg = header.alg;
  if (typeof alg !== 'string' || !algorithms.includes(alg as JwsAlgorithm)) {
    throw new GatewayError('GW_ERR_ALGORITHM_NOT_ALLOWED', `alg ${String(alg).slice(0, 16)}`);
  }
  if (last === token.length - 1) throw new GatewayError('GW_ERR_ALGORITHM_NOT_ALLOWED', 'jwt signature is required');
  // RFC 7515 4.1.11: extensions listed as critical must be understood, and this verifier knows none.
  if (header.crit !== undefined) throw new GatewayError('GW_ERR_TOKEN_INVALID', 'crit header parameter not supported');
  return {
    header: header as ParsedJws['header'],
    payload,
    signingInput: token.slice(0, last),
    signatureSegment: token.slice(last + 1),
  };
}

/** Why `key` cannot verify `alg` (key confusion: an RSA public key used as an HMAC secret, a P-384 key for ES256), or null. */
function keyMismatch(alg: JwsAlgorithm, key: KeyObject): string | null {
  const family = alg.slice(0, 2);
  if (family === 'HS') return key.type === 'secret' ? null : 'HS needs a secret key';
  if (key.type !== 'public') return `${alg} needs a public key`;
  const type = key.asymmetricKeyType;
  if (alg === 'EdDSA') return type === 'ed25519' || type === 'ed448' ? null : 'EdDSA needs an Ed25519 or Ed448 key';
  if (family === 'ES') return type === 'ec' && key.asymmetricKeyDetails?.namedCurve === CURVES[alg] ? null : `${alg} needs a ${CURVES[alg]} key`;
  if (family === 'RS') return type === 'rsa' ? null : `${alg} needs an RSA key`;
  if (type === 'rsa') return null;
  if (type !== 'rsa-pss') return `${alg} needs an RSA key`;
  // An RSA-PSS key restricted to other parameters must not verify this algorithm.
  const bits = alg.slice(2);
  const { hashAlgorithm, mgf1HashAlgorithm, saltLength } = key.asymmetricKeyDetails ?? {};
  if (hashAlgorithm !== undefined && (hashAlgorithm !== `sha${bits}` || mgf1HashAlgorithm !== hashAlgorithm)) return `RSA-PSS key parameters do not fit ${alg}`;
  if (saltLength !== undefined && saltLength > Number(bits) >> 3) return `RSA-PSS salt length does not fit ${alg}`;
  return null;
}

/**
 * Checks the signature of a parsed JWS with `key` (HMAC compared in constant time on the canonical
 * base64url; RSA, RSA-PSS, ECDSA in JOSE's R || S form, EdDSA through node:crypto) and returns its payload.
 * @throws GatewayError 401: token invalid (key unfit for the algorithm), signature invalid
 */
export function verifyJws(jws: ParsedJws, key: KeyObject): Record<string, unknown> {
  const { alg } = jws.header;
  const mismatch = keyMismatch(alg, key);
  if (mismatch) throw new GatewayError('GW_ERR_TOKEN_INVALID', mismatch);
  if (!signatureHolds(alg, jws.signingInput, jws.signatureSegment, key)) throw new GatewayError('GW_ERR_SIGNATURE_INVALID');
  return jws.payload;
}

function signatureHolds(alg: JwsAlgorithm, input: string, signature: string, key: KeyObject): boolean {
  const family = alg.slice(0, 2);
  const hash = alg === 'EdDSA' ? null : `sha${alg.slice(2)}`;
  if (family === 'HS') {
    const expected = createHmac(hash!, key).update(input).digest('base64url');
    return expected.length === signature.length && timingSafeEqual(Buffer.from(expected), Buffer.from(signature));
  }
  const bytes = Buffer.from(signature, 'base64url');
  if (family === 'ES' && bytes.length !== ES_SIGNATURE_BYTES[alg]) return false;
  const options =
    family === 'PS'
      ? { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }
      : family === 'ES'
        ? { key, dsaEncoding: 'ieee-p1363' as const }
        : key;
  try {
    return verify(hash, Buffer.from(input), options, bytes);
  } catch {
    // A signature of the wrong size for the key, or a key node:crypto refuses for it: not valid.
    return false;
  }
}
