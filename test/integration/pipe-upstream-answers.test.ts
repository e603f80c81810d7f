// Pipe mode reads the upstream's answer to the upgrade off the raw socket (src/handoff/raw-response.ts):
// whatever a real server may send back — a chunked refusal, a body up to the close, an interim answer
// before the 101, frames in the same packet as the 101, garbage — against a scripted raw upstream.
import t from 'tap';
import { once } from 'node:events';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { startGateway } from '../helpers/gateway.js';
import { eventually, type Teardown } from '../helpers/net.js';
import { hs256, jwtAuth } from '../helpers/tokens.js';
import { rawUpgrade } from '../helpers/upgrade.js';

/** A TCP upstream that reads one request head and answers with `script(path)` (then closes unless told not to). */
async function scriptedUpstream(t: Teardown, script: (path: string, head: string) => { answer: string | Buffer; keepOpen?: boolean }) {
  const heads: string[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let data = '';
    socket.on('data', (chunk) => {
      if (data.includes('\r\n\r\n')) return;
      data += chunk.toString('latin1');
      const end = data.indexOf('\r\n\r\n');
      if (end === -1) return;
      const head = data.slice(0, end);
      heads.push(head);
      const { answer, keepOpen } = script(head.split(' ')[1]!, head);
      socket.write(answer);
      if (!keepOpen) socket.end();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return { url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}`, heads, sockets };
}

const auth = () => ({ Authorization: `Bearer ${hs256({ sub: 'alice' })}` });

t.test("an upstream's refusal is passed through whatever its framing, re-framed with Content-Length", async (t) => {
  const answers: Record<string, string> = {
    '/chunked': 'HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nX-Why: policy\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n',
    '/length': 'HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 4\r\n\r\nslowEXTRA',
    '/close': 'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm="up"\r\n\r\nbye',
    '/empty': 'HTTP/1.0 404 Not Found\r\n\r\n',
    '/cookies': 'HTTP/1.1 403 Forbidden\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n',
  };
  const up = await scriptedUpstream(t, (path) => ({ answer: answers[path]! }));
  const gw = await startGateway(t, { authenticators: { jwt: jwtAuth() }, routes: [{ path: '/*', auth: ['jwt'], upstream: up.url }] });
  const chunked = await rawUpgrade(gw.port, '/chunked', auth());
  t.equal(chunked.status, 403);
  t.equal(chunked.body, 'hello world', 'the chunks joined');
  t.equal(chunked.headers['content-length'], '11');
  t.equal(chunked.headers['transfer-encoding'], undefined, 'no chunked framing left');
  t.equal(chunked.headers['x-why'], 'policy');
  const length = await rawUpgrade(gw.port, '/length', auth());
  t.same([length.status, length.body, length.headers['retry-after']], [429, 'slow', '7'], 'only Content-Length bytes');
  const close = await rawUpgrade(gw.port, '/close', auth());
  t.same([close.status, close.body, close.headers['www-authenticate']], [401, 'bye', 'Basic realm="up"'], 'a body delimited by the close');
  const empty = await rawUpgrade(gw.port, '/empty', auth());
  t.same([empty.status, empty.body, empty.headers['content-length']], [404, '', '0']);
  const cookies = await rawUpgrade(gw.port, '/cookies', auth());
  t.match(cookies.raw, /set-cookie: a=1\r\nset-cookie: b=2\r\n/, 'each Set-Cookie on its own line');
  for (const res of [chunked, length, close, empty, cookies]) t.ok(res.closed, 'the gateway closed the client');
  await eventually(() => gw.gateway.connections === 0 && up.sockets.size === 0, 3000, 'nothing left open');
});

t.test('a 101 after interim answers, with frames in the same packet, reaches the client byte for byte', async (t) => {
  const frame = Buffer.from([0x81, 0x02, 0x68, 0x69]); // text "hi"
  const up = await scriptedUpstream(t, () => ({
    answer: Buffer.concat([
      Buffer.from('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n'),
      Buffer.from('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\nX-Upstream: yes\r\n\r\n'),
      frame,
    ]),
    keepOpen: true,
  }));
  const gw = await startGateway(t, { authenticators: { jwt: jwtAuth() }, routes: [{ path: '/*', auth: ['jwt'], upstream: up.url }] });
  const res = await rawUpgrade(gw.port, '/ws', auth());
  t.equal(res.statusLine, 'HTTP/1.1 101 Switching Protocols');
  t.equal(res.headers['x-upstream'], 'yes', "the upstream's header lines as sent");
  t.equal(res.headers['sec-websocket-accept'], 'x');
  t.equal(res.headers.link, undefined, 'interim answers are not passed on');
  t.equal(Buffer.from(res.body, 'latin1').toString('hex'), frame.toString('hex'), 'the frame that came with the 101');
  const head = up.heads[0]!;
  t.match(head, /^GET \/ws HTTP\/1\.1\r\n/);
  t.match(head, /\r\nx-auth-subject: alice(\r\n|$)/);
  t.notMatch(head, /authorization:/i, 'the credential was stripped');
});

t.test('garbage, a huge head or a malformed line from the upstream is 502, and the gateway serves on', async (t) => {
  const answers: Record<string, string> = {
    '/ssh': 'SSH-2.0-OpenSSH_9.2\r\n\r\n',
    '/huge': `HTTP/1.1 101 Switching Protocols\r\nX-Big: ${'a'.repeat(20000)}\r\n\r\n`,
    '/lf': 'HTTP/1.1 403 Forbidden\nContent-Length: 0\n\n',
    '/badline': 'HTTP/1.1 101 Switching Protocols\r\nthis is not a header\r\n\r\n',
    '/http2': 'HTTP/2 101 Switching Protocols\r\n\r\n',
    '/nothing': '',
  };
  const up = await scriptedUpstream(t, (path) => ({ answer: answers[path]! }));
  const gw = await startGateway(t, {
    authenticators: { jwt: jwtAuth() },
    routes: [{ path: '/*', auth: ['jwt'], upstream: up.url }],
    limits: { handshakeTimeoutMs: 1500 },
  });
  for (const path of Object.keys(answers)) {
    const res = await rawUpgrade(gw.port, path, auth());
    t.equal(res.status, 502, `${path}: 502`);
    t.match(res.body, /upstream unavailable/);
  }
  await eventually(() => gw.gateway.connections === 0 && up.sockets.size === 0, 3000, 'nothing left open');
});

t.test('a subject no header can carry is sent percent-encoded, never as a header line of its own', async (t) => {
  const up = await scriptedUpstream(t, () => ({ answer: 'HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n' }));
  const gw = await startGateway(t, { authenticators: { jwt: jwtAuth() }, routes: [{ path: '/*', auth: ['jwt'], upstream: up.url }] });
  const res = await rawUpgrade(gw.port, '/x', { Authorization: `Bearer ${hs256({ sub: 'alice\r\nx-admin: 1' })}` });
  t.equal(res.status, 403, "the upstream's answer");
  t.equal(up.heads.filter((h) => /\r\nx-admin:/i.test(h)).length, 0, 'the upstream never saw an injected line');
  t.match(up.heads[0]!, /\r\nx-auth-subject: alice%0D%0Ax-admin%3A%201\r\n/);
  await eventually(() => gw.gateway.connections === 0 && up.sockets.size === 0, 3000, 'nothing left open');
});
