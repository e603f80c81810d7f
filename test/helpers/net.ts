import { once } from 'node:events';
import { createServer, type AddressInfo } from 'node:net';
import { readdirSync } from 'node:fs';
import type { Server as HttpServer } from 'node:http';
import type { Server as HttpsServer } from 'node:https';

/** A port that was free a moment ago (for servers that cannot listen on port 0, like redis-server). */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  server.close();
  await once(server, 'close');
  return port;
}

/** Open file descriptors of this process (Linux). */
export function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

/** Waits until `check()` is true, polling; fails after `ms`. */
export async function eventually(check: () => boolean, ms = 3000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Sleeps. */
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The part of a tap test the helpers need: somewhere to register cleanup. */
export interface Teardown {
  teardown(fn: () => unknown): void;
}

/**
 * Listens on 127.0.0.1 port 0 and returns the port; `t.teardown` runs `beforeClose` (if any), drops the
 * server's open connections and closes it.
 */
export async function listenLocal(t: Teardown, server: HttpServer | HttpsServer, beforeClose?: () => unknown): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(async () => {
    await beforeClose?.();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });
  return (server.address() as AddressInfo).port;
}

/** Records every uncaught exception / unhandled rejection while a test runs. */
export function crashSpy(t: Teardown) {
  const seen: string[] = [];
  const onException = (err: Error) => seen.push(`uncaughtException: ${err?.stack ?? String(err)}`);
  const onRejection = (err: unknown) => seen.push(`unhandledRejection: ${(err as Error)?.stack ?? String(err)}`);
  process.on('uncaughtException', onException);
  process.on('unhandledRejection', onRejection);
  t.teardown(() => {
    process.off('uncaughtException', onException);
    process.off('unhandledRejection', onRejection);
  });
  return seen;
}
