import type { Logger } from 'pino';
import type { AuthenticatorConfig } from '../config/schema.js';
import type { SharedRedis } from '../redis.js';
import { apiKeyAuthenticator } from './api-key.js';
import type { Authenticator } from './authenticator.js';
import { forwardAuthAuthenticator } from './forward-auth.js';
import { introspectionAuthenticator } from './introspection.js';
import { jwksKeyLookup } from './jwks.js';
import { jwtAuthenticator } from './jwt.js';
import { sessionAuthenticator } from './session.js';
import { MemorySessionStore, RedisSessionStore } from './session-store.js';
import { moduleAuthenticator } from './upgrade-handler.js';
import { ticketAuthenticator, type TicketStore } from './ticket.js';

/** What building an authenticator may need besides its own config. */
export interface AuthDeps {
  readonly log: Logger;
  /** The shared Redis connection, created on first use. */
  redis(): SharedRedis;
  /** The gateway's one-time tickets (issued by `POST tickets.path`). */
  readonly tickets: TicketStore;
}

/** Builds one authenticator from its (validated) config entry. */
export function buildAuthenticator(name: string, config: AuthenticatorConfig, deps: AuthDeps): Authenticator {
  switch (config.type) {
    case 'jwt':
      return config.jwksUri !== undefined
        ? jwtAuthenticator(name, config, jwksKeyLookup({ jwksUri: config.jwksUri, cooldownSec: config.jwksCooldownSec ?? 30, log: deps.log }))
        : jwtAuthenticator(name, config);
    case 'apiKey':
      return apiKeyAuthenticator(name, config);
    case 'session': {
      const store = config.store?.type === 'redis' ? new RedisSessionStore(deps.redis(), config.store.prefix) : new MemorySessionStore();
      return sessionAuthenticator(name, config, store);
    }
    case 'introspection':
      return introspectionAuthenticator(name, config);
    case 'forwardAuth':
      return forwardAuthAuthenticator(name, config);
    case 'module':
      return moduleAuthenticator(name, config.path);
    case 'ticket':
      return ticketAuthenticator(name, config.from, deps.tickets);
  }
}
