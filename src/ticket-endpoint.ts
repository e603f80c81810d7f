import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { AuthRequest } from './auth/authenticator.js';
import { runChain, withDeadline } from './auth/chain.js';
import type { TicketStore } from './auth/ticket.js';
import { requestIdOf } from './checks.js';
import { GatewayError } from './errors.js';
import { sendRejection } from './respond.js';
import { parseRequestUrl } from './router.js';
import type { GatewayState } from './state.js';
import type { Identity } from './types.js';

/** What issuing a ticket needs from the gateway. */
export interface TicketEndpointDeps {
  readonly log: Logger;
  readonly tickets: TicketStore;
  /** While draining: the 503 to answer. */
  draining(): GatewayError | undefined;
  /** The `onWebSocketUpgrade` handlers, run on the identity as for an upgrade. */
  runHandlers(identity: Identity, request: AuthRequest): Promise<Identity>;
  isRevoked(identity: Identity): boolean;
}

/**
 * `POST tickets.path` (SPEC 2.4): authenticated by any non-ticket authenticator that some route uses
 * (Bearer, cookie...); with an `Origin`, a route using the deciding authenticator must allow it.
 * Answers `{ ticket, expiresIn }`; the ticket is never logged.
 */
export async function issueTicket(req: IncomingMessage, res: ServerResponse, state: GatewayState, ttlSec: number, deps: TicketEndpointDeps): Promise<void> {
  const requestId = requestIdOf(req);
  const log = { reqId: requestId, route: state.config.tickets!.path, remoteAddress: req.socket?.remoteAddress ?? null };
  try {
    if (req.method !== 'POST') throw new GatewayError('GW_ERR_METHOD_NOT_ALLOWED', undefined, { Allow: 'POST' });
    const draining = deps.draining();
    if (draining) throw draining;
    const routes = state.routes.filter((r) => r.authenticators.some((a) => a.type !== 'ticket'));
    const authenticators = [...new Set(routes.flatMap((r) => r.authenticators.filter((a) => a.type !== 'ticket')))];
    const ac = new AbortController();
    const request = { req, socket: req.socket, head: Buffer.alloc(0), url: parseRequestUrl(req)!, signal: ac.signal };
    const outcome = await withDeadline(runChain(authenticators, request), state.handshakeTimeoutMs, ac.signal);
    const origin = req.headers.origin;
    if (origin !== undefined && !routes.some((r) => r.authenticators.some((a) => a.name === outcome.authenticator) && r.originAllowed(origin))) {
      throw new GatewayError('GW_ERR_ORIGIN_NOT_ALLOWED', 'ticket request from a disallowed origin');
    }
    const identity = await deps.runHandlers(outcome.identity, request);
    if (deps.isRevoked(identity)) throw new GatewayError('GW_ERR_TOKEN_REVOKED');
    const ticket = await deps.tickets.issue(identity, ttlSec).catch((err: unknown) => {
      throw new GatewayError('GW_ERR_AUTH_UNAVAILABLE', 'ticket store unavailable', {}, { cause: err });
    });
    const body = JSON.stringify({ ticket, expiresIn: ttlSec });
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store', 'X-Request-Id': requestId });
    res.end(body);
    deps.log.info({ ...log, authenticator: identity.authenticator, subject: identity.subject, status: 200 }, 'ticket issued');
  } catch (thrown) {
    const err = thrown instanceof GatewayError ? thrown : new GatewayError('GW_ERR_INTERNAL', 'unexpected error', {}, { cause: thrown });
    deps.log.info({ ...log, authenticator: err.authenticator ?? null, status: err.status, code: err.code, reason: err.message }, 'ticket refused');
    sendRejection(res, err, requestId);
  }
}
