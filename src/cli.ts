#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { watchFile } from './watch.js';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { createAdminServer } from './admin.js';
import { readConfigFile } from './config/load.js';
import { ConfigError } from './errors.js';
import { Gateway } from './gateway.js';
import { createGatewayServer } from './server.js';
import { makeToken } from './token-command.js';

const USAGE = `Usage:
  portcullis [--config PATH]        start the gateway (PATH: $PORTCULLIS_CONFIG, else ./gateway.config.json)
  portcullis check [--config PATH]  validate the config; print every problem; exit 0 or 1
  portcullis token --secret S [--sub ID] [--ttl 1h] [--iss ISS] [--aud AUD] [--claim k=v ...]
                                    print an HS256 JWT for trying the gateway out
  portcullis --help | --version

Exit codes: 0 clean stop, 1 bad config or arguments, 2 could not listen.
Signals: SIGTERM/SIGINT drain and stop.`;

class UsageError extends Error {}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function configPath(given: string | undefined): string {
  return resolve(given ?? process.env.PORTCULLIS_CONFIG ?? 'gateway.config.json');
}

function buildGateway(file: string): Gateway {
  return new Gateway(readConfigFile(file), { baseDir: dirname(file), sidecar: true });
}

async function check(file: string): Promise<number> {
  const gateway = buildGateway(file);
  try {
    await gateway.ready();
  } finally {
    await gateway.close();
  }
  process.stdout.write(`configuration OK: ${file}\n`);
  return 0;
}

function listen(server: Server, port: number, host: string): Promise<AddressInfo> {
  return new Promise((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolveListen(server.address() as AddressInfo);
    });
  });
}

async function start(file: string): Promise<number> {
  const gateway = buildGateway(file);
  await gateway.ready();
  const server = createGatewayServer(gateway);
  let listening = false;
  const admin = gateway.config.admin ? createAdminServer(gateway, () => listening) : undefined;
  let stopped: (code: number) => void = () => {};
  const finished = new Promise<number>((resolve) => (stopped = resolve));
  // Signals are handled from the start, so none can arrive while the default handler would kill us.
  const stop = (signal: string) => {
    gateway.log.info({ signal, connections: gateway.connections }, 'stopping');
    // The listener stays open while draining: new upgrades are answered 503, not refused (SPEC 9).
    void gateway.close().then(() => {
      server.close();
      server.closeAllConnections();
      admin?.close();
      gateway.log.info('stopped');
      stopped(0);
    });
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => reload(gateway, file, 'SIGHUP'));
  try {
    const address = await listen(server, gateway.config.listen?.port ?? 8080, gateway.config.listen?.host ?? '0.0.0.0');
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
