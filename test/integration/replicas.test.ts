// Two gateways sharing one real redis-server: revocations and one-time tickets reach every replica.
import { once } from 'node:events';
import t from 'tap';
import type { WebSocket } from 'ws';
import { echo, openClient } from '../helpers/client.js';
import { startGateway, startSidecar } from '../helpers/gateway.js';
import { cleanEnv, spawnCli, writeJson } from '../helpers/cli.js';
import { eventually, freePort } from '../helpers/net.js';
import { startRedis } from '../helpers/redis.js';
import { hs256, jwtAuth, SECRET } from '../helpers/tokens.js';
import { rawUpgrade } from '../helpers/upgrade.js';
import { startEchoUpstream } from '../helpers/upstream.js';

t.test('revoke on one replica closes the connection on the other within 1 s, and survives a restart', async (t) => {
  const redis = await startRedis(t);
  const upstream = await startEchoUpstream(t);
  const config = {
    redis: { url: redis.url },
    authenticators: { jwt: jwtAuth() },
    routes: [{ path: '/chat', auth: ['jwt'], upstream: upstream.url, mode: 'relay' }],
  };
  const a = await startGateway(t, config);
  const b = await startGateway(t, config);
  const alice = hs256({ sub: 'alice' });
  const onB: WebSocket = await openClient(t, b.url('/chat'), [], { Authorization: `Bearer ${alice}` });
  t.equal(await echo(onB, 'hi'), 'hi');
  const closed = once(onB, 'close');
  const started = Date.now();
  t.equal(a.gateway.revoke({ subject: 'alice' }), 0, 'nothing of alice lives on replica a');
  const [code, reason] = (await closed) as [number, Buffer];
  t.same({ code, reason: String(reason) }, { code: 4403, reason: 'revoked' }, 'closed on replica b');
  t.ok(Date.now() - started < 1000, `within 1 s (${Date.now() - started} ms)`);
  t.equal((await rawUpgrade(b.port, '/chat', { Authorization: `Bearer ${alice}` })).status, 401, 'b refuses alice now');
  t.ok(Number(await redis.client.get('portcullis:revoked:sub:alice')) === 1, 'stored in redis');

  const c = await startGateway(t, config);
  t.equal((await rawUpgrade(c.port, '/chat', { Authorization: `Bearer ${alice}` })).status, 401, 'a replica started later knows it too');
  t.equal((await rawUpgrade(c.port, '/chat', { Authorization: `Bearer ${hs256({ sub: 'bob' })}` })).status, 101, 'bob is fine');
});

t.test('a ticket issued by one replica is accepted once by another', async (t) => {
  const redis = await startRedis(t);
  const upstream = await startEchoUpstream(t);
  const config = {
    redis: { url: redis.url },
    tickets: { path: '/tickets', ttlSec: 30 },
    authenticators: { jwt: jwtAuth(), once: { type: 'ticket' } },
    routes: [
      { path: '/live', auth: ['once'], upstream: upstream.url },
      { path: '/api', auth: ['jwt'], upstream: upstream.url },
    ],
  };
  const a = await startSidecar(t, config);
  const b = await startSidecar(t, config);
  const res = await fetch(`http://127.0.0.1:${a.port}/tickets`, { method: 'POST', headers: { Authorization: `Bearer ${hs256({ sub: 'carol' })}` } });
  const { ticket } = (await res.json()) as { ticket: string };
  const ws = await openClient(t, b.url(`/live?ticket=${ticket}`));
  t.equal(await echo(ws, 'x'), 'x', 'spent on replica b');
  t.equal(upstream.seen[0]?.headers['x-auth-subject'], 'carol');
  t.equal((await rawUpgrade(a.port, `/live?ticket=${ticket}`)).status, 401, 'and not again on replica a');
  t.notOk(a.logText().includes(ticket) || b.logText().includes(ticket), 'never logged');
  await redis.stop();
  const down = await fetch(`http://127.0.0.1:${a.port}/tickets`, { method: 'POST', headers: { Authorization: `Bearer ${hs256({ sub: 'carol' })}` } });
  t.equal(down.status, 503, 'redis down: tickets fail closed');
  await eventually(() => !a.gateway.redisReady, 3000, 'readiness sees redis down');
});

t.test('a revocation a replica could not hear closes its live connections once it reconnects', async (t) => {
  const redis = await startRedis(t);
  const upstream = await startEchoUpstream(t);
  const gw = await startGateway(t, {
    redis: { url: redis.url },
    authenticators: { jwt: jwtAuth() },
    routes: [{ path: '/chat', auth: ['jwt'], upstream: upstream.url, mode: 'relay' }],
  });
  const alice = await openClient(t, gw.url('/chat'), [], { Authorization: `Bearer ${hs256({ sub: 'alice' })}` });
  const bob = await openClient(t, gw.url('/chat'), [], { Authorization: `Bearer ${hs256({ sub: 'bob' })}` });
  // Stored but never published (as by a replica that died in between), then this replica's connection drops.
  await redis.client.sendCommand(['SET', 'portcullis:revoked:sub:alice', '1', 'EX', '3600']);
  const closed = once(alice, 'close');
  await redis.client.sendCommand(['CLIENT', 'KILL', 'TYPE', 'normal']).catch(() => {});
  const [code] = (await closed) as [number];
  t.equal(code, 4403, 'closed as revoked after the reconnect loaded it');
  t.equal(await echo(bob, 'still'), 'still', 'bob is untouched');
  t.equal((await rawUpgrade(gw.port, '/chat', { Authorization: `Bearer ${hs256({ sub: 'alice' })}` })).status, 401);
});

t.test('two gateway processes: POST /revoke on one process closes the connection held by the other', async (t) => {
  const redis = await startRedis(t);
  const upstream = await startEchoUpstream(t);
  const [port, adminPort] = [await freePort(), await freePort()];
  const config = {
    redis: { url: redis.url },
    authenticators: { jwt: { ...jwtAuth(), secret: '${JWT_SECRET}' } },
    routes: [{ path: '/chat', auth: ['jwt'], upstream: upstream.url, mode: 'relay' }],
  };
  const file = writeJson(t.testdir(), 'gateway.config.json', { ...config, listen: { host: '127.0.0.1', port }, admin: { host: '127.0.0.1', port: adminPort, token: 'replica-admin-token-0123' } });
  const replica = spawnCli(t, ['--config', file], { env: cleanEnv({ JWT_SECRET: SECRET }) });
  await replica.waitFor('admin listening');
  const other = await startGateway(t, { ...config, authenticators: { jwt: jwtAuth() } });
  const alice = { Authorization: `Bearer ${hs256({ sub: 'alice' })}` };
  const held = await openClient(t, other.url('/chat'), [], alice);
  t.equal(await echo(held, 'hi'), 'hi');
  const closed = once(held, 'close');
  const res = await fetch(`http://127.0.0.1:${adminPort}/revoke`, { method: 'POST', headers: { Authorization: 'Bearer replica-admin-token-0123' }, body: JSON.stringify({ subject: 'alice' }) });
  t.same(await res.json(), { revoked: { subject: 'alice' }, closed: 0 }, 'nothing of alice on the process that was asked');
  const [code, reason] = (await closed) as [number, Buffer];
  t.same([code, String(reason)], [4403, 'revoked'], 'closed on the other process');
  t.equal((await rawUpgrade(port, '/chat', alice)).status, 401, 'and refused by the process that was asked');
});
