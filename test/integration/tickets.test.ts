// SPEC 2.4 and 9 "Tickets": POST /tickets issues a one-time ticket for an authenticated caller; the
// `ticket` authenticator accepts it once, within its TTL, with the identity it was issued for.
import t from 'tap';
import { echo, openClient } from '../helpers/client.js';
import { startSidecar, type TestGateway } from '../helpers/gateway.js';
import { sleep } from '../helpers/net.js';
import { hs256, jwtAuth } from '../helpers/tokens.js';
import { rawUpgrade } from '../helpers/upgrade.js';
import { rejection } from '../helpers/assertions.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';
import type { Teardown } from '../helpers/net.js';

async function setup(t: Teardown, ttlSec = 30): Promise<{ gw: TestGateway; upstream: EchoUpstream; post(headers?: Record<string, string>, method?: string): Promise<Response> }> {
  const upstream = await startEchoUpstream(t);
  const gw = await startSidecar(t, {
    tickets: { path: '/tickets', ttlSec },
    authenticators: { jwt: jwtAuth({ from: ['bearer', 'cookie:token'] }), once: { type: 'ticket' } },
    routes: [
      { path: '/live', auth: ['once'], upstream: upstream.url },
      { path: '/api', auth: ['jwt'], upstream: upstream.url, origins: ['https://app.example.com'] },
    ],
  });
  const post = (headers: Record<string, string> = {}, method = 'POST') => fetch(`http://127.0.0.1:${gw.port}/tickets`, { method, headers });
  return { gw, upstream, post };
}

t.test('a ticket is issued for a bearer token and accepted once, with that identity', async (t) => {
  const s = await setup(t);
  const token = hs256({ sub: 'alice', scope: 'chat' });
  const res = await s.post({ Authorization: `Bearer ${token}`, 'X-Request-Id': 'tk-1' });
  t.equal(res.status, 200);
  t.equal(res.headers.get('cache-control'), 'no-store');
  t.equal(res.headers.get('x-request-id'), 'tk-1');
  const body = (await res.json()) as { ticket: string; expiresIn: number };
  t.equal(body.expiresIn, 30);
  t.match(body.ticket, /^[A-Za-z0-9_-]{43}$/, '256 random bits, base64url');

  const ws = await openClient(t, s.gw.url(`/live?ticket=${body.ticket}&room=1`));
  t.equal(await echo(ws, 'hi'), 'hi');
  const seen = s.upstream.seen[0]!;
  t.equal(seen.headers['x-auth-subject'], 'alice', 'the identity the ticket was issued for');
  t.match(JSON.parse(Buffer.from(seen.headers['x-auth-claims'] as string, 'base64url').toString()), { scope: 'chat' });
  t.equal(seen.url, '/live?room=1', 'the ticket is stripped before forwarding');

  const again = await rawUpgrade(s.gw.port, `/live?ticket=${body.ticket}`, { 'X-Request-Id': 'tk-2' });
  t.equal(again.raw, rejection('401 Unauthorized', 'invalid_token', 'ticket invalid or used', 'tk-2', ['WWW-Authenticate: Bearer realm="portcullis", error="invalid_token", error_description="ticket invalid or used"']), 'a second use is 401');
  t.equal(s.upstream.seen.length, 1);
  t.notOk(s.gw.logText().includes(body.ticket), 'the ticket is never logged');
  t.notOk(s.gw.logText().includes(token), 'nor the token');
});

t.test('a ticket expires after ttlSec; unknown tickets are 401', async (t) => {
  const s = await setup(t, 1);
  const { ticket } = (await (await s.post({ Authorization: `Bearer ${hs256({ sub: 'bob' })}` })).json()) as { ticket: string };
  await sleep(1100);
  t.equal((await rawUpgrade(s.gw.port, `/live?ticket=${ticket}`)).status, 401, 'expired');
  t.equal((await rawUpgrade(s.gw.port, `/live?ticket=${'A'.repeat(43)}`)).status, 401, 'unknown');
  t.equal((await rawUpgrade(s.gw.port, '/live')).status, 401, 'none');
  t.equal(s.upstream.seen.length, 0);
});

t.test('POST /tickets refusals: no credential 401, bad token 401, GET 405, cookie from a disallowed origin 403', async (t) => {
  const s = await setup(t);
  const none = await s.post();
  t.equal(none.status, 401);
  t.equal(none.headers.get('www-authenticate'), 'Bearer realm="portcullis"');
  t.same(await none.json(), { error: 'unauthorized', error_description: 'credentials required' });
  const bad = await s.post({ Authorization: `Bearer ${hs256({ sub: 'x' }, 'another-secret-0123456789abcdef-0123')}` });
  t.equal(bad.status, 401);
  t.same(await bad.json(), { error: 'invalid_token', error_description: 'signature invalid' });
  const get = await s.post({ Authorization: `Bearer ${hs256({ sub: 'x' })}` }, 'GET');
  t.equal(get.status, 405);
  t.equal(get.headers.get('allow'), 'POST');
  const cookie = `token=${hs256({ sub: 'carol' })}`;
  t.equal((await s.post({ Cookie: cookie, Origin: 'https://evil.example.net' })).status, 403, 'the route using this authenticator does not allow that origin');
  t.equal((await s.post({ Cookie: cookie, Origin: 'https://app.example.com' })).status, 200, 'an allowed origin');
  t.equal((await s.post({ Cookie: cookie })).status, 200, 'no Origin: not a browser');
});

t.test('a ticket authenticator needs top-level tickets', async (t) => {
  const { validateConfig } = await import('../../src/config/load.js');
  let problems: readonly string[] = [];
  try {
    validateConfig({ authenticators: { once: { type: 'ticket' } }, routes: [{ path: '/x', auth: ['once'], upstream: 'ws://127.0.0.1:1' }] }, { env: {} });
  } catch (err) {
    problems = (err as { problems: readonly string[] }).problems;
  }
  t.same(problems, ['tickets: required by authenticators.once (tickets are issued at tickets.path)']);
});
