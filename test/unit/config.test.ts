import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { loadConfigFile, readConfigFile, validateConfig } from '../../src/config/load.js';
import { configJsonSchema } from '../../src/config/schema.js';
import { ConfigError } from '../../src/errors.js';

const ROOT = new URL('../../', import.meta.url);
const SECRET = 'test-secret-0123456789abcdef-0123456789'; // ≥ 32 bytes
const UP = 'ws://127.0.0.1:9001';
const jwt = (extra: Record<string, unknown> = {}) => ({ type: 'jwt', from: ['bearer'], secret: SECRET, algorithms: ['HS256'], ...extra });
const route = (extra: Record<string, unknown> = {}) => ({ path: '/chat', auth: [] as string[], upstream: UP, ...extra });

/** The problems a config is refused with (fails the test if it is accepted or throws something else). */
function problemsOf(input: unknown, options: Parameters<typeof validateConfig>[1] = {}): string[] {
  try {
    validateConfig(input, { env: {}, ...options });
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems];
    throw err;
  }
  throw new Error('expected the config to be refused');
}

const rsa = () =>
  generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });

t.test('a valid minimal config', async (t) => {
  const input = { routes: [{ path: '/chat', auth: [], upstream: UP }] };
  const config = validateConfig(input, { env: {} });
  t.same(config, { routes: [{ path: '/chat', auth: [], upstream: UP }] });

  const withJwt = validateConfig({ authenticators: { user: jwt() }, routes: [route({ auth: ['user'] })] }, { env: {} });
  t.same(withJwt, { authenticators: { user: jwt() }, routes: [route({ auth: ['user'] })] });
});

t.test('the input object is not modified', async (t) => {
  const input = { listen: { port: '${PORT}' }, authenticators: { user: jwt() }, routes: [route({ auth: ['user'] })] };
  const copy = structuredClone(input);
  validateConfig(input, { env: { PORT: '8080' } });
  t.same(input, copy);
});

t.test('schema problems are all reported at once, each as path: message', async (t) => {
  const problems = problemsOf({
    limits: { maxConectionsPerIp: 3 },
    admin: { port: 9090 },
    routes: [{ path: '/a', upstream: UP }, route({ orgins: ['https://a.test'] })],
    authenticators: { j: jwt({ algorithm: 'HS256' }) },
  });
  t.same([...problems].sort(), [
    'admin.token: required',
    'authenticators.j.algorithm: unknown field',
    'limits.maxConectionsPerIp: unknown field',
    'routes.0.auth: required',
    'routes.1.orgins: unknown field',
  ]);
});

t.test('cross-field problems are all reported at once', async (t) => {
  const problems = problemsOf({
    authenticators: {
      jwt: jwt(),
      cookieJwt: jwt({ from: ['bearer', 'cookie:access_token'] }),
      sess: { type: 'session', secrets: ['keyboard cat'], subjectPath: 'user.id', store: { type: 'redis' } },
    },
    routes: [
      route({ path: '/a', auth: ['jwt'] }),
      route({ path: '/b', auth: ['sess'] }),
      route({ path: '/c', auth: ['jwt', 'cookieJwt'] }),
      route({ path: '/d', auth: ['nope'] }),
      route({ path: '/e', auth: ['jwt'], maxPayload: 1024 }),
    ],
  });
  t.same(problems, [
    'redis.url: required by authenticators.sess.store',
    'routes.1.origins: required on a route that accepts a cookie credential (list the allowed origins, or "*")',
    'routes.2.origins: required on a route that accepts a cookie credential (list the allowed origins, or "*")',
    'routes.3.auth.0: unknown authenticator "nope"',
    'routes.4.maxPayload: only for mode "relay"',
  ]);
});

t.test('schema and cross-field problems together are reported at once', async (t) => {
  // Cross-field rules run even when the schema failed, so one `check` shows every problem.
  let problems: string[] = [];
  try {
    validateConfig(
      {
        limits: { maxConectionsPerIp: 3 },
        authenticators: { sess: { type: 'session', secrets: ['keyboard cat'], subjectPath: 'user.id' } },
        routes: [route({ auth: ['sess'] })],
      },
      { env: {} },
    );
  } catch (err) {
    problems = [...(err as ConfigError).problems];
  }
  t.ok(problems.includes('limits.maxConectionsPerIp: unknown field'));
  t.ok(
    problems.includes('routes.0.origins: required on a route that accepts a cookie credential (list the allowed origins, or "*")'),
    'the missing origins is reported in the same run',
  );
});

t.test('origins: required with session or cookie: sources, fine with "*" or a list', async (t) => {
  const auths = {
    sess: { type: 'session', secrets: ['keyboard cat'], subjectPath: 'passport.user' },
    cookieKey: { type: 'apiKey', from: ['cookie:key'], keys: [{ sha256: 'a'.repeat(64), subject: 'svc' }] },
    bearer: jwt({ from: ['bearer', 'query:access_token', 'protocol:bearer.', 'header:x-token'] }),
  };
  const message = 'required on a route that accepts a cookie credential (list the allowed origins, or "*")';
  t.same(problemsOf({ authenticators: auths, routes: [route({ auth: ['sess'] })] }), [`routes.0.origins: ${message}`]);
  t.same(problemsOf({ authenticators: auths, routes: [route({ auth: ['bearer'] }), route({ auth: ['bearer', 'cookieKey'] })] }), [
    `routes.1.origins: ${message}`,
  ]);
  for (const origins of ['*', ['https://app.example.com', '*.example.com']]) {
    const ok = validateConfig({ authenticators: auths, routes: [route({ auth: ['sess', 'cookieKey'], origins })] }, { env: {} });
    t.same(ok.routes[0]!.origins, origins, JSON.stringify(origins));
  }
  t.ok(validateConfig({ authenticators: auths, routes: [route({ auth: ['bearer'] })] }, { env: {} }), 'no cookie credential: no origins needed');
  t.same(problemsOf({ routes: [route({ origins: ['app.example.com'] })] }), ['routes.0.origins.0: expected scheme://host[:port] or *.example.com']);
});

t.test('jwt key sources', async (t) => {
  const { publicKey } = rsa();
  const one = (auth: unknown) => problemsOf({ authenticators: { j: auth }, routes: [route({ auth: ['j'] })] });
  const exactlyOne = 'authenticators.j.secret: exactly one of secret, publicKey or jwksUri is required';

  t.ok(one(jwt({ secret: undefined })).includes(exactlyOne), 'no key');
  t.ok(one(jwt({ publicKey })).includes(exactlyOne), 'secret and publicKey');
  t.same(one(jwt({ secret: 'x'.repeat(31) })), ['authenticators.j.secret: must be at least 32 bytes'], '31 bytes');
  t.ok(validateConfig({ authenticators: { j: jwt({ secret: 'x'.repeat(32) }) }, routes: [route({ auth: ['j'] })] }, { env: {} }), '32 bytes is enough');
  t.same(one(jwt({ secret: '€'.repeat(10) })), ['authenticators.j.secret: must be at least 32 bytes'], '30 bytes of UTF-8');
  t.same(one(jwt({ algorithms: ['HS256', 'RS256'] })), ['authenticators.j.algorithms: a secret verifies only HS256, HS384 or HS512']);
  t.same(one({ type: 'jwt', from: ['bearer'], publicKey, algorithms: ['HS256'] }), ['authenticators.j.algorithms: HS256 needs a secret, not a public key'], 'HS algorithm with a public key');
  t.same(one(jwt({ algorithms: ['none'] })), ['authenticators.j.algorithms.0: unsupported algorithm'], 'none is never accepted');
  t.same(one(jwt({ algorithms: [] })), ['authenticators.j.algorithms: must list at least one algorithm']);
  t.same(one(jwt({ algorithms: undefined })), ['authenticators.j.algorithms: required'], 'no default algorithms');
  t.same(one(jwt({ from: undefined })), ['authenticators.j.from: required']);
  t.same(one({ type: 'jwt', from: ['bearer'], publicKey: 'not a pem', algorithms: ['RS256'] }), ['authenticators.j.publicKey: not a valid PEM public key or certificate']);
  t.same(one(jwt({ from: ['basic'] })), ['authenticators.j.from.0: expected bearer, query:NAME, header:NAME, cookie:NAME or protocol:PREFIX']);
  t.same(one({ type: 'saml' }), ['authenticators.j.type: type must be one of jwt, apiKey, session, introspection, forwardAuth, module, ticket']);

  const rs = validateConfig({ authenticators: { j: { type: 'jwt', from: ['bearer'], publicKey, algorithms: ['RS256'] } }, routes: [route({ auth: ['j'] })] }, { env: {} });
  t.equal((rs.authenticators!.j as { publicKey: string }).publicKey, publicKey, 'an inline PEM is kept');
});

t.test('mode local: fine embedded, an error in the sidecar', async (t) => {
  const local = { routes: [{ path: '/c', auth: [], mode: 'local' }] };
  t.same(validateConfig(local, { env: {} }).routes[0], { path: '/c', auth: [], mode: 'local' });
  t.same(problemsOf(local, { sidecar: true }), ['routes.0.mode: "local" needs an embedding application; the sidecar has none']);
  t.same(problemsOf({ routes: [{ path: '/c', auth: [] }] }, { sidecar: true }), ['routes.0.mode: an upstream is required']);
  t.same(problemsOf({ routes: [{ path: '/c', auth: [], mode: 'local', upstream: UP }] }), ['routes.0.upstream: not used with mode "local"']);
  t.same(problemsOf({ routes: [{ path: '/c', auth: [], mode: 'pipe' }] }), ['routes.0.upstream: required with mode "pipe"']);
});

t.test('relay-only fields on a pipe route are errors', async (t) => {
  t.same(problemsOf({ routes: [route({ maxPayload: 1024 })] }), ['routes.0.maxPayload: only for mode "relay"']);
  t.same(problemsOf({ routes: [route({ mode: 'pipe', heartbeatMs: 1000 })] }), ['routes.0.heartbeatMs: only for mode "relay"']);
  t.same(problemsOf({ routes: [route({ firstMessageAuth: {} })] }), ['routes.0.firstMessageAuth: only for mode "relay"']);
  t.same(problemsOf({ routes: [route({ refresh: { graceSec: 5 } })] }), ['routes.0.refresh: only for mode "relay"']);
  t.equal(validateConfig({ routes: [{ path: '/c', auth: [], mode: 'local', maxPayload: 1024 }] }, { env: {} }).routes[0]!.maxPayload, 1024, 'maxPayload is fine on a local route');
});

t.test('session store redis needs redis.url', async (t) => {
  const sess = { type: 'session', secrets: ['keyboard cat'], subjectPath: 'user.id', store: { type: 'redis', prefix: 'sess:' } };
  t.same(problemsOf({ authenticators: { s: sess }, routes: [route({ auth: ['s'], origins: '*' })] }), ['redis.url: required by authenticators.s.store']);
  const ok = validateConfig({ redis: { url: 'redis://127.0.0.1:6379' }, authenticators: { s: sess }, routes: [route({ auth: ['s'], origins: '*' })] }, { env: {} });
  t.equal(ok.redis!.url, 'redis://127.0.0.1:6379');
  t.same(problemsOf({ redis: {}, routes: [route()] }), ['redis.url: required']);
});

t.test('workers > 1 in the sidecar: what is per process needs redis', async (t) => {
  const sidecar = { env: {}, sidecar: true };
  const REDIS = { url: 'redis://127.0.0.1:6379' };
  const TICKETS = 'tickets: needs redis when workers > 1: each worker would keep its own tickets';
  const SESSIONS = (name: string) => `authenticators.${name}.store: needs { "type": "redis" } when workers > 1: each worker would keep its own sessions`;
  const session = (store?: object) => ({ type: 'session', secrets: ['keyboard cat'], subjectPath: 'user.id', ...(store && { store }) });
  const sessions = (extra: Record<string, unknown> = {}) => ({
    authenticators: { mem: session({ type: 'memory' }), dflt: session(), shared: session({ type: 'redis' }) },
    routes: [route({ auth: ['mem', 'dflt', 'shared'], origins: '*' })],
    ...extra,
  });

  t.same(validateConfig({ workers: 4, routes: [route()] }, sidecar).workers, 4, 'workers alone is fine (revocations need no redis)');
  t.same(problemsOf({ workers: 2, tickets: { path: '/tickets' }, routes: [route()] }, sidecar), [TICKETS]);
  t.same(problemsOf({ ...sessions({ workers: 2 }), redis: REDIS }, sidecar), [SESSIONS('mem'), SESSIONS('dflt')], 'a memory store (also by default) is per worker, redis or not');
  t.same(problemsOf(sessions({ workers: 2 }), sidecar).sort(), [SESSIONS('dflt'), SESSIONS('mem'), 'redis.url: required by authenticators.shared.store']);
  const shared = validateConfig({ workers: 2, redis: REDIS, tickets: { path: '/tickets' }, authenticators: { s: session({ type: 'redis' }) }, routes: [route({ auth: ['s'], origins: '*' })] }, sidecar);
  t.equal(shared.workers, 2, 'with redis: tickets and redis sessions are shared');
  t.same(problemsOf({ workers: '${WORKERS}', tickets: { path: '/tickets' }, routes: [route()] }, { env: { WORKERS: '3' }, sidecar: true }), [TICKETS], 'workers from the environment');

  // workers 1 or absent: one process, nothing to share; embedded, workers is ignored (SPEC 9, Library).
  const local = { tickets: { path: '/tickets' }, authenticators: { mem: session() }, routes: [route({ auth: ['mem'], origins: '*' })] };
  for (const workers of [undefined, 1]) t.equal(validateConfig({ workers, ...local }, sidecar).routes.length, 1, `workers ${workers}: fine`);
  t.equal(validateConfig({ workers: 8, ...local }, { env: {} }).workers, 8, 'createGateway accepts and ignores workers');
});

t.test('admin needs a token', async (t) => {
  t.same(problemsOf({ admin: { port: 9090 }, routes: [route()] }), ['admin.token: required']);
  t.same(problemsOf({ admin: { port: 9090, token: '' }, routes: [route()] }), ['admin.token: must not be empty']);
  t.same(validateConfig({ admin: { port: 9090, token: 'tok' }, routes: [route()] }, { env: {} }).admin, { port: 9090, token: 'tok' });
});

t.test('a config that is not an object, or has no routes', async (t) => {
  t.same(problemsOf(42), ['(root): expected object, received number']);
  t.same(problemsOf({}), ['routes: required']);
  t.same(problemsOf({ routes: [] }), ['routes: must list at least one route']);
});

t.test('environment expansion', async (t) => {
  const input = {
    listen: { host: '${HOST:-127.0.0.1}', port: '${PORT}' },
    authenticators: { j: jwt({ secret: '${JWT_SECRET}' }) },
    routes: [route({ auth: ['j'], upstream: 'ws://${UP_HOST}:${UP_PORT:-9001}/ws' })],
  };
  const config = validateConfig(input, { env: { PORT: '8081', JWT_SECRET: SECRET, UP_HOST: 'backend' } });
  t.same(config.listen, { host: '127.0.0.1', port: 8081 });
  t.equal(typeof config.listen!.port, 'number', '"${PORT}" becomes a number');
  t.equal((config.authenticators!.j as { secret: string }).secret, SECRET);
  t.equal(config.routes[0]!.upstream, 'ws://backend:9001/ws');

  const overridden = validateConfig(input, { env: { PORT: '1', JWT_SECRET: SECRET, UP_HOST: 'b', UP_PORT: '7', HOST: '0.0.0.0' } });
  t.same(overridden.listen, { host: '0.0.0.0', port: 1 });
  t.equal(overridden.routes[0]!.upstream, 'ws://b:7/ws');

  const emptyUsesDefault = validateConfig(input, { env: { PORT: '1', JWT_SECRET: SECRET, UP_HOST: 'b', HOST: '' } });
  t.equal(emptyUsesDefault.listen!.host, '127.0.0.1', 'an empty variable takes the default');
});

t.test('a missing variable is an error naming the field', async (t) => {
  const problems = problemsOf(
    {
      authenticators: { j: jwt({ secret: '${JWT_SECRET}', from: ['bearer', 'query:${TOKEN_PARAM}'] }) },
      routes: [route({ auth: ['j'] })],
    },
    { env: {} },
  );
  t.ok(problems.includes('authenticators.j.secret: environment variable JWT_SECRET is not set'), problems.join('\n'));
  t.ok(problems.includes('authenticators.j.from.1: environment variable TOKEN_PARAM is not set'), problems.join('\n'));
  t.equal(problems.filter((p) => p.includes('is not set')).length, 2);

  t.same(problemsOf({ routes: [route({ upstream: '${UPSTREAM}' })] }, { env: { UPSTREAM: '' } }).filter((p) => p.includes('UPSTREAM')), [
    'routes.0.upstream: environment variable UPSTREAM is not set',
  ], 'an empty variable without default counts as missing');
});

t.test('number and boolean fields', async (t) => {
  const input = {
    listen: { port: '${PORT}' },
    limits: { maxConnections: '${MAXC:-100}', handshakeTimeoutMs: 2500 },
    routes: [route({ stripCredentials: '${STRIP}', enforceExpiry: '${EXPIRY:-true}', tlsVerify: false })],
  };
  const config = validateConfig(input, { env: { PORT: '8080', STRIP: 'false' } });
  t.equal(config.listen!.port, 8080);
  t.same(config.limits, { maxConnections: 100, handshakeTimeoutMs: 2500 });
  t.equal(config.routes[0]!.stripCredentials, false);
  t.equal(config.routes[0]!.enforceExpiry, true);
  t.equal(config.routes[0]!.tlsVerify, false);

  t.same(problemsOf({ listen: { port: 'abc' }, routes: [route()] }), ['listen.port: expected a number']);
  t.same(problemsOf({ listen: { port: '${PORT}' }, routes: [route()] }, { env: { PORT: 'abc' } }), ['listen.port: expected a number']);
  t.same(problemsOf({ listen: { port: '${PORT}' }, routes: [route()] }, { env: { PORT: '80.5' } }), ['listen.port: expected an integer']);
  t.same(problemsOf({ limits: { maxConnections: '${M}' }, routes: [route()] }, { env: { M: '0' } }), ['limits.maxConnections: must be at least 1']);
  t.same(problemsOf({ routes: [route({ stripCredentials: '${S}' })] }, { env: { S: 'yes' } }), ['routes.0.stripCredentials: expected true or false']);
  t.same(problemsOf({ routes: [route({ stripCredentials: 1 })] }).length, 1);
});

t.test('relative file: publicKey and apiKey keys files resolve against baseDir', async (t) => {
  const { publicKey } = rsa();
  const dir = t.testdir({
    keys: { 'pub.pem': publicKey },
    'api-keys.json': JSON.stringify([{ sha256: 'a'.repeat(64), subject: 'svc-a', claims: { scope: 'chat' } }]),
    'bad-keys.json': JSON.stringify({ sha256: 'a'.repeat(64) }),
    'not-json.json': '[{',
  });
  const config = validateConfig(
    {
      authenticators: {
        rs: { type: 'jwt', from: ['bearer'], publicKey: 'file:keys/pub.pem', algorithms: ['RS256'] },
        keys: { type: 'apiKey', from: ['header:x-api-key'], keys: [{ file: 'api-keys.json' }, { sha256: 'b'.repeat(64), subject: 'svc-b' }] },
      },
      routes: [route({ auth: ['rs', 'keys'] })],
    },
    { env: {}, baseDir: dir },
  );
  t.equal((config.authenticators!.rs as { publicKey: string }).publicKey, publicKey, 'the PEM is read from the file');
  t.same((config.authenticators!.keys as { keys: unknown[] }).keys, [
    { sha256: 'a'.repeat(64), subject: 'svc-a', claims: { scope: 'chat' } },
    { sha256: 'b'.repeat(64), subject: 'svc-b' },
  ]);

  const missing = problemsOf(
    { authenticators: { rs: { type: 'jwt', from: ['bearer'], publicKey: 'file:keys/nope.pem', algorithms: ['RS256'] } }, routes: [route({ auth: ['rs'] })] },
    { baseDir: dir },
  );
  t.same(missing, [`authenticators.rs.publicKey: file not found (relative paths resolve against ${dir})`], 'the field, not its value');

  const bad = problemsOf(
    { authenticators: { k: { type: 'apiKey', from: ['bearer'], keys: [{ file: 'bad-keys.json' }, { file: 'missing.json' }, { file: 'not-json.json' }] } }, routes: [route({ auth: ['k'] })] },
    { baseDir: dir },
  );
  t.equal(bad.length, 3, bad.join('\n'));
  t.equal(bad[0], 'authenticators.k.keys.0.file: expected a JSON list of { "sha256": "<64 hex>", "subject": "..." }');
  t.equal(bad[1], `authenticators.k.keys.1.file: file not found (relative paths resolve against ${dir})`);
  t.match(bad[2], /^authenticators\.k\.keys\.2\.file: cannot parse: /);
});

t.test('loadConfigFile resolves relative paths against the file\'s directory', async (t) => {
  const { publicKey } = rsa();
  const dir = t.testdir({
    conf: {
      'gateway.json': JSON.stringify({
        authenticators: { rs: { type: 'jwt', from: ['bearer'], publicKey: 'file:pub.pem', algorithms: ['RS256'] } },
        routes: [route({ auth: ['rs'] })],
      }),
      'pub.pem': publicKey,
    },
  });
  const config = loadConfigFile(join(dir, 'conf', 'gateway.json'), { env: {} });
  t.equal((config.authenticators!.rs as { publicKey: string }).publicKey, publicKey);
});

t.test('the result is deep-frozen', async (t) => {
  const config = validateConfig(
    { limits: { maxConnections: 10 }, authenticators: { j: jwt({ from: ['bearer', 'query:t'] }) }, routes: [route({ auth: ['j'], require: { role: ['a', 'b'] } })] },
    { env: {} },
  );
  for (const [name, value] of Object.entries({
    config,
    limits: config.limits,
    authenticators: config.authenticators,
    'authenticators.j': config.authenticators!.j,
    'authenticators.j.from': (config.authenticators!.j as { from: string[] }).from,
    routes: config.routes,
    'routes.0': config.routes[0],
    'routes.0.auth': config.routes[0]!.auth,
    'routes.0.require.role': config.routes[0]!.require!.role,
  })) {
    t.ok(Object.isFrozen(value), `${name} is frozen`);
  }
  t.throws(() => {
    (config.routes as unknown[]).push({});
  }, TypeError);
  t.throws(() => {
    (config.routes[0] as { path: string }).path = '/other';
  }, TypeError);
  t.equal(config.routes[0]!.path, '/chat');
});

t.test('validating a validated config gives an equal config', async (t) => {
  const { publicKey } = rsa();
  const dir = t.testdir({
    'pub.pem': publicKey,
    'keys.json': JSON.stringify([{ sha256: 'c'.repeat(64), subject: 'svc-c' }]),
    'handler.mjs': 'export default () => true;\n',
  });
  const input = {
    listen: { port: '${PORT}' },
    admin: { port: 9090, token: '${ADMIN_TOKEN}' },
    authenticators: {
      rs: { type: 'jwt', from: ['bearer'], publicKey: 'file:pub.pem', algorithms: ['RS256'] },
      k: { type: 'apiKey', from: ['header:x-api-key'], keys: [{ file: 'keys.json' }] },
      m: { type: 'module', path: './handler.mjs' },
      s: { type: 'session', secrets: ['${SESSION_SECRET}'], subjectPath: 'user.id' },
    },
    routes: [route({ auth: ['rs', 'k', 'm', 's'], origins: ['https://app.example.com'], stripCredentials: 'true' })],
  };
  const env = { PORT: '8080', ADMIN_TOKEN: 'admin-token', SESSION_SECRET: 'keyboard cat' };
  const once = validateConfig(input, { env, baseDir: dir });
  t.equal((once.authenticators!.m as { path: string }).path, join(dir, 'handler.mjs'), 'module path made absolute');
  const twice = validateConfig(once, { env: {}, baseDir: '/' });
  t.same(twice, once);
  t.not(twice, once, 'a new object');
});

t.test('a secret value never appears in any problem message', async (t) => {
  const MARK = 'Zq7-SECRET-VALUE';
  const configs: [string, unknown, Parameters<typeof validateConfig>[1]?][] = [
    ['short jwt secret', { authenticators: { j: jwt({ secret: MARK }) }, routes: [route({ auth: ['j'] })] }],
    ['jwt secret from env, too short', { authenticators: { j: jwt({ secret: '${S}' }) }, routes: [route({ auth: ['j'] })] }, { env: { S: MARK } }],
    ['secret and publicKey', { authenticators: { j: jwt({ secret: MARK, publicKey: `${MARK}-pem`, algorithms: ['HS256', 'RS256'] }) }, routes: [route({ auth: ['j'] })] }],
    ['secret of the wrong type', { authenticators: { j: jwt({ secret: { value: MARK } }) }, routes: [route({ auth: ['j'] })] }],
    ['session secrets', { authenticators: { s: { type: 'session', secrets: [MARK], subjectPath: 'u', store: { type: 'redis' } } }, routes: [route({ auth: ['s'] })] }],
    ['admin token in an unknown field', { admin: { port: 1, tokne: MARK }, routes: [route()] }],
    ['admin token beside a bad port', { admin: { port: 'x', token: MARK }, routes: [route()] }],
    ['redis url with a password', { redis: { url: `http://user:${MARK}@h:6379` }, routes: [route()] }],
    ['upstream with a password', { routes: [route({ upstream: `http://user:${MARK}@h` })] }],
    ['api key hash', { authenticators: { k: { type: 'apiKey', from: ['bearer'], keys: [{ sha256: MARK, subject: 's' }] } }, routes: [route({ auth: ['k'] })] }],
    ['client secret of a wrong type', { authenticators: { i: { type: 'introspection', from: ['bearer'], url: 'http://h', clientSecret: 42, extra: MARK } }, routes: [route({ auth: ['i'] })] }],
    ['assertion key', { routes: [route({ assertion: { key: MARK } })] }],
    ['sticky secret beside an unknown field', { routes: [route({ sticky: { secret: MARK, extra: 1 } })] }],
    ['algorithm named like a secret', { authenticators: { j: jwt({ algorithms: [MARK] }) }, routes: [route({ auth: ['j'] })] }],
    ['unknown type', { authenticators: { j: { type: MARK, secret: MARK } }, routes: [route({ auth: ['j'] })] }],
  ];
  for (const [name, input, options] of configs) {
    let err: unknown;
    try {
      validateConfig(input, { env: {}, ...options });
    } catch (e) {
      err = e;
    }
    t.type(err, ConfigError, `${name}: refused`);
    const problems = (err as ConfigError).problems;
    t.ok(problems.length > 0, `${name}: has problems`);
    t.notOk(problems.some((p) => p.includes(MARK)) || (err as Error).message.includes(MARK), `${name}: no secret in ${JSON.stringify(problems)}`);
  }
});

t.test('a secret in a config file that is not valid JSON does not leak', async (t) => {
  // V8's "Unexpected token" message quotes the text around the error: it must not reach the problem.
  const MARK = 's3cr3t-abcdefghijklmnopqrstuvwxyz0123456789';
  const dir = t.testdir({
    'gateway.json': `{"authenticators":{"j":{"type":"jwt","from":["bearer"],"secret": ${MARK}, "algorithms":["HS256"]}}}`,
  });
  let problems: readonly string[] = [];
  try {
    loadConfigFile(join(dir, 'gateway.json'), { env: {} });
  } catch (err) {
    problems = (err as ConfigError).problems;
  }
  t.equal(problems.length, 1);
  t.match(problems[0], /^\(root\): .*gateway\.json is not valid JSON/);
  t.notOk(problems[0]!.includes(MARK.slice(0, 8)), `no part of the secret in: ${problems[0]}`);
});

t.test('loadConfigFile: a missing file and invalid JSON', async (t) => {
  const dir = t.testdir({ 'bad.json': '{ "routes": [ ', 'empty.json': '' });
  for (const [file, pattern] of [
    [join(dir, 'nope.json'), `(root): cannot read ${join(dir, 'nope.json')}: ENOENT`],
    [join(dir, 'bad.json'), new RegExp(`^\\(root\\): ${join(dir, 'bad.json').replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} is not valid JSON`)],
    [join(dir, 'empty.json'), new RegExp(`^\\(root\\): .*empty\\.json is not valid JSON`)],
  ] as const) {
    let err: unknown;
    try {
      loadConfigFile(file, { env: {} });
    } catch (e) {
      err = e;
    }
    t.type(err, ConfigError, file);
    const problems = (err as ConfigError).problems;
    t.equal(problems.length, 1);
    if (typeof pattern === 'string') t.equal(problems[0], pattern);
    else t.match(problems[0], pattern);
  }
  t.throws(() => readConfigFile(dir), ConfigError, 'a directory cannot be read as a config');
});

t.test('the shipped gateway.schema.json is configJsonSchema() (regenerate: npm run build && npm run schema)', async (t) => {
  const shipped = JSON.parse(readFileSync(new URL('gateway.schema.json', ROOT), 'utf8'));
  t.same(shipped, configJsonSchema());
  t.equal(shipped.$id, 'https://portcullis.dev/gateway.schema.json');
  t.equal(shipped.additionalProperties, false, 'unknown top-level fields are refused by editors too');
});

t.test('the shipped gateway.config.json', async (t) => {
  const file = new URL('gateway.config.json', ROOT).pathname;
  const raw = JSON.parse(readFileSync(file, 'utf8'));
  t.equal(raw.$schema, './gateway.schema.json', 'points editors at the shipped schema');

  const env = { JWT_SECRET: 'a-jwt-secret-of-at-least-32-bytes-0123', ADMIN_TOKEN: 'admin-token' };
  for (const sidecar of [true, false]) {
    const config = loadConfigFile(file, { env, sidecar });
    t.same(config.listen, { host: '127.0.0.1', port: 8080 }, `sidecar ${sidecar}`);
    t.same(config.admin, { host: '127.0.0.1', port: 9090, token: 'admin-token' });
    t.equal((config.authenticators!['user-jwt'] as { secret: string }).secret, env.JWT_SECRET);
    t.equal(config.routes[0]!.upstream, 'ws://127.0.0.1:9001');
  }

  let err: unknown;
  try {
    loadConfigFile(file, { env: { ADMIN_TOKEN: 'admin-token' }, sidecar: true });
  } catch (e) {
    err = e;
  }
  t.type(err, ConfigError);
  const problems = (err as ConfigError).problems;
  t.ok(problems.includes('authenticators.user-jwt.secret: environment variable JWT_SECRET is not set'), problems.join('\n'));
  t.ok(problems.every((p) => p.startsWith('authenticators.user-jwt.secret: ')), 'nothing else is wrong');

  let err2: unknown;
  try {
    loadConfigFile(file, { env: { JWT_SECRET: 'too-short' , ADMIN_TOKEN: 'a' } });
  } catch (e) {
    err2 = e;
  }
  t.same((err2 as ConfigError).problems, ['authenticators.user-jwt.secret: must be at least 32 bytes']);
});
