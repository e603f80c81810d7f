// `npm start` as a newcomer runs it: examples/quickstart.mjs starts the echo upstream and the BUILT CLI
// (dist/, built by `npm test` before tap) with the bundled gateway.config.json, then shows a 401 and an
// authenticated echo. QUICKSTART_EXIT=1 makes it stop by itself; the ports are free ones, not 8080/9001/9090.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { freePort } from '../helpers/net.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** `count` distinct ports that were free a moment ago. */
async function freePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await freePort());
  return [...ports];
}

t.test('the quickstart shows a 401 and an authenticated echo, then exits 0', async (t) => {
  const [port, upstreamPort, adminPort] = await freePorts(3);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    QUICKSTART_EXIT: '1',
    PORT: String(port),
    UPSTREAM_PORT: String(upstreamPort),
    UPSTREAM_URL: `ws://127.0.0.1:${upstreamPort}`,
    ADMIN_PORT: String(adminPort),
  };
  // The demo makes its own secrets; whatever the developer's shell has set must not leak in.
  for (const name of ['JWT_SECRET', 'ADMIN_TOKEN', 'HOST', 'ADMIN_HOST', 'LOG_LEVEL', 'QUICKSTART_LOGS', 'PORTCULLIS_CONFIG']) delete env[name];

  // Its own process group, so the teardown also reaches the gateway it spawned.
  const child = spawn(process.execPath, ['examples/quickstart.mjs'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  t.teardown(() => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const timer = setTimeout(() => process.kill(-child.pid!, 'SIGKILL'), 30000);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.once('close', (c, s) => resolve([c, s])));
  clearTimeout(timer);

  t.equal(code, 0, `exit code (signal ${signal}; stderr: ${stderr})`);
  t.match(stdout, /^HTTP\/1\.1 401 Unauthorized$/m, 'the handshake without a token is refused');
  t.match(stdout, /^WWW-Authenticate: Bearer realm="portcullis"$/m, 'with the Bearer challenge');
  t.match(stdout, /^upstream greeting: \{"hello":"alice"/m, 'the upstream greets the forwarded subject');
  t.match(stdout, /^echo: hello through portcullis$/m, 'and echoes through the gateway');
  const listening = stdout
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .find((line) => line.msg === 'listening');
  t.equal(listening?.port, port, 'the gateway listened on PORT');
  t.match(stdout, `ws://127.0.0.1:${port}/echo`, 'and the demo says so');
  t.match(stdout, `http://127.0.0.1:${adminPort}/healthz`, 'the admin port follows ADMIN_PORT');
  t.match(stdout, /"msg":"stopped"/, 'the gateway drained and stopped');
  t.equal(stderr, '', 'nothing on stderr');
});
