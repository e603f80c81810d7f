#!/usr/bin/env node
// Runs the fuzz suite (test/fuzz/) with a given seed and size and prints its figures as Markdown, for
// docs/RELIABILITY.md: per property, the cases tried, the answers seen, the known bugs hit, the failures
// and the time.
//
//   node scripts/fuzz-report.mjs                        # the CI size, the default seed
//   node scripts/fuzz-report.mjs --runs 2000            # the long mode (what `npm run fuzz` runs)
//   node scripts/fuzz-report.mjs --seed 7 --runs 5000   # another seed, longer
//   node scripts/fuzz-report.mjs --runs 2000 --write    # also replace the figures in docs/RELIABILITY.md
//
// Build first (`npm run build`): test/fuzz/regressions.test.ts runs the built CLI. Exits with tap's code.
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DOC = join(ROOT, 'docs', 'RELIABILITY.md');
const START = '<!-- fuzz-figures:start -->';
const END = '<!-- fuzz-figures:end -->';

function parseArgs(argv) {
  const args = { seed: undefined, runs: undefined, write: false, files: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--seed') args.seed = Number(argv[++i]);
    else if (a === '--runs') args.runs = Number(argv[++i]);
    else if (a === '--write') args.write = true;
    else if (a === '--help' || a === '-h') {
      process.stdout.write('usage: node scripts/fuzz-report.mjs [--seed N] [--runs N] [--write] [test/fuzz/<file>.test.ts ...]\n');
      process.exit(0);
    } else args.files.push(a);
  }
  for (const k of ['seed', 'runs']) if (args[k] !== undefined && !Number.isInteger(args[k])) throw new Error(`--${k} needs an integer`);
  return args;
}

function run(args, dir) {
  const env = { ...process.env, FUZZ_REPORT: dir };
  if (args.seed !== undefined) env.FUZZ_SEED = String(args.seed);
  else delete env.FUZZ_SEED;
  if (args.runs !== undefined) env.FUZZ_RUNS = String(args.runs);
  else delete env.FUZZ_RUNS;
  const files =
    args.files.length > 0
      ? args.files
      : readdirSync(join(ROOT, 'test', 'fuzz'))
          .filter((f) => f.endsWith('.test.ts'))
          .sort()
          .map((f) => `test/fuzz/${f}`);
  const started = Date.now();
  return new Promise((resolve) => {
    // tap's own output goes to stderr, so stdout is the report alone.
    const child = spawn('npx', ['tap', '--disable-coverage', '--timeout=0', ...files], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (chunk) => {
      out += chunk;
      process.stderr.write(chunk);
    });
    child.on('close', (code) => {
      const summary = [...out.matchAll(/^# \{ (total: .*) \}$/gm)].at(-1)?.[1] ?? 'no summary';
      resolve({ code: code ?? 1, seconds: (Date.now() - started) / 1000, summary });
    });
  });
}

const fmt = (record, limit = 12) =>
  Object.entries(record)
    .sort((a, b) => b[1] - a[1])
    .slice(0, limit)
    .map(([k, n]) => `${k}: ${n}`)
    .join(', ') || '—';

function report(args, result, files) {
  const stats = files.flatMap((f) => f.stats);
  const known = Object.assign({}, ...files.map((f) => f.known));
  const seed = stats[0]?.seed ?? args.seed;
  const lines = [];
  lines.push(`Run of ${new Date().toISOString().slice(0, 10)}: seed **${seed}**, ${args.runs !== undefined ? `FUZZ_RUNS=**${args.runs}**` : 'the CI size (no FUZZ_RUNS)'}, Node ${process.version}, ${new Set(stats.map((s) => s.file)).size} files with properties.`);
  lines.push('');
  lines.push(`Command: \`node scripts/fuzz-report.mjs${args.seed !== undefined ? ` --seed ${args.seed}` : ''}${args.runs !== undefined ? ` --runs ${args.runs}` : ''}\`. Wall time ${result.seconds.toFixed(0)} s; tap: ${result.summary} (exit ${result.code}).`);
  lines.push('');
  lines.push('| property | file | cases | answers | known bugs hit | failures | time |');
  lines.push('| --- | --- | ---: | --- | --- | ---: | ---: |');
  for (const s of stats) {
    lines.push(`| ${s.name} | ${s.file} | ${s.cases} | ${fmt(s.statuses)} | ${fmt(s.knownBugs)} | ${s.failures.length} | ${(s.ms / 1000).toFixed(1)} s |`);
  }
  const total = stats.reduce((n, s) => n + s.cases, 0);
  lines.push(`| **all** | | **${total}** | | | **${stats.reduce((n, s) => n + s.failures.length, 0)}** | |`);
  lines.push('');
  lines.push('Outcomes per property (the most frequent):');
  lines.push('');
  for (const s of stats) lines.push(`- **${s.name}**: ${fmt(s.outcomes, 10)}`);
  const failed = stats.filter((s) => s.failures.length > 0);
  if (failed.length > 0) {
    lines.push('');
    lines.push('Failures:');
    lines.push('');
    for (const s of failed) for (const f of s.failures) lines.push(`- ${s.name}: \`${f.split('\n')[0]}\``);
  }
  const hit = [...new Set(stats.flatMap((s) => Object.keys(s.knownBugs)))];
  if (hit.length > 0) {
    lines.push('');
    lines.push('Known bugs hit (counted instead of failing; each has a `{ todo }` test in `test/fuzz/regressions.test.ts`):');
    lines.push('');
    for (const id of hit) lines.push(`- \`${id}\` (${stats.reduce((n, s) => n + (s.knownBugs[id] ?? 0), 0)} cases): ${known[id] ?? ''}`);
  }
  return lines.join('\n');
}

const args = parseArgs(process.argv.slice(2));
const dir = mkdtempSync(join(tmpdir(), 'portcullis-fuzz-'));
try {
  const result = await run(args, dir);
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')));
  const markdown = report(args, result, files);
  process.stdout.write(`${markdown}\n`);
  if (args.write) {
    const doc = readFileSync(DOC, 'utf8');
    const a = doc.indexOf(START);
    const b = doc.indexOf(END);
    if (a === -1 || b === -1) throw new Error(`${DOC} has no ${START} ... ${END} block`);
    writeFileSync(DOC, `${doc.slice(0, a + START.length)}\n${markdown}\n${doc.slice(b)}`);
    process.stderr.write(`figures written to ${DOC}\n`);
  }
  process.exitCode = result.code;
} finally {
  rmSync(dir, { recursive: true, force: true });
}
