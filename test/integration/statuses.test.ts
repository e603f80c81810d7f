// Every status of SPEC 3–4, byte for byte, over real sockets.
import { once } from 'node:events';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import t from 'tap';
import { WebSocket } from 'ws';
import type { Gateway } from '../../src/gateway.js';
import { rejection } from '../helpers/assertions.js';
import { closeClient } from '../helpers/client.js';
import { startGateway, startSidecar, type TestGateway } from '../helpers/gateway.js';
import { eventually, freePort } from '../helpers/net.js';
import { hs256, jwtAuth } from '../helpers/tokens.js';
import { rawUpgrade, readResponse, requestHead, sendRaw } from '../helpers/upgrade.js';
import { startEchoUpstream } from '../helpers/upstream.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Fails the test if the gateway ever hands a connection on. */
function noConnection(t: { fail(message: string): unknown }, gateway: Gateway): void {
  gateway.on('connection', () => t.fail('no connection event after a rejection'));
}

async function openWs(url: string, headers: Record<string, string> = {}): Promise<WebSocket> {
  const ws = new WebSocket(url, { headers });
  ws.on('error', () => {});
  await once(ws, 'open');
  return ws;
}

const bearer = () => ({ Authorization: `Bearer ${hs256({ sub: 'alice' })}` });

t.test('400: malformed upgrades', async (t) => {
  const upstream = await startEchoUpstream(t);
  const gw = await startGateway(t, { routes: [{ path: '/chat', auth: [], upstream: upstream.url }] });
  noConnection(t, gw.gateway);
  const rejected: number[] = [];
  gw.gateway.on('rejected', (_req, status) => rejected.push(status));
  const expected = (id: string) => rejection('400 Bad Request', 'bad_request', 'malformed websocket upgrade', id);

  const post = await rawUpgrade(gw.port, '/chat', { 'X-Request-Id': 'post-1' }, { method: 'POST' });
  t.equal(post.raw, expected('post-1'), 'POST upgrade');
  t.ok(post.closed, 'socket closed after the POST rejection');

  const noKey = await rawUpgrade(gw.port, '/chat', { 'X-Request-Id': 'nokey-1', 'Sec-WebSocket-Key': undefined });
  t.equal(noKey.raw, expected('nokey-1'), 'missing Sec-WebSocket-Key');
  t.ok(noKey.closed);

  const badKey = await rawUpgrade(gw.port, '/chat', { 'X-Request-Id': 'badkey-1', 'Sec-WebSocket-Key': 'not-a-key' });
  t.equal(badKey.raw, expected('badkey-1'), 'malformed Sec-WebSocket-Key');

  const v8 = await rawUpgrade(gw.port, '/chat', { 'X-Request-Id': 'v8-1', 'Sec-WebSocket-Version': '8' });
  t.equal(v8.raw, expected('v8-1'), 'Sec-WebSocket-Version 8');
  t.ok(v8.closed);

  t.same(rejected, [400, 400, 400, 400], "'rejected' emitted with 400 each time");
  // Control: the same route accepts a well-formed upgrade, so the 400s above came from the checks.
  const ok = await rawUpgrade(gw.port, '/chat', { 'X-Request-Id': 'ok-1' });
  t.equal(ok.status, 101, 'a well-formed upgrade on the same route is accepted');
  await eventually(() => upstream.open === 0 && gw.gateway.connections === 0, 3000, 'control connection closed');
  t.equal(upstream.tcp, 1, 'only the accepted upgrade reached the upstream');
});

t.test('404: unknown path (sidecar-style handleUpgrade)', async (t) => {
  const upstream = await startEchoUpstream(t);
  const gw = await startGateway(t, { routes: [{ path: '/chat', auth: [], upstream: upstream.url }] });
  noConnection(t, gw.gateway);
  const res = await rawUpgrade(gw.port, '/nope', { 'X-Request-Id': 'nf-1' });
  t.equal(res.raw, rejection('404 Not Found', 'not_found', 'no route for this path', 'nf-1'));
  t.ok(res.closed);
  // '/chat' is exact: '/chat/x' does not match it either.
  const sub = await rawUpgrade(gw.port, '/chat/x', { 'X-Request-Id': 'nf-2' });
  t.equal(sub.raw, rejection('404 Not Found', 'not_found', 'no route for this path', 'nf-2'));
  t.equal(upstream.tcp, 0, 'nothing reached the upstream');
});

t.test('414: request URI above 8 KiB', async (t) => {
  const upstream = await startEchoUpstream(t);
  const gw = await startGateway(t, { routes: [{ path: '/chat', auth: [], upstream: upstream.url }] });
  noConnection(t, gw.gateway);
  const long = `/chat?pad=${'a'.repeat(8192)}`;
  const res = await rawUpgrade(gw.port, long, { 'X-Request-Id': 'long-1' });
  t.equal(res.raw, rejection('414 URI Too Long', 'bad_request', 'request uri too long', 'long-1'));
  t.ok(res.closed);
  // Exactly 8 KiB is still fine.
  const edge = `/chat?pad=${'a'.repeat(8192 - '/chat?pad='.length)}`;
  t.equal(Buffer.byteLength(edge), 8192);
  const ok = await rawUpgrade(gw.port, edge, { 'X-Request-Id': 'long-2' });
  t.equal(ok.status, 101, 'a URI of exactly 8192 bytes is accepted');
  await eventually(() => upstream.open === 0, 3000, 'control connection closed');
  t.equal(upstream.tcp, 1, 'only the accepted upgrade reached the upstream');
});

t.test('sidecar server: 431, 414, 408, 426, 404, 400 without Host and 405 for CONNECT', async (t) => {
  const upstream = await startEchoUpstream(t);
  const sc = await startSidecar(t, {
    limits: { maxHeaderBytes: 2048, handshakeTimeoutMs: 300 },
    routes: [{ path: '/chat', auth: [], upstream: upstream.url }],
  });
  noConnection(t, sc.gateway);
  // A generated X-Request-Id stands in for the client's when the head could not be parsed.
  const withGeneratedId = (raw: string) => {
    const id = /\r\nX-Request-Id: ([^\r]*)\r\n/.exec(raw)?.[1] ?? '';
    return { id, raw: raw.replace(`X-Request-Id: ${id}\r\n`, 'X-Request-Id: <generated>\r\n') };
  };

  t.test('431: headers above limits.maxHeaderBytes', async (t) => {
    // Above maxHeaderBytes but parseable: the gateway answers, with the client's request id.
    const res = await rawUpgrade(sc.port, '/chat', { 'X-Request-Id': 'big-1', 'X-Pad': 'p'.repeat(3000) });
    t.equal(res.raw, rejection('431 Request Header Fields Too Large', 'bad_request', 'request headers too large', 'big-1'));
    t.ok(res.closed);
    // Beyond even Node's parser limit (maxHeaderBytes + room for a long URL): answered from clientError.
    const huge = await rawUpgrade(sc.port, '/chat', { 'X-Request-Id': 'big-3', 'X-Pad': 'p'.repeat(2048 + 8192 + 2000) });
    const { id, raw } = withGeneratedId(huge.raw);
    t.match(id, UUID, 'a generated request id (the head was never parsed)');
    t.equal(raw, rejection('431 Request Header Fields Too Large', 'bad_request', 'request headers too large', '<generated>'));
    t.ok(huge.closed);
    // Control: just under the limit passes.
    const ok = await rawUpgrade(sc.port, '/chat', { 'X-Request-Id': 'big-2', 'X-Pad': 'p'.repeat(1200) });
    t.equal(ok.status, 101, 'a head under maxHeaderBytes is accepted');
    await eventually(() => upstream.open === 0, 3000, 'control connection closed');
  });

  t.test('408: request head not completed within handshakeTimeoutMs', async (t) => {
    const started = Date.now();
    const socket = sendRaw(sc.port, 'GET /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: slow-1\r\n');
    const res = await readResponse(socket, 3000);
    const took = Date.now() - started;
    const { id, raw } = withGeneratedId(res.raw);
    t.match(id, UUID);
    t.equal(raw, rejection('408 Request Timeout', 'bad_request', 'request head not received in time', '<generated>'));
    t.ok(res.closed, 'the connection is closed by the server');
    t.ok(took >= 280 && took < 1500, `answered after the 300 ms budget (${took} ms)`);
  });

  t.test('an idle connection that sends nothing is closed within the handshake budget', async (t) => {
    const started = Date.now();
    const socket = sendRaw(sc.port, '');
    const res = await readResponse(socket, 2500);
    const took = Date.now() - started;
    t.ok(res.closed, `closed by the server (after ${took} ms)`);
    t.ok(took >= 280 && took < 1500, 'not before the budget, and soon after it');
    t.ok(res.raw === '' || res.raw.startsWith('HTTP/1.1 408 '), 'nothing, or a 408');
  });

  t.test('426 for a plain GET on a route path', async (t) => {
    const socket = sendRaw(sc.port, requestHead('/chat', { Host: '127.0.0.1', 'X-Request-Id': 'plain-1', Connection: 'close' }));
    const res = await readResponse(socket);
    const body = JSON.stringify({ error: 'bad_request', error_description: 'websocket upgrade required' });
    t.equal(
      res.raw.replace(/\r\nDate: [^\r]+\r\n/, '\r\nDate: <date>\r\n'),
      'HTTP/1.1 426 Upgrade Required\r\n' +
        'Content-Type: application/json\r\n' +
        `Content-Length: ${body.length}\r\n` +
        'Cache-Control: no-store\r\n' +
        'X-Request-Id: plain-1\r\n' +
        'Upgrade: websocket\r\n' +
        'Date: <date>\r\n' +
        'Connection: close\r\n' +
        `\r\n${body}`,
    );
    t.ok(res.closed);
  });

  t.test('404 for a plain GET on another path', async (t) => {
    const socket = sendRaw(sc.port, requestHead('/elsewhere', { Host: '127.0.0.1', 'X-Request-Id': 'plain-2', Connection: 'close' }));
    const res = await readResponse(socket);
    const body = JSON.stringify({ error: 'not_found', error_description: 'no route for this path' });
    t.equal(
      res.raw.replace(/\r\nDate: [^\r]+\r\n/, '\r\nDate: <date>\r\n'),
      'HTTP/1.1 404 Not Found\r\n' +
        'Content-Type: application/json\r\n' +
        `Content-Length: ${body.length}\r\n` +
        'Cache-Control: no-store\r\n' +
        'X-Request-Id: plain-2\r\n' +
        'Date: <date>\r\n' +
        'Connection: close\r\n' +
        `\r\n${body}`,
    );
  });

  t.test('an upgrade to an unknown path on the sidecar server is 404', async (t) => {
    const res = await rawUpgrade(sc.port, '/nope', { 'X-Request-Id': 'nf-sc' });
    t.equal(res.raw, rejection('404 Not Found', 'not_found', 'no route for this path', 'nf-sc'));
  });

  t.test('400 for a plain HTTP/1.1 request without Host, and the connection closed', async (t) => {
    // Node's own check (requireHostHeader) answered a bare 400 without JSON or request id.
    const socket = sendRaw(sc.port, 'GET /chat HTTP/1.1\r\nX-Request-Id: nohost-1\r\n\r\n');
    const res = await readResponse(socket);
    const body = JSON.stringify({ error: 'bad_request', error_description: 'malformed websocket upgrade' });
    t.equal(
      res.raw.replace(/\r\nDate: [^\r]+\r\n/, '\r\nDate: <date>\r\n'),
      'HTTP/1.1 400 Bad Request\r\n' +
        'Content-Type: application/json\r\n' +
        `Content-Length: ${body.length}\r\n` +
        'Cache-Control: no-store\r\n' +
        'X-Request-Id: nohost-1\r\n' +
        'Date: <date>\r\n' +
        'Connection: close\r\n' +
        `\r\n${body}`,
    );
    t.ok(res.closed, 'closed by the server');
  });

  t.test('405 for CONNECT, with Allow: GET', async (t) => {
    // Without a 'connect' listener Node closed the socket without any answer.
    const socket = sendRaw(sc.port, 'CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\nX-Request-Id: connect-1\r\n\r\n');
    const res = await readResponse(socket);
    t.equal(res.raw, rejection('405 Method Not Allowed', 'bad_request', 'method not allowed', 'connect-1', ['Allow: GET']));
    t.ok(res.closed, 'closed by the server');
  });

  t.test('a malformed request pipelined behind a plain one gets no second answer, and the connection is closed', async (t) => {
    // The parser fails on the second head while the first is answered: the clientError answer must not
    // be written into or after that response.
    for (const [first, status] of [['GET /chat HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n', 426], ['GET /chat HTTP/1.1\r\n\r\n', 400]] as const) {
      const socket = sendRaw(sc.port, `${first}\0bad\r\n\r\n`);
      const res = await readResponse(socket);
      t.equal(res.status, status, `${status} for the first request`);
      t.equal(res.raw.match(/HTTP\/1\.1 \d{3} /g)?.length, 1, 'one answer only');
      t.equal(Buffer.byteLength(res.body), Number(res.headers['content-length']), 'nothing after its body');
      t.ok(res.closed, 'closed by the server');
    }
  });

  t.test('none of the rejected requests reached the upstream', async (t) => {
    t.equal(upstream.tcp, 1, 'only the control upgrade of the 431 test did');
  });
});

t.test('sidecar server: an over-long URL is 414, also when it makes the head exceed maxHeaderBytes', async (t) => {
  const upstream = await startEchoUpstream(t);
  const sc = await startSidecar(t, { routes: [{ path: '/chat', auth: [], upstream: upstream.url }] });
  noConnection(t, sc.gateway);
  const res = await rawUpgrade(sc.port, `/chat?pad=${'u'.repeat(9000)}`, { 'X-Request-Id': 'lu-1' });
  t.equal(res.raw, rejection('414 URI Too Long', 'bad_request', 'request uri too long', 'lu-1'), 'URL > 8 KiB, head < maxHeaderBytes');
  t.ok(res.closed);

  // 20 000 bytes of URL: above 8 KiB (over-long) and above the default maxHeaderBytes (16384).
  const huge = await rawUpgrade(sc.port, `/chat?pad=${'u'.repeat(20000)}`, { 'X-Request-Id': 'lu-2' });
  t.ok(huge.closed, 'closed');
  t.equal(huge.raw, rejection('414 URI Too Long', 'bad_request', 'request uri too long', 'lu-2'), 'an over-long URL is 414 even when the head is above maxHeaderBytes');
  t.equal(upstream.tcp, 0, 'nothing reached the upstream');
});

t.test('503: limits.maxConnections reached, with Retry-After: 1', async (t) => {
  const upstream = await startEchoUpstream(t);
  const gw = await startGateway(t, {
    limits: { maxConnections: 1 },
    authenticators: { jwt: jwtAuth() },
    routes: [
      { path: '/a', auth: ['jwt'], upstream: upstream.url },
      { path: '/b', auth: [], upstream: upstream.url },
    ],
  });
  noConnection(t, gw.gateway);
  const first = await openWs(gw.url('/a'), bearer());
  t.equal(gw.gateway.connections, 1);
  const expected = (id: string) => rejection('503 Service Unavailable', 'unavailable', 'connection limit reached', id, ['Retry-After: 1']);
  const res = await rawUpgrade(gw.port, '/a', { 'X-Request-Id': 'cap-1', ...bearer() });
  t.equal(res.raw, expected('cap-1'));
  t.ok(res.closed);
  const other = await rawUpgrade(gw.port, '/b', { 'X-Request-Id': 'cap-2' });
  t.equal(other.raw, expected('cap-2'), 'the global cap applies to every route');
  // The cap is checked before authentication (SPEC 3 step 3 before step 6): no token still gets 503.
  const noToken = await rawUpgrade(gw.port, '/a', { 'X-Request-Id': 'cap-3' });
  t.equal(noToken.raw, expected('cap-3'), 'capacity is checked before credentials');
  t.equal(upstream.tcp, 1, 'only the first connection reached the upstream');

  await closeClient(first);
  await eventually(() => gw.gateway.connections === 0, 3000, 'first connection gone');
  const again = await openWs(gw.url('/b'));
  t.pass('a slot frees up when a connection ends');
  await closeClient(again);
});

t.test('503: route maxConnections reached, other routes unaffected', async (t) => {
  const upstream = await startEchoUpstream(t);
  const gw = await startGateway(t, {
    routes: [
      { path: '/a', auth: [], upstream: upstream.url, maxConnections: 1 },
      { path: '/b', auth: [], upstream: upstream.url },
    ],
  });
  noConnection(t, gw.gateway);
  const first = await openWs(gw.url('/a'));
  const res = await rawUpgrade(gw.port, '/a', { 'X-Request-Id': 'rcap-1' });
  t.equal(res.raw, rejection('503 Service Unavailable', 'unavailable', 'connection limit reached', 'rcap-1', ['Retry-After: 1']));
  t.equal(upstream.tcp, 1, 'the rejected upgrade never reached the upstream');
  const b = await openWs(gw.url('/b'));
  t.equal(gw.gateway.connections, 2, 'another route still accepts');
  await closeClient(b);
  await closeClient(first);
  await eventually(() => gw.gateway.connections === 0, 3000, 'connections gone');
  const again = await openWs(gw.url('/a'));
  t.pass('the route accepts again once its connection ended');
  await closeClient(again);
});

t.test('503 while draining, with Retry-After = remaining drain time', async (t) => {
  const upstream = await startEchoUpstream(t);
  const gw = await startGateway(t, {
    drain: { timeoutMs: 2000 },
    routes: [{ path: '/chat', auth: [], upstream: upstream.url }],
  });
  noConnection(t, gw.gateway);
  const live = await openWs(gw.url('/chat'));
  const closing = gw.gateway.close();
  t.ok(gw.gateway.draining);
  const res = await rawUpgrade(gw.port, '/chat', { 'X-Request-Id': 'drain-1' });
  const retryAfter = Number(res.headers['retry-after']);
  t.ok(retryAfter >= 1 && retryAfter <= 2, `Retry-After within the 2 s drain (${res.headers['retry-after']})`);
  t.equal(res.raw, rejection('503 Service Unavailable', 'unavailable', 'gateway is shutting down', 'drain-1', [`Retry-After: ${retryAfter}`]));
  t.ok(res.closed);
  // The live connection is still being piped during the drain.
  live.send('still here');
  const [echo] = (await once(live, 'message')) as [Buffer];
  t.equal(echo.toString(), 'still here', 'live connections keep working while draining');
  t.equal(upstream.tcp, 1, 'the rejected upgrade never reached the upstream');
  await closeClient(live);
  const started = Date.now();
  await closing;
  t.ok(Date.now() - started < 1500, 'close() resolves once the last connection ended, before the drain timeout');
});

t.test('502: upstream port closed, before any 101', async (t) => {
  const port = await freePort();
  const gw = await startGateway(t, { routes: [{ path: '/chat', auth: [], upstream: `ws://127.0.0.1:${port}` }] });
  noConnection(t, gw.gateway);
  const rejected: [number, string][] = [];
  gw.gateway.on('rejected', (_req, status, reason) => rejected.push([status, reason]));
  const res = await rawUpgrade(gw.port, '/chat', { 'X-Request-Id': 'bg-1' });
  t.equal(res.raw, rejection('502 Bad Gateway', 'bad_gateway', 'upstream unavailable', 'bg-1'));
  t.ok(res.closed);
  t.same(rejected, [[502, 'upstream unavailable']]);
  t.match(gw.logText(), /"reqId":"bg-1"[^\n]*"status":502/, 'the 502 is logged with the request id');
  await eventually(() => gw.gateway.connections === 0, 2000, 'no connection left');
});

t.test("the upstream's own 403 to the upgrade is passed through to the client", async (t) => {
  const upstreamReply = 'HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 10\r\nX-Upstream: yes\r\nConnection: close\r\n\r\nforbidden\n';
  const server = createServer();
  let upgrades = 0;
  server.on('upgrade', (_req: IncomingMessage, socket: Socket) => {
    upgrades++;
    socket.on('error', () => {});
    socket.end(upstreamReply);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => new Promise((r) => server.close(r)));
  const port = (server.address() as AddressInfo).port;
  const gw = await startGateway(t, { routes: [{ path: '/chat', auth: [], upstream: `ws://127.0.0.1:${port}` }] });
  noConnection(t, gw.gateway);
  const res = await rawUpgrade(gw.port, '/chat', { 'X-Request-Id': 'up-403' });
  t.equal(upgrades, 1);
  // As in relay mode: the upstream's status, headers and body, with the gateway's own framing headers.
  t.equal(res.raw, 'HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 10\r\ncontent-type: text/plain\r\nx-upstream: yes\r\n\r\nforbidden\n', 'exact bytes');
  t.equal(res.status, 403, 'status passed through, not turned into a 502');
  t.equal(res.statusLine, 'HTTP/1.1 403 Forbidden');
  t.equal(res.headers['x-upstream'], 'yes', "the upstream's headers are passed through");
  t.equal(res.headers['content-type'], 'text/plain');
  t.equal(res.body, 'forbidden\n', "the upstream's body is passed through");
  t.ok(res.closed, 'the client connection is closed afterwards');
  t.notMatch(res.raw, /bad_gateway/, 'no gateway 502 appended');
  await eventually(() => gw.gateway.connections === 0, 2000, 'no connection left');
});

t.test('X-Request-Id: echoed when sane, replaced when not', async (t) => {
  const upstream = await startEchoUpstream(t);
  const gw: TestGateway = await startGateway(t, {
    authenticators: { jwt: jwtAuth() },
    routes: [{ path: '/chat', auth: ['jwt'], upstream: upstream.url }],
  });
  noConnection(t, gw.gateway);
  const missing = (id: string) =>
    rejection('401 Unauthorized', 'unauthorized', 'credentials required', id, ['WWW-Authenticate: Bearer realm="portcullis"']);

  const sane = 'Abc.def_0:9-Z';
  const res = await rawUpgrade(gw.port, '/chat', { 'X-Request-Id': sane });
  t.equal(res.raw, missing(sane), 'a sane id is echoed');
  t.match(gw.logText(), new RegExp(`"reqId":"${sane}"`), 'and logged');

  const longest = 'x'.repeat(128);
  t.equal((await rawUpgrade(gw.port, '/chat', { 'X-Request-Id': longest })).headers['x-request-id'], longest, '128 characters are still sane');

  for (const insane of ['has space', 'x'.repeat(129), 'semi;colon', 'quote"d', 'slash/ed']) {
    const r = await rawUpgrade(gw.port, '/chat', { 'X-Request-Id': insane });
    const id = r.headers['x-request-id'] ?? '';
    t.not(id, insane, `${JSON.stringify(insane.slice(0, 20))} is not echoed`);
    t.match(id, /^[A-Za-z0-9._:-]{1,128}$/, 'the replacement is itself sane');
    t.equal(r.raw, missing(id), 'otherwise the same response');
    t.ok(gw.logText().includes(`"reqId":"${id}"`), 'the generated id is the one logged');
    t.notOk(gw.logText().includes(insane), 'the insane id is not logged');
  }

  const none = await rawUpgrade(gw.port, '/chat', {});
  t.match(none.headers['x-request-id'], /^[A-Za-z0-9._:-]{1,128}$/, 'generated when absent');

  // On an accepted upgrade, the sane id is what the upstream gets.
  const ws = new WebSocket(gw.url('/chat'), { headers: { ...bearer(), 'X-Request-Id': 'up-id-1' } });
  await once(ws, 'open');
  await closeClient(ws);
  t.equal(upstream.seen[0]?.headers['x-request-id'], 'up-id-1', 'the sane id is forwarded upstream');
  t.equal(upstream.tcp, 1, 'none of the rejected upgrades reached the upstream');
});
