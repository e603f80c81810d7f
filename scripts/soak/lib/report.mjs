// The soak's figures as Markdown, and their place in docs/RELIABILITY.md (between two marker comments in
// the "Leak and soak" section, so that the prose around them stays hand-written).
/** The markers around the generated figures in docs/RELIABILITY.md. */
export const START = '<!-- soak-figures:start -->';
export const END = '<!-- soak-figures:end -->';

const kb = (bytes) => (bytes == null ? '—' : `${(bytes / 1024).toFixed(1)} KiB`);

function command(o) {
  const args = [`--phases ${o.phases.join(',')}`];
  if (o.phases.includes('churn')) args.push(`--churn ${o.churn}`);
  if (o.phases.includes('idle')) args.push(`--idle-connections ${o.idleConnections} --idle-minutes ${o.idleMinutes}`);
  if (o.phases.includes('reload')) args.push(`--reload-seconds ${o.reloadSeconds} --reload-connections ${o.reloadConnections}`);
  if (o.phases.includes('drain')) args.push(`--drain-connections ${o.drainConnections} --drain-timeout-ms ${o.drainTimeoutMs}`);
  return `node scripts/soak/run.mjs ${args.join(' ')}`;
}

/** The Markdown block for one run (the JSON `run.mjs --json` writes). */
export function renderMarkdown(run) {
  const out = [];
  out.push(
    `Run of ${run.date.slice(0, 10)}: Node ${run.node}, ${run.cores} cores (shared with other work), open-file limit ${run.fdLimit ?? '?'}. ` +
      `Result: **${run.pass ? 'PASS' : 'FAIL'}**.`,
    '',
    `Command: \`${command(run.options)}\`.`,
    '',
    '| phase | result | figures | wall time |',
    '| --- | --- | --- | ---: |',
  );
  for (const [name, r] of Object.entries(run.phases)) {
    out.push(`| ${name} | ${r.pass ? 'pass' : '**FAIL**'} | ${r.line.replaceAll('|', '\\|')} | ${r.wallSeconds} s |`);
  }
  const idle = run.phases.idle?.figures;
  if (idle?.samples?.length) {
    out.push(
      '',
      `Idle phase over time (${idle.opened} connections open; heap after a full GC, fds of the gateway process):`,
      '',
      '| after | open | RSS | heap after GC | fds |',
      '| ---: | ---: | ---: | ---: | ---: |',
    );
    const step = Math.max(1, Math.ceil(idle.samples.length / 12));
    idle.samples.forEach((s, i) => {
      if (i % step === 0 || i === idle.samples.length - 1) out.push(`| ${s.s} s | ${s.open} | ${s.rssMB} MB | ${s.heapMB} MB | ${s.fds} |`);
    });
    const r = idle.rssPerConnectionBytes;
    const h = idle.heapPerConnectionBytes;
    out.push(
      '',
      `Memory per idle connection (gateway process, after GC): RSS ${kb(r.all)} (pipe ${kb(r.pipe)}, relay ${kb(r.relay)}); ` +
        `V8 heap ${kb(h.all)} (pipe ${kb(h.pipe)}, relay ${kb(h.relay)}); ${idle.fds.perConnection} fds per connection.`,
    );
  }
  const failed = Object.entries(run.phases).filter(([, r]) => r.problems.length);
  for (const [name, r] of failed) {
    out.push('', `Problems in ${name}:`, '', ...r.problems.map((p) => `- ${p.split('\n')[0]}`));
  }
  return out.join('\n');
}

/** `doc` with the text between the markers replaced by `markdown`. */
export function writeFigures(doc, markdown) {
  const a = doc.indexOf(START);
  const b = doc.indexOf(END);
  if (a < 0 || b < a) throw new Error(`docs/RELIABILITY.md has no ${START} … ${END} block`);
  return `${doc.slice(0, a + START.length)}\n${markdown}\n${doc.slice(b)}`;
}
