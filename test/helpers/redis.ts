import { spawn, type ChildProcess } from 'node:child_process';
import { createClient } from '@redis/client';
import { freePort, type Teardown } from './net.js';

export interface TestRedis {
  url: string;
  port: number;
  /** A client of the test's own, to seed and inspect data (reconnects after a restart). */
  client: {
    get(key: string): Promise<string | null>;
    set(key: string, value: string): Promise<unknown>;
    del(key: string): Promise<unknown>;
    keys(pattern: string): Promise<string[]>;
    hGetAll(key: string): Promise<Record<string, string>>;
    zRange(key: string, start: number, stop: number): Promise<string[]>;
    sendCommand(args: string[]): Promise<unknown>;
  };
  /** Kills the server (SIGKILL, as a crash would). */
  stop(): Promise<void>;
  /** Starts a fresh, empty server on the same port after stop(). */
  restart(): Promise<void>;
}

async function spawnRedis(port: number): Promise<ChildProcess> {
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (chunk) => {
      out += chunk;
      if (out.includes('Ready to accept connections')) resolve();
    });
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`redis-server exited with ${code}: ${out}`)));
  });
  return child;
}

async function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
}

/** A real redis-server on a free loopback port, no persistence; stopped by `t.teardown`. */
export async function startRedis(t: Teardown): Promise<TestRedis> {
  const port = await freePort();
  let child = await spawnRedis(port);
  const url = `redis://127.0.0.1:${port}`;
  const client = createClient({ url, socket: { reconnectStrategy: () => 50 } });
  client.on('error', () => {});
  await client.connect();
  t.teardown(async () => {
    if (client.isOpen) await client.close().catch(() => client.destroy());
    await kill(child);
  });
  return {
    url,
    port,
    client,
    stop: () => kill(child),
    async restart() {
      child = await spawnRedis(port);
    },
  };
}
