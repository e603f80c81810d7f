// The embedding examples as users would run them: each imports the BUILT package (dist/, built by
// `npm test` before tap), starts on port 0, and is driven over real sockets: an authenticated greeting and
// echo with the right subject, and the raw 401 bytes without a token.
import { once } from 'node:events';
import t, { type Test } from 'tap';
import { WebSocket } from 'ws';
import { start as startExpressApp } from '../../examples/express-app.mjs';
import { start as startMidwayHost } from '../../examples/midway-host.mjs';
import { start as startPlainHttp } from '../../examples/plain-http.mjs';
import { hs256, SECRET } from '../helpers/tokens.js';
import { rawUpgrade, type RawResponse } from '../helpers/upgrade.js';
import { startEchoUpstream } from '../helpers/upstream.js';

/** The exact answer to a handshake without a credential (SPEC 4, 9), for a request id the client chose. */
const UNAUTHORIZED_BYTES = (requestId: string) =>
  'HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 67\r\n' +
  `Cache-Control: no-store\r\nX-Request-Id: ${requestId}\r\nWWW-Authenticate: Bearer realm="portcullis"\r\n\r\n` +
  '{"error":"unauthorized","error_description":"credentials required"}';

interface Talk {
  /** Messages received, in order. */
  messages: string[];
  /** The subprotocol the server selected. */
  protocol: string;
}

/**
 * Connects, sends `send` once open, collects `count` messages, closes. Rejects if the handshake fails or
 * the connection ends early, so a missing greeting fails the test instead of hanging it.
 */
async function talk(url: string, options: { headers?: Record<string, string>; protocols?: string[] }, send: string, count: number): Promise<Talk> {
  const ws = new WebSocket(url, options.protocols ?? [], { headers: options.headers ?? {} });
  const messages: string[] = [];
  const received = new Promise<void>((resolve, reject) => {
    ws.on('message', (data: Buffer) => {
      messages.push(data.toString());
      if (messages.length === count) resolve();
    });
    ws.once('close', (code) => reject(new Error(`closed with ${code} after ${messages.length} message(s)`)));
    ws.once('error', reject);
  });
  try {
    await once(ws, 'open');
    ws.send(send);
    await received;
    return { messages, protocol: ws.protocol };
  } finally {
    if (ws.readyState !== WebSocket.CLOSED) {
      ws.close();
      await once(ws, 'close');
    }
  }
}

function assertUnauthorized(t: Test, res: RawResponse, requestId: string) {
  t.equal(res.raw, UNAUTHORIZED_BYTES(requestId), 'the complete 401, byte for byte');
  t.ok(res.closed, 'then the server closed the socket');
}

t.test('express-app: Express 5 routes plus an attached gateway in local mode', async (t) => {
  const app = await startExpressApp(0, { secret: SECRET, logLevel: 'silent' });
  t.teardown(() => app.close());
  const url = `ws://127.0.0.1:${app.port}/ws`;

  t.test('a bearer token: greeting with the subject, then echo', async (t) => {
    const { messages } = await talk(url, { headers: { Authorization: `Bearer ${hs256({ sub: 'alice' })}` } }, 'ping', 2);
    t.same(JSON.parse(messages[0]!), { hello: 'alice' });
    t.equal(messages[1], 'ping');
  });

  t.test('a query token', async (t) => {
    const { messages } = await talk(`${url}?access_token=${hs256({ sub: 'bob' })}`, {}, 'via query', 2);
    t.same(JSON.parse(messages[0]!), { hello: 'bob' });
    t.equal(messages[1], 'via query');
  });

  t.test('a subprotocol token, as a browser sends it: the bare marker is selected', async (t) => {
    const { messages, protocol } = await talk(url, { protocols: ['bearer', `bearer.${hs256({ sub: 'carol' })}`] }, 'via protocol', 2);
    t.same(JSON.parse(messages[0]!), { hello: 'carol' });
    t.equal(messages[1], 'via protocol');
    t.equal(protocol, 'bearer');
  });

  t.test('no token: the 401 on the raw socket', async (t) => {
    assertUnauthorized(t, await rawUpgrade(app.port, '/ws', { 'X-Request-Id': 'express-401' }), 'express-401');
  });

  t.test('a token signed with another secret: 401 invalid_token', async (t) => {
    const res = await rawUpgrade(app.port, '/ws', { Authorization: `Bearer ${hs256({ sub: 'mallory' }, 'another-secret-0123456789abcdef-0123456789')}` });
    t.equal(res.status, 401);
    t.match(res.headers['www-authenticate'], /^Bearer realm="portcullis", error="invalid_token"/);
    t.equal(JSON.parse(res.body).error, 'invalid_token');
  });

  t.test('Express still serves its HTTP routes on the same server', async (t) => {
    const res = await fetch(`http://127.0.0.1:${app.port}/`);
    t.equal(res.status, 200);
    t.match(res.headers.get('x-powered-by'), /Express/);
    t.same(await res.json(), { service: 'express-app', websocket: '/ws' });
  });

  t.test('an upgrade on a path with no route, and no other listener, is 404', async (t) => {
    const res = await rawUpgrade(app.port, '/elsewhere');
    t.equal(res.status, 404);
    t.ok(res.closed);
  });
});

t.test('midway-host: toUpgradeHandler in a host that destroys the socket on false', async (t) => {
  const host = await startMidwayHost(0, { secret: SECRET, logLevel: 'silent' });
  t.teardown(() => host.close());
  const url = `ws://127.0.0.1:${host.port}/ws`;

  t.test('a valid token: the host upgrades and reads identityOf(request)', async (t) => {
    // A forged identity header changes nothing: the identity travels with the request object.
    const { messages } = await talk(url, { headers: { Authorization: `Bearer ${hs256({ sub: 'alice' })}`, 'X-Auth-Subject': 'mallory' } }, 'ping', 2);
    t.same(JSON.parse(messages[0]!), { hello: 'alice' });
    t.equal(messages[1], 'ping');
  });

  t.test('a subprotocol token: the host ws server selects the marker, never the token entry', async (t) => {
    const { messages, protocol } = await talk(url, { protocols: ['bearer', `bearer.${hs256({ sub: 'dave' })}`] }, 'p', 2);
    t.same(JSON.parse(messages[0]!), { hello: 'dave' });
    t.equal(protocol, 'bearer');
  });

  t.test('no token: the client reads the whole 401 although the host destroys the socket', async (t) => {
    // Several at once, so a rejection cut short by the host's destroy() would show up.
    const ids = Array.from({ length: 10 }, (_, i) => `midway-401-${i}`);
    const responses = await Promise.all(ids.map((id) => rawUpgrade(host.port, '/ws', { 'X-Request-Id': id })));
    responses.forEach((res, i) => assertUnauthorized(t, res, ids[i]!));
  });

  t.test('an expired token: 401 token expired', async (t) => {
    const now = Math.floor(Date.now() / 1000);
    const res = await rawUpgrade(host.port, '/ws', { Authorization: `Bearer ${hs256({ sub: 'alice', iat: now - 7200, exp: now - 3600 })}` });
    t.equal(res.status, 401);
    t.same(JSON.parse(res.body), { error: 'invalid_token', error_description: 'token expired' });
    t.ok(res.closed);
  });

  t.test('plain HTTP is the host\'s business', async (t) => {
    const res = await fetch(`http://127.0.0.1:${host.port}/`);
    t.equal(res.status, 200);
    t.same(await res.json(), { service: 'midway-host' });
  });
});

t.test('plain-http: node:http with gateway.handleUpgrade piping to an upstream', async (t) => {
  const upstream = await startEchoUpstream(t);
  const app = await startPlainHttp(0, { secret: SECRET, upstream: upstream.url, logLevel: 'silent' });
  t.teardown(() => app.close());

  t.test('a valid token: echo through, the upstream learns the subject and not the credential', async (t) => {
    const token = hs256({ sub: 'alice', scope: 'chat' });
    const { messages } = await talk(`ws://127.0.0.1:${app.port}/echo`, { headers: { Authorization: `Bearer ${token}` } }, 'through the pipe', 1);
    t.equal(messages[0], 'through the pipe');
    t.equal(upstream.seen.length, 1);
    const seen = upstream.seen[0]!;
    t.equal(seen.headers['x-auth-subject'], 'alice');
    t.match(JSON.parse(Buffer.from(String(seen.headers['x-auth-claims']), 'base64url').toString()), { sub: 'alice', scope: 'chat' });
    t.equal(seen.headers.authorization, undefined, 'credential stripped');
  });

  t.test('no token: the 401 on the raw socket, nothing reaches the upstream', async (t) => {
    const before = upstream.seen.length;
    assertUnauthorized(t, await rawUpgrade(app.port, '/echo', { 'X-Request-Id': 'plain-401' }), 'plain-401');
    t.equal(upstream.seen.length, before);
  });

  t.test('handleUpgrade answers 404 on a path with no route', async (t) => {
    const res = await rawUpgrade(app.port, '/nowhere');
    t.equal(res.status, 404);
    t.equal(JSON.parse(res.body).error, 'not_found');
  });
});
