import { GatewayError } from '../errors.js';
import type { AuthRequest, AuthResult, Authenticator } from './authenticator.js';

/** Which authenticator decided, and what it said. */
export interface ChainOutcome extends AuthResult {
  readonly authenticator: string;
}

/**
 * The one chain rule (any-of, SPEC 9): the first authenticator that finds its credential decides alone;
 * null hands over to the next; a GatewayError rejects; any other error fails closed with 503.
 * Nobody finding a credential is 401 `unauthorized` with a bare Bearer challenge.
 * @throws GatewayError
 */
export async function runChain(
  authenticators: readonly Authenticator[],
  request: AuthRequest,
  /** Told how long each authenticator that ran took (metrics). */
  timed?: (authenticator: string, seconds: number) => void,
): Promise<ChainOutcome> {
  for (const auth of authenticators) {
    let result: AuthResult | null;
    const started = timed && performance.now();
    try {
      result = await auth.authenticate(request);
    } catch (err) {
      const rejection = err instanceof GatewayError ? err : new GatewayError('GW_ERR_AUTH_UNAVAILABLE', `${auth.name}: backend failed`, {}, { cause: err });
      rejection.authenticator ??= auth.name;
      throw rejection;
    } finally {
      if (started !== undefined) timed!(auth.name, (performance.now() - started) / 1000);
    }
    if (result) return { ...result, authenticator: auth.name };
  }
  throw new GatewayError('GW_ERR_CREDENTIALS_MISSING');
}

/**
 * Resolves `work` unless `ms` pass first (then 503 `GW_ERR_AUTH_TIMEOUT`) or `signal` aborts (then its reason).
 * The timer is always cleared, so nothing outlives the handshake.
 */
export function withDeadline<T>(work: Promise<T>, ms: number, signal: AbortSignal): Promise<T> {
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
    work.then(
      (value) => finish(() => resolve(value)),
      (err: unknown) => finish(() => reject(err)),
    );
  });
}
