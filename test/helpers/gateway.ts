import { createServer, type Server } from 'node:http';
import { Writable } from 'node:stream';
import { createGateway, type Gateway, type GatewayOptions } from '../../src/gateway.js';
import { createLogger } from '../../src/log.js';
import { createGatewayServer } from '../../src/server.js';
import { listenLocal, type Teardown } from './net.js';
import { startEchoUpstream, type EchoUpstream } from './upstream.js';

/** A gateway on a real HTTP server on port 0, with its log lines captured. */
export interface TestGateway {
  gateway: Gateway;
  server: Server;
  port: number;
  /** Every log line written so far, parsed. */
  logs(): Record<string, unknown>[];
  /** Every log line written so far, as the raw text. */
  logText(): string;
  url(path: string): string;
}

/** A pino destination that keeps what it is given. */
export function captureLog(level = 'debug') {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      done();
    },
  });
  return { logger: createLogger(level, stream), lines };
}

/**
 * Starts a gateway the way the sidecar does (`handleUpgrade` on the server, unmatched paths 404), or
 * with `attach: true` the embedded way. Closed by `t.teardown`.
 */
export async function startGateway(
  t: Teardown,
  config: unknown,
  options: GatewayOptions & { attach?: boolean; server?: Server } = {},
): Promise<TestGateway> {
  const { logger, lines } = captureLog();
  const gateway = createGateway(config, { logger, ...options });
  await gateway.ready();
  const server = options.server ?? createServer((_req, res) => res.writeHead(404).end());
  if (options.attach) gateway.attach(server);
  else server.on('upgrade', gateway.handleUpgrade);
  return serve(t, gateway, server, lines);
}

/**
 * Starts a gateway with `sidecar: true` on the sidecar's own server (`createGatewayServer`: plain-HTTP
 * answers, client errors, `listen.tls`). Closed by `t.teardown`. With `listen.tls`, `url()` still says
 * ws://; connect with wss:// yourself.
 */
export async function startSidecar(t: Teardown, config: unknown, options: GatewayOptions = {}): Promise<TestGateway> {
  const { logger, lines } = captureLog();
  const gateway = createGateway(config, { logger, ...options, sidecar: true });
  await gateway.ready();
  return serve(t, gateway, createGatewayServer(gateway), lines);
}

/** Listens on port 0; the teardown closes the gateway, then the server. */
async function serve(t: Teardown, gateway: Gateway, server: Server, lines: string[]): Promise<TestGateway> {
  const port = await listenLocal(t, server, () => gateway.close());
  return {
    gateway,
    server,
    port,
    logs: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>),
    logText: () => lines.join('\n'),
    url: (path) => `ws://127.0.0.1:${port}${path}`,
  };
}

/** A gateway in front of its own echo upstream. */
export interface Setup {
  gw: TestGateway;
  upstream: EchoUpstream;
}

/** Starts an echo upstream, then a gateway with the config `config(upstream URL)` returns. */
export async function startGatewayWithUpstream(
  t: Teardown,
  config: (upstream: string) => unknown,
  options: GatewayOptions & { attach?: boolean; server?: Server } = {},
): Promise<Setup> {
  const upstream = await startEchoUpstream(t);
  const gw = await startGateway(t, config(upstream.url), options);
  return { gw, upstream };
}
