// Reads a V8 .cpuprofile (node --cpu-prof) and lists the functions with the most self time, and the same
// grouped by package or file.
//   node bench/cpuprofile-top.mjs FILE.cpuprofile [--top 15]
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { relative } from 'node:path';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SPECIAL = new Set(['(idle)', '(program)', '(garbage collector)', '(root)']);

function where(url, line) {
  if (!url) return '(V8 / native)';
  let u = url.startsWith('file://') ? fileURLToPath(url) : url;
  if (u.startsWith('/')) u = relative(ROOT, u);
  const nm = u.lastIndexOf('node_modules/');
  if (nm >= 0) u = u.slice(nm + 'node_modules/'.length);
  return `${u}:${line + 1}`;
}

function group(url, name) {
  if (SPECIAL.has(name)) return name;
  if (!url) return '(V8 / native)';
  let u = url.startsWith('file://') ? fileURLToPath(url) : url;
  if (u.startsWith('node:')) return u.split('/').slice(0, 2).join('/').replace(/^node:internal\/?$/, 'node:internal');
  const nm = u.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const parts = u.slice(nm + 'node_modules/'.length).split('/');
    return parts[0].startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0];
  }
  if (u.startsWith('/')) u = relative(ROOT, u);
  return u;
}

/**
 * Self time per function. `window` ([startUs, endUs] on the monotonic clock, as the load generator
 * reports it) keeps only the samples inside it, when the profile covers it.
 */
export function analyze(file, { top = 15, window } = {}) {
  const profile = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map();
  let t = profile.startTime;
  const windowed = Boolean(window && window[0] >= profile.startTime && window[1] <= profile.endTime);
  let total = 0;
  let idle = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i];
    // A sample stands for the time until the next one.
    const dt = i + 1 < profile.timeDeltas.length ? profile.timeDeltas[i + 1] : 0;
    if (windowed && (t < window[0] || t > window[1])) continue;
    const node = byId.get(profile.samples[i]);
    const cf = node.callFrame;
    const name = cf.functionName || '(anonymous)';
    total += dt;
    if (name === '(idle)') {
      idle += dt;
      continue;
    }
    const key = `${name}\u0000${cf.url}\u0000${cf.lineNumber}`;
    const e = self.get(key) ?? { name, url: cf.url, line: cf.lineNumber, us: 0 };
    e.us += dt;
    self.set(key, e);
  }
  const busy = total - idle || 1;
  const entries = [...self.values()].sort((a, b) => b.us - a.us);
  const files = new Map();
  for (const e of entries) {
    const g = group(e.url, e.name);
    files.set(g, (files.get(g) ?? 0) + e.us);
  }
  return {
    windowed,
    totalMs: total / 1000,
    busyMs: busy / 1000,
    idlePct: Math.round((idle / (total || 1)) * 1000) / 10,
    top: entries.slice(0, top).map((e) => ({
      name: e.name,
      where: SPECIAL.has(e.name) ? '' : where(e.url, e.line),
      selfMs: Math.round(e.us / 100) / 10,
      selfPct: Math.round((e.us / busy) * 1000) / 10,
    })),
    byFile: [...files.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([f, us]) => ({ file: f, selfPct: Math.round((us / busy) * 1000) / 10 })),
  };
}

export function formatTable(summary) {
  const rows = summary.top.map((f, i) => `${String(i + 1).padStart(3)}  ${f.selfPct.toFixed(1).padStart(5)}%  ${String(Math.round(f.selfMs)).padStart(6)} ms  ${f.name}  ${f.where}`);
  const files = summary.byFile.map((f) => `       ${f.selfPct.toFixed(1).padStart(5)}%  ${f.file}`);
  return ['  #  self %   self ms  function  where', ...rows, '', '  by package / file:', ...files].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: node bench/cpuprofile-top.mjs FILE.cpuprofile [--top N]\n');
    process.exit(1);
  }
  const i = process.argv.indexOf('--top');
  const summary = analyze(file, { top: i > 0 ? Number(process.argv[i + 1]) : 15 });
  process.stdout.write(`${(summary.totalMs / 1000).toFixed(1)} s sampled, ${summary.idlePct}% idle; self time as % of busy time\n\n${formatTable(summary)}\n`);
}
