// Embedded use in a Midway-style host, without depending on Midway: this file reproduces the contract of
// Midway's ws framework, an `app.onWebSocketUpgrade(handler)` hook that the host's 'upgrade' listener
// awaits, destroying the socket on false and upgrading with its own ws server on true. portcullis plugs
// in as that handler through toUpgradeHandler(gateway), and the app reads the identity with identityOf().
//   JWT_SECRET=... node examples/midway-host.mjs      (after `npm run build`)
import { once } from 'node:events';
import { createServer } from 'node:http';
import { WebSocketServer } from 'ws';
import { createGateway, identityOf, toUpgradeHandler } from '../dist/index.js';
import { isMain, runDemo } from './run-demo.mjs';

/** What Midway's ws framework does with an http server: the app *is* a noServer WebSocketServer. */
function createMidwayStyleApp(server) {
  const app = new WebSocketServer({ noServer: true });
  let upgradeHandler;
  app.onWebSocketUpgrade = (handler) => {
    upgradeHandler = handler;
  };
  server.on('upgrade', async (request, socket, head) => {
    if (upgradeHandler) {
      let allowed = false;
      try {
        allowed = await upgradeHandler(request, socket, head);
      } catch {
        allowed = false;
      }
      // Midway gives the client no answer of its own here; portcullis has written the full rejection
      // (401, 403, ...) before resolving false, so the client still reads a real status.
      if (!allowed) return socket.destroy();
    }
    app.handleUpgrade(request, socket, head, (ws) => app.emit('connection', ws, request));
  });
  return app;
}

/** Starts the host on `port` (0: any free port); resolves `{ port, close }`. */
export async function start(port = 0, { secret = process.env.JWT_SECRET, host = '127.0.0.1', logLevel = 'info' } = {}) {
  const gateway = createGateway({
    log: { level: logLevel },
    authenticators: {
      'user-jwt': { type: 'jwt', from: ['bearer', 'query:access_token', 'protocol:bearer.'], secret, algorithms: ['HS256'] },
    },
    // "local": the host, not the gateway, owns the WebSocket once the handshake is allowed.
    routes: [{ path: '/ws', auth: ['user-jwt'], mode: 'local' }],
  });

  const server = createServer((_req, res) => res.writeHead(200, { 'Content-Type': 'application/json' }).end('{"service":"midway-host"}'));
  const app = createMidwayStyleApp(server);
  app.onWebSocketUpgrade(toUpgradeHandler(gateway));

  app.on('connection', (ws, request) => {
    // The identity travels with the request object, so no header can be forged to claim one.
    const identity = identityOf(request);
    ws.send(JSON.stringify({ hello: identity?.subject ?? null }));
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  });

  server.listen(port, host);
  await once(server, 'listening');

  return {
    port: server.address().port,
    async close() {
      // The host owns these connections, so the host ends them; the gateway only has its checks to stop.
      for (const ws of app.clients) ws.terminate();
      await new Promise((resolve) => app.close(resolve));
      await gateway.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

if (isMain(import.meta.url)) {
  await runDemo(start, { defaultPort: 7001, path: '/ws', describe: (port) => `midway-style host on ws://127.0.0.1:${port}/ws` });
}
