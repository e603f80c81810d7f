// A Socket.IO app behind the portcullis sidecar. The app has no authentication code at all: the gateway
// (examples/socketio.config.json) checks the JWT on every long-polling request and on the WebSocket upgrade,
// keeps each client on the instance it started with (`sticky`, which Socket.IO's polling needs), and tells
// the app who the caller is in `x-auth-subject` / `x-auth-claims`.
//
//   node examples/socketio-app.mjs                       two instances, on 9002 and 9003 (after `npm run build`)
//   JWT_SECRET=... node dist/cli.js --config examples/socketio.config.json        the gateway, on 8080
//   TOKEN=$(node dist/cli.js token --secret ... --sub alice) node examples/socketio-client.mjs
//
// The app trusts those headers, so it must be reachable only through the gateway: it listens on loopback
// here (a private network or the same pod in production), and refuses any Engine.IO handshake that did not
// come through the gateway. Where the network is not private, add the route's `assertion` and verify it.
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { Server } from 'socket.io';
import { isMain } from './run-demo.mjs';

/** Starts one instance on `port` (0: any free port); resolves `{ port, handled, close }`. */
export async function start(port = 0, { name = `socketio-app:${port}`, host = '127.0.0.1' } = {}) {
  const httpServer = createServer();
  const io = new Server(httpServer, {
    // Engine.IO's first request (the polling handshake, or a direct WebSocket) decides the whole session.
    // The gateway removes any client-sent x-auth-subject and sets the verified one, so its absence means the
    // request did not come through the gateway: 403, before any Socket.IO state exists.
    allowRequest: (req, callback) => callback(null, typeof req.headers['x-auth-subject'] === 'string'),
  });

  let handled = 0;
  io.on('connection', (socket) => {
    handled++;
    // The headers of the handshake request, as the gateway forwarded them.
    const subject = socket.handshake.headers['x-auth-subject'];
    const claims = JSON.parse(Buffer.from(String(socket.handshake.headers['x-auth-claims'] ?? 'e30'), 'base64url').toString());
    socket.data.subject = subject;
    socket.on('whoami', (reply) =>
      reply({ subject, scope: claims.scope ?? null, server: name, transport: socket.conn.transport.name }),
    );
    // An ordinary Socket.IO event: the sender's name comes from the gateway, not from the client.
    socket.on('chat', (text) => io.emit('chat', { from: socket.data.subject, text: String(text) }));
  });

  httpServer.listen(port, host);
  await once(httpServer, 'listening');

  return {
    port: httpServer.address().port,
    /** How many Socket.IO connections this instance has accepted. */
    get handled() {
      return handled;
    },
    async close() {
      io.disconnectSockets(true);
      // io.close() also closes the http server.
      await new Promise((resolve) => io.close(resolve));
    },
  };
}

if (isMain(import.meta.url)) {
  const ports = [Number(process.env.SOCKETIO_PORT_1 ?? 9002), Number(process.env.SOCKETIO_PORT_2 ?? 9003)];
  const apps = await Promise.all(ports.map((port, i) => start(port, { name: `instance-${i + 1}` })));
  const secret = process.env.JWT_SECRET ?? randomBytes(32).toString('base64url');
  console.log(`socket.io app: two instances, ${apps.map((a) => `ws://127.0.0.1:${a.port}`).join(' and ')} (only the gateway should reach them)
In another terminal, the gateway in front of them (http://127.0.0.1:8080):
  JWT_SECRET="${secret}" node dist/cli.js --config examples/socketio.config.json
And in a third, a client with a token:
  TOKEN=$(node dist/cli.js token --secret "${secret}" --sub alice --claim scope=chat) node examples/socketio-client.mjs`);
  const stop = () => void Promise.all(apps.map((a) => a.close())).then(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
