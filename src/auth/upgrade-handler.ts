import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { GatewayError } from '../errors.js';
import { anonymous, identityFromResult } from '../identity.js';
import type { UpgradeHandler } from '../types.js';
import type { Authenticator } from './authenticator.js';

/** Runs a handler; a throw becomes a 500 (the cause is kept for the log), false becomes 401. */
export async function runUpgradeHandler(
  handler: UpgradeHandler,
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  base: ReturnType<typeof anonymous>,
) {
  let result;
  try {
    result = await handler(req, socket, head);
  } catch (err) {
    throw new GatewayError('GW_ERR_INTERNAL', 'upgrade handler threw', {}, { cause: err });
  }
  const identity = identityFromResult(result, base);
  if (!identity) throw new GatewayError('GW_ERR_HANDLER_REJECTED');
  return identity;
}

/**
 * Wraps a Midway-style handler `(request, socket, head) => boolean | Identity` as an authenticator.
 * A handler is always decisive (it cannot say "not mine"): put it last or alone. If it already answered
 * on the socket itself, the gateway writes nothing more.
 */
export function fromUpgradeHandler(name: string, handler: UpgradeHandler): Authenticator {
  return {
    name,
    type: 'module',
    async authenticate({ req, socket, head }) {
      return { identity: await runUpgradeHandler(handler, req, socket, head, anonymous(name)) };
    },
  };
}

/** The `module` authenticator: the default export of the module at `path` (imported once, before serving). */
export function moduleAuthenticator(name: string, path: string): Authenticator {
  let loaded: Promise<Authenticator> | undefined;
  const load = () =>
    (loaded ??= import(pathToFileURL(path).href).then((mod: { default?: unknown }) => {
      if (typeof mod.default !== 'function') throw new TypeError(`${path}: default export is not a function`);
      return fromUpgradeHandler(name, mod.default as UpgradeHandler);
    }));
  return {
    name,
    type: 'module',
    async ready() {
      await load();
    },
    async authenticate(request) {
      let auth: Authenticator;
      try {
        auth = await load();
      } catch (err) {
        throw new GatewayError('GW_ERR_INTERNAL', 'module could not be loaded', {}, { cause: err });
      }
      return auth.authenticate(request);
    },
  };
}
