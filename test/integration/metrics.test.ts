// SPEC 6.2: the prom-client metrics of a gateway after accepted, rejected, abandoned and proxied traffic,
// read from `gateway.metrics` (the admin `GET /metrics` serves the same text). Labels stay bounded:
// no subject and no client address ever appears as a label value.
import t from 'tap';
import { closeClient, echo, openClient } from '../helpers/client.js';
import { startGateway } from '../helpers/gateway.js';
import { createAdminServer } from '../../src/admin.js';
import { eventually, freePort, listenLocal } from '../helpers/net.js';
import { hs256, jwtAuth } from '../helpers/tokens.js';
import { rawUpgrade } from '../helpers/upgrade.js';
import { startEchoUpstream } from '../helpers/upstream.js';

/** The value of one sample line `name{labels} value`, labels in the order prom-client writes them. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    const match = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const have = match[2] ? match[2].split(/,(?=[a-z_]+=")/) : [];
    if (have.length === wanted.length && wanted.every((w) => have.includes(w))) return Number(match[3]);
  }
  return undefined;
}

t.test('counts and labels after real traffic', async (t) => {
  const upstream = await startEchoUpstream(t);
  const dead = `ws://127.0.0.1:${await freePort()}`;
  const gw = await startGateway(t, {
    authenticators: { jwt: jwtAuth() },
    routes: [
      { path: '/chat', auth: ['jwt'], upstream: upstream.url },
      { path: '/relay', auth: ['jwt'], upstream: upstream.url, mode: 'relay' },
      { path: '/down', auth: ['jwt'], upstream: dead },
    ],
  });
  const alice = { Authorization: `Bearer ${hs256({ sub: 'alice' })}` };
  const piped = [await openClient(t, gw.url('/chat'), [], alice), await openClient(t, gw.url('/chat'), [], alice)];
  const relayed = await openClient(t, gw.url('/relay'), [], alice);
  for (const ws of [...piped, relayed]) t.equal(await echo(ws, 'x'.repeat(1000)), 'x'.repeat(1000));
  t.equal((await rawUpgrade(gw.port, '/chat', { Authorization: 'Bearer not.a.token' })).status, 401);
  t.equal((await rawUpgrade(gw.port, '/chat')).status, 401);
  t.equal((await rawUpgrade(gw.port, '/nowhere')).status, 404);
  t.equal((await rawUpgrade(gw.port, '/down', alice)).status, 502);

  let text = await gw.gateway.metrics.text();
  t.equal(sample(text, 'portcullis_upgrades_total', { route: '/chat', result: 'accepted', status: '101' }), 2);
  t.equal(sample(text, 'portcullis_upgrades_total', { route: '/relay', result: 'accepted', status: '101' }), 1);
  t.equal(sample(text, 'portcullis_upgrades_total', { route: '/chat', result: 'rejected', status: '401' }), 2);
  t.equal(sample(text, 'portcullis_upgrades_total', { route: '', result: 'rejected', status: '404' }), 1, 'no route: empty route label');
  t.equal(sample(text, 'portcullis_upgrades_total', { route: '/down', result: 'accepted', status: '101' }), 1, 'the checks passed on /down...');
  t.equal(sample(text, 'portcullis_upstream_errors_total', { route: '/down', target: dead }), 1, '...and its upstream failed');
  t.equal(sample(text, 'portcullis_connections', { route: '/chat', mode: 'pipe' }), 2);
  t.equal(sample(text, 'portcullis_connections', { route: '/relay', mode: 'relay' }), 1);
  // jwt ran on every handshake that reached it: 3 accepted, a bad token, none found, and /down.
  t.equal(sample(text, 'portcullis_auth_duration_seconds_count', { authenticator: 'jwt' }), 6, 'jwt timed on each of the 6 handshakes it saw');
  t.ok((sample(text, 'portcullis_bytes_total', { route: '/chat', direction: 'in' }) ?? 0) > 2000, 'client bytes in on /chat');
  t.ok((sample(text, 'portcullis_bytes_total', { route: '/chat', direction: 'out' }) ?? 0) > 2000, 'bytes out on /chat');
  t.equal(sample(text, 'portcullis_revocations_total'), 0);
  t.ok(sample(text, 'process_cpu_user_seconds_total') !== undefined, 'default process metrics');
  t.ok(sample(text, 'nodejs_eventloop_lag_seconds') !== undefined, 'default node metrics');

  const inBefore = sample(text, 'portcullis_bytes_total', { route: '/relay', direction: 'in' }) ?? 0;
  t.equal(await echo(relayed, 'y'.repeat(5000)), 'y'.repeat(5000));
  t.equal(gw.gateway.revoke({ subject: 'alice' }), 3);
  await eventually(() => gw.gateway.connections === 0, 3000, 'all closed');
  text = await gw.gateway.metrics.text();
  t.equal(sample(text, 'portcullis_connections', { route: '/chat', mode: 'pipe' }), 0, 'gauge back to 0');
  t.ok((sample(text, 'portcullis_bytes_total', { route: '/relay', direction: 'in' }) ?? 0) >= inBefore + 5000, 'bytes moved after the last scrape are counted at close');
  t.equal(sample(text, 'portcullis_revocations_total'), 1);

  const labelValues = [...text.matchAll(/(\w+)="([^"]*)"/g)].map(([, k, v]) => [k, v]);
  t.notOk(labelValues.some(([, v]) => v === 'alice'), 'no subject in any label');
  t.same([...new Set(labelValues.filter(([, v]) => v!.includes('127.0.0.1')).map(([k]) => k))], ['target'], 'addresses only in configured upstream targets');
  for (const [k] of labelValues) t.notMatch(k, /^(subject|ip|remote|sub|user)/, `label ${k} is bounded`);
});

t.test('one registry per gateway: two gateways and a reload never collide', async (t) => {
  const upstream = await startEchoUpstream(t);
  const config = { authenticators: { jwt: jwtAuth() }, routes: [{ path: '/chat', auth: ['jwt'], upstream: upstream.url }] };
  const a = await startGateway(t, config);
  const b = await startGateway(t, config);
  await a.gateway.reload({ ...config, routes: [...config.routes, { path: '/more', auth: [], upstream: upstream.url }] });
  t.equal((await rawUpgrade(a.port, '/more')).status, 101);
  t.equal((await rawUpgrade(b.port, '/chat')).status, 401);
  const [ta, tb] = await Promise.all([a.gateway.metrics.text(), b.gateway.metrics.text()]);
  t.equal(sample(ta, 'portcullis_upgrades_total', { route: '/more', result: 'accepted', status: '101' }), 1);
  t.equal(sample(ta, 'portcullis_upgrades_total', { route: '/chat', result: 'rejected', status: '401' }), undefined, 'a did not see b');
  t.equal(sample(tb, 'portcullis_upgrades_total', { route: '/chat', result: 'rejected', status: '401' }), 1);
});

t.test('GET /metrics on the admin listener: admin token required, Prometheus text', async (t) => {
  const upstream = await startEchoUpstream(t);
  const gw = await startGateway(t, { admin: { port: 0, token: 'admin-token-metrics-0123' }, authenticators: { jwt: jwtAuth() }, routes: [{ path: '/chat', auth: ['jwt'], upstream: upstream.url }] });
  t.equal((await rawUpgrade(gw.port, '/chat')).status, 401);
  const admin = createAdminServer(gw.gateway, () => true);
  const port = await listenLocal(t, admin);
  t.equal((await fetch(`http://127.0.0.1:${port}/metrics`)).status, 401, 'no token: 401');
  const res = await fetch(`http://127.0.0.1:${port}/metrics`, { headers: { Authorization: 'Bearer admin-token-metrics-0123' } });
  t.equal(res.status, 200);
  t.equal(res.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
  const text = await res.text();
  t.equal(sample(text, 'portcullis_upgrades_total', { route: '/chat', result: 'rejected', status: '401' }), 1);
  t.notOk(text.includes('admin-token-metrics-0123'));
});
