#!/usr/bin/env node
// The benchmark runner: starts the echo upstream and every peer side by side (peers on core 0, the load
// generator and echo on core 1), runs every scenario in alternating rounds, and writes the results as JSON
// (and, for a full run, bench/RESULTS.md). See bench/README.md.
//
//   node bench/run.mjs [--quick] [--peers a,b] [--scenarios x,y] [--rounds N] [--duration-ms MS]
//                      [--warmup-ms MS] [--idle-connections N] [--out FILE.json] [--md FILE.md]
//                      [--no-setup] [--no-render]
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, freemem, loadavg, release, tmpdir, totalmem } from 'node:os';
import { join, relative } from 'node:path';
import { createInterface } from 'node:readline';
import { randomBytes } from 'node:crypto';
import { BENCH, ROOT, PEERS, binary, childEnv, pinned, pinning, startProcess } from './peers.mjs';
import { processTree, rssKiB } from './lib/proc.mjs';
import { summarize, median } from './lib/stats.mjs';
import { render } from './render.mjs';

// ------------------------------------------------------------------------------------------ options
function parseArgs(argv) {
  const o = { quick: false, setup: true, render: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--quick') o.quick = true;
    else if (a === '--peers') o.peers = val().split(',').filter(Boolean);
    else if (a === '--scenarios') o.scenarios = val().split(',').filter(Boolean);
    else if (a === '--rounds') o.rounds = Number(val());
    else if (a === '--duration-ms') o.durationMs = Number(val());
    else if (a === '--warmup-ms') o.warmupMs = Number(val());
    else if (a === '--idle-connections') o.idleConnections = Number(val());
    else if (a === '--out') o.out = val();
    else if (a === '--md') o.md = val();
    else if (a === '--no-setup') o.setup = false;
    else if (a === '--no-render') o.render = false;
    else if (a === '--help' || a === '-h') {
      process.stdout.write(readFileSync(new URL(import.meta.url)).toString().split('\n').slice(1, 8).join('\n').replace(/^\/\/ ?/gm, '') + '\n');
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  return o;
}

const args = parseArgs(process.argv.slice(2));
const Q = args.quick;
const settings = {
  rounds: args.rounds ?? (Q ? 1 : 5),
  warmupMs: args.warmupMs ?? (Q ? 250 : 1000),
  durationMs: args.durationMs ?? (Q ? 1000 : 5000),
  peerWarmupMs: Q ? 300 : 2500,
  idleRounds: args.rounds ?? (Q ? 1 : 3),
  idleConnections: args.idleConnections ?? (Q ? 300 : 9800),
  idleSettleMs: Q ? 500 : 5000,
  handshakeConcurrency: 32,
  echoConnections: 64,
};

const PINNED_PEERS = ['direct', 'baseline', 'nginx', 'haproxy', 'pipe', 'relay', 'pipe-full'];
const SCENARIOS = [
  { id: 'handshake-fresh', title: 'Handshake, a fresh HS256 JWT per connection', kind: 'handshake', token: 'fresh', expectStatus: 101, unit: 'handshakes/s', peers: PINNED_PEERS },
  { id: 'handshake-reused', title: 'Handshake, one JWT reused by every connection', kind: 'handshake', token: 'reused', expectStatus: 101, unit: 'handshakes/s', peers: PINNED_PEERS },
  { id: 'handshake-rejected', title: 'Rejected handshake (bad signature, a fresh token each)', kind: 'handshake', token: 'bad', expectStatus: 401, unit: 'rejections/s', peers: PINNED_PEERS.filter((p) => PEERS[p].auth) },
  { id: 'echo-64', title: 'Echo round trip, 64 B messages, 64 connections, 1 in flight each', kind: 'echo', payload: 64, connections: 64, token: 'reused', unit: 'messages/s', peers: PINNED_PEERS },
  { id: 'echo-4k', title: 'Echo round trip, 4 KiB messages, 64 connections, 1 in flight each', kind: 'echo', payload: 4096, connections: 64, token: 'reused', unit: 'messages/s', peers: PINNED_PEERS },
  { id: 'latency-1', title: 'Latency, 1 connection, 1 message (64 B) in flight', kind: 'echo', payload: 64, connections: 1, token: 'reused', unit: 'messages/s', peers: PINNED_PEERS },
  { id: 'idle-memory', title: `Idle memory per connection (${settings.idleConnections} open WebSockets, fresh token each)`, kind: 'idle', token: 'fresh', unit: 'bytes/connection', peers: PINNED_PEERS.filter((p) => p !== 'direct') },
  { id: 'workers', title: 'Handshake scaling, workers: 2 vs workers: 1 (fresh tokens, nothing pinned)', kind: 'handshake', token: 'fresh', expectStatus: 101, concurrency: 64, unit: 'handshakes/s', peers: ['workers-1', 'workers-2'], unpinned: true },
];

const selectedScenarios = SCENARIOS.filter((s) => !args.scenarios || args.scenarios.includes(s.id));
if (args.scenarios) for (const id of args.scenarios) if (!SCENARIOS.some((s) => s.id === id)) throw new Error(`unknown scenario ${id}; known: ${SCENARIOS.map((s) => s.id).join(', ')}`);
if (args.peers) for (const p of args.peers) if (!PEERS[p]) throw new Error(`unknown peer ${p}; known: ${Object.keys(PEERS).join(', ')}`);
const wantPeer = (p) => !args.peers || args.peers.includes(p) || (p.startsWith('workers-') && args.peers.includes('workers'));

const log = (...m) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${m.join(' ')}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------------------------------ machine
function sh(cmd) {
  const r = spawnSync('sh', ['-c', cmd], { encoding: 'utf8' });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.trim();
}
/** Processes other than this run's that used ≥ 5% of a core over a second (command names only). */
async function busyProcesses(ownPids = [], ms = Q ? 300 : 1000) {
  const sample = () => {
    const m = new Map();
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
        const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        m.set(Number(entry), { comm: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')), ticks: Number(f[11]) + Number(f[12]) });
      } catch {
        // gone
      }
    }
    return m;
  };
  const a = sample();
  await sleep(ms);
  const b = sample();
  const own = new Set([process.pid, ...ownPids]);
  return [...b]
    .filter(([pid]) => !own.has(pid) && a.has(pid))
    .map(([pid, v]) => ({ comm: v.comm, pcpu: Math.round(((v.ticks - a.get(pid).ticks) * 10 * 100) / ms) })) // ticks are 10 ms
    .filter((p) => p.pcpu >= 5)
    .sort((x, y) => y.pcpu - x.pcpu)
    .slice(0, 8);
}
function machine() {
  const nginx = binary('nginx');
  const haproxy = binary('haproxy');
  return {
    cpuModel: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memoryMiB: Math.round(totalmem() / 2 ** 20),
    kernel: release(),
    node: process.version,
    nginx: nginx ? sh(`${nginx} -v`).replace(/^nginx version: /, '') : null,
    haproxy: haproxy ? sh(`${haproxy} -v`).split('\n')[0].replace(/ - https.*$/, '') : null,
    fdLimit: sh('ulimit -n'),
    pinning: pinning ? 'peers on core 0; load generator, echo upstream and runner on core 1' : 'none (taskset missing or one core)',
    commit: sh(`git -C ${ROOT} rev-parse --short HEAD`),
    dirtyTree: sh(`git -C ${ROOT} status --porcelain -- src`).length > 0,
  };
}
const load = () => loadavg().map((x) => Math.round(x * 100) / 100);

// ------------------------------------------------------------------------------------------ loadgen
function runLoadgen(options, { cpus = '1', timeoutMs } = {}) {
  const [command, ...argv] = pinned(cpus, [process.execPath, join(BENCH, 'loadgen.mjs'), JSON.stringify(options)]);
  const child = spawn(command, argv, { env: childEnv(), stdio: ['pipe', 'pipe', 'pipe'] });
  const lines = [];
  let stderr = '';
  const waiters = [];
  createInterface({ input: child.stdout }).on('line', (line) => {
    try {
      lines.push(JSON.parse(line));
    } catch {
      stderr += `${line}\n`;
    }
    for (const w of waiters.splice(0)) w();
  });
  child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-2000)));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs ?? options.warmupMs + options.durationMs + 30000);
  exited.then(() => clearTimeout(timer));
  return {
    child,
    async event(name) {
      for (;;) {
        const found = lines.find((l) => l.event === name);
        if (found) return found;
        if (child.exitCode !== null || child.signalCode !== null) return { ok: false, reason: `load generator exited: ${stderr.trim().slice(-300)}` };
        await new Promise((r) => {
          waiters.push(r);
          exited.then(r);
        });
      }
    },
  };
}

// ------------------------------------------------------------------------------------------ the run
const startedAt = new Date();
const results = {
  version: 1,
  quick: Q,
  startedAt: startedAt.toISOString(),
  settings,
  machine: null,
  loadBefore: load(),
  busyBefore: await busyProcesses(),
  peers: {},
  scenarios: {},
};

if (pinning) spawnSync('taskset', ['-pc', '1', String(process.pid)], { stdio: 'ignore' });
if (args.setup && !Q) {
  log('bench/setup.sh');
  spawnSync('bash', [join(BENCH, 'setup.sh')], { stdio: 'inherit' });
}
results.machine = machine();
log(`machine: ${results.machine.cpuModel}, ${results.machine.cores} cores, node ${results.machine.node}, load ${results.loadBefore.join(' ')}`);

const tmp = mkdtempSync(join(tmpdir(), 'portcullis-bench-'));
const secret = randomBytes(32).toString('hex');
const echo = startProcess(pinned('1', [process.execPath, join(BENCH, 'echo-upstream.mjs')]));
let echoPort;
for (let i = 0; i < 200 && !echoPort; i++) {
  const m = /"port":(\d+)/.exec(echo.output());
  if (m) echoPort = Number(m[1]);
  else await sleep(25);
}
if (!echoPort) throw new Error(`echo upstream did not start: ${echo.output()}`);
const ctx = { tmp, echoPort, secret };
const handles = {};

async function startPeer(name) {
  const peer = PEERS[name];
  const why = peer.available() ?? (peer.check ? peer.check(ctx) : null);
  if (why) {
    results.peers[name] = { label: peer.label, status: 'skipped', reason: why };
    log(`peer ${name}: skipped (${why})`);
    return null;
  }
  try {
    handles[name] = await peer.start(ctx);
    results.peers[name] = { label: peer.label, status: 'ok', restarts: results.peers[name]?.restarts ?? 0 };
    return handles[name];
  } catch (err) {
    results.peers[name] = { label: peer.label, status: 'skipped', reason: `failed to start: ${err.message}` };
    log(`peer ${name}: failed to start: ${err.message}`);
    return null;
  }
}

async function stopPeer(name) {
  const h = handles[name];
  delete handles[name];
  if (h) await h.stop();
}

/** The peer's handle, restarted when its process died (counted in results.peers[name].restarts). */
async function livePeer(name) {
  const h = handles[name];
  if (!h) return null;
  if (h.alive()) return h;
  log(`peer ${name} died (${h.output().trim().split('\n').slice(-2).join(' | ')}); restarting`);
  const restarts = (results.peers[name].restarts ?? 0) + 1;
  delete handles[name];
  const again = await startPeer(name);
  if (results.peers[name]) results.peers[name].restarts = restarts;
  return again;
}

function loadgenOptions(scenario, h, extra = {}) {
  return {
    kind: scenario.kind,
    port: h.port,
    token: scenario.token,
    secret,
    expectStatus: scenario.expectStatus ?? 101,
    concurrency: scenario.concurrency ?? settings.handshakeConcurrency,
    connections: scenario.connections ?? settings.echoConnections,
    payload: scenario.payload ?? 64,
    warmupMs: settings.warmupMs,
    durationMs: settings.durationMs,
    sutPid: h.pid ?? 0,
    echoPid: echo.pid,
    ...extra,
  };
}

async function measure(scenario, name, round, order) {
  const h = await livePeer(name);
  if (!h) return { peer: name, round, ok: false, reason: 'peer not running' };
  const loadBefore = load()[0];
  const lg = runLoadgen(loadgenOptions(scenario, h), { cpus: scenario.unpinned ? 'all' : '1' });
  const r = await lg.event('result');
  const { event, ...rest } = r;
  const row = { peer: name, round, order, loadBefore, ...rest };
  if (!h.alive()) {
    row.ok = false;
    row.reason = 'peer died during the measurement';
  }
  return row;
}

/** Alternating order: round r starts at a different peer, so no peer always runs first or last. */
const rotate = (list, r) => list.map((_, i) => list[(i + r) % list.length]);

function summarizeScenario(scenario, rows) {
  const out = {};
  for (const peer of scenario.peers) {
    const mine = rows.filter((r) => r.peer === peer && r.ok !== false);
    if (!mine.length) continue;
    if (scenario.kind === 'idle') {
      out[peer] = {
        bytesPerConnection: summarize(mine.map((r) => r.bytesPerConnection)),
        rssAfterMiB: median(mine.map((r) => r.rssAfterKiB / 1024)),
        rssBeforeMiB: median(mine.map((r) => r.rssBeforeKiB / 1024)),
        opened: median(mine.map((r) => r.opened)),
        openPerSec: median(mine.map((r) => (r.opened / r.openMs) * 1000)),
        rounds: mine.length,
      };
    } else {
      out[peer] = {
        opsPerSec: summarize(mine.map((r) => r.opsPerSec)),
        sutCpuPerOpUs: summarize(mine.map((r) => r.sutCpuPerOpUs)),
        p50Us: median(mine.map((r) => r.latencyUs?.p50)),
        p99Us: median(mine.map((r) => r.latencyUs?.p99)),
        sutCores: median(mine.map((r) => r.sutCores)),
        loadgenCoreBusy: median(mine.map((r) => r.loadgenCoreBusy)),
        rounds: mine.length,
      };
    }
  }
  return out;
}

async function warmPeers(names) {
  // JIT and pools warm before anything is measured: a short fresh-token handshake run and an echo run.
  for (const name of names) {
    const h = handles[name];
    if (!h) continue;
    for (const sc of [SCENARIOS[0], SCENARIOS[3]]) {
      const lg = runLoadgen({ ...loadgenOptions(sc, h), warmupMs: 0, durationMs: settings.peerWarmupMs }, { cpus: '1' });
      await lg.event('result');
    }
  }
}

async function throughputScenario(scenario) {
  const peers = scenario.peers.filter((p) => handles[p]);
  const rows = [];
  for (let round = 0; round < settings.rounds; round++) {
    const order = rotate(peers, round);
    for (let i = 0; i < order.length; i++) {
      const row = await measure(scenario, order[i], round, i);
      rows.push(row);
      log(
        `${scenario.id} r${round + 1}/${settings.rounds} ${order[i].padEnd(10)} ` +
          (row.ok === false
            ? `FAILED ${row.reason ?? JSON.stringify(row.errors)}`
            : `${row.opsPerSec} ops/s, SUT ${row.sutCpuPerOpUs ?? '-'} µs/op, p50 ${row.latencyUs?.p50} µs, p99 ${row.latencyUs?.p99} µs`),
      );
      await sleep(Q ? 50 : 300);
    }
  }
  return rows;
}

async function idleScenario(scenario) {
  // Each round starts every peer fresh (a process that already held ten thousand connections keeps its
  // grown heap), warms it, and measures the RSS growth of holding the connections idle.
  const rows = [];
  const peers = scenario.peers.filter((p) => results.peers[p]?.status === 'ok' || (!results.peers[p] && wantPeer(p)));
  for (let round = 0; round < settings.idleRounds; round++) {
    const order = rotate(peers, round);
    for (let i = 0; i < order.length; i++) {
      const name = order[i];
      await stopPeer(name);
      const h = await startPeer(name);
      if (!h) continue;
      await warmPeers([name]);
      await sleep(Q ? 200 : 1500);
      const tree = processTree(h.pid);
      const rssBeforeKiB = rssKiB(tree);
      const lg = runLoadgen(
        { ...loadgenOptions(scenario, h), kind: 'idle', connections: settings.idleConnections, concurrency: 64 },
        { cpus: '1', timeoutMs: 300000 },
      );
      const opened = await lg.event('opened');
      let row;
      if (opened.ok === false) {
        row = { peer: name, round, order: i, ok: false, reason: opened.reason };
      } else {
        await sleep(settings.idleSettleMs);
        const rssAfterKiB = rssKiB(processTree(h.pid));
        lg.child.stdin.write('close\n');
        const done = await lg.event('result');
        const { event, ...rest } = done;
        row = {
          peer: name,
          round,
          order: i,
          ...rest,
          rssBeforeKiB,
          rssAfterKiB,
          bytesPerConnection: opened.opened ? Math.round(((rssAfterKiB - rssBeforeKiB) * 1024) / opened.opened) : null,
          ok: opened.opened > 0 && opened.failed === 0 && h.alive(),
          ...(opened.failed ? { reason: `${opened.failed} connections failed to open` } : {}),
        };
      }
      lg.child.stdin.end();
      rows.push(row);
      log(`${scenario.id} r${round + 1}/${settings.idleRounds} ${name.padEnd(10)} ${row.ok === false ? `FAILED ${row.reason}` : `${row.opened} open, ${row.bytesPerConnection} B/connection (RSS ${Math.round(row.rssBeforeKiB / 1024)} → ${Math.round(row.rssAfterKiB / 1024)} MiB)`}`);
      await stopPeer(name);
      await sleep(Q ? 100 : 1000);
    }
  }
  return rows;
}

let exitCode = 0;
try {
  const throughput = selectedScenarios.filter((s) => s.kind !== 'idle' && !s.unpinned);
  const mainPeers = [...new Set(throughput.flatMap((s) => s.peers))].filter(wantPeer);
  for (const name of mainPeers) await startPeer(name);
  const t0 = Date.now();
  if (mainPeers.length) {
    log(`peers up: ${Object.keys(handles).join(', ')}; warming`);
    await warmPeers(Object.keys(handles));
  }
  for (const scenario of throughput) {
    const rows = await throughputScenario({ ...scenario, peers: scenario.peers.filter(wantPeer) });
    results.scenarios[scenario.id] = { title: scenario.title, unit: scenario.unit, kind: scenario.kind, rows, summary: summarizeScenario(scenario, rows) };
  }
  for (const name of Object.keys(handles)) await stopPeer(name);

  for (const scenario of selectedScenarios.filter((s) => s.unpinned)) {
    const peers = scenario.peers.filter(wantPeer);
    for (const name of peers) await startPeer(name);
    await warmPeers(peers);
    const rows = await throughputScenario({ ...scenario, peers });
    results.scenarios[scenario.id] = { title: scenario.title, unit: scenario.unit, kind: scenario.kind, rows, summary: summarizeScenario(scenario, rows) };
    for (const name of peers) await stopPeer(name);
  }

  for (const scenario of selectedScenarios.filter((s) => s.kind === 'idle')) {
    const sc = { ...scenario, peers: scenario.peers.filter(wantPeer) };
    const rows = await idleScenario(sc);
    results.scenarios[scenario.id] = { title: scenario.title, unit: scenario.unit, kind: scenario.kind, rows, summary: summarizeScenario(sc, rows) };
  }
  log(`measured in ${Math.round((Date.now() - t0) / 1000)} s`);
} catch (err) {
  exitCode = 1;
  results.error = String(err?.stack ?? err);
  log(`error: ${err?.stack ?? err}`);
} finally {
  for (const name of Object.keys(handles)) await stopPeer(name);
  await echo.stop();
  rmSync(tmp, { recursive: true, force: true });
}

results.finishedAt = new Date().toISOString();
results.durationSec = Math.round((Date.now() - startedAt.getTime()) / 1000);
results.loadAfter = load();
results.busyAfter = await busyProcesses();
results.freeMemoryMiB = Math.round(freemem() / 2 ** 20);

const stamp = startedAt.toISOString().replace(/[:.]/g, '-').slice(0, 19);
const out = args.out ?? join(BENCH, 'results', Q ? 'quick.json' : `run-${stamp}.json`);
mkdirSync(join(out, '..'), { recursive: true });
writeFileSync(out, `${JSON.stringify(results, null, 2)}\n`);
log(`results: ${relative(process.cwd(), out) || out}`);
const md = args.md ?? (Q ? null : join(BENCH, 'RESULTS.md'));
if (args.render && md) {
  writeFileSync(md, render(results, { jsonPath: relative(join(md, '..'), out) }));
  log(`rendered: ${relative(process.cwd(), md) || md}`);
}
process.exit(exitCode);
