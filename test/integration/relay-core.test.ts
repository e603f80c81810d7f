import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import { connectUpstream, type ConnectUpstreamOptions, type UpstreamOutcome } from '../../src/handoff/connect-upstream.js';
import { CLOSE_GRACE_MS, relay, type Relay, type RelayOptions } from '../../src/handoff/relay.js';
import { eventually, freePort, sleep } from '../helpers/net.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';

const CONNECT: ConnectUpstreamOptions = { headers: {}, protocols: [], maxPayload: 16 * 1024 * 1024, timeoutMs: 2000, tlsVerify: true };

interface Closed {
  code: number;
  reason: string;
}

function closed(ws: WebSocket): Promise<Closed> {
  if (ws.readyState === WebSocket.CLOSED) return Promise.reject(new Error('already closed'));
  return new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
}

function nextMessage(ws: WebSocket): Promise<{ data: Buffer; isBinary: boolean }> {
  return new Promise((resolve) => ws.once('message', (data: RawData, isBinary) => resolve({ data: data as Buffer, isBinary })));
}

/** Open TCP connections of a server, counted from its side. */
async function connections(server: NetServer): Promise<number> {
  return new Promise((resolve, reject) => server.getConnections((err, n) => (err ? reject(err) : resolve(n))));
}

/** Waits (up to 2 s) until the server has no TCP connection left; resolves with the count at the end. */
async function drained(server: NetServer): Promise<number> {
  const deadline = Date.now() + 2000;
  let n = await connections(server);
  while (n > 0 && Date.now() < deadline) {
    await sleep(20);
    n = await connections(server);
  }
  return n;
}

async function listen<S extends NetServer>(t: Test, server: S): Promise<S & { port: number }> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    return new Promise((r) => server.close(r));
  });
  return Object.assign(server, { port: (server.address() as AddressInfo).port });
}

/** The real thing end to end: peer ⇄ [clientSide | relay | upstreamWs] ⇄ upstreamSide (echo server). */
interface Rig {
  /** The end user's WebSocket. */
  peer: WebSocket;
  /** The gateway's accepted client connection (server side of `peer`). */
  clientSide: WebSocket;
  /** The gateway's connection to the upstream (from connectUpstream). */
  upstreamWs: WebSocket;
  /** The upstream server's end of `upstreamWs`. */
  upstreamSide: WebSocket;
  upstream: EchoUpstream;
  front: WebSocketServer;
  /** Listener counts on clientSide and upstreamWs before the relay started (ws's server adds its own). */
  baseline: number[];
  /** The HTTP server under `front`. */
  frontHttp: NetServer & { port: number };
  relay: Relay;
}

async function rig(t: Test, options: RelayOptions = {}, echo = true, limits: { front?: number; upstream?: number } = {}): Promise<Rig> {
  const upstream = await startEchoUpstream(t);
  if (!echo) upstream.wss.removeAllListeners('connection');
  const frontHttp = await listen(t, createHttpServer());
  const front = new WebSocketServer({ server: frontHttp, ...(limits.front !== undefined && { maxPayload: limits.front }) });
  t.teardown(() => {
    for (const ws of front.clients) ws.terminate();
    return new Promise((r) => front.close(r));
  });
  const accepted = once(front, 'connection') as Promise<[WebSocket, IncomingMessage]>;
  const peer = new WebSocket(`ws://127.0.0.1:${frontHttp.port}/`);
  peer.on('error', () => {});
  t.teardown(() => peer.terminate());
  const [clientSide] = await accepted;
  clientSide.pause(); // as the gateway would, until the relay starts
  const upstreamAccepted = once(upstream.wss, 'connection') as Promise<[WebSocket, IncomingMessage]>;
  const outcome = await connectUpstream(`${upstream.url}/room`, { ...CONNECT, maxPayload: limits.upstream ?? CONNECT.maxPayload });
  if (outcome.kind !== 'open') throw new Error(`upstream not open: ${outcome.kind}`);
  const [upstreamSide] = await upstreamAccepted;
  upstreamSide.on('error', () => {});
  if (peer.readyState !== WebSocket.OPEN) await once(peer, 'open');
  const baseline = [clientSide, outcome.ws].map(relayListeners);
  return { peer, clientSide, upstreamWs: outcome.ws, upstreamSide, upstream, front, frontHttp, baseline, relay: relay(clientSide, outcome.ws, options) };
}

function relayListeners(ws: WebSocket): number {
  return ws.listenerCount('message') + ws.listenerCount('close') + ws.listenerCount('error');
}

/** Both sockets of the relay closed, listeners gone, no TCP connection left on either server. */
async function assertAllClosed(t: Test, r: Rig): Promise<void> {
  await r.relay.done;
  t.equal(r.clientSide.readyState, WebSocket.CLOSED, 'client side closed');
  t.equal(r.upstreamWs.readyState, WebSocket.CLOSED, 'upstream side closed');
  t.same([r.clientSide, r.upstreamWs].map(relayListeners), r.baseline, 'no relay listener left');
  await eventually(() => r.upstream.open === 0, 3000, 'upstream sockets closed');
  await eventually(() => r.front.clients.size === 0, 3000, 'front sockets closed');
  t.equal(await drained(r.frontHttp), 0, 'no TCP connection left at the front');
}

t.test('messages pass unchanged both ways: text, binary, empty, 5 MiB', async (t) => {
  const r = await rig(t);
  const upstreamGot: { data: Buffer; isBinary: boolean }[] = [];
  r.upstreamSide.on('message', (data: RawData, isBinary) => upstreamGot.push({ data: data as Buffer, isBinary }));

  const cases: [string, string | Buffer][] = [
    ['text', 'hello ✓ wörld'],
    ['binary', Buffer.from([0, 1, 2, 0xff, 0xfe])],
    ['empty text', ''],
    ['empty binary', Buffer.alloc(0)],
    ['5 MiB binary', randomBytes(5 * 1024 * 1024)],
    ['5 MiB text', 'x'.repeat(5 * 1024 * 1024)],
  ];
  for (const [name, payload] of cases) {
    const reply = nextMessage(r.peer);
    r.peer.send(payload);
    const { data, isBinary } = await reply;
    const sent = Buffer.from(payload);
    t.equal(isBinary, typeof payload !== 'string', `${name}: isBinary kept on the way back`);
    t.ok(data.equals(sent), `${name}: echoed unchanged`);
    const there = upstreamGot.shift()!;
    t.equal(there.isBinary, typeof payload !== 'string', `${name}: isBinary kept on the way in`);
    t.ok(there.data.equals(sent), `${name}: arrived upstream unchanged`);
  }

  // Upstream-initiated, not an echo.
  const pushed = nextMessage(r.peer);
  r.upstreamSide.send(Buffer.from('from upstream'), { binary: false });
  const got = await pushed;
  t.equal(got.isBinary, false);
  t.equal(got.data.toString(), 'from upstream');

  r.peer.close();
  await assertAllClosed(t, r);
});

t.test('a fragmented message arrives whole', async (t) => {
  const r = await rig(t, {}, false);
  const part1 = randomBytes(70000);
  const part2 = randomBytes(3);
  const part3 = randomBytes(100000);
  let arrived = nextMessage(r.upstreamSide);
  r.peer.send(part1, { fin: false });
  r.peer.send(part2, { fin: false });
  r.peer.send(part3, { fin: true });
  let m = await arrived;
  t.equal(m.isBinary, true);
  t.ok(m.data.equals(Buffer.concat([part1, part2, part3])), 'binary fragments reassembled into one message');

  arrived = nextMessage(r.peer);
  r.upstreamSide.send('frag', { fin: false, binary: false });
  r.upstreamSide.send('mented ✓', { fin: true, binary: false });
  m = await arrived;
  t.equal(m.isBinary, false);
  t.equal(m.data.toString(), 'fragmented ✓', 'text fragments reassembled the other way');

  r.relay.close(1000, 'bye');
  await assertAllClosed(t, r);
});

t.test('interceptClient consumes messages; onBytes counts what is relayed', async (t) => {
  const bytes = { in: 0, out: 0 };
  const seen: string[] = [];
  const r = await rig(t, {
    interceptClient: (data, isBinary) => {
      seen.push(`${isBinary ? 'b' : 't'}:${data.toString()}`);
      return data.toString() === 'refresh';
    },
    onBytes: (direction, n) => (bytes[direction] += n),
  });
  const upstreamGot: string[] = [];
  r.upstreamSide.on('message', (data) => upstreamGot.push(String(data)));
  r.peer.send('refresh');
  r.peer.send('hello');
  const echo = await nextMessage(r.peer);
  t.equal(echo.data.toString(), 'hello');
  t.same(upstreamGot, ['hello'], 'the intercepted message was not forwarded');
  t.same(seen, ['t:refresh', 't:hello']);
  t.same(bytes, { in: 5, out: 5 });
  r.relay.close(1000, '');
  await assertAllClosed(t, r);
});

t.test('an interceptor that throws closes the relay with 1011', async (t) => {
  const r = await rig(t, {
    interceptClient: () => {
      throw new Error('boom');
    },
  });
  const peerClosed = closed(r.peer);
  const upstreamClosed = closed(r.upstreamSide);
  r.peer.send('x');
  t.same(await peerClosed, { code: 1011, reason: 'internal error' });
  t.equal((await upstreamClosed).code, 1000);
  await assertAllClosed(t, r);
});

t.test('backpressure: a slow upstream pauses reading from the client, memory stays bounded', async (t) => {
  const highWaterMark = 512 * 1024;
  const r = await rig(t, { highWaterMark });
  r.upstreamSide.pause(); // the upstream stops reading

  let maxBuffered = 0;
  let pauses = 0;
  const pause = r.clientSide.pause.bind(r.clientSide);
  r.clientSide.pause = () => {
    pauses++;
    pause();
  };
  // Runs after the relay's own listener, i.e. right after each send to the upstream.
  const sample = () => (maxBuffered = Math.max(maxBuffered, r.upstreamWs.bufferedAmount));
  r.clientSide.on('message', sample);

  const size = 16 * 1024;
  let sent = 0;
  while (!r.clientSide.isPaused && sent < 8192) {
    for (let i = 0; i < 64; i++) {
      const msg = Buffer.alloc(size, 0);
      msg.writeUInt32BE(sent++);
      r.peer.send(msg);
    }
    await sleep(5);
  }
  t.ok(r.clientSide.isPaused, `client side paused after ${sent} messages (${(sent * size) >> 20} MiB)`);
  // Keep the peer writing for a while: nothing more may pile up at the gateway.
  for (let i = 0; i < 256; i++) {
    const msg = Buffer.alloc(size, 0);
    msg.writeUInt32BE(sent++);
    r.peer.send(msg);
  }
  await sleep(300);
  t.ok(r.clientSide.isPaused, 'still paused while the upstream does not read');
  t.ok(pauses >= 1, 'ws.pause() was called');
  t.ok(maxBuffered > highWaterMark, 'the high-water mark was reached');
  t.ok(maxBuffered < 2 * highWaterMark, `upstream bufferedAmount peaked at ${maxBuffered}, under 2× highWaterMark`);
  t.ok(r.upstreamWs.bufferedAmount < 2 * highWaterMark, 'and is bounded now');

  // The upstream reads again (and echoes): everything arrives, in order, and reading resumes.
  let echoed = 0;
  let inOrder = true;
  r.peer.on('message', (data: RawData) => {
    if ((data as Buffer).readUInt32BE(0) !== echoed) inOrder = false;
    echoed++;
  });
  r.upstreamSide.resume();
  await eventually(() => echoed === sent, 20000, 'all messages echoed');
  t.ok(inOrder, `all ${sent} messages relayed in order`);
  t.equal(r.clientSide.isPaused, false, 'client side resumed');
  t.equal(r.upstreamWs.isPaused, false, 'upstream side not left paused');

  r.clientSide.off('message', sample);
  r.peer.close(1000);
  await assertAllClosed(t, r);
});

t.test('backpressure the other way: a client that does not read pauses the upstream', async (t) => {
  const highWaterMark = 256 * 1024;
  const r = await rig(t, { highWaterMark });
  r.peer.pause();
  let maxBuffered = 0;
  const sample = () => (maxBuffered = Math.max(maxBuffered, r.clientSide.bufferedAmount));
  r.upstreamWs.on('message', sample);
  const chunk = Buffer.alloc(8 * 1024, 7);
  let sent = 0;
  while (!r.upstreamWs.isPaused && sent < 16384) {
    for (let i = 0; i < 64; i++, sent++) r.upstreamSide.send(chunk);
    await sleep(5);
  }
  t.ok(r.upstreamWs.isPaused, 'upstream side paused');
  t.ok(maxBuffered < 2 * highWaterMark, `client bufferedAmount peaked at ${maxBuffered}`);
  let got = 0;
  r.peer.on('message', () => got++);
  r.peer.resume();
  await eventually(() => got === sent, 20000, 'all messages delivered');
  t.equal(r.upstreamWs.isPaused, false, 'upstream side resumed');
  r.upstreamWs.off('message', sample);
  r.upstreamSide.close(1000);
  await assertAllClosed(t, r);
});

t.test('close propagation', async (t) => {
  const cases: {
    name: string;
    act: (r: Rig) => void;
    /** Whose close is observed: the far end of the side that did not start. */
    observe: 'peer' | 'upstreamSide';
    expect: Closed;
  }[] = [
    { name: 'client 4001 x → upstream 4001 x', act: (r) => r.peer.close(4001, 'x'), observe: 'upstreamSide', expect: { code: 4001, reason: 'x' } },
    { name: 'client 1000 → upstream 1000', act: (r) => r.peer.close(1000, 'done'), observe: 'upstreamSide', expect: { code: 1000, reason: 'done' } },
    { name: 'client 1001 → upstream 1001', act: (r) => r.peer.close(1001, 'tab closed'), observe: 'upstreamSide', expect: { code: 1001, reason: 'tab closed' } },
    { name: 'client 1008 → upstream 1008', act: (r) => r.peer.close(1008, 'policy'), observe: 'upstreamSide', expect: { code: 1008, reason: 'policy' } },
    { name: 'client no status (1005) → upstream close without code', act: (r) => r.peer.close(), observe: 'upstreamSide', expect: { code: 1005, reason: '' } },
    { name: 'client dies (1006) → upstream 1001 client gone', act: (r) => r.peer.terminate(), observe: 'upstreamSide', expect: { code: 1001, reason: 'client gone' } },
    { name: 'upstream 1001 bye → client 1001 bye', act: (r) => r.upstreamSide.close(1001, 'bye'), observe: 'peer', expect: { code: 1001, reason: 'bye' } },
    { name: 'upstream 4999 → client 4999', act: (r) => r.upstreamSide.close(4999, 'custom ✓'), observe: 'peer', expect: { code: 4999, reason: 'custom ✓' } },
    { name: 'upstream 3000 → client 3000', act: (r) => r.upstreamSide.close(3000, ''), observe: 'peer', expect: { code: 3000, reason: '' } },
    { name: 'upstream 1011 → client 1011', act: (r) => r.upstreamSide.close(1011, 'oops'), observe: 'peer', expect: { code: 1011, reason: 'oops' } },
    { name: 'upstream 1014 → client 1014', act: (r) => r.upstreamSide.close(1014, 'bad gw'), observe: 'peer', expect: { code: 1014, reason: 'bad gw' } },
    { name: 'upstream no status (1005) → client close without code', act: (r) => r.upstreamSide.close(), observe: 'peer', expect: { code: 1005, reason: '' } },
    { name: 'upstream dies (1006) → client 1011 upstream error', act: (r) => r.upstreamSide.terminate(), observe: 'peer', expect: { code: 1011, reason: 'upstream error' } },
  ];
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const r = await rig(t);
      const observed = closed(r[c.observe]);
      const started = Date.now();
      c.act(r);
      t.same(await observed, c.expect);
      await assertAllClosed(t, r);
      t.ok(Date.now() - started < 2000, 'promptly');
    });
  }
});

t.test('messages sent before a close arrive before it', async (t) => {
  const r = await rig(t, {}, false);
  const got: string[] = [];
  r.upstreamSide.on('message', (data) => got.push(String(data)));
  const upstreamClosed = closed(r.upstreamSide);
  for (let i = 0; i < 100; i++) r.peer.send(`m${i}`);
  r.peer.close(4000, 'last');
  t.same(await upstreamClosed, { code: 4000, reason: 'last' });
  t.equal(got.length, 100);
  t.equal(got[99], 'm99');
  await assertAllClosed(t, r);
});

t.test('relay.close(): the client gets (code, reason), the upstream 1000, or 1001 for 1001', async (t) => {
  await t.test('1008 token expired', async (t) => {
    const r = await rig(t);
    const peerClosed = closed(r.peer);
    const upstreamClosed = closed(r.upstreamSide);
    r.relay.close(1008, 'token expired');
    t.same(await peerClosed, { code: 1008, reason: 'token expired' });
    t.equal((await upstreamClosed).code, 1000);
    await assertAllClosed(t, r);
    r.relay.close(1000, 'again'); // harmless afterwards
  });
  await t.test('4401', async (t) => {
    const r = await rig(t);
    const peerClosed = closed(r.peer);
    const upstreamClosed = closed(r.upstreamSide);
    r.relay.close(4401, 'token expired');
    t.same(await peerClosed, { code: 4401, reason: 'token expired' });
    t.equal((await upstreamClosed).code, 1000);
    await assertAllClosed(t, r);
  });
  await t.test('1001 going away', async (t) => {
    const r = await rig(t);
    const peerClosed = closed(r.peer);
    const upstreamClosed = closed(r.upstreamSide);
    r.relay.close(1001, 'gateway shutting down');
    t.same(await peerClosed, { code: 1001, reason: 'gateway shutting down' });
    t.equal((await upstreamClosed).code, 1001);
    await assertAllClosed(t, r);
  });
  await t.test('an unsendable code and an over-long reason do not throw', async (t) => {
    const r = await rig(t);
    const peerClosed = closed(r.peer);
    r.relay.close(1006, 'é'.repeat(100));
    const c = await peerClosed;
    t.equal(c.code, 1011);
    t.equal(c.reason, 'é'.repeat(61), 'reason cut to 123 bytes on a character boundary');
    await assertAllClosed(t, r);
  });
  await t.test('while paused by backpressure', async (t) => {
    const r = await rig(t, { highWaterMark: 1024 });
    r.upstreamSide.pause();
    for (let n = 0; !r.clientSide.isPaused && n < 2048; n += 64) {
      for (let i = 0; i < 64; i++) r.peer.send(Buffer.alloc(64 * 1024));
      await sleep(5);
    }
    t.ok(r.clientSide.isPaused, 'paused');
    t.ok(r.peer.bufferedAmount > 0, 'the peer has more queued behind its close frame');
    const peerClosed = closed(r.peer);
    const started = Date.now();
    r.upstreamSide.resume();
    r.relay.close(1008, 'token expired');
    t.same(await peerClosed, { code: 1008, reason: 'token expired' });
    await assertAllClosed(t, r);
    t.ok(Date.now() - started < 2000, 'the paused side was resumed to complete its close handshake');
  });
});

t.test(`a side that never completes the close handshake is terminated after ${CLOSE_GRACE_MS} ms`, async (t) => {
  const r = await rig(t);
  r.peer.pause(); // never reads the close frame, never answers it
  const started = Date.now();
  r.upstreamSide.close(1000, 'bye');
  await r.relay.done;
  const took = Date.now() - started;
  t.ok(took >= CLOSE_GRACE_MS - 100 && took < CLOSE_GRACE_MS + 1500, `terminated after ${took} ms`);
  await assertAllClosed(t, r);
});

t.test('a socket already closed when the relay starts closes the other side', async (t) => {
  const r0 = await rig(t);
  // A fresh pair: close the upstream before relaying.
  const upstream = r0.upstream;
  const upstreamAccepted = once(upstream.wss, 'connection') as Promise<[WebSocket]>;
  const outcome = await connectUpstream(upstream.url, CONNECT);
  if (outcome.kind !== 'open') throw new Error('not open');
  const [side] = await upstreamAccepted;
  outcome.ws.resume();
  const gone = once(outcome.ws, 'close');
  side.terminate();
  await gone;
  const peer2 = new WebSocket(`ws://127.0.0.1:${r0.frontHttp.port}/`);
  peer2.on('error', () => {});
  t.teardown(() => peer2.terminate());
  const accepted = once(r0.front, 'connection') as Promise<[WebSocket]>;
  const [clientSide] = await accepted;
  const peerClosed = closed(peer2);
  const rel = relay(clientSide, outcome.ws);
  t.same(await peerClosed, { code: 1011, reason: 'upstream error' });
  await rel.done;
  r0.relay.close(1000, '');
  await r0.relay.done;
});

t.test('a caller-set binaryType does not change what is relayed', async (t) => {
  for (const binaryType of ['fragments', 'arraybuffer'] as const) {
    await t.test(binaryType, async (t) => {
      const r = await rig(t, {}, false);
      r.clientSide.binaryType = binaryType;
      r.upstreamWs.binaryType = binaryType;
      const payload = randomBytes(200 * 1024);
      const there = nextMessage(r.upstreamSide);
      r.peer.send(payload);
      t.ok((await there).data.equals(payload), 'client → upstream');
      const back = nextMessage(r.peer);
      r.upstreamSide.send('text ✓');
      const m = await back;
      t.equal(m.isBinary, false);
      t.equal(m.data.toString(), 'text ✓', 'upstream → client');
      r.relay.close(1000, '');
      await assertAllClosed(t, r);
    });
  }
});

t.test('a message over maxPayload: ws closes that side with 1009, the relay closes the other', async (t) => {
  await t.test('from the client', async (t) => {
    const r = await rig(t, {}, true, { front: 1024 });
    const peerClosed = closed(r.peer);
    const upstreamClosed = closed(r.upstreamSide);
    r.peer.send(Buffer.alloc(2048));
    t.equal((await peerClosed).code, 1009, 'the client gets 1009 from ws');
    t.same(await upstreamClosed, { code: 1001, reason: 'client gone' });
    await assertAllClosed(t, r);
  });
  await t.test('from the upstream', async (t) => {
    const r = await rig(t, {}, true, { upstream: 1024 });
    const peerClosed = closed(r.peer);
    const upstreamClosed = closed(r.upstreamSide);
    r.upstreamSide.send(Buffer.alloc(2048));
    t.equal((await upstreamClosed).code, 1009, 'the upstream gets 1009 from ws');
    t.same(await peerClosed, { code: 1011, reason: 'upstream error' });
    await assertAllClosed(t, r);
  });
});

t.test('relay() refuses a socket still connecting', async (t) => {
  const upstream = await startEchoUpstream(t);
  const a = new WebSocket(upstream.url);
  const b = new WebSocket(upstream.url);
  for (const ws of [a, b]) {
    ws.on('error', () => {});
    t.teardown(() => ws.terminate());
  }
  t.throws(() => relay(a, b), TypeError);
});

t.test('connectUpstream: open, headers and subprotocol', async (t) => {
  const upstream = await startEchoUpstream(t, { handleProtocols: (offered) => (offered.has('v2') ? 'v2' : false) });
  // Greets at once: the returned socket is paused, so the greeting is not lost before someone listens.
  upstream.wss.on('connection', (ws: WebSocket) => ws.send('greeting'));
  const outcome = await connectUpstream(`${upstream.url}/chat?room=1`, {
    ...CONNECT,
    protocols: ['v1', 'v2'],
    headers: {
      'x-auth-subject': 'alice',
      'X-Forwarded-For': ['10.0.0.1', '10.0.0.2'],
      'x-absent': undefined,
      Host: 'evil.example',
      Connection: 'keep-alive, Upgrade',
      Upgrade: 'h2c',
      'Sec-WebSocket-Key': 'AAAAAAAAAAAAAAAAAAAAAA==',
      'sec-websocket-version': '8',
      'sec-websocket-extensions': 'permessage-deflate',
      'sec-websocket-protocol': 'evil',
      'transfer-encoding': 'chunked',
    },
  });
  t.equal(outcome.kind, 'open');
  if (outcome.kind !== 'open') return;
  const ws = outcome.ws;
  t.teardown(() => ws.terminate());
  t.equal(ws.protocol, 'v2', "the upstream's selection");
  t.equal(ws.isPaused, true, 'handed over paused');
  const seen = upstream.seen[0]!;
  t.equal(seen.url, '/chat?room=1');
  t.equal(seen.protocol, 'v2');
  t.equal(seen.headers['x-auth-subject'], 'alice');
  t.equal(seen.headers['x-forwarded-for'], '10.0.0.1, 10.0.0.2');
  t.notOk('x-absent' in seen.headers);
  t.equal(seen.headers.host, `127.0.0.1:${upstream.port}`, "ws's own Host");
  t.equal(seen.headers.connection, 'Upgrade');
  t.equal(seen.headers.upgrade, 'websocket');
  t.not(seen.headers['sec-websocket-key'], 'AAAAAAAAAAAAAAAAAAAAAA==');
  t.equal(seen.headers['sec-websocket-version'], '13');
  t.equal(seen.headers['sec-websocket-extensions'], undefined, 'no permessage-deflate offered');
  t.equal(seen.headers['sec-websocket-protocol'], 'v1,v2');
  t.equal(seen.headers['transfer-encoding'], undefined);
  const left = ['error', 'close', 'open', 'unexpected-response'].map((event) => ws.listenerCount(event));
  t.same(left, [0, 0, 0, 0], 'no listener of connectUpstream left');

  await sleep(50);
  const greeting = nextMessage(ws);
  ws.resume();
  t.equal((await greeting).data.toString(), 'greeting');
});

/** An upstream that answers every upgrade with `respond(socket)`; counts the sockets open on its side. */
async function httpUpstream(t: Test, respond: (socket: Socket) => void) {
  const server = await listen(t, createHttpServer());
  server.on('upgrade', (_req: IncomingMessage, socket: Socket) => {
    socket.on('error', () => {});
    // Like a real server: notices the peer leaving.
    socket.on('end', () => socket.destroy());
    socket.resume();
    respond(socket);
  });
  return server;
}

async function timeouts(): Promise<number> {
  await sleep(20);
  return process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
}

t.test('connectUpstream: an HTTP answer is passed through with its body', async (t) => {
  const body = JSON.stringify({ error: 'forbidden' });
  const server = await httpUpstream(t, (socket) =>
    socket.end(`HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nX-Upstream: yes\r\nContent-Length: ${body.length}\r\n\r\n${body}`),
  );
  const before = await timeouts();
  const outcome = await connectUpstream(`ws://127.0.0.1:${server.port}/`, CONNECT);
  t.equal(outcome.kind, 'response');
  if (outcome.kind !== 'response') return;
  t.equal(outcome.status, 403);
  t.equal(outcome.headers['content-type'], 'application/json');
  t.equal(outcome.headers['x-upstream'], 'yes');
  t.equal(outcome.body.toString(), body);
  t.equal(await drained(server), 0, 'no socket left');
  t.equal(await timeouts(), before, 'no timer left');
});

t.test('connectUpstream: a big body is capped at 64 KiB, even when the upstream never finishes it', async (t) => {
  const server = await httpUpstream(t, (socket) => {
    socket.write('HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nContent-Length: 10000000\r\n\r\n');
    socket.write(Buffer.alloc(200 * 1024, 'a'));
    // ...and never the rest.
  });
  const started = Date.now();
  const outcome = await connectUpstream(`ws://127.0.0.1:${server.port}/`, { ...CONNECT, timeoutMs: 5000 });
  t.ok(Date.now() - started < 1000, 'without waiting for the timeout');
  t.equal(outcome.kind, 'response');
  if (outcome.kind !== 'response') return;
  t.equal(outcome.status, 401);
  t.equal(outcome.body.length, 64 * 1024);
  t.equal(await drained(server), 0, 'upstream socket closed');
});

t.test('connectUpstream: a response whose body stalls ends at timeoutMs with what arrived', async (t) => {
  const server = await httpUpstream(t, (socket) => socket.write('HTTP/1.1 403 Forbidden\r\nContent-Length: 100\r\n\r\npartial'));
  const started = Date.now();
  const outcome = await connectUpstream(`ws://127.0.0.1:${server.port}/`, { ...CONNECT, timeoutMs: 300 });
  const took = Date.now() - started;
  t.ok(took >= 250 && took < 2000, `after ${took} ms`);
  t.match(outcome, { kind: 'response', status: 403 });
  if (outcome.kind === 'response') t.equal(outcome.body.toString(), 'partial');
  t.equal(await drained(server), 0, 'upstream socket closed');
});

t.test('connectUpstream: connection refused is an error, quickly', async (t) => {
  const port = await freePort();
  const before = await timeouts();
  const started = Date.now();
  const outcome = await connectUpstream(`ws://127.0.0.1:${port}/`, CONNECT);
  t.ok(Date.now() - started < 1000, 'quickly');
  t.equal(outcome.kind, 'error');
  if (outcome.kind === 'error') t.match(outcome.error, { code: 'ECONNREFUSED' });
  t.equal(await timeouts(), before, 'no timer left');
});

t.test('connectUpstream: a server that accepts TCP but never answers is an error after timeoutMs', async (t) => {
  const server = await listen(t, createNetServer((s) => s.on('error', () => {}).resume()));
  const before = await timeouts();
  const started = Date.now();
  const outcome = await connectUpstream(`ws://127.0.0.1:${server.port}/`, { ...CONNECT, timeoutMs: 400 });
  const took = Date.now() - started;
  t.ok(took >= 350 && took < 2000, `after ${took} ms`);
  t.equal(outcome.kind, 'error');
  if (outcome.kind === 'error') t.match(outcome.error.message, /timed out/);
  t.equal(await drained(server), 0, 'the half-open connection was closed');
  t.equal(await timeouts(), before, 'no timer left');
});

t.test('connectUpstream: other failures are errors, never throws', async (t) => {
  const errorOf = (o: UpstreamOutcome) => (o.kind === 'error' ? o.error.message : `(not an error: ${o.kind})`);
  // TLS to a plain HTTP server: the handshake fails.
  const plain = await httpUpstream(t, (s) => s.destroy());
  t.notMatch(errorOf(await connectUpstream(`wss://127.0.0.1:${plain.port}/`, CONNECT)), /not an error/, 'TLS failure');
  // 101 with a subprotocol that was not offered.
  const wrong = await startEchoUpstream(t, { handleProtocols: () => 'other' });
  t.match(errorOf(await connectUpstream(wrong.url, { ...CONNECT, protocols: ['v1'] })), /subprotocol/);
  // Bad input ws rejects synchronously.
  t.match(errorOf(await connectUpstream('http//nope', CONNECT)), /Invalid URL/);
  t.match(errorOf(await connectUpstream(wrong.url, { ...CONNECT, protocols: ['bad protocol'] })), /subprotocol/);
  t.match(errorOf(await connectUpstream(wrong.url, { ...CONNECT, headers: { 'x-evil': 'a\r\nb' } })), /character/);
  // The upstream resets right after the request.
  const reset = await httpUpstream(t, (s) => s.destroy());
  t.match(await connectUpstream(`ws://127.0.0.1:${reset.port}/`, CONNECT), { kind: 'error' });
  t.equal(await drained(plain), 0);
  t.equal(wrong.open, 0);
});

function selfSigned(): { key: string; cert: string } | undefined {
  const dir = mkdtempSync(join(tmpdir(), 'relay-core-'));
  try {
    const args = ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1'];
    args.push('-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1');
    execFileSync('openssl', [...args, '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
    return { key: readFileSync(join(dir, 'key.pem'), 'utf8'), cert: readFileSync(join(dir, 'cert.pem'), 'utf8') };
  } catch {
    return undefined;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const pem = selfSigned();

t.test('connectUpstream: wss with tlsVerify and ca', { skip: pem ? false : 'openssl is not available' }, async (t) => {
  if (!pem) return;
  const server = await listen(t, createHttpsServer(pem));
  const wss = new WebSocketServer({ server });
  t.teardown(() => new Promise((r) => wss.close(r)));
  const url = `wss://127.0.0.1:${server.port}/`;
  const unverified = await connectUpstream(url, CONNECT);
  t.equal(unverified.kind, 'error', 'a self-signed certificate is refused');
  if (unverified.kind === 'error') t.match(unverified.error, { code: /SELF_SIGNED|UNABLE_TO_VERIFY/ });
  for (const options of [{ ...CONNECT, ca: pem.cert }, { ...CONNECT, tlsVerify: false }]) {
    const outcome = await connectUpstream(url, options);
    t.equal(outcome.kind, 'open', options.tlsVerify ? 'accepted with its ca' : 'accepted with tlsVerify false');
    if (outcome.kind === 'open') {
      const gone = once(outcome.ws, 'close');
      outcome.ws.resume(); // handed over paused: it would not read the close reply
      outcome.ws.close();
      await gone;
    }
  }
  t.equal(await drained(server), 0);
});
