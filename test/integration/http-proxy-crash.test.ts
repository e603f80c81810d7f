// Why the gateway does not use http-proxy 1.18.1 (TOOLCHAIN 3, http-party/node-http-proxy#1468): a client
// that resets mid-handshake, while the upstream has not answered 101 yet, crashes the process with an
// uncaught ECONNRESET even though `proxy.on('error')` is set. portcullis survives the same scenario.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import t from 'tap';
import { startGateway } from '../helpers/gateway.js';
import { eventually, sleep, type Teardown } from '../helpers/net.js';
import { rawUpgrade, requestHead, sendRaw, upgradeHeaders } from '../helpers/upgrade.js';
import { startDelayedUpstream } from '../helpers/upstream.js';

const require = createRequire(import.meta.url);
const httpProxyDir = dirname(require.resolve('http-proxy/package.json'));
const httpProxyVersion = (require('http-proxy/package.json') as { version: string }).version;

// The child: an upstream that delays its 101 by 400 ms, a gateway-like server doing what the http-proxy
// README says (proxy.ws in the 'upgrade' listener, an 'error' listener on the proxy), and a client that
// resets its connection once the upstream has the upgrade request. MITIGATE=1 adds TOOLCHAIN 3's mitigation.
const CHILD = String.raw`
'use strict';
const http = require('node:http');
const net = require('node:net');
const crypto = require('node:crypto');
const httpProxy = require(process.env.HTTP_PROXY_PATH);
const mitigate = process.env.MITIGATE === '1';
const upstreamSockets = new Set();
let signalUpgrade;
const upstreamGotUpgrade = new Promise((r) => (signalUpgrade = r));
const upstream = http.createServer();
upstream.on('connection', (s) => { upstreamSockets.add(s); s.once('close', () => upstreamSockets.delete(s)); });
upstream.on('upgrade', (req, socket) => {
  socket.on('error', () => {});
  socket.on('end', () => socket.destroy());
  socket.resume();
  signalUpgrade();
  setTimeout(() => {
    if (socket.destroyed) return;
    const accept = crypto.createHash('sha1').update(req.headers['sec-websocket-key'] + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ' + accept + '\r\n\r\n');
  }, 400);
});
upstream.listen(0, '127.0.0.1', () => {
  const target = 'ws://127.0.0.1:' + upstream.address().port;
  const proxy = httpProxy.createProxyServer({ ws: true });
  proxy.on('error', (err, req, socket) => {
    console.log('proxy error event: ' + err.code);
    if (socket && !socket.destroyed) socket.destroy();
  });
  if (mitigate) {
    proxy.on('proxyReqWs', (proxyReq, req, socket) => {
      const onClose = () => proxyReq.destroy();
      socket.once('close', onClose);
      proxyReq.once('upgrade', (_res, proxySocket) => {
        socket.off('close', onClose);
        socket.once('close', () => proxySocket.destroy());
        if (socket.destroyed) proxySocket.destroy();
      });
    });
  }
  const gateway = http.createServer();
  gateway.on('upgrade', (req, socket, head) => {
    if (mitigate) socket.on('error', () => {});
    proxy.ws(req, socket, head, { target });
  });
  gateway.listen(0, '127.0.0.1', () => {
    const client = net.connect(gateway.address().port, '127.0.0.1');
    client.on('error', () => {});
    client.write('GET /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
    upstreamGotUpgrade.then(() => {
      client.resetAndDestroy();
      // Past the upstream's delayed 101, so a leak would show.
      setTimeout(() => {
        console.log('SURVIVED upstreamOpen=' + upstreamSockets.size);
        process.exit(0);
      }, 800);
    });
  });
});
`;

interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

async function runChild(t: Teardown, script: string, mitigate: boolean): Promise<ChildResult> {
  const child = spawn(process.execPath, [script], {
    env: { PATH: process.env.PATH ?? '', HTTP_PROXY_PATH: httpProxyDir, MITIGATE: mitigate ? '1' : '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => void (child.exitCode === null && child.signalCode === null && child.kill('SIGKILL')));
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  const [code, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
  clearTimeout(timer);
  return { code, signal, stdout, stderr };
}

t.test(`http-proxy ${httpProxyVersion}: a client reset mid-handshake crashes the process`, async (t) => {
  t.equal(httpProxyVersion, '1.18.1', 'the devDependency under test');
  const dir = t.testdir({ 'gateway-http-proxy.cjs': CHILD });
  const script = join(dir, 'gateway-http-proxy.cjs');
  // Three runs: the crash is deterministic, not a race the test happened to win.
  for (let run = 1; run <= 3; run++) {
    const res = await runChild(t, script, false);
    t.not(res.code, 0, `run ${run}: the child exits non-zero (code ${res.code}, signal ${res.signal})`);
    t.match(res.stderr, /ECONNRESET/, `run ${run}: stderr shows the uncaught ECONNRESET`);
    t.match(res.stderr, /Unhandled 'error' event/, `run ${run}: thrown as an unhandled 'error' event, despite proxy.on('error')`);
    t.notMatch(res.stdout, /SURVIVED/, `run ${run}: the child did not survive`);
  }
});

t.test(`http-proxy ${httpProxyVersion} with TOOLCHAIN 3's mitigation survives the same scenario (control)`, async (t) => {
  const dir = t.testdir({ 'gateway-http-proxy.cjs': CHILD });
  const res = await runChild(t, join(dir, 'gateway-http-proxy.cjs'), true);
  t.equal(res.code, 0, `exit code 0 (stderr: ${res.stderr.slice(0, 200)})`);
  t.match(res.stdout, /SURVIVED upstreamOpen=0/, 'survives, and the upstream-side socket is closed');
});

t.test('portcullis survives the same scenario in-process', async (t) => {
  const uncaught: unknown[] = [];
  const onUncaught = (err: unknown) => uncaught.push(err);
  process.on('uncaughtException', onUncaught);
  t.teardown(() => void process.off('uncaughtException', onUncaught));

  // The child's upstream, in-process: delays its 101 by 400 ms, tracks its sockets.
  const upstream = await startDelayedUpstream(t, 400);
  const gw = await startGateway(t, { routes: [{ path: '/chat', auth: [], upstream: upstream.url }] });
  for (let run = 1; run <= 3; run++) {
    const client = sendRaw(gw.port, requestHead('/chat', upgradeHeaders()));
    client.on('error', () => {});
    await eventually(() => upstream.upgrades === run, 2000, 'the upstream to receive the upgrade');
    client.resetAndDestroy();
    await sleep(500); // past the upstream's delayed 101
    t.same(uncaught, [], `run ${run}: no uncaught exception`);
    t.equal(upstream.open, 0, `run ${run}: the upstream-side socket is closed`);
    t.equal(gw.gateway.connections, 0, `run ${run}: no live connection left`);
  }
  // And it keeps serving.
  const res = await rawUpgrade(gw.port, '/chat', {});
  t.equal(res.status, 101, 'the gateway still accepts upgrades afterwards');
});
