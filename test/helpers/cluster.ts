// `workers: N` through the BUILT CLI: a config with an admin port, the primary started and waited for,
// and what its log lines tell about the workers.
import type { Test } from 'tap';
import type { WebSocket } from 'ws';
import { killQuietly, spawnCli, writeJson, type CliProcess, type LogLine } from './cli.js';
import { freePort } from './net.js';
import { hs256, jwtAuth } from './tokens.js';
import type { EchoUpstream } from './upstream.js';

export const ADMIN_TOKEN = 'admin-token-for-workers-tests-5e21';
// Starting three node processes (more with coverage) on a loaded machine takes a while.
export const START_MS = 30000;

/** An Authorization header with a fresh HS256 token for `sub`. */
export const bearer = (sub: string) => ({ Authorization: `Bearer ${hs256({ sub })}` });

/** A running `workers: N` gateway. */
export interface Cluster {
  proc: CliProcess;
  port: number;
  adminPort: number;
  /** Base URL of the admin port (served by the primary). */
  admin: string;
  file: string;
  url(path: string): string;
}

/** `workers: 2`, an admin port, a jwt authenticator, a relay and a pipe route to `upstream`. */
export function clusterConfig(port: number, adminPort: number, upstream: string, extra: Record<string, unknown> = {}) {
  return {
    listen: { host: '127.0.0.1', port },
    admin: { host: '127.0.0.1', port: adminPort, token: ADMIN_TOKEN },
    workers: 2,
    log: { level: 'info' },
    drain: { timeoutMs: 5000 },
    authenticators: { jwt: jwtAuth() },
    routes: [
      { path: '/relay', auth: ['jwt'], upstream, mode: 'relay' },
      { path: '/pipe', auth: ['jwt'], upstream },
    ] as Record<string, unknown>[],
    ...extra,
  };
}

/** Two distinct free ports. */
export async function twoPorts(): Promise<[number, number]> {
  const port = await freePort();
  let adminPort = await freePort();
  while (adminPort === port) adminPort = await freePort();
  return [port, adminPort];
}

/** Every worker pid the primary logged as started. */
export function startedPids(proc: CliProcess): number[] {
  return proc.lines().flatMap((l) => (l.msg === 'worker started' ? [(l.worker as { pid: number }).pid] : []));
}

/** Spawns the CLI; at teardown (after spawnCli's own) every worker it started is SIGKILLed if still there. */
export function spawnCluster(t: Test, file: string): CliProcess {
  const proc = spawnCli(t, ['--config', file]);
  // A worker orphaned by a SIGKILLed primary must not outlive the test.
  t.teardown(() => startedPids(proc).forEach(killQuietly));
  return proc;
}

/** Starts `workers: 2` in front of `upstream` and waits until both workers listen. */
export async function startCluster(t: Test, upstream: EchoUpstream, extra: Record<string, unknown> = {}): Promise<Cluster> {
  const [port, adminPort] = await twoPorts();
  const file = writeJson(t.testdir(), 'gateway.config.json', clusterConfig(port, adminPort, upstream.url, extra));
  const proc = spawnCluster(t, file);
  await proc.waitFor('all workers listening', { timeoutMs: START_MS });
  return { proc, port, adminPort, admin: `http://127.0.0.1:${adminPort}`, file, url: (path) => `ws://127.0.0.1:${port}${path}` };
}

/** The pid of the worker that accepted the handshake with this request id. */
export async function servedBy(c: Cluster, reqId: string): Promise<number> {
  return (await c.proc.waitFor('upgrade accepted', { where: (l) => l.reqId === reqId })).pid as number;
}

/** The pid of the worker that rejected the handshake with this request id. */
export async function rejectedBy(c: Cluster, reqId: string): Promise<number> {
  return (await c.proc.waitFor('upgrade rejected', { where: (l) => l.reqId === reqId })).pid as number;
}

export interface Closed {
  code: number;
  reason: string;
}

/** Resolves when `ws` closes (an 'error' before the close is swallowed). */
export function closeOf(ws: WebSocket): Promise<Closed> {
  ws.on('error', () => {});
  return new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
}

/** One admin request with the admin token; the body parsed as JSON (null when it is not). */
export async function adminRequest(c: Cluster, method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${c.admin}${path}`, {
    method,
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, Connection: 'close', ...(body !== undefined && { 'Content-Type': 'application/json' }) },
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });
  return { status: res.status, body: await res.json().catch(() => null) };
}

/** Log lines at level error (50) or above. */
export const errorLines = (proc: CliProcess): LogLine[] => proc.lines().filter((l) => Number(l.level) >= 50);
