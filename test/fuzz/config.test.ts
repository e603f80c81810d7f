// Fuzzing config files (issue 7): fast-check mutations of a valid, feature-rich config through
// `validateConfig` and `createGateway` (sidecar and embedded): fields deleted, of the wrong type, huge
// (long strings, big arrays, 1e308, deep nesting), unknown fields (prototype names among them), `${VAR}`
// oddities, odd URLs and names, and secret values moved into other fields.
//
// Properties: the result is a valid config or a ConfigError, never another exception; every problem is one
// line, `path.to.field: message`, its path made of the config's own keys (or the name of a field it lacks);
// no secret value (from the config or the environment) in the message, the problems or the stack; a valid
// result validates to itself and builds a gateway (which closes cleanly); the URLs of a valid config parse.
import { Writable } from 'node:stream';
import fc from 'fast-check';
import t from 'tap';
import { ConfigError } from '../../src/errors.js';
import { createGateway } from '../../src/gateway.js';
import { validateConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/log.js';
import { check, count, leaked, stats } from './harness.js';

const ENV = {
  FUZZ_JWT_SECRET: 'jwt-secret-from-env-0123456789abcdef-XYZ',
  FUZZ_ADMIN_TOKEN: 'admin-token-from-env-0123456789-QQ',
  FUZZ_EMPTY: '',
  FUZZ_PORT: '8080',
  FUZZ_NOT_A_NUMBER: 'eighty',
  FUZZ_TRUE: 'true',
};
const SESSION_SECRET = 'session-secret-literal-0123456789abcdef';
const CLIENT_SECRET = 'client-secret-literal-0123456789-KK';
const ASSERTION_KEY = 'assertion-key-literal-0123456789abcdef';
const STICKY_SECRET = 'sticky-secret-literal-0123456789-MM';
/** Every secret value the config holds or the environment gives it. */
const SECRETS: Record<string, string> = {
  'the jwt secret (env)': ENV.FUZZ_JWT_SECRET,
  'the admin token (env)': ENV.FUZZ_ADMIN_TOKEN,
  'the session secret': SESSION_SECRET,
  'the introspection client secret': CLIENT_SECRET,
  'the assertion key': ASSERTION_KEY,
  'the sticky secret': STICKY_SECRET,
};

const BASE = {
  $schema: './gateway.schema.json',
  listen: { host: '127.0.0.1', port: '${FUZZ_PORT}' },
  admin: { host: '127.0.0.1', port: 9090, token: '${FUZZ_ADMIN_TOKEN}' },
  workers: 1,
  log: { level: 'info' },
  limits: { maxConnections: 1000, handshakeTimeoutMs: 5000, maxHeaderBytes: 16384 },
  drain: { timeoutMs: 30000, spreadMs: 0 },
  watch: false,
  authenticators: {
    'user-jwt': { type: 'jwt', from: ['bearer', 'query:access_token'], secret: '${FUZZ_JWT_SECRET}', algorithms: ['HS256'], issuer: 'https://issuer.example', audience: ['chat'], clockToleranceSec: 5, maxAgeSec: 3600, requiredClaims: ['sub'] },
    keys: { type: 'apiKey', from: ['header:x-api-key'], keys: [{ sha256: 'a'.repeat(64), subject: 'svc', claims: { role: 'svc' } }] },
    web: { type: 'session', cookie: 'connect.sid', secrets: [SESSION_SECRET], store: { type: 'memory' }, subjectPath: 'passport.user' },
    intro: { type: 'introspection', from: ['header:x-opaque'], url: 'http://127.0.0.1:1/introspect', clientId: 'gw', clientSecret: CLIENT_SECRET, cacheTtlSec: 30, timeoutMs: 2000 },
    fwd: { type: 'forwardAuth', url: 'http://127.0.0.1:1/auth', copyHeaders: ['x-auth-request-user'], timeoutMs: 2000 },
  },
  routes: [
    {
      path: '/chat', auth: ['user-jwt', 'keys'], upstream: 'ws://127.0.0.1:9001', mode: 'relay', origins: ['https://app.example.com'], require: { scope: 'chat' },
      rateLimit: { perIp: '20/s', perSubject: '5/s', burst: 40 }, maxConnectionsPerSubject: 10, heartbeatMs: 20000, maxPayload: 65536, refresh: { graceSec: 25 },
      assertion: { header: 'x-auth-assertion', key: ASSERTION_KEY, ttlSec: 60 }, forwardIdentity: { subject: 'x-user', claims: 'x-claims' },
    },
    { path: '/live/*', auth: ['web', 'fwd'], upstream: ['ws://127.0.0.1:9002', 'ws://127.0.0.1:9003'], balance: 'least-connections', origins: ['https://app.example.com', '*.example.com'], sticky: { secret: STICKY_SECRET }, http: true, enforceExpiry: '${FUZZ_TRUE}' },
    { path: '/intro', auth: ['intro'], upstream: 'wss://127.0.0.1:9004', tlsVerify: false, revalidateSec: 30, rejectMode: 'close', host: 'gw.example.com' },
  ],
};

// ---------------------------------------------------------------------------------------------------------
// The config as a tree of paths

type Path = (string | number)[];

/** Every path in a JSON tree (containers and leaves), root excluded. */
function paths(node: unknown, prefix: Path = []): Path[] {
  if (node === null || typeof node !== 'object') return [];
  const out: Path[] = [];
  for (const [k, v] of Object.entries(node)) {
    const key = Array.isArray(node) ? Number(k) : k;
    out.push([...prefix, key], ...paths(v, [...prefix, key]));
  }
  return out;
}
const ALL_PATHS = paths(BASE);
const STRING_PATHS = ALL_PATHS.filter((p) => typeof at(BASE, p) === 'string');
const OBJECT_PATHS: Path[] = [[], ...ALL_PATHS.filter((p) => { const v = at(BASE, p); return v !== null && typeof v === 'object' && !Array.isArray(v); })];

function at(root: unknown, path: Path): unknown {
  let node = root;
  for (const key of path) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<string | number, unknown>)[key];
  }
  return node;
}

/** Sets (or, with `remove`, deletes) the value at `path`, creating nothing: a missing parent is skipped. */
function put(root: unknown, path: Path, value: unknown, remove = false): void {
  const parent = at(root, path.slice(0, -1));
  if (parent === null || typeof parent !== 'object') return;
  const key = path.at(-1)!;
  if (remove) {
    if (Array.isArray(parent) && typeof key === 'number') parent.splice(key, 1);
    else delete (parent as Record<string | number, unknown>)[key];
  } else {
    // defineProperty: "__proto__" becomes an own field, as JSON.parse makes it.
    Object.defineProperty(parent, key, { value, enumerable: true, writable: true, configurable: true });
  }
}

const deep = (depth: number, array: boolean): unknown => {
  let node: unknown = array ? [] : {};
  for (let i = 0; i < depth; i++) node = array ? [node] : { a: node };
  return node;
};

// ---------------------------------------------------------------------------------------------------------
// Mutations

const ENV_ODDITIES = [
  '${', '${}', '$}', '${FUZZ_UNSET}', '${FUZZ_UNSET:-}', '${FUZZ_UNSET:-fallback}', '$${FUZZ_JWT_SECRET}', '${1X}', '${FUZZ_UNSET:-${FUZZ_PORT}}',
  '${FUZZ_EMPTY}', '${FUZZ_EMPTY:-x}', '${ FUZZ_PORT }', '${fuzz_port}', '\\${FUZZ_PORT}', '${FUZZ_PORT}${FUZZ_PORT}', 'x${FUZZ_JWT_SECRET}x', '${FUZZ_JWT_SECRET:-d}',
  '${FUZZ_NOT_A_NUMBER}', '${FUZZ_ADMIN_TOKEN}', '${FUZZ_JWT_SECRET}', '${PATH}', '${FUZZ_UNSET:-${}', '${FUZZ_UNSET:-}}',
];
const ODD_STRINGS = [
  'ws://[', 'ws://127.0.0.1:99999', 'ws://%', 'ws://@', 'wss://[::1]:x', 'ws://:80', 'ws://a b', 'WS://X', 'ws:/x', 'http://[', 'http://a:99999', 'redis://[', 'rediss://:',
  '/', '/*', '/x/*/y', '//', '/%', '/\u0000', '*', '*.', '*.example.com', 'https://[', 'null', 'query:', 'header:', 'cookie:', 'protocol:', 'bearer:x', 'query:a b',
  '0/s', '1e3/s', '99999999999999999999/s', '0.0001/h', '-1/s', '__proto__', '__proto__.x', 'constructor.name', '..', '.', 'a b', 'x\r\ny', 'a;b', 'file:', 'file:/nonexistent',
  'file:../../etc/passwd', '-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----', 'ⅰⅱⅲ', '\ud800', 'HS256', 'none', 'silent', 'relay', 'local', 'memory',
];
const wrongValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 3, arbitrary: fc.constantFrom<unknown>(null, true, false, 0, -1, 1.5, 1e308, -1e308, 2 ** 53 + 1, '', ' ', 'x', [], {}, [[]], { a: 1 }, NaN, Infinity, -Infinity, -0, '0', '1e3', ' 80', '0x50') },
  { weight: 2, arbitrary: fc.constantFrom(...ENV_ODDITIES) },
  { weight: 2, arbitrary: fc.constantFrom(...ODD_STRINGS) },
  { weight: 1, arbitrary: fc.constantFrom<unknown>('x'.repeat(100_000), Array.from({ length: 10_000 }, () => 1), Object.fromEntries(Array.from({ length: 2_000 }, (_, i) => [`k${i}`, i]))) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom(10, 100, 1000, 3000), fc.boolean()).map(([d, a]) => deep(d, a)) },
  { weight: 1, arbitrary: fc.constantFrom(...Object.values(SECRETS)) },
);
const unknownKey = fc.oneof(
  { weight: 4, arbitrary: fc.stringMatching(/^[A-Za-z_$][A-Za-z0-9_$-]{0,15}$/) },
  { weight: 2, arbitrary: fc.constantFrom('__proto__', 'constructor', 'toString', 'valueOf', 'hasOwnProperty', 'prototype', '', 'a.b', '$schema', 'ключ', '0', '-1', 'a b', 'routes', 'type') },
  { weight: 1, arbitrary: fc.constantFrom('a:b', 'a\nb', 'x\r\ny: z') },
);

type Op =
  | { op: 'delete'; path: Path }
  | { op: 'set'; path: Path; value: unknown }
  | { op: 'unknown'; path: Path; key: string; value: unknown }
  | { op: 'secret'; path: Path; value: string }
  | { op: 'auth-name'; route: number; name: string }
  | { op: 'routes'; how: 'empty' | 'many' | 'dup' }
  | { op: 'deep'; path: Path; depth: number; array: boolean }
  | { op: 'url'; field: 'upstream' | 'upstream-list' | 'introspection' | 'forwardAuth' | 'jwksUri' | 'redis'; url: string };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...ALL_PATHS).map((path): Op => ({ op: 'delete', path })) },
  { weight: 6, arbitrary: fc.tuple(fc.constantFrom(...ALL_PATHS), wrongValue).map(([path, value]): Op => ({ op: 'set', path, value })) },
  { weight: 3, arbitrary: fc.tuple(fc.constantFrom(...OBJECT_PATHS), unknownKey, fc.jsonValue({ maxDepth: 1 })).map(([path, key, value]): Op => ({ op: 'unknown', path, key, value })) },
  // A secret written where it does not belong (not an auth list: a name is not where anyone puts a secret).
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.constantFrom(...STRING_PATHS.filter((p) => !p.includes('auth'))), fc.constantFrom(...Object.values(SECRETS), '${FUZZ_JWT_SECRET}', 'file:${FUZZ_ADMIN_TOKEN}'))
      .map(([path, value]): Op => ({ op: 'secret', path, value })),
  },
  { weight: 1, arbitrary: fc.tuple(fc.nat({ max: 2 }), fc.constantFrom('toString', 'constructor', '__proto__', 'hasOwnProperty', 'valueOf', 'isPrototypeOf', 'nope', '')).map(([route, name]): Op => ({ op: 'auth-name', route, name })) },
  { weight: 1, arbitrary: fc.constantFrom<'empty' | 'many' | 'dup'>('empty', 'many', 'dup').map((how): Op => ({ op: 'routes', how })) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...ALL_PATHS), fc.constantFrom(1000, 4000, 8000), fc.boolean()).map(([path, depth, array]): Op => ({ op: 'deep', path, depth, array })) },
  // A URL field given something that looks like a URL of its scheme but does not parse (or does).
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.constantFrom('upstream', 'upstream-list', 'introspection', 'forwardAuth', 'jwksUri', 'redis') , fc.constantFrom('[', 'host:99999', '%', '[::1', 'a b', '127.0.0.1:9001/ok', 'h:-1', 'xn--'))
      .map(([field, rest]): Op => {
        const scheme = field.startsWith('upstream') ? 'ws://' : field === 'redis' ? 'redis://' : 'http://';
        return { op: 'url', field, url: scheme + rest };
      }),
  },
);

function apply(config: Record<string, unknown>, op: Op): void {
  switch (op.op) {
    case 'delete':
      return put(config, op.path, undefined, true);
    case 'set':
    case 'secret':
      return put(config, op.path, op.value);
    case 'unknown':
      return put(config, [...op.path, op.key], op.value);
    case 'auth-name': {
      const route = (config.routes as { auth?: unknown }[] | undefined)?.[op.route];
      if (route && Array.isArray(route.auth)) route.auth[0] = op.name;
      return;
    }
    case 'routes': {
      const routes = config.routes;
      if (!Array.isArray(routes)) return;
      if (op.how === 'empty') config.routes = [];
      else if (op.how === 'dup') routes.push(routes[0]); // (the same object twice: validation copies, and it may be too deep to clone)
      else config.routes = Array.from({ length: 30 }, (_, i) => ({ ...(routes[i % routes.length] as object), path: `/r${i}` }));
      return;
    }
    case 'deep':
      return put(config, op.path, deep(op.depth, op.array));
    case 'url': {
      // (Earlier operations may have replaced any of these with something that is not an object.)
      const object = (v: unknown) => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined);
      const auths = object(config.authenticators);
      const routes = Array.isArray(config.routes) ? config.routes : [];
      const route0 = object(routes[0]);
      const route1 = object(routes[1]);
      if (op.field === 'upstream' && route0) route0.upstream = op.url;
      if (op.field === 'upstream-list' && route1) route1.upstream = ['ws://127.0.0.1:9002', op.url];
      if (op.field === 'introspection' && object(auths?.intro)) object(auths?.intro)!.url = op.url;
      if (op.field === 'forwardAuth' && object(auths?.fwd)) object(auths?.fwd)!.url = op.url;
      if (op.field === 'jwksUri' && object(auths?.['user-jwt'])) Object.assign(object(auths?.['user-jwt'])!, { secret: undefined, jwksUri: op.url, algorithms: ['RS256'] });
      // (Only URLs that cannot reach anything: a valid one would make createGateway connect.)
      if (op.field === 'redis' && !parses(op.url)) config.redis = { url: op.url };
      return;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Checks

/**
 * Whether `text` starts with `path: ` where path is `(root)` or segments joined by "." that walk the config
 * as written (or name a field it lacks, as `redis.url` when redis is absent).
 */
function startsWithPath(text: string, node: unknown): boolean {
  if (text.startsWith('(root): ')) return true;
  const walk = (rest: string, here: unknown): boolean => {
    // A key holding control characters is printed as a JSON string: `limits."a\nb": unknown field`.
    const quoted = /^"(?:[^"\\]|\\.)*"/.exec(rest)?.[0];
    if (quoted !== undefined) {
      const key = JSON.parse(quoted) as string;
      const after = rest.slice(quoted.length);
      const own = here !== null && typeof here === 'object' && Object.prototype.hasOwnProperty.call(here, key);
      if (own && /[\x00-\x1f\x7f-\x9f\u2028\u2029]/.test(key)) {
        if (after.startsWith(': ') && after.length > 2) return true;
        if (after.startsWith('.') && walk(after.slice(1), (here as Record<string, unknown>)[key])) return true;
      }
    }
    // Every place a segment could end: a "." (another segment follows) or ": " (the message follows).
    for (let i = 0; i <= rest.length; i++) {
      const ends = rest.startsWith(': ', i) ? 'message' : rest[i] === '.' ? 'segment' : undefined;
      if (!ends) continue;
      const key = rest.slice(0, i);
      const own = here !== null && typeof here === 'object' && Object.prototype.hasOwnProperty.call(here, key);
      if (!own && !/^[A-Za-z0-9_$-]+$/.test(key)) continue;
      if (ends === 'message' && rest.length > i + 2) return true;
      if (ends === 'segment' && walk(rest.slice(i + 1), own ? (here as Record<string, unknown>)[key] : undefined)) return true;
    }
    return false;
  };
  return walk(text, node);
}

/** The deepest nesting of a value. */
function depthOf(value: unknown, limit = 100_000): number {
  let depth = 0;
  let level: unknown[] = [value];
  while (level.length > 0 && depth < limit) {
    const next: unknown[] = [];
    for (const v of level) if (v !== null && typeof v === 'object') next.push(...Object.values(v).slice(0, 50));
    if (next.length === 0) break;
    depth++;
    level = next.slice(0, 200);
  }
  return depth;
}

/** Whether an own key anywhere in the tree passes `test` (iterative: the tree may be 30 000 deep). */
function hasKey(value: unknown, test: (key: string) => boolean): boolean {
  const stack: unknown[] = [value];
  for (let budget = 200_000; stack.length > 0 && budget > 0; budget--) {
    const node = stack.pop();
    if (node === null || typeof node !== 'object') continue;
    for (const [k, v] of Object.entries(node)) {
      if (test(k)) return true;
      stack.push(v);
    }
  }
  return false;
}

/** The URLs of a validated config, which the gateway will parse. */
function urlsOf(config: Record<string, unknown>): [string, string][] {
  const out: [string, string][] = [];
  const redis = (config.redis as { url?: string } | undefined)?.url;
  if (redis) out.push(['redis.url', redis]);
  for (const [name, auth] of Object.entries((config.authenticators ?? {}) as Record<string, Record<string, unknown>>)) {
    for (const field of ['url', 'jwksUri']) if (typeof auth[field] === 'string') out.push([`authenticators.${name}.${field}`, auth[field] as string]);
  }
  (config.routes as Record<string, unknown>[]).forEach((route, i) => {
    const up = route.upstream;
    for (const [j, url] of (Array.isArray(up) ? up : up === undefined ? [] : [up]).entries()) out.push([`routes.${i}.upstream${Array.isArray(up) ? `.${j}` : ''}`, url as string]);
  });
  return out;
}

const parses = (url: string) => {
  try {
    new URL(url);
    return true;
  } catch {
    return false;
  }
};

t.test('config mutations: a valid config or one ConfigError, line per problem, dotted paths, no secret', async (t) => {
  Object.assign(process.env, ENV);
  t.teardown(() => {
    for (const name of Object.keys(ENV)) delete process.env[name];
  });
  const silent = () => createLogger('silent', new Writable({ write: (_c, _e, done) => done() }));
  t.doesNotThrow(() => validateConfig(BASE, { sidecar: true }), 'the base config is valid (sidecar)');
  const s = stats('config mutations');

  await check(s, 200, [fc.array(opArb, { minLength: 1, maxLength: 4 }), fc.constantFrom('validate', 'validate-sidecar', 'createGateway')], async (ops, how) => {
    const config = structuredClone(BASE) as Record<string, unknown>;
    for (const op of ops) apply(config, op);
    let result: Record<string, unknown> | undefined;
    let thrown: unknown;
    try {
      if (how === 'createGateway') {
        const gateway = createGateway(config, { logger: silent() });
        result = gateway.config as unknown as Record<string, unknown>;
        await gateway.close();
      } else {
        result = validateConfig(config, { sidecar: how === 'validate-sidecar' }) as unknown as Record<string, unknown>;
      }
    } catch (err) {
      thrown = err;
    }
    const wrong: string[] = [];
    const hasProto = hasKey(config, (k) => k === '__proto__');
    const protoName = ops.some((o) => o.op === 'auth-name' && o.name !== 'nope' && o.name !== '');

    if (thrown === undefined) {
      count(s, 'valid', `valid (${how})`);
      if (hasProto) wrong.push('valid with an own "__proto__" field');
      if (protoName) wrong.push('valid with an Object.prototype member as an authenticator name');
      // (JSON.stringify recurses: a config that deep is compared no further.)
      const again = depthOf(result) > 1000 ? '' : (() => {
        try {
          return JSON.stringify(validateConfig(result, { sidecar: how === 'validate-sidecar' }));
        } catch (err) {
          return `throws ${(err as Error).message}`;
        }
      })();
      // No environment value here holds "${", so a reference left in the result was never expanded.
      const leftover = depthOf(result) <= 1000 && /\$\{[A-Za-z_]/.test(JSON.stringify(result));
      if (leftover) wrong.push(`a reference left unexpanded: ${JSON.stringify(result).match(/.{0,40}\$\{[A-Za-z_].{0,40}/)?.[0]}`);
      else if (depthOf(result) <= 1000 && again !== JSON.stringify(result)) wrong.push(`a validated config does not validate to itself: ${again.slice(0, 200)}`);
      for (const [where, url] of urlsOf(result!)) if (!parses(url)) wrong.push(`${where} does not parse as a URL: ${JSON.stringify(url)}`);
    } else if (!(thrown instanceof ConfigError)) {
      const err = thrown as Error;
      count(s, 'other error', `${err.name}: ${err.message.slice(0, 60)}`);
      wrong.push(`threw ${err.name}: ${err.message.slice(0, 200)}`);
    } else {
      count(s, 'ConfigError', `ConfigError (${thrown.problems.length === 1 ? '1 problem' : `${Math.min(thrown.problems.length, 5)}${thrown.problems.length > 5 ? '+' : ''} problems`})`);
      if (thrown.problems.length === 0) wrong.push('a ConfigError without problems');
      if (hasProto && !thrown.problems.some((p) => p.includes('__proto__'))) wrong.push('an own "__proto__" field is not reported');
      for (const problem of thrown.problems) {
        if (/[\r\n]/.test(problem)) wrong.push(`a problem over several lines: ${JSON.stringify(problem.slice(0, 200))}`);
        else if (!startsWithPath(problem, config)) wrong.push(`not "path.to.field: message": ${JSON.stringify(problem.slice(0, 200))}`);
      }
      for (const [text, where] of [[thrown.message, 'message'], [thrown.stack ?? '', 'stack'], [thrown.problems.join('\n'), 'problems']] as const) {
        const found = leaked(text, SECRETS);
        if (found.length === 0) continue;
        // An authenticator name is quoted on purpose ('unknown authenticator "x"'): a name is not a secret.
        const quotedBy = thrown.problems.filter((p) => leaked(p, SECRETS).length > 0 && !/^routes\.\d+\.auth\.\d+: unknown authenticator "/.test(p));
        if (quotedBy.length > 0) wrong.push(`the ${where} holds ${found.join(', ')}: ${JSON.stringify(quotedBy.map((p) => p.slice(0, 120)))}`);
      }
    }
    if (wrong.length > 0) throw new Error(`${wrong.join('\n')}\nops: ${JSON.stringify(ops, (_k, v: unknown) => (typeof v === 'string' && v.length > 80 ? `${v.slice(0, 80)}…(${v.length})` : Array.isArray(v) && v.length > 20 ? `[array of ${v.length}]` : v)).slice(0, 1500)}`);
  });
  t.comment(`${s.cases} cases: ${JSON.stringify(s.statuses)}`);
});
