// The leak and soak checks (issue 7), against the built CLI (dist/cli.js) on loopback:
//   node scripts/soak/run.mjs [--phases churn,idle,reload,drain] [--churn 10000] [--idle-connections 9000]
//                             [--idle-minutes 10] [--reload-seconds 30] [--reload-connections 1000]
//                             [--drain-connections 1000] [--drain-timeout-ms 5000]
//                             [--json FILE] [--write]
// Each phase starts its own gateway process, prints one PASS/FAIL line with its figures, and the run
// exits 1 when any phase fails. --write puts the figures into docs/RELIABILITY.md ("Leak and soak").
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ROOT } from '../../bench/peers.mjs';
import { runSecrets, startEcho } from './lib/gateway.mjs';
import { renderMarkdown, writeFigures } from './lib/report.mjs';
import { churn } from './phases/churn.mjs';
import { drain } from './phases/drain.mjs';
import { idle } from './phases/idle.mjs';
import { reload } from './phases/reload.mjs';

const PHASES = { churn, idle, reload, drain };

const USAGE = `usage: node scripts/soak/run.mjs [--phases churn,idle,reload,drain] [--churn N] [--idle-connections N]
       [--idle-minutes M] [--reload-seconds S] [--reload-connections N] [--drain-connections N]
       [--drain-timeout-ms MS] [--json FILE] [--write]`;

function options() {
  const { values } = parseArgs({
    options: {
      phases: { type: 'string', default: 'churn,idle,reload,drain' },
      churn: { type: 'string', default: '10000' },
      'idle-connections': { type: 'string', default: '9000' },
      'idle-minutes': { type: 'string', default: '10' },
      'reload-seconds': { type: 'string', default: '30' },
      'reload-connections': { type: 'string', default: '1000' },
      'drain-connections': { type: 'string', default: '1000' },
      'drain-timeout-ms': { type: 'string', default: '5000' },
      json: { type: 'string' },
      write: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const phases = values.phases.split(',').filter(Boolean);
  for (const p of phases) if (!PHASES[p]) throw new Error(`unknown phase ${p} (${Object.keys(PHASES).join(', ')})`);
  const num = (name) => {
    const n = Number(values[name]);
    if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} must be a number`);
    return n;
  };
  return {
    phases,
    churn: num('churn'),
    idleConnections: num('idle-connections'),
    idleMinutes: num('idle-minutes'),
    reloadSeconds: num('reload-seconds'),
    reloadConnections: num('reload-connections'),
    drainConnections: num('drain-connections'),
    drainTimeoutMs: num('drain-timeout-ms'),
    json: values.json,
    write: values.write,
  };
}

function phaseOptions(name, o) {
  switch (name) {
    case 'churn':
      return { count: o.churn };
    case 'idle':
      return { connections: o.idleConnections, minutes: o.idleMinutes };
    case 'reload':
      return { seconds: o.reloadSeconds, connections: o.reloadConnections };
    case 'drain':
      return { connections: o.drainConnections, timeoutMs: o.drainTimeoutMs };
  }
}

async function main() {
  let o;
  try {
    o = options();
  } catch (err) {
    process.stderr.write(`${err.message}\n${USAGE}\n`);
    return 1;
  }
  const tmp = mkdtempSync(join(tmpdir(), 'portcullis-soak-'));
  const ctx = { tmp, ...runSecrets(), echo: await startEcho() };
  const started = new Date();
  const results = {};
  try {
    for (const name of o.phases) {
      process.stderr.write(`${name}: running…\n`);
      const t0 = Date.now();
      let result;
      try {
        result = await PHASES[name](ctx, phaseOptions(name, o));
      } catch (err) {
        result = { pass: false, line: `error: ${err.message}`, figures: {}, problems: [err.stack ?? String(err)] };
      }
      result.wallSeconds = Math.round((Date.now() - t0) / 1000);
      results[name] = result;
      process.stdout.write(`${result.pass ? 'PASS' : 'FAIL'} ${name}: ${result.line}\n`);
      for (const p of result.problems) process.stdout.write(`  - ${p}\n`);
    }
  } finally {
    await ctx.echo.stop();
    rmSync(tmp, { recursive: true, force: true });
  }
  const pass = Object.values(results).every((r) => r.pass);
  const run = {
    date: started.toISOString(),
    node: process.version,
    cores: cpus().length,
    fdLimit: fdLimit(),
    options: o,
    pass,
    phases: results,
  };
  if (o.json) writeFileSync(o.json, `${JSON.stringify(run, null, 2)}\n`);
  if (o.write) {
    const doc = join(ROOT, 'docs', 'RELIABILITY.md');
    writeFileSync(doc, writeFigures(readFileSync(doc, 'utf8'), renderMarkdown(run)));
    process.stderr.write(`figures written to ${doc}\n`);
  }
  process.stdout.write(`${pass ? 'PASS' : 'FAIL'}: ${Object.keys(results).length} phase(s)\n`);
  return pass ? 0 : 1;
}

/** The soft limit on open files of this process (children inherit it). */
function fdLimit() {
  try {
    return Number(/Max open files\s+(\d+)/.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1]) || null;
  } catch {
    return null;
  }
}

process.exitCode = await main();
