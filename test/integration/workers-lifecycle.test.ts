// `workers: 2` through the BUILT CLI when processes die: a worker that keeps dying at once is restarted
// after a growing delay, a SIGKILLed primary leaves no worker behind (each drains and exits), and a
// worker that cannot start at all (port taken, a module that does not load) stops the whole gateway
// with its exit code instead of a restart loop.
import { once } from 'node:events';
import { createServer } from 'node:net';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { isAlive, writeJson, type LogLine } from '../helpers/cli.js';
import { echo, openClient } from '../helpers/client.js';
import { bearer, closeOf, clusterConfig, errorLines, servedBy, spawnCluster, startCluster, startedPids, START_MS, twoPorts } from '../helpers/cluster.js';
import { eventually, freePort } from '../helpers/net.js';
import { startEchoUpstream } from '../helpers/upstream.js';

/** A TCP server holding a port, closed by `t.teardown`. */
async function takePort(t: Test): Promise<number> {
  const blocker = createServer();
  blocker.listen(0, '127.0.0.1');
  await once(blocker, 'listening');
  t.teardown(() => blocker.close());
  return (blocker.address() as { port: number }).port;
}

t.test('a worker that keeps dying at once is restarted after a growing delay; then a SIGKILLed primary leaves no worker behind', async (t) => {
  const upstream = await startEchoUpstream(t);
  const c = await startCluster(t, upstream);
  const time = (l: LogLine) => Date.parse(String(l.time));

  t.test('restarts back off', async (t) => {
    let victim = startedPids(c.proc)[0]!;
    const gaps: number[] = [];
    for (let round = 0; round < 3; round++) {
      const after = c.proc.lines().length;
      process.kill(victim, 'SIGKILL');
      const exited = await c.proc.waitFor('worker exited', { after });
      const started = await c.proc.waitFor('worker started', { after });
      gaps.push(time(started) - time(exited));
      victim = (started.worker as { pid: number }).pid;
    }
    // Rounds 2 and 3 kill a worker just started: 100 ms, then twice that (more if round 1 was quick too).
    t.ok(gaps[1]! >= 95, `the second restart waits ≥ 100 ms (${gaps.join(', ')} ms)`);
    t.ok(gaps[2]! >= 195, `the third waits ≥ 200 ms (${gaps.join(', ')} ms)`);
    await c.proc.waitFor('listening', { where: (l) => l.pid === victim, timeoutMs: START_MS });
  });

  t.test('SIGKILL on the primary: each worker drains (1001) and exits', async (t) => {
    const clients = [];
    for (let i = 0; i < 2; i++) {
      const ws = await openClient(t, c.url('/relay'), [], { ...bearer('erin'), 'X-Request-Id': `orphan-${i}` });
      t.equal(await echo(ws, 'hi'), 'hi');
      clients.push({ ws, closed: closeOf(ws), pid: await servedBy(c, `orphan-${i}`) });
    }
    t.equal(new Set(clients.map((x) => x.pid)).size, 2, 'one connection on each worker');
    const workers = startedPids(c.proc);
    c.proc.child.kill('SIGKILL');
    for (const x of clients) t.equal((await x.closed).code, 1001, `the client on ${x.pid} gets 1001`);
    await eventually(() => workers.every((pid) => !isAlive(pid)), 5000, 'every worker to exit');
    t.pass('no worker is left');
    // stdout closes once the last process holding it (the workers inherited it) is gone.
    await c.proc.exited;
    t.equal(c.proc.lines().filter((l) => l.msg === 'the cluster primary is gone; draining').length, 2, 'each live worker says why it stops');
    t.same(errorLines(c.proc), [], 'nothing logged at error level');
  });
});

t.test('start-up failures are fatal, not a restart loop', async (t) => {
  t.test('the port is taken: exit 2', async (t) => {
    const port = await takePort(t);
    const [, adminPort] = await twoPorts();
    const proc = spawnCluster(t, writeJson(t.testdir(), 'gateway.config.json', clusterConfig(port, adminPort, 'ws://127.0.0.1:9')));
    const exit = await proc.exited;
    t.equal(exit.code, 2, 'exit 2');
    t.ok(proc.lines().some((l) => l.msg === 'could not listen' && (l.error as { code: string }).code === 'EADDRINUSE'), "a worker's 'could not listen'");
    t.equal(proc.stderr(), '', 'nothing on stderr (no worker crashed on its way out)');
    t.equal(startedPids(proc).length, 2, 'no restart: only the two workers of the start');
    for (const pid of startedPids(proc)) t.equal(isAlive(pid), false, `worker ${pid} is gone`);
  });

  t.test('the admin port is taken: exit 2 before any worker starts', async (t) => {
    const adminPort = await takePort(t);
    const proc = spawnCluster(t, writeJson(t.testdir(), 'gateway.config.json', clusterConfig(await freePort(), adminPort, 'ws://127.0.0.1:9')));
    const exit = await proc.exited;
    t.equal(exit.code, 2, 'exit 2');
    t.same(startedPids(proc), [], 'no worker was started');
  });

  t.test('a worker cannot start (its module authenticator does not load): exit 1', async (t) => {
    const dir = t.testdir({ 'auth.mjs': 'export const notDefault = 1;\n' });
    const [port, adminPort] = await twoPorts();
    const file = writeJson(dir, 'gateway.config.json', {
      ...clusterConfig(port, adminPort, 'ws://127.0.0.1:9'),
      authenticators: { mod: { type: 'module', path: join(dir, 'auth.mjs') } },
      routes: [{ path: '/m', auth: ['mod'], upstream: 'ws://127.0.0.1:9' }],
    });
    const proc = spawnCluster(t, file);
    const exit = await proc.exited;
    t.equal(exit.code, 1, 'exit 1');
    t.match(proc.stderr(), /default export is not a function/, "the worker's reason on stderr");
    t.notMatch(proc.stderr(), /^\s+at /m, 'no stack trace');
    t.equal(startedPids(proc).length, 2, 'no restart: only the two workers of the start');
    for (const pid of startedPids(proc)) t.equal(isAlive(pid), false, `worker ${pid} is gone`);
  });
});
