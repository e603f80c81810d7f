import { once } from 'node:events';
import type { IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Teardown } from './net.js';

/** What the upstream saw of one handshake. */
export interface SeenRequest {
  url: string;
  headers: IncomingMessage['headers'];
  protocol: string;
}

/** A real ws echo server on port 0 that records each handshake it accepted. */
export interface EchoUpstream {
  port: number;
  url: string;
  wss: WebSocketServer;
  seen: SeenRequest[];
  /** Connections open right now. */
  readonly open: number;
  close(): Promise<void>;
}

/** Starts a ws echo upstream; options go to the WebSocketServer (e.g. `handleProtocols`). */
export async function startEchoUpstream(t: Teardown, options: ConstructorParameters<typeof WebSocketServer>[0] = {}): Promise<EchoUpstream> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', ...options });
  await once(wss, 'listening');
  const seen: SeenRequest[] = [];
  wss.on('connection', (ws: WebSocket, req: IncomingMessage) => {
    seen.push({ url: req.url ?? '', headers: req.headers, protocol: ws.protocol });
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    ws.on('error', () => {});
  });
  const port = (wss.address() as AddressInfo).port;
  const close = async () => {
    for (const ws of wss.clients) ws.terminate();
    await new Promise<void>((resolve) => wss.close(() => resolve()));
  };
  t.teardown(close);
  return {
    port,
    url: `ws://127.0.0.1:${port}`,
    wss,
    seen,
    get open() {
      return wss.clients.size;
    },
    close,
  };
}
