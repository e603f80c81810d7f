// SPEC 2.3 `revalidateSec`: a session or introspection identity is re-checked while connected; one that
// is gone or inactive closes the connection (4401 where the gateway speaks WebSocket).
import { once } from 'node:events';
import { createServer } from 'node:http';
import t from 'tap';
import type { WebSocket } from 'ws';
import { signSessionId } from '../../src/auth/session.js';
import { echo, openClient } from '../helpers/client.js';
import { startGatewayWithUpstream } from '../helpers/gateway.js';
import { listenLocal, sleep } from '../helpers/net.js';

const SECRET = 'session-secret-0123456789abcdef-0123';
const cookie = (id: string) => `connect.sid=${encodeURIComponent(signSessionId(id, SECRET))}`;
const closed = (ws: WebSocket) => once(ws, 'close').then(([code, reason]) => ({ code: code as number, reason: String(reason) }));

for (const mode of ['relay', 'pipe'] as const) {
  t.test(`${mode}: a deleted session ends its connection within revalidateSec; a live one stays`, async (t) => {
    const s = await startGatewayWithUpstream(t, (upstream) => ({
      authenticators: { web: { type: 'session', secrets: [SECRET], subjectPath: 'user' } },
      routes: [{ path: '/chat', auth: ['web'], upstream, mode, origins: '*', revalidateSec: 1 }],
    }));
    const store = s.gw.gateway.sessionStore('web')!;
    store.set('gone', { cookie: {}, user: 'alice' });
    store.set('kept', { cookie: {}, user: 'bob' });
    const alice = await openClient(t, s.gw.url('/chat'), [], { Cookie: cookie('gone') });
    const bob = await openClient(t, s.gw.url('/chat'), [], { Cookie: cookie('kept') });
    t.equal(await echo(alice, 'a'), 'a');
    const started = Date.now();
    const aliceClosed = closed(alice);
    store.delete('gone');
    const { code, reason } = await aliceClosed;
    t.ok(Date.now() - started <= 2500, `closed within about one period (${Date.now() - started} ms)`);
    if (mode === 'relay') t.same({ code, reason }, { code: 4401, reason: 'session ended' });
    else t.equal(code, 1006, 'pipe: both sockets destroyed');
    await sleep(1200);
    t.equal(await echo(bob, 'b'), 'b', 'a session that still exists keeps its connection across checks');
  });
}

t.test('introspection: a token that turns inactive at the source ends the connection, past the cache', async (t) => {
  let active = true;
  let calls = 0;
  const endpoint = createServer((req, res) => {
    calls++;
    req.resume();
    res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(active ? { active: true, sub: 'alice' } : { active: false }));
  });
  await listenLocal(t, endpoint);
  const port = (endpoint.address() as { port: number }).port;
  const s = await startGatewayWithUpstream(t, (upstream) => ({
    authenticators: { opaque: { type: 'introspection', from: ['bearer'], url: `http://127.0.0.1:${port}/introspect`, cacheTtlSec: 300 } },
    routes: [{ path: '/chat', auth: ['opaque'], upstream, mode: 'relay', revalidateSec: 1 }],
  }));
  const ws = await openClient(t, s.gw.url('/chat'), [], { Authorization: 'Bearer opaque-token-1' });
  t.equal(await echo(ws, 'x'), 'x');
  const before = calls;
  const wsClosed = closed(ws);
  active = false;
  t.same(await wsClosed, { code: 4401, reason: 'session ended' });
  t.ok(calls > before, 'the endpoint was asked again although the cache would still answer');
  t.notOk(s.gw.logText().includes('opaque-token-1'), 'the token is never logged');
});

t.test('revalidateSec needs a session or introspection authenticator', async (t) => {
  const { validateConfig } = await import('../../src/config/load.js');
  let problems: readonly string[] = [];
  try {
    validateConfig({ authenticators: { j: { type: 'jwt', from: ['bearer'], secret: SECRET, algorithms: ['HS256'] } }, routes: [{ path: '/x', auth: ['j'], upstream: 'ws://127.0.0.1:1', revalidateSec: 5 }] }, { env: {} });
  } catch (err) {
    problems = (err as { problems: readonly string[] }).problems;
  }
  t.same(problems, ['routes.0.revalidateSec: needs a session or introspection authenticator in auth']);
});
