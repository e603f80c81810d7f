import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Gateway } from './gateway.js';

/**
 * The whole gateway as a Midway `onWebSocketUpgrade` handler: resolves true to let the host upgrade,
 * false after the complete rejection (401, 403, ...) has been written, so the client reads a real status
 * even though Midway destroys the socket on false. Read the identity later with `identityOf(request)`.
 * @example app.onWebSocketUpgrade(toUpgradeHandler(gateway));
 */
export function toUpgradeHandler(gateway: Gateway): (request: IncomingMessage, socket: Duplex, head: Buffer) => Promise<boolean> {
  return async function portcullisUpgradeHandler(request, socket, head) {
    return (await gateway.authorize(request, socket, head)).ok;
  };
}
