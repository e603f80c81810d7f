#!/usr/bin/env node
import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { DestinationStream } from 'pino';
import { createAdminServer, gatewayAdminTarget } from './admin.js';
import { answerPrimary, onPrimaryGone } from './cluster-ipc.js';
import { runPrimary } from './cluster.js';
import { readConfigFile, validateConfig } from './config/load.js';
import { summarizeConfig } from './config/summary.js';
import { ConfigError } from './errors.js';
import { prettyDestination } from './log.js';
import { Gateway } from './gateway.js';
import { listen } from './listen.js';
import { createGatewayServer } from './server.js';
import { makeToken } from './token-command.js';
import { watchFile } from './watch.js';

const USAGE = `Usage:
  portcullis [--config PATH] [--pretty]
                                    start the gateway (PATH: $PORTCULLIS_CONFIG, else ./gateway.config.json);
                                    --pretty: readable log lines (the default when stdout is a terminal)
  portcullis check [--config PATH]  validate the config; print every problem, or what it does; exit 0 or 1
  portcullis token --secret S [--sub ID] [--ttl 1h] [--iss ISS] [--aud AUD] [--claim k=v ...]
                                    print an HS256 JWT for trying the gateway out
  portcullis --help | --version

Exit codes: 0 clean stop, 1 bad config or arguments, 2 could not listen.
Signals: SIGTERM/SIGINT drain and stop, SIGHUP reloads the config.`;

class UsageError extends Error {}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function configPath(given: string | undefined): string {
  return resolve(given ?? process.env.PORTCULLIS_CONFIG ?? 'gateway.config.json');
}

/** Where log lines go: pino-pretty with `--pretty` or a terminal on stdout, else JSON (set by main). */
let logDestination: DestinationStream | undefined;

function buildGateway(file: string): Gateway {
  return new Gateway(readConfigFile(file), { baseDir: dirname(file), sidecar: true, ...(logDestination && { logDestination }) });
}

async function check(file: string): Promise<number> {
  const gateway = buildGateway(file);
  try {
    await gateway.ready();
  } finally {
    await gateway.close();
  }
  process.stdout.write(`configuration OK: ${file}\n\n${summarizeConfig(gateway.config)}`);
  return 0;
}

async function start(file: string): Promise<number> {
  if (cluster.isWorker) return serve(file, 'worker');
  const config = validateConfig(readConfigFile(file), { baseDir: dirname(file), sidecar: true });
  return (config.workers ?? 1) > 1 ? runPrimary(file, config, logDestination) : serve(file, 'single');
}

/** Runs one gateway process: the whole gateway, or (`worker`) one of a cluster's, without the admin port. */
async function serve(file: string, role: 'single' | 'worker'): Promise<number> {
  const gateway = buildGateway(file);
  await gateway.ready();
  const server = createGatewayServer(gateway);
  let listening = false;
  // In a cluster the primary serves the admin port and asks the workers (src/cluster.ts).
  const admin = role === 'single' && gateway.config.admin ? createAdminServer(gatewayAdminTarget(gateway, () => listening)) : undefined;
  let stopped: (code: number) => void = () => {};
  const finished = new Promise<number>((resolve) => (stopped = resolve));
  let stopping = false;
  // Settles when the listen attempt does: a cluster worker's server must not be closed before (Node's
  // cluster code throws, or the worker exits 1, when the primary's answer finds it closed).
  let listenSettled: Promise<unknown> = Promise.resolve();
  const stop = (signal: string) => {
    // Once only: with Ctrl+C in a terminal a worker gets SIGINT and then its primary's SIGTERM.
    if (stopping) return;
    stopping = true;
    gateway.log.info({ signal, connections: gateway.connections }, 'stopping');
    // The listener stays open while draining: new upgrades are answered 503, not refused (SPEC 9).
    void gateway
      .close()
      .then(() => listenSettled)
      .then(() => {
        server.close();
        server.closeAllConnections();
        admin?.close();
        gateway.log.info('stopped');
        stopped(0);
      });
  };
  // Signals are handled from the start, so none can arrive while the default handler would kill us. A
  // worker keeps handling them: the primary and a terminal or service manager may each send one.
  const on = role === 'worker' ? process.on.bind(process) : process.once.bind(process);
  on('SIGTERM', () => stop('SIGTERM'));
  on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => reload(gateway, file, 'SIGHUP'));
  if (role === 'worker') {
    answerPrimary(gateway, () => listening);
    onPrimaryGone(() => {
      gateway.log.warn('the cluster primary is gone; draining');
      stop('disconnect');
    });
  }
  try {
    const listening$ = listen(server, gateway.config.listen?.port ?? 8080, gateway.config.listen?.host ?? '0.0.0.0');
    listenSettled = listening$.catch(() => {});
    const address = await listening$;
    listening = true;
    gateway.log.info({ address: `${address.address}:${address.port}`, port: address.port, config: file }, 'listening');
    if (admin) {
      const a = await listen(admin, gateway.config.admin!.port, gateway.config.admin!.host ?? '127.0.0.1');
      gateway.log.info({ address: `${a.address}:${a.port}`, port: a.port }, 'admin listening');
    }
  } catch (err) {
    gateway.log.fatal({ error: { message: (err as Error).message, code: (err as NodeJS.ErrnoException).code } }, 'could not listen');
    server.close();
    admin?.close();
    await gateway.close();
    return 2;
  }
  if (gateway.config.watch) watchFile(file, () => reload(gateway, file, 'file changed'));
  return finished;
}

/** Re-reads the config file and puts it in force; a bad one is logged and the old config stays. */
function reload(gateway: Gateway, file: string, why: string): void {
  const failed = (problems: readonly string[]) => gateway.log.error({ why, problems }, 'config reload failed; the old config stays in force');
  let config: unknown;
  try {
    config = readConfigFile(file);
  } catch (err) {
    return failed((err as ConfigError).problems);
  }
  gateway.reload(config).catch((err: unknown) => failed(err instanceof ConfigError ? err.problems : [(err as Error).message]));
}

/** Runs the command line; resolves the exit code. */
export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
        secret: { type: 'string' },
        sub: { type: 'string' },
        ttl: { type: 'string' },
        iss: { type: 'string' },
        aud: { type: 'string' },
        claim: { type: 'string', multiple: true },
        pretty: { type: 'boolean' },
      },
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) return void process.stdout.write(`${USAGE}\n`), 0;
  if (values.version) return void process.stdout.write(`${version()}\n`), 0;
  const [command, ...rest] = positionals;
  if (rest.length > 0) throw new UsageError(`unexpected argument: ${rest[0]}`);
  switch (command) {
    case undefined:
      if (values.pretty || process.stdout.isTTY) logDestination = await prettyDestination();
      return start(configPath(values.config));
    case 'check':
      return check(configPath(values.config));
    case 'token':
      try {
        process.stdout.write(`${makeToken(values)}\n`);
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
      return 0;
    default:
      throw new UsageError(`unknown command: ${command}`);
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof ConfigError) {
      for (const problem of err.problems) process.stderr.write(`${problem}\n`);
    } else if (err instanceof UsageError) {
      process.stderr.write(`portcullis: ${err.message} (see portcullis --help)\n`);
    } else {
      process.stderr.write(`portcullis: ${(err as Error)?.message ?? String(err)}\n`);
    }
    process.exit(1);
  },
);
