// Embedded use with Express 5: ordinary HTTP routes stay Express's business, while WebSocket upgrades on
// /ws are authenticated by portcullis before any frame exists and then handed to this app ("local" mode).
//   JWT_SECRET=... node examples/express-app.mjs      (after `npm run build`)
import { once } from 'node:events';
import { createServer } from 'node:http';
import express from 'express';
import { createGateway } from '../dist/index.js';
import { isMain, runDemo } from './run-demo.mjs';

/** Starts the app on `port` (0: any free port); resolves `{ port, close }`. */
export async function start(port = 0, { secret = process.env.JWT_SECRET, host = '127.0.0.1', logLevel = 'info' } = {}) {
  const gateway = createGateway({
    log: { level: logLevel },
    // A short drain, so stopping the demo does not wait 30 s for clients that ignore the 1001 close.
    drain: { timeoutMs: 2000 },
    authenticators: {
      'user-jwt': {
        type: 'jwt',
        // Browsers cannot set headers on a WebSocket, hence the query and subprotocol fallbacks.
        from: ['bearer', 'query:access_token', 'protocol:bearer.'],
        secret,
        algorithms: ['HS256'],
      },
    },
    routes: [{ path: '/ws', auth: ['user-jwt'], mode: 'local' }],
  });

  // Only handshakes that passed every check get here, so `identity` can be trusted as is.
  gateway.on('connection', (ws, _req, identity) => {
    ws.send(JSON.stringify({ hello: identity.subject }));
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  });

  const app = express();
  app.get('/', (_req, res) => res.json({ service: 'express-app', websocket: '/ws' }));
  app.get('/healthz', (_req, res) => res.json({ status: 'ok' }));

  // attach() needs the http.Server itself: Express never sees 'upgrade' events.
  const server = createServer(app);
  gateway.attach(server);
  server.listen(port, host);
  await once(server, 'listening');

  return {
    port: server.address().port,
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
    describe: (port) => `express app on http://127.0.0.1:${port}, websocket on ws://127.0.0.1:${port}/ws`,
  });
}
