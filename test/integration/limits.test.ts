// SPEC 2.3 (rateLimit, maxConnections, maxConnectionsPerSubject, maxConnectionsPerIp), 3 (steps 3, 5, 7)
// and 9 (token bucket, a 401 still takes a token, Retry-After) through a real gateway on real sockets,
// in pipe and in relay mode. Rejections are checked byte for byte; "nothing reached the upstream" by
// the upstream's own TCP count. A second client address (127.0.0.2, also loopback on Linux) tells
// per-IP limits apart from global ones.
import { once } from 'node:events';
import { connect } from 'node:net';
import t, { type Test } from 'tap';
import { WebSocket } from 'ws';
import { rejection } from '../helpers/assertions.js';
import { closeClient, echo, openClient } from '../helpers/client.js';
import { startGatewayWithUpstream, type Setup } from '../helpers/gateway.js';
import { eventually, sleep } from '../helpers/net.js';
import { hs256, jwtAuth } from '../helpers/tokens.js';
import { rawUpgrade, readResponse, requestHead, upgradeHeaders, type RawResponse } from '../helpers/upgrade.js';

const MODES = ['pipe', 'relay'] as const;
type Mode = (typeof MODES)[number];
const OTHER_IP = '127.0.0.2';

const tooManyHandshakes = (id: string, retryAfter = '1') => rejection('429 Too Many Requests', 'rate_limited', 'too many handshakes', id, [`Retry-After: ${retryAfter}`]);
const tooManyConnections = (id: string) => rejection('429 Too Many Requests', 'rate_limited', 'too many connections', id, ['Retry-After: 1']);
const capacity = (id: string) => rejection('503 Service Unavailable', 'unavailable', 'connection limit reached', id, ['Retry-After: 1']);

const bearer = (sub: string) => ({ Authorization: `Bearer ${hs256({ sub })}` });
const as = (sub: string, id: string) => ({ ...bearer(sub), 'X-Request-Id': id });

/** An echo upstream and a gateway with `/chat` (jwt) in `mode`, plus `route` fields and top-level `top`. */
function setup(t: Test, mode: Mode, route: Record<string, unknown>, top: Record<string, unknown> = {}): Promise<Setup> {
  return startGatewayWithUpstream(t, (upstream) => ({
    ...top,
    authenticators: { jwt: jwtAuth() },
    routes: [
      { path: '/chat', auth: ['jwt'], upstream, mode, ...route },
      { path: '/other', auth: ['jwt'], upstream, mode },
    ],
  }));
}

/** rawUpgrade from another loopback address. */
function rawUpgradeFrom(localAddress: string, port: number, path: string, headers: Record<string, string>): Promise<RawResponse> {
  const socket = connect({ port, host: '127.0.0.1', localAddress });
  socket.write(requestHead(path, upgradeHeaders(headers)));
  return readResponse(socket, 3000, (raw) => raw.startsWith('HTTP/1.1 101') && raw.includes('\r\n\r\n'));
}

/** A client WebSocket from another loopback address; terminated by teardown. */
async function openFrom(t: Test, localAddress: string, url: string, headers: Record<string, string>): Promise<WebSocket> {
  const ws = new WebSocket(url, { headers, localAddress });
  t.teardown(() => ws.terminate());
  ws.on('error', () => {});
  await once(ws, 'open');
  return ws;
}

/** Waits until the gateway counts exactly `n` live connections. */
const liveIs = (s: Setup, n: number) => eventually(() => s.gw.gateway.connections === n, 3000, `${n} live connections (have ${s.gw.gateway.connections})`);

/** Every status the gateway logged as a decision, in order. */
const loggedStatuses = (s: Setup) => s.gw.logs().filter((l) => l.msg === 'upgrade rejected' || l.msg === 'upgrade accepted').map((l) => l.status);

for (const mode of MODES) {
  t.test(`${mode}: rateLimit.perIp 2/s burst 2`, async (t) => {
    const s = await setup(t, mode, { rateLimit: { perIp: '2/s', burst: 2 } });
    // Warm-up on the unlimited route, so that the timed sequence below is not slowed by first-use costs.
    t.equal((await rawUpgrade(s.gw.port, '/other', as('alice', 'warm-up'))).status, 101);
    const rejected: number[] = [];
    s.gw.gateway.on('rejected', (_req, status) => rejected.push(status));
    t.equal((await rawUpgrade(s.gw.port, '/chat', as('alice', 'rl-1'))).status, 101, 'first handshake');
    t.equal((await rawUpgrade(s.gw.port, '/chat', as('alice', 'rl-2'))).status, 101, 'second handshake');
    const [third, fourth] = await Promise.all([rawUpgrade(s.gw.port, '/chat', as('alice', 'rl-3')), rawUpgrade(s.gw.port, '/chat', as('bob', 'rl-4'))]);
    t.equal(third!.raw, tooManyHandshakes('rl-3'), 'third: 429, exact bytes, Retry-After: 1');
    t.ok(third!.closed, 'the socket is closed after the 429');
    t.equal(fourth!.raw, tooManyHandshakes('rl-4'), 'another subject from the same IP is limited too');
    t.equal(s.upstream.tcp, 3, 'the limited handshakes never reached the upstream');
    t.same(rejected, [429, 429], "'rejected' emitted for each");
    t.same(loggedStatuses(s), [101, 101, 101, 429, 429], 'every decision logged with its status');
    t.match(s.gw.logs().find((l) => l.reqId === 'rl-3'), { msg: 'upgrade rejected', status: 429, reqId: 'rl-3', route: '/chat', remoteAddress: '127.0.0.1' });

    const elsewhere = await rawUpgradeFrom(OTHER_IP, s.gw.port, '/chat', as('alice', 'rl-5'));
    t.equal(elsewhere.status, 101, 'another client IP has its own bucket');
    t.equal((await rawUpgrade(s.gw.port, '/other', as('alice', 'rl-6'))).status, 101, 'a route without rateLimit is not limited');

    await sleep(1000);
    t.equal((await rawUpgrade(s.gw.port, '/chat', as('alice', 'rl-7'))).status, 101, 'after Retry-After (1 s) a handshake passes again');
    t.equal((await rawUpgrade(s.gw.port, '/chat', as('alice', 'rl-8'))).status, 101, 'the bucket refilled to burst (2) in 1 s');
    t.equal((await rawUpgrade(s.gw.port, '/chat', as('alice', 'rl-9'))).raw, tooManyHandshakes('rl-9'), 'but not beyond');
  });

  t.test(`${mode}: a handshake rejected with 401 still takes a per-IP token (SPEC 9)`, async (t) => {
    const s = await setup(t, mode, { rateLimit: { perIp: '2/s', burst: 2 } });
    const none = await rawUpgrade(s.gw.port, '/chat', { 'X-Request-Id': 'nt-1' });
    t.equal(none.status, 401, 'no credential: 401');
    t.equal(none.headers['www-authenticate'], 'Bearer realm="portcullis"');
    const bad = await rawUpgrade(s.gw.port, '/chat', { Authorization: `Bearer ${hs256({ sub: 'alice' }, 'another-secret-0123456789abcdef-012345')}`, 'X-Request-Id': 'nt-2' });
    t.equal(bad.status, 401, 'bad signature: 401');
    const good = await rawUpgrade(s.gw.port, '/chat', as('alice', 'nt-3'));
    t.equal(good.raw, tooManyHandshakes('nt-3'), 'the two 401s used the bucket up: a valid token is now 429');
    t.equal(s.upstream.tcp, 0);
  });

  t.test(`${mode}: pipeline order (SPEC 3): the per-IP rate is taken after the cap and origin checks`, async (t) => {
    const s = await setup(t, mode, { rateLimit: { perIp: '1/m', burst: 2 }, maxConnections: 1, origins: ['https://app.example'] });
    const forbidden = ['o-1', 'o-2', 'o-3'].map((id) => rawUpgrade(s.gw.port, '/chat', { ...as('alice', id), Origin: 'https://evil.example' }));
    t.same((await Promise.all(forbidden)).map((r) => r.status), [403, 403, 403], 'a foreign Origin is 403');
    const held = await openClient(t, s.gw.url('/chat'), [], { ...bearer('alice'), Origin: 'https://app.example' });
    t.equal(await echo(held, 'h'), 'h', 'the 403s took no token: first of the burst');
    for (const id of ['c-1', 'c-2', 'c-3']) {
      t.equal((await rawUpgrade(s.gw.port, '/chat', as('bob', id))).raw, capacity(id), `${id}: 503 (route full), before the rate limit`);
    }
    await closeClient(held);
    await liveIs(s, 0);
    t.equal((await rawUpgrade(s.gw.port, '/chat', as('bob', 'after-1'))).status, 101, 'the 503s took no token: second of the burst');
    await liveIs(s, 0);
    t.equal((await rawUpgrade(s.gw.port, '/chat', as('bob', 'after-2'))).status, 429, 'and the bucket is now empty');
  });

  t.test(`${mode}: rateLimit.perSubject limits each subject on its own`, async (t) => {
    // 1/m with burst 2: two handshakes, then a whole minute (less what has refilled) to wait.
    const s = await setup(t, mode, { rateLimit: { perSubject: '1/m', burst: 2 } });
    t.equal((await rawUpgrade(s.gw.port, '/chat', as('alice', 'ps-1'))).status, 101);
    t.equal((await rawUpgrade(s.gw.port, '/chat', as('alice', 'ps-2'))).status, 101);
    const limited = await rawUpgrade(s.gw.port, '/chat', as('alice', 'ps-3'));
    t.equal(limited.status, 429, 'alice: third handshake 429');
    const retryAfter = Number(limited.headers['retry-after']);
    t.ok(retryAfter === 60 || retryAfter === 59, `Retry-After ${limited.headers['retry-after']}: the minute until one token is back`);
    t.equal(limited.raw, tooManyHandshakes('ps-3', String(retryAfter)), 'exact bytes');
    t.equal((await rawUpgrade(s.gw.port, '/chat', as('bob', 'ps-4'))).status, 101, 'bob is not limited by alice');
    t.equal((await rawUpgrade(s.gw.port, '/chat', as('bob', 'ps-5'))).status, 101, 'bob has his own burst of 2');
    t.equal((await rawUpgrade(s.gw.port, '/chat', as('bob', 'ps-6'))).status, 429, 'and then is limited too');
    t.equal((await rawUpgradeFrom(OTHER_IP, s.gw.port, '/chat', as('alice', 'ps-7'))).status, 429, 'alice from another IP is still alice');
    // A handshake without a subject never reaches the per-subject check: it is 401, not 429.
    t.equal((await rawUpgrade(s.gw.port, '/chat', { 'X-Request-Id': 'ps-8' })).status, 401, 'no credential: 401 (authentication comes first)');
    t.equal(s.upstream.tcp, 4, 'only the four accepted handshakes reached the upstream');
  });

  t.test(`${mode}: limits.maxConnections (global) → 503 Retry-After: 1; closing frees the slot`, async (t) => {
    const s = await setup(t, mode, {}, { limits: { maxConnections: 2 } });
    const a = await openClient(t, s.gw.url('/chat'), [], bearer('alice'));
    const b = await openClient(t, s.gw.url('/other'), [], bearer('bob'));
    t.equal(await echo(a, 'a'), 'a');
    t.equal(await echo(b, 'b'), 'b');
    await liveIs(s, 2);
    const full = await rawUpgrade(s.gw.port, '/chat', as('carol', 'gc-1'));
    t.equal(full.raw, capacity('gc-1'), '503, exact bytes');
    t.ok(full.closed);
    t.equal((await rawUpgrade(s.gw.port, '/other', as('carol', 'gc-2'))).raw, capacity('gc-2'), 'global: every route');
    t.equal((await rawUpgradeFrom(OTHER_IP, s.gw.port, '/chat', as('carol', 'gc-3'))).raw, capacity('gc-3'), 'global: every client IP');
    t.equal(s.upstream.tcp, 2, 'the refused handshakes never reached the upstream');
    await closeClient(a);
    await liveIs(s, 1);
    const c = await openClient(t, s.gw.url('/chat'), [], bearer('carol'));
    t.equal(await echo(c, 'c'), 'c', 'the freed slot takes a new connection');
    await liveIs(s, 2);
    t.equal((await rawUpgrade(s.gw.port, '/chat', as('dave', 'gc-4'))).raw, capacity('gc-4'), 'and the cap is back at 2');
  });

  t.test(`${mode}: route maxConnections → 503 Retry-After: 1; other routes unaffected; closing frees the slot`, async (t) => {
    const s = await setup(t, mode, { maxConnections: 1 });
    const a = await openClient(t, s.gw.url('/chat'), [], bearer('alice'));
    t.equal(await echo(a, 'a'), 'a');
    const full = await rawUpgrade(s.gw.port, '/chat', as('bob', 'rc-1'));
    t.equal(full.raw, capacity('rc-1'), '503, exact bytes');
    t.equal((await rawUpgradeFrom(OTHER_IP, s.gw.port, '/chat', as('bob', 'rc-2'))).raw, capacity('rc-2'), 'from any IP');
    const other = await openClient(t, s.gw.url('/other'), [], bearer('bob'));
    t.equal(await echo(other, 'o'), 'o', 'another route still accepts');
    t.equal(s.upstream.tcp, 2);
    await closeClient(a);
    await liveIs(s, 1);
    const again = await openClient(t, s.gw.url('/chat'), [], bearer('bob'));
    t.equal(await echo(again, 'again'), 'again', 'the route accepts again once its connection ended');
    t.equal((await rawUpgrade(s.gw.port, '/chat', as('carol', 'rc-3'))).raw, capacity('rc-3'), 'and is full again');
  });

  t.test(`${mode}: maxConnectionsPerSubject → 429 too many connections; closing frees the slot`, async (t) => {
    const s = await setup(t, mode, { maxConnectionsPerSubject: 2 });
    const a1 = await openClient(t, s.gw.url('/chat'), [], bearer('alice'));
    const a2 = await openClient(t, s.gw.url('/chat'), [], bearer('alice'));
    t.equal(await echo(a1, '1'), '1');
    t.equal(await echo(a2, '2'), '2');
    const third = await rawUpgrade(s.gw.port, '/chat', as('alice', 'sc-1'));
    t.equal(third.raw, tooManyConnections('sc-1'), '429, exact bytes, Retry-After: 1');
    t.ok(third.closed);
    t.equal((await rawUpgradeFrom(OTHER_IP, s.gw.port, '/chat', as('alice', 'sc-2'))).raw, tooManyConnections('sc-2'), 'from another IP too');
    const b = await openClient(t, s.gw.url('/chat'), [], bearer('bob'));
    t.equal(await echo(b, 'b'), 'b', 'bob is not capped by alice');
    t.equal((await rawUpgrade(s.gw.port, '/other', as('alice', 'sc-3'))).status, 101, 'the cap is per route');
    const noToken = await rawUpgrade(s.gw.port, '/chat', { 'X-Request-Id': 'sc-4' });
    t.equal(noToken.status, 401, 'without a credential it is 401, not 429 (the cap follows authentication)');
    t.equal(s.upstream.seen.length, 4, 'the capped handshakes never reached the upstream (alice 2, bob, alice on /other)');
    await closeClient(a1);
    await liveIs(s, 2);
    const a3 = await openClient(t, s.gw.url('/chat'), [], bearer('alice'));
    t.equal(await echo(a3, '3'), '3', 'alice may connect again once one of hers closed');
    t.equal((await rawUpgrade(s.gw.port, '/chat', as('alice', 'sc-5'))).raw, tooManyConnections('sc-5'), 'and is at her cap again');
  });

  t.test(`${mode}: maxConnectionsPerIp → 429 too many connections; closing frees the slot`, async (t) => {
    const s = await setup(t, mode, { maxConnectionsPerIp: 1 });
    const a = await openClient(t, s.gw.url('/chat'), [], bearer('alice'));
    t.equal(await echo(a, 'a'), 'a');
    const second = await rawUpgrade(s.gw.port, '/chat', as('bob', 'ic-1'));
    t.equal(second.raw, tooManyConnections('ic-1'), '429, exact bytes, Retry-After: 1 (another subject, same IP)');
    t.ok(second.closed);
    const elsewhere = await openFrom(t, OTHER_IP, s.gw.url('/chat'), bearer('bob'));
    t.equal(await echo(elsewhere, 'e'), 'e', 'another IP has its own count');
    t.equal((await rawUpgradeFrom(OTHER_IP, s.gw.port, '/chat', as('carol', 'ic-2'))).raw, tooManyConnections('ic-2'), 'and its own cap');
    t.equal((await rawUpgrade(s.gw.port, '/other', as('alice', 'ic-3'))).status, 101, 'the cap is per route');
    t.equal(s.upstream.seen.length, 3, 'the capped handshakes never reached the upstream (alice, bob elsewhere, alice on /other)');
    await closeClient(a);
    await liveIs(s, 1);
    const again = await openClient(t, s.gw.url('/chat'), [], bearer('bob'));
    t.equal(await echo(again, 'again'), 'again', 'the IP may connect again once its connection closed');
    t.equal((await rawUpgrade(s.gw.port, '/chat', as('carol', 'ic-4'))).raw, tooManyConnections('ic-4'), 'and is at its cap again');
  });

  t.test(`${mode}: a slot is freed however the connection ends (client reset, upstream close)`, async (t) => {
    const s = await setup(t, mode, { maxConnectionsPerSubject: 1 });
    const a = await openClient(t, s.gw.url('/chat'), [], bearer('alice'));
    t.equal(await echo(a, 'a'), 'a');
    a.terminate();
    await liveIs(s, 0);
    const b = await openClient(t, s.gw.url('/chat'), [], bearer('alice'));
    t.equal(await echo(b, 'b'), 'b', 'accepted after a client reset');
    const closed = once(b, 'close');
    for (const ws of s.upstream.wss.clients) ws.close(1000, 'bye');
    await closed;
    await liveIs(s, 0);
    const c = await openClient(t, s.gw.url('/chat'), [], bearer('alice'));
    t.equal(await echo(c, 'c'), 'c', 'accepted after the upstream closed the previous one');
  });

  t.test(`${mode}: a handshake answered 502 does not keep its slot`, async (t) => {
    const s = await setup(t, mode, { maxConnections: 1 });
    await s.upstream.close();
    for (const id of ['dead-1', 'dead-2', 'dead-3']) {
      const res = await rawUpgrade(s.gw.port, '/chat', as('alice', id));
      t.equal(res.raw, rejection('502 Bad Gateway', 'bad_gateway', 'upstream unavailable', id), `${id}: 502, not 503`);
    }
    await liveIs(s, 0);
  });

  t.test(`${mode}: caps hold for concurrent handshakes (slow authentication)`, async (t) => {
    const s = await setup(t, mode, { maxConnectionsPerSubject: 1, maxConnections: 2 }, { limits: { maxConnections: 3 } });
    // A slow handler after the authenticator: every handshake is still being authenticated when the
    // next one arrives, so a cap has to count a connection from its check on, not from its handoff.
    s.gw.gateway.onWebSocketUpgrade(async () => {
      await sleep(150);
      return true;
    });
    /** Opens clients all at once and keeps the ones that open; resolves with the sorted statuses. */
    const simultaneous = async (path: string, subjects: string[]) => {
      const clients = subjects.map((sub) => new WebSocket(s.gw.url(path), { headers: bearer(sub) }));
      const statuses = await Promise.all(
        clients.map((ws) => {
          t.teardown(() => ws.terminate());
          ws.on('error', () => {});
          return new Promise<number>((resolve) => {
            ws.once('open', () => resolve(101));
            ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
            ws.once('error', () => resolve(0));
          });
        }),
      );
      return { statuses: [...statuses].sort(), clients };
    };
    const closeAll = async (clients: WebSocket[]) => {
      await Promise.all(clients.map((ws) => (ws.readyState === WebSocket.OPEN ? closeClient(ws) : ws.terminate())));
      await liveIs(s, 0);
    };

    const perSubject = await simultaneous('/chat', ['alice', 'alice', 'alice']);
    // Route maxConnections 2 holds two slots while both are authenticated, so the third is 503 at once;
    // of the two, the per-subject cap lets one through.
    t.same(perSubject.statuses, [101, 429, 503], 'maxConnectionsPerSubject 1: one of three simultaneous handshakes of alice is accepted');
    await closeAll(perSubject.clients);

    const route = await simultaneous('/chat', ['u1', 'u2', 'u3', 'u4']);
    t.same(route.statuses, [101, 101, 503, 503], 'route maxConnections 2: two of four simultaneous handshakes are accepted');
    await closeAll(route.clients);

    const global = await simultaneous('/other', ['v1', 'v2', 'v3', 'v4', 'v5']);
    t.same(global.statuses, [101, 101, 101, 503, 503], 'limits.maxConnections 3: three of five simultaneous handshakes are accepted');
    await closeAll(global.clients);
  });
}
