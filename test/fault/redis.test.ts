// Fault injection, Redis (issue 7; SPEC 2.2 session store, 2.3 shared limits, 6.1 readiness): the real
// redis-server a gateway shares its state through is killed with SIGKILL mid-run and started again, empty,
// on the same port. While it is down: a session handshake is 503 byte for byte (fail closed), a jwt
// handshake on a route with shared limits is still served (each replica limits alone), a live relay
// connection keeps relaying; once it is back the gateway reconnects by itself and serves sessions again.
// No crash, nothing left open. (More Redis faults are in test/integration: session, shared-limits,
// replicas; docs/RELIABILITY.md lists them.)
import t from 'tap';
import { signSessionId } from '../../src/auth/session.js';
import { rejection } from '../helpers/assertions.js';
import { closeClient, echo, openClient } from '../helpers/client.js';
import { startGatewayWithUpstream } from '../helpers/gateway.js';
import { eventually } from '../helpers/net.js';
import { startRedis } from '../helpers/redis.js';
import { watchFaults } from '../helpers/settled.js';
import { hs256, jwtAuth } from '../helpers/tokens.js';
import { rawUpgrade } from '../helpers/upgrade.js';

const SESSION_SECRET = 'fault-session-secret-0123456789abcdef';
const cookie = (id: string) => ({ Cookie: `connect.sid=${encodeURIComponent(signSessionId(id, SESSION_SECRET))}` });
const sessionJson = () => JSON.stringify({ cookie: { originalMaxAge: 86_400_000, expires: new Date(Date.now() + 86_400_000).toISOString() }, passport: { user: 'alice' } });

t.test('redis killed (SIGKILL) mid-run and restarted on the same port', async (t) => {
  const watch = watchFaults(t);
  const redis = await startRedis(t);
  const { gw, upstream } = await startGatewayWithUpstream(t, (up) => ({
    redis: { url: redis.url },
    authenticators: { web: { type: 'session', secrets: [SESSION_SECRET], subjectPath: 'passport.user', store: { type: 'redis' } }, jwt: jwtAuth() },
    routes: [
      { path: '/sess', auth: ['web'], upstream: up, origins: '*' },
      { path: '/jwt', auth: ['jwt'], upstream: up, mode: 'relay', maxConnectionsPerSubject: 5, rateLimit: { perSubject: '100/s' } },
    ],
  }));
  await redis.client.set('sess:fault-1', sessionJson());
  t.equal((await rawUpgrade(gw.port, '/sess', cookie('fault-1'))).status, 101, 'a session is served while redis is up');
  // The baseline holds the lasting redis connections (the gateway's, its subscriber's, the test's own).
  await watch.rebase(gw);
  const live = await openClient(t, gw.url('/jwt'), [], { Authorization: `Bearer ${hs256({ sub: 'bob' })}` });
  t.equal(await echo(live, 'before'), 'before');

  await redis.stop();
  await eventually(() => !gw.gateway.redisReady, 5000, 'the gateway to see redis down');
  const reqId = 'redis-down-1';
  const down = await rawUpgrade(gw.port, '/sess', { ...cookie('fault-1'), 'X-Request-Id': reqId });
  t.equal(down.raw, rejection('503 Service Unavailable', 'unavailable', 'authentication backend unavailable', reqId), 'session while redis is down: 503 byte for byte');
  t.ok(down.closed);
  t.equal(await echo(live, 'during'), 'during', 'a live relay connection keeps relaying');
  const other = await openClient(t, gw.url('/jwt'), [], { Authorization: `Bearer ${hs256({ sub: 'carol' })}` });
  t.equal(await echo(other, 'limits alone'), 'limits alone', 'a jwt route with shared limits is served (this replica limits alone)');
  await closeClient(other);

  await redis.restart();
  await eventually(() => gw.gateway.redisReady, 8000, 'the gateway to reconnect by itself');
  await eventually(() => (redis.client as { isReady?: boolean }).isReady !== false, 5000, 'the test client to reconnect');
  // The restarted server is empty: the application writes its sessions again.
  await redis.client.set('sess:fault-1', sessionJson());
  const ws = await openClient(t, gw.url('/sess'), [], cookie('fault-1'));
  t.equal(await echo(ws, 'after'), 'after', 'sessions are served again');
  await closeClient(ws);
  t.equal(await echo(live, 'still'), 'still', 'the live connection outlived the outage');
  await closeClient(live);
  t.notOk(gw.logs().some((l) => Number(l.level) >= 60), 'nothing logged at fatal level');
  t.notOk(gw.logText().includes(signSessionId('fault-1', SESSION_SECRET)), 'the session cookie is never logged');
  await watch.check(gw, { upstream });
});
