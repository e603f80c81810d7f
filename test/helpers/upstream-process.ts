// A ws echo upstream in a child process of its own, so that a test can kill it with SIGKILL the way a
// crashed backend dies (the kernel closes its sockets; no close frame, no FIN sent on purpose) and start
// it again on the same port.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { ROOT } from './cli.js';
import type { Teardown } from './net.js';

// Prints its port once listening; echoes every message; reports each accepted connection on stdout.
const SCRIPT = `
import { WebSocketServer } from 'ws';
const wss = new WebSocketServer({ host: '127.0.0.1', port: Number(process.argv[1]) });
wss.on('listening', () => console.log('port ' + wss.address().port));
wss.on('connection', (ws) => {
  console.log('connection');
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
`;

/** A running upstream process. */
export interface UpstreamProcess {
  readonly port: number;
  readonly url: string;
  /** Connections it accepted since it was (re)started. */
  connections(): number;
  /** SIGKILL; resolves once it is gone. */
  kill(): Promise<void>;
  /** Starts it again on the same port after {@link kill}. */
  restart(): Promise<void>;
}

async function spawnUpstream(port: number): Promise<{ child: ChildProcess; port: number; connections: () => number }> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', SCRIPT, String(port)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  const listening = await new Promise<number>((resolve, reject) => {
    const onData = () => {
      const m = /port (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    };
    child.stdout!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`upstream process exited with ${code}: ${err}`)));
  });
  return { child, port: listening, connections: () => out.split('\n').filter((l) => l === 'connection').length };
}

async function killChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
}

/** Starts the echo upstream process on a free port; killed by `t.teardown`. */
export async function startUpstreamProcess(t: Teardown): Promise<UpstreamProcess> {
  let current = await spawnUpstream(0);
  const port = current.port;
  t.teardown(() => killChild(current.child));
  return {
    port,
    url: `ws://127.0.0.1:${port}`,
    connections: () => current.connections(),
    kill: () => killChild(current.child),
    async restart() {
      current = await spawnUpstream(port);
    },
  };
}
