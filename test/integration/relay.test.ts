// mode "relay" through the gateway (SPEC 2.3 relay fields, 3 step 8, 5, 9 "Relay features"): real sockets
// on port 0, real ws upstreams, no mocks.
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import t, { type Test } from 'tap';
import { WebSocket, type RawData } from 'ws';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { eventually, freePort, openFds, sleep, type Teardown } from '../helpers/net.js';
import { hs256, jwtAuth } from '../helpers/tokens.js';
import { rawUpgrade } from '../helpers/upgrade.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';

// ---------------------------------------------------------------------------------------------------------
// Helpers

interface Closed {
  code: number;
  reason: string;
  /** Date.now() when the close event fired. */
  at: number;
}

/** Resolves with the next close of `ws` (code, reason, time). */
function closeOf(ws: WebSocket): Promise<Closed> {
  return new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString(), at: Date.now() })));
}

/** Resolves with the next message of `ws`; rejects when none comes within `ms`. */
function nextMessage(ws: WebSocket, ms = 3000): Promise<{ data: Buffer; isBinary: boolean }> {
  return within(new Promise((resolve) => ws.once('message', (data: RawData, isBinary) => resolve({ data: data as Buffer, isBinary }))), ms, 'a message');
}

/** Collects the next `n` messages of `ws` as text. */
function messages(ws: WebSocket, n: number): Promise<string[]> {
  return new Promise((resolve) => {
    const got: string[] = [];
    const on = (data: RawData) => {
      got.push(String(data));
      if (got.length === n) {
        ws.off('message', on);
        resolve(got);
      }
    };
    ws.on('message', on);
  });
}

/** Settles like `p`, or rejects after `ms` (the timer is cleared as soon as `p` settles). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

interface ClientOptions {
  protocols?: string[];
  headers?: Record<string, string>;
  autoPong?: boolean;
}

/**
 * Opens a client WebSocket that must complete its handshake (rejects on any non-101 answer). Errors after
 * the open are swallowed (a terminated peer must not crash the test); terminated by `t.teardown`.
 */
function connect(t: Teardown, url: string, options: ClientOptions = {}): Promise<WebSocket> {
  const ws = new WebSocket(url, options.protocols ?? [], { headers: options.headers ?? {}, autoPong: options.autoPong ?? true });
  t.teardown(() => ws.terminate());
  return new Promise((resolve, reject) => {
    ws.once('open', () => {
      ws.on('error', () => {});
      resolve(ws);
    });
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`unexpected response ${res.statusCode}`)));
  });
}

const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });

/** The upstream server's side of things: its WebSockets, what they received and how they closed. */
interface UpstreamTap {
  sockets: WebSocket[];
  /** Every message received by any upstream-side socket, as text, in order. */
  received: string[];
  closes: Closed[];
}

/**
 * Watches an echo upstream's server-side sockets. A message `die` makes the upstream terminate() that
 * connection (after the echo, which the echo handler sends first).
 */
function tap(upstream: EchoUpstream): UpstreamTap {
  const out: UpstreamTap = { sockets: [], received: [], closes: [] };
  upstream.wss.on('connection', (ws: WebSocket) => {
    out.sockets.push(ws);
    ws.on('message', (data: RawData) => {
      const text = String(data);
      out.received.push(text);
      if (text === 'die') ws.terminate();
    });
    ws.on('close', (code, reason) => out.closes.push({ code, reason: reason.toString(), at: Date.now() }));
  });
  return out;
}

/** A gateway whose route `/chat` relays to `upstream` and needs a JWT; `extra` goes on the route. */
function relayGateway(t: Teardown, upstream: string | string[], extra: Record<string, unknown> = {}): Promise<TestGateway> {
  return startGateway(t, {
    authenticators: { jwt: jwtAuth() },
    routes: [{ path: '/chat', mode: 'relay', auth: ['jwt'], upstream, ...extra }],
  });
}

/** An echo upstream (tapped) behind a relay gateway. */
async function relaySetup(t: Teardown, extra: Record<string, unknown> = {}) {
  const upstream = await startEchoUpstream(t);
  const up = tap(upstream);
  const gw = await relayGateway(t, upstream.url, extra);
  return { upstream, up, gw };
}

/** An HTTP server on 127.0.0.1:0 whose open sockets are destroyed at teardown. */
async function listenHttp(t: Teardown, server: Server): Promise<number> {
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    return new Promise((r) => server.close(r));
  });
  return (server.address() as AddressInfo).port;
}

/** The whole upstream request as text (url and every header value), to look for a leaked credential. */
function everythingSeen(upstream: EchoUpstream): string {
  return JSON.stringify(upstream.seen.map((s) => ({ url: s.url, headers: s.headers, protocol: s.protocol })));
}

/** Seconds since the epoch, `ahead` seconds from now (a whole second, as JWT `exp` is). */
const expIn = (ahead: number) => Math.floor(Date.now() / 1000) + ahead;

// ---------------------------------------------------------------------------------------------------------
// Echo and what the upstream sees

t.test('echo both ways: text, binary, empty text, empty binary', async (t) => {
  const { upstream, up, gw } = await relaySetup(t);
  const ws = await connect(t, gw.url('/chat'), { headers: bearer(hs256({ sub: 'alice' })) });

  ws.send('hello');
  let m = await nextMessage(ws);
  t.equal(m.data.toString(), 'hello');
  t.equal(m.isBinary, false, 'text stays text');

  const bytes = Buffer.from([0, 1, 2, 0xff, 0xfe, 0x80]);
  ws.send(bytes);
  m = await nextMessage(ws);
  t.ok(m.data.equals(bytes), 'binary unchanged');
  t.equal(m.isBinary, true, 'binary stays binary');

  ws.send('');
  m = await nextMessage(ws);
  t.equal(m.data.length, 0, 'empty text');
  t.equal(m.isBinary, false);

  ws.send(Buffer.alloc(0));
  m = await nextMessage(ws);
  t.equal(m.data.length, 0, 'empty binary');
  t.equal(m.isBinary, true);

  t.same(up.received, ['hello', bytes.toString(), '', ''], 'the upstream received each message once, in order');
  t.equal(upstream.seen.length, 1, 'one upstream connection');
});

t.test('the upstream can send first, unprompted, and binary from the upstream arrives as binary', async (t) => {
  const upstream = await startEchoUpstream(t);
  upstream.wss.on('connection', (ws: WebSocket) => {
    ws.send('welcome');
    ws.send(Buffer.from([9, 8, 7]));
  });
  const gw = await relayGateway(t, upstream.url);
  const ws = new WebSocket(gw.url('/chat'), { headers: bearer(hs256({ sub: 'alice' })) });
  t.teardown(() => ws.terminate());
  ws.on('error', () => {});
  // Listen before the open: whatever the upstream sent right at its open must not be lost.
  const got: { text: string; isBinary: boolean }[] = [];
  ws.on('message', (data: RawData, isBinary) => got.push({ text: (data as Buffer).toString('hex'), isBinary }));
  await eventually(() => got.length === 2, 2000, 'both greetings');
  t.same(got, [
    { text: Buffer.from('welcome').toString('hex'), isBinary: false },
    { text: '090807', isBinary: true },
  ]);
});

t.test('fragmented messages arrive whole, both ways', async (t) => {
  const upstream = await startEchoUpstream(t);
  const up = tap(upstream);
  // The upstream answers `frag-me` with a message of its own in three fragments.
  upstream.wss.on('connection', (ws: WebSocket) => {
    ws.on('message', (data: RawData) => {
      if (String(data) !== 'frag-me') return;
      ws.send('up-1,', { fin: false });
      ws.send('up-2,', { fin: false });
      ws.send('up-3', { fin: true });
    });
  });
  const gw = await relayGateway(t, upstream.url);
  const ws = await connect(t, gw.url('/chat'), { headers: bearer(hs256({ sub: 'alice' })) });

  const echoed = nextMessage(ws);
  ws.send('part-1,', { fin: false });
  ws.send('part-2,', { fin: false });
  ws.send('part-3', { fin: true });
  const m = await echoed;
  t.equal(m.data.toString(), 'part-1,part-2,part-3', 'client → upstream → client: one whole message');
  t.equal(m.isBinary, false);

  const binEcho = nextMessage(ws);
  ws.send(Buffer.from([1, 2]), { fin: false, binary: true });
  ws.send(Buffer.from([3, 4]), { fin: true, binary: true });
  const b = await binEcho;
  t.same([...b.data], [1, 2, 3, 4], 'fragmented binary arrives whole');
  t.equal(b.isBinary, true);

  const two = messages(ws, 2);
  ws.send('frag-me');
  t.same(await within(two, 3000, 'two messages'), ['frag-me', 'up-1,up-2,up-3'], 'upstream → client: the fragmented message arrives whole');
  t.same(up.received, ['part-1,part-2,part-3', Buffer.from([1, 2, 3, 4]).toString(), 'frag-me'], 'the upstream got whole messages');
});

t.test('a 2 MiB message both ways with maxPayload raised to 4 MiB', async (t) => {
  const { up, gw } = await relaySetup(t, { maxPayload: 4 * 1024 * 1024 });
  const ws = await connect(t, gw.url('/chat'), { headers: bearer(hs256({ sub: 'alice' })) });
  const big = Buffer.alloc(2 * 1024 * 1024);
  for (let i = 0; i < big.length; i++) big[i] = (i * 31 + 7) & 0xff;
  const closed = closeOf(ws);
  ws.send(big);
  const m = await within(Promise.race([nextMessage(ws, 5000), closed.then((c) => Promise.reject(new Error(`closed ${c.code} ${c.reason}`)))]), 5000, 'the 2 MiB echo');
  t.equal(m.data.length, big.length, '2 MiB back');
  t.ok(m.data.equals(big), 'byte for byte');
  t.equal(up.received.length, 1, 'the upstream got it as one message');
  t.equal(ws.readyState, WebSocket.OPEN, 'still open');
});

t.test('the upstream gets identity, forwarding headers and the path, never the credential', async (t) => {
  const { upstream, gw } = await relaySetup(t);
  const token = hs256({ sub: 'alice', scope: 'chat' });
  const ws = await connect(t, gw.url('/chat?room=1'), {
    headers: { ...bearer(token), 'X-Auth-Subject': 'mallory', 'X-Auth-Claims': 'forged', 'X-Request-Id': 'relay-req-1', 'X-Forwarded-For': '10.0.0.9' },
  });
  ws.send('x');
  await nextMessage(ws);
  const seen = upstream.seen[0]!;
  t.equal(seen.headers['x-auth-subject'], 'alice', 'subject from the token, the client-sent one removed');
  t.match(JSON.parse(Buffer.from(String(seen.headers['x-auth-claims']), 'base64url').toString()), { sub: 'alice', scope: 'chat' });
  t.equal(seen.headers['x-forwarded-for'], '10.0.0.9, 127.0.0.1', 'X-Forwarded-For appended');
  t.equal(seen.headers['x-forwarded-proto'], 'http');
  t.equal(seen.headers['x-forwarded-host'], `127.0.0.1:${gw.port}`);
  t.equal(seen.headers['x-request-id'], 'relay-req-1', 'the client request id is passed on');
  t.equal(seen.headers.authorization, undefined, 'Authorization stripped');
  t.notOk(everythingSeen(upstream).includes(token), 'the token is nowhere in what the upstream saw');
  t.equal(seen.url, '/chat?room=1', `the request path and query go upstream (got ${seen.url})`);
});

t.test('an upstream target with a base path: the request path is appended to it', async (t) => {
  const upstream = await startEchoUpstream(t);
  const gw = await relayGateway(t, `${upstream.url}/base/`);
  const ws = await connect(t, gw.url('/chat?room=3'), { headers: bearer(hs256({ sub: 'alice' })) });
  ws.send('x');
  await nextMessage(ws);
  t.equal(upstream.seen[0]?.url, '/base/chat?room=3');
});

t.test('a query-parameter credential is removed from the URL the upstream sees; the rest of the query stays', async (t) => {
  const { upstream, gw } = await relaySetup(t);
  const token = hs256({ sub: 'alice' });
  const ws = await connect(t, gw.url(`/chat?room=2&access_token=${token}`));
  ws.send('x');
  await nextMessage(ws);
  t.equal(upstream.seen[0]?.headers['x-auth-subject'], 'alice');
  t.notOk(everythingSeen(upstream).includes(token), 'the token is nowhere in what the upstream saw');
  t.equal(upstream.seen[0]?.url, '/chat?room=2', 'path and the other query parameters forwarded');
});

t.test('subprotocols', async (t) => {
  await t.test("['bearer', 'bearer.<tok>']: the client gets 'bearer', the upstream no token", async (t) => {
    const { upstream, gw } = await relaySetup(t);
    const token = hs256({ sub: 'alice' });
    const ws = await connect(t, gw.url('/chat'), { protocols: ['bearer', `bearer.${token}`] });
    t.equal(ws.protocol, 'bearer', 'the bare marker is answered');
    ws.send('x');
    t.equal((await nextMessage(ws)).data.toString(), 'x');
    const seen = upstream.seen[0]!;
    t.equal(seen.headers['x-auth-subject'], 'alice');
    t.notOk(String(seen.headers['sec-websocket-protocol'] ?? '').includes(token), 'no protocol header with the token');
    t.notOk(everythingSeen(upstream).includes(token), 'the token is nowhere in what the upstream saw');
  });

  await t.test("['graphql-ws', 'bearer', 'bearer.<tok>'] with an upstream that selects graphql-ws", async (t) => {
    const offered: string[][] = [];
    const upstream = await startEchoUpstream(t, {
      handleProtocols: (protocols: Set<string>) => {
        offered.push([...protocols]);
        return protocols.has('graphql-ws') ? 'graphql-ws' : false;
      },
    });
    const gw = await relayGateway(t, upstream.url);
    const token = hs256({ sub: 'alice' });
    const ws = await connect(t, gw.url('/chat'), { protocols: ['graphql-ws', 'bearer', `bearer.${token}`] });
    t.equal(ws.protocol, 'graphql-ws', "the client sees the upstream's choice");
    t.equal(upstream.seen[0]?.protocol, 'graphql-ws');
    t.same(offered, [['graphql-ws']], 'the upstream was offered graphql-ws only (neither the marker nor the token)');
    t.notOk(everythingSeen(upstream).includes(token), 'the token is nowhere in what the upstream saw');
    ws.send('x');
    t.equal((await nextMessage(ws)).data.toString(), 'x');
  });
});

// ---------------------------------------------------------------------------------------------------------
// Upstream failures (SPEC 3 step 8, 5)

t.test('an upstream refusing connections: 502 with the exact bytes, never a 101', async (t) => {
  const closedPort = await freePort();
  const gw = await relayGateway(t, `ws://127.0.0.1:${closedPort}`);
  const rejected: number[] = [];
  gw.gateway.on('rejected', (_req, status) => rejected.push(status));
  const res = await rawUpgrade(gw.port, '/chat', { ...bearer(hs256({ sub: 'alice' })), 'X-Request-Id': 'relay-502' });
  t.equal(
    res.raw,
    'HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 66\r\nCache-Control: no-store\r\nX-Request-Id: relay-502\r\n\r\n{"error":"bad_gateway","error_description":"upstream unavailable"}',
  );
  t.notOk(res.raw.includes('101 Switching'), 'no 101 before the 502');
  t.ok(res.closed, 'closed by the gateway');
  t.same(rejected, [502], "a 'rejected' event with 502");
  await eventually(() => gw.gateway.connections === 0, 2000, 'no live connection left');
});

t.test("an upstream answering 403 to the upgrade: the client gets that 403 as it is", async (t) => {
  const server = createServer((_req, res) => res.writeHead(404).end());
  let upgrades = 0;
  server.on('upgrade', (_req: IncomingMessage, socket: Socket) => {
    upgrades++;
    socket.on('error', () => {});
    socket.end('HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 20\r\nX-Upstream-Reason: banned\r\nConnection: close\r\n\r\nupstream says no way');
  });
  const port = await listenHttp(t, server);
  const gw = await relayGateway(t, `ws://127.0.0.1:${port}`);
  const res = await rawUpgrade(gw.port, '/chat', bearer(hs256({ sub: 'alice' })));
  t.equal(res.statusLine, 'HTTP/1.1 403 Forbidden', 'the upstream status is passed through');
  t.equal(res.body, 'upstream says no way', 'with its body');
  t.equal(res.headers['x-upstream-reason'], 'banned', 'and its headers');
  t.equal(res.headers['content-length'], '20');
  t.notOk(res.raw.includes('101 Switching'), 'no 101');
  t.ok(res.closed);
  t.equal(upgrades, 1, 'asked once (a 403 is an answer, not a failure to retry)');
});

t.test('upstream list [closed port, live]: the failed connect is retried once on the live one', async (t) => {
  const closedPort = await freePort();
  const upstream = await startEchoUpstream(t);
  const gw = await relayGateway(t, [`ws://127.0.0.1:${closedPort}`, upstream.url]);
  const ws = await connect(t, gw.url('/chat'), { headers: bearer(hs256({ sub: 'alice' })) });
  ws.send('through');
  t.equal((await nextMessage(ws)).data.toString(), 'through');
  t.equal(upstream.seen.length, 1, 'the live upstream got the connection');
  t.ok(
    gw.logs().some((l) => l.msg === 'upstream connect failed' && l.target === `127.0.0.1:${closedPort}`),
    'the closed target was tried first (and logged), then the live one',
  );
});

// ---------------------------------------------------------------------------------------------------------
// Close propagation

t.test('close codes and reasons travel both ways', async (t) => {
  await t.test("client closes 4001 'x' → the upstream sees 4001 'x'", async (t) => {
    const { up, upstream, gw } = await relaySetup(t);
    const ws = await connect(t, gw.url('/chat'), { headers: bearer(hs256({ sub: 'alice' })) });
    await eventually(() => up.sockets.length === 1, 2000, 'the upstream connection');
    const upClosed = closeOf(up.sockets[0]!);
    const clientClosed = closeOf(ws);
    ws.close(4001, 'x');
    const c = await within(upClosed, 2000, 'the upstream close');
    t.same({ code: c.code, reason: c.reason }, { code: 4001, reason: 'x' });
    const cc = await within(clientClosed, 2000, 'the client close handshake');
    t.equal(cc.code, 4001, 'the client close handshake completes with its own code');
    await eventually(() => gw.gateway.connections === 0 && upstream.open === 0, 2000, 'both sides closed');
  });

  await t.test("upstream closes 4002 'y' → the client sees 4002 'y'", async (t) => {
    const { up, upstream, gw } = await relaySetup(t);
    const ws = await connect(t, gw.url('/chat'), { headers: bearer(hs256({ sub: 'alice' })) });
    await eventually(() => up.sockets.length === 1, 2000, 'the upstream connection');
    const clientClosed = closeOf(ws);
    up.sockets[0]!.close(4002, 'y');
    const c = await within(clientClosed, 2000, 'the client close');
    t.same({ code: c.code, reason: c.reason }, { code: 4002, reason: 'y' });
    await eventually(() => gw.gateway.connections === 0 && upstream.open === 0, 2000, 'both sides closed');
  });

  await t.test('upstream terminate() mid-stream → the client gets 1011', async (t) => {
    const { up, upstream, gw } = await relaySetup(t);
    const ws = await connect(t, gw.url('/chat'), { headers: bearer(hs256({ sub: 'alice' })) });
    ws.send('one');
    t.equal((await nextMessage(ws)).data.toString(), 'one');
    const clientClosed = closeOf(ws);
    up.sockets[0]!.terminate();
    const c = await within(clientClosed, 2000, 'the client close');
    t.equal(c.code, 1011, 'an abnormal upstream end is 1011 to the client');
    await eventually(() => gw.gateway.connections === 0 && upstream.open === 0, 2000, 'both sides closed');
  });

  await t.test('upstream closes 1001 → the client gets 1001', async (t) => {
    const { up, gw } = await relaySetup(t);
    const ws = await connect(t, gw.url('/chat'), { headers: bearer(hs256({ sub: 'alice' })) });
    await eventually(() => up.sockets.length === 1, 2000, 'the upstream connection');
    const clientClosed = closeOf(ws);
    up.sockets[0]!.close(1001, 'restarting');
    const c = await within(clientClosed, 2000, 'the client close');
    t.same({ code: c.code, reason: c.reason }, { code: 1001, reason: 'restarting' });
    await eventually(() => gw.gateway.connections === 0, 2000, 'connection released');
  });

  await t.test('client terminate() → the upstream side is closed too', async (t) => {
    const { up, upstream, gw } = await relaySetup(t);
    const ws = await connect(t, gw.url('/chat'), { headers: bearer(hs256({ sub: 'alice' })) });
    await eventually(() => up.sockets.length === 1, 2000, 'the upstream connection');
    ws.terminate();
    await eventually(() => up.closes.length === 1, 2000, 'the upstream-side close');
    t.equal(up.closes[0]!.code, 1001, 'a vanished client is 1001 (going away) upstream');
    await eventually(() => gw.gateway.connections === 0 && upstream.open === 0, 2000, 'both sides closed');
  });
});

// ---------------------------------------------------------------------------------------------------------
// maxPayload

t.test('maxPayload: a message above it closes the client with 1009 and never reaches the upstream', async (t) => {
  const { up, upstream, gw } = await relaySetup(t, { maxPayload: 1024 });
  const ws = await connect(t, gw.url('/chat'), { headers: bearer(hs256({ sub: 'alice' })) });
  ws.send(Buffer.alloc(1024, 0x61));
  const atLimit = await nextMessage(ws);
  t.equal(atLimit.data.length, 1024, 'exactly maxPayload passes');
  const closed = closeOf(ws);
  ws.send(Buffer.alloc(1025, 0x62));
  const c = await within(closed, 2000, 'the 1009 close');
  t.equal(c.code, 1009, '1009 message too big');
  t.equal(up.received.length, 1, 'the oversized message never reached the upstream');
  await eventually(() => upstream.open === 0 && gw.gateway.connections === 0, 2000, 'the upstream side closed too');
});

t.test('maxPayload default (1 MiB): a 1 MiB + 1 message is closed with 1009', async (t) => {
  const { up, gw } = await relaySetup(t);
  const ws = await connect(t, gw.url('/chat'), { headers: bearer(hs256({ sub: 'alice' })) });
  const closed = closeOf(ws);
  ws.send(Buffer.alloc(1024 * 1024 + 1));
  const c = await within(closed, 3000, 'the 1009 close');
  t.equal(c.code, 1009);
  t.equal(up.received.length, 0);
});

// ---------------------------------------------------------------------------------------------------------
// Heartbeat

t.test('heartbeat 200 ms: a client that does not answer pings is terminated within ~2 periods', async (t) => {
  const { up, upstream, gw } = await relaySetup(t, { heartbeatMs: 200 });
  const ws = await connect(t, gw.url('/chat'), { headers: bearer(hs256({ sub: 'alice' })), autoPong: false });
  const opened = Date.now();
  let pings = 0;
  ws.on('ping', () => pings++);
  const c = await within(closeOf(ws), 1500, 'the heartbeat to terminate the client');
  const elapsed = c.at - opened;
  t.ok(pings >= 1, `the gateway pinged first (${pings} pings)`);
  t.ok(elapsed >= 150, `not terminated before a whole period without a pong (${elapsed} ms)`);
  t.ok(elapsed <= 700, `terminated within ~2 periods (${elapsed} ms)`);
  t.equal(c.code, 1006, 'terminated, no close frame');
  await eventually(() => up.closes.length === 1 && upstream.open === 0, 2000, 'the upstream side closed too');
  await eventually(() => gw.gateway.connections === 0, 2000, 'connection released');
});

t.test('heartbeat 200 ms: a normal client stays connected across several periods', async (t) => {
  const { up, gw } = await relaySetup(t, { heartbeatMs: 200 });
  const ws = await connect(t, gw.url('/chat'), { headers: bearer(hs256({ sub: 'alice' })) });
  let pings = 0;
  let closed = false;
  ws.on('ping', () => pings++);
  ws.on('close', () => (closed = true));
  await sleep(1100);
  t.notOk(closed, 'still open after 5 periods');
  t.ok(pings >= 3, `pinged every period (${pings} pings)`);
  ws.send('still here');
  t.equal((await nextMessage(ws)).data.toString(), 'still here');
  t.same(up.received, ['still here'], 'pings and pongs are not relayed as messages');
  t.equal(up.closes.length, 0, 'upstream side untouched');
});

// ---------------------------------------------------------------------------------------------------------
// enforceExpiry

t.test("enforceExpiry: the client is closed 1008 'token expired' at exp, the upstream side too", async (t) => {
  const { up, upstream, gw } = await relaySetup(t);
  const exp = expIn(2);
  const ws = await connect(t, gw.url('/chat'), { headers: bearer(hs256({ sub: 'alice', exp })) });
  ws.send('before');
  t.equal((await nextMessage(ws)).data.toString(), 'before');
  const c = await within(closeOf(ws), 3500, 'the expiry close');
  t.same({ code: c.code, reason: c.reason }, { code: 1008, reason: 'token expired' });
  t.ok(c.at >= exp * 1000 - 50, `not before exp (${c.at - exp * 1000} ms from exp)`);
  t.ok(c.at <= exp * 1000 + 600, `near exp (${c.at - exp * 1000} ms from exp)`);
  await eventually(() => up.closes.length === 1 && upstream.open === 0, 2000, 'the upstream side closed');
  await eventually(() => gw.gateway.connections === 0, 2000, 'connection released');
  t.ok(gw.logs().some((l) => l.msg === 'connection closed: identity expired' && l.subject === 'alice'), 'logged');
});

t.test('enforceExpiry: false: the connection stays open past exp', async (t) => {
  const { up, gw } = await relaySetup(t, { enforceExpiry: false });
  const exp = expIn(1);
  const ws = await connect(t, gw.url('/chat'), { headers: bearer(hs256({ sub: 'alice', exp })) });
  let closed = false;
  ws.on('close', () => (closed = true));
  await sleep(Math.max(0, exp * 1000 + 600 - Date.now()));
  t.notOk(closed, 'still open 600 ms past exp');
  ws.send('late');
  t.equal((await nextMessage(ws)).data.toString(), 'late', 'and still relaying');
  t.equal(up.closes.length, 0);
});

// ---------------------------------------------------------------------------------------------------------
// refresh

t.test('refresh (graceSec 1)', async (t) => {
  const refresh = { refresh: { graceSec: 1 } };

  await t.test('a valid token for the same subject extends the connection; the refresh is not forwarded', async (t) => {
    const { up, gw } = await relaySetup(t, refresh);
    const exp = expIn(1);
    const ws = await connect(t, gw.url('/chat'), { headers: bearer(hs256({ sub: 'alice', exp })) });
    const got: string[] = [];
    ws.on('message', (d: RawData) => got.push(String(d)));
    let closed: Closed | undefined;
    void closeOf(ws).then((c) => (closed = c));
    ws.send(JSON.stringify({ type: 'refresh', token: hs256({ sub: 'alice' }) }));
    // Past the old exp + grace, with margin.
    await sleep(Math.max(0, exp * 1000 + 1000 + 600 - Date.now()));
    t.equal(closed, undefined, 'still open after the old exp + graceSec');
    ws.send('after');
    await eventually(() => got.includes('after'), 2000, 'the echo of a message after the refresh');
    t.same(up.received, ['after'], 'the refresh message never reached the upstream');
    t.same(got, ['after'], 'nothing but the echo came back');
  });

  await t.test("after a refresh, the new token's exp + graceSec is enforced (4401 'token expired')", async (t) => {
    const { upstream, gw } = await relaySetup(t, refresh);
    const exp = expIn(1);
    const ws = await connect(t, gw.url('/chat'), { headers: bearer(hs256({ sub: 'alice', exp })) });
    const closed = closeOf(ws);
    const newExp = exp + 2;
    ws.send(JSON.stringify({ type: 'refresh', token: hs256({ sub: 'alice', exp: newExp }) }));
    const c = await within(closed, 5000, 'the 4401 close');
    t.same({ code: c.code, reason: c.reason }, { code: 4401, reason: 'token expired' });
    const deadline = (newExp + 1) * 1000;
    t.ok(c.at >= deadline - 50, `extended to the new exp + graceSec (${c.at - deadline} ms from it)`);
    t.ok(c.at <= deadline + 600, `closed at the new exp + graceSec (${c.at - deadline} ms from it)`);
    await eventually(() => upstream.open === 0 && gw.gateway.connections === 0, 2000, 'both sides closed');
  });

  await t.test('a refresh sent after exp but within graceSec still extends', async (t) => {
    const { up, gw } = await relaySetup(t, refresh);
    const exp = expIn(1);
    const ws = await connect(t, gw.url('/chat'), { headers: bearer(hs256({ sub: 'alice', exp })) });
    let closed: Closed | undefined;
    void closeOf(ws).then((c) => (closed = c));
    await sleep(Math.max(0, exp * 1000 + 300 - Date.now()));
    t.equal(closed, undefined, 'open in the grace window');
    ws.send(JSON.stringify({ type: 'refresh', token: hs256({ sub: 'alice' }) }));
    await sleep(Math.max(0, (exp + 1) * 1000 + 500 - Date.now()));
    t.equal(closed, undefined, 'still open after the old exp + graceSec');
    ws.send('after');
    t.equal((await nextMessage(ws)).data.toString(), 'after');
    t.same(up.received, ['after'], 'the refresh message never reached the upstream');
  });

  await t.test("no refresh: 4401 'token expired' at exp + graceSec", async (t) => {
    const { up, upstream, gw } = await relaySetup(t, refresh);
    const exp = expIn(1);
    const ws = await connect(t, gw.url('/chat'), { headers: bearer(hs256({ sub: 'alice', exp })) });
    const c = await within(closeOf(ws), 3500, 'the 4401 close');
    t.same({ code: c.code, reason: c.reason }, { code: 4401, reason: 'token expired' });
    const deadline = (exp + 1) * 1000;
    t.ok(c.at >= deadline - 50, `not before exp + graceSec (${c.at - deadline} ms from it)`);
    t.ok(c.at <= deadline + 600, `near exp + graceSec (${c.at - deadline} ms from it)`);
    await eventually(() => up.closes.length === 1 && upstream.open === 0, 2000, 'the upstream side closed');
    await eventually(() => gw.gateway.connections === 0, 2000, 'connection released');
  });

  const refused: [string, () => string][] = [
    ['a token for another subject', () => hs256({ sub: 'mallory' })],
    ['a token with a bad signature', () => hs256({ sub: 'alice' }, 'another-secret-0123456789abcdef-0123456')],
    ['a malformed token', () => 'not.a.jwt'],
    ['an expired token for the same subject', () => hs256({ sub: 'alice', exp: expIn(-10) })],
  ];
  for (const [name, token] of refused) {
    await t.test(`${name}: does not extend; 4401 by exp + graceSec`, async (t) => {
      const { up, upstream, gw } = await relaySetup(t, refresh);
      const exp = expIn(1);
      const ws = await connect(t, gw.url('/chat'), { headers: bearer(hs256({ sub: 'alice', exp })) });
      const closed = closeOf(ws);
      ws.send(JSON.stringify({ type: 'refresh', token: token() }));
      const c = await within(closed, 3500, 'the 4401 close');
      t.equal(c.code, 4401, `4401 (reason '${c.reason}')`);
      t.ok(c.at <= (exp + 1) * 1000 + 600, `at the latest at exp + graceSec (${c.at - (exp + 1) * 1000} ms from it)`);
      t.same(up.received, [], 'the refresh message never reached the upstream');
      await eventually(() => upstream.open === 0 && gw.gateway.connections === 0, 2000, 'both sides closed');
    });
  }

  await t.test("a message that only looks like a refresh (other type) is relayed as usual", async (t) => {
    const { up, gw } = await relaySetup(t, refresh);
    const ws = await connect(t, gw.url('/chat'), { headers: bearer(hs256({ sub: 'alice' })) });
    const text = JSON.stringify({ type: 'refreshed', token: 'abc' });
    ws.send(text);
    t.equal((await nextMessage(ws)).data.toString(), text);
    t.same(up.received, [text]);
  });
});

// ---------------------------------------------------------------------------------------------------------
// firstMessageAuth

t.test('firstMessageAuth', async (t) => {
  await t.test('nothing reaches the upstream before a valid auth message; then in order, with its identity', async (t) => {
    const { upstream, up, gw } = await relaySetup(t, { firstMessageAuth: { timeoutMs: 500 } });
    const ws = await connect(t, gw.url('/chat?room=7'));
    await sleep(200);
    t.equal(upstream.tcp, 0, 'no TCP connection to the upstream before the auth message');
    const token = hs256({ sub: 'bob', role: 'tester' });
    const echoes = messages(ws, 3);
    ws.send(JSON.stringify({ type: 'auth', token }));
    ws.send('m1');
    ws.send('m2');
    ws.send('m3');
    t.same(await within(echoes, 3000, 'three echoes'), ['m1', 'm2', 'm3'], 'messages right after the auth message, in order');
    t.same(up.received, ['m1', 'm2', 'm3'], 'the auth message was never forwarded');
    t.equal(upstream.seen.length, 1, 'one upstream connection');
    const seen = upstream.seen[0]!;
    t.equal(seen.headers['x-auth-subject'], 'bob', "the upstream gets the auth message's subject");
    t.match(JSON.parse(Buffer.from(String(seen.headers['x-auth-claims']), 'base64url').toString()), { sub: 'bob', role: 'tester' });
    t.ok(seen.headers['x-request-id'], 'X-Request-Id');
    t.notOk(everythingSeen(upstream).includes(token), 'the token is nowhere in what the upstream saw');
    t.equal(seen.url, '/chat?room=7', 'path and query forwarded');
    // The first-message deadline no longer applies.
    await sleep(600);
    t.equal(ws.readyState, WebSocket.OPEN, 'still open past timeoutMs');
    ws.send('m4');
    t.equal((await nextMessage(ws)).data.toString(), 'm4');
  });

  await t.test('a client-sent identity header cannot slip through the anonymous upgrade', async (t) => {
    const { upstream, gw } = await relaySetup(t, { firstMessageAuth: { timeoutMs: 500 } });
    const ws = await connect(t, gw.url('/chat'), { headers: { 'X-Auth-Subject': 'mallory' } });
    ws.send(JSON.stringify({ type: 'auth', token: hs256({ sub: 'bob' }) }));
    ws.send('x');
    await nextMessage(ws);
    t.equal(upstream.seen[0]?.headers['x-auth-subject'], 'bob');
  });

  const bad: [string, () => string | Buffer][] = [
    ['a first message that is not JSON', () => 'hello there'],
    ['a first message of the wrong type', () => JSON.stringify({ type: 'hello', token: hs256({ sub: 'bob' }) })],
    ['an auth message without a token', () => JSON.stringify({ type: 'auth' })],
    ['an auth message with an invalid token', () => JSON.stringify({ type: 'auth', token: hs256({ sub: 'bob' }, 'another-secret-0123456789abcdef-0123456') })],
    ['an auth message with an expired token', () => JSON.stringify({ type: 'auth', token: hs256({ sub: 'bob', exp: expIn(-10) }) })],
    ['a binary first message holding a valid auth message', () => Buffer.from(JSON.stringify({ type: 'auth', token: hs256({ sub: 'bob' }) }))],
  ];
  for (const [name, message] of bad) {
    await t.test(`${name}: 4401 at once, the upstream never contacted`, async (t) => {
      // A long deadline, so that "at once" is told apart from the timeout.
      const { upstream, gw } = await relaySetup(t, { firstMessageAuth: { timeoutMs: 3000 } });
      const ws = await connect(t, gw.url('/chat'));
      const closed = closeOf(ws);
      const sent = Date.now();
      ws.send(message());
      ws.send('follow-up');
      const c = await within(closed, 2500, 'the 4401 close');
      t.equal(c.code, 4401, `4401 (reason '${c.reason}')`);
      t.ok(c.at - sent < 1000, `at once (${c.at - sent} ms)`);
      await sleep(100);
      t.equal(upstream.tcp, 0, 'the upstream was never contacted');
      await eventually(() => gw.gateway.connections === 0, 2000, 'connection released');
    });
  }

  await t.test('a valid auth message but the upstream refuses: the client is closed (1011), nothing left open', async (t) => {
    const closedPort = await freePort();
    const gw = await relayGateway(t, `ws://127.0.0.1:${closedPort}`, { firstMessageAuth: { timeoutMs: 500 } });
    const ws = await connect(t, gw.url('/chat'));
    const closed = closeOf(ws);
    ws.send(JSON.stringify({ type: 'auth', token: hs256({ sub: 'bob' }) }));
    const c = await within(closed, 3000, 'the close');
    t.equal(c.code, 1011, `1011 (reason '${c.reason}')`);
    await eventually(() => gw.gateway.connections === 0, 2000, 'connection released');
  });

  await t.test('no message: 4401 within timeoutMs (500)', async (t) => {
    const { upstream, gw } = await relaySetup(t, { firstMessageAuth: { timeoutMs: 500 } });
    const ws = await connect(t, gw.url('/chat'));
    const opened = Date.now();
    const c = await within(closeOf(ws), 2000, 'the 4401 close');
    t.equal(c.code, 4401, `4401 (reason '${c.reason}')`);
    const elapsed = c.at - opened;
    t.ok(elapsed >= 400, `not before timeoutMs (${elapsed} ms)`);
    t.ok(elapsed <= 900, `at timeoutMs (${elapsed} ms)`);
    t.equal(upstream.tcp, 0, 'the upstream was never contacted');
    await eventually(() => gw.gateway.connections === 0, 2000, 'connection released');
  });

  await t.test('the identity from the auth message is the one that expires', async (t) => {
    const { up, gw } = await relaySetup(t, { firstMessageAuth: { timeoutMs: 500 } });
    const ws = await connect(t, gw.url('/chat'));
    const exp = expIn(1);
    ws.send(JSON.stringify({ type: 'auth', token: hs256({ sub: 'bob', exp }) }));
    ws.send('x');
    await nextMessage(ws);
    const c = await within(closeOf(ws), 3000, 'the expiry close');
    t.same({ code: c.code, reason: c.reason }, { code: 1008, reason: 'token expired' });
    t.ok(c.at >= exp * 1000 - 50 && c.at <= exp * 1000 + 600, `at exp (${c.at - exp * 1000} ms from it)`);
    await eventually(() => up.closes.length === 1, 2000, 'the upstream side closed');
  });
});

// ---------------------------------------------------------------------------------------------------------
// rejectMode "close"

t.test('rejectMode "close"', async (t) => {
  for (const mode of ['relay', 'pipe'] as const) {
    await t.test(`on a ${mode} route`, async (t) => {
      const upstream = await startEchoUpstream(t);
      const gw = await startGateway(t, {
        authenticators: { jwt: jwtAuth() },
        routes: [{ path: '/chat', mode, auth: ['jwt'], upstream: upstream.url, rejectMode: 'close', origins: ['https://app.example'] }],
      });

      // Without a token: the upgrade completes, then 4401 at once.
      const noToken = new WebSocket(gw.url('/chat'));
      t.teardown(() => noToken.terminate());
      noToken.on('error', () => {});
      let opened = false;
      noToken.once('open', () => (opened = true));
      const c1 = await within(closeOf(noToken), 2000, 'the 4401 close');
      t.ok(opened, 'the upgrade completed (101)');
      t.same({ code: c1.code, reason: c1.reason }, { code: 4401, reason: 'credentials required' });

      // A bad token: 4401 with the rejection's description.
      const badToken = new WebSocket(gw.url('/chat'), { headers: bearer(hs256({ sub: 'alice' }, 'another-secret-0123456789abcdef-0123456')) });
      t.teardown(() => badToken.terminate());
      badToken.on('error', () => {});
      const c2 = await within(closeOf(badToken), 2000, 'the 4401 close');
      t.same({ code: c2.code, reason: c2.reason }, { code: 4401, reason: 'signature invalid' });

      // A valid token from a disallowed origin: 4403.
      const badOrigin = new WebSocket(gw.url('/chat'), { headers: { ...bearer(hs256({ sub: 'alice' })), Origin: 'https://evil.example' } });
      t.teardown(() => badOrigin.terminate());
      badOrigin.on('error', () => {});
      let originOpened = false;
      badOrigin.once('open', () => (originOpened = true));
      const c3 = await within(closeOf(badOrigin), 2000, 'the 4403 close');
      t.ok(originOpened, 'the upgrade completed (101)');
      t.same({ code: c3.code, reason: c3.reason }, { code: 4403, reason: 'origin not allowed' });

      await sleep(100);
      t.equal(upstream.tcp, 0, 'nothing reached the upstream');
      t.equal(upstream.seen.length, 0);

      // The route still works for a good client.
      const ok = await connect(t, gw.url('/chat'), { headers: { ...bearer(hs256({ sub: 'alice' })), Origin: 'https://app.example' } });
      ok.send('fine');
      t.equal((await nextMessage(ok)).data.toString(), 'fine');
      t.equal(upstream.seen.length, 1);
    });
  }
});

t.test('rejectMode "close" on a relay route whose upstream refuses: the upgrade completes and closes 1011 (SPEC 9: any other status)', async (t) => {
  const closedPort = await freePort();
  const gw = await relayGateway(t, `ws://127.0.0.1:${closedPort}`, { rejectMode: 'close' });
  const ws = new WebSocket(gw.url('/chat'), { headers: bearer(hs256({ sub: 'alice' })) });
  t.teardown(() => ws.terminate());
  ws.on('error', () => {});
  let status: number | undefined;
  let opened = false;
  ws.once('open', () => (opened = true));
  ws.once('unexpected-response', (_req, res) => {
    status = res.statusCode;
    res.resume();
    ws.terminate();
  });
  const c = await within(closeOf(ws), 3000, 'an answer');
  t.equal(status, undefined, `no HTTP status answered (got ${status})`);
  t.ok(opened, 'the upgrade completed (101)');
  t.same({ code: c.code, reason: c.reason }, { code: 1011, reason: 'upstream unavailable' }, `closed 1011 'upstream unavailable' (got ${c.code} '${c.reason}')`);
});

// ---------------------------------------------------------------------------------------------------------
// Leaks

t.test('no fd or connection leak after 500 relay connections (clean closes, client and upstream terminations)', async (t) => {
  const upstream = await startEchoUpstream(t);
  tap(upstream); // `die` → the upstream terminates that connection
  const gw = await relayGateway(t, upstream.url, { heartbeatMs: 1000 });
  const token = hs256({ sub: 'alice' });
  const problems: string[] = [];

  const run = async (i: number) => {
    const ws = new WebSocket(gw.url('/chat'), { headers: bearer(token) });
    ws.on('error', () => {});
    const closed = closeOf(ws);
    await within(once(ws, 'open'), 3000, `open of #${i}`);
    const kind = i % 5;
    const text = kind === 4 ? 'die' : `m${i}`;
    ws.send(text);
    const echoed = await within(Promise.race([nextMessage(ws), closed.then(() => undefined)]), 3000, `echo of #${i}`);
    if (String(echoed?.data) !== text) problems.push(`#${i}: echo ${String(echoed?.data)} for ${text}`);
    if (kind === 3) return void ws.terminate();
    if (kind !== 4) ws.close(1000, 'bye');
    const c = await within(closed, 3000, `close of #${i}`);
    const want = kind === 4 ? 1011 : 1000;
    if (c.code !== want) problems.push(`#${i}: closed ${c.code}, expected ${want}`);
  };
  const churn = async (from: number, n: number) => {
    for (let i = from; i < from + n; i += 25) await Promise.all(Array.from({ length: Math.min(25, from + n - i) }, (_, k) => run(i + k)));
  };

  // Warm up lazily created state before the baseline.
  await churn(0, 25);
  await eventually(() => gw.gateway.connections === 0 && upstream.open === 0, 5000, 'warm-up connections closed');
  await sleep(50);
  const baseline = openFds();

  await churn(25, 500);
  t.same(problems, [], 'every connection echoed and closed as expected');

  await eventually(() => gw.gateway.connections === 0, 5000, 'gateway.connections back to 0').catch(() => {});
  t.equal(gw.gateway.connections, 0, 'gateway.connections 0');
  await eventually(() => upstream.open === 0, 5000, 'upstream sockets closed').catch(() => {});
  t.equal(upstream.open, 0, 'upstream.open 0');
  t.equal(upstream.wss.clients.size, 0, 'no upstream WebSocket left');
  await eventually(() => openFds() <= baseline + 3, 5000, 'fds back near the baseline').catch(() => {});
  const after = openFds();
  t.ok(after <= baseline + 3, `fds back within 3 of the baseline (${baseline} → ${after})`);
  t.equal(upstream.tcp, 525, 'one upstream connection per client, no retries');
});

t.test('rejectMode "close" never echoes a refused token entry, whatever the order offered (SPEC 2.1)', async (t) => {
  const upstream = await startEchoUpstream(t);
  const gw = await startGateway(t, {
    authenticators: { jwt: jwtAuth({ from: ['protocol:bearer.'] }) },
    routes: [{ path: '/chat', mode: 'relay', auth: ['jwt'], upstream: upstream.url, rejectMode: 'close' }],
  });
  for (const offered of [['bearer.bad-token-0123', 'bearer'], ['bearer', 'bearer.bad-token-0123']]) {
    const ws = new WebSocket(gw.url('/chat'), offered);
    t.teardown(() => ws.terminate());
    const [code, reason] = (await once(ws, 'close')) as [number, Buffer];
    t.equal(ws.protocol, 'bearer', `offered ${offered.join(', ')}: the marker is answered`);
    t.same([code, String(reason)], [4401, 'token malformed']);
  }
  t.notOk(gw.logText().includes('bad-token-0123'), 'nor logged');
});
