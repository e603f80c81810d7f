// The hand-written baseline: what a team writes today instead of a gateway — a Node http server, the
// `upgrade` event, jsonwebtoken (with a KeyObject, the fast way) and http-proxy 1.18.1's `proxy.ws`, with
// the socket-error handling needed so a client reset does not crash it. It forwards the identity like
// portcullis does (x-auth-subject, x-auth-claims) and strips the credential.
//   PORT=… UPSTREAM_URL=ws://… JWT_SECRET=… node bench/baselines/handwritten.mjs
import { createSecretKey } from 'node:crypto';
import { createServer } from 'node:http';
import httpProxy from 'http-proxy';
import jwt from 'jsonwebtoken';

const key = createSecretKey(Buffer.from(process.env.JWT_SECRET));
const target = process.env.UPSTREAM_URL;
const proxy = httpProxy.createProxyServer({ target, ws: true });

proxy.on('error', (_err, _req, socket) => {
  if (socket && !socket.destroyed) socket.destroy();
});
proxy.on('proxyReqWs', (proxyReq, _req, socket) => {
  // Abort the upstream request when the client leaves before the 101 (http-proxy leaks it otherwise).
  const onClose = () => proxyReq.destroy();
  socket.once('close', onClose);
  proxyReq.once('upgrade', (_res, proxySocket) => {
    socket.off('close', onClose);
    socket.once('close', () => proxySocket.destroy());
    if (socket.destroyed) proxySocket.destroy();
  });
});

function reject(socket, status, text) {
  const body = JSON.stringify({ error: 'invalid_token', error_description: text });
  socket.end(
    `HTTP/1.1 ${status} Unauthorized\r\nConnection: close\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nWWW-Authenticate: Bearer realm="api"\r\n\r\n${body}`,
  );
}

const server = createServer((_req, res) => res.writeHead(426).end());
server.on('upgrade', (req, socket, head) => {
  socket.on('error', () => socket.destroy());
  const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
  if (!m) return reject(socket, 401, 'credentials required');
  let claims;
  try {
    claims = jwt.verify(m[1], key, { algorithms: ['HS256'] });
  } catch {
    return reject(socket, 401, 'invalid token');
  }
  delete req.headers.authorization;
  req.headers['x-auth-subject'] = String(claims.sub ?? '');
  req.headers['x-auth-claims'] = Buffer.from(JSON.stringify(claims)).toString('base64url');
  proxy.ws(req, socket, head);
});

server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ event: 'listening', port: server.address().port })}\n`);
});
process.on('SIGTERM', () => process.exit(0));
