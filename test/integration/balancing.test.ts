// SPEC 5 and 9: a route with a list of upstreams, through a real gateway, in pipe and relay mode:
// round-robin in list order, least-connections by live connections, a refused target retried once on
// another and ejected for ejectMs (then back), every target down → 502, and with every target ejected
// the one ejected longest ago is still tried.
import { once } from 'node:events';
import type { IncomingMessage } from 'node:http';
import t, { type Test } from 'tap';
import type { WebSocket } from 'ws';
import { echo, openClient } from '../helpers/client.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { eventually, freePort, sleep } from '../helpers/net.js';
import { rawUpgrade } from '../helpers/upgrade.js';
import { EchoUpstream, startEchoUpstream } from '../helpers/upstream.js';

const MODES = ['pipe', 'relay'] as const;
type Mode = (typeof MODES)[number];

const badGateway = (id: string) => {
  const body = JSON.stringify({ error: 'bad_gateway', error_description: 'upstream unavailable' });
  return (
    'HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Type: application/json\r\n' +
    `Content-Length: ${Buffer.byteLength(body)}\r\nCache-Control: no-store\r\nX-Request-Id: ${id}\r\n\r\n${body}`
  );
};

/** A public route `/chat` balanced over `targets`. */
function gatewayOver(t: Test, mode: Mode, targets: string[], route: Record<string, unknown> = {}): Promise<TestGateway> {
  return startGateway(t, { routes: [{ path: '/chat', auth: [], upstream: targets, mode, ...route }] });
}

async function echoUpstreams(t: Test, n: number): Promise<EchoUpstream[]> {
  return Promise.all(Array.from({ length: n }, () => startEchoUpstream(t)));
}

/** A URL on a loopback port nobody listens on. */
async function deadTarget(): Promise<{ url: string; port: number }> {
  const port = await freePort();
  return { url: `ws://127.0.0.1:${port}`, port };
}

/** The "upstream connect failed" log lines so far (one per failed attempt). */
const failures = (gw: TestGateway) => gw.logs().filter((l) => l.msg === 'upstream connect failed');

/** How many handshakes each upstream accepted. */
const seen = (ups: EchoUpstream[]) => ups.map((u) => u.seen.length);

/** Opens a client, checks its echo, and tells which upstream got it (by whose handshake count grew). */
async function connectVia(t: Test, gw: TestGateway, ups: EchoUpstream[], path = '/chat'): Promise<{ ws: WebSocket; index: number }> {
  const before = seen(ups);
  const ws = await openClient(t, gw.url(path));
  t.equal(await echo(ws, 'ping'), 'ping', 'the connection echoes');
  const grew = seen(ups).map((n, i) => n - before[i]!);
  t.equal(grew.reduce((a, b) => a + b, 0), 1, 'exactly one upstream handshake per connection');
  return { ws, index: grew.indexOf(1) };
}

/** Live connections the route's pool counts on a target (the gateway's own view, for least-connections). */
function activeOn(gw: TestGateway, target: string): number {
  const route = gw.gateway.routeFor({ url: '/chat', headers: { host: '127.0.0.1' } } as IncomingMessage);
  return route?.pool?.active(target) ?? -1;
}

async function closeClient(ws: WebSocket): Promise<void> {
  const closed = once(ws, 'close');
  ws.close();
  await closed;
}

for (const mode of MODES) {
  t.test(`${mode}: round-robin over three upstreams, in list order`, async (t) => {
    const ups = await echoUpstreams(t, 3);
    const gw = await gatewayOver(t, mode, ups.map((u) => u.url));
    const order: number[] = [];
    for (let i = 0; i < 6; i++) {
      order.push((await connectVia(t, gw, ups)).index);
      t.same(seen(ups), [0, 1, 2].map((j) => (j <= i % 3 ? Math.floor(i / 3) + 1 : Math.floor(i / 3))), `after connection ${i + 1}`);
    }
    t.same(order, [0, 1, 2, 0, 1, 2], 'each of three consecutive connections on the next upstream, in order');
    t.equal(failures(gw).length, 0);
  });

  t.test(`${mode}: the upstream of a list receives the request path and query`, async (t) => {
    const ups = await echoUpstreams(t, 2);
    const gw = await startGateway(t, { routes: [{ path: '/chat/*', auth: [], upstream: ups.map((u) => u.url), mode }] });
    const ws = await openClient(t, gw.url('/chat/room-1?lang=en'));
    t.equal(await echo(ws, 'x'), 'x');
    t.equal(ups[0]!.seen[0]?.url, '/chat/room-1?lang=en', 'the path and query that were routed');
  });

  t.test(`${mode}: least-connections picks the upstream with the fewest live connections`, async (t) => {
    const ups = await echoUpstreams(t, 3);
    const gw = await gatewayOver(t, mode, ups.map((u) => u.url), { balance: 'least-connections' });
    const clients = [];
    for (let i = 0; i < 3; i++) clients.push(await connectVia(t, gw, ups));
    t.same(seen(ups), [1, 1, 1], 'three connections on three empty upstreams: one each');
    t.same(ups.map((u) => activeOn(gw, u.url)), [1, 1, 1], 'the pool counts them');

    // Free the connection on the second upstream: it now has the fewest (round-robin would say the first).
    const onSecond = clients.find((c) => c.index === 1)!;
    await closeClient(onSecond.ws);
    await eventually(() => activeOn(gw, ups[1]!.url) === 0, 3000, 'the pool to release it');
    const fourth = await connectVia(t, gw, ups);
    t.equal(fourth.index, 1, 'the fourth connection goes to the upstream with 0 live connections');
    // All at 1: the tie may go anywhere; from then on every pick is forced.
    const x = (await connectVia(t, gw, ups)).index;
    const y = (await connectVia(t, gw, ups)).index;
    t.not(y, x, 'not the upstream that just got its second connection');
    const z = [0, 1, 2].find((i) => i !== x && i !== y)!;
    t.equal((await connectVia(t, gw, ups)).index, z, 'the only upstream still at 1 (the others have 2)');
    t.same(ups.map((u) => activeOn(gw, u.url)), [2, 2, 2]);

    // Free one connection on the third upstream.
    await closeClient(clients.find((c) => c.index === 2)!.ws);
    await eventually(() => activeOn(gw, ups[2]!.url) === 1, 3000, 'the pool to release it');
    t.equal((await connectVia(t, gw, ups)).index, 2, 'the third upstream, back at 1, is picked');
  });

  t.test(`${mode}: a dead target is retried once elsewhere, ejected for ejectMs, then tried again`, async (t) => {
    const ups = await echoUpstreams(t, 2);
    const dead = await deadTarget();
    const gw = await gatewayOver(t, mode, [dead.url, ups[0]!.url, ups[1]!.url], { ejectMs: 300 });
    const rejected: number[] = [];
    gw.gateway.on('rejected', (_req, status) => rejected.push(status));

    const started = Date.now();
    await connectVia(t, gw, ups);
    t.equal(failures(gw).length, 1, 'the first connection tried the dead target');
    t.match(failures(gw)[0], { level: 40, route: '/chat', target: `127.0.0.1:${dead.port}`, error: { code: 'ECONNREFUSED' } }, 'logged with its target');
    t.same(seen(ups), [1, 0], 'and was retried on the next target, transparently for the client');

    for (let i = 0; i < 4; i++) await connectVia(t, gw, ups);
    t.ok(Date.now() - started < 300, 'still within ejectMs');
    t.equal(failures(gw).length, 1, 'while ejected, the dead target is not tried');
    t.same(seen(ups).sort(), [2, 3], 'the healthy targets shared the connections');

    await sleep(Math.max(0, 350 - (Date.now() - started)));
    for (let i = 0; i < 3; i++) await connectVia(t, gw, ups);
    t.equal(failures(gw).length, 2, 'after ejectMs the target is back in rotation: tried once more within a round');
    t.equal(seen(ups).reduce((a, b) => a + b, 0), 8, 'every connection was served');
    t.same(rejected, [], 'no handshake was refused');
  });

  t.test(`${mode}: every target dead → 502 after one retry`, async (t) => {
    const deads = await Promise.all([deadTarget(), deadTarget(), deadTarget()]);
    const gw = await gatewayOver(t, mode, deads.map((d) => d.url), { ejectMs: 300 });
    const first = await rawUpgrade(gw.port, '/chat', { 'X-Request-Id': 'all-dead-1' });
    t.equal(first.raw, badGateway('all-dead-1'), '502, exact bytes');
    t.ok(first.closed);
    t.equal(failures(gw).length, 2, 'two attempts: the first target and one retry, not every target');
    const targets = failures(gw).map((l) => l.target);
    t.not(targets[0], targets[1], 'the retry went to another target');
    const second = await rawUpgrade(gw.port, '/chat', { 'X-Request-Id': 'all-dead-2' });
    t.equal(second.raw, badGateway('all-dead-2'), '502 again');
    t.equal(failures(gw).length, 4);
    t.match(gw.logs().filter((l) => l.msg === 'upstream unavailable'), [{ status: 502, reqId: 'all-dead-1' }, { status: 502, reqId: 'all-dead-2' }]);
  });

  t.test(`${mode}: with every target ejected, the one ejected longest ago is still tried (SPEC 9)`, async (t) => {
    const [p1, p2] = await Promise.all([deadTarget(), deadTarget()]);
    const gw = await gatewayOver(t, mode, [p1!.url, p2!.url], { ejectMs: 60_000 });
    t.equal((await rawUpgrade(gw.port, '/chat', { 'X-Request-Id': 'ej-1' })).raw, badGateway('ej-1'), 'both down: 502');
    t.same(failures(gw).map((l) => l.target), [`127.0.0.1:${p1!.port}`, `127.0.0.1:${p2!.port}`], 'both tried and ejected, the first one first');

    // The first target comes back, long before its ejectMs is over.
    const revived = new EchoUpstream();
    revived.server.listen(p1!.port, '127.0.0.1');
    await once(revived.server, 'listening');
    t.teardown(() => revived.close());
    const ws = await openClient(t, gw.url('/chat'));
    t.equal(await echo(ws, 'back'), 'back', 'accepted: the target ejected longest ago was tried');
    t.equal(revived.seen.length, 1);
    t.equal(failures(gw).length, 2, 'without a failed attempt first');
  });

  t.test(`${mode}: a target that fails is ejected in least-connections too`, async (t) => {
    const ups = await echoUpstreams(t, 1);
    const dead = await deadTarget();
    const gw = await gatewayOver(t, mode, [dead.url, ups[0]!.url], { balance: 'least-connections', ejectMs: 5000 });
    for (let i = 0; i < 3; i++) await connectVia(t, gw, ups);
    t.equal(failures(gw).length, 1, 'the dead target (0 connections, so always the least) was tried once only');
    t.equal(ups[0]!.seen.length, 3);
  });
}
