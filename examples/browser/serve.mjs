// The browser demo: a static page (index.html + app.js, no build step) that opens WebSockets through an
// embedded portcullis gateway the two ways a browser can authenticate one, and shows every close code and
// reason it gets.
//   node examples/browser/serve.mjs          (after `npm run build`; PORT, OTHER_PORT, HOST, JWT_SECRET)
//
// One http server (PORT, default 8088) serves the page, POST /login (a demo JWT in the response body and
// an express-session style signed cookie) and the gateway's WebSocket routes:
//   /echo       jwt from the subprotocol (`new WebSocket(url, ['bearer', 'bearer.' + token])`), rejectMode close
//   /echo-http  the same with the default rejectMode http: a refusal is only "1006" to JavaScript
//   /session    the session cookie, `origins` = this page's own origin, rejectMode close
// A second server (OTHER_PORT, default any free port) serves the same page from another origin, pointed at
// the first one's gateway (?gateway=ws://...): its cookie-session connection is refused 4403.
import { randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { fileURLToPath } from 'node:url';
import jsonwebtoken from 'jsonwebtoken';
import { createGateway, signSessionId } from '../../dist/index.js';
import { startEchoUpstream } from '../echo-upstream.mjs';
import { isMain } from '../run-demo.mjs';

const STATIC = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/index.html': ['index.html', 'text/html; charset=utf-8'],
  '/app.js': ['app.js', 'text/javascript; charset=utf-8'],
};
const SESSION_COOKIE = 'connect.sid';
const SESSION_MAX_AGE_MS = 60 * 60 * 1000;

/** Answers GET for the page's two files; anything else 404 (405 for another method on them). */
async function serveStatic(req, res) {
  const path = new URL(req.url ?? '/', 'http://x').pathname;
  const file = STATIC[path];
  if (!file) return void res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
  if (req.method !== 'GET' && req.method !== 'HEAD') return void res.writeHead(405, { Allow: 'GET, HEAD' }).end();
  const body = await readFile(fileURLToPath(new URL(file[0], import.meta.url)));
  res.writeHead(200, { 'Content-Type': file[1], 'Content-Length': body.length, 'Cache-Control': 'no-store' });
  res.end(req.method === 'HEAD' ? undefined : body);
}

async function listen(server, port, host) {
  server.listen(port, host);
  await once(server, 'listening');
  return server.address().port;
}

async function closeServer(server) {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
}

/**
 * Starts the demo on `port` (0: any free port) and the other-origin copy of the page on `otherPort`.
 * Without `upstream` it starts the bundled echo upstream (examples/echo-upstream.mjs) on a free port.
 * Resolves `{ port, otherPort, url, otherUrl, gateway, close }`.
 */
export async function start(
  port = 0,
  {
    secret = process.env.JWT_SECRET ?? randomBytes(32).toString('base64url'),
    sessionSecret = randomBytes(32).toString('base64url'),
    upstream,
    otherPort = 0,
    host = '127.0.0.1',
    logLevel = 'info',
  } = {},
) {
  const echo = upstream ? undefined : await startEchoUpstream(0, '127.0.0.1');
  const upstreamUrl = upstream ?? `ws://127.0.0.1:${echo.address().port}`;

  let gateway;
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (path !== '/login') return void serveStatic(req, res).catch(() => res.writeHead(500).end());
    if (req.method !== 'POST') return void res.writeHead(405, { Allow: 'POST' }).end();
    // What a real app's login would do once the password checked out: an express-session session in the
    // store the gateway reads (here its in-process memory store), and a short-lived JWT for the page.
    const id = randomUUID();
    const expires = new Date(Date.now() + SESSION_MAX_AGE_MS);
    gateway.sessionStore('web').set(id, {
      cookie: { originalMaxAge: SESSION_MAX_AGE_MS, expires: expires.toISOString(), httpOnly: true, path: '/' },
      passport: { user: 'alice' },
    });
    const body = JSON.stringify({
      subject: 'alice',
      token: jsonwebtoken.sign({ sub: 'alice', scope: 'chat' }, secret, { algorithm: 'HS256', expiresIn: '1h' }),
      // Signed with a key the gateway does not know, to show a refusal: 4401 "signature invalid".
      badToken: jsonwebtoken.sign({ sub: 'mallory' }, randomBytes(32), { algorithm: 'HS256', expiresIn: '1h' }),
    });
    res.writeHead(200, {
      'Content-Type': 'application/json',
      'Cache-Control': 'no-store',
      // Exactly what express-session sets: s:<id>.<signature>, URL-encoded. HttpOnly: page scripts never
      // see it; the browser attaches it to the WebSocket handshake by itself.
      'Set-Cookie': `${SESSION_COOKIE}=${encodeURIComponent(signSessionId(id, sessionSecret))}; Path=/; Expires=${expires.toUTCString()}; HttpOnly; SameSite=Lax`,
    });
    res.end(body);
  });
  const other = createServer((req, res) => void serveStatic(req, res).catch(() => res.writeHead(500).end()));

  try {
    port = await listen(server, port, host);
    otherPort = await listen(other, otherPort, host);
  } catch (err) {
    await Promise.all([server, other].filter((s) => s.listening).map(closeServer));
    echo?.close();
    throw err;
  }
  const shownHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
  // The page's own origin (also under the name localhost). The other server's origin is not in it.
  const origins = [...new Set([`http://${shownHost}:${port}`, `http://127.0.0.1:${port}`, `http://localhost:${port}`])];

  gateway = createGateway({
    log: { level: logLevel },
    drain: { timeoutMs: 2000 },
    authenticators: {
      jwt: { type: 'jwt', from: ['protocol:bearer.', 'bearer'], secret, algorithms: ['HS256'] },
      web: { type: 'session', cookie: SESSION_COOKIE, secrets: [sessionSecret], store: { type: 'memory' }, subjectPath: 'passport.user' },
    },
    routes: [
      { path: '/echo', auth: ['jwt'], upstream: upstreamUrl, rejectMode: 'close' },
      { path: '/echo-http', auth: ['jwt'], upstream: upstreamUrl },
      // A cookie goes with every handshake to this host, whichever page opens it: only `origins` tells
      // the pages that may use it from the others (cross-site WebSocket hijacking).
      { path: '/session', auth: ['web'], upstream: upstreamUrl, origins, rejectMode: 'close' },
    ],
  });
  await gateway.ready();
  server.on('upgrade', gateway.handleUpgrade);

  return {
    port,
    otherPort,
    url: `http://${shownHost}:${port}/`,
    otherUrl: `http://${shownHost}:${otherPort}/?gateway=ws://${shownHost}:${port}`,
    gateway,
    async close() {
      await gateway.close();
      await Promise.all([closeServer(server), closeServer(other)]);
      if (echo) {
        for (const client of echo.clients) client.terminate();
        await new Promise((resolve) => echo.close(resolve));
      }
    },
  };
}

if (isMain(import.meta.url)) {
  const demo = await start(Number(process.env.PORT ?? 8088), {
    otherPort: Number(process.env.OTHER_PORT ?? 0),
    host: process.env.HOST ?? '127.0.0.1',
    logLevel: process.env.LOG_LEVEL ?? 'info',
  });
  console.log(`portcullis browser demo: open ${demo.url}
  the same page from another origin (its cookie session is refused 4403): ${demo.otherUrl}
Ctrl-C stops it.`);
  const stop = () => void demo.close().then(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
