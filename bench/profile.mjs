// Profiles portcullis (one jwt route, mode pipe, the `pipe` peer's config) under `node --cpu-prof` during
// fresh-token handshakes, then prints the functions with the most self time and writes
// bench/results/profile.json (rendered into RESULTS.md as "where the time goes").
//   bash bench/profile.sh [--duration-ms 15000] [--top 15] [--scenario handshake-fresh|handshake-rejected|echo-64]
// Only the samples inside the load generator's timed window count (start-up and warm-up are cut off).
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { BENCH, CLI, ROOT, childEnv, pinned, portcullisConfig, startProcess, waitReady, freePort } from './peers.mjs';
import { analyze, formatTable } from './cpuprofile-top.mjs';

const argv = process.argv.slice(2);
const opt = (name, def) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : def;
};
const durationMs = Number(opt('--duration-ms', 15000));
const top = Number(opt('--top', 15));
const scenario = opt('--scenario', 'handshake-fresh');
const SCENARIOS = {
  'handshake-fresh': { kind: 'handshake', token: 'fresh', expectStatus: 101, concurrency: 32 },
  'handshake-reused': { kind: 'handshake', token: 'reused', expectStatus: 101, concurrency: 32 },
  'handshake-rejected': { kind: 'handshake', token: 'bad', expectStatus: 401, concurrency: 32 },
  'echo-64': { kind: 'echo', token: 'reused', connections: 64, payload: 64 },
};
if (!SCENARIOS[scenario]) throw new Error(`unknown scenario ${scenario}; one of ${Object.keys(SCENARIOS).join(', ')}`);

const tmp = mkdtempSync(join(tmpdir(), 'portcullis-profile-'));
const profDir = join(tmp, 'prof');
mkdirSync(profDir);
const secret = randomBytes(32).toString('hex');
const echo = startProcess(pinned('1', [process.execPath, join(BENCH, 'echo-upstream.mjs')]));
let echoPort;
while (!echoPort) {
  const m = /"port":(\d+)/.exec(echo.output());
  if (m) echoPort = Number(m[1]);
  else await new Promise((r) => setTimeout(r, 25));
}
const port = await freePort();
const config = join(tmp, 'gateway.json');
writeFileSync(config, JSON.stringify(portcullisConfig({ echoPort }, port, { mode: 'pipe' }), null, 2));
const gw = startProcess(
  pinned('0', [process.execPath, '--cpu-prof', `--cpu-prof-dir=${profDir}`, '--cpu-prof-interval', '200', CLI, '--config', config]),
  { env: { JWT_SECRET: secret }, cwd: ROOT },
);
await waitReady(port, secret, gw);

process.stderr.write(`profiling portcullis pipe (pid ${gw.pid}) under ${scenario} for ${durationMs / 1000} s (after 3 s of warm-up)\n`);
const options = { ...SCENARIOS[scenario], port, secret, warmupMs: 3000, durationMs, sutPid: gw.pid, echoPid: echo.pid };
const [cmd, ...args] = pinned('1', [process.execPath, join(BENCH, 'loadgen.mjs'), JSON.stringify(options)]);
const lg = spawn(cmd, args, { env: childEnv(), stdio: ['ignore', 'pipe', 'inherit'] });
let result;
createInterface({ input: lg.stdout }).on('line', (l) => {
  const j = JSON.parse(l);
  if (j.event === 'result') result = j;
});
await new Promise((r) => lg.once('exit', r));
await gw.stop(); // SIGTERM: the CLI drains and exits 0, which writes the profile
await echo.stop();

const file = readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'));
if (!file) throw new Error(`no .cpuprofile written in ${profDir}: ${gw.output().slice(-500)}`);
const window = result?.windowMonoUs;
const summary = analyze(join(profDir, file), { top, window });
const out = {
  date: new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC',
  scenario,
  handshakes: result?.ops ?? null,
  opsPerSec: result?.opsPerSec ?? null,
  sutCpuPerOpUs: result?.sutCpuPerOpUs ?? null,
  ...summary,
};
mkdirSync(join(BENCH, 'results'), { recursive: true });
if (scenario === 'handshake-fresh') writeFileSync(join(BENCH, 'results', 'profile.json'), `${JSON.stringify(out, null, 2)}\n`);
else writeFileSync(join(BENCH, 'results', `profile-${scenario}.json`), `${JSON.stringify(out, null, 2)}\n`);
copyFileSync(join(profDir, file), join(BENCH, 'results', `portcullis-${scenario}.cpuprofile`));
rmSync(tmp, { recursive: true, force: true });

process.stdout.write(
  `${result?.ops ?? '?'} ops in the window (${result?.opsPerSec}/s, SUT ${result?.sutCpuPerOpUs} µs/op); ` +
    `${summary.windowed ? 'samples inside the timed window only' : 'whole profile (window not found in it)'}: ` +
    `${(summary.totalMs / 1000).toFixed(1)} s sampled, ${summary.idlePct}% idle; self time as % of busy time\n\n`,
);
process.stdout.write(`${formatTable(summary)}\n`);
process.stdout.write(`\nraw profile: bench/results/portcullis-${scenario}.cpuprofile (open in Chrome DevTools or speedscope)\n`);
