// Issue 4 "shared state across replicas": with `redis`, rate-limit buckets and the per-subject and per-IP
// connection caps hold across every replica (gateways sharing one real redis-server); a replica killed
// without closing stops counting after `redis.replicaTtlSec`; while Redis is down each replica limits
// alone and keeps serving, and writes its counts back when Redis returns.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { closeClient, echo, openClient } from '../helpers/client.js';
import { cleanEnv, spawnCli } from '../helpers/cli.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { eventually, freePort, sleep } from '../helpers/net.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { hs256, jwtAuth, SECRET } from '../helpers/tokens.js';
import { rawUpgrade } from '../helpers/upgrade.js';
import { startEchoUpstream } from '../helpers/upstream.js';

const bearer = (sub: string) => ({ Authorization: `Bearer ${hs256({ sub })}` });
const statusOf = (gw: TestGateway, sub: string, path = '/chat') => rawUpgrade(gw.port, path, bearer(sub)).then((r) => r.status);
/** Polls an async check until it holds; fails after `ms`. */
async function until(check: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** Route fields on `/chat` (relay), on gateways sharing `redis`. */
function configWith(redis: TestRedis, upstream: string, route: Record<string, unknown>, top: Record<string, unknown> = {}) {
  return {
    redis: { url: redis.url },
    ...top,
    authenticators: { jwt: jwtAuth() },
    routes: [{ path: '/chat', auth: ['jwt'], upstream, mode: 'relay', ...route }],
  };
}

t.test('maxConnectionsPerSubject counts the connections of every replica', async (t) => {
  const redis = await startRedis(t);
  const upstream = await startEchoUpstream(t);
  const config = configWith(redis, upstream.url, { maxConnectionsPerSubject: 2 });
  const a = await startGateway(t, config);
  const b = await startGateway(t, config);

  const first = await openClient(t, a.url('/chat'), [], bearer('alice'));
  const second = await openClient(t, b.url('/chat'), [], bearer('alice'));
  t.equal(await echo(second, 'hi'), 'hi');
  for (const gw of [a, b]) {
    const res = await rawUpgrade(gw.port, '/chat', bearer('alice'));
    t.equal(res.status, 429, 'a third connection of alice is refused on either replica');
    t.equal(res.headers['retry-after'], '1');
    t.match(res.body, /too many connections/);
  }
  t.equal(await statusOf(a, 'bob'), 101, 'other subjects are not affected');
  t.equal(upstream.tcp, 3, 'nothing refused reached the upstream');

  await closeClient(first);
  await eventually(() => a.gateway.connections === 0, 3000, 'a has released alice');
  // The release reaches Redis right after the close: the slot is free on the other replica too.
  await until(async () => (await statusOf(b, 'alice')) === 101, 3000, 'alice may connect on b again');
  await closeClient(second);
});

t.test('maxConnectionsPerIp across replicas; counts come back to zero in Redis; nothing readable is stored', async (t) => {
  const redis = await startRedis(t);
  const upstream = await startEchoUpstream(t);
  const config = configWith(redis, upstream.url, { maxConnectionsPerIp: 3 });
  const a = await startGateway(t, config);
  const b = await startGateway(t, config);
  const open = [];
  for (const [gw, sub] of [[a, 'u1'], [b, 'u2'], [a, 'u3']] as const) open.push(await openClient(t, gw.url('/chat'), [], bearer(sub)));
  const fourth = await rawUpgrade(b.port, '/chat', bearer('u4'));
  t.equal(fourth.status, 429, 'the 4th connection from 127.0.0.1 is refused on b');
  t.match(fourth.body, /too many connections/);

  const keys = await redis.client.keys('portcullis:*');
  t.ok(keys.some((k) => k.startsWith('portcullis:conns:')), 'per-replica count hashes exist');
  for (const key of keys) {
    const text = key + JSON.stringify(key.startsWith('portcullis:conns:') ? await redis.client.hGetAll(key) : {});
    t.notMatch(text, /127\.0\.0\.1|u1|chat/, `no client address, subject or route in ${key}`);
  }
  t.equal((await redis.client.zRange('portcullis:replicas', 0, -1)).length, 2, 'two live replicas registered');

  // Churn: many short connections on both replicas, each released again.
  for (let i = 0; i < 10; i++) {
    const gw = i % 2 ? a : b;
    const res = await rawUpgrade(gw.port, '/chat', bearer(`churn${i}`));
    t.equal(res.status, 429, 'still full');
  }
  await Promise.all(open.map((ws) => closeClient(ws)));
  // The client sees its close before the gateway has released the counts (locally and in Redis).
  await eventually(() => a.gateway.connections + b.gateway.connections === 0, 3000, 'the three closed');
  await until(async () => {
    const hashes = await Promise.all((await redis.client.keys('portcullis:conns:*')).map((k) => redis.client.hGetAll(k)));
    return hashes.every((h) => Object.values(h).every((n) => Number(n) === 0));
  }, 3000, 'their counts released in redis');
  for (let i = 0; i < 6; i++) {
    const ws = await openClient(t, (i % 2 ? a : b).url('/chat'), [], bearer(`c${i}`));
    await closeClient(ws);
  }
  await eventually(() => a.gateway.connections + b.gateway.connections === 0, 3000, 'all closed');
  await until(async () => {
    const hashes = await Promise.all((await redis.client.keys('portcullis:conns:*')).map((k) => redis.client.hGetAll(k)));
    return hashes.every((h) => Object.keys(h).length === 0);
  }, 3000, 'every count released in redis');

  await a.gateway.close();
  t.equal((await redis.client.zRange('portcullis:replicas', 0, -1)).length, 1, 'a clean close unregisters the replica at once');
});

t.test('shared rate limits: every replica takes from one bucket', async (t) => {
  const redis = await startRedis(t);
  const upstream = await startEchoUpstream(t);
  const a = await startGateway(t, configWith(redis, upstream.url, { rateLimit: { perSubject: '1/m', burst: 3 } }));
  const b = await startGateway(t, configWith(redis, upstream.url, { rateLimit: { perSubject: '1/m', burst: 3 } }));
  t.same([await statusOf(a, 'alice'), await statusOf(b, 'alice'), await statusOf(a, 'alice')], [101, 101, 101], 'burst 3, taken on two replicas');
  const res = await rawUpgrade(b.port, '/chat', bearer('alice'));
  t.equal(res.status, 429, 'the 4th handshake is over the shared bucket');
  t.match(res.body, /too many handshakes/);
  t.ok(Number(res.headers['retry-after']) >= 1 && Number(res.headers['retry-after']) <= 60, `Retry-After ${res.headers['retry-after']} from the shared bucket`);
  t.equal(await statusOf(b, 'bob'), 101, 'bob has his own bucket');

  const ipOnly = await startGateway(t, configWith(redis, upstream.url, { rateLimit: { perIp: '1/m', burst: 2 } }));
  const other = await startGateway(t, configWith(redis, upstream.url, { rateLimit: { perIp: '1/m', burst: 2 } }));
  t.same([await statusOf(ipOnly, 'x'), await statusOf(other, 'y'), await statusOf(ipOnly, 'z')], [101, 101, 429], 'per-IP buckets are shared too');
  for (const key of await redis.client.keys('portcullis:rate:*')) t.notMatch(key, /alice|127\.0\.0\.1|chat/, 'bucket keys are hashes');
});

t.test('firstMessageAuth routes: the per-IP cap is checked at the upgrade, the per-subject cap at the first message', async (t) => {
  const redis = await startRedis(t);
  const upstream = await startEchoUpstream(t);
  const config = configWith(redis, upstream.url, { firstMessageAuth: { timeoutMs: 3000 }, maxConnectionsPerIp: 2, maxConnectionsPerSubject: 1 });
  const a = await startGateway(t, config);
  const b = await startGateway(t, config);
  const auth = (sub: string) => JSON.stringify({ type: 'auth', token: hs256({ sub }) });
  const alice = await openClient(t, a.url('/chat'));
  alice.send(auth('alice'));
  t.equal(await echo(alice, 'one'), 'one', 'the first connection authenticates (its own upgrade is not counted twice)');
  const again = await openClient(t, b.url('/chat'));
  again.send(auth('alice'));
  const [code, reason] = await new Promise<[number, string]>((resolve) => again.once('close', (c, r) => resolve([c, String(r)])));
  t.same([code, reason], [4429, 'too many connections'], 'alice again, on the other replica: over the per-subject cap');
  await eventually(() => b.gateway.connections === 0, 3000, 'b let it go');
  const bob = await openClient(t, b.url('/chat'));
  bob.send(auth('bob'));
  t.equal(await echo(bob, 'two'), 'two');
  t.equal((await rawUpgrade(a.port, '/chat')).status, 429, 'a third upgrade from 127.0.0.1 is refused before any message');
});

t.test('firstMessageAuth with maxConnectionsPerIp 1: the one connection allowed authenticates (no redis)', async (t) => {
  const upstream = await startEchoUpstream(t);
  const gw = await startGateway(t, {
    authenticators: { jwt: jwtAuth() },
    routes: [{ path: '/chat', auth: ['jwt'], upstream: upstream.url, mode: 'relay', firstMessageAuth: { timeoutMs: 3000 }, maxConnectionsPerIp: 1 }],
  });
  const ws = await openClient(t, gw.url('/chat'));
  ws.send(JSON.stringify({ type: 'auth', token: hs256({ sub: 'alice' }) }));
  t.equal(await echo(ws, 'in'), 'in', 'its own upgrade does not count against it');
  t.equal((await rawUpgrade(gw.port, '/chat')).status, 429, 'a second upgrade from the address is refused');
});

t.test('a replica killed without closing stops counting after redis.replicaTtlSec', async (t) => {
  const redis = await startRedis(t);
  const upstream = await startEchoUpstream(t);
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-replica-'));
  const port = await freePort();
  const config = configWith(redis, upstream.url, { maxConnectionsPerSubject: 1 }, { redis: { url: redis.url, replicaTtlSec: 2 } });
  const file = join(dir, 'gateway.config.json');
  writeFileSync(file, JSON.stringify({ ...config, listen: { host: '127.0.0.1', port }, authenticators: { jwt: { ...jwtAuth(), secret: '${JWT_SECRET}' } } }));
  const replica = spawnCli(t, ['--config', file], { env: cleanEnv({ JWT_SECRET: SECRET }) });
  await replica.waitFor('listening');
  const ws = await openClient(t, `ws://127.0.0.1:${port}/chat`, [], bearer('alice'));
  t.equal(await echo(ws, 'hi'), 'hi');

  const b = await startGateway(t, config);
  t.equal(await statusOf(b, 'alice'), 429, 'alice is connected on the other replica');
  replica.child.kill('SIGKILL');
  await replica.exited;
  const killedAt = Date.now();
  t.equal(await statusOf(b, 'alice'), 429, 'right after the kill its counts still stand');
  await until(async () => (await statusOf(b, 'alice')) === 101, 8000, 'the dead replica stops counting');
  const waited = Date.now() - killedAt;
  t.ok(waited >= 1500 && waited < 6000, `counted until its TTL ran out (${waited} ms)`);
});

t.test('Redis down: each replica limits alone and keeps serving; its counts are written back when Redis returns', async (t) => {
  const redis = await startRedis(t);
  const upstream = await startEchoUpstream(t);
  const config = configWith(redis, upstream.url, { maxConnectionsPerSubject: 1, rateLimit: { perSubject: '600/m', burst: 100 } });
  const a = await startGateway(t, config);
  const b = await startGateway(t, config);
  await redis.stop();
  await eventually(() => !a.gateway.redisReady && !b.gateway.redisReady, 5000, 'both see redis down');

  const onA = await openClient(t, a.url('/chat'), [], bearer('alice'));
  t.equal(await echo(onA, 'up'), 'up', 'a serves while redis is down');
  t.equal(await statusOf(a, 'alice'), 429, 'and still holds its own cap');
  t.equal(await statusOf(b, 'alice'), 101, 'b cannot know of a: per-replica until redis returns');
  t.notOk([...a.logs(), ...b.logs()].some((l) => Number(l.level) >= 50), 'nothing logged at error level');

  await redis.restart();
  await eventually(() => a.gateway.redisReady && b.gateway.redisReady, 8000, 'both reconnected');
  const c = await startGateway(t, config);
  await until(async () => (await statusOf(c, 'alice')) === 429, 3000, 'a wrote alice back to the empty redis: a new replica sees her');
  await closeClient(onA);
  await until(async () => (await statusOf(c, 'alice')) === 101, 3000, 'released again after the restart');
});
