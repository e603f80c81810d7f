// The soak (scripts/soak/run.mjs, `npm run soak`) still works: every phase at a tiny size passes against
// the built CLI and reports its figures. The real sizes (10 000 cycles, 9 000 connections for 10 minutes)
// run on demand; their last result is in docs/RELIABILITY.md.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { cleanEnv, ROOT } from '../helpers/cli.js';

interface Phase {
  pass: boolean;
  line: string;
  problems: string[];
  figures: Record<string, unknown> & {
    fds?: { base: number; end: number };
    unexpectedCloses?: number;
    droppedEstablished?: number;
    relay?: { count: number; closed1001: number };
    pipe?: { count: number; endedBeforeTimeout: number };
    exit?: { code: number | null };
    reloads?: { valid: number; invalid: number };
  };
}
interface Run {
  pass: boolean;
  phases: Record<string, Phase>;
}

/** The soak's processes are measured and scripts/ is not part of the coverage: none collected in them (as in bench-smoke). */
function uncovered(): NodeJS.ProcessEnv {
  const env = cleanEnv();
  env._TAPJS_PROCESSINFO_COVERAGE_ = '0';
  delete env.NODE_V8_COVERAGE;
  return env;
}

t.test('scripts/soak/run.mjs passes every phase at a tiny size', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'soak-smoke-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const out = join(dir, 'soak.json');
  const env = uncovered();
  const args = [
    ...['--churn', '200', '--idle-connections', '100', '--idle-minutes', '0.05'],
    ...['--reload-seconds', '5', '--reload-connections', '60', '--drain-connections', '60', '--drain-timeout-ms', '2000'],
    ...['--json', out],
  ];
  const child = spawn(process.execPath, [join(ROOT, 'scripts', 'soak', 'run.mjs'), ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (d: Buffer) => (output = (output + d.toString()).slice(-6000));
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
  t.equal(code, 0, `the soak exits 0 (output: ${output})`);

  const run = JSON.parse(readFileSync(out, 'utf8')) as Run;
  t.equal(run.pass, true);
  t.same(Object.keys(run.phases), ['churn', 'idle', 'reload', 'drain'], 'every phase ran, in order');
  for (const [name, phase] of Object.entries(run.phases)) {
    t.equal(phase.pass, true, `${name}: ${phase.line}`);
    t.same(phase.problems, [], `${name}: no problems`);
    t.match(output, new RegExp(`^PASS ${name}: `, 'm'), `${name}: a PASS line on stdout`);
  }
  const { churn, idle, reload, drain } = run.phases;
  t.ok(churn.figures.fds && churn.figures.fds.base > 0, 'churn: fds measured');
  t.equal(idle.figures.unexpectedCloses, 0, 'idle: no unexpected close');
  t.equal(reload.figures.droppedEstablished, 0, 'reload: no established connection dropped');
  t.ok(reload.figures.reloads && reload.figures.reloads.valid >= 1 && reload.figures.reloads.invalid >= 1, 'reload: valid and invalid configs reloaded');
  t.equal(drain.figures.relay?.closed1001, drain.figures.relay?.count, 'drain: every relay connection closed 1001');
  t.equal(drain.figures.pipe?.endedBeforeTimeout, 0, 'drain: no pipe connection cut before the timeout');
  t.equal(drain.figures.exit?.code, 0, 'drain: the gateway exited 0');
});

t.test('scripts/soak/run.mjs refuses an unknown phase with exit 1', async (t) => {
  const child = spawn(process.execPath, [join(ROOT, 'scripts', 'soak', 'run.mjs'), '--phases', 'churn,nope'], { cwd: ROOT, env: uncovered(), stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
  t.equal(code, 1);
  t.match(stderr, /unknown phase nope/);
});
