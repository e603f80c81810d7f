import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';

/** Who the caller is, once an authenticator has vouched for them. */
export interface Identity {
  /** Stable id of the caller (JWT `sub`, session user, API key owner); null for an anonymous identity. */
  readonly subject: string | null;
  /** The key, in `authenticators`, of the authenticator that decided. */
  readonly authenticator: string;
  /** Verified attributes (scopes, roles, the JWT payload). */
  readonly claims: Readonly<Record<string, unknown>>;
  /** When the identity stops being valid, in seconds since the epoch. */
  readonly expiresAt?: number;
  /** For a `session` identity: the express-session id, so it can be revoked (`POST /revoke`). */
  readonly sessionId?: string;
}

/** What a Midway-style handler may return: true accepts anonymously, false rejects, an object accepts as that identity. */
export type UpgradeResult = boolean | Partial<Identity>;

/** Midway's `onWebSocketUpgrade(request, socket, head)` contract, widened to allow returning an identity. */
export type UpgradeHandler = (
  request: IncomingMessage,
  socket: Duplex,
  head: Buffer,
) => UpgradeResult | Promise<UpgradeResult>;
