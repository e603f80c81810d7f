// SPEC 2 `workers`, 6.1, 6.3, 6.4 and 9 ("Without redis, state is per process") through the BUILT CLI
// with `workers: 2`: a node:cluster primary with two workers on one port, real sockets and processes.
// Connections spread over both workers; the primary serves the admin port by asking the workers,
// restarts a worker that dies, passes SIGHUP on and drains every worker on SIGTERM. What happens when
// the primary itself dies, or a worker cannot start: workers-lifecycle.test.ts.
import { writeFileSync } from 'node:fs';
import t from 'tap';
import { WebSocket } from 'ws';
import { isAlive, spawnCli, writeJson } from '../helpers/cli.js';
import { echo, openClient } from '../helpers/client.js';
import {
  ADMIN_TOKEN,
  adminRequest,
  bearer,
  closeOf,
  clusterConfig,
  errorLines,
  rejectedBy,
  servedBy,
  startCluster,
  startedPids,
  type Closed,
} from '../helpers/cluster.js';
import { rawUpgrade } from '../helpers/upgrade.js';
import { startEchoUpstream } from '../helpers/upstream.js';

interface Client {
  ws: WebSocket;
  sub: string;
  pid: number;
  closed: Promise<Closed>;
}

t.test('workers: 2 through the CLI', async (t) => {
  // The subtests share this cluster and these clients, so the clients are torn down with this test.
  const top = t;
  const upstream = await startEchoUpstream(t);
  const c = await startCluster(t, upstream);
  const primary = c.proc.child.pid!;
  const workers = startedPids(c.proc);
  t.equal(workers.length, 2, "two 'worker started' lines");
  t.notOk(workers.includes(primary), 'the workers are other processes than the primary');
  const clients: Client[] = [];

  t.test('connections spread over both workers on one port', async (t) => {
    for (let i = 0; i < 10; i++) {
      // alice twice, bob twice, ...: round-robin puts each of them on both workers.
      const sub = i % 4 < 2 ? 'alice' : 'bob';
      const ws = await openClient(top, c.url('/relay'), [], { ...bearer(sub), 'X-Request-Id': `spread-${i}` });
      clients.push({ ws, sub, pid: await servedBy(c, `spread-${i}`), closed: closeOf(ws) });
    }
    const pids = new Set(clients.map((x) => x.pid));
    t.equal(pids.size, 2, `'upgrade accepted' came from two pids (${[...pids].join(', ')})`);
    t.ok([...pids].every((pid) => workers.includes(pid)), 'both of them workers');
    t.equal(new Set(clients.filter((x) => x.sub === 'alice').map((x) => x.pid)).size, 2, 'alice is connected to both workers');
    for (const [i, x] of clients.entries()) t.equal(await echo(x.ws, `hello ${i}`), `hello ${i}`, `connection ${i} echoes`);
  });

  t.test('admin in the primary: /readyz, /connections of both workers', async (t) => {
    const ready = await fetch(`${c.admin}/readyz`);
    t.equal(ready.status, 200, '/readyz 200');
    t.same(await ready.json(), { status: 'ready' });
    t.equal((await fetch(`${c.admin}/connections`)).status, 401, '/connections needs the admin token');
    const { status, body } = await adminRequest(c, 'GET', '/connections');
    t.equal(status, 200);
    const list = body as { id: string; subject: string; route: string; mode: string }[];
    t.equal(list.length, 10, 'all ten connections, five held by each worker');
    t.equal(new Set(list.map((x) => x.id)).size, 10, 'ids are unique across workers');
    t.same(list.map((x) => x.subject).sort(), [...Array(6).fill('alice'), ...Array(4).fill('bob')]);
    t.ok(list.every((x) => x.route === '/relay' && x.mode === 'relay'));

    t.equal((await fetch(`${c.admin}/metrics`)).status, 401, '/metrics needs the admin token');
    const metrics = await fetch(`${c.admin}/metrics`, { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });
    t.equal(metrics.status, 200);
    t.match(metrics.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
    const text = await metrics.text();
    t.match(text, /^portcullis_upgrades_total\{route="\/relay",result="accepted",status="101"\} 10$/m, 'the handshakes of both workers, summed');
    t.match(text, /^portcullis_connections\{route="\/relay",mode="relay"\} 10$/m, 'the live connections of both workers, summed');
    t.match(text, /^process_cpu_user_seconds_total /m, 'process metrics, aggregated');
  });

  t.test('POST /revoke {subject} reaches every worker', async (t) => {
    const { status, body } = await adminRequest(c, 'POST', '/revoke', { subject: 'alice' });
    t.equal(status, 200);
    t.same(body, { revoked: { subject: 'alice' }, closed: 6 }, "closed counts alice's connections on both workers");
    for (const x of clients.filter((y) => y.sub === 'alice')) t.same(await x.closed, { code: 4403, reason: 'revoked' }, `alice on ${x.pid}: 4403`);
    for (const x of clients.filter((y) => y.sub === 'bob')) t.equal(await echo(x.ws, 'still'), 'still', `bob on ${x.pid} untouched`);
    const refusedBy = new Set<number>();
    for (let i = 0; i < 6; i++) {
      const res = await rawUpgrade(c.port, '/relay', { ...bearer('alice'), 'X-Request-Id': `revoked-${i}` });
      t.equal(res.status, 401, `new handshake ${i} of alice: 401`);
      t.match(res.headers['www-authenticate'], /token revoked/);
      refusedBy.add(await rejectedBy(c, `revoked-${i}`));
    }
    t.equal(refusedBy.size, 2, 'refused by both workers');
    const again = await adminRequest(c, 'POST', '/revoke', { jti: 'nothing-live' });
    t.same(again.body, { revoked: { jti: 'nothing-live' }, closed: 0 });
    t.equal((await adminRequest(c, 'POST', '/revoke', { user: 'x' })).status, 400, 'a bad body is still 400');
  });

  t.test('SIGHUP reaches every worker', async (t) => {
    const before = await rawUpgrade(c.port, '/relay2', bearer('carol'));
    t.equal(before.status, 404, 'no /relay2 route yet');
    // A new route (what workers reload), and a worker count (what only a restart applies).
    const next = { ...clusterConfig(c.port, c.adminPort, upstream.url), workers: 3 };
    next.routes.push({ path: '/relay2', auth: ['jwt'], upstream: upstream.url, mode: 'relay' });
    writeFileSync(c.file, JSON.stringify(next));
    const after = c.proc.lines().length;
    c.proc.child.kill('SIGHUP');
    const first = await c.proc.waitFor('config reloaded', { after });
    const second = await c.proc.waitFor('config reloaded', { after, where: (l) => l.pid !== first.pid });
    t.same(new Set([first.pid, second.pid]), new Set(startedPids(c.proc)), 'both workers reloaded');
    const warned = await c.proc.waitFor('changed fields that take effect at the next restart only', { after });
    t.match(warned, { level: 40, pid: primary, fields: ['workers'] }, 'the primary says workers needs a restart');
    t.equal(startedPids(c.proc).length, 2, 'and starts no third worker');
    const servedBy2 = new Set<number>();
    for (let i = 0; i < 6; i++) {
      const res = await rawUpgrade(c.port, '/relay2', { ...bearer('carol'), 'X-Request-Id': `reloaded-${i}` });
      t.equal(res.status, 101, `handshake ${i} on the new route: 101`);
      servedBy2.add(await servedBy(c, `reloaded-${i}`));
    }
    t.equal(servedBy2.size, 2, 'both workers serve the new route');
  });

  t.test('a SIGKILLed worker is restarted; the other one keeps its connections', async (t) => {
    const bobs = clients.filter((x) => x.sub === 'bob');
    const victim = bobs[0]!.pid;
    const survivor = workers.find((pid) => pid !== victim)!;
    const after = c.proc.lines().length;
    process.kill(victim, 'SIGKILL');
    const exited = await c.proc.waitFor('worker exited', { after });
    t.match(exited, { level: 40, pid: primary, worker: { pid: victim }, code: null, signal: 'SIGKILL' }, "warn 'worker exited' by the primary");
    const started = await c.proc.waitFor('worker started', { after });
    const fresh = (started.worker as { pid: number }).pid;
    t.not(fresh, victim, 'a new worker pid');
    t.equal(started.pid, primary, 'logged by the primary');
    await c.proc.waitFor('listening', { after, where: (l) => l.pid === fresh });
    for (const x of bobs) {
      if (x.pid === victim) t.not((await x.closed).code, 1001, `bob on the killed worker: connection lost`);
      else t.equal(await echo(x.ws, 'untouched'), 'untouched', 'bob on the other worker: still echoes');
    }
    t.equal(isAlive(victim), false, 'the killed worker is gone');
    // The new worker is told the revocations it missed (there is no redis to load them from).
    await c.proc.waitFor('revoked', { after, where: (l) => l.pid === fresh });
    const seen = new Set<number>();
    for (let i = 0; seen.size < 2 && i < 10; i++) {
      const ok = await rawUpgrade(c.port, '/relay', { ...bearer('bob'), 'X-Request-Id': `restarted-${i}` });
      t.equal(ok.status, 101, `bob ${i}: 101`);
      seen.add(await servedBy(c, `restarted-${i}`));
    }
    t.same(seen, new Set([survivor, fresh]), 'the gateway serves on the survivor and the new worker');
    const refusedBy = new Set<number>();
    for (let i = 0; refusedBy.size < 2 && i < 10; i++) {
      const res = await rawUpgrade(c.port, '/relay', { ...bearer('alice'), 'X-Request-Id': `still-revoked-${i}` });
      t.equal(res.status, 401, `alice ${i}: still 401`);
      refusedBy.add(await rejectedBy(c, `still-revoked-${i}`));
    }
    t.ok(refusedBy.has(fresh), 'the new worker refuses alice too');
  });

  t.test('SIGTERM: every relay client gets 1001, every worker exits, then the primary exits 0', async (t) => {
    const open = clients.filter((x) => x.ws.readyState === WebSocket.OPEN);
    t.ok(open.length > 0, 'some clients are still connected');
    c.proc.child.kill('SIGTERM');
    for (const x of open) t.equal((await x.closed).code, 1001, `client on ${x.pid}: 1001`);
    const exit = await c.proc.exited;
    t.same({ code: exit.code, signal: exit.signal }, { code: 0, signal: null }, 'the primary exits 0');
    for (const pid of startedPids(c.proc)) t.equal(isAlive(pid), false, `worker ${pid} is gone`);
    t.ok(c.proc.lines().some((l) => l.msg === 'stopped' && l.pid === primary), "the primary's 'stopped'");
    t.same(errorLines(c.proc), [], 'nothing logged at error level');
    t.equal(c.proc.stderr(), '', 'nothing on stderr');
    t.notOk(c.proc.stdout().includes(ADMIN_TOKEN), 'the admin token is never logged');
  });
});

t.test('/readyz 503 while the workers drain; exit once the last connection ends', async (t) => {
  const upstream = await startEchoUpstream(t);
  const c = await startCluster(t, upstream, { drain: { timeoutMs: 20000 } });
  const primary = c.proc.child.pid!;
  t.equal((await fetch(`${c.admin}/readyz`)).status, 200, '/readyz 200 when up');
  const ws = await openClient(t, c.url('/pipe'), [], bearer('dave'));
  const closed = closeOf(ws);
  t.equal(await echo(ws, 'before'), 'before');
  c.proc.child.kill('SIGTERM');
  await c.proc.waitFor('stopping', { where: (l) => l.pid === primary });
  const readyz = await fetch(`${c.admin}/readyz`);
  t.equal(readyz.status, 503, '/readyz 503 while draining');
  t.same(await readyz.json(), { status: 'draining' });
  t.equal((await fetch(`${c.admin}/healthz`)).status, 200, '/healthz still 200');
  t.equal(await echo(ws, 'during'), 'during', 'the pipe connection runs on during the drain');
  const late = await rawUpgrade(c.port, '/pipe', bearer('dave'));
  t.equal(late.status, 503, 'a new upgrade during the drain: 503');
  t.equal(c.proc.child.exitCode, null, 'the primary waits for the draining worker');
  ws.close(1000, 'done');
  t.equal((await closed).code, 1000);
  const exit = await c.proc.exited;
  t.equal(exit.code, 0, 'exit 0 once the connection ended');
  for (const pid of startedPids(c.proc)) t.equal(isAlive(pid), false, `worker ${pid} is gone`);
  t.same(errorLines(c.proc), [], 'nothing logged at error level');
});

t.test('check: workers 2 with tickets and no redis', async (t) => {
  // The other messages (memory sessions, workers alone valid) are in test/unit/config.test.ts.
  const config = { ...clusterConfig(8080, 9090, 'ws://127.0.0.1:9'), tickets: { path: '/tickets', ttlSec: 30 } };
  const proc = spawnCli(t, ['check', '--config', writeJson(t.testdir(), 'gateway.config.json', config)]);
  const exit = await proc.exited;
  t.equal(exit.code, 1, 'exit 1');
  t.equal(proc.stderr(), 'tickets: needs redis when workers > 1: each worker would keep its own tickets\n');
  t.equal(proc.stdout(), '', 'nothing on stdout');
});
