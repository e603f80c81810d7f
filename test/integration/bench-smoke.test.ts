// The benchmark (bench/) still runs: its --quick mode, for two scenarios against `direct`, the hand-written
// baseline and portcullis pipe, writes well-formed results with non-zero throughput and renders them.
// Nothing here asserts a speed: the machine running the tests is busy with other tests.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { cleanEnv, ROOT } from '../helpers/cli.js';

const PEERS = ['direct', 'baseline', 'pipe'];
const SCENARIOS = ['handshake-fresh', 'echo-64'];

interface Summary {
  opsPerSec: { median: number | null };
  sutCpuPerOpUs: { median: number | null };
  p50Us: number | null;
}
interface Row {
  peer: string;
  ok?: boolean;
  ops: number;
  opsPerSec: number;
  sutCpuPerOpUs: number | null;
  latencyUs: { p50: number | null; p99: number | null };
}
interface Results {
  version: number;
  quick: boolean;
  machine: { node: string; cores: number; cpuModel: string };
  peers: Record<string, { status: string; reason?: string }>;
  scenarios: Record<string, { rows: Row[]; summary: Record<string, Summary> }>;
  error?: string;
}

t.test('bench/run.mjs --quick writes well-formed results with non-zero throughput', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bench-smoke-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const out = join(dir, 'results.json');
  const md = join(dir, 'RESULTS.md');
  const env = cleanEnv();
  // bench/ is not part of the coverage, and its processes are measured: tap's process tracker, which it
  // adds to every child it spawns, is told not to collect coverage in them (it copies this variable down
  // the tree only when a child's environment lacks it, and the bench keeps it).
  env._TAPJS_PROCESSINFO_COVERAGE_ = '0';
  delete env.NODE_V8_COVERAGE;
  const child = spawn(
    process.execPath,
    [
      join(ROOT, 'bench', 'run.mjs'),
      ...['--quick', '--no-setup', '--warmup-ms', '100', '--duration-ms', '600'],
      ...['--peers', PEERS.join(','), '--scenarios', SCENARIOS.join(','), '--out', out, '--md', md],
    ],
    { cwd: ROOT, env, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
  t.equal(code, 0, `the runner exits 0 (stderr: ${stderr})`);
  t.ok(existsSync(out), 'results JSON written');

  const results = JSON.parse(readFileSync(out, 'utf8')) as Results;
  t.equal(results.version, 1);
  t.equal(results.quick, true);
  t.notOk(results.error, 'no run error');
  t.equal(results.machine.node, process.version);
  t.ok(results.machine.cores >= 1 && results.machine.cpuModel, 'machine notes');
  for (const peer of PEERS) t.equal(results.peers[peer]?.status, 'ok', `peer ${peer} ran (${results.peers[peer]?.reason ?? ''})`);

  for (const id of SCENARIOS) {
    const scenario = results.scenarios[id];
    t.ok(scenario, `scenario ${id} recorded`);
    for (const peer of PEERS) {
      const rows = scenario.rows.filter((r) => r.peer === peer);
      t.equal(rows.length, 1, `${id}/${peer}: one round in quick mode`);
      const row = rows[0];
      t.not(row.ok, false, `${id}/${peer}: measurement ok`);
      t.ok(row.ops > 0 && row.opsPerSec > 0, `${id}/${peer}: non-zero throughput (${row.opsPerSec}/s)`);
      t.ok((row.latencyUs.p50 ?? 0) > 0 && (row.latencyUs.p99 ?? 0) >= (row.latencyUs.p50 ?? 0), `${id}/${peer}: latency quantiles`);
      if (peer === 'direct') t.equal(row.sutCpuPerOpUs, null, `${id}/direct: no system under test`);
      else t.ok((row.sutCpuPerOpUs ?? 0) > 0, `${id}/${peer}: SUT CPU per op measured (${row.sutCpuPerOpUs} µs)`);
      t.ok((scenario.summary[peer]?.opsPerSec.median ?? 0) > 0, `${id}/${peer}: summarized`);
    }
  }

  const text = readFileSync(md, 'utf8');
  t.match(text, /## Targets \(issue 6\)/);
  t.match(text, /### handshake-fresh: /);
  t.match(text, /\| pipe \| [\d,]+ \|/, 'a table row for pipe');
});
