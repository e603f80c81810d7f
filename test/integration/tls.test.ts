// SPEC 2 (listen.tls), 5 (wss:// upstreams: verified unless tlsVerify false; ca "file:PATH") and 9
// (relative paths resolve against the config's directory), over real TLS sockets. The certificates are
// made at test time with the openssl CLI: a self-signed CA, a server certificate it signs for
// IP:127.0.0.1, and an unrelated second CA.
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { IncomingMessage } from 'node:http';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import t, { type Test } from 'tap';
import { WebSocket, WebSocketServer } from 'ws';
import { echo, openClient } from '../helpers/client.js';
import { startGateway, startSidecar, type TestGateway } from '../helpers/gateway.js';
import { listenLocal } from '../helpers/net.js';
import { hs256, jwtAuth } from '../helpers/tokens.js';
import { rawUpgrade } from '../helpers/upgrade.js';
import { startEchoUpstream, type SeenRequest } from '../helpers/upstream.js';

const MODES = ['pipe', 'relay'] as const;
type Mode = (typeof MODES)[number];
const HAS_OPENSSL = spawnSync('which', ['openssl'], { stdio: 'ignore' }).status === 0;
const NEEDS_OPENSSL = { skip: HAS_OPENSSL ? false : 'the openssl CLI is not installed (`which openssl` found nothing): cannot make test certificates' } as const;

interface Pki {
  dir: string;
  /** The CA that signed cert.pem (ca.pem). */
  ca: string;
  cert: string;
  key: string;
}

/** Writes ca.pem, cert.pem + key.pem (signed by ca.pem, for IP:127.0.0.1) and other-ca.pem into `dir`. */
function makePki(dir: string): Pki {
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const selfSignedCa = (name: string) => openssl('req', '-x509', ...ec, '-days', '1', '-subj', `/CN=${name}`, '-keyout', `${name}-key.pem`, '-out', `${name}.pem`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  selfSignedCa('ca');
  selfSignedCa('other-ca');
  openssl('req', ...ec, '-subj', '/CN=127.0.0.1', '-keyout', 'key.pem', '-out', 'server.csr');
  execFileSync('sh', ['-c', 'printf "subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n" > server.ext'], { cwd: dir });
  openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca-key.pem', '-set_serial', '2', '-days', '1', '-extfile', 'server.ext', '-out', 'cert.pem');
  const read = (name: string) => readFileSync(join(dir, name), 'utf8');
  return { dir, ca: read('ca.pem'), cert: read('cert.pem'), key: read('key.pem') };
}

/** A wss:// echo upstream (https + ws) with the server certificate, recording each handshake. */
async function startWssUpstream(t: Test, pki: Pki): Promise<{ server: HttpsServer; port: number; seen: SeenRequest[]; url: (host?: string) => string }> {
  const server = createHttpsServer({ cert: pki.cert, key: pki.key });
  const wss = new WebSocketServer({ server });
  const seen: SeenRequest[] = [];
  wss.on('connection', (ws, req: IncomingMessage) => {
    seen.push({ url: req.url ?? '', headers: req.headers, protocol: ws.protocol });
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    ws.on('error', () => {});
  });
  server.on('tlsClientError', () => {});
  const port = await listenLocal(t, server, async () => {
    for (const ws of wss.clients) ws.terminate();
    await new Promise((r) => wss.close(r));
  });
  return { server, port, seen, url: (host = '127.0.0.1') => `wss://${host}:${port}` };
}

const bearer = (sub = 'alice') => ({ Authorization: `Bearer ${hs256({ sub })}` });

const badGateway = (id: string) => {
  const body = JSON.stringify({ error: 'bad_gateway', error_description: 'upstream unavailable' });
  return (
    'HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Type: application/json\r\n' +
    `Content-Length: ${Buffer.byteLength(body)}\r\nCache-Control: no-store\r\nX-Request-Id: ${id}\r\n\r\n${body}`
  );
};

/** A gateway (config baseDir = the PKI dir) with `/chat` (jwt) proxied to `upstream` in `mode`. */
function gatewayTo(t: Test, pki: Pki, mode: Mode, upstream: string, route: Record<string, unknown> = {}): Promise<TestGateway> {
  return startGateway(t, { authenticators: { jwt: jwtAuth() }, routes: [{ path: '/chat', auth: ['jwt'], upstream, mode, ...route }] }, { baseDir: pki.dir });
}

/** How a client WebSocket's handshake ended: 101 (open), an HTTP status, or 0 with the error. */
async function outcome(t: Test, ws: WebSocket): Promise<{ status: number; ws?: WebSocket; headers?: IncomingMessage['headers']; error?: Error }> {
  t.teardown(() => ws.terminate());
  return new Promise((resolve) => {
    ws.once('open', () => resolve({ status: 101, ws }));
    ws.once('unexpected-response', (_req, res) => {
      resolve({ status: res.statusCode ?? -1, headers: res.headers });
      res.resume();
    });
    ws.once('error', (error) => resolve({ status: 0, error }));
  });
}

const connectFailures = (gw: TestGateway) => gw.logs().filter((l) => l.msg === 'upstream connect failed');

for (const mode of MODES) {
  t.test(`${mode}: wss:// upstreams`, NEEDS_OPENSSL, async (t) => {
    const pki = makePki(t.testdir());
    const upstream = await startWssUpstream(t, pki);

    await t.test('tlsVerify default: a certificate from an unknown CA is refused → 502', async (t) => {
      const gw = await gatewayTo(t, pki, mode, upstream.url());
      const res = await rawUpgrade(gw.port, '/chat', { ...bearer(), 'X-Request-Id': 'tls-1' });
      t.equal(res.raw, badGateway('tls-1'), '502, exact bytes');
      t.equal(upstream.seen.length, 0, 'no WebSocket handshake reached the upstream');
      t.match(connectFailures(gw), [{ error: { code: /UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED|UNABLE_TO_GET_ISSUER/ } }], 'logged as a certificate failure');
    });

    await t.test('ca: "file:ca.pem" (relative to the config directory) → verified, echo works', async (t) => {
      const gw = await gatewayTo(t, pki, mode, upstream.url(), { ca: 'file:ca.pem' });
      const ws = await openClient(t, gw.url('/chat'), [], bearer('alice'));
      t.equal(await echo(ws, 'over tls'), 'over tls');
      t.equal(upstream.seen.length, 1);
      t.equal(upstream.seen[0]?.url, '/chat');
      t.equal(upstream.seen[0]?.headers['x-auth-subject'], 'alice', 'with the identity headers');
      t.equal(upstream.seen[0]?.headers.authorization, undefined, 'and without the credential');
      t.equal(connectFailures(gw).length, 0);
    });

    await t.test('ca: another CA → still refused → 502', async (t) => {
      const gw = await gatewayTo(t, pki, mode, upstream.url(), { ca: 'file:other-ca.pem' });
      const res = await rawUpgrade(gw.port, '/chat', { ...bearer(), 'X-Request-Id': 'tls-2' });
      t.equal(res.raw, badGateway('tls-2'), 'the ca is a trust anchor, not a switch that turns verification off');
      t.equal(upstream.seen.length, 1, 'nothing more reached the upstream');
    });

    await t.test('ca: the right CA but the wrong host name → 502', async (t) => {
      // The certificate is for IP:127.0.0.1 only; "localhost" resolves to 127.0.0.1 but is not in it.
      const gw = await gatewayTo(t, pki, mode, upstream.url('localhost'), { ca: 'file:ca.pem' });
      const res = await rawUpgrade(gw.port, '/chat', { ...bearer(), 'X-Request-Id': 'tls-3' });
      t.equal(res.raw, badGateway('tls-3'));
      t.match(connectFailures(gw), [{ error: { code: 'ERR_TLS_CERT_ALTNAME_INVALID' } }], 'refused for the host name');
      t.equal(upstream.seen.length, 1);
    });

    await t.test('tlsVerify: false → accepted without verification', async (t) => {
      const gw = await gatewayTo(t, pki, mode, upstream.url(), { tlsVerify: false });
      const ws = await openClient(t, gw.url('/chat'), [], bearer('bob'));
      t.equal(await echo(ws, 'unverified'), 'unverified');
      t.equal(upstream.seen.at(-1)?.headers['x-auth-subject'], 'bob');
      const other = await gatewayTo(t, pki, mode, upstream.url('localhost'), { tlsVerify: false });
      const ws2 = await openClient(t, other.url('/chat'), [], bearer('carol'));
      t.equal(await echo(ws2, 'any name'), 'any name', 'the host name is not checked either');
    });

    await t.test('ca: a file that does not exist is a config error naming the field', async (t) => {
      await t.rejects(gatewayTo(t, pki, mode, upstream.url(), { ca: 'file:nope.pem' }), { name: 'ConfigError', problems: [/^routes\.0\.ca: /] });
    });
  });

  t.test(`${mode}: listen.tls: the sidecar server speaks wss://`, NEEDS_OPENSSL, async (t) => {
    const pki = makePki(t.testdir());
    const upstream = await startEchoUpstream(t);
    const config = {
      listen: { port: 0, tls: { cert: 'cert.pem', key: 'key.pem' } },
      authenticators: { jwt: jwtAuth() },
      routes: [{ path: '/chat', auth: ['jwt'], upstream: upstream.url, mode }],
    };
    const { port } = await startSidecar(t, config, { baseDir: pki.dir });

    // The certificate served is the configured one (paths relative to the config directory).
    const peer = await new Promise<X509Certificate>((resolve, reject) => {
      const socket = tlsConnect({ host: '127.0.0.1', port, ca: pki.ca }, () => {
        resolve(socket.getPeerX509Certificate()!);
        socket.destroy();
      });
      socket.once('error', reject);
    });
    t.equal(peer.fingerprint256, new X509Certificate(pki.cert).fingerprint256, 'listen.tls.cert is served');

    const wss = `wss://127.0.0.1:${port}/chat`;
    const client = await outcome(t, new WebSocket(wss, { headers: bearer('alice'), ca: pki.ca }));
    t.equal(client.status, 101, 'a wss:// client that trusts the CA is accepted');
    if (client.ws) t.equal(await echo(client.ws, 'secure'), 'secure', 'and gets its echo');
    t.equal(upstream.seen.length, 1);
    t.equal(upstream.seen[0]?.headers['x-auth-subject'], 'alice', 'authenticated');
    t.equal(upstream.seen[0]?.headers['x-forwarded-proto'], 'https', 'X-Forwarded-Proto says the client came over TLS');

    const anonymousClient = await outcome(t, new WebSocket(wss, { ca: pki.ca }));
    t.equal(anonymousClient.status, 401, 'over TLS, a handshake without a token is still 401');
    t.equal(anonymousClient.headers?.['www-authenticate'], 'Bearer realm="portcullis"');

    const untrusting = await outcome(t, new WebSocket(wss, { headers: bearer('alice') }));
    t.equal(untrusting.status, 0, 'a client that does not trust the CA does not connect');
    t.match(untrusting.error, { code: /UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED|UNABLE_TO_GET_ISSUER/ });

    const plain = await outcome(t, new WebSocket(`ws://127.0.0.1:${port}/chat`, { headers: bearer('alice') }));
    t.equal(plain.status, 0, 'a plain ws:// client fails');
    t.ok(plain.error, 'with an error, never an open socket');
    const raw = await rawUpgrade(port, '/chat', bearer('alice'));
    t.notOk(raw.raw.startsWith('HTTP/1.1 101'), 'a plaintext upgrade is never switched');
    t.ok(raw.closed, 'and its connection is closed');
    t.equal(upstream.seen.length, 1, 'none of these reached the upstream');
  });
}
