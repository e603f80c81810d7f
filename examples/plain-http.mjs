// Embedded use with nothing but node:http: the gateway is the server's 'upgrade' listener and pipes every
// accepted handshake to an existing WebSocket backend, which learns the caller from x-auth-subject.
//   JWT_SECRET=... UPSTREAM_URL=ws://127.0.0.1:9001 node examples/plain-http.mjs   (after `npm run build`)
// (`node examples/echo-upstream.mjs` starts a backend on 9001.)
import { once } from 'node:events';
import { createServer } from 'node:http';
import { createGateway } from '../dist/index.js';
import { isMain, runDemo } from './run-demo.mjs';

/** Starts the server on `port` (0: any free port); resolves `{ port, close }`. */
export async function start(
  port = 0,
  { upstream = process.env.UPSTREAM_URL ?? 'ws://127.0.0.1:9001', secret = process.env.JWT_SECRET, host = '127.0.0.1', logLevel = 'info' } = {},
) {
  const gateway = createGateway({
    log: { level: logLevel },
    // Piped connections are the backend's to end; a short drain keeps a stop from hanging on them.
    drain: { timeoutMs: 2000 },
    authenticators: {
      'user-jwt': { type: 'jwt', from: ['bearer', 'query:access_token', 'protocol:bearer.'], secret, algorithms: ['HS256'] },
    },
    routes: [{ path: '/echo', auth: ['user-jwt'], upstream }],
  });

  const server = createServer((_req, res) => res.writeHead(200, { 'Content-Type': 'text/plain' }).end('WebSocket endpoint: /echo\n'));
  // handleUpgrade is pre-bound, and answers 404 on paths with no route: this server has no other use for upgrades.
  server.on('upgrade', gateway.handleUpgrade);
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
  await runDemo(start, { defaultPort: 8080, path: '/echo', describe: (port) => `gateway on ws://127.0.0.1:${port}/echo` });
}
