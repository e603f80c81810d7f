// `portcullis check` prints what a valid config does (issue 5): listeners, every route with its mode,
// authentication (public routes called out), upstreams and extras, every authenticator and its users.
import t from 'tap';
import { validateConfig } from '../../src/config/load.js';
import { summarizeConfig } from '../../src/config/summary.js';

const SECRET = 'a-secret-of-at-least-32-bytes-0123456789';

t.test('a config summarised', async (t) => {
  const config = validateConfig({
    listen: { port: 9000 },
    admin: { port: 9090, token: 'admin-token-value' },
    redis: { url: 'redis://127.0.0.1:6379' },
    tickets: { path: '/tickets' },
    authenticators: {
      users: { type: 'jwt', from: ['bearer', 'protocol:bearer.'], secret: SECRET, algorithms: ['HS256'] },
      spare: { type: 'apiKey', from: ['header:x-api-key'], keys: [{ sha256: 'a'.repeat(64), subject: 'svc' }] },
      once: { type: 'ticket' },
    },
    routes: [
      { path: '/health', auth: [], upstream: 'ws://127.0.0.1:9001' },
      { path: '/chat/*', host: 'chat.example.com', auth: ['users', 'once'], upstream: ['ws://10.0.0.5:9001', 'ws://10.0.0.6:9001'], balance: 'least-connections', mode: 'relay', refresh: { graceSec: 5 }, rateLimit: { perIp: '20/s' }, maxConnectionsPerSubject: 3, require: { scope: 'chat' } },
    ],
  });
  const text = summarizeConfig(config);
  t.match(text, 'listens on ws://0.0.0.0:9000');
  t.match(text, 'admin on http://127.0.0.1:9090');
  t.match(text, 'shared state in Redis');
  t.match(text, 'POST /tickets (valid 30s)');
  t.match(text, '0. /health [pipe] PUBLIC (no authentication) -> ws://127.0.0.1:9001');
  t.match(text, '1. chat.example.com /chat/* [relay] auth users or once -> ws://10.0.0.5:9001, ws://10.0.0.6:9001 (least-connections)');
  t.match(text, 'requires scope=chat; rate 20/s/ip; max 3/subject; refresh');
  t.match(text, 'users: jwt from bearer, protocol:bearer.; used by route 1');
  t.match(text, 'spare: apiKey from header:x-api-key; not used by any route');
  t.notMatch(text, SECRET, 'no secret in the summary');
  t.notMatch(text, 'admin-token-value');
});

t.test('defaults: no admin, no redis, local routes', async (t) => {
  const text = summarizeConfig(validateConfig({ routes: [{ path: '/ws', auth: [] }] }));
  t.match(text, 'listens on ws://0.0.0.0:8080');
  t.match(text, 'no admin listener');
  t.match(text, 'state kept per process');
  t.match(text, '0. /ws [local] PUBLIC (no authentication) -> the application (local)');
  t.match(text, 'authenticators (0):');
});
