// Renders a results JSON (bench/results/*.json, written by bench/run.mjs) as Markdown: the targets of
// issue 6 with their measured ratios, one table per scenario, idle memory, worker scaling, the cost of
// unused features, machine notes, and the profile's top functions when bench/results/profile.json exists.
//   node bench/render.mjs bench/results/run-….json [--out bench/RESULTS.md] [--notes NOTES.md]
// --notes inserts a hand-written Markdown section (observations about the run) after the targets.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const BENCH = fileURLToPath(new URL('.', import.meta.url));

const fmtInt = (n) => (n == null ? '–' : Math.round(n).toLocaleString('en-US'));
const fmtUs = (n) => (n == null ? '–' : n >= 100 ? fmtInt(n) : n.toFixed(1));
const fmtPct = (n) => (n == null ? '–' : `±${Math.round(n / 2)}%`);
const fmtRatio = (n) => (n == null || !Number.isFinite(n) ? '–' : `${n.toFixed(2)}×`);
const fmtMs = (us) => (us == null ? '–' : us >= 1000 ? `${(us / 1000).toFixed(1)} ms` : `${Math.round(us)} µs`);
const fmtBytes = (b) => (b == null ? '–' : b >= 1024 ? `${(b / 1024).toFixed(1)} KiB` : `${Math.round(b)} B`);

function cell(results, scenario, peer) {
  return results.scenarios[scenario]?.summary?.[peer] ?? null;
}
const cpuOf = (results, scenario, peer) => cell(results, scenario, peer)?.sutCpuPerOpUs?.median ?? null;
const ratio = (a, b) => (a == null || b == null || b === 0 ? null : a / b);

function targets(r) {
  const rows = [];
  const add = (what, value, goal, pass, how) => rows.push({ what, value, goal, pass, how });
  const cpuRatio = (sc, a, b) => ratio(cpuOf(r, sc, a), cpuOf(r, sc, b));
  const check = (v, max) => (v == null ? null : v <= max);

  for (const mode of ['pipe', 'relay']) {
    const v = cpuRatio('handshake-fresh', mode, 'baseline');
    add(`SUT CPU per fresh-token handshake, ${mode} ÷ baseline`, v, '≤ 0.8×', check(v, 0.8), 'handshake-fresh');
  }
  for (const mode of ['pipe', 'relay']) {
    const v = cpuRatio('handshake-rejected', mode, 'baseline');
    add(`SUT CPU per rejected handshake, ${mode} ÷ baseline`, v, '≤ 0.8×', check(v, 0.8), 'handshake-rejected');
  }
  {
    const v = ratio(cpuOf(r, 'handshake-reused', 'pipe'), cpuOf(r, 'handshake-fresh', 'pipe'));
    add('Reused-token handshake ÷ fresh-token handshake, pipe (verified-token cache)', v, 'clearly < 1 (≤ 0.8×)', check(v, 0.8), 'handshake-reused vs -fresh');
  }
  {
    const v = cpuRatio('handshake-fresh', 'pipe', 'haproxy');
    add('*stretch:* SUT CPU per fresh-token handshake, pipe ÷ HAProxy', v, '≤ 1.0×', check(v, 1.0), 'handshake-fresh');
  }
  for (const sc of ['echo-64', 'echo-4k']) {
    const v = cpuRatio(sc, 'pipe', 'baseline');
    add(`SUT CPU per round trip (${sc}), pipe ÷ baseline`, v, '≤ 1.0×', check(v, 1.0), sc);
  }
  {
    const v = ratio(cell(r, 'latency-1', 'pipe')?.p50Us, cell(r, 'latency-1', 'baseline')?.p50Us);
    add('Round-trip latency p50 (1 connection), pipe ÷ baseline', v, '≤ 1.0×', check(v, 1.0), 'latency-1');
  }
  for (const sc of ['echo-64', 'echo-4k']) {
    const v = cpuRatio(sc, 'relay', 'haproxy');
    add(`SUT CPU per round trip (${sc}), relay ÷ HAProxy`, v, '≤ 1.3×', check(v, 1.3), sc);
  }
  const mem = (peer) => cell(r, 'idle-memory', peer)?.bytesPerConnection?.median ?? null;
  for (const mode of ['pipe', 'relay']) {
    const v = ratio(mem(mode), mem('baseline'));
    add(`Idle memory per connection, ${mode} ÷ baseline`, v, '≤ 1.0×', check(v, 1.0), 'idle-memory');
  }
  {
    const v = ratio(mem('pipe'), mem('haproxy'));
    add('*stretch:* idle memory per connection, pipe ÷ HAProxy', v, '≤ 1.0×', check(v, 1.0), 'idle-memory');
  }
  {
    const w1 = cell(r, 'workers', 'workers-1')?.opsPerSec?.median;
    const w2 = cell(r, 'workers', 'workers-2')?.opsPerSec?.median;
    const v = ratio(w2, w1);
    add('Handshakes/s, workers: 2 ÷ workers: 1', v, '≥ 1.8×', v == null ? null : v >= 1.8, 'workers');
  }
  for (const sc of ['handshake-fresh', 'handshake-rejected', 'echo-64', 'idle-memory']) {
    const v = sc === 'idle-memory' ? ratio(mem('pipe-full'), mem('pipe')) : cpuRatio(sc, 'pipe-full', 'pipe');
    add(`Unused features: all configured ÷ minimal (${sc})`, v, '≈ 1.0× (≤ 1.05×)', check(v, 1.05), sc);
  }
  return rows;
}

function scenarioTable(r, id) {
  const s = r.scenarios[id];
  if (!s) return '';
  const lines = [`### ${id}: ${s.title}`, ''];
  if (s.kind === 'idle') {
    lines.push('| peer | bytes per idle connection | spread | RSS before → with connections | opened/s | × baseline | × HAProxy |');
    lines.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
    const base = s.summary.baseline?.bytesPerConnection?.median;
    const hap = s.summary.haproxy?.bytesPerConnection?.median;
    for (const [peer, v] of Object.entries(s.summary)) {
      const b = v.bytesPerConnection.median;
      lines.push(
        `| ${peer} | **${fmtBytes(b)}** | ${fmtPct(v.bytesPerConnection.spreadPct)} | ${Math.round(v.rssBeforeMiB)} → ${Math.round(v.rssAfterMiB)} MiB (${fmtInt(v.opened)} conn.) | ${fmtInt(v.openPerSec)} | ${fmtRatio(ratio(b, base))} | ${fmtRatio(ratio(b, hap))} |`,
      );
    }
  } else {
    lines.push(`| peer | ${s.unit} | spread | SUT CPU µs/op | spread | × baseline | × HAProxy | p50 | p99 | SUT cores busy | load-gen core busy |`);
    lines.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
    const base = s.summary.baseline?.sutCpuPerOpUs?.median;
    const hap = s.summary.haproxy?.sutCpuPerOpUs?.median;
    for (const [peer, v] of Object.entries(s.summary)) {
      const c = v.sutCpuPerOpUs.median;
      lines.push(
        `| ${peer} | ${fmtInt(v.opsPerSec.median)} | ${fmtPct(v.opsPerSec.spreadPct)} | **${fmtUs(c)}** | ${fmtPct(v.sutCpuPerOpUs.spreadPct)} | ${fmtRatio(ratio(c, base))} | ${fmtRatio(ratio(c, hap))} | ${fmtMs(v.p50Us)} | ${fmtMs(v.p99Us)} | ${v.sutCores == null ? '–' : v.sutCores.toFixed(2)} | ${v.loadgenCoreBusy == null ? '–' : v.loadgenCoreBusy.toFixed(2)} |`,
      );
    }
  }
  const failed = s.rows.filter((row) => row.ok === false);
  if (failed.length) lines.push('', `Failed measurements: ${failed.map((f) => `${f.peer} round ${f.round + 1} (${f.reason ?? 'no ops'})`).join('; ')}.`);
  // Per-round values, to show the noise.
  const metric = s.kind === 'idle' ? 'bytesPerConnection' : 'sutCpuPerOpUs';
  const peers = Object.keys(s.summary);
  const rounds = Math.max(0, ...s.rows.map((row) => row.round + 1));
  if (rounds > 1) {
    lines.push('', `<details><summary>per round (${s.kind === 'idle' ? 'bytes per connection' : 'SUT CPU µs/op'}, in run order)</summary>`, '');
    lines.push(`| peer | ${Array.from({ length: rounds }, (_, i) => `r${i + 1}`).join(' | ')} |`);
    lines.push(`| --- |${' ---: |'.repeat(rounds)}`);
    for (const peer of peers) {
      const vals = Array.from({ length: rounds }, (_, i) => s.rows.find((row) => row.peer === peer && row.round === i));
      lines.push(`| ${peer} | ${vals.map((v) => (v && v.ok !== false ? (s.kind === 'idle' ? fmtInt(v[metric]) : fmtUs(v[metric])) : '–')).join(' | ')} |`);
    }
    lines.push('', '</details>');
  }
  lines.push('');
  return lines.join('\n');
}

const PROFILE_TITLES = {
  'handshake-fresh': 'fresh-token handshakes',
  'handshake-reused': 'reused-token handshakes',
  'handshake-rejected': 'rejected handshakes (bad signature)',
  'echo-64': '64 B echo round trips',
};

function profileSection(profile) {
  if (!profile) return '';
  const what = PROFILE_TITLES[profile.scenario] ?? profile.scenario ?? 'fresh-token handshakes';
  const cmd = profile.scenario && profile.scenario !== 'handshake-fresh' ? `bash bench/profile.sh --scenario ${profile.scenario}` : 'bash bench/profile.sh';
  const lines = [
    `## Where the time goes: portcullis pipe, ${what}`,
    '',
    `\`${cmd}\` (${profile.date}): portcullis under \`node --cpu-prof\` (sampling every 200 µs, which slows it: ` +
      `${profile.sutCpuPerOpUs ?? '?'} µs/op while profiled), ${fmtInt(profile.handshakes)} operations in a ` +
      `${(profile.totalMs / 1000).toFixed(0)} s window (${profile.windowed ? 'start-up and warm-up cut off' : 'whole profile'}), ` +
      `${profile.idlePct}% idle. Self time as a share of busy time, per function (top ${profile.top.length}), then per package or file:`,
    '',
    '| # | self % | self ms | function | where |',
    '| ---: | ---: | ---: | --- | --- |',
    ...profile.top.map((f, i) => `| ${i + 1} | ${f.selfPct.toFixed(1)} | ${Math.round(f.selfMs)} | \`${f.name}\` | ${f.where} |`),
    '',
  ];
  if (profile.byFile?.length) {
    lines.push('| self % | package / file |', '| ---: | --- |', ...profile.byFile.map((f) => `| ${f.selfPct.toFixed(1)} | ${f.file} |`), '');
  }
  return lines.join('\n');
}

export function render(r, { jsonPath, notes, profileDir = join(BENCH, 'results') } = {}) {
  const m = r.machine ?? {};
  // bench/profile.sh writes profile.json (fresh-token handshakes) and profile-<scenario>.json for the others.
  const profiles = profileDir && existsSync(profileDir)
    ? readdirSync(profileDir)
        .filter((f) => /^profile(-[\w-]+)?\.json$/.test(f))
        .sort((a, b) => (a === 'profile.json' ? -1 : b === 'profile.json' ? 1 : a.localeCompare(b)))
        .map((f) => JSON.parse(readFileSync(join(profileDir, f), 'utf8')))
    : [];
  const peersLine = Object.entries(r.peers)
    .map(([name, p]) => `\`${name}\`: ${p.label}${p.status !== 'ok' ? ` — **skipped**: ${p.reason}` : ''}${p.restarts ? ` (restarted ${p.restarts}×)` : ''}`)
    .join('\n- ');
  const busy = (list) => (list?.length ? list.map((p) => `${p.comm} ${p.pcpu}%`).join(', ') : 'nothing above 5% of a core');
  const noisy = (r.loadBefore?.[0] ?? 0) > 0.5 || (r.loadAfter?.[0] ?? 0) > 0.5 || r.busyBefore?.length || r.busyAfter?.length;
  const t = targets(r);
  const out = [];
  out.push('# portcullis benchmark results', '');
  out.push(
    `${r.quick ? '**Quick run** (not representative). ' : ''}Recorded ${r.startedAt.slice(0, 16).replace('T', ' ')} UTC by \`bash bench/run.sh\`` +
      ` in ${r.durationSec >= 120 ? `${Math.round(r.durationSec / 60)} min` : `${r.durationSec} s`}: ${r.settings.rounds} alternating round${r.settings.rounds === 1 ? '' : 's'} of ${r.settings.durationMs / 1000} s per peer and scenario` +
      ` (after ${r.settings.warmupMs / 1000} s of unmeasured warm-up each), idle memory in ${r.settings.idleRounds} round${r.settings.idleRounds === 1 ? '' : 's'} on fresh processes.` +
      (jsonPath ? ` Raw numbers: [${jsonPath}](${jsonPath}).` : ''),
    '',
    'How to read this: **SUT CPU µs/op** (CPU time of the proxy process(es) per handshake or message, from `/proc/<pid>/stat`) is the',
    'headline — it is what a proxy costs, and it holds even when the load generator is the limit. Throughput and latency are those of',
    'the whole loop on two cores. *Spread* is ±half the (max − min) range over the rounds, relative to the median. Ratios divide the',
    "peer's median by the hand-written baseline's or HAProxy's; lower is better. See [README.md](README.md) for the method.",
    '',
  );
  if (noisy) {
    out.push(
      `> **Noisy machine.** Other work ran on this machine during the run (other engineers' test suites): load average` +
        ` ${r.loadBefore?.join(' / ')} before and ${r.loadAfter?.join(' / ')} after; busiest other processes (share of one core over 1 s) at the start:` +
        ` ${busy(r.busyBefore)}; at the end: ${busy(r.busyAfter)}. Pinning keeps the peers on core 0 but not other processes off it;` +
        ' rounds alternate peers so the noise falls on all of them alike — read the spread columns before trusting a small difference.',
      '',
    );
  }
  out.push('## Targets (issue 6)', '', '| target | measured | goal | met |', '| --- | ---: | :---: | :---: |');
  for (const row of t) out.push(`| ${row.what} | ${fmtRatio(row.value)} | ${row.goal} | ${row.pass == null ? 'n/a' : row.pass ? 'yes' : '**no**'} |`);
  out.push('');
  if (notes) out.push(notes.trim(), '');
  out.push('## Peers', '', `- ${peersLine}`, '');
  out.push('## Scenarios', '');
  for (const id of Object.keys(r.scenarios)) out.push(scenarioTable(r, id));
  if (r.scenarios['pipe-full'] === undefined && r.scenarios['handshake-fresh']?.summary?.['pipe-full']) {
    out.push('## Unused features', '', '`pipe-full` runs the same measured route as `pipe` (one `jwt` authenticator, mode pipe), in a config that also', 'has the admin listener, one-time tickets, 8 authenticators of every type and 4 other routes using origins, require, rate limits,', 'connection caps, refresh, first-message auth, assertion, sticky, http, revalidation; the measured route is matched last.', '');
    out.push('| scenario | pipe µs/op | pipe-full µs/op | ratio |', '| --- | ---: | ---: | ---: |');
    for (const sc of ['handshake-fresh', 'handshake-reused', 'handshake-rejected', 'echo-64', 'echo-4k', 'latency-1']) {
      const a = cpuOf(r, sc, 'pipe');
      const b = cpuOf(r, sc, 'pipe-full');
      if (a != null && b != null) out.push(`| ${sc} | ${fmtUs(a)} | ${fmtUs(b)} | ${fmtRatio(b / a)} |`);
    }
    out.push('');
  }
  for (const profile of profiles) out.push(profileSection(profile));
  out.push('## Machine', '');
  out.push(
    `- CPU: ${m.cpuModel}, ${m.cores} cores; ${m.memoryMiB} MiB RAM; Linux ${m.kernel}; fd limit ${m.fdLimit}`,
    `- Node ${m.node}; ${m.nginx ? `nginx ${m.nginx}` : 'nginx not installed'}; ${m.haproxy ?? 'HAProxy not installed'}`,
    `- Pinning: ${m.pinning}; the \`workers\` scenario pins nothing`,
    `- portcullis at commit ${m.commit}${m.dirtyTree ? ' with uncommitted changes in src/ (dist/ built from the working tree)' : ''}`,
    `- Load average (1/5/15 min): ${r.loadBefore?.join(' / ')} before, ${r.loadAfter?.join(' / ')} after`,
    '',
  );
  return `${out.join('\n').replace(/\n{3,}/g, '\n\n').trimEnd()}\n`;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: node bench/render.mjs RESULTS.json [--out FILE.md]\n');
    process.exit(1);
  }
  const outAt = process.argv.indexOf('--out');
  const notesAt = process.argv.indexOf('--notes');
  const notes = notesAt > 0 ? readFileSync(process.argv[notesAt + 1], 'utf8') : undefined;
  const results = JSON.parse(readFileSync(file, 'utf8'));
  if (outAt > 0) {
    const md = process.argv[outAt + 1];
    writeFileSync(md, render(results, { jsonPath: relative(join(md, '..'), file), notes }));
  } else {
    process.stdout.write(render(results, { jsonPath: file, notes }));
  }
}
