// The host-framework examples run the way their header comments say: `node examples/<name>.mjs` as a
// child process (PORT=0 instead of the default ports), which prints how to try it; the test then does what
// it printed, over a real socket, and stops it with SIGTERM (exit 0, nothing left listening). The Socket.IO
// example is the three processes of its instructions: the app, the CLI with examples/socketio.config.json,
// and the client. (examples-frameworks.test.ts drives the same examples in-process, in depth.)
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { WebSocket } from 'ws';
import { cleanEnv, ROOT, spawnCli } from '../helpers/cli.js';
import { freePort } from '../helpers/net.js';
import { startRedis } from '../helpers/redis.js';
import { hs256, SECRET } from '../helpers/tokens.js';

const START_MS = 20000;

interface Example {
  stdout(): string;
  stderr(): string;
  /** Resolves the first match of `pattern` in stdout; rejects when the process exits first or after START_MS. */
  printed(pattern: RegExp): Promise<RegExpMatchArray>;
  /** Sends SIGTERM and resolves the exit code. */
  stop(): Promise<number | null>;
  exited: Promise<number | null>;
}

/** `node examples/<file> ...args` from the repository root; SIGKILLed by teardown if still running. */
function runExample(t: Test, file: string, env: Record<string, string>, args: string[] = []): Example {
  const child = spawn(process.execPath, [join(ROOT, 'examples', file), ...args], { cwd: ROOT, env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  const printed = (pattern: RegExp) =>
    new Promise<RegExpMatchArray>((resolve, reject) => {
      const timer = setTimeout(() => done(new Error(`${file} did not print ${pattern} within ${START_MS} ms; stdout: ${stdout} stderr: ${stderr}`)), START_MS);
      const check = () => {
        const match = stdout.match(pattern);
        if (match) done(undefined, match);
      };
      const onExit = () => {
        check();
        done(new Error(`${file} exited (${child.exitCode}) before printing ${pattern}; stdout: ${stdout} stderr: ${stderr}`));
      };
      child.stdout.on('data', check);
      child.once('close', onExit);
      check();
      function done(err?: Error, match?: RegExpMatchArray) {
        clearTimeout(timer);
        child.stdout.off('data', check);
        child.off('close', onExit);
        if (err) reject(err);
        else resolve(match!);
      }
    });
  return {
    stdout: () => stdout,
    stderr: () => stderr,
    printed,
    exited,
    stop() {
      child.kill('SIGTERM');
      return exited;
    },
  };
}

/** Opens a WebSocket and resolves its first message, then closes it. */
async function firstMessage(url: string, options: { headers?: Record<string, string>; origin?: string } = {}): Promise<string> {
  const ws = new WebSocket(url, { headers: options.headers ?? {}, ...(options.origin && { origin: options.origin }) });
  try {
    const [data] = (await once(ws, 'message')) as [Buffer];
    return data.toString();
  } finally {
    ws.terminate();
  }
}

/** The status a handshake gets, read by ws from the refusal. */
async function handshakeStatus(url: string): Promise<number> {
  const ws = new WebSocket(url);
  ws.on('error', () => {});
  const [, res] = (await once(ws, 'unexpected-response')) as [unknown, { statusCode: number }];
  ws.terminate();
  return res.statusCode;
}

for (const { file, banner } of [
  { file: 'koa-app.mjs', banner: /koa app on http:\/\/127\.0\.0\.1:(\d+), websocket on (ws:\/\/\S+\/ws)/ },
  { file: 'fastify-app.mjs', banner: /fastify app on http:\/\/127\.0\.0\.1:(\d+), websocket on (ws:\/\/\S+\/ws)/ },
]) {
  t.test(`node examples/${file}: prints a token command and a URL that work, stops on SIGTERM`, async (t) => {
    const example = runExample(t, file, { PORT: '0', JWT_SECRET: SECRET });
    const [, port, url] = await example.printed(banner);
    t.match(example.stdout(), `node dist/cli.js token --secret "${SECRET}" --sub alice`, 'how to get a token');
    t.equal(await firstMessage(url!, { headers: { Authorization: `Bearer ${hs256({ sub: 'alice' })}` } }), '{"hello":"alice"}');
    t.equal(await handshakeStatus(url!), 401, 'no token: 401');
    t.equal((await fetch(`http://127.0.0.1:${port}/`)).status, 200, 'its HTTP route');
    t.equal(await example.stop(), 0, `exit code 0 (stderr: ${example.stderr()})`);
  });
}

t.test('node examples/express-session-redis.mjs: log in as printed, then the WebSocket; exits 1 without Redis', async (t) => {
  const redis = await startRedis(t);
  const example = runExample(t, 'express-session-redis.mjs', { PORT: '0', REDIS_URL: redis.url, SESSION_SECRET: 'session-secret-0123456789abcdef-0123456789' });
  const [, port] = await example.printed(/express app on http:\/\/127\.0\.0\.1:(\d+)/);
  await example.printed(/npx wscat .*\n/);
  const base = `http://127.0.0.1:${port}`;
  const login = await fetch(`${base}/login`, { method: 'POST', body: new URLSearchParams({ user: 'alice' }), redirect: 'manual' });
  const cookie = login.headers.getSetCookie()[0]!.split(';')[0]!;
  t.equal(await firstMessage(`ws://127.0.0.1:${port}/ws`, { headers: { Cookie: cookie }, origin: base }), '{"hello":"alice"}');
  t.equal(await example.stop(), 0, `exit code 0 (stderr: ${example.stderr()})`);

  const nowhere = runExample(t, 'express-session-redis.mjs', { PORT: '0', REDIS_URL: `redis://127.0.0.1:${await freePort()}` });
  t.equal(await nowhere.exited, 1, 'no Redis: exit 1');
  t.match(nowhere.stderr(), /cannot start: .*is redis-server running at redis:\/\/127\.0\.0\.1:\d+\? set REDIS_URL\)/);
});

t.test('the Socket.IO example as its instructions say: app, CLI, client', async (t) => {
  const app = runExample(t, 'socketio-app.mjs', { SOCKETIO_PORT_1: '0', SOCKETIO_PORT_2: '0', JWT_SECRET: SECRET });
  const [, first, second] = await app.printed(/two instances, (ws:\/\/127\.0\.0\.1:\d+) and (ws:\/\/127\.0\.0\.1:\d+)/);
  await app.printed(/node examples\/socketio-client\.mjs\n/);
  t.match(app.stdout(), `JWT_SECRET="${SECRET}" node dist/cli.js --config examples/socketio.config.json`);

  // The printed command, with the app's ports (its defaults are 9002 and 9003) and any free port.
  const gateway = spawnCli(t, ['--config', 'examples/socketio.config.json'], {
    env: cleanEnv({ JWT_SECRET: SECRET, PORT: '0', SOCKETIO_URL_1: first!, SOCKETIO_URL_2: second! }),
  });
  const { port } = (await gateway.waitFor('listening', { timeoutMs: START_MS })) as { port: number };

  const client = runExample(t, 'socketio-client.mjs', { TOKEN: hs256({ sub: 'alice', scope: 'chat' }) }, [`http://127.0.0.1:${port}`]);
  t.equal(await client.exited, 0, `the client exits 0 (stderr: ${client.stderr()})`);
  t.match(client.stdout(), /connected; whoami: \{[^}]*subject: 'alice'/);
  t.match(client.stdout(), /upgraded to a WebSocket; whoami: \{[^}]*transport: 'websocket'/);

  const refused = runExample(t, 'socketio-client.mjs', { TOKEN: hs256({ sub: 'alice' }, 'another-secret-0123456789abcdef-0123456789') }, [`http://127.0.0.1:${port}`]);
  t.equal(await refused.exited, 1, 'a token the gateway does not accept: exit 1');
  t.match(refused.stderr(), /refused: .*\(HTTP 401\)/);
  const missing = runExample(t, 'socketio-client.mjs', { TOKEN: '' }, [`http://127.0.0.1:${port}`]);
  t.equal(await missing.exited, 1, 'no TOKEN: exit 1');
  t.match(missing.stderr(), /TOKEN is required/);

  gateway.child.kill('SIGTERM');
  t.equal((await gateway.exited).code, 0, 'the gateway drains and exits 0');
  t.equal(await app.stop(), 0, `the app exits 0 (stderr: ${app.stderr()})`);
});
