import t from 'tap';
import { WebSocket } from 'ws';
import { startGateway } from '../helpers/gateway.js';
import { hs256, jwtAuth } from '../helpers/tokens.js';
import { rawUpgrade } from '../helpers/upgrade.js';
import { startEchoUpstream } from '../helpers/upstream.js';

t.test('a valid bearer token is piped to the upstream and echoes both ways', async (t) => {
  const upstream = await startEchoUpstream(t);
  const gw = await startGateway(t, {
    authenticators: { jwt: jwtAuth() },
    routes: [{ path: '/chat', auth: ['jwt'], upstream: upstream.url }],
  });
  const ws = new WebSocket(gw.url('/chat?room=1'), { headers: { Authorization: `Bearer ${hs256({ sub: 'alice', scope: 'chat' })}`, 'X-Auth-Subject': 'mallory' } });
  await new Promise((r) => ws.once('open', r));
  ws.send('ping');
  const echo = await new Promise<string>((r) => ws.once('message', (data) => r(String(data))));
  t.equal(echo, 'ping');
  ws.close();
  const seen = upstream.seen[0]!;
  t.equal(seen.url, '/chat?room=1');
  t.equal(seen.headers['x-auth-subject'], 'alice');
  t.match(JSON.parse(Buffer.from(seen.headers['x-auth-claims'] as string, 'base64url').toString()), { sub: 'alice', scope: 'chat' });
  t.equal(seen.headers.authorization, undefined, 'credential stripped');
  t.equal(seen.headers['x-forwarded-for'], '127.0.0.1');
  t.equal(seen.headers['x-forwarded-proto'], 'http');
  t.ok(seen.headers['x-request-id']);
});

t.test('no token: 401 with the exact SPEC bytes and nothing reaches the upstream', async (t) => {
  const upstream = await startEchoUpstream(t);
  const gw = await startGateway(t, {
    authenticators: { jwt: jwtAuth() },
    routes: [{ path: '/chat', auth: ['jwt'], upstream: upstream.url }],
  });
  const res = await rawUpgrade(gw.port, '/chat', { 'X-Request-Id': 'req-1' });
  t.equal(
    res.raw,
    'HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 67\r\nCache-Control: no-store\r\nX-Request-Id: req-1\r\nWWW-Authenticate: Bearer realm="portcullis"\r\n\r\n{"error":"unauthorized","error_description":"credentials required"}',
  );
  t.ok(res.closed);
  t.equal(upstream.seen.length, 0);
});
