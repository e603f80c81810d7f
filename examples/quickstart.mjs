// `npm start`: the echo upstream, the gateway from the bundled gateway.config.json (the real CLI), and a
// short demonstration: a handshake without a token (401 on the raw socket), then an authenticated echo.
// Both servers keep running until Ctrl-C, so you can try it yourself.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { WebSocket } from 'ws';
import { makeToken } from '../dist/token-command.js';
import { startEchoUpstream } from './echo-upstream.mjs';

const port = Number(process.env.PORT ?? 8080);
const secret = process.env.JWT_SECRET ?? randomBytes(32).toString('base64url');
const adminPort = Number(process.env.ADMIN_PORT ?? 9090);

const upstream = await startEchoUpstream();
// The gateway's upstream follows the echo server's port (UPSTREAM_PORT), unless UPSTREAM_URL says otherwise.
const env = {
  ...process.env,
  JWT_SECRET: secret,
  ADMIN_TOKEN: process.env.ADMIN_TOKEN ?? randomBytes(16).toString('hex'),
  PORT: String(port),
  ADMIN_PORT: String(adminPort),
  UPSTREAM_URL: process.env.UPSTREAM_URL ?? `ws://127.0.0.1:${upstream.address().port}`,
};
const gateway = spawn(process.execPath, ['dist/cli.js', '--config', 'gateway.config.json'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
const stopAll = (code) => { gateway.kill('SIGTERM'); upstream.close(); process.exitCode = code; };
gateway.on('exit', (code) => { upstream.close(); if (code) process.exit(code); });
process.on('SIGINT', () => stopAll(0));
process.on('SIGTERM', () => stopAll(0));

await new Promise((resolve, reject) => {
  let buffered = '';
  gateway.stdout.on('data', (chunk) => {
    buffered += chunk;
    if (process.env.QUICKSTART_LOGS !== '0') process.stdout.write(chunk);
    if (buffered.includes('"msg":"listening"')) resolve();
  });
  gateway.once('exit', () => reject(new Error('gateway exited before listening')));
});

const url = `ws://127.0.0.1:${port}/echo`;
console.log(`\n--- 1. no token: the gateway answers on the raw socket, the upstream never sees it`);
await new Promise((resolve) => {
  const req = request(`http://127.0.0.1:${port}/echo`, {
    headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': randomBytes(16).toString('base64') },
  });
  req.on('response', (res) => {
    let body = '';
    res.on('data', (c) => (body += c));
    res.on('end', () => {
      console.log(`HTTP/1.1 ${res.statusCode} ${res.statusMessage}`);
      console.log(`WWW-Authenticate: ${res.headers['www-authenticate']}`);
      console.log(body);
      resolve();
    });
  });
  req.on('error', (err) => { console.log(`request failed: ${err.message}`); resolve(); });
  req.end();
});

const token = makeToken({ secret, sub: 'alice', ttl: '1h', claim: ['scope=chat'] });
console.log(`\n--- 2. with a token: authenticated echo through the gateway`);
await new Promise((resolve) => {
  const ws = new WebSocket(url, { headers: { Authorization: `Bearer ${token}` } });
  let got = 0;
  ws.on('open', () => ws.send('hello through portcullis'));
  ws.on('message', (data) => {
    console.log(got === 0 ? `upstream greeting: ${data}` : `echo: ${data}`);
    if (++got === 2) { ws.close(); resolve(); }
  });
  ws.on('error', (err) => { console.log(`websocket failed: ${err.message}`); resolve(); });
});

console.log(`\nThe gateway is listening on ${url} (admin: http://127.0.0.1:${adminPort}/healthz). Try it yourself:
  TOKEN=${token}
  npx wscat -c "${url}" -H "Authorization: Bearer $TOKEN"
  node dist/cli.js token --secret "${secret}" --sub bob     # another token for this run's secret
Ctrl-C stops the gateway and the echo upstream.`);
if (process.env.QUICKSTART_EXIT === '1') stopAll(0);
