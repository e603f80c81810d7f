// A plain ws echo server: the upstream the bundled gateway.config.json points at.
// It greets each connection with the identity the gateway forwarded, then echoes every message.
import { WebSocketServer } from 'ws';

/** Starts the echo upstream; resolves the ws server once it listens. */
export function startEchoUpstream(port = Number(process.env.UPSTREAM_PORT ?? 9001), host = '127.0.0.1') {
  const wss = new WebSocketServer({ port, host });
  wss.on('connection', (ws, req) => {
    const claims = req.headers['x-auth-claims'];
    ws.send(JSON.stringify({
      hello: req.headers['x-auth-subject'] ?? null,
      claims: claims ? JSON.parse(Buffer.from(claims, 'base64url').toString()) : null,
      requestId: req.headers['x-request-id'] ?? null,
      sawCredential: Boolean(req.headers.authorization || /access_token/.test(req.url ?? '')),
    }));
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
  return new Promise((resolve, reject) => {
    wss.once('listening', () => resolve(wss));
    wss.once('error', reject);
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const wss = await startEchoUpstream();
  console.log(`echo upstream listening on ws://127.0.0.1:${wss.address().port}`);
}
