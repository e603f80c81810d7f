// mode "local": the embedded gateway hands accepted connections to the application (SPEC 2.3, 7).
import { once } from 'node:events';
import { createServer, type IncomingMessage } from 'node:http';
import t from 'tap';
import { WebSocket, WebSocketServer } from 'ws';
import type { Identity } from '../../src/types.js';
import { identityOf } from '../../src/identity.js';
import { closeClient } from '../helpers/client.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { eventually } from '../helpers/net.js';
import { hs256, jwtAuth } from '../helpers/tokens.js';
import { rawUpgrade } from '../helpers/upgrade.js';

const config = () => ({
  authenticators: { jwt: jwtAuth() },
  routes: [{ path: '/local', auth: ['jwt'], mode: 'local' }],
});

interface Connection {
  ws: WebSocket;
  req: IncomingMessage;
  identity: Identity;
}

/** Collects 'connection' events and echoes every message with an "echo:" prefix. */
function collectConnections(gw: TestGateway): Connection[] {
  const seen: Connection[] = [];
  gw.gateway.on('connection', (ws, req, identity) => {
    seen.push({ ws, req, identity });
    ws.on('message', (data) => ws.send(`echo:${String(data)}`));
  });
  return seen;
}

async function openClient(url: string, options: { headers?: Record<string, string>; protocols?: string[] } = {}): Promise<WebSocket> {
  const ws = new WebSocket(url, options.protocols ?? [], { headers: options.headers ?? {} });
  ws.on('error', () => {});
  await once(ws, 'open');
  return ws;
}

async function roundTrip(ws: WebSocket, text: string): Promise<string> {
  const reply = once(ws, 'message');
  ws.send(text);
  const [data] = (await reply) as [Buffer];
  return String(data);
}

t.test("'connection' carries (ws, req, identity), identityOf(req) works and messages flow", async (t) => {
  const gw = await startGateway(t, config(), { attach: true });
  const connections = collectConnections(gw);
  const accepted: Identity[] = [];
  gw.gateway.on('accepted', (_req, identity) => accepted.push(identity));
  const rejected: number[] = [];
  gw.gateway.on('rejected', (_req, status) => rejected.push(status));

  const exp = Math.floor(Date.now() / 1000) + 600;
  const token = hs256({ sub: 'alice', scope: 'chat', exp });
  const client = await openClient(gw.url('/local?room=7'), { headers: { Authorization: `Bearer ${token}` } });
  t.equal(connections.length, 1, 'one connection event');
  const { ws, req, identity } = connections[0]!;
  t.ok(ws instanceof WebSocket, 'a ws WebSocket');
  t.equal(req.url, '/local?room=7', 'the original request');
  t.equal(identity.subject, 'alice');
  t.equal(identity.authenticator, 'jwt');
  t.equal(identity.expiresAt, exp);
  t.match(identity.claims, { sub: 'alice', scope: 'chat', exp });
  t.equal(identityOf(req), identity, 'identityOf(req) is the same identity');
  t.same(accepted, [identity], "'accepted' emitted with the identity");
  t.equal(req.headers.authorization, undefined, 'the used credential is stripped from req (stripCredentials)');
  t.equal(gw.gateway.connections, 1);

  t.equal(await roundTrip(client, 'hello'), 'echo:hello', 'client → app → client');
  const fromApp = once(client, 'message');
  ws.send('pushed by the app');
  t.equal(String(((await fromApp) as [Buffer])[0]), 'pushed by the app', 'app → client');

  await closeClient(client);
  if (ws.readyState !== WebSocket.CLOSED) await once(ws, 'close');
  t.equal(ws.readyState, WebSocket.CLOSED, 'the server side closed with the client');
  t.same(rejected, []);
  t.notOk(gw.logText().includes(token), 'the token is never logged');
});

t.test("a rejected handshake emits 'rejected' (req, status, reason) and never 'connection'", async (t) => {
  const gw = await startGateway(t, config(), { attach: true });
  gw.gateway.on('connection', () => t.fail('no connection event for a rejected handshake'));
  const rejected: { req: IncomingMessage; status: number; reason: string }[] = [];
  gw.gateway.on('rejected', (req, status, reason) => rejected.push({ req, status, reason }));

  const none = await rawUpgrade(gw.port, '/local', { 'X-Request-Id': 'loc-1' });
  t.equal(
    none.raw,
    'HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 67\r\nCache-Control: no-store\r\nX-Request-Id: loc-1\r\nWWW-Authenticate: Bearer realm="portcullis"\r\n\r\n{"error":"unauthorized","error_description":"credentials required"}',
  );
  t.ok(none.closed);
  const bad = await rawUpgrade(gw.port, '/local', { Authorization: `Bearer ${hs256({ sub: 'alice' }, 'another-secret-0123456789abcdef-01234567')}` });
  t.equal(bad.status, 401);
  t.equal(bad.headers['www-authenticate'], 'Bearer realm="portcullis", error="invalid_token", error_description="signature invalid"');

  t.equal(rejected.length, 2);
  t.equal(rejected[0]!.req.url, '/local', 'the request that was refused');
  t.equal(rejected[0]!.status, 401);
  t.equal(rejected[0]!.reason, 'credentials required');
  t.same([rejected[1]!.status, rejected[1]!.reason], [401, 'signature invalid']);
  t.equal(identityOf(rejected[0]!.req), undefined, 'no identity recorded for a refused request');
  t.equal(gw.gateway.connections, 0);
});

t.test('attached: an unmatched path is left to the server’s other upgrade listener', async (t) => {
  const server = createServer((_req, res) => res.writeHead(404).end());
  const other = new WebSocketServer({ noServer: true });
  other.on('connection', (ws) => ws.send('from the other server'));
  let otherSaw = 0;
  server.on('upgrade', (req: IncomingMessage, socket, head) => {
    if (new URL(req.url ?? '/', 'http://x').pathname !== '/other') return;
    otherSaw++;
    other.handleUpgrade(req, socket, head, (ws) => other.emit('connection', ws, req));
  });
  t.teardown(() => {
    for (const ws of other.clients) ws.terminate();
    other.close();
  });
  const gw = await startGateway(t, config(), { attach: true, server });
  const connections = collectConnections(gw);
  const rejected: number[] = [];
  gw.gateway.on('rejected', (_req, status) => rejected.push(status));

  const client = new WebSocket(gw.url('/other'));
  client.on('error', () => {});
  const [greeting] = (await once(client, 'message')) as [Buffer];
  t.equal(String(greeting), 'from the other server', 'the other listener served /other');
  t.equal(otherSaw, 1);
  t.same(rejected, [], 'the gateway did not answer /other (no 404 written)');
  t.equal(connections.length, 0);
  t.notOk(gw.logText().includes('"route":null'), 'no handshake decision logged for the unmatched path');
  await closeClient(client);

  // The gateway still owns its own routes on the same server.
  const mine = await openClient(gw.url('/local'), { headers: { Authorization: `Bearer ${hs256({ sub: 'bob' })}` } });
  t.equal(connections.length, 1);
  t.equal(connections[0]!.identity.subject, 'bob');
  await closeClient(mine);
  const refused = await rawUpgrade(gw.port, '/local', {});
  t.equal(refused.status, 401, 'and still rejects on them');
});

t.test('attached as the only upgrade listener: an unmatched path is answered 404', async (t) => {
  const gw = await startGateway(t, config(), { attach: true });
  gw.gateway.on('connection', () => t.fail('no connection'));
  const res = await rawUpgrade(gw.port, '/other', { 'X-Request-Id': 'loc-404' });
  t.equal(
    res.raw,
    'HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 66\r\nCache-Control: no-store\r\nX-Request-Id: loc-404\r\n\r\n{"error":"not_found","error_description":"no route for this path"}',
  );
  t.ok(res.closed);
});

t.test("the protocol marker is selected for ['bearer', 'bearer.<token>'] and the token is never exposed", async (t) => {
  const gw = await startGateway(t, config(), { attach: true });
  const connections = collectConnections(gw);
  const token = hs256({ sub: 'carol' });

  const client = await openClient(gw.url('/local'), { protocols: ['bearer', `bearer.${token}`] });
  t.equal(client.protocol, 'bearer', 'the client sees the bare marker selected');
  const { ws, req, identity } = connections[0]!;
  t.equal(identity.subject, 'carol', 'authenticated from the protocol entry');
  t.equal(ws.protocol, 'bearer', 'server-side ws.protocol is the marker');
  t.notOk(ws.protocol.includes(token), 'the token is not in ws.protocol');
  t.notOk(JSON.stringify(req.headers).includes(token), 'the token is not in req.headers');
  t.notOk(JSON.stringify(req.rawHeaders).includes(token), 'nor in req.rawHeaders');
  t.notOk((req.url ?? '').includes(token), 'nor in req.url');
  t.notOk(gw.logText().includes(token), 'nor in the logs');
  t.equal(await roundTrip(client, 'hi'), 'echo:hi');
  await closeClient(client);

  // With an application protocol offered as well, that one is selected, and the token still vanishes.
  const client2 = await openClient(gw.url('/local'), { protocols: ['chat.v1', 'bearer', `bearer.${token}`] });
  t.equal(client2.protocol, 'chat.v1', 'an application protocol wins over the marker');
  const second = connections[1]!;
  t.equal(second.ws.protocol, 'chat.v1');
  t.notOk(JSON.stringify(second.req.headers).includes(token));
  await closeClient(client2);
});

t.test("a local connection whose token expires is closed with 1008 'token expired'", async (t) => {
  const gw = await startGateway(t, config(), { attach: true });
  const connections = collectConnections(gw);
  const exp = Math.ceil(Date.now() / 1000) + 1; // 1–2 s ahead
  const client = await openClient(gw.url('/local'), { headers: { Authorization: `Bearer ${hs256({ sub: 'dave', exp })}` } });
  t.equal(connections[0]!.identity.expiresAt, exp);
  t.equal(await roundTrip(client, 'before'), 'echo:before', 'works before exp');
  const [code, reason] = (await once(client, 'close')) as [number, Buffer];
  const at = Date.now();
  t.equal(code, 1008);
  t.equal(String(reason), 'token expired');
  t.ok(at >= exp * 1000 - 50 && at <= exp * 1000 + 1000, `closed around exp (${at - exp * 1000} ms from exp)`);
  await eventually(() => connections[0]!.ws.readyState === WebSocket.CLOSED && gw.gateway.connections === 0, 2000, 'server side closed');
  t.equal(connections[0]!.ws.readyState, WebSocket.CLOSED, 'the server side is closed too');
  t.equal(gw.gateway.connections, 0);
});

t.test('local routes: heartbeatMs terminates a client that stops answering pings; maxPayload closes 1009', async (t) => {
  const gw = await startGateway(t, {
    authenticators: { jwt: jwtAuth() },
    routes: [{ path: '/local', auth: ['jwt'], mode: 'local', heartbeatMs: 150, maxPayload: 64 }],
  }, { attach: true });
  collectConnections(gw);
  const headers = { Authorization: `Bearer ${hs256({ sub: 'alice' })}` };

  const alive = await openClient(gw.url('/local'), { headers });
  const silent = new WebSocket(gw.url('/local'), { headers, autoPong: false });
  silent.on('error', () => {});
  await once(silent, 'open');
  const [code] = (await once(silent, 'close')) as [number];
  t.equal(code, 1006, 'the silent client was terminated (no close frame)');
  t.equal(alive.readyState, WebSocket.OPEN, 'a client that answers pings stays');
  t.equal(await roundTrip(alive, 'still here'), 'echo:still here');

  const big = await openClient(gw.url('/local'), { headers });
  const closed = once(big, 'close');
  big.send('x'.repeat(65));
  const [bigCode] = (await closed) as [number];
  t.equal(bigCode, 1009, 'a message above maxPayload closes with 1009');
  await closeClient(alive);
  await eventually(() => gw.gateway.connections === 0, 3000, 'no connection left');
});
