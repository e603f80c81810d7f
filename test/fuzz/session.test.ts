// Fuzzing express-session cookies (issue 7) against the session authenticator (memory store) behind the
// sidecar server, over real sockets: tampered signatures, the wrong secret, rotated secrets, missing or odd
// prefixes, odd session ids (prototype names, unicode, huge), percent-encoding (none, partial, double,
// invalid), quoting, several cookies and Cookie headers.
//
// The oracle is express-session itself: its own `cookie` (0.7) and `cookie-signature` (1.0) packages read
// the same header the way an Express app would. The gateway must decide as that app would: accept exactly
// the cookies it would accept (and only for a logged-in, unexpired session), and refuse the others with the
// right words: "credentials required" (no cookie), "session cookie invalid", "session not found",
// "session expired", "session not logged in". Never 5xx, the socket closed, the process serving, no fd
// left, neither the secrets nor a session id in a response or the log.
import { once } from 'node:events';
import { createRequire } from 'node:module';
import fc from 'fast-check';
import t from 'tap';
import { WebSocket } from 'ws';
import { signSessionId } from '../../src/auth/session.js';
import { startSidecar, type TestGateway } from '../helpers/gateway.js';
import { eventually } from '../helpers/net.js';
import { wsKey } from '../helpers/upgrade.js';
import { startEchoUpstream } from '../helpers/upstream.js';
import { bytesOf, check, count, crashSpy, descriptionOf, errorOf, exchange, fdBaseline, fdsBackTo, leaked, problemsOf, stats, utf8 } from './harness.js';

// express-session's own dependencies, as an Express app resolves them.
const require = createRequire(createRequire(import.meta.url).resolve('express-session'));
const expressCookie = require('cookie') as { parse(header: string): Record<string, string | undefined> };
const expressSignature = require('cookie-signature') as { unsign(value: string, secret: string): string | false; sign(value: string, secret: string): string };

const ORIGIN = 'https://app.example.com';
const SECRET_NEW = 'session-secret-new-0123456789abcdef-XYZ';
const SECRET_OLD = 'session-secret-old-0123456789abcdef-QRS';
const SECRET_WRONG = 'session-secret-wrong-0123456789abcdef-!!';
const SECRETS = { 'the new session secret': SECRET_NEW, 'the old session secret': SECRET_OLD };

const session = (user: string | undefined, expiresInMs = 3_600_000) => ({
  cookie: { originalMaxAge: expiresInMs, expires: new Date(Date.now() + expiresInMs).toISOString(), httpOnly: true, path: '/' },
  ...(user !== undefined && { passport: { user } }),
});

/** The sessions in the store: logged in, anonymous, expired, and ids that are odd as object keys. */
type Kind = 'alice' | 'anonymous' | 'expired';
const STORE: Record<string, Kind> = Object.fromEntries<Kind>([
  ['sid-alice-0123456789abcdef', 'alice'],
  ['sid-anon-0123456789abcdef', 'anonymous'],
  ['sid-expired-0123456789abcdef', 'expired'],
  ['constructor', 'alice'],
  ['toString', 'alice'],
  ['id with spaces', 'alice'],
  ['ünïcödé-id', 'alice'],
  ['id.with.dots', 'alice'],
  ['s:nested', 'alice'],
  ['', 'alice'],
]);
// (An own "__proto__" key: written with defineProperty so it is data, not the prototype.)
Object.defineProperty(STORE, '__proto__', { value: 'alice', enumerable: true, configurable: true, writable: true });
const IDS = Object.keys(STORE);

// ---------------------------------------------------------------------------------------------------------
// Cookies

interface Case {
  header: string[];
  tags: string[];
}

const idArb = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...IDS) },
  { weight: 2, arbitrary: fc.string({ minLength: 1, maxLength: 40 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 20 }) },
  { weight: 1, arbitrary: fc.integer({ min: 1000, max: 6000 }).map((n) => 'i'.repeat(n)) },
);
const secretArb = fc.constantFrom(SECRET_NEW, SECRET_NEW, SECRET_OLD, SECRET_WRONG, '');

/** Edits an express-session value `s:<id>.<sig>`. */
const mutationArb = fc.tuple(
  fc.constantFrom('flip-sig', 'flip-id', 'drop-prefix', 'upper-prefix', 'j-prefix', 'drop-dot', 'extra-dot', 'truncate-sig', 'append', 'other-sig', 'double', 'drop-sig', 'sig-padding'),
  fc.nat(),
);
function mutate(value: string, [op, at]: [string, number]): string {
  const dot = value.lastIndexOf('.');
  const sig = dot === -1 ? '' : value.slice(dot + 1);
  const head = dot === -1 ? value : value.slice(0, dot);
  const flipAt = (text: string, i: number) => (text.length === 0 ? 'x' : text.slice(0, i % text.length) + (text[i % text.length] === 'A' ? 'B' : 'A') + text.slice((i % text.length) + 1));
  switch (op) {
    case 'flip-sig':
      return `${head}.${flipAt(sig, at)}`;
    case 'flip-id':
      return `s:${flipAt(head.slice(2), at)}.${sig}`;
    case 'drop-prefix':
      return value.replace(/^s:/, '');
    case 'upper-prefix':
      return value.replace(/^s:/, 'S:');
    case 'j-prefix':
      return value.replace(/^s:/, 'j:');
    case 'drop-dot':
      return head + sig;
    case 'extra-dot':
      return `${value}.`;
    case 'truncate-sig':
      return `${head}.${sig.slice(0, at % Math.max(1, sig.length))}`;
    case 'append':
      return `${value}${'=x;%'[at % 4]}`;
    case 'other-sig':
      return `${head}.${signSessionId('sid-alice-0123456789abcdef', SECRET_NEW).split('.').pop()}`;
    case 'double':
      return value + value;
    case 'drop-sig':
      return head;
    default:
      return `${value}=`;
  }
}

/** encodeURIComponent, after replacing lone surrogates (a mutation may split a pair) as UTF-8 would. */
const uri = (v: string) => encodeURIComponent(Buffer.from(v, 'utf8').toString('utf8'));

/** How the value is written into the Cookie header. */
const encodings: Record<string, (v: string) => string> = {
  uri,
  raw: (v) => v,
  colon: (v) => v.replace(':', '%3A'),
  double: (v) => encodeURIComponent(uri(v)),
  quoted: (v) => `"${uri(v)}"`,
  'bad-percent': (v) => `${uri(v)}%zz`,
  'trailing-percent': (v) => `${uri(v)}%`,
  spaced: (v) => ` ${uri(v)} `,
};

const caseArb: fc.Arbitrary<Case> = fc
  .record({
    id: idArb,
    secret: secretArb,
    mutations: fc.oneof({ weight: 3, arbitrary: fc.constant<[string, number][]>([]) }, { weight: 2, arbitrary: fc.array<[string, number]>(mutationArb, { minLength: 1, maxLength: 3 }) }),
    encoding: fc.oneof({ weight: 6, arbitrary: fc.constant('uri') }, { weight: 4, arbitrary: fc.constantFrom(...Object.keys(encodings)) }),
    name: fc.oneof({ weight: 10, arbitrary: fc.constant('connect.sid') }, { weight: 1, arbitrary: fc.constantFrom('Connect.sid', 'connect.sid ', ' connect.sid', 'connect_sid', 'connect.sid\t') }),
    before: fc.array(fc.constantFrom('theme=dark', 'lang=en', 'connect.sid=', `connect.sid=${encodeURIComponent(signSessionId('sid-anon-0123456789abcdef', SECRET_NEW))}`, 'a', '=', ';', 'x=%zz', 'io=abc'), { maxLength: 2 }),
    after: fc.array(fc.constantFrom('theme=dark', 'lang=en', `connect.sid=${encodeURIComponent(signSessionId('sid-alice-0123456789abcdef', SECRET_NEW))}`, 'connect.sid=junk', 'x', 'y=1'), { maxLength: 2 }),
    split: fc.boolean(),
    separator: fc.constantFrom('; ', ';', ' ; '),
  })
  .map((r) => {
    let value = signSessionId(r.id, r.secret || 'x');
    if (r.secret === '') value = `s:${expressSignature.sign(r.id, '')}`;
    for (const m of r.mutations) value = mutate(value, m);
    const pair = `${r.name}=${encodings[r.encoding]!(value)}`;
    const cookies = [...r.before, pair, ...r.after];
    // One Cookie header, or the pairs spread over two (Node joins them with "; ").
    const header = r.split && cookies.length > 1 ? [cookies.slice(0, 1).join(r.separator), cookies.slice(1).join(r.separator)] : [cookies.join(r.separator)];
    return { header: header.map(utf8), tags: [`encoding:${r.encoding}`, ...r.mutations.map(([op]) => op), Object.prototype.hasOwnProperty.call(STORE, r.id) ? 'stored id' : 'unknown id'] };
  });

// ---------------------------------------------------------------------------------------------------------
// The oracle: what express-session would do with this header

type Verdict = 'accept' | 'credentials required' | 'session cookie invalid' | 'session not found' | 'session expired' | 'session not logged in' | 'request headers too large' | 'either';

function expressVerdict(joined: string): Verdict {
  let raw: string | undefined;
  try {
    raw = expressCookie.parse(joined)['connect.sid'];
  } catch {
    raw = undefined;
  }
  if (!raw) return 'credentials required';
  if (raw.slice(0, 2) !== 's:') return 'session cookie invalid';
  let id: string | false = false;
  for (const secret of [SECRET_NEW, SECRET_OLD]) {
    id = expressSignature.unsign(raw.slice(2), secret);
    if (id !== false) break;
  }
  if (id === false) return 'session cookie invalid';
  if (!Object.prototype.hasOwnProperty.call(STORE, id)) return 'session not found';
  const kind = STORE[id];
  return kind === 'alice' ? 'accept' : kind === 'anonymous' ? 'session not logged in' : 'session expired';
}

// ---------------------------------------------------------------------------------------------------------
// The test

async function control(gw: TestGateway): Promise<void> {
  const ws = new WebSocket(gw.url('/live'), { headers: { Cookie: `connect.sid=${encodeURIComponent(signSessionId('sid-alice-0123456789abcdef', SECRET_NEW))}`, Origin: ORIGIN } });
  ws.on('error', () => {});
  await once(ws, 'open');
  const closed = once(ws, 'close');
  ws.close();
  await closed;
}

t.test('express-session cookies: decided exactly as express-session would, with the right words', async (t) => {
  const crashes = crashSpy(t);
  const upstream = await startEchoUpstream(t);
  const gw = await startSidecar(t, {
    limits: { handshakeTimeoutMs: 2000 },
    authenticators: { web: { type: 'session', secrets: [SECRET_NEW, SECRET_OLD], subjectPath: 'passport.user' } },
    routes: [{ path: '/live', auth: ['web'], upstream: upstream.url, origins: [ORIGIN] }],
  });
  const store = gw.gateway.sessionStore('web')!;
  for (const id of IDS) {
    const kind = STORE[id];
    store.set(id, kind === 'alice' ? session('alice') : kind === 'anonymous' ? session(undefined) : session('alice', -60_000));
  }
  await control(gw);
  await eventually(() => gw.gateway.connections === 0 && upstream.open === 0, 3000, 'warm-up closed');
  const baseline = await fdBaseline();
  const s = stats('express-session cookies');
  let n = 0;

  await check(s, 300, [caseArb], async (c) => {
    const joined = Buffer.from(c.header.join('; '), 'latin1').toString('latin1');
    // Above limits.maxHeaderBytes (16 KiB by default) the head is refused before any cookie is read.
    const headerBytes = 200 + c.header.reduce((n, v) => n + 'Cookie'.length + v.length + 4, 0);
    const expected = headerBytes > 16384 + 300 ? 'request headers too large' : headerBytes > 16384 - 300 ? 'either' : expressVerdict(joined);
    const head = `GET /live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${wsKey()}\r\nOrigin: ${ORIGIN}\r\n${c.header.map((v) => `Cookie: ${v}\r\n`).join('')}\r\n`;
    const res = await exchange(gw.port, bytesOf(head));
    const description = descriptionOf(res);
    const got = res.status === 101 ? 'accept' : description;
    count(s, res.raw === '' ? 'none' : res.status, `express-session: ${expected} → gateway: ${got}`);
    const wrong = problemsOf(res);
    if (got !== expected && !(expected === 'either' && (got === 'request headers too large' || got === expressVerdict(joined)))) wrong.push(`express-session: ${expected}, the gateway: ${res.status} ${description}`);
    if (res.status === 401 && errorOf(res) !== (description === 'credentials required' ? 'unauthorized' : 'invalid_token')) wrong.push(`error word ${errorOf(res)}`);
    if (res.status === 101 && upstream.seen.at(-1)?.headers['x-auth-subject'] !== 'alice') wrong.push('the upstream did not get subject alice');
    const inResponse = leaked(res.raw, SECRETS);
    if (inResponse.length > 0) wrong.push(`the response holds ${inResponse.join(', ')}`);
    if (wrong.length > 0) {
      throw new Error(`${wrong.join('; ')}\ntags: ${c.tags.join(' ')}\nCookie: ${JSON.stringify(c.header)}\nanswer: ${JSON.stringify(res.raw.slice(0, 300))}`);
    }
    if (++n % 50 === 0) await control(gw);
  });

  t.comment(`${s.cases} cases, statuses ${JSON.stringify(s.statuses)}`);
  await control(gw);
  t.pass('a valid session is still served after the run');
  await eventually(() => gw.gateway.connections === 0 && upstream.open === 0, 5000, 'every connection closed').catch(() => {});
  t.equal(gw.gateway.connections, 0, 'no connection left in the gateway');
  t.equal(upstream.open, 0, 'no connection left at the upstream');
  const fds = await fdsBackTo(baseline);
  t.ok(fds <= baseline + 2, `open fds ${fds}, baseline ${baseline}`);
  const log = gw.logText();
  t.same(leaked(log, { ...SECRETS, 'a session id': 'sid-alice-0123456789abcdef', 'another session id': 'sid-anon-0123456789abcdef' }), [], 'no secret or session id in the log');
  t.same(crashes, [], 'no uncaught exception or unhandled rejection');
});
