// A socket.io-client connecting through the portcullis sidecar with a JWT (see examples/socketio-app.mjs).
//   TOKEN=... node examples/socketio-client.mjs [GATEWAY_URL]        (default http://127.0.0.1:8080)
// It connects (Socket.IO starts on long-polling), asks the app who it is, waits for the upgrade to a
// WebSocket, asks again (the same instance answers: sticky), and exits; 1 when the gateway refused (e.g.
// 401 without a valid token).
import { io } from 'socket.io-client';
import { isMain } from './run-demo.mjs';

/**
 * Connects to the gateway at `url` with `token`. The token goes in the query string, which the gateway
 * reads on every polling request and on the WebSocket upgrade, and removes before the app sees it:
 * - not `extraHeaders: { Authorization }`: browsers cannot set headers on a WebSocket;
 * - not `auth: { token }`: that travels inside Socket.IO's CONNECT packet, after the handshake the gateway
 *   decides on, so the gateway never sees it.
 * `withCredentials: true` keeps the gateway's sticky cookie in Node (a browser keeps it on its own for
 * same-origin requests).
 */
export function connect(url, token, options = {}) {
  return io(url, { query: { access_token: token }, withCredentials: true, ...options });
}

/** Resolves the app's answer to 'whoami'. */
export const whoami = (socket) => new Promise((resolve) => socket.emit('whoami', resolve));

if (isMain(import.meta.url)) {
  const url = process.argv[2] ?? process.env.GATEWAY_URL ?? 'http://127.0.0.1:8080';
  if (!process.env.TOKEN) {
    console.error('TOKEN is required: TOKEN=$(node dist/cli.js token --secret "$JWT_SECRET" --sub alice)');
    process.exit(1);
  }
  // No reconnection for the demo: a refusal should show, not be retried. A real app keeps reconnection on
  // and puts a fresh token in socket.io.opts.query before each attempt (on 'reconnect_attempt').
  const socket = connect(url, process.env.TOKEN, { reconnection: false });
  socket.on('connect_error', (err) => {
    // The gateway's HTTP status on the polling handshake (401 no/invalid token, 403, 429, ...).
    console.error(`refused: ${err.message}${err.context?.status ? ` (HTTP ${err.context.status})` : ''}`);
    process.exit(1);
  });
  socket.on('connect', async () => {
    console.log('connected; whoami:', await whoami(socket));
    if (socket.io.engine.transport.name !== 'websocket') await new Promise((resolve) => socket.io.engine.once('upgrade', resolve));
    console.log('upgraded to a WebSocket; whoami:', await whoami(socket));
    socket.close();
  });
}
