// SPEC 2.2 (session), 2.3 (origins, stripCredentials), 3 (503 when a backend is down), 8, 9: express-session
// compatible cookie sessions over real handshakes, with the memory store and a REAL redis-server in the
// key layout connect-redis writes.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import { signSessionId } from '../../src/auth/session.js';
import { createGateway } from '../../src/gateway.js';
import { assertInvalidToken, assertNoLeak as assertNoneLeaked } from '../helpers/assertions.js';
import { echo, openClient } from '../helpers/client.js';
import { captureLog, startGateway, startGatewayWithUpstream, type Setup, type TestGateway } from '../helpers/gateway.js';
import { eventually, freePort, sleep } from '../helpers/net.js';
import { startRedis } from '../helpers/redis.js';
import { rawUpgrade, type RawResponse } from '../helpers/upgrade.js';
import { startEchoUpstream } from '../helpers/upstream.js';

const SECRET_NEW = 'session-secret-new-0123456789abcdefXYZ';
const SECRET_OLD = 'session-secret-old-0123456789abcdefQRS';
const ORIGIN = 'https://app.example.com';
const claimsOf = (header: unknown) => JSON.parse(Buffer.from(String(header), 'base64url').toString()) as Record<string, unknown>;
/** The `Cookie` pair express-session sets: `connect.sid=s%3A<id>.<sig>` (URL-encoded). */
const sessionCookie = (id: string, secret = SECRET_NEW, name = 'connect.sid') => `${name}=${encodeURIComponent(signSessionId(id, secret))}`;
let counter = 0;
const newId = () => `sid-${process.pid}-${++counter}-${Math.random().toString(36).slice(2)}`;

/** A session as express-session + passport store it (connect-redis writes exactly this JSON). */
function session(extra: Record<string, unknown> = { passport: { user: 'alice' } }, expiresInMs = 86_400_000) {
  return {
    cookie: { originalMaxAge: expiresInMs, expires: new Date(Date.now() + expiresInMs).toISOString(), httpOnly: true, path: '/' },
    ...extra,
  };
}

const setup = (t: Test, auth: Record<string, unknown>, extra: Record<string, unknown> = {}, route: Record<string, unknown> = {}): Promise<Setup> =>
  startGatewayWithUpstream(t, (upstream) => ({
    ...extra,
    authenticators: { web: { type: 'session', secrets: [SECRET_NEW, SECRET_OLD], subjectPath: 'passport.user', ...auth } },
    routes: [
      { path: '/live', auth: ['web'], upstream, origins: [ORIGIN], ...route },
      { path: '/public', auth: [], upstream },
    ],
  }));

/** Neither the log nor the response holds the session secrets, nor any of `secrets` (cookies, session ids). */
const assertNoLeak = (t: Test, gw: TestGateway, secrets: string[], res?: RawResponse) => assertNoneLeaked(t, gw, [SECRET_NEW, SECRET_OLD, ...secrets], res);

const assertInvalid = (t: Test, res: RawResponse, description: string, s: Setup, secrets: string[], seenBefore = 0) =>
  assertInvalidToken(t, res, description, s, [SECRET_NEW, SECRET_OLD, ...secrets], seenBefore);

// ---- memory store ----

t.test('memory store: a logged-in session is accepted; only the session cookie is removed', async (t) => {
  const s = await setup(t, { store: { type: 'memory' } });
  const id = newId();
  s.gw.gateway.sessionStore('web')!.set(id, session({ passport: { user: 'alice' }, theme: 'dark' }));
  const cookie = sessionCookie(id);
  const ws = await openClient(t, s.gw.url('/live'), [], { Cookie: `theme=dark; ${cookie}; lang=en`, Origin: ORIGIN });
  t.equal(await echo(ws, 'hello'), 'hello');
  const seen = s.upstream.seen[0]!;
  t.equal(seen.headers['x-auth-subject'], 'alice');
  t.equal(seen.headers.cookie, 'theme=dark; lang=en', 'other cookies forwarded as they were');
  t.notOk(JSON.stringify(seen.headers).includes(id), 'the session id does not travel upstream');
  t.match(claimsOf(seen.headers['x-auth-claims']), { passport: { user: 'alice' }, theme: 'dark' });
  t.match(s.gw.logs().find((l) => l.status === 101), { authenticator: 'web', subject: 'alice' });
  assertNoLeak(t, s.gw, [id, cookie.split('=')[1]!]);
});

t.test('secret rotation: a cookie signed with the second secret verifies; an unknown secret does not', async (t) => {
  const s = await setup(t, {});
  const id = newId();
  s.gw.gateway.sessionStore('web')!.set(id, session());
  t.equal((await rawUpgrade(s.gw.port, '/live', { Cookie: sessionCookie(id, SECRET_OLD) })).status, 101, 'old secret verifies');
  t.equal((await rawUpgrade(s.gw.port, '/live', { Cookie: sessionCookie(id, SECRET_NEW) })).status, 101, 'new secret verifies');
  const foreign = sessionCookie(id, 'some-other-secret-0123456789abcdef');
  assertInvalid(t, await rawUpgrade(s.gw.port, '/live', { Cookie: foreign }), 'session cookie invalid', s, [id], 2);
});

t.test('bad signatures are 401 "session cookie invalid"', async (t) => {
  const s = await setup(t, {});
  const id = newId();
  s.gw.gateway.sessionStore('web')!.set(id, session());
  const signed = signSessionId(id, SECRET_NEW); // s:<id>.<sig>
  const other = newId();
  s.gw.gateway.sessionStore('web')!.set(other, session({ passport: { user: 'mallory' } }));
  const bad = [
    `${signed.slice(0, -2)}xx`, // tampered signature
    `s:${other}.${signed.slice(signed.lastIndexOf('.') + 1)}`, // another id under this signature
    id, // unsigned, no s: prefix
    `s:${id}`, // prefix but no signature
    signed.slice(2), // signature but no s: prefix
  ];
  for (const value of bad) {
    const res = await rawUpgrade(s.gw.port, '/live', { Cookie: `connect.sid=${encodeURIComponent(value)}` });
    assertInvalid(t, res, 'session cookie invalid', s, [id, other]);
  }
});

t.test('a validly signed unknown id is 401 "session not found"', async (t) => {
  const s = await setup(t, {});
  const id = newId();
  assertInvalid(t, await rawUpgrade(s.gw.port, '/live', { Cookie: sessionCookie(id) }), 'session not found', s, [id]);
});

t.test('cookie.expires in the past is 401 "session expired"', async (t) => {
  const s = await setup(t, {});
  const id = newId();
  s.gw.gateway.sessionStore('web')!.set(id, session({ passport: { user: 'alice' } }, -1000));
  assertInvalid(t, await rawUpgrade(s.gw.port, '/live', { Cookie: sessionCookie(id) }), 'session expired', s, [id]);
  // A session without cookie.expires (a browser-session cookie) does not expire by itself.
  const id2 = newId();
  s.gw.gateway.sessionStore('web')!.set(id2, { cookie: { originalMaxAge: null, expires: null, httpOnly: true, path: '/' }, passport: { user: 'alice' } });
  t.equal((await rawUpgrade(s.gw.port, '/live', { Cookie: sessionCookie(id2) })).status, 101);
});

t.test('a session without subjectPath is 401 "session not logged in"', async (t) => {
  const s = await setup(t, {});
  const cases: Record<string, unknown>[] = [{}, { passport: {} }, { passport: { user: { nested: 'object' } } }, { passport: 'alice' }];
  for (const extra of cases) {
    const id = newId();
    s.gw.gateway.sessionStore('web')!.set(id, session(extra));
    assertInvalid(t, await rawUpgrade(s.gw.port, '/live', { Cookie: sessionCookie(id) }), 'session not logged in', s, [id]);
  }
});

t.test('subjectPath "user.id" (nested) and a custom cookie name', async (t) => {
  const s = await setup(t, { subjectPath: 'user.id', cookie: 'app.sid' });
  const id = newId();
  s.gw.gateway.sessionStore('web')!.set(id, session({ user: { id: 'u-42', name: 'Alice' } }));
  const res = await rawUpgrade(s.gw.port, '/live', { Cookie: `connect.sid=whatever; ${sessionCookie(id, SECRET_NEW, 'app.sid')}` });
  t.equal(res.status, 101);
  t.equal(s.upstream.seen[0]?.headers['x-auth-subject'], 'u-42');
  t.equal(s.upstream.seen[0]?.headers.cookie, 'connect.sid=whatever', 'only the configured cookie is removed');
  const numeric = newId();
  s.gw.gateway.sessionStore('web')!.set(numeric, session({ user: { id: 42 } }));
  t.equal((await rawUpgrade(s.gw.port, '/live', { Cookie: sessionCookie(numeric, SECRET_NEW, 'app.sid') })).status, 101);
  t.equal(s.upstream.seen[1]?.headers['x-auth-subject'], '42');
  // The default cookie name is not looked at any more.
  const res2 = await rawUpgrade(s.gw.port, '/live', { Cookie: sessionCookie(id) });
  t.equal(res2.status, 401);
  t.equal(res2.headers['www-authenticate'], 'Bearer realm="portcullis"', 'no credential of this authenticator');
  assertNoLeak(t, s.gw, [id, numeric]);
});

t.test('origins: a session route refuses a foreign Origin (CSWSH) and requires origins in the config', async (t) => {
  const s = await setup(t, {});
  const id = newId();
  s.gw.gateway.sessionStore('web')!.set(id, session());
  const res = await rawUpgrade(s.gw.port, '/live', { Cookie: sessionCookie(id), Origin: 'https://evil.example' });
  t.equal(res.status, 403);
  t.same(JSON.parse(res.body), { error: 'forbidden', error_description: 'origin not allowed' });
  t.equal(s.upstream.seen.length, 0);
  t.equal((await rawUpgrade(s.gw.port, '/live', { Cookie: sessionCookie(id), Origin: ORIGIN })).status, 101);
  await t.rejects(
    startGateway(t, { authenticators: { web: { type: 'session', secrets: [SECRET_NEW], subjectPath: 'passport.user' } }, routes: [{ path: '/live', auth: ['web'], upstream: s.upstream.url }] }),
    { name: 'ConfigError', message: /routes\.0\.origins/ },
  );
});

t.test('stripCredentials: false keeps the session cookie upstream', async (t) => {
  const s = await setup(t, {}, {}, { stripCredentials: false });
  const id = newId();
  s.gw.gateway.sessionStore('web')!.set(id, session());
  const cookie = sessionCookie(id);
  t.equal((await rawUpgrade(s.gw.port, '/live', { Cookie: `a=1; ${cookie}` })).status, 101);
  t.equal(s.upstream.seen[0]?.headers.cookie, `a=1; ${cookie}`);
});

// ---- redis store (connect-redis layout) ----

t.test('redis store: the session JSON connect-redis writes under sess:<id> is read', async (t) => {
  const redis = await startRedis(t);
  const s = await setup(t, { store: { type: 'redis' } }, { redis: { url: redis.url } });
  const id = newId();
  await redis.client.set(`sess:${id}`, JSON.stringify(session({ passport: { user: 'alice' } })));
  const ws = await openClient(t, s.gw.url('/live'), [], { Cookie: `${sessionCookie(id)}; csrf=abc`, Origin: ORIGIN });
  t.equal(await echo(ws, 'over redis'), 'over redis');
  t.equal(s.upstream.seen[0]?.headers['x-auth-subject'], 'alice');
  t.equal(s.upstream.seen[0]?.headers.cookie, 'csrf=abc');
  // Logging out (the app deletes the key) is seen by the next handshake.
  await redis.client.del(`sess:${id}`);
  assertInvalid(t, await rawUpgrade(s.gw.port, '/live', { Cookie: sessionCookie(id) }), 'session not found', s, [id], 1);
  // Expired and anonymous sessions in redis.
  const expired = newId();
  await redis.client.set(`sess:${expired}`, JSON.stringify(session({ passport: { user: 'alice' } }, -60_000)));
  assertInvalid(t, await rawUpgrade(s.gw.port, '/live', { Cookie: sessionCookie(expired) }), 'session expired', s, [expired], 1);
  const anon = newId();
  await redis.client.set(`sess:${anon}`, JSON.stringify(session({})));
  assertInvalid(t, await rawUpgrade(s.gw.port, '/live', { Cookie: sessionCookie(anon) }), 'session not logged in', s, [anon], 1);
  assertNoLeak(t, s.gw, [id]);
});

t.test('redis store: a custom prefix', async (t) => {
  const redis = await startRedis(t);
  const s = await setup(t, { store: { type: 'redis', prefix: 'myapp:sess:' } }, { redis: { url: redis.url } });
  const id = newId();
  await redis.client.set(`myapp:sess:${id}`, JSON.stringify(session({ passport: { user: 'bob' } })));
  t.equal((await rawUpgrade(s.gw.port, '/live', { Cookie: sessionCookie(id) })).status, 101);
  t.equal(s.upstream.seen[0]?.headers['x-auth-subject'], 'bob');
  // The default prefix is not read.
  const other = newId();
  await redis.client.set(`sess:${other}`, JSON.stringify(session({ passport: { user: 'carol' } })));
  assertInvalid(t, await rawUpgrade(s.gw.port, '/live', { Cookie: sessionCookie(other) }), 'session not found', s, [other], 1);
});

t.test('redis store needs redis.url', async (t) => {
  await t.rejects(
    startGateway(t, {
      authenticators: { web: { type: 'session', secrets: [SECRET_NEW], subjectPath: 'passport.user', store: { type: 'redis' } } },
      routes: [{ path: '/live', auth: ['web'], origins: [ORIGIN] }],
    }),
    { name: 'ConfigError', message: /redis\.url/ },
  );
});

t.test('redis stopped: the handshake is 503 promptly, the process keeps serving', async (t) => {
  const redis = await startRedis(t);
  const s = await setup(t, { store: { type: 'redis' } }, { redis: { url: redis.url }, limits: { handshakeTimeoutMs: 4000 } });
  const id = newId();
  await redis.client.set(`sess:${id}`, JSON.stringify(session()));
  t.equal((await rawUpgrade(s.gw.port, '/live', { Cookie: sessionCookie(id) })).status, 101, 'works while redis is up');
  t.equal(s.gw.gateway.redisReady, true);
  await redis.stop();
  for (let i = 0; i < 3; i++) {
    const started = Date.now();
    const res = await rawUpgrade(s.gw.port, '/live', { Cookie: sessionCookie(id) }, { timeoutMs: 6000 });
    const ms = Date.now() - started;
    t.equal(res.status, 503, `attempt ${i + 1}: 503`);
    t.same(JSON.parse(res.body || 'null'), { error: 'unavailable', error_description: 'authentication backend unavailable' }, 'the backend is down (not a timeout)');
    t.ok(ms < 1000, `answered promptly (${ms} ms, handshakeTimeoutMs 4000)`);
    t.ok(res.closed);
  }
  t.equal(s.upstream.seen.length, 1, 'nothing reached the upstream while redis was down');
  t.equal(s.gw.gateway.redisReady, false);
  // Still serving: a public route on the same gateway works.
  t.equal((await rawUpgrade(s.gw.port, '/public')).status, 101);
  // No credential is still 401, not 503: the store is not consulted without a cookie.
  t.equal((await rawUpgrade(s.gw.port, '/live')).status, 401);
  t.ok(s.gw.logs().some((l) => l.status === 503), 'the 503 is logged');
  assertNoLeak(t, s.gw, [id]);
});

t.test('redis unreachable from the start: ready() resolves after the first try and handshakes are 503', async (t) => {
  // Built by hand rather than with startGateway: when ready() never resolves, startGateway never returns
  // and nothing would close the gateway.
  const port = await freePort();
  const upstream = await startEchoUpstream(t);
  const { logger } = captureLog();
  const gateway = createGateway(
    {
      redis: { url: `redis://127.0.0.1:${port}` },
      authenticators: { web: { type: 'session', secrets: [SECRET_NEW], subjectPath: 'passport.user', store: { type: 'redis' } } },
      routes: [{ path: '/live', auth: ['web'], upstream: upstream.url, origins: [ORIGIN] }],
    },
    { logger },
  );
  const server = createServer((_req, res) => res.writeHead(404).end());
  server.on('upgrade', gateway.handleUpgrade);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(async () => {
    // Gateway.close() awaits the first connection attempt too: give it a redis to connect to, then stop it.
    const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'ignore'] });
    await new Promise<void>((resolve) => {
      let out = '';
      child.stdout.on('data', (chunk) => (out += chunk) && out.includes('Ready to accept connections') && resolve());
      child.once('exit', () => resolve());
    });
    await gateway.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
  });
  const ready = await Promise.race([gateway.ready().then(() => true), sleep(3000).then(() => false)]);
  t.ok(ready, 'ready() resolves although redis is down');
  t.equal(gateway.redisReady, false);
  const t0 = Date.now();
  const { port: gwPort } = server.address() as AddressInfo;
  const res = await rawUpgrade(gwPort, '/live', { Cookie: sessionCookie(newId()) });
  t.equal(res.status, 503);
  t.equal(JSON.parse(res.body || 'null')?.error, 'unavailable');
  t.ok(Date.now() - t0 < 1000, 'promptly');
  t.equal(upstream.seen.length, 0);
});

t.test('redis killed and restarted mid-run: 503 while it is down, no crash, served again once it is back', async (t) => {
  const redis = await startRedis(t);
  const crashes: Error[] = [];
  const onCrash = (err: Error) => crashes.push(err);
  process.on('uncaughtException', onCrash);
  t.teardown(() => void process.off('uncaughtException', onCrash));
  const s = await startGatewayWithUpstream(t, (upstream) => ({
    redis: { url: redis.url },
    authenticators: { web: { type: 'session', secrets: [SECRET_NEW], subjectPath: 'passport.user', store: { type: 'redis' } } },
    routes: [{ path: '/chat', auth: ['web'], upstream, origins: '*' }],
  }));
  const seed = () => redis.client.set('sess:restart-1', JSON.stringify(session({ passport: { user: 'alice' } })));
  await seed();
  const headers = { Cookie: sessionCookie('restart-1') };
  t.equal((await rawUpgrade(s.gw.port, '/chat', headers)).status, 101, 'served while redis is up');

  await redis.stop();
  const started = Date.now();
  const down = await rawUpgrade(s.gw.port, '/chat', headers);
  t.equal(down.status, 503, 'fails closed while redis is down');
  t.ok(Date.now() - started < 2000, 'promptly');
  t.equal(s.gw.gateway.redisReady, false, 'readiness reports it');

  await redis.restart();
  await eventually(() => s.gw.gateway.redisReady, 5000, 'the gateway reconnects by itself');
  await eventually(() => (redis.client as { isReady?: boolean }).isReady !== false, 5000, 'the test client too');
  await seed();
  t.equal((await rawUpgrade(s.gw.port, '/chat', headers)).status, 101, 'served again once redis is back');
  t.same(crashes, [], 'no uncaught exception at any point');
});
