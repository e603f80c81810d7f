// The BUILT command line (`node dist/cli.js`, built before tap runs) as a child process, and its JSON log
// lines on stdout.
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Teardown } from './net.js';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const CLI = join(ROOT, 'dist', 'cli.js');

// Variables the CLI reads; the test decides each of them, whatever the developer's shell has set.
const CONTROLLED = ['PORTCULLIS_CONFIG', 'JWT_SECRET', 'ADMIN_TOKEN', 'PORT', 'ADMIN_PORT', 'HOST', 'ADMIN_HOST', 'LOG_LEVEL', 'UPSTREAM_URL'];

/** The test's environment minus the variables the CLI reads, plus `extra`. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const name of CONTROLLED) delete env[name];
  // tap preloads its process tracker into every child through NODE_OPTIONS, for coverage; that costs
  // ~0.6 s per spawn, so without coverage the children start bare.
  if (env.TAP_DISABLE_COVERAGE === '1' && env.NODE_OPTIONS) {
    env.NODE_OPTIONS = env.NODE_OPTIONS.replace(/"?--import=\S*@tapjs\/processinfo\S*?"?(?=\s|$)/g, '').trim();
  }
  return { ...env, ...extra };
}

/** How a child process ended. */
export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Milliseconds since the process was spawned. */
  at: number;
}

export type LogLine = Record<string, unknown>;

export interface CliProcess {
  child: ChildProcess;
  exited: Promise<Exit>;
  stdout(): string;
  stderr(): string;
  /** The complete JSON lines written to stdout so far (a line that is not JSON throws). */
  lines(): LogLine[];
  /**
   * Resolves the first line, among those after the first `after` lines, that has `msg` (and satisfies
   * `where`); rejects when the process exits first or `timeoutMs` pass.
   */
  waitFor(msg: string, options?: { after?: number; timeoutMs?: number; where?: (line: LogLine) => boolean }): Promise<LogLine>;
}

/** The pids of the live child processes of `pid` (Linux /proc). */
export function childPids(pid: number): number[] {
  const children: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // The fields after the command name, which is in parentheses and may hold spaces: state, ppid, ...
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) children.push(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  return children;
}

/**
 * Whether a process with this pid runs: `process.kill(pid, 0)` does not throw ESRCH, and it is not a
 * zombie (an orphan that exited but that init has not reaped yet).
 */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0] !== 'Z';
  } catch {
    return false;
  }
}

/** SIGKILLs `pid` if it is still there. */
export function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

/**
 * Spawns `node dist/cli.js ...args`; SIGKILLed by `t.teardown` if it is still running, with its own
 * children first (the workers of `workers: N`, which would otherwise outlive it).
 */
export function spawnCli(t: Teardown, args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): CliProcess {
  const started = Date.now();
  const child = spawn(process.execPath, [CLI, ...args], { cwd: options.cwd ?? ROOT, env: options.env ?? cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<Exit>((resolve) => child.once('close', (code, signal) => resolve({ code, signal, at: Date.now() - started })));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      for (const pid of childPids(child.pid!)) killQuietly(pid);
      child.kill('SIGKILL');
      await exited;
    }
  });
  const lines = (): LogLine[] =>
    stdout
      .split('\n')
      .slice(0, -1)
      .filter((line) => line.trim() !== '')
      .map((line) => JSON.parse(line) as LogLine);
  const waitFor: CliProcess['waitFor'] = (msg, { after = 0, timeoutMs = 10000, where = () => true } = {}) =>
    new Promise((resolve, reject) => {
      // Declared first: the line may already be there, and then done() runs at once, below.
      let settled = false;
      const timer = setTimeout(() => done(new Error(`no "${msg}" log line within ${timeoutMs} ms; stdout: ${stdout} stderr: ${stderr}`)), timeoutMs);
      const onData = () => {
        try {
          const line = lines().slice(after).find((l) => l.msg === msg && where(l));
          if (line) done(undefined, line);
        } catch (err) {
          done(new Error(`stdout is not JSON lines: ${(err as Error).message}; stdout: ${stdout}`));
        }
      };
      const onExit = () => {
        onData();
        done(new Error(`exited before "${msg}": code ${child.exitCode} signal ${child.signalCode}; stdout: ${stdout} stderr: ${stderr}`));
      };
      child.stdout!.on('data', onData);
      child.once('close', onExit);
      onData();
      function done(err?: Error, line?: LogLine) {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        child.stdout!.off('data', onData);
        child.off('close', onExit);
        if (err) reject(err);
        else resolve(line!);
      }
    });
  return { child, exited, stdout: () => stdout, stderr: () => stderr, lines, waitFor };
}

/** Writes `value` as JSON to `dir/name`; returns the path. */
export function writeJson(dir: string, name: string, value: unknown): string {
  const file = join(dir, name);
  writeFileSync(file, JSON.stringify(value, null, 2));
  return file;
}
