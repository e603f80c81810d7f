// Fuzzing credentials in every source (issue 7): arbitrary junk (unicode, control characters, percent
// sequences, near-misses of the real credential, sizes around the 8 KiB token limit) through `bearer`,
// `query:`, `header:`, `cookie:` and `protocol:`, against a jwt and an apiKey authenticator, alone and
// chained, over real sockets to the sidecar server and a real echo upstream.
//
// Properties: junk is never accepted; a findable credential is judged by its own authenticator (401
// `invalid_token` with that authenticator's words), one that is not found is 401 `unauthorized`, and bytes
// the HTTP parser refuses are 400 (431/414 when too big); never 5xx, always a complete answer on a closed
// socket. With two sources, the first one in `from` decides: junk first is refused even when a valid
// credential follows, a valid one first is accepted whatever junk follows. The process keeps serving, no
// fd is left, and neither the junk nor a real credential shows up in a response or the log.
import { once } from 'node:events';
import fc from 'fast-check';
import t from 'tap';
import { WebSocket } from 'ws';
import { hashApiKey } from '../../src/auth/api-key.js';
import { startSidecar, type TestGateway } from '../helpers/gateway.js';
import { eventually } from '../helpers/net.js';
import { SECRET, hs256, jwtAuth } from '../helpers/tokens.js';
import { wsKey } from '../helpers/upgrade.js';
import { startEchoUpstream } from '../helpers/upstream.js';
import {
  bytesOf,
  check,
  count,
  crashSpy,
  descriptionOf,
  distinctive,
  errorOf,
  exchange,
  fdBaseline,
  fdsBackTo,
  leaked,
  problemsOf,
  stats,
  utf8,
} from './harness.js';

const ORIGIN = 'https://app.example.com';
const TOKEN = hs256({ sub: 'alice' });
const API_KEY = `ak_live_${'0123456789abcdef'.repeat(2)}`;
const SECRETS = { 'the HS256 secret': SECRET, 'the valid token': TOKEN, 'the API key': API_KEY };

type Source = 'bearer' | 'query' | 'header' | 'cookie' | 'protocol';
type Auth = 'jwt' | 'key';

/** Each authenticator's sources, in its `from` order, with the name each one reads. */
const FROM: Record<Auth, { source: Source; name: string }[]> = {
  jwt: [
    { source: 'bearer', name: '' },
    { source: 'query', name: 'access_token' },
    { source: 'header', name: 'x-token' },
    { source: 'cookie', name: 'token' },
    { source: 'protocol', name: 'bearer.' },
  ],
  key: [
    { source: 'header', name: 'x-api-key' },
    { source: 'query', name: 'api_key' },
    { source: 'bearer', name: '' },
    { source: 'cookie', name: 'apikey' },
    { source: 'protocol', name: 'key.' },
  ],
};
const spec = (f: { source: Source; name: string }) => (f.source === 'bearer' ? 'bearer' : `${f.source}:${f.name}`);

/** What each authenticator may say about a credential it found. */
const WORDS: Record<Auth, string[]> = {
  jwt: ['token malformed', 'token too large', 'signature invalid', 'algorithm not allowed', 'token invalid', 'token expired', 'token not yet valid'],
  key: ['api key invalid', 'token too large'],
};
const VALID: Record<Auth, string> = { jwt: TOKEN, key: API_KEY };

// ---------------------------------------------------------------------------------------------------------
// Junk

/** Text that is never the real credential: anything, near misses, sizes around the 8 KiB token limit. */
const junkArb = fc
  .oneof(
    { weight: 3, arbitrary: fc.stringMatching(/^[\x21-\x7e]{1,80}$/) },
    { weight: 2, arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 }) },
    { weight: 1, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 40 }) },
    { weight: 1, arbitrary: fc.constantFrom('', ' ', '\t', '%', '%zz', '%00', '%0d%0a', '%2e%2e', '"', '""', ';', ',', '=', 'null', 'undefined', '[object Object]', '__proto__', '{}', '..', '.') },
    {
      weight: 2,
      arbitrary: fc.tuple(fc.constantFrom(TOKEN, API_KEY), fc.nat(), fc.constantFrom('flip', 'drop', 'insert', 'case')).map(([valid, at, op]) => {
        const i = at % valid.length;
        const c = valid[i]!;
        if (op === 'drop') return valid.slice(0, i) + valid.slice(i + 1);
        if (op === 'insert') return `${valid.slice(0, i)}A${valid.slice(i)}`;
        if (op === 'case') return valid.slice(0, i) + (c === c.toUpperCase() ? c.toLowerCase() : c.toUpperCase()) + valid.slice(i + 1);
        return valid.slice(0, i) + (c === 'A' ? 'B' : 'A') + valid.slice(i + 1);
      }),
    },
    { weight: 1, arbitrary: fc.integer({ min: 8000, max: 8400 }).map((n) => 'a'.repeat(n)) },
    { weight: 1, arbitrary: fc.integer({ min: 12000, max: 30000 }).map((n) => 'b'.repeat(n)) },
  )
  .filter((junk) => junk !== TOKEN && junk !== API_KEY && junk.trim() !== TOKEN && junk.trim() !== API_KEY);

/** A value the source surely finds and hands over as it is: a plain token (what a real one looks like). */
const findable = (value: string) => /^[A-Za-z0-9._~+/=-]+$/.test(value) && Buffer.byteLength(value) <= 4000;

/** How a value travels in a source: as is, or percent-encoded where a source allows it. */
interface Delivery {
  headers: [string, string][];
  query?: string;
}

function deliver(f: { source: Source; name: string }, value: string, encode: boolean): Delivery {
  const raw = utf8(value);
  // (Lone surrogates become U+FFFD first, as in UTF-8: encodeURIComponent refuses them.)
  const encodeURIComponent = (v: string) => globalThis.encodeURIComponent(Buffer.from(v, 'utf8').toString('utf8'));
  switch (f.source) {
    case 'bearer':
      return { headers: [['Authorization', `Bearer ${raw}`]] };
    case 'header':
      return { headers: [[f.name, raw]] };
    case 'query':
      return { headers: [], query: `${f.name}=${encode ? encodeURIComponent(value) : raw}` };
    case 'cookie':
      return { headers: [['Cookie', `theme=dark; ${f.name}=${encode ? encodeURIComponent(value) : raw}`]] };
    case 'protocol':
      return { headers: [['Sec-WebSocket-Protocol', `chat, ${f.name}${raw}`]] };
  }
}

interface Case {
  route: Auth | 'both';
  /** Sources in request order, with what each carries. */
  parts: { from: { source: Source; name: string }; value: string; valid: boolean; encode: boolean }[];
}

const ROUTE_AUTHS: Record<Case['route'], Auth[]> = { jwt: ['jwt'], key: ['key'], both: ['key', 'jwt'] };

const caseArb: fc.Arbitrary<Case> = fc.oneof(
  // One source, junk.
  {
    weight: 4,
    arbitrary: fc
      .tuple(fc.constantFrom<Case['route']>('jwt', 'key', 'both'), fc.nat({ max: 4 }), junkArb, fc.boolean())
      .map(([route, i, value, encode]) => {
        const auth = ROUTE_AUTHS[route][0]!;
        return { route, parts: [{ from: FROM[auth][i]!, value, valid: false, encode }] };
      }),
  },
  // Two sources of one authenticator, one valid and one findable junk: the earlier one in `from` decides.
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.constantFrom<Auth>('jwt', 'key'), fc.nat({ max: 4 }), fc.nat({ max: 3 }), junkArb.filter(findable), fc.boolean())
      .map(([auth, a, b, value, junkFirst]) => {
        const i = Math.min(a, (a + 1 + b) % 5);
        const j = Math.max(a, (a + 1 + b) % 5);
        const first = { from: FROM[auth][i]!, value: junkFirst ? value : VALID[auth], valid: !junkFirst, encode: false };
        const second = { from: FROM[auth][j]!, value: junkFirst ? VALID[auth] : value, valid: junkFirst, encode: false };
        return { route: auth as Case['route'], parts: [second, first] };
      }),
  },
);

// ---------------------------------------------------------------------------------------------------------
// The oracle

interface Expect {
  /** 101 expected (the first source found holds the valid credential). */
  accept: boolean;
  /** The authenticator that finds the first credential, when it surely does. */
  decides?: Auth;
}

function expectOf(c: Case): Expect {
  for (const auth of ROUTE_AUTHS[c.route]) {
    for (const f of FROM[auth]) {
      const part = c.parts.find((p) => p.from.source === f.source && p.from.name === f.name);
      if (!part) continue;
      if (part.valid) return { accept: true, decides: auth };
      if (findable(part.value)) return { accept: false, decides: auth };
      // The parser, the source's rules or the chain may or may not see it: the next may decide.
      return { accept: false };
    }
  }
  return { accept: false };
}

// ---------------------------------------------------------------------------------------------------------
// The test

async function control(gw: TestGateway): Promise<void> {
  for (const [path, headers] of [
    ['/jwt', { Authorization: `Bearer ${TOKEN}` }],
    ['/key', { 'X-Api-Key': API_KEY }],
  ] as const) {
    const ws = new WebSocket(gw.url(path), { headers });
    ws.on('error', () => {});
    await once(ws, 'open');
    const closed = once(ws, 'close');
    ws.close();
    await closed;
  }
}

t.test('junk credentials in every source: 401 with the right words (400/414/431 for what the parser refuses), never 101, never 5xx', async (t) => {
  const crashes = crashSpy(t);
  const upstream = await startEchoUpstream(t);
  const gw = await startSidecar(t, {
    limits: { handshakeTimeoutMs: 2000 },
    authenticators: {
      jwt: jwtAuth({ from: FROM.jwt.map(spec) }),
      key: { type: 'apiKey', from: FROM.key.map(spec), keys: [{ sha256: hashApiKey(API_KEY), subject: 'svc' }] },
    },
    routes: [
      { path: '/jwt', auth: ['jwt'], upstream: upstream.url, origins: [ORIGIN] },
      { path: '/key', auth: ['key'], upstream: upstream.url, origins: [ORIGIN] },
      { path: '/both', auth: ['key', 'jwt'], upstream: upstream.url, origins: [ORIGIN] },
    ],
  });
  await control(gw);
  await eventually(() => gw.gateway.connections === 0 && upstream.open === 0, 3000, 'warm-up closed');
  const baseline = await fdBaseline();
  const s = stats('credentials in every source');
  const junkSeen = new Set<string>();
  let n = 0;

  await check(s, 300, [caseArb], async (c) => {
    const e = expectOf(c);
    const query = c.parts.map((p) => deliver(p.from, p.value, p.encode)).flatMap((d) => (d.query ? [d.query] : []));
    const headers = c.parts.flatMap((p) => deliver(p.from, p.value, p.encode).headers);
    const head =
      `GET /${c.route}${query.length > 0 ? `?${query.join('&')}` : ''} HTTP/1.1\r\n` +
      `Host: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${wsKey()}\r\n` +
      headers.map(([name, value]) => `${name}: ${value}\r\n`).join('') +
      '\r\n';
    const res = await exchange(gw.port, bytesOf(head));
    const wrong = problemsOf(res);
    const description = descriptionOf(res);
    const sources = c.parts.map((p) => `${p.valid ? 'valid' : 'junk'}@${spec(p.from)}`).join(' + ');
    count(s, res.raw === '' ? 'none' : res.status, `${res.status === 101 ? 'accepted' : `${res.status} ${description ?? ''}`} (${c.parts.length === 1 ? c.parts[0]!.from.source : 'pair'})`);
    if (e.accept && res.status !== 101) wrong.push(`expected 101 (${sources}), got ${res.status} ${description}`);
    if (!e.accept && res.status === 101) wrong.push(`junk accepted (${sources})`);
    if (!e.accept && e.decides && res.status === 401) {
      if (errorOf(res) !== 'invalid_token' || !WORDS[e.decides].includes(description ?? '')) wrong.push(`${e.decides} found the credential, but the answer says ${errorOf(res)} / ${description}`);
    }
    if (!e.accept && res.status === 401 && !e.decides && ![...WORDS.jwt, ...WORDS.key, 'credentials required'].includes(description ?? '')) wrong.push(`401 with an unexpected description ${description}`);
    const junk = c.parts.filter((p) => !p.valid && distinctive(p.value)).map((p) => p.value);
    junk.forEach((j) => junkSeen.add(j));
    const inResponse = leaked(res.raw, { ...SECRETS, ...Object.fromEntries(junk.map((j, i) => [`junk ${i}`, j])) });
    if (inResponse.length > 0) wrong.push(`the response holds ${inResponse.join(', ')}`);
    if (res.status === 101) {
      const seen = upstream.seen.at(-1);
      // The junk that was not used travels on as it came; a near miss may hold the valid value in it.
      let forwarded = `${decodeURIComponent(seen?.url ?? '')} ${JSON.stringify(seen?.headers)} ${seen?.protocol}`;
      for (const p of c.parts.filter((x) => !x.valid)) forwarded = forwarded.replaceAll(p.value, '');
      if (forwarded.includes(VALID[e.decides ?? 'jwt'])) wrong.push('the used credential reached the upstream');
    }
    if (wrong.length > 0) throw new Error(`${wrong.join('; ')}\nrequest: ${JSON.stringify(head.slice(0, 500))}\nanswer: ${JSON.stringify(res.raw.slice(0, 400))}`);
    if (++n % 50 === 0) await control(gw);
  });

  t.comment(`${s.cases} cases, statuses ${JSON.stringify(s.statuses)}`);
  await control(gw);
  t.pass('valid clients are still served after the run');
  await eventually(() => gw.gateway.connections === 0 && upstream.open === 0, 5000, 'every connection closed').catch(() => {});
  t.equal(gw.gateway.connections, 0, 'no connection left in the gateway');
  t.equal(upstream.open, 0, 'no connection left at the upstream');
  const fds = await fdsBackTo(baseline);
  t.ok(fds <= baseline + 2, `open fds ${fds}, baseline ${baseline}`);
  const log = gw.logText();
  t.same(leaked(log, SECRETS), [], 'no secret or valid credential in the log');
  t.same([...junkSeen].filter((j) => log.includes(j)).slice(0, 3), [], `none of the ${junkSeen.size} distinctive junk values in the log`);
  t.same(crashes, [], 'no uncaught exception or unhandled rejection');
});
