// Embedded use with Express 5 and express-session, sessions in Redis through connect-redis: the user logs in
// over ordinary HTTP, and the gateway's `session` authenticator reads the very same session from the same
// Redis (the key layout connect-redis writes) to decide the WebSocket handshake on /ws. Logging out closes
// the live WebSocket too, within `revalidateSec`.
//   REDIS_URL=redis://127.0.0.1:6379 SESSION_SECRET=... node examples/express-session-redis.mjs   (after `npm run build`)
// then open http://localhost:3000 (or 127.0.0.1:3000), log in, and watch the WebSocket greet you.
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { promisify } from 'node:util';
import { createClient } from '@redis/client';
import { RedisStore } from 'connect-redis';
import express from 'express';
import session from 'express-session';
import { createGateway } from '../dist/index.js';
import { isMain } from './run-demo.mjs';

// What both sides must agree on: the cookie name, the secrets (the first signs, all verify, in both
// express-session and the gateway), and where in Redis a session lives.
const COOKIE = 'connect.sid';
const PREFIX = 'sess:';

const PAGE = `<!doctype html>
<title>portcullis + express-session</title>
<form method="post" action="/login"><input name="user" placeholder="your name" required> <button>log in</button></form>
<form method="post" action="/logout"><button>log out</button></form>
<pre id="log"></pre>
<script>
  const log = (line) => (document.getElementById('log').textContent += line + '\\n');
  // The browser sends the session cookie and its Origin with the handshake; nothing else to do.
  const ws = new WebSocket(\`ws://\${location.host}/ws\`);
  ws.onopen = () => ws.send('hello from the page');
  ws.onmessage = (event) => log('received ' + event.data);
  // A refused handshake (not logged in: 401) shows up in a browser only as close code 1006.
  ws.onclose = (event) => log('closed ' + event.code + ' ' + event.reason);
</script>
`;

/**
 * Starts the app on `port` (0: any free port); resolves `{ port, handled, close }`.
 * `origins` defaults to http://localhost:PORT and http://127.0.0.1:PORT, where the page is served.
 */
export async function start(
  port = 0,
  {
    redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    sessionSecret = process.env.SESSION_SECRET,
    origins,
    revalidateSec = 5,
    host = '127.0.0.1',
    logLevel = 'info',
  } = {},
) {
  if (!sessionSecret) throw new Error('sessionSecret (SESSION_SECRET) is required');
  const secrets = [sessionSecret];

  // The app's own Redis client, for express-session. The gateway opens its own from `redis.url`.
  // Not reachable at start: fail at once (connect() rejects) instead of retrying forever; later, reconnect.
  let connected = false;
  const redis = createClient({ url: redisUrl, socket: { reconnectStrategy: (retries, cause) => (connected ? Math.min(100 * retries, 2000) : cause) } });
  redis.on('error', (err) => connected && console.error(`redis: ${err.message}`));
  await redis.connect();
  connected = true;

  const app = express();
  app.use(express.urlencoded({ extended: false }));
  app.use(
    session({
      name: COOKIE,
      secret: secrets,
      store: new RedisStore({ client: redis, prefix: PREFIX }),
      resave: false,
      saveUninitialized: false,
      // In production add `secure: true` (HTTPS only) and `app.set('trust proxy', 1)` behind a proxy.
      cookie: { httpOnly: true, sameSite: 'lax', maxAge: 60 * 60 * 1000 },
    }),
  );
  app.get('/', (_req, res) => res.type('html').send(PAGE));
  app.get('/me', (req, res) => res.json({ user: req.session.user?.id ?? null }));
  app.post('/login', async (req, res) => {
    const name = String(req.body?.user ?? '').trim();
    if (!name) return res.status(400).json({ error: 'user required' });
    // A new session id at login, so a session id planted before login is worth nothing (session fixation).
    await promisify(req.session.regenerate.bind(req.session))();
    req.session.user = { id: name };
    await promisify(req.session.save.bind(req.session))();
    res.redirect(303, '/');
  });
  app.post('/logout', async (req, res) => {
    await promisify(req.session.destroy.bind(req.session))();
    res.clearCookie(COOKIE).redirect(303, '/');
  });

  const server = createServer(app);
  server.listen(port, host);
  await once(server, 'listening');
  const actualPort = server.address().port;

  // Created once the port is known, because the allowed Origins name it. A route that accepts a cookie
  // must list its origins: otherwise any web page the user visits could open this WebSocket with their
  // cookie (Cross-Site WebSocket Hijacking), and `createGateway` refuses the config.
  const gateway = createGateway({
    log: { level: logLevel },
    drain: { timeoutMs: 2000 },
    redis: { url: redisUrl },
    authenticators: {
      web: { type: 'session', cookie: COOKIE, secrets, store: { type: 'redis', prefix: PREFIX }, subjectPath: 'user.id' },
    },
    routes: [
      {
        path: '/ws',
        auth: ['web'],
        mode: 'local',
        origins: origins ?? [`http://localhost:${actualPort}`, `http://127.0.0.1:${actualPort}`],
        // Look the session up again every N seconds: after a logout the WebSocket closes with 4401.
        revalidateSec,
      },
    ],
  });
  await gateway.ready();

  let handled = 0;
  gateway.on('connection', (ws, _req, identity) => {
    handled++;
    // identity.claims is the session object (minus its cookie), identity.subject the user id.
    ws.send(JSON.stringify({ hello: identity.subject }));
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
  // Attached right after listen(), before anyone is told the port.
  gateway.attach(server);

  return {
    port: actualPort,
    /** How many connections the app's WebSocket handler has run for. */
    get handled() {
      return handled;
    },
    async close() {
      await gateway.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      await redis.close();
    },
  };
}

if (isMain(import.meta.url)) {
  // A throwaway secret keeps the demo runnable without setup; sessions from an earlier run stop working.
  const sessionSecret = process.env.SESSION_SECRET ?? randomBytes(32).toString('base64url');
  const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  const app = await start(Number(process.env.PORT ?? 3000), { sessionSecret, redisUrl }).catch((err) => {
    console.error(`cannot start: ${err.message} (is redis-server running at ${redisUrl}? set REDIS_URL)`);
    process.exit(1);
  });
  console.log(`express app on http://127.0.0.1:${app.port} (sessions in ${redisUrl})
  open http://127.0.0.1:${app.port}/ in a browser and log in, or with curl:
  curl -si -c jar -d user=alice http://127.0.0.1:${app.port}/login
  npx wscat -c "ws://127.0.0.1:${app.port}/ws" -o "http://127.0.0.1:${app.port}" -H "Cookie: $(awk '$6 == "${COOKIE}" {print $6 "=" $7}' jar)"`);
  const stop = () => void app.close().then(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
