// SPEC 6.5 and 8: tokens, cookies, `Authorization` values and secrets never appear in the logs (at ANY
// level: every gateway here logs at `trace`), in an error message, or in a response, on the accepted, the
// rejected and the failure paths of every authenticator and feature. Real sockets, real HTTP backends, a
// real redis-server; no mocks.
//
// Every secret the test makes is registered with a name; every log, error message, close reason and
// response it sees is scanned for each of them in several shapes (as is, URL-encoded, base64, and the last
// 16 characters of a long one, which catch a value cut short at the front), where it happens and once
// more, all against all, at the end. The scanner is shown to find a secret that IS there first.
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import type { WebSocket } from 'ws';
import { createAdminServer } from '../../src/admin.js';
import { hashApiKey } from '../../src/auth/api-key.js';
import { signSessionId } from '../../src/auth/session.js';
import { ConfigError } from '../../src/errors.js';
import { createGateway, type GatewayOptions } from '../../src/gateway.js';
import { echo, openClient } from '../helpers/client.js';
import { captureLog, startGateway, startSidecar, type TestGateway } from '../helpers/gateway.js';
import { eventually, freePort, listenLocal } from '../helpers/net.js';
import { startRedis } from '../helpers/redis.js';
import { SECRET, hs256, jwtAuth } from '../helpers/tokens.js';
import { rawUpgrade, type RawResponse } from '../helpers/upgrade.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';

// ---------------------------------------------------------------------------------------------------------
// The scanner

interface Secret {
  readonly name: string;
  readonly value: string;
}

/** Every secret made so far (tokens, keys, cookies, session ids, Authorization values...). */
const SECRETS: Secret[] = [];

const rnd = (bytes = 12) => randomBytes(bytes).toString('hex');

/** Registers a secret under `name` and returns its value. */
function secret(name: string, value: string): string {
  SECRETS.push({ name, value });
  return value;
}

/** The shapes a secret may take in text: as is, URL-encoded, base64 / base64url, and (when long) its tail. */
function shapes(value: string): string[] {
  const out = new Set([value, encodeURIComponent(value), Buffer.from(value).toString('base64'), Buffer.from(value).toString('base64url')]);
  if (value.length >= 24) out.add(value.slice(-16));
  return [...out];
}

/** The names of the secrets of `secrets` found in `text`, in any shape. */
function found(text: string, secrets: readonly Secret[] = SECRETS): string[] {
  return secrets.filter((s) => shapes(s.value).some((shape) => text.includes(shape))).map((s) => s.name);
}

/** Something the test saw (a log, an error message, a response), kept for the final all-against-all scan. */
interface Exhibit {
  readonly where: string;
  readonly text: () => string;
  /** Secret values the protocol puts there on purpose (the ticket in the POST /tickets answer). */
  readonly allowed: readonly string[];
  /** Set when a leak is known and reported (`{ todo }`), so the final scan says so too. */
  readonly todo?: string;
}

const EXHIBITS: Exhibit[] = [];

interface CleanOptions {
  allowed?: readonly string[];
  todo?: string;
}

/** Asserts that no registered secret is in `text`, and keeps it for the final scan. */
function clean(t: Test, where: string, text: string, options: CleanOptions = {}): void {
  const allowed = options.allowed ?? [];
  EXHIBITS.push({ where, text: () => text, allowed, ...(options.todo !== undefined && { todo: options.todo }) });
  const leaked = found(text, SECRETS.filter((s) => !allowed.includes(s.value)));
  t.same(leaked, [], `${where}: no secret in it`, options.todo !== undefined ? { todo: options.todo } : {});
}

/** What a client got over plain HTTP: status line, headers and body, as text. */
async function httpText(res: Response): Promise<{ status: number; body: string; text: string }> {
  const body = await res.text();
  const headers = [...res.headers].map(([k, v]) => `${k}: ${v}`).join('\n');
  return { status: res.status, body, text: `${res.status} ${res.statusText}\n${headers}\n\n${body}` };
}

// ---------------------------------------------------------------------------------------------------------
// Gateways logging at trace

interface TraceGateway extends TestGateway {
  /** The name the gateway's log goes by in the final scan. */
  readonly name: string;
}

/**
 * startGateway / startSidecar (helpers/gateway.ts) with a logger at `trace` whose lines this returns;
 * the log is kept for the final scan. `todo`: a known leak in this gateway's log.
 */
async function traceGateway(
  t: Test,
  name: string,
  config: unknown,
  options: GatewayOptions & { sidecar?: boolean; todo?: string } = {},
): Promise<TraceGateway> {
  const { sidecar, todo, ...rest } = options;
  const { logger, lines } = captureLog('trace');
  t.equal(logger.level, 'trace', `${name}: the logger is at trace`);
  const gw = sidecar ? await startSidecar(t, config, { ...rest, logger }) : await startGateway(t, config, { ...rest, logger });
  const text = () => lines.join('\n');
  EXHIBITS.push({ where: `the log of ${name}`, text, allowed: [], ...(todo !== undefined && { todo }) });
  // What the gateway tells its application about refusals must be as clean as what it logs.
  gw.gateway.on('rejected', (_req, status, reason, err) => {
    EXHIBITS.push({ where: `${name}: a 'rejected' event`, text: () => `${status} ${reason} ${err.message}`, allowed: [] });
  });
  return { ...gw, name, logs: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>), logText: text };
}

let requests = 0;
/** A request id the gateway keeps (SPEC 9: 1-128 of [A-Za-z0-9._:-]), to find the request's log lines. */
const nextId = (tag: string) => `ls-${tag.replace(/[^A-Za-z0-9]+/g, '-')}-${++requests}`;

/** The log line `msg` for request `reqId` (waited for), matched against `expected`. */
async function logged(t: Test, gw: TraceGateway, reqId: string, expected: Record<string, unknown> & { msg: string }): Promise<void> {
  const line = () => gw.logs().find((l) => l.reqId === reqId && l.msg === expected.msg);
  await eventually(() => line() !== undefined, 5000, `log line "${expected.msg}" for ${reqId}`);
  t.match(line(), expected, `${reqId}: logged "${expected.msg}" ${JSON.stringify(expected)}`);
}

interface Env {
  gw: TraceGateway;
  upstream: EchoUpstream;
}

/** An upgrade over a raw socket with its own X-Request-Id; its response is scanned. */
async function upgrade(t: Test, env: Env, what: string, path: string, headers: Record<string, string> = {}): Promise<{ res: RawResponse; id: string }> {
  const id = nextId(env.gw.name);
  const res = await rawUpgrade(env.gw.port, path, { 'X-Request-Id': id, ...headers }, { timeoutMs: 6000 });
  clean(t, `${env.gw.name} ${what}: the response`, res.raw);
  return { res, id };
}

/** An upgrade that must be accepted (101, reached the upstream, logged as accepted). */
async function accept(t: Test, env: Env, what: string, path: string, headers: Record<string, string>, subject: string | null): Promise<RawResponse> {
  const before = env.upstream.seen.length;
  const { res, id } = await upgrade(t, env, what, path, headers);
  t.equal(res.status, 101, `${what}: 101`);
  t.ok(env.upstream.seen.length > before, `${what}: reached the upstream`);
  await logged(t, env.gw, id, { msg: 'upgrade accepted', status: 101, subject });
  return res;
}

/** An upgrade that must be refused with `status` and `code` (and nothing reaching the upstream), and logged so. */
async function refuse(
  t: Test,
  env: Env,
  what: string,
  path: string,
  headers: Record<string, string>,
  status: number,
  code: string,
  description: string,
): Promise<RawResponse> {
  const before = env.upstream.seen.length;
  const { res, id } = await upgrade(t, env, what, path, headers);
  t.equal(res.status, status, `${what}: ${status}`);
  t.equal((JSON.parse(res.body || 'null') as { error_description?: string } | null)?.error_description, description, `${what}: "${description}"`);
  t.ok(res.closed, `${what}: the socket was closed`);
  t.equal(env.upstream.seen.length, before, `${what}: nothing reached the upstream`);
  await logged(t, env.gw, id, { msg: 'upgrade rejected', status, code });
  return res;
}

// ---------------------------------------------------------------------------------------------------------
// Credentials

const now = () => Math.floor(Date.now() / 1000);
const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
const ORIGIN = 'https://app.example.com';
const OTHER_SECRET = 'another-secret-0123456789abcdef-0123456';

secret('the HS256 secret', SECRET);
const ADMIN_TOKEN = secret('the admin token', `admin-${rnd()}`);
const WRONG_ADMIN_TOKEN = secret('a wrong admin token', `admin-${rnd()}`);
const API_KEY = secret('the API key', `ak_${rnd(16)}`);
const WRONG_API_KEY = secret('a wrong API key', `ak_${rnd(16)}`);
const SESSION_SECRET = secret('the session secret', `session-secret-${rnd(16)}`);
const CLIENT_SECRET = secret('the introspection client secret', `client-secret-${rnd(16)}`);
const ASSERTION_KEY = secret('the assertion key', `assertion-key-${rnd(16)}`);
const BASIC = secret('the introspection Basic value', `Basic ${Buffer.from(`gateway:${CLIENT_SECRET}`).toString('base64')}`);

/** An HS256 JWT (unique: it has its own jti), registered as a secret. */
function jwt(name: string, payload: Record<string, unknown> = {}, key = SECRET): string {
  return secret(name, hs256({ sub: 'alice', jti: randomUUID(), ...payload }, key));
}

/** `Authorization: Bearer <token>`, the whole header value registered as a secret too. */
function bearer(name: string, token: string): Record<string, string> {
  return { Authorization: secret(`${name} (Authorization value)`, `Bearer ${token}`) };
}

/** An opaque token, registered. */
const opaque = (name: string) => secret(name, `opaque-${rnd(16)}`);

/** A signed express-session cookie value (`s:<id>.<sig>`) for a new session id; both registered. */
function sessionCookie(name: string, key = SESSION_SECRET): { id: string; value: string; header: string } {
  const id = secret(`${name}: the session id`, `sid-${rnd(16)}`);
  const value = secret(`${name}: the session cookie`, signSessionId(id, key));
  return { id, value, header: `theme=dark; connect.sid=${encodeURIComponent(value)}` };
}

/** A session as express-session + passport store it. */
const sessionData = (user: string) => ({
  cookie: { originalMaxAge: 3_600_000, expires: new Date(Date.now() + 3_600_000).toISOString(), httpOnly: true, path: '/' },
  passport: { user },
});

/** Resolves with the next close of `ws`. */
const closeOf = (ws: WebSocket) =>
  new Promise<{ code: number; reason: string }>((resolve) => ws.once('close', (code: number, reason: Buffer) => resolve({ code, reason: reason.toString() })));

// ---------------------------------------------------------------------------------------------------------
// Real HTTP backends

/** An RFC 7662 endpoint: answers by token; records the Authorization it got. */
async function startIntrospection(t: Test, answers: Record<string, (res: ServerResponse, token: string, hit: IncomingMessage) => void>) {
  const authorizations: string[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (body += chunk));
    req.on('end', () => {
      authorizations.push(req.headers.authorization ?? '');
      const token = new URLSearchParams(body).get('token') ?? '';
      const answer = answers[token];
      if (answer) answer(res, token, req);
      else res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ active: false }));
    });
  });
  const port = await listenLocal(t, server);
  return { url: `http://127.0.0.1:${port}/oauth2/introspect`, authorizations };
}

/** A forwardAuth service: answers by the `x-case` header the client sent (the gateway passes it on). */
async function startAuthService(t: Test, cases: Record<string, (req: IncomingMessage, res: ServerResponse) => void>) {
  let hits = 0;
  const server = createServer((req, res) => {
    hits++;
    req.resume();
    cases[String(req.headers['x-case'])]?.(req, res);
  });
  const port = await listenLocal(t, server);
  return { url: `http://127.0.0.1:${port}/oauth2/auth`, hits: () => hits };
}

// =========================================================================================================

t.test('self-check: the scanner finds a secret that is there, in every shape, and a clean text is clean', async (t) => {
  const canary = { name: 'canary', value: `canary-${rnd(16)}` };
  const other = { name: 'other', value: `other-${rnd(16)}` };
  const both = [canary, other];
  t.same(found(`{"msg":"x","note":"${canary.value}"}`, both), ['canary'], 'as is');
  t.same(found(`/path?t=${encodeURIComponent(`s:${canary.value}/+=`)}`, [{ name: 'enc', value: `s:${canary.value}/+=` }]), ['enc'], 'URL-encoded');
  t.same(found(`Basic ${Buffer.from(canary.value).toString('base64')}`, both), ['canary'], 'base64');
  t.same(found(`token ...${canary.value.slice(-16)}`, both), ['canary'], 'the tail of a value cut short at the front');
  t.same(found('{"msg":"upgrade rejected","status":401,"code":"GW_ERR_SIGNATURE_INVALID"}', both), [], 'a clean line');

  // Through the real logger, at trace: a secret under an unredacted key is found; a redacted path is censored.
  const { logger, lines } = captureLog('trace');
  logger.trace({ note: `prefix ${canary.value} suffix` }, 'self-check');
  logger.trace({ token: other.value, headers: { authorization: `Bearer ${other.value}` } }, 'redacted');
  t.equal(lines.length, 2, 'trace lines are written');
  t.same(found(lines.join('\n'), both), ['canary'], 'the scanner sees the secret logged at trace; the redacted one is censored');
});

t.test('one gateway with every token authenticator, logging at trace', async (t) => {
  const upstream = await startEchoUpstream(t);
  const closedPort = await freePort();

  const INTRO_ACTIVE = opaque('introspection: an active token');
  const INTRO_INACTIVE = opaque('introspection: an inactive token');
  const INTRO_ERROR = opaque('introspection: a token the endpoint quotes in a 400 body');
  const INTRO_NOT_JSON = opaque('introspection: a token the endpoint quotes in a non-JSON 200');
  const INTRO_NO_ACTIVE = opaque('introspection: a token the endpoint quotes in a 200 without "active"');
  const INTRO_DOWN = opaque('introspection: a token for an endpoint that is down');
  const endpoint = await startIntrospection(t, {
    [INTRO_ACTIVE]: (res) => res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ active: true, sub: 'ivan', exp: now() + 3600 })),
    // A sloppy endpoint that quotes the token and the credentials it was sent.
    [INTRO_ERROR]: (res, token, req) =>
      res.writeHead(400, { 'Content-Type': 'application/json' }).end(JSON.stringify({ error: 'invalid_request', error_description: `bad token ${token} from ${req.headers.authorization}` })),
    [INTRO_NOT_JSON]: (res, token) => res.writeHead(200, { 'Content-Type': 'text/plain' }).end(`token ${token} is not known here`),
    [INTRO_NO_ACTIVE]: (res, token) => res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ token, client_secret: CLIENT_SECRET })),
  });

  const FA_BEARER = jwt('forwardAuth: the bearer token the client sends', { sub: 'fiona' });
  const FA_COOKIE = secret('forwardAuth: the oauth2-proxy cookie', `oauth2proxy-${rnd(16)}`);
  const FA_ACCESS = secret('forwardAuth: the access token the auth service hands upstream', `fa-access-${rnd(16)}`);
  const service = await startAuthService(t, {
    ok: (_req, res) =>
      res.writeHead(200, { 'X-Auth-Request-User': 'fiona', 'X-Auth-Request-Email': 'fiona@example.com', 'X-Auth-Request-Access-Token': FA_ACCESS }).end('ok'),
    deny: (req, res) =>
      res.writeHead(401, { 'WWW-Authenticate': 'Bearer realm="auth", error="invalid_token"', 'Content-Type': 'text/plain' }).end(`refused ${req.headers.authorization} ${req.headers.cookie}`),
    boom: (req, res) => res.writeHead(500, { 'Content-Type': 'text/plain' }).end(`crashed on ${req.headers.authorization} / ${req.headers.cookie}`),
    slow: () => {}, // never answers: the gateway's timeoutMs (300 on faSlow) decides
  });

  const gw = await traceGateway(
    t,
    'the main gateway',
    {
      admin: { port: 0, token: ADMIN_TOKEN },
      tickets: { path: '/tickets', ttlSec: 30 },
      authenticators: {
        jwt: jwtAuth(), // bearer, query:access_token, protocol:bearer.
        alt: jwtAuth({ from: ['header:x-token', 'cookie:tok'] }),
        key: { type: 'apiKey', from: ['header:x-api-key', 'query:api_key'], keys: [{ sha256: hashApiKey(API_KEY), subject: 'svc-a' }] },
        web: { type: 'session', secrets: [SESSION_SECRET], subjectPath: 'passport.user', store: { type: 'memory' } },
        intro: { type: 'introspection', from: ['bearer'], url: endpoint.url, clientId: 'gateway', clientSecret: CLIENT_SECRET, cacheTtlSec: 0 },
        introDown: { type: 'introspection', from: ['bearer'], url: `http://127.0.0.1:${closedPort}/introspect`, clientId: 'gateway', clientSecret: CLIENT_SECRET },
        fa: { type: 'forwardAuth', url: service.url, copyHeaders: ['X-Auth-Request-Email', 'X-Auth-Request-Access-Token'] },
        // Its own authenticator, so that only the case that must time out has a short timeout.
        faSlow: { type: 'forwardAuth', url: service.url, timeoutMs: 300 },
        once: { type: 'ticket' },
      },
      routes: [
        // First, so that POST /tickets asks the jwt authenticator first.
        { path: '/jwt', auth: ['jwt'], upstream: upstream.url, assertion: { header: 'x-auth-assertion', key: ASSERTION_KEY, ttlSec: 60 } },
        { path: '/alt', auth: ['alt'], upstream: upstream.url, origins: [ORIGIN] },
        { path: '/key', auth: ['key'], upstream: upstream.url },
        { path: '/sess', auth: ['web'], upstream: upstream.url, origins: [ORIGIN] },
        { path: '/intro', auth: ['intro'], upstream: upstream.url },
        { path: '/intro-down', auth: ['introDown'], upstream: upstream.url },
        { path: '/fa', auth: ['fa'], upstream: upstream.url, origins: [ORIGIN] },
        { path: '/fa-slow', auth: ['faSlow'], upstream: upstream.url, origins: [ORIGIN] },
        { path: '/live', auth: ['once'], upstream: upstream.url },
        { path: '/refresh', auth: ['jwt'], upstream: upstream.url, mode: 'relay', refresh: { graceSec: 30 } },
        { path: '/first', auth: ['jwt'], upstream: upstream.url, mode: 'relay', firstMessageAuth: { timeoutMs: 5000 } },
        { path: '/down', auth: ['jwt'], upstream: `ws://127.0.0.1:${closedPort}` },
        { path: '/down-relay', auth: ['jwt'], upstream: `ws://127.0.0.1:${closedPort}`, mode: 'relay' },
        { path: '/api', auth: ['jwt'], upstream: upstream.url, http: true },
      ],
    },
    { sidecar: true },
  );
  const env: Env = { gw, upstream };

  await t.test('jwt: accepted from every source (bearer, query:, protocol:, header:, cookie:)', async (t) => {
    const good = jwt('jwt: a good token (bearer)', { sub: 'alice' });
    await accept(t, env, 'jwt bearer', '/jwt', bearer('jwt: a good token', good), 'alice');
    const assertionJwt = String(upstream.seen.at(-1)?.headers['x-auth-assertion'] ?? '');
    t.match(assertionJwt, /^ey/, 'the upstream got a signed identity assertion');
    secret('jwt: the identity assertion the gateway signed for the upstream', assertionJwt);

    await accept(t, env, 'jwt query:', `/jwt?room=1&access_token=${jwt('jwt: a good token (query)', { sub: 'quinn' })}`, {}, 'quinn');
    t.equal(upstream.seen.at(-1)?.url, '/jwt?room=1', 'the query token is not forwarded');

    const viaProtocol = jwt('jwt: a good token (protocol)', { sub: 'pat' });
    const res = await accept(t, env, 'jwt protocol:', '/jwt', { 'Sec-WebSocket-Protocol': `bearer, bearer.${viaProtocol}` }, 'pat');
    t.equal(res.headers['sec-websocket-protocol'], 'bearer', 'the bare marker is answered, never the token entry');

    await accept(t, env, 'jwt header:', '/alt', { 'X-Token': jwt('jwt: a good token (header:x-token)', { sub: 'hank' }) }, 'hank');
    await accept(t, env, 'jwt cookie:', '/alt', { Cookie: `tok=${jwt('jwt: a good token (cookie:tok)', { sub: 'cora' })}`, Origin: ORIGIN }, 'cora');
  });

  await t.test('jwt: every kind of bad token is 401, from every source', async (t) => {
    const invalid = (what: string, headers: Record<string, string>, code: string, description: string, path = '/jwt') =>
      refuse(t, env, what, path, headers, 401, code, description);
    const badSig = jwt('jwt: a token with a bad signature', { sub: 'alice' }, OTHER_SECRET);
    await invalid('bad signature', bearer('jwt: bad signature', badSig), 'GW_ERR_SIGNATURE_INVALID', 'signature invalid');
    const expired = jwt('jwt: an expired token', { sub: 'alice', exp: now() - 60 });
    await invalid('expired', bearer('jwt: expired', expired), 'GW_ERR_TOKEN_EXPIRED', 'token expired');
    const none = secret('jwt: an alg none token', `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub: 'alice', jti: rnd(), exp: now() + 3600 })}.`);
    await invalid('alg none', bearer('jwt: alg none', none), 'GW_ERR_ALGORITHM_NOT_ALLOWED', 'algorithm not allowed');
    const malformed = secret('jwt: a malformed token', `${rnd(10)}.${rnd(10)}!.${rnd(10)}`);
    await invalid('malformed', bearer('jwt: malformed', malformed), 'GW_ERR_TOKEN_MALFORMED', 'token malformed');
    const huge = jwt('jwt: an oversized token', { sub: 'alice', pad: rnd(4500) });
    t.ok(huge.length > 8192, `the oversized token is ${huge.length} bytes`);
    await invalid('oversized', bearer('jwt: oversized', huge), 'GW_ERR_TOKEN_TOO_LARGE', 'token too large');

    // Bad tokens in the other sources.
    await invalid('bad signature in query:', {}, 'GW_ERR_SIGNATURE_INVALID', 'signature invalid', `/jwt?access_token=${jwt('jwt: bad signature (query)', {}, OTHER_SECRET)}`);
    await invalid('expired in protocol:', { 'Sec-WebSocket-Protocol': `bearer, bearer.${jwt('jwt: expired (protocol)', { exp: now() - 60 })}` }, 'GW_ERR_TOKEN_EXPIRED', 'token expired');
    await invalid('bad signature in header:', { 'X-Token': jwt('jwt: bad signature (header)', {}, OTHER_SECRET) }, 'GW_ERR_SIGNATURE_INVALID', 'signature invalid', '/alt');
    await invalid('malformed in cookie:', { Cookie: `tok=${secret('jwt: malformed (cookie)', `junk-${rnd(16)}`)}`, Origin: ORIGIN }, 'GW_ERR_TOKEN_MALFORMED', 'token malformed', '/alt');
    // No credential at all is 401 too, and logged.
    await refuse(t, env, 'no credential', '/jwt', {}, 401, 'GW_ERR_CREDENTIALS_MISSING', 'credentials required');
  });

  await t.test('apiKey: the right key is accepted, a wrong one is 401 (header and query)', async (t) => {
    await accept(t, env, 'apiKey header', '/key', { 'X-Api-Key': API_KEY }, 'svc-a');
    await accept(t, env, 'apiKey query', `/key?api_key=${API_KEY}`, {}, 'svc-a');
    await refuse(t, env, 'wrong apiKey header', '/key', { 'X-Api-Key': WRONG_API_KEY }, 401, 'GW_ERR_API_KEY_INVALID', 'api key invalid');
    await refuse(t, env, 'wrong apiKey query', `/key?api_key=${WRONG_API_KEY}`, {}, 401, 'GW_ERR_API_KEY_INVALID', 'api key invalid');
  });

  await t.test('session (memory store): a signed cookie is accepted; tampered and unknown ones are 401', async (t) => {
    const valid = sessionCookie('session (memory): valid');
    gw.gateway.sessionStore('web')!.set(valid.id, sessionData('sam'));
    await accept(t, env, 'session valid', '/sess', { Cookie: valid.header, Origin: ORIGIN }, 'sam');
    const tampered = secret('session (memory): a tampered cookie', `${valid.value.slice(0, -3)}${valid.value.endsWith('AAA') ? 'BBB' : 'AAA'}`);
    await refuse(t, env, 'session tampered', '/sess', { Cookie: `connect.sid=${encodeURIComponent(tampered)}`, Origin: ORIGIN }, 401, 'GW_ERR_SESSION_INVALID', 'session cookie invalid');
    const unknown = sessionCookie('session (memory): unknown id');
    await refuse(t, env, 'session unknown', '/sess', { Cookie: unknown.header, Origin: ORIGIN }, 401, 'GW_ERR_SESSION_NOT_FOUND', 'session not found');
    const foreign = sessionCookie('session (memory): signed with another secret', OTHER_SECRET);
    await refuse(t, env, 'session foreign', '/sess', { Cookie: foreign.header, Origin: ORIGIN }, 401, 'GW_ERR_SESSION_INVALID', 'session cookie invalid');
  });

  await t.test('introspection: active, inactive, a token in the error body, bad answers, endpoint down', async (t) => {
    await accept(t, env, 'introspection active', '/intro', bearer('introspection: active', INTRO_ACTIVE), 'ivan');
    t.equal(endpoint.authorizations.at(-1), BASIC, 'the endpoint got the client credentials (HTTP Basic)');
    await refuse(t, env, 'introspection inactive', '/intro', bearer('introspection: inactive', INTRO_INACTIVE), 401, 'GW_ERR_TOKEN_INACTIVE', 'token inactive');
    const unavailable = (what: string, token: string, path = '/intro') =>
      refuse(t, env, what, path, bearer(`introspection: ${what}`, token), 503, 'GW_ERR_AUTH_UNAVAILABLE', 'authentication backend unavailable');
    await unavailable('400 quoting the token', INTRO_ERROR);
    await unavailable('non-JSON 200 quoting the token', INTRO_NOT_JSON);
    await unavailable('200 without active, quoting the token', INTRO_NO_ACTIVE);
    await unavailable('endpoint down', INTRO_DOWN, '/intro-down');
  });

  await t.test('forwardAuth: 200 with copyHeaders, 401 with WWW-Authenticate, 500, timeout', async (t) => {
    const sent = { ...bearer('forwardAuth: client', FA_BEARER), Cookie: `_oauth2_proxy=${FA_COOKIE}`, Origin: ORIGIN };
    await accept(t, env, 'forwardAuth 200', '/fa', { ...sent, 'X-Case': 'ok' }, 'fiona');
    t.equal(upstream.seen.at(-1)?.headers['x-auth-request-access-token'], FA_ACCESS, 'the copied header reached the upstream (by design)');
    const denied = await refuse(t, env, 'forwardAuth 401', '/fa', { ...sent, 'X-Case': 'deny' }, 401, 'GW_ERR_FORWARD_AUTH_DENIED', 'rejected by auth service');
    t.equal(denied.headers['www-authenticate'], 'Bearer realm="auth", error="invalid_token"', "the auth service's challenge is passed through");
    await refuse(t, env, 'forwardAuth 500', '/fa', { ...sent, 'X-Case': 'boom' }, 503, 'GW_ERR_AUTH_UNAVAILABLE', 'authentication backend unavailable');
    await refuse(t, env, 'forwardAuth timeout', '/fa-slow', { ...sent, 'X-Case': 'slow' }, 503, 'GW_ERR_AUTH_UNAVAILABLE', 'authentication backend unavailable');
    t.equal(service.hits(), 4, 'the auth service was asked every time');
  });

  await t.test('tickets: POST /tickets, spend once, spend twice; a bad bearer is refused', async (t) => {
    const owner = jwt('tickets: the bearer token that buys the ticket', { sub: 'tina' });
    const postId = nextId('tickets');
    const post = await httpText(await fetch(`http://127.0.0.1:${gw.port}/tickets`, { method: 'POST', headers: { ...bearer('tickets: owner', owner), 'X-Request-Id': postId } }));
    t.equal(post.status, 200, 'a ticket is issued');
    const ticket = secret('tickets: the ticket', (JSON.parse(post.body) as { ticket: string }).ticket);
    clean(t, 'POST /tickets: the answer (which carries the ticket, as it must)', post.text, { allowed: [ticket] });
    t.ok(post.text.includes(ticket), 'the ticket is in its own answer (so the check above is not vacuous)');
    await logged(t, gw, postId, { msg: 'ticket issued', status: 200, subject: 'tina' });

    await accept(t, env, 'ticket spent', `/live?ticket=${ticket}`, {}, 'tina');
    await refuse(t, env, 'ticket spent twice', `/live?ticket=${ticket}`, {}, 401, 'GW_ERR_TICKET_INVALID', 'ticket invalid or used');

    const refusedId = nextId('tickets');
    const bad = jwt('tickets: a bad bearer token', { sub: 'tina' }, OTHER_SECRET);
    const refused = await httpText(await fetch(`http://127.0.0.1:${gw.port}/tickets`, { method: 'POST', headers: { ...bearer('tickets: bad', bad), 'X-Request-Id': refusedId } }));
    t.equal(refused.status, 401, 'no ticket for a bad token');
    clean(t, 'POST /tickets refused: the answer', refused.text);
    await logged(t, gw, refusedId, { msg: 'ticket refused', status: 401, code: 'GW_ERR_SIGNATURE_INVALID' });
  });

  await t.test('relay: refresh and firstMessageAuth messages carrying tokens, good and bad', async (t) => {
    // refresh: a good one extends the connection, a bad one closes it with 4401.
    const refreshId = nextId('refresh');
    const first = jwt('refresh: the token of the upgrade', { sub: 'rita' });
    const ws = await openClient(t, gw.url('/refresh'), [], { ...bearer('refresh: upgrade', first), 'X-Request-Id': refreshId });
    t.equal(await echo(ws, 'hello'), 'hello');
    const newExp = now() + 7200;
    ws.send(JSON.stringify({ type: 'refresh', token: jwt('refresh: a good refresh token', { sub: 'rita', exp: newExp }) }));
    await eventually(() => gw.gateway.listConnections().some((c) => c.route === '/refresh' && c.expiresAt !== null && Date.parse(c.expiresAt) === newExp * 1000), 5000, 'the refresh to extend the connection');
    const closed = closeOf(ws);
    ws.send(JSON.stringify({ type: 'refresh', token: jwt('refresh: a bad refresh token', { sub: 'rita' }, OTHER_SECRET) }));
    const c = await closed;
    t.equal(c.code, 4401, 'a bad refresh token closes with 4401');
    clean(t, 'refresh: the close reason', c.reason);
    await logged(t, gw, refreshId, { msg: 'refresh rejected', subject: 'rita' });

    // firstMessageAuth: a good auth message opens the upstream; bad ones close with 4401.
    const goodId = nextId('first');
    const a = await openClient(t, gw.url('/first'), [], { 'X-Request-Id': goodId });
    a.send(JSON.stringify({ type: 'auth', token: jwt('first message: a good token', { sub: 'finn' }) }));
    t.equal(await echo(a, 'after auth'), 'after auth', 'relayed after the auth message');
    await logged(t, gw, goodId, { msg: 'first message authenticated', subject: 'finn' });

    const bad: [string, string, string][] = [
      ['expired', JSON.stringify({ type: 'auth', token: jwt('first message: an expired token', { sub: 'finn', exp: now() - 60 }) }), 'GW_ERR_TOKEN_EXPIRED'],
      ['bad signature', JSON.stringify({ type: 'auth', token: jwt('first message: a bad signature', { sub: 'finn' }, OTHER_SECRET) }), 'GW_ERR_SIGNATURE_INVALID'],
      ['malformed', JSON.stringify({ type: 'auth', token: secret('first message: a malformed token', `junk-${rnd(16)}`) }), 'GW_ERR_TOKEN_MALFORMED'],
      ['not JSON', secret('first message: a token sent as plain text', `plain-${rnd(16)}`), 'GW_ERR_CREDENTIALS_MISSING'],
    ];
    for (const [what, message, code] of bad) {
      const id = nextId('first');
      const b = await openClient(t, gw.url('/first'), [], { 'X-Request-Id': id });
      const done = closeOf(b);
      b.send(message);
      const close = await done;
      t.equal(close.code, 4401, `first message ${what}: 4401`);
      clean(t, `first message ${what}: the close reason`, close.reason);
      await logged(t, gw, id, { msg: 'first message rejected', status: 401, code });
    }
  });

  await t.test('upstream down: 502 (pipe and relay)', async (t) => {
    for (const path of ['/down', '/down-relay']) {
      const { res, id } = await upgrade(t, env, `upstream down ${path}`, path, bearer(`upstream down ${path}`, jwt(`upstream down ${path}: a good token`, { sub: 'dora' })));
      t.equal(res.status, 502, `${path}: 502`);
      await logged(t, gw, id, { msg: 'upgrade accepted', status: 101, subject: 'dora' });
      await logged(t, gw, id, { msg: 'upstream unavailable', status: 502 });
      await logged(t, gw, id, { msg: 'upstream connect failed' });
    }
  });

  await t.test('an http route: plain requests with a bad and a good bearer token', async (t) => {
    const badId = nextId('http');
    const bad = await httpText(await fetch(`http://127.0.0.1:${gw.port}/api`, { headers: { ...bearer('http: bad', jwt('http: a bad token', {}, OTHER_SECRET)), 'X-Request-Id': badId } }));
    t.equal(bad.status, 401);
    clean(t, 'http route 401: the answer', bad.text);
    await logged(t, gw, badId, { msg: 'upgrade rejected', status: 401, code: 'GW_ERR_SIGNATURE_INVALID', method: 'GET' });
    const goodId = nextId('http');
    const good = await httpText(await fetch(`http://127.0.0.1:${gw.port}/api`, { headers: { ...bearer('http: good', jwt('http: a good token', { sub: 'gil' })), 'X-Request-Id': goodId } }));
    t.equal(good.status, 426, "proxied: the echo upstream's own answer to a plain request");
    clean(t, 'http route proxied: the answer', good.text);
    await logged(t, gw, goodId, { msg: 'request accepted', subject: 'gil' });
  });

  await t.test('admin API: wrong and right admin token, /connections, /metrics, POST /revoke', async (t) => {
    const admin = createAdminServer(gw.gateway, () => true);
    const adminPort = await listenLocal(t, admin);
    const call = async (method: string, path: string, authorization: string | undefined, body?: object) => {
      const headers: Record<string, string> = {};
      if (authorization !== undefined) headers.Authorization = authorization;
      if (body) headers['Content-Type'] = 'application/json';
      return httpText(await fetch(`http://127.0.0.1:${adminPort}${path}`, { method, headers, ...(body && { body: JSON.stringify(body) }) }));
    };
    const right = secret('admin: the right Authorization value', `Bearer ${ADMIN_TOKEN}`);
    const wrong = secret('admin: a wrong Authorization value', `Bearer ${WRONG_ADMIN_TOKEN}`);

    // A live connection, so that /connections lists something.
    const liveToken = jwt('admin: the token of a live connection', { sub: 'lena' });
    const live = await openClient(t, gw.url('/jwt'), [], bearer('admin: live', liveToken));
    t.equal(await echo(live, 'x'), 'x');

    for (const [what, authorization] of [['a wrong admin token', wrong], ['no admin token', undefined], ['a malformed Authorization', ADMIN_TOKEN]] as const) {
      const res = await call('GET', '/connections', authorization);
      t.equal(res.status, 401, `GET /connections with ${what}: 401`);
      clean(t, `admin GET /connections with ${what}`, res.text);
      const revoke = await call('POST', '/revoke', authorization, { subject: 'lena' });
      t.equal(revoke.status, 401, `POST /revoke with ${what}: 401`);
      clean(t, `admin POST /revoke with ${what}`, revoke.text);
    }
    const list = await call('GET', '/connections', right);
    t.equal(list.status, 200);
    t.ok(list.body.includes('"lena"'), 'the live connection is listed');
    clean(t, 'admin GET /connections', list.text);
    // Whatever the admin port answers to /metrics, and the metrics text itself (labels are routes and targets).
    clean(t, 'admin GET /metrics', (await call('GET', '/metrics', right)).text);
    const metrics = await gw.gateway.metrics.text();
    t.match(metrics, /portcullis_upgrades_total\{[^}]*status="401"/, 'the metrics count the rejections');
    clean(t, 'the metrics text', metrics);

    // Revoke by jti (the live connection's token), by subject, by session id.
    const jti = (JSON.parse(Buffer.from(liveToken.split('.')[1]!, 'base64url').toString()) as { jti: string }).jti;
    const closed = closeOf(live);
    const byJti = await call('POST', '/revoke', right, { jti });
    t.equal(byJti.status, 200, 'revoked by jti');
    clean(t, 'admin POST /revoke jti', byJti.text);
    await closed;
    await refuse(t, env, 'revoked jti', '/jwt', bearer('admin: revoked', liveToken), 401, 'GW_ERR_TOKEN_REVOKED', 'token revoked');

    const bySubject = await call('POST', '/revoke', right, { subject: 'rex' });
    t.equal(bySubject.status, 200, 'revoked by subject');
    clean(t, 'admin POST /revoke subject', bySubject.text);
    await refuse(t, env, 'revoked subject', '/jwt', bearer('admin: rex', jwt('admin: a token of a revoked subject', { sub: 'rex' })), 401, 'GW_ERR_TOKEN_REVOKED', 'token revoked');

    const session = sessionCookie('admin: a revoked session');
    gw.gateway.sessionStore('web')!.set(session.id, sessionData('sid-user'));
    const bySession = await call('POST', '/revoke', right, { sessionId: session.id });
    t.equal(bySession.status, 200, 'revoked by session id');
    // The answer names what was revoked: the session id the admin sent, back to the admin.
    clean(t, 'admin POST /revoke sessionId (echoes the id the admin sent)', bySession.text, { allowed: [session.id] });
    await refuse(t, env, 'revoked session', '/sess', { Cookie: session.header, Origin: ORIGIN }, 401, 'GW_ERR_TOKEN_REVOKED', 'token revoked');
    t.ok(gw.logs().some((l) => l.msg === 'revoked'), 'revocations are logged');
  });

  await t.test('the whole log: at trace, with the expected decisions, and no secret', async (t) => {
    const logs = gw.logs();
    t.ok(logs.length >= 60, `the log is not empty (${logs.length} lines)`);
    const rejected = logs.filter((l) => l.msg === 'upgrade rejected');
    const codes = new Set(rejected.map((l) => l.code));
    for (const code of ['GW_ERR_SIGNATURE_INVALID', 'GW_ERR_TOKEN_EXPIRED', 'GW_ERR_ALGORITHM_NOT_ALLOWED', 'GW_ERR_TOKEN_MALFORMED', 'GW_ERR_TOKEN_TOO_LARGE', 'GW_ERR_API_KEY_INVALID', 'GW_ERR_SESSION_INVALID', 'GW_ERR_TOKEN_INACTIVE', 'GW_ERR_AUTH_UNAVAILABLE', 'GW_ERR_FORWARD_AUTH_DENIED', 'GW_ERR_TICKET_INVALID', 'GW_ERR_TOKEN_REVOKED']) {
      t.ok(codes.has(code), `an "upgrade rejected" line with ${code}`);
    }
    t.ok(rejected.every((l) => typeof l.reqId === 'string' && typeof l.durationMs === 'number'), 'each decision line has its request id and duration');
    t.ok(logs.some((l) => l.level === 40), 'warn lines (backend failures, 502) are there too');
    clean(t, 'the log of the main gateway', gw.logText());
  });
});

t.test('module: a handler that throws an Error quoting the token', async (t) => {
  const good = jwt('module: the token the handler accepts', { sub: 'mo' });
  const bad = jwt('module: the token the handler quotes in its error', { sub: 'mo' });
  const badAuthorization = secret('module: the quoted Authorization value', `Bearer ${bad}`);
  const dir = t.testdir({
    'auth.mjs': `export default async function handler(request) {
  const authorization = request.headers.authorization ?? '';
  if (authorization === ${JSON.stringify(`Bearer ${good}`)}) return { subject: 'mo' };
  throw new Error('user store refused the credential ' + authorization);
}
`,
  });
  const upstream = await startEchoUpstream(t);
  const gw = await traceGateway(
    t,
    'the module gateway',
    { authenticators: { mod: { type: 'module', path: join(dir, 'auth.mjs') } }, routes: [{ path: '/mod', auth: ['mod'], upstream: upstream.url }] },
  );
  const env: Env = { gw, upstream };
  await accept(t, env, 'module accepts', '/mod', bearer('module: good', good), 'mo');

  const res = await refuse(t, env, 'module throws', '/mod', { Authorization: badAuthorization }, 500, 'GW_ERR_INTERNAL', 'internal error');
  t.notOk(res.raw.includes('user store refused'), 'the error message is not sent to the client');

  // The same path for a handler added with onWebSocketUpgrade (SPEC 7): it throws quoting a header it read.
  const quoted = secret('onWebSocketUpgrade: a token the handler quotes in its error', `hdr-${rnd(16)}`);
  gw.gateway.onWebSocketUpgrade((req) => {
    const value = req.headers['x-session-token'];
    if (value !== undefined) throw new Error(`session lookup failed for ${String(value)}`);
    return true;
  });
  await refuse(t, env, 'onWebSocketUpgrade throws', '/mod', { ...bearer('module: good again', good), 'X-Session-Token': quoted }, 500, 'GW_ERR_INTERNAL', 'internal error');
  const lines = gw.logs().filter((l) => l.code === 'GW_ERR_INTERNAL');
  t.equal(lines.length, 2, 'both 500s are logged');
  clean(t, 'the module gateway: the "upgrade rejected" line of the module throw', JSON.stringify(lines[0]));
  clean(t, 'the module gateway: the "upgrade rejected" line of the onWebSocketUpgrade throw', JSON.stringify(lines[1]));
  t.match(lines[0], { cause: { message: /user store refused the credential .*\[redacted\]/ } }, 'the operator still gets the message, minus the token');
});

t.test('session (redis store, real redis-server): valid, tampered, then redis stopped → 503', async (t) => {
  const redis = await startRedis(t);
  const upstream = await startEchoUpstream(t);
  const gw = await traceGateway(t, 'the redis session gateway', {
    redis: { url: redis.url },
    limits: { handshakeTimeoutMs: 4000 },
    authenticators: { web: { type: 'session', secrets: [SESSION_SECRET], subjectPath: 'passport.user', store: { type: 'redis' } } },
    routes: [{ path: '/sess', auth: ['web'], upstream: upstream.url, origins: [ORIGIN] }],
  });
  const env: Env = { gw, upstream };
  const valid = sessionCookie('session (redis): valid');
  await redis.client.set(`sess:${valid.id}`, JSON.stringify(sessionData('rosa')));
  await accept(t, env, 'redis session valid', '/sess', { Cookie: valid.header, Origin: ORIGIN }, 'rosa');
  const tampered = secret('session (redis): a tampered cookie', valid.value.replace(/\.(.)/, (_m, c: string) => `.${c === 'A' ? 'B' : 'A'}`));
  await refuse(t, env, 'redis session tampered', '/sess', { Cookie: `connect.sid=${encodeURIComponent(tampered)}`, Origin: ORIGIN }, 401, 'GW_ERR_SESSION_INVALID', 'session cookie invalid');

  await redis.stop();
  const down = sessionCookie('session (redis): asked while redis is down');
  let status = 0;
  const deadline = Date.now() + 8000;
  // The first attempt is normally 503 already; a client that has not yet seen the socket die may take one more.
  while (status !== 503 && Date.now() < deadline) {
    const { res, id } = await upgrade(t, env, 'redis down', '/sess', { Cookie: down.header, Origin: ORIGIN });
    status = res.status;
    if (status === 503) await logged(t, gw, id, { msg: 'upgrade rejected', status: 503, code: 'GW_ERR_AUTH_UNAVAILABLE' });
  }
  t.equal(status, 503, 'redis stopped: 503');
  await eventually(() => gw.logs().some((l) => l.msg === 'redis error'), 5000, 'the redis error to be logged');
  clean(t, 'the log of the redis session gateway', gw.logText());
});

/**
 * A config with secrets in every place a problem can be reported: a short HS secret, a secret with the
 * wrong algorithms, a clientSecret without a clientId, an admin token beside a bad port, a session secret
 * beside a typo'd field, a short and a garbage assertion key, a raw API key where its hash belongs, a
 * redis URL with a password in the wrong scheme, a secret from the environment that is too short.
 */
function invalidConfig(upstream: string) {
  return {
    admin: { port: 'not-a-port', token: secret('config error: the admin token', `admin-${rnd()}`) },
    redis: { url: `http://user:${secret('config error: a redis password', `redispw-${rnd()}`)}@127.0.0.1:6379` },
    authenticators: {
      short: { type: 'jwt', from: ['bearer'], secret: secret('config error: a short HS secret', `hs-${rnd(6)}`), algorithms: ['HS256'] },
      mixed: { type: 'jwt', from: ['bearer'], secret: secret('config error: an HS secret with RS256', `hs-long-${rnd(16)}`), algorithms: ['HS256', 'RS256'] },
      fromEnv: { type: 'jwt', from: ['bearer'], secret: '${PORTCULLIS_LOG_SECRETS_TEST_SECRET}', algorithms: ['HS256'] },
      intro: { type: 'introspection', from: ['bearer'], url: 'http://127.0.0.1:1/introspect', clientSecret: secret('config error: a clientSecret without clientId', `cs-${rnd(16)}`) },
      web: { type: 'session', secrets: [secret('config error: a session secret', `sess-${rnd(16)}`)], subjectPath: 'user', secret: secret('config error: a session secret in a typo field', `sess-typo-${rnd(16)}`) },
      keys: { type: 'apiKey', from: ['header:x-api-key'], keys: [{ sha256: secret('config error: a raw API key where its hash belongs', `ak_${rnd(16)}`), subject: 'svc' }] },
    },
    routes: [
      { path: '/a', auth: ['short'], upstream, assertion: { key: secret('config error: a short assertion key', `ak-${rnd(4)}`) } },
      { path: '/b', auth: ['mixed'], upstream, assertion: { key: `-----BEGIN PRIVATE KEY-----\n${secret('config error: a garbage PEM assertion key', rnd(24))}\n-----END PRIVATE KEY-----\n` } },
      { path: '/c', auth: ['web'], upstream, origins: [ORIGIN], sticky: { secret: 42 } },
    ],
  };
}
const INVALID_PATHS = [
  'admin.port',
  'redis.url',
  'authenticators.short.secret',
  'authenticators.mixed.algorithms',
  'authenticators.fromEnv.secret',
  'authenticators.intro.clientId',
  'authenticators.web.secret',
  'authenticators.keys.keys.0',
  'routes.0.assertion.key',
  'routes.1.assertion.key',
  'routes.2.sticky',
];

/** The ConfigError `fn` throws (a test failure if it throws something else, or nothing). */
function configErrorOf(t: Test, fn: () => unknown): ConfigError | undefined {
  try {
    fn();
  } catch (err) {
    t.ok(err instanceof ConfigError, `a ConfigError (${(err as Error).name})`);
    return err instanceof ConfigError ? err : undefined;
  }
  t.fail('no error was thrown');
  return undefined;
}

t.test('config errors: createGateway with secrets in an invalid config', async (t) => {
  const envSecret = secret('config error: a too-short secret from the environment', `env-${rnd(4)}`);
  process.env.PORTCULLIS_LOG_SECRETS_TEST_SECRET = envSecret;
  t.teardown(() => void delete process.env.PORTCULLIS_LOG_SECRETS_TEST_SECRET);
  const { logger, lines } = captureLog('trace');
  const err = configErrorOf(t, () => createGateway(invalidConfig('ws://127.0.0.1:1'), { logger }));
  if (!err) return;
  for (const path of INVALID_PATHS) t.ok(err.problems.some((p) => p.startsWith(path)), `the problem at ${path} is reported`);
  clean(t, 'createGateway ConfigError: the message', err.message);
  clean(t, 'createGateway ConfigError: the stack', err.stack ?? '');
  clean(t, 'createGateway ConfigError: the problems', err.problems.join('\n'));
  clean(t, 'createGateway ConfigError: String(err)', String(err));
  clean(t, 'createGateway with an invalid config: anything logged', lines.join('\n'));

  // A keys file holding raw keys (one per line) instead of the JSON list of hashes.
  const rawKey = secret('config error: a raw API key in a keys file', `${rnd(16)}`);
  const dir = t.testdir({ 'keys.txt': `${rawKey} svc-a\n` });
  const fileErr = configErrorOf(t, () =>
    createGateway({ authenticators: { keys: { type: 'apiKey', from: ['header:x-api-key'], keys: [{ file: 'keys.txt' }] } }, routes: [{ path: '/k', auth: ['keys'], upstream: 'ws://127.0.0.1:1' }] }, { baseDir: dir, logger }),
  );
  t.ok(fileErr?.problems.some((p) => p.startsWith('authenticators.keys.keys.0.file:')), 'the keys file is reported');
  t.notOk(
    fileErr?.message.includes(rawKey.slice(0, 10)),
    'the keys-file problem does not quote the start of the file',
  );
});

t.test('gateway.reload with a config holding secrets: valid (in force at once), then invalid (refused)', async (t) => {
  const upstream = await startEchoUpstream(t);
  const gw = await traceGateway(t, 'the reload gateway', { authenticators: { jwt: jwtAuth() }, routes: [{ path: '/r', auth: ['jwt'], upstream: upstream.url }] });
  const env: Env = { gw, upstream };
  const NEW_SECRET = secret('reload: the new HS secret', `reload-secret-${rnd(16)}`);
  const reloadAdmin = secret('reload: the new admin token', `admin-${rnd()}`);
  const reloadClientSecret = secret('reload: the new introspection client secret', `cs-${rnd(16)}`);
  const reloadSessionSecret = secret('reload: the new session secret', `sess-${rnd(16)}`);
  const reloadAssertion = secret('reload: the new assertion key', `assert-${rnd(16)}`);
  const reloadApiKey = secret('reload: an API key of the new config', `ak_${rnd(16)}`);
  await gw.gateway.reload({
    admin: { port: 0, token: reloadAdmin },
    authenticators: {
      jwt: jwtAuth({ secret: NEW_SECRET }),
      intro: { type: 'introspection', from: ['header:x-opaque'], url: 'http://127.0.0.1:1/introspect', clientId: 'gw', clientSecret: reloadClientSecret },
      web: { type: 'session', secrets: [reloadSessionSecret], subjectPath: 'user' },
      keys: { type: 'apiKey', from: ['header:x-api-key'], keys: [{ sha256: hashApiKey(reloadApiKey), subject: 'svc' }] },
    },
    routes: [
      { path: '/r', auth: ['jwt'], upstream: upstream.url, assertion: { key: reloadAssertion } },
      { path: '/s', auth: ['web', 'intro', 'keys'], upstream: upstream.url, origins: [ORIGIN] },
    ],
  });
  t.ok(gw.logs().some((l) => l.msg === 'config reloaded'), 'the reload is logged');
  await accept(t, env, 'after reload, the new secret', '/r', bearer('reload: new', jwt('reload: a token under the new secret', { sub: 'nora' }, NEW_SECRET)), 'nora');
  await refuse(t, env, 'after reload, the old secret', '/r', bearer('reload: old', jwt('reload: a token under the old secret', { sub: 'nora' })), 401, 'GW_ERR_SIGNATURE_INVALID', 'signature invalid');
  await accept(t, env, 'after reload, the API key', '/s', { 'X-Api-Key': reloadApiKey }, 'svc');

  const err = await gw.gateway.reload(invalidConfig(upstream.url)).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof ConfigError, 'an invalid reload is refused with a ConfigError');
  if (err instanceof ConfigError) {
    t.ok(err.problems.length >= INVALID_PATHS.length - 1, `every problem is listed (${err.problems.length})`);
    clean(t, 'reload ConfigError: the message', err.message);
    clean(t, 'reload ConfigError: the stack', err.stack ?? '');
  }
  await accept(t, env, 'after the refused reload, the valid config stays', '/r', bearer('reload: still', jwt('reload: a token after the refused reload', { sub: 'nora' }, NEW_SECRET)), 'nora');
  clean(t, 'the log of the reload gateway', gw.logText());
});

t.test('final scan: every secret against every log, error message, close reason and response seen', async (t) => {
  t.ok(SECRETS.length >= 80, `${SECRETS.length} secrets`);
  t.ok(EXHIBITS.length >= 80, `${EXHIBITS.length} texts`);
  const total = EXHIBITS.reduce((n, e) => n + e.text().length, 0);
  t.ok(total > 50_000, `${total} characters scanned`);
  for (const exhibit of EXHIBITS) {
    const leaked = found(exhibit.text(), SECRETS.filter((s) => !exhibit.allowed.includes(s.value)));
    if (exhibit.todo !== undefined) t.same(leaked, [], `${exhibit.where}: no secret`, { todo: exhibit.todo });
    else if (leaked.length > 0) t.same(leaked, [], `${exhibit.where}: no secret`);
  }
  t.pass('scanned');
});
