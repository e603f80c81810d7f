import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FoundCredential } from '../credentials.js';
import type { Identity } from '../types.js';

/** One upgrade request as an authenticator sees it. */
export interface AuthRequest {
  readonly req: IncomingMessage;
  readonly socket: Duplex;
  readonly head: Buffer;
  /** `req.url` parsed once; its origin is a placeholder. */
  readonly url: URL;
  /** Aborts when the client hangs up, the deadline passes or the gateway closes. */
  readonly signal: AbortSignal;
}

/** An accepted credential: who it is, and where it was found (to strip it before forwarding). */
export interface AuthResult {
  readonly identity: Identity;
  readonly credential?: FoundCredential;
  /** Headers the authenticator vouches for, to send upstream (forwardAuth `copyHeaders`). */
  readonly upstreamHeaders?: Readonly<Record<string, string>>;
}

/**
 * One way of recognising a caller. The whole chain contract:
 *  - return or resolve an AuthResult → accept; the chain stops
 *  - return or resolve null → no credential of this kind; the next authenticator is tried
 *  - throw GatewayError → a credential is present but wrong; the chain stops and rejects
 *  - throw anything else → cannot decide (backend down): fail closed with 503
 */
export interface Authenticator {
  /** The authenticator's key in `authenticators`. */
  readonly name: string;
  readonly type: string;
  /** Seconds an identity stays valid past `expiresAt` (the JWT `clockToleranceSec`); live connections get it too. */
  readonly clockToleranceSec?: number;
  /** May answer synchronously (a static-key JWT, an API key): the handshake then waits for nothing. */
  authenticate(request: AuthRequest): AuthResult | null | Promise<AuthResult | null>;
  /**
   * Checks a token that arrived some other way than the request (a first-message `auth` or a `refresh`
   * message). Only token-bearing authenticators have it. Same contract as `authenticate`, never null.
   */
  verifyToken?(token: string, request: AuthRequest): Promise<Identity>;
  /**
   * Re-checks a live connection's identity (`revalidateSec`): false when the session is gone or the token
   * is no longer active; a throw means the backend could not tell (the connection is kept).
   * @param credential the credential the identity was accepted with
   */
  revalidate?(identity: Identity, credential: string | undefined): Promise<boolean>;
  /** Work to do before serving (imports, connections); failures surface here, not per request. */
  ready?(): Promise<void>;
  close?(): Promise<void>;
}
