import { createHash, randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { GatewayError } from '../errors.js';
import type { SharedRedis } from '../redis.js';
import type { Identity } from '../types.js';
import type { Authenticator } from './authenticator.js';
import { tokenAuthenticator } from './token.js';

const MAX_TICKETS = 100_000;

/** Where one-time tickets wait to be spent (SPEC 2.4). */
export interface TicketStore {
  /** Parks `identity` under a new random ticket for `ttlSec` seconds; resolves the ticket. */
  issue(identity: Identity, ttlSec: number): Promise<string>;
  /** The identity a ticket was issued for, once; undefined when unknown, expired or already used. */
  take(ticket: string): Promise<Identity | undefined>;
}

const newTicket = () => randomBytes(32).toString('base64url');

/** Tickets of one process. */
export class MemoryTicketStore implements TicketStore {
  readonly #tickets = new LRUCache<string, Identity>({ max: MAX_TICKETS, ttlAutopurge: false, ttl: 30_000 });

  async issue(identity: Identity, ttlSec: number): Promise<string> {
    const ticket = newTicket();
    this.#tickets.set(ticket, identity, { ttl: ttlSec * 1000 });
    return ticket;
  }

  async take(ticket: string): Promise<Identity | undefined> {
    const identity = this.#tickets.get(ticket);
    if (identity !== undefined) this.#tickets.delete(ticket);
    return identity;
  }
}

/**
 * Tickets shared by every replica: stored under a hash of the ticket (never the ticket) with its TTL,
 * and spent with GETDEL, so exactly one replica can accept a ticket once.
 */
export class RedisTicketStore implements TicketStore {
  readonly #redis: SharedRedis;

  constructor(redis: SharedRedis) {
    this.#redis = redis;
  }

  #key(ticket: string): string {
    return `portcullis:ticket:${createHash('sha256').update(ticket).digest('hex')}`;
  }

  async issue(identity: Identity, ttlSec: number): Promise<string> {
    const ticket = newTicket();
    await this.#redis.set(this.#key(ticket), JSON.stringify(identity), ttlSec);
    return ticket;
  }

  async take(ticket: string): Promise<Identity | undefined> {
    const raw = await this.#redis.getDel(this.#key(ticket));
    return raw === null ? undefined : (JSON.parse(raw) as Identity);
  }
}

/** The `ticket` authenticator: accepts a ticket once, within its TTL, with the identity it was issued for. */
export function ticketAuthenticator(name: string, from: readonly string[] | undefined, store: TicketStore): Authenticator {
  return tokenAuthenticator(name, 'ticket', from ?? ['query:ticket'], async (ticket) => {
    const identity = await store.take(ticket);
    if (!identity) throw new GatewayError('GW_ERR_TICKET_INVALID');
    return identity;
  });
}
