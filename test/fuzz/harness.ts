// The fuzzing harness (issue 7): seeded fast-check runs, figures per property for docs/RELIABILITY.md, a
// raw-socket exchange that tells a server close from a client timeout, the checks every answer must pass,
// and the bugs already found (so a property still runs their inputs, counts them, and fails on anything
// else). Replay a failure with the seed fast-check prints: FUZZ_SEED=<seed> FUZZ_RUNS=<runs>.
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { connect } from 'node:net';
import fc from 'fast-check';
import { eventually, openFds } from '../helpers/net.js';
import { parseResponse, type RawResponse } from '../helpers/upgrade.js';

// ---------------------------------------------------------------------------------------------------------
// Seed and size

/** The default seed: fixed, so CI runs the same cases every time. */
export const DEFAULT_SEED = 20261122;

const envInt = (name: string): number | undefined => {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n)) throw new Error(`${name} must be an integer, got ${JSON.stringify(raw)}`);
  return n;
};

/** The seed every property of this run uses (FUZZ_SEED, else {@link DEFAULT_SEED}). */
export const SEED = envInt('FUZZ_SEED') ?? DEFAULT_SEED;

/** FUZZ_RUNS when set: the number of generated cases of every property (the long mode). */
const RUNS = envInt('FUZZ_RUNS');

/** Cases for a property: FUZZ_RUNS when set, else the property's own CI default. */
export const runs = (ciDefault: number): number => RUNS ?? ciDefault;

// ---------------------------------------------------------------------------------------------------------
// Known bugs: inputs that hit a bug already reported in src/ are counted, not failed on, so the property
// keeps guarding everything else. Each one also has a failing `{ todo }` regression test.

// None is open today: every bug the fuzzers found is fixed (docs/RELIABILITY.md lists them).
export const KNOWN = {} as const;
export type KnownBug = keyof typeof KNOWN;

// ---------------------------------------------------------------------------------------------------------
// Figures

/** What one property tried and saw, for docs/RELIABILITY.md. */
export interface PropertyStats {
  file: string;
  name: string;
  seed: number;
  /** Generated cases asked for (fast-check numRuns), or the size of a systematic list. */
  runs: number;
  /** Cases actually executed (shrinking after a failure runs more). */
  cases: number;
  /** Answers by status ("101", "401", "none" for a close without an answer). */
  statuses: Record<string, number>;
  /** Finer outcomes ("401 token malformed", "ConfigError", "valid"). */
  outcomes: Record<string, number>;
  knownBugs: Partial<Record<KnownBug, number>>;
  failures: string[];
  ms: number;
}

const STATS = new Map<string, PropertyStats>();
const FILE = basename(process.argv[1] ?? 'unknown').replace(/\.test\.[tj]s$/, '');

/** The figures of a property (created on first use). */
export function stats(name: string): PropertyStats {
  let s = STATS.get(name);
  if (!s) {
    s = { file: FILE, name, seed: SEED, runs: 0, cases: 0, statuses: {}, outcomes: {}, knownBugs: {}, failures: [], ms: 0 };
    STATS.set(name, s);
  }
  return s;
}

const bump = (record: Record<string, number>, key: string) => void (record[key] = (record[key] ?? 0) + 1);

/** Counts one executed case: its status (or "none") and an outcome label. */
export function count(s: PropertyStats, status: number | string, outcome?: string): void {
  s.cases++;
  bump(s.statuses, String(status));
  if (outcome !== undefined) bump(s.outcomes, outcome);
}

/** Counts a case that hit a known bug. */
export function knownBug(s: PropertyStats, id: KnownBug): void {
  bump(s.knownBugs as Record<string, number>, id);
}

// With FUZZ_REPORT=<dir>, every test process writes its figures there when it exits (scripts/fuzz-report.mjs).
process.on('exit', () => {
  const dir = process.env.FUZZ_REPORT;
  if (!dir || STATS.size === 0) return;
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${FILE}.json`), JSON.stringify({ stats: [...STATS.values()], known: KNOWN }, null, 2));
});

/**
 * Runs a fast-check property with this run's seed and `runs(ciDefault)` cases, timing it into its figures.
 * A failure is recorded and thrown with the seed, the path and the shrunk counterexample (printed here, not
 * by fc.assert, whose printer recurses and overflows on the deepest generated configs).
 */
export async function check<Ts extends [unknown, ...unknown[]]>(
  s: PropertyStats,
  ciDefault: number,
  arbitraries: { [K in keyof Ts]: fc.Arbitrary<Ts[K]> },
  predicate: (...args: Ts) => Promise<void>,
): Promise<void> {
  const numRuns = runs(ciDefault);
  s.runs += numRuns;
  const started = performance.now();
  let details: fc.RunDetails<Ts>;
  try {
    details = await fc.check(fc.asyncProperty(...arbitraries, predicate), { seed: SEED, numRuns });
  } finally {
    s.ms += performance.now() - started;
  }
  if (!details.failed) return;
  // Reported by hand (not fc.assert): fast-check's printer recurses, and some counterexamples are deep.
  let example: string;
  try {
    example = fc.stringify(details.counterexample).slice(0, 2000);
  } catch {
    example = '(too deep to print)';
  }
  const error = details.errorInstance instanceof Error ? (details.errorInstance.stack ?? details.errorInstance.message).split('\n').slice(0, 8).join('\n') : String(details.errorInstance);
  const message =
    `Property failed after ${details.numRuns} tests { seed: ${details.seed}, path: "${details.counterexamplePath}" } (replay: FUZZ_SEED=${details.seed} FUZZ_RUNS=${numRuns})\n` +
    `Shrunk ${details.numShrinks} time(s). Counterexample: ${example}\n${error}`;
  s.failures.push(message.split('\n').slice(0, 6).join('\n'));
  throw new Error(message);
}

/** Times a systematic (non-generated) list of `size` cases into a property's figures. */
export async function systematic(s: PropertyStats, size: number, body: () => Promise<void>): Promise<void> {
  s.runs += size;
  const started = performance.now();
  try {
    await body();
  } finally {
    s.ms += performance.now() - started;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Raw exchanges

/** One request's answer, read off a raw socket. */
export interface Exchange extends RawResponse {
  /** The client gave up waiting (the server neither answered completely nor closed). */
  timedOut: boolean;
}

const headEnd = (raw: string) => raw.indexOf('\r\n\r\n');

/**
 * Writes `bytes` on a new connection and reads the answer: until the server closes; or, for a 101, until
 * its head is in; or, for a complete answer that keeps the connection alive (a plain HTTP response), until
 * its body is in. Then the client end is destroyed.
 */
export function exchange(port: number, bytes: Buffer, options: { timeoutMs?: number; head?: boolean } = {}): Promise<Exchange> {
  const { timeoutMs = 4000, head = false } = options;
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let raw = '';
    let done = false;
    const timer = setTimeout(() => finish(false, true), timeoutMs);
    socket.setEncoding('latin1');
    socket.on('error', () => {});
    socket.on('data', (chunk: string) => {
      raw += chunk;
      const end = headEnd(raw);
      if (end === -1) return;
      const res = parseResponse(final(raw), false);
      if (res.status === 101) return finish(false, false);
      const length = Number(res.headers['content-length'] ?? NaN);
      // The answer to a HEAD request has no body, whatever its Content-Length says.
      const complete = head || (Number.isInteger(length) && Buffer.byteLength(res.body, 'latin1') >= length);
      if (complete && !/\bclose\b/i.test(res.headers.connection ?? '')) finish(false, false);
    });
    socket.on('close', () => finish(true, false));
    socket.write(bytes);
    function finish(closed: boolean, timedOut: boolean) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ ...parseResponse(final(raw), closed), timedOut });
    }
  });
}

/** The answer without the interim 1xx heads before it (`100 Continue` for an `Expect: 100-continue`). */
function final(raw: string): string {
  let rest = raw;
  while (/^HTTP\/1\.1 1(0[02-9]|[1-9]\d) /.test(rest) && headEnd(rest) !== -1) rest = rest.slice(headEnd(rest) + 4);
  return rest;
}

/** The `Sec-WebSocket-Accept` a server must answer for `key` (RFC 6455 4.2.2). */
export const acceptFor = (key: string) => createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');

/** The body's `error` word each refusal status may carry (docs/errors.md). */
const ERROR_WORDS: Record<number, string[]> = {
  400: ['bad_request'],
  401: ['unauthorized', 'invalid_token'],
  403: ['forbidden', 'insufficient_scope'],
  404: ['not_found'],
  405: ['bad_request'],
  408: ['bad_request'],
  414: ['bad_request'],
  426: ['bad_request'],
  429: ['rate_limited'],
  431: ['bad_request'],
};

/**
 * What is wrong with an answer (an empty list when nothing is): a complete HTTP/1.1 response; a refusal is
 * a 4xx with the documented headers and JSON body, and the server closed the socket when it said
 * `Connection: close`; a 101 carries the right `Sec-WebSocket-Accept` (when `key` is given). `head`: the
 * request was a HEAD (a plain HTTP answer to it has no body).
 */
export function problemsOf(res: Exchange, key?: string, head = false): string[] {
  const problems: string[] = [];
  if (res.raw === '') return [res.closed ? 'closed without any answer' : 'no answer before the client timeout'];
  if (!/^HTTP\/1\.1 \d{3} [A-Za-z' -]+$/.test(res.statusLine)) problems.push(`bad status line ${JSON.stringify(res.statusLine.slice(0, 80))}`);
  if (headEnd(res.raw) === -1) return [...problems, 'incomplete head'];
  if (res.status === 101) {
    if ((res.headers.upgrade ?? '').toLowerCase() !== 'websocket') problems.push('101 without Upgrade: websocket');
    if (key !== undefined && res.headers['sec-websocket-accept'] !== acceptFor(key)) problems.push('101 with a wrong Sec-WebSocket-Accept');
    return problems;
  }
  if (res.status < 400 || res.status > 499) problems.push(`status ${res.status} is not a 4xx`);
  const length = Number(res.headers['content-length']);
  if (head && !/\bclose\b/i.test(res.headers.connection ?? '')) {
    if (res.body !== '') problems.push('a body in the answer to HEAD');
    if (!Number.isInteger(length)) problems.push('no Content-Length');
    return problems;
  }
  if (!Number.isInteger(length) || Buffer.byteLength(res.body, 'latin1') !== length) problems.push(`Content-Length ${res.headers['content-length']} for a body of ${Buffer.byteLength(res.body, 'latin1')} bytes`);
  if (res.headers['content-type'] !== 'application/json') problems.push(`Content-Type ${res.headers['content-type']}`);
  if (res.headers['cache-control'] !== 'no-store') problems.push('no Cache-Control: no-store');
  if (!res.headers['x-request-id']) problems.push('no X-Request-Id');
  let body: { error?: unknown; error_description?: unknown } | null = null;
  try {
    body = JSON.parse(res.body) as { error?: unknown; error_description?: unknown } | null;
  } catch {
    problems.push('body is not JSON');
  }
  if (body) {
    if (typeof body.error !== 'string' || typeof body.error_description !== 'string') problems.push('body without error / error_description');
    const words = ERROR_WORDS[res.status];
    if (words && !words.includes(String(body.error))) problems.push(`error word ${String(body.error)} for ${res.status}`);
  }
  if (res.status === 401 && !(res.headers['www-authenticate'] ?? '').startsWith('Bearer realm="portcullis"')) problems.push('401 without a Bearer realm="portcullis" challenge');
  if (/\bclose\b/i.test(res.headers.connection ?? '') && !res.closed) problems.push('said Connection: close but did not close');
  if (res.timedOut) problems.push('the client timed out');
  return problems;
}

/** The body's error_description, or undefined. */
export function descriptionOf(res: RawResponse): string | undefined {
  try {
    return (JSON.parse(res.body) as { error_description?: string }).error_description;
  } catch {
    return undefined;
  }
}

/** The body's error word, or undefined. */
export function errorOf(res: RawResponse): string | undefined {
  try {
    return (JSON.parse(res.body) as { error?: string }).error;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Process health

export { crashSpy } from '../helpers/net.js';

/** Open file descriptors of this process now (after a short settle). */
export async function fdBaseline(): Promise<number> {
  await new Promise((r) => setTimeout(r, 100));
  return openFds();
}

/** Waits for the fd count to come back to `baseline` (plus `slack`); resolves the count it ended at. */
export async function fdsBackTo(baseline: number, slack = 2, ms = 8000): Promise<number> {
  await eventually(() => openFds() <= baseline + slack, ms, 'fds back at the baseline').catch(() => {});
  return openFds();
}

// ---------------------------------------------------------------------------------------------------------
// Secrets

/** The shapes a secret may take in text: as is, URL-encoded, base64 / base64url. */
export function shapes(value: string): string[] {
  return [...new Set([value, encodeURIComponent(value), Buffer.from(value).toString('base64'), Buffer.from(value).toString('base64url')])];
}

/** The secrets of `secrets` (name → value) found in `text`, in any shape. */
export function leaked(text: string, secrets: Readonly<Record<string, string>>): string[] {
  return Object.entries(secrets)
    .filter(([, value]) => shapes(value).some((shape) => text.includes(shape)))
    .map(([name]) => name);
}

/** Worth looking for in a log: long enough and varied enough not to occur there by chance. */
export const distinctive = (value: string) => value.length >= 16 && new Set(value).size >= 8;

// ---------------------------------------------------------------------------------------------------------
// Bytes

/** A string whose every char is one byte (latin1) → the bytes. */
export const bytesOf = (latin1: string) => Buffer.from(latin1, 'latin1');

/** A JS string → its UTF-8 bytes as a latin1 string (one char per byte), to splice into a raw request. */
export const utf8 = (text: string) => Buffer.from(text, 'utf8').toString('latin1');
