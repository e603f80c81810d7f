import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Server as SocketIoServer } from 'socket.io';
import { io as connectSocketIo, type Socket } from 'socket.io-client';
import t from 'tap';
import { startSidecar, type TestGateway } from '../helpers/gateway.js';
import type { Teardown } from '../helpers/net.js';
import { hs256, jwtAuth } from '../helpers/tokens.js';

/** A real Socket.IO server; it answers 'whoami' with its name and the subject the gateway forwarded. */
async function startSocketIo(t: Teardown, name: string) {
  const http: Server = createServer();
  const io = new SocketIoServer(http);
  const handshakes: string[] = [];
  io.on('connection', (socket) => {
    handshakes.push(String(socket.handshake.headers['x-auth-subject']));
    socket.on('whoami', (reply: (answer: unknown) => void) =>
      reply({ server: name, subject: socket.handshake.headers['x-auth-subject'] ?? null, token: socket.handshake.query.access_token ?? null }),
    );
  });
  http.listen(0, '127.0.0.1');
  await once(http, 'listening');
  t.teardown(async () => {
    io.disconnectSockets(true);
    await new Promise((r) => io.close(r));
  });
  return { url: `ws://127.0.0.1:${(http.address() as AddressInfo).port}`, handshakes };
}

/** The sidecar with one sticky Socket.IO route (HTTP long-polling too) over `upstreams`. */
function startSocketIoSidecar(t: Teardown, upstreams: string[]): Promise<TestGateway> {
  return startSidecar(t, {
    authenticators: { jwt: jwtAuth() },
    routes: [{ path: '/socket.io/*', auth: ['jwt'], upstream: upstreams, http: true, sticky: true }],
  });
}

function whoami(socket: Socket): Promise<{ server: string; subject: string | null; token: unknown }> {
  return new Promise((resolve) => socket.emit('whoami', resolve));
}

t.test('Socket.IO through the gateway: polling then websocket, authenticated, sticky across two upstreams', async (t) => {
  const a = await startSocketIo(t, 'a');
  const b = await startSocketIo(t, 'b');
  const gw = await startSocketIoSidecar(t, [a.url, b.url]);
  const token = hs256({ sub: 'alice' });

  for (const round of [1, 2, 3]) {
    // withCredentials gives engine.io-client a cookie jar in Node, as a browser keeps cookies.
    const client = connectSocketIo(`http://127.0.0.1:${gw.port}`, { query: { access_token: token }, withCredentials: true, reconnection: false, forceNew: true });
    t.teardown(() => void client.close());
    const opened = new Promise<string>((r) => client.io.once('open', () => r(client.io.engine.transport.name)));
    await new Promise((r) => client.once('connect', () => r(undefined)));
    t.equal(await opened, 'polling', `round ${round}: starts on long-polling`);
    const first = await whoami(client);
    t.equal(first.subject, 'alice', 'the upstream sees the verified subject');
    t.equal(first.token, null, 'and never the token');
    if (client.io.engine.transport.name !== 'websocket') await new Promise((r) => client.io.engine.once('upgrade', r));
    t.equal(client.io.engine.transport.name, 'websocket', 'then upgrades to a websocket through the gateway');
    const second = await whoami(client);
    t.equal(second.server, first.server, 'polling and websocket reached the same upstream (sticky)');
    t.equal(second.subject, 'alice');
    client.close();
  }
  t.ok(a.handshakes.length > 0 && b.handshakes.length > 0, 'both upstreams served clients');
  t.notOk(gw.logText().includes(token), 'the token is never logged');
});

t.test('Socket.IO without a token: the polling handshake gets the 401 and no upstream sees it', async (t) => {
  const a = await startSocketIo(t, 'a');
  const gw = await startSocketIoSidecar(t, [a.url]);
  const client = connectSocketIo(`http://127.0.0.1:${gw.port}`, { reconnection: false, forceNew: true });
  t.teardown(() => void client.close());
  const err = await new Promise<Error & { context?: { status?: number } }>((r) => client.once('connect_error', r));
  t.ok(err, 'connect_error');
  t.equal(err.context?.status, 401);
  // The same request by hand: an ordinary HTTP 401 with the JSON body and the challenge.
  const res = await fetch(`http://127.0.0.1:${gw.port}/socket.io/?EIO=4&transport=polling`, { headers: { 'X-Request-Id': 'sio-1' } });
  t.equal(res.status, 401);
  t.equal(res.headers.get('www-authenticate'), 'Bearer realm="portcullis"');
  t.equal(res.headers.get('x-request-id'), 'sio-1');
  t.equal(res.headers.get('cache-control'), 'no-store');
  t.same(await res.json(), { error: 'unauthorized', error_description: 'credentials required' });
  t.equal(a.handshakes.length, 0);
});
