// Fault injection, client resets (issue 7; SPEC 3 "Decisions never wait on the socket", 5): the client's
// socket is closed (FIN) or reset (RST) at every stage of the handshake, in pipe and relay mode: in the
// middle of its request head; after the head while a real forward-auth service is still deciding; after
// the decision while the upstream has the request but has not answered its 101; right after the 101.
// Each case: nothing is left (the gateway tracks no connection, its server holds no socket, the auth
// service and the upstream hold no request or connection), nothing more reaches the upstream than the
// stage allows, no crash, and the gateway then serves a valid client.
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import t, { type Test } from 'tap';
import { closeClient, echo, openClient } from '../helpers/client.js';
import { echoFaultServer, FaultServer } from '../helpers/fault-server.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { spawnCli, writeJson } from '../helpers/cli.js';
import { eventually, freePort } from '../helpers/net.js';
import { watchFaults } from '../helpers/settled.js';
import { requestHead, upgradeHeaders } from '../helpers/upgrade.js';

const MODES = ['pipe', 'relay'] as const;
const ENDINGS = ['destroy', 'reset'] as const;
type Ending = (typeof ENDINGS)[number];
/** Long enough that no deadline ends a stage before the client does. */
const DEADLINE_MS = 5000;


interface Rig {
  gw: TestGateway;
  upstream: FaultServer;
  auth: FaultServer;
}

/** A forward-auth service that accepts everyone, an echo upstream, and a gateway with `/pipe` and `/relay`. */
async function rig(t: Test): Promise<Rig> {
  const auth = await new FaultServer({ request: (_req, res) => res.writeHead(200, { 'X-Auth-Request-User': 'alice' }).end() }).start(t);
  const upstream = await echoFaultServer(t);
  const route = (mode: string) => ({ path: `/${mode}`, auth: ['fa'], upstream: upstream.ws, mode, origins: '*' });
  const gw = await startGateway(t, {
    limits: { handshakeTimeoutMs: DEADLINE_MS },
    authenticators: { fa: { type: 'forwardAuth', url: auth.http('/auth'), timeoutMs: DEADLINE_MS } },
    routes: [route('pipe'), route('relay')],
  });
  return { gw, upstream, auth };
}

/** Opens a TCP connection to the gateway and writes `text`; errors are ignored (the test ends it). */
async function rawClient(port: number, text: string): Promise<Socket> {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => {});
  await once(socket, 'connect');
  socket.write(text);
  return socket;
}

function end(socket: Socket, how: Ending): void {
  if (how === 'destroy') socket.destroy();
  else socket.resetAndDestroy();
}

const fullHead = (mode: string) => requestHead(`/${mode}`, upgradeHeaders({ Authorization: 'Bearer opaque-token-for-the-auth-service' }));

/** The stages, each: what to send, when to end, and how many upstream connections the stage may have made. */
const STAGES: { name: string; run(r: Rig, mode: string, how: Ending, t: Test, todo: string | undefined): Promise<void>; upstreamConnections: number }[] = [
  {
    name: 'in the middle of the request head',
    upstreamConnections: 0,
    async run({ gw, auth }, mode, how, t) {
      const head = fullHead(mode);
      const before = auth.requests;
      const socket = await rawClient(gw.port, head.slice(0, head.indexOf('Sec-WebSocket-Version')));
      // Let the server read what was sent before the client goes.
      await new Promise((r) => setTimeout(r, 50));
      end(socket, how);
      await new Promise((r) => setTimeout(r, 50));
      t.equal(auth.requests, before, 'the auth service was never asked');
    },
  },
  {
    name: 'after the head, while the auth service is deciding',
    upstreamConnections: 0,
    async run({ gw, auth }, mode, how, t, todo) {
      await auth.set('hang');
      const before = auth.requests;
      const abandoned = gw.logs().filter((l) => l.msg === 'upgrade abandoned').length;
      const socket = await rawClient(gw.port, fullHead(mode));
      await eventually(() => auth.requests === before + 1, 3000, 'the auth service to get the request');
      end(socket, how);
      // Long before the handshake deadline (5 s): the gateway drops the work when the client goes.
      await eventually(() => auth.held.open === 0, 500).catch(() => {});
      t.equal(auth.held.open, 0, 'the gateway dropped its request to the auth service', { todo });
      t.equal(gw.logs().filter((l) => l.msg === 'upgrade abandoned').length, abandoned + 1, "'upgrade abandoned' logged", { todo });
    },
  },
  {
    name: 'after the decision, while the upstream has not answered its 101',
    upstreamConnections: 1,
    async run({ gw, upstream }, mode, how, t, todo) {
      await upstream.set('hang');
      const before = upstream.requests;
      const socket = await rawClient(gw.port, fullHead(mode));
      await eventually(() => upstream.requests === before + 1, 3000, 'the upstream to get the upgrade');
      end(socket, how);
      // Long before the handshake deadline (5 s): the gateway aborts its upstream request when the client goes.
      await eventually(() => upstream.open === 0, 500).catch(() => {});
      t.equal(upstream.open, 0, 'the gateway closed its upstream connection', { todo });
    },
  },
  {
    name: 'right after the 101',
    upstreamConnections: 1,
    async run({ gw, upstream }, mode, how, t) {
      const socket = await rawClient(gw.port, fullHead(mode));
      let got = '';
      socket.setEncoding('latin1');
      await new Promise<void>((resolve, reject) => {
        socket.on('data', (chunk: string) => {
          got += chunk;
          if (got.includes('\r\n\r\n')) resolve();
        });
        socket.once('close', () => reject(new Error(`closed before a 101: ${got}`)));
      });
      t.match(got, /^HTTP\/1\.1 101 /, 'the 101 arrived');
      t.equal(upstream.open, 1, 'the upstream holds the connection');
      end(socket, how);
      await eventually(() => upstream.open === 0, 2000, 'the upstream side to close');
    },
  },
];

// Bugs in src/ this suite found, still open (the file names are where they are): each case is a { todo }.
const FIN_BEFORE_DECISION =
  'src/gateway.ts #decide aborts the checks on the socket\'s "close" only: a client that closes with a FIN (socket.destroy(), a closed browser tab) half-closes the socket, which stays open, so the auth backend keeps being waited on until it answers or the handshake deadline';
const FIN_PIPE_UPSTREAM =
  'src/handoff/raw-pipe.ts pipeUpgrade aborts the upstream request on the client\'s "close" only: after a FIN the upstream connection stays open until the upstream answers or handshakeTimeoutMs';
const RELAY_UPSTREAM =
  'src/handoff/handoff.ts #relay watches the client\'s "close" only while the upstream answers: after a FIN the upstream connection stays open until the upstream answers or handshakeTimeoutMs';
const KNOWN: Record<string, string> = {
  'pipe destroy after the head, while the auth service is deciding': FIN_BEFORE_DECISION,
  'relay destroy after the head, while the auth service is deciding': FIN_BEFORE_DECISION,
  'pipe destroy after the decision, while the upstream has not answered its 101': FIN_PIPE_UPSTREAM,
  'relay destroy after the decision, while the upstream has not answered its 101': RELAY_UPSTREAM,
};

for (const mode of MODES) {
  t.test(`${mode}: the client goes away at every stage of the handshake`, async (t) => {
    const watch = watchFaults(t);
    const r = await rig(t);
    const served = async (what: string) => {
      const ws = await openClient(t, r.gw.url(`/${mode}`));
      t.equal(await echo(ws, what), what, `served: ${what}`);
      await closeClient(ws);
    };
    await served('warm-up');
    await watch.rebase(r.gw);
    for (const stage of STAGES) {
      for (const how of ENDINGS) {
        const todo = KNOWN[`${mode} ${how} ${stage.name}`];
        // A known bug marks the assertions it fails as todo (a todo subtest would not run at all).
        await t.test(`${how} ${stage.name}`, async (t) => {
          const connections = r.upstream.connections;
          try {
            await stage.run(r, mode, how, t, todo);
          } finally {
            // Back to healthy, as a restart would: drops whatever a stage left held.
            await r.auth.set('ok');
            await r.upstream.set('ok');
          }
          await watch.check(r.gw, { upstream: r.upstream, 'auth service (requests held)': r.auth.held }, { on: t });
          t.equal(r.upstream.connections - connections, stage.upstreamConnections, `the upstream got ${stage.upstreamConnections} connection(s) from this client`);
          await served(`after a client ${how} ${stage.name}`);
          await watch.check(r.gw, { upstream: r.upstream }, { on: t });
        });
      }
    }
    t.notOk(r.gw.logText().includes('opaque-token-for-the-auth-service'), 'no credential in the log');
  });
}

t.test('the sidecar process survives a client reset while a relay upstream has not answered its 101', async (t) => {
    const upstream = await echoFaultServer(t);
    await upstream.set('hang');
    const port = await freePort();
    const dir = t.testdir({});
    const file = writeJson(dir, 'gateway.config.json', { listen: { host: '127.0.0.1', port }, limits: { handshakeTimeoutMs: DEADLINE_MS }, routes: [{ path: '/relay', auth: [], upstream: upstream.ws, mode: 'relay' }] });
    const gw = spawnCli(t, ['--config', file]);
    await gw.waitFor('listening');
    const socket = await rawClient(port, requestHead('/relay', upgradeHeaders()));
    await eventually(() => upstream.requests === 1, 3000, 'the upstream to get the upgrade');
    socket.resetAndDestroy();
    await upstream.set('ok');
    const exited = await Promise.race([gw.exited.then((e) => e), new Promise<null>((r) => setTimeout(() => r(null), 1000))]);
    t.equal(exited, null, `the process is still running (stderr: ${gw.stderr().slice(0, 300)})`);
    if (exited === null) {
      const ws = await openClient(t, `ws://127.0.0.1:${port}/relay`);
      t.equal(await echo(ws, 'still serving'), 'still serving');
      await closeClient(ws);
    }
});
