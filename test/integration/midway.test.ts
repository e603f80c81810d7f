// Midway adapters (SPEC 7): toUpgradeHandler(gateway) in a host that mimics Midway's ws framework, and
// fromUpgradeHandler(name, handler) as an authenticator, against real requests on real sockets.
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import t from 'tap';
import { WebSocket, WebSocketServer } from 'ws';
import { createGateway, fromUpgradeHandler, GatewayError, identityOf, toUpgradeHandler, type AuthRequest, type Gateway, type Identity } from '../../src/index.js';
import { captureLog } from '../helpers/gateway.js';
import type { Teardown } from '../helpers/net.js';
import { hs256, jwtAuth } from '../helpers/tokens.js';
import { rawUpgrade, requestHead, sendRaw, upgradeHeaders } from '../helpers/upgrade.js';

type Handler = (request: IncomingMessage, socket: Duplex, head: Buffer) => Promise<boolean>;

/**
 * A host shaped like Midway's ws framework: its own `noServer` WebSocketServer; on 'upgrade' it awaits the
 * app's handler and on false destroys the socket at once, on true calls `wss.handleUpgrade`.
 */
async function startMidwayHost(t: Teardown, handler: Handler) {
  const server: Server = createServer((_req, res) => res.writeHead(404).end());
  const wss = new WebSocketServer({ noServer: true });
  const connections: { ws: WebSocket; req: IncomingMessage; identity: Identity | undefined }[] = [];
  const decisions: boolean[] = [];
  wss.on('connection', (ws: WebSocket, req: IncomingMessage) => {
    // What an app's connection handler does: read the identity the gateway recorded for the request.
    connections.push({ ws, req, identity: identityOf(req) });
    ws.on('message', (data) => ws.send(`host:${String(data)}`));
  });
  server.on('upgrade', async (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    let allowed: boolean;
    try {
      allowed = await handler(req, socket, head);
    } catch {
      allowed = false;
    }
    decisions.push(allowed);
    if (!allowed) {
      socket.destroy(); // Midway: no graceful end, the socket is destroyed right away
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(async () => {
    for (const ws of wss.clients) ws.terminate();
    wss.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });
  const port = (server.address() as AddressInfo).port;
  return { port, url: (path: string) => `ws://127.0.0.1:${port}${path}`, connections, decisions };
}

async function midwayGateway(t: Teardown): Promise<{ gateway: Gateway; logText(): string }> {
  const { logger, lines } = captureLog();
  const gateway = createGateway(
    {
      authenticators: { jwt: jwtAuth() },
      routes: [{ path: '/ws', auth: ['jwt'], mode: 'local' }],
    },
    { logger },
  );
  await gateway.ready();
  t.teardown(() => gateway.close());
  return { gateway, logText: () => lines.join('\n') };
}

t.test('toUpgradeHandler: the client reads the complete 401 even though the host destroys the socket on false', async (t) => {
  const { gateway } = await midwayGateway(t);
  const host = await startMidwayHost(t, toUpgradeHandler(gateway));
  const rejected: number[] = [];
  gateway.on('rejected', (_req, status) => rejected.push(status));

  const res = await rawUpgrade(host.port, '/ws', { 'X-Request-Id': 'mw-401' });
  t.equal(
    res.raw,
    'HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 67\r\nCache-Control: no-store\r\nX-Request-Id: mw-401\r\nWWW-Authenticate: Bearer realm="portcullis"\r\n\r\n{"error":"unauthorized","error_description":"credentials required"}',
  );
  t.ok(res.closed);
  t.same(host.decisions, [false], 'the handler resolved false');
  t.same(rejected, [401]);

  // Not a lucky race: many at once, each gets every byte.
  const many = await Promise.all(Array.from({ length: 25 }, (_, i) => rawUpgrade(host.port, '/ws', { 'X-Request-Id': `mw-${i}`, Authorization: 'Bearer not.a.jwt' })));
  for (const [i, r] of many.entries()) {
    const body = r.body;
    if (r.status !== 401 || r.headers['x-request-id'] !== `mw-${i}` || Number(r.headers['content-length']) !== Buffer.byteLength(body)) {
      t.fail(`response ${i} incomplete: ${JSON.stringify(r.raw)}`);
    }
  }
  t.pass('25 concurrent rejections all arrived complete');
  t.equal(host.connections.length, 0, "the host's wss never got a connection");
});

t.test('toUpgradeHandler: other rejections (404, 400) are complete too', async (t) => {
  const { gateway } = await midwayGateway(t);
  const host = await startMidwayHost(t, toUpgradeHandler(gateway));
  const notFound = await rawUpgrade(host.port, '/elsewhere', { 'X-Request-Id': 'mw-404' });
  t.equal(
    notFound.raw,
    'HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 66\r\nCache-Control: no-store\r\nX-Request-Id: mw-404\r\n\r\n{"error":"not_found","error_description":"no route for this path"}',
  );
  const v8 = await rawUpgrade(host.port, '/ws', { 'X-Request-Id': 'mw-400', 'Sec-WebSocket-Version': '8' });
  t.equal(v8.status, 400);
  t.equal(v8.body, '{"error":"bad_request","error_description":"malformed websocket upgrade"}');
  t.same(host.decisions, [false, false]);
});

t.test("toUpgradeHandler: on success identityOf(request) gives the identity in the host's connection handler", async (t) => {
  const { gateway, logText } = await midwayGateway(t);
  const host = await startMidwayHost(t, toUpgradeHandler(gateway));
  gateway.on('connection', () => t.fail("the gateway does not hand off itself: the host's wss does"));
  const exp = Math.floor(Date.now() / 1000) + 600;
  const token = hs256({ sub: 'alice', role: 'admin', exp });
  const ws = new WebSocket(host.url('/ws?x=1'), { headers: { Authorization: `Bearer ${token}` } });
  ws.on('error', () => {});
  await once(ws, 'open');
  t.same(host.decisions, [true]);
  t.equal(host.connections.length, 1);
  const { req, identity } = host.connections[0]!;
  t.ok(identity, 'identityOf(request) is set');
  t.equal(identity?.subject, 'alice');
  t.equal(identity?.authenticator, 'jwt');
  t.equal(identity?.expiresAt, exp);
  t.match(identity?.claims, { sub: 'alice', role: 'admin' });
  t.equal(req.headers.authorization, undefined, 'the credential is stripped from the request the host sees');
  const reply = once(ws, 'message');
  ws.send('hi');
  t.equal(String(((await reply) as [Buffer])[0]), 'host:hi', "messages flow through the host's wss");
  const closed = once(ws, 'close');
  ws.close();
  await closed;
  t.match(logText(), /"msg":"upgrade accepted"/);
  t.notOk(logText().includes(token), 'the token is not logged');
});

/** One real upgrade request on a real server, as (req, socket, head); the client is kept open until teardown. */
async function captureRequest(t: Teardown, path = '/mw?x=1', extra = ''): Promise<{ req: IncomingMessage; socket: Duplex; head: Buffer }> {
  const server = createServer();
  const captured = once(server, 'upgrade') as Promise<[IncomingMessage, Duplex, Buffer]>;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const client: Socket = sendRaw((server.address() as AddressInfo).port, requestHead(path, upgradeHeaders({ 'X-Who': 'real' })) + extra);
  client.on('error', () => {});
  const [req, socket, head] = await captured;
  socket.on('error', () => {});
  t.teardown(async () => {
    client.destroy();
    socket.destroy();
    await new Promise((r) => server.close(r));
  });
  return { req, socket, head };
}

function authRequest(captured: { req: IncomingMessage; socket: Duplex; head: Buffer }): AuthRequest {
  return { ...captured, url: new URL(captured.req.url ?? '/', 'http://gateway.invalid'), signal: new AbortController().signal };
}

t.test('fromUpgradeHandler: a Midway handler as an Authenticator', async (t) => {
  const captured = await captureRequest(t, '/mw?x=1', 'HEADBYTES');
  t.equal(captured.req.headers['x-who'], 'real', 'a real request');
  t.equal(String(captured.head), 'HEADBYTES', 'with real head bytes');
  const request = authRequest(captured);

  t.test('true → anonymous identity with authenticator = name; the handler gets (request, socket, head)', async (t) => {
    let args: unknown[] = [];
    const auth = fromUpgradeHandler('midway', (...a) => {
      args = a;
      return true;
    });
    t.equal(auth.name, 'midway');
    t.equal(auth.type, 'module');
    const result = await auth.authenticate(request);
    t.same(result, { identity: { subject: null, authenticator: 'midway', claims: {} } });
    t.equal(args[0], captured.req, 'the same request object');
    t.equal(args[1], captured.socket, 'the same socket');
    t.equal(args[2], captured.head, 'the same head');
  });

  t.test('Promise<true> works like true', async (t) => {
    const auth = fromUpgradeHandler('async-mw', async () => true);
    t.same(await auth.authenticate(request), { identity: { subject: null, authenticator: 'async-mw', claims: {} } });
  });

  t.test('false → GatewayError 401 GW_ERR_HANDLER_REJECTED', async (t) => {
    const auth = fromUpgradeHandler('midway', async () => false);
    const err = await Promise.resolve(auth.authenticate(request)).then(
      () => null,
      (e: unknown) => e,
    );
    t.ok(err instanceof GatewayError, 'a GatewayError');
    t.match(err, { code: 'GW_ERR_HANDLER_REJECTED', status: 401, error: 'unauthorized', description: 'rejected by upgrade handler' });
  });

  t.test('an object → that identity, authenticator still the name', async (t) => {
    const auth = fromUpgradeHandler('midway', () => ({ subject: 'bob', claims: { role: 'admin' }, expiresAt: 2_000_000_000, authenticator: 'spoofed' }));
    const result = await auth.authenticate(request);
    t.same(result, { identity: { subject: 'bob', authenticator: 'midway', claims: { role: 'admin' }, expiresAt: 2_000_000_000 } });
  });

  t.test('an object without subject → subject null', async (t) => {
    const auth = fromUpgradeHandler('midway', async () => ({ claims: { tenant: 't1' } }));
    t.same(await auth.authenticate(request), { identity: { subject: null, authenticator: 'midway', claims: { tenant: 't1' } } });
  });

  t.test('a throw (sync or async) → GatewayError 500 GW_ERR_INTERNAL, the cause kept for the log only', async (t) => {
    for (const handler of [
      () => {
        throw new Error('secret detail');
      },
      async () => {
        throw new Error('secret detail');
      },
    ]) {
      const auth = fromUpgradeHandler('midway', handler);
      const err = await Promise.resolve(auth.authenticate(request)).then(
        () => null,
        (e: unknown) => e,
      );
      t.ok(err instanceof GatewayError);
      t.match(err, { code: 'GW_ERR_INTERNAL', status: 500, error: 'internal_error', description: 'internal error' });
      t.match((err as Error).cause, { message: 'secret detail' }, 'the cause is kept');
      t.notMatch((err as GatewayError).description, /secret/, 'never in the client-facing description');
    }
  });
});
