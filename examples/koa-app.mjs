// Embedded use with Koa 3: Koa serves the ordinary HTTP routes, and portcullis decides every WebSocket
// upgrade on /ws before any frame exists, then hands the authenticated connection to this app ("local" mode).
//   JWT_SECRET=... node examples/koa-app.mjs      (after `npm run build`)
import { once } from 'node:events';
import { createServer } from 'node:http';
import Koa from 'koa';
import { createGateway } from '../dist/index.js';
import { isMain, runDemo } from './run-demo.mjs';

/** Starts the app on `port` (0: any free port); resolves `{ port, handled, close }`. */
export async function start(port = 0, { secret = process.env.JWT_SECRET, host = '127.0.0.1', logLevel = 'info' } = {}) {
  const gateway = createGateway({
    log: { level: logLevel },
    // A short drain, so stopping the demo does not wait 30 s for clients that ignore the 1001 close.
    drain: { timeoutMs: 2000 },
    authenticators: {
      // Browsers cannot set headers on a WebSocket, hence the query and subprotocol fallbacks.
      'user-jwt': { type: 'jwt', from: ['bearer', 'query:access_token', 'protocol:bearer.'], secret, algorithms: ['HS256'] },
    },
    routes: [{ path: '/ws', auth: ['user-jwt'], mode: 'local' }],
  });

  // Only handshakes that passed every check get here, so `identity` can be trusted as is.
  let handled = 0;
  gateway.on('connection', (ws, _req, identity) => {
    handled++;
    ws.send(JSON.stringify({ hello: identity.subject }));
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  });

  const app = new Koa();
  app.use(async (ctx, next) => {
    if (ctx.method === 'GET' && ctx.path === '/') ctx.body = { service: 'koa-app', websocket: '/ws' };
    else if (ctx.method === 'GET' && ctx.path === '/healthz') ctx.body = { status: 'ok' };
    else await next();
  });

  // Koa only ever sees 'request' events: the 'upgrade' event is the http.Server's, so the gateway is attached
  // to the server, not to the Koa app. (`gateway.attach(app.listen(3000))` works too: listen() returns it.)
  const server = createServer(app.callback());
  gateway.attach(server);
  server.listen(port, host);
  await once(server, 'listening');

  return {
    port: server.address().port,
    /** How many connections the app's WebSocket handler has run for. */
    get handled() {
      return handled;
    },
    async close() {
      await gateway.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

if (isMain(import.meta.url)) {
  await runDemo(start, {
    defaultPort: 3000,
    path: '/ws',
    describe: (port) => `koa app on http://127.0.0.1:${port}, websocket on ws://127.0.0.1:${port}/ws`,
  });
}
