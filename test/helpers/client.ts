import { once } from 'node:events';
import { WebSocket } from 'ws';
import type { Teardown } from './net.js';

/** Opens a client WebSocket, failing on any non-101 answer; terminated by `t.teardown`. */
export function openClient(t: Teardown, url: string, protocols: string[] = [], headers: Record<string, string> = {}): Promise<WebSocket> {
  const ws = new WebSocket(url, protocols, { headers });
  t.teardown(() => ws.terminate());
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`unexpected response ${res.statusCode}`)));
  });
}

/** Sends one message and resolves with the next one received (the echo). */
export async function echo(ws: WebSocket, text: string): Promise<string> {
  const reply = new Promise<string>((resolve) => ws.once('message', (data) => resolve(String(data))));
  ws.send(text);
  return reply;
}

/** Closes `ws` with a normal close and waits for the 'close' event (at once if it is already closed). */
export async function closeClient(ws: WebSocket): Promise<void> {
  if (ws.readyState === WebSocket.CLOSED) return;
  const closed = once(ws, 'close');
  ws.close();
  await closed;
}
