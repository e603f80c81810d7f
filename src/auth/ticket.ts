import { randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { GatewayError } from '../errors.js';
import type { Identity } from '../types.js';
import type { Authenticator } from './authenticator.js';
import { tokenAuthenticator } from './token.js';

const MAX_TICKETS = 100_000;

/**
 * One-time tickets (SPEC 2.4): an identity parked under a random ticket for `ttlSec`, taken out (and so
 * spent) by its first use. Per process in this version; shared through Redis is next.
 */
export class TicketStore {
  readonly #tickets = new LRUCache<string, Identity>({ max: MAX_TICKETS, ttlAutopurge: false, ttl: 30_000 });

  /** Issues a ticket for `identity`, valid for `ttlSec` seconds. */
  issue(identity: Identity, ttlSec: number): string {
    const ticket = randomBytes(32).toString('base64url');
    this.#tickets.set(ticket, identity, { ttl: ttlSec * 1000 });
    return ticket;
  }

  /** The identity a ticket was issued for, once; undefined when unknown, expired or already used. */
  take(ticket: string): Identity | undefined {
    const identity = this.#tickets.get(ticket);
    if (identity !== undefined) this.#tickets.delete(ticket);
    return identity;
  }
}

/** The `ticket` authenticator: accepts a ticket once, within its TTL, with the identity it was issued for. */
export function ticketAuthenticator(name: string, from: readonly string[] | undefined, store: TicketStore): Authenticator {
  return tokenAuthenticator(name, 'ticket', from ?? ['query:ticket'], (ticket) => {
    const identity = store.take(ticket);
    if (!identity) throw new GatewayError('GW_ERR_TICKET_INVALID');
    return identity;
  });
}
