import { GatewayError } from '../errors.js';
import type { AuthRequest, AuthResult, Authenticator } from './authenticator.js';

/** Which authenticator decided, and what it said. */
export interface ChainOutcome extends AuthResult {
  readonly authenticator: string;
}

/** The rejection for an authenticator that threw: its own GatewayError, or 503 for anything else. */
function rejectionOf(auth: Authenticator, err: unknown): GatewayError {
  const rejection = err instanceof GatewayError ? err : new GatewayError('GW_ERR_AUTH_UNAVAILABLE', `${auth.name}: backend failed`, {}, { cause: err });
  rejection.authenticator ??= auth.name;
  return rejection;
}

/**
 * The one chain rule (any-of, SPEC 9): the first authenticator that finds its credential decides alone;
 * null hands over to the next; a GatewayError rejects; any other error fails closed with 503.
 * Nobody finding a credential is 401 `unauthorized` with a bare Bearer challenge.
 * Synchronous for as long as the authenticators are (a JWT with a static key, an API key): a promise
 * only once one of them has to wait, so the common handshake takes no extra turn nor timer.
 * @throws GatewayError
 */
export function runChain(
  authenticators: readonly Authenticator[],
  request: AuthRequest,
  /** Told how long each authenticator that ran took (metrics). */
  timed?: (authenticator: string, seconds: number) => void,
  from = 0,
): ChainOutcome | Promise<ChainOutcome> {
  for (let i = from; i < authenticators.length; i++) {
    const auth = authenticators[i]!;
    const started = timed && performance.now();
    let result: AuthResult | null | Promise<AuthResult | null>;
    try {
      result = auth.authenticate(request);
    } catch (err) {
      if (started !== undefined) timed!(auth.name, (performance.now() - started) / 1000);
      throw rejectionOf(auth, err);
    }
    if (result instanceof Promise) return settleChain(authenticators, request, timed, i, result, started);
    if (started !== undefined) timed!(auth.name, (performance.now() - started) / 1000);
    if (result) return { ...result, authenticator: auth.name };
  }
  throw new GatewayError('GW_ERR_CREDENTIALS_MISSING');
}

/** The rest of {@link runChain} once authenticator `i` returned a promise. */
async function settleChain(
  authenticators: readonly Authenticator[],
  request: AuthRequest,
  timed: ((authenticator: string, seconds: number) => void) | undefined,
  i: number,
  pending: Promise<AuthResult | null>,
  started: number | undefined,
): Promise<ChainOutcome> {
  const auth = authenticators[i]!;
  let result: AuthResult | null;
  try {
    result = await pending;
  } catch (err) {
    throw rejectionOf(auth, err);
  } finally {
    if (started !== undefined) timed!(auth.name, (performance.now() - started) / 1000);
  }
  if (result) return { ...result, authenticator: auth.name };
  return runChain(authenticators, request, timed, i + 1);
}

/**
 * Resolves `work` unless `ms` pass first (then 503 `GW_ERR_AUTH_TIMEOUT`) or `signal` aborts (then its reason).
 * The timer is always cleared, so nothing outlives the handshake.
 */
export function withDeadline<T>(work: T | Promise<T>, ms: number, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => finish(() => reject(signal.reason));
    const timer = setTimeout(() => finish(() => reject(new GatewayError('GW_ERR_AUTH_TIMEOUT'))), ms);
    function finish(settle: () => void) {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      settle();
    }
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    Promise.resolve(work).then(
      (value) => finish(() => resolve(value)),
      (err: unknown) => finish(() => reject(err)),
    );
  });
}
