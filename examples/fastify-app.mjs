// Embedded use with Fastify 5 and @fastify/websocket: Fastify keeps its own WebSocket routes and handlers,
// and portcullis decides every upgrade first, in an onRequest hook. A refused handshake gets the gateway's
// complete 401/403/429 on the raw socket and never reaches a Fastify handler.
//   JWT_SECRET=... node examples/fastify-app.mjs      (after `npm run build`)
//
// Why a hook and not gateway.attach(app.server): @fastify/websocket is itself an 'upgrade' listener on
// app.server and sends EVERY upgrade through Fastify's router (and answers 404 for paths Fastify has no route
// for), so a second listener would be answering the same sockets. In the hook, the gateway decides
// (toUpgradeHandler = authorize: all the checks, nothing handed on) and @fastify/websocket upgrades.
import Fastify from 'fastify';
import fastifyWebsocket from '@fastify/websocket';
import { createGateway, identityOf, toUpgradeHandler } from '../dist/index.js';
import { isMain, runDemo } from './run-demo.mjs';

const NO_HEAD = Buffer.alloc(0);

/**
 * An onRequest hook that puts the gateway in front of every WebSocket route of the Fastify instance it is
 * added to. Plain HTTP requests pass untouched.
 */
export function portcullisHook(gateway) {
  const authorize = toUpgradeHandler(gateway);
  return async function portcullis(request, reply) {
    // Node's own flag for a request that came with the 'upgrade' event (which @fastify/websocket routes
    // through Fastify); unlike request.ws it does not depend on the order plugins and hooks were added.
    if (!request.raw.upgrade) return;
    // The raw request and its socket, as the 'upgrade' event had them. (@fastify/websocket keeps the
    // upgrade's `head` to itself; it is empty for every ordinary client, and only module/onWebSocketUpgrade
    // authenticators would look at it.)
    const allowed = await authorize(request.raw, request.raw.socket, NO_HEAD);
    // Refused: the gateway has written the whole response and closed the socket. hijack() tells Fastify
    // the reply is handled, so no further hook, no handler and no 404 runs.
    if (!allowed) reply.hijack();
  };
}

/** Starts the app on `port` (0: any free port); resolves `{ port, handled, close }`. */
export async function start(port = 0, { secret = process.env.JWT_SECRET, host = '127.0.0.1', logLevel = 'info' } = {}) {
  const gateway = createGateway({
    log: { level: logLevel },
    authenticators: {
      // No `query:access_token` here: Fastify routes the upgrade, and logs its URL ("incoming request"),
      // before the hook runs, so a token in the query string would end up in Fastify's log. Browsers use
      // the subprotocol: new WebSocket(url, ['bearer', 'bearer.' + token]).
      'user-jwt': { type: 'jwt', from: ['bearer', 'protocol:bearer.'], secret, algorithms: ['HS256'] },
    },
    // Every WebSocket path Fastify serves needs a route here ("local": Fastify, not the gateway, owns the
    // connection). A path with none is refused 404 by the gateway: deny by default. A public WebSocket route
    // says so explicitly with `auth: []`.
    routes: [
      { path: '/ws', auth: ['user-jwt'], mode: 'local' },
      { path: '/status', auth: [], mode: 'local' },
    ],
  });

  const app = Fastify({ logger: logLevel === 'silent' ? false : { level: logLevel } });
  await app.register(fastifyWebsocket);
  // On the root instance, so every WebSocket route, in every plugin, is behind it.
  app.addHook('onRequest', portcullisHook(gateway));

  let handled = 0;
  app.get('/ws', { websocket: true }, (socket, request) => {
    handled++;
    // The identity travels with the raw request object, so no header can be forged to claim one.
    const identity = identityOf(request.raw);
    socket.send(JSON.stringify({ hello: identity?.subject ?? null }));
    socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }));
  });
  app.get('/status', { websocket: true }, (socket) => {
    handled++;
    socket.send(JSON.stringify({ status: 'ok', clients: app.websocketServer.clients.size }));
    socket.close(1000);
  });
  // An ordinary HTTP route on the same server; the hook lets it through untouched.
  app.get('/', async () => ({ service: 'fastify-app', websocket: '/ws' }));

  await app.listen({ port, host });

  return {
    port: app.server.address().port,
    /** How many connections Fastify's WebSocket handlers have run for. */
    get handled() {
      return handled;
    },
    async close() {
      // app.close() closes the WebSocket clients (@fastify/websocket's preClose), then the server.
      for (const client of app.websocketServer.clients) client.terminate();
      await app.close();
      await gateway.close();
    },
  };
}

if (isMain(import.meta.url)) {
  await runDemo(start, {
    defaultPort: 3000,
    path: '/ws',
    describe: (port) => `fastify app on http://127.0.0.1:${port}, websocket on ws://127.0.0.1:${port}/ws`,
  });
}
