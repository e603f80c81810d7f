// Fault injection, identity backends (issue 7; SPEC 2.2, 3 step 6, 9): a real JWKS endpoint, a real
// introspection endpoint and a real forward-auth service, each on one address that goes down, hangs,
// answers beyond the timeout, answers garbage, closes or resets mid-answer, or answers valid HTTP that
// means nothing. Each case: 503 byte for byte (`authentication backend unavailable`, or `authentication
// timed out` when only the handshake deadline can end the wait), never 401 and never a 101, nothing
// reaches the upstream, nothing is left open, no credential in the log, and the same gateway accepts
// again once the backend is back.
import { generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import jsonwebtoken from 'jsonwebtoken';
import t, { type Test } from 'tap';
import { rejection } from '../helpers/assertions.js';
import { closeClient, echo, openClient } from '../helpers/client.js';
import { FaultServer, type Fault } from '../helpers/fault-server.js';
import { startGatewayWithUpstream, type Setup } from '../helpers/gateway.js';
import { eventually } from '../helpers/net.js';
import { watchFaults } from '../helpers/settled.js';
import { rawUpgrade } from '../helpers/upgrade.js';

/** `limits.handshakeTimeoutMs`: the most any authenticator may take. */
const DEADLINE_MS = 800;
/** `timeoutMs` of the introspection and forwardAuth authenticators (jwt's JWKS fetch has a fixed 3 s). */
const BACKEND_TIMEOUT_MS = 300;
/** How late a `slow` backend answers: beyond both. */
const SLOW_MS = 1500;

type Case = Fault | 'bad answer';
const FAULTS: [Case, string][] = [
  ['down', 'nothing listens'],
  ['hang', 'accepts, reads the request, never answers'],
  ['slow', `answers after ${SLOW_MS} ms`],
  ['garbage', 'answers bytes that are not HTTP'],
  ['eof', 'accepts and closes without a byte'],
  ['reset', 'sends half a head, then a TCP reset'],
  ['bad answer', 'valid HTTP that is not an answer (HTML, a 500)'],
];

/** What a family's setup hands the test. */
interface Started {
  backend: FaultServer;
  s: Setup;
  /** A credential that needs the backend to be asked (never asked before). */
  credential(): { headers: Record<string, string>; secret: string };
  /** JWKS only: a credential the gateway can check without the backend (a key of the last good set). */
  kept?(): Record<string, string>;
}

/** One identity backend: how the gateway uses it; `bad` switches its healthy handler to a meaningless answer. */
interface Family {
  readonly name: string;
  /** Faults only the handshake deadline ends (jwt's JWKS fetch has no timeout of its own below it). */
  readonly timedOut: Case[];
  readonly bad: { on: boolean };
  start(t: Test): Promise<Started>;
}

function family(name: string, timedOut: Case[], start: (t: Test, bad: () => boolean) => Promise<Started>): Family {
  const bad = { on: false };
  return { name, timedOut, bad, start: (t) => start(t, () => bad.on) };
}

/** An ES256 key with its public JWK, made at test time (fast to generate). */
function ecKey(): { kid: string; privateKey: KeyObject; jwk: Record<string, unknown> } {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const kid = `k-${randomUUID()}`;
  return { kid, privateKey, jwk: { ...publicKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'ES256' } };
}

const gatewayFor = (t: Test, auth: Record<string, unknown>, route: Record<string, unknown> = {}) =>
  startGatewayWithUpstream(t, (upstream) => ({
    limits: { handshakeTimeoutMs: DEADLINE_MS },
    authenticators: { idp: auth },
    routes: [{ path: '/chat', auth: ['idp'], upstream, ...route }],
  }));

const jwks = family('JWKS endpoint (jwt with jwksUri)', ['hang', 'slow'], async (t, bad) => {
  const published = [ecKey()];
  const backend = await new FaultServer({
    request: (_req, res) =>
      bad()
        ? res.writeHead(200, { 'Content-Type': 'text/html' }).end('<html>maintenance</html>')
        : res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ keys: published.map((k) => k.jwk) })),
  }).start(t);
  backend.slowMs = SLOW_MS;
  const sign = (key: ReturnType<typeof ecKey>) =>
    jsonwebtoken.sign({ sub: 'alice', jti: randomUUID() }, key.privateKey, { algorithm: 'ES256', keyid: key.kid, expiresIn: 3600 });
  // Cooldown 0: every unknown kid asks the endpoint, so each case meets the fault.
  const s = await gatewayFor(t, { type: 'jwt', from: ['bearer'], jwksUri: backend.http('/.well-known/jwks.json'), algorithms: ['ES256'], jwksCooldownSec: 0 });
  return {
    backend,
    s,
    // A rotated key: published, but unknown to the gateway until it refetches.
    credential() {
      const key = ecKey();
      published.push(key);
      const token = sign(key);
      return { headers: { Authorization: `Bearer ${token}` }, secret: token };
    },
    kept: () => ({ Authorization: `Bearer ${sign(published[0]!)}` }),
  };
});

const introspection = family('introspection endpoint', [], async (t, bad) => {
  const backend = await new FaultServer({
    request: (_req, res) =>
      bad()
        ? res.writeHead(200, { 'Content-Type': 'text/html' }).end('<html>login</html>')
        : res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ active: true, sub: 'alice', exp: Math.floor(Date.now() / 1000) + 3600 })),
  }).start(t);
  backend.slowMs = SLOW_MS;
  const s = await gatewayFor(t, { type: 'introspection', from: ['bearer'], url: backend.http('/introspect'), cacheTtlSec: 0, timeoutMs: BACKEND_TIMEOUT_MS });
  return {
    backend,
    s,
    credential() {
      const token = `opaque-${randomUUID()}`;
      return { headers: { Authorization: `Bearer ${token}` }, secret: token };
    },
  };
});

const forwardAuth = family('forward-auth service', [], async (t, bad) => {
  const backend = await new FaultServer({
    request: (_req, res) => (bad() ? res.writeHead(500).end('oops') : res.writeHead(200, { 'X-Auth-Request-User': 'alice' }).end()),
  }).start(t);
  backend.slowMs = SLOW_MS;
  const s = await gatewayFor(t, { type: 'forwardAuth', url: backend.http('/auth'), timeoutMs: BACKEND_TIMEOUT_MS }, { origins: '*' });
  return {
    backend,
    s,
    credential() {
      const cookie = `fa-${randomUUID()}`;
      return { headers: { Cookie: `_oauth2_proxy=${cookie}` }, secret: cookie };
    },
  };
});

for (const fam of [jwks, introspection, forwardAuth]) {
  t.test(`${fam.name}: every fault → 503, then recovery`, async (t) => {
    const watch = watchFaults(t);
    const started = await fam.start(t);
    const { backend, s } = started;
    const setBad = (on: boolean) => void (fam.bad.on = on);
    const secrets: string[] = [];
    const serve = async (what: string) => {
      const { headers, secret } = started.credential();
      secrets.push(secret);
      const ws = await openClient(t, s.gw.url('/chat'), [], headers);
      t.equal(await echo(ws, what), what, `accepted and served: ${what}`);
      await closeClient(ws);
    };
    await serve('warm-up');
    await watch.rebase(s.gw);

    for (const [fault, what] of FAULTS) {
      if (fault === 'bad answer') {
        await backend.set('ok');
        setBad(true);
      } else {
        await backend.set(fault);
      }
      const seen = s.upstream.seen.length;
      const { headers, secret } = started.credential();
      secrets.push(secret);
      const reqId = `fault-${fault.replace(' ', '-')}`;
      const res = await rawUpgrade(s.gw.port, '/chat', { ...headers, 'X-Request-Id': reqId }, { timeoutMs: DEADLINE_MS + 3000 });
      const description = fam.timedOut.includes(fault) ? 'authentication timed out' : 'authentication backend unavailable';
      t.equal(res.raw, rejection('503 Service Unavailable', 'unavailable', description, reqId), `${fault} (${what}): 503 '${description}' byte for byte`);
      t.ok(res.closed, `${fault}: the gateway closed the client socket`);
      t.equal(s.upstream.seen.length, seen, `${fault}: nothing reached the upstream`);
      const line = s.gw.logs().find((l) => l.reqId === reqId && l.msg === 'upgrade rejected');
      // A deadline is the gateway's own decision; a backend failure names the authenticator that met it.
      t.match(line, fam.timedOut.includes(fault) ? { status: 503, code: 'GW_ERR_AUTH_TIMEOUT' } : { status: 503, code: 'GW_ERR_AUTH_UNAVAILABLE', authenticator: 'idp' }, `${fault}: the decision is logged`);
      if (started.kept) {
        const kept = await rawUpgrade(s.gw.port, '/chat', started.kept());
        t.equal(kept.status, 101, `${fault}: a key of the last good set is still accepted`);
      }
      // The gateway gives up on a backend request it no longer waits for; jwt's shared JWKS fetch instead
      // runs to its own 3 s timeout (later handshakes may join it), so it is the one wait left at the deadline.
      const jwksWait = started.kept !== undefined && fam.timedOut.includes(fault);
      if (jwksWait && fault === 'hang') await eventually(() => backend.held.open === 0, 5000, 'the hung JWKS fetch to end at its timeout');
      await watch.check(s.gw, { upstream: s.upstream, 'backend (requests held)': backend.held });

      setBad(false);
      await backend.set('ok');
      await serve(`after ${fault}`);
      await watch.check(s.gw, { upstream: s.upstream });
    }
    const log = s.gw.logText();
    t.notOk(secrets.some((secret) => log.includes(secret)), 'no credential in the log');
  });
}
