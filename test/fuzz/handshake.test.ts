// Fuzzing raw handshake requests (issue 7) against the real sidecar server (createGatewayServer) in front of
// a real ws echo upstream, over real sockets: arbitrary methods and versions, header names and values with
// CR/LF/NUL/obs-fold, duplicated, dropped and oversized headers, bad Sec-WebSocket-Key/Version, odd URLs
// (percent-encoding, dot segments, backslashes, huge query strings), credentials in every source.
//
// Each generated request is built from pieces that say what they do to it: `keeps` (still a valid,
// authenticated upgrade), `breaks` (it must be refused) or `either` (the parser may go either way). The
// property: every answer is a complete HTTP/1.1 response; a 101 only for a request that may be valid, and
// then the upstream got the routed path, the gateway's identity and never the credential; every other
// answer a documented 4xx with the socket closed by the server; the process keeps serving; no fd is left;
// no secret in any response or log line.
import { once } from 'node:events';
import fc from 'fast-check';
import t from 'tap';
import { WebSocket } from 'ws';
import { startSidecar, type TestGateway } from '../helpers/gateway.js';
import { eventually } from '../helpers/net.js';
import { SECRET, hs256, jwtAuth } from '../helpers/tokens.js';
import { wsKey } from '../helpers/upgrade.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';
import {
  bytesOf,
  check,
  count,
  crashSpy,
  descriptionOf,
  distinctive,
  exchange,
  fdBaseline,
  fdsBackTo,
  leaked,
  problemsOf,
  stats,
  utf8,
  type Exchange,
  type PropertyStats,
} from './harness.js';

const ORIGIN = 'https://app.example.com';
const MAX_HEADER_BYTES = 4096;
const TOKEN = hs256({ sub: 'alice' });
const FORGED = hs256({ sub: 'mallory' }, 'another-secret-0123456789abcdef-0123456789');
const SECRETS = { 'the HS256 secret': SECRET, 'the valid token': TOKEN };

// ---------------------------------------------------------------------------------------------------------
// The request model

type Effect = 'keeps' | 'breaks' | 'either';

/** One header line: name, separator, value (strings of bytes, one char per byte). */
interface Header {
  name: string;
  colon: string;
  value: string;
  effect: Effect;
  tag: string;
}

/** A credential as delivered: its effect on the authenticated route (a public route ignores it). */
interface Credential {
  headers: Header[];
  /** A `name=value` pair for the query string. */
  query?: string;
  effect: Effect;
  tag: string;
  /** Junk values worth looking for in the log afterwards. */
  junk: string[];
}

interface Case {
  method: string;
  sep: string;
  target: string;
  version: string;
  eol: string;
  /** The headers in wire order, without the credential and origin. */
  headers: Header[];
  credential: Credential;
  origin: Header[];
  originEffect: Effect;
  trailing: string;
  /** The one well-formed Sec-WebSocket-Key sent, when exactly that was sent. */
  key: string | undefined;
  tags: string[];
}

const h = (name: string, value: string, effect: Effect, tag: string, colon = ': '): Header => ({ name, colon, value, effect, tag });
const worst = (...effects: Effect[]): Effect => (effects.includes('breaks') ? 'breaks' : effects.includes('either') ? 'either' : 'keeps');

/** A header name with its case changed (HTTP field names are case-insensitive). */
const anyCase = (name: string) =>
  fc.oneof(
    fc.constant(name),
    fc.constant(name.toLowerCase()),
    fc.constant(name.toUpperCase()),
    fc.array(fc.boolean(), { minLength: name.length, maxLength: name.length }).map((flips) => [...name].map((c, i) => (flips[i] ? c.toUpperCase() : c.toLowerCase())).join('')),
  );

/** Printable ASCII, no leading or trailing space. */
const printable = (max: number) => fc.stringMatching(new RegExp(`^[\\x21-\\x7e]([\\x20-\\x7e]{0,${max}}[\\x21-\\x7e])?$`));

/** Control characters, CR/LF/NUL, obs-fold, DEL, non-ASCII: what a parser must refuse or survive. */
const hostileText = fc
  .array(
    fc.oneof(
      { weight: 4, arbitrary: fc.stringMatching(/^[\x20-\x7e]{1,8}$/) },
      { weight: 2, arbitrary: fc.constantFrom('\0', '\r', '\n', '\r\n', '\r\n ', '\r\n\t', '\x7f', '\x01', '\x1b', '\t', ' ', '\x0b', '\x0c', ':', '\r\n\r\n') },
      { weight: 1, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 6 }).map(utf8) },
      { weight: 1, arbitrary: fc.integer({ min: 0x80, max: 0xff }).map((b) => String.fromCharCode(b)) },
    ),
    { minLength: 1, maxLength: 8 },
  )
  .map((parts) => parts.join(''));

/** Names that change how the request is framed, routed or authenticated: never used as "benign" extras. */
const SIGNIFICANT = new Set([
  'host', 'connection', 'upgrade', 'sec-websocket-key', 'sec-websocket-version', 'sec-websocket-protocol', 'sec-websocket-extensions',
  'authorization', 'x-token', 'cookie', 'origin', 'content-length', 'transfer-encoding', 'expect', 'te', 'trailer', 'x-fuzz-case',
]);

/** A family of pieces: forms that keep the request valid, and forms that do not (or may not). */
interface Family<T> {
  good: fc.Arbitrary<T>;
  bad: fc.Arbitrary<T>;
}

/** One header family: the headers sent (none when dropped), their effect and a tag for the figures. */
interface Headers {
  headers: Header[];
  effect: Effect;
  tag: string;
}
const headers = (list: Header[], tag: string, missing: Effect = 'breaks'): Headers => ({
  headers: list,
  effect: list.length === 0 ? missing : worst(...list.map((x) => x.effect)),
  tag: list.length === 0 ? `${tag}:missing` : list[0]!.tag,
});

// Method, version, separators.
const method: Family<{ value: string; effect: Effect }> = {
  good: fc.constant({ value: 'GET', effect: 'keeps' as Effect }),
  bad: fc
    .oneof(
      fc.constantFrom('POST', 'PUT', 'HEAD', 'DELETE', 'OPTIONS', 'PATCH', 'TRACE', 'CONNECT', 'get', 'Get', 'GETT', 'GE', 'M-SEARCH', 'PROPFIND', 'PURGE', 'SOURCE'),
      fc.stringMatching(/^[A-Z]{1,12}$/),
      fc.stringMatching(/^[\x21-\x7e]{1,10}$/),
      hostileText,
    )
    .filter((m) => m !== 'GET')
    .map((value) => ({ value, effect: 'breaks' as Effect })),
};
const version: Family<{ value: string; effect: Effect }> = {
  good: fc.constant({ value: 'HTTP/1.1', effect: 'keeps' as Effect }),
  bad: fc
    .oneof(fc.constantFrom('HTTP/1.0', 'HTTP/2.0', 'HTTP/0.9', 'HTTP/1.2', 'HTTP/3.0', 'http/1.1', 'HTTP/1.1x', 'HTTP/11', 'HTTP/1', 'HTTPS/1.1', 'HTTP/1.1 ', ''), fc.stringMatching(/^HTTP\/[0-9]\.[0-9]$/))
    .filter((v) => v !== 'HTTP/1.1')
    .map((value) => ({ value, effect: 'breaks' as Effect })),
};
/** Separators of the request line and line ends. */
const framing: Family<{ sep: string; eol: string }> = {
  good: fc.constant({ sep: ' ', eol: '\r\n' }),
  bad: fc.oneof(
    fc.constantFrom('  ', '\t', ' \t').map((sep) => ({ sep, eol: '\r\n' })),
    fc.constant({ sep: ' ', eol: '\n' }),
  ),
};

// The upgrade's own headers.
const host: Family<Headers> = {
  good: fc.oneof(
    { weight: 6, arbitrary: anyCase('Host').map((n) => headers([h(n, '127.0.0.1', 'keeps', 'host')], 'host')) },
    { weight: 1, arbitrary: fc.stringMatching(/^[a-z0-9.-]{1,30}(:[0-9]{1,5})?$/).map((v) => headers([h('Host', v, 'keeps', 'host:other')], 'host')) },
  ),
  bad: fc.oneof(
    fc.constant(headers([], 'host', 'either')),
    printable(40).map((v) => headers([h('Host', '127.0.0.1', 'either', 'host:dup'), h('Host', v, 'either', 'host:dup')], 'host')),
    printable(40).map((v) => headers([h('Host', v, 'either', 'host:odd')], 'host')),
  ),
};
const connection: Family<Headers> = {
  good: fc
    .tuple(anyCase('Connection'), fc.constantFrom('Upgrade', 'upgrade', 'UPGRADE', 'keep-alive, Upgrade', 'Upgrade, keep-alive', ' Upgrade '))
    .map(([n, v]) => headers([h(n, v, 'keeps', 'connection')], 'connection')),
  bad: fc.oneof(
    fc.constantFrom('close', 'keep-alive', 'Upgrad', 'Upgrades', 'X').map((v) => headers([h('Connection', v, 'breaks', 'connection:bad')], 'connection')),
    fc.constant(headers([], 'connection')),
    fc.constant(headers([h('Connection', 'Upgrade', 'either', 'connection:dup'), h('Connection', 'close', 'either', 'connection:dup')], 'connection')),
  ),
};
const upgrade: Family<Headers> = {
  good: fc.tuple(anyCase('Upgrade'), fc.constantFrom('websocket', 'WebSocket', 'WEBSOCKET', ' websocket')).map(([n, v]) => headers([h(n, v, 'keeps', 'upgrade')], 'upgrade')),
  bad: fc.oneof(
    fc.constantFrom('websocket2', 'h2c', 'websocket, h2c', '', 'web socket', 'websockets', 'HTTP/2.0').map((v) => headers([h('Upgrade', v, 'breaks', 'upgrade:bad')], 'upgrade')),
    fc.constant(headers([], 'upgrade')),
    fc.constant(headers([h('Upgrade', 'websocket', 'either', 'upgrade:dup'), h('Upgrade', 'websocket', 'either', 'upgrade:dup')], 'upgrade')),
  ),
};
const wsVersion: Family<Headers> = {
  good: fc.tuple(anyCase('Sec-WebSocket-Version'), fc.constantFrom('13', ' 13', '13 ')).map(([n, v]) => headers([h(n, v, 'keeps', 'version')], 'version')),
  bad: fc.oneof(
    fc
      .oneof(fc.constantFrom('8', '12', '14', '013', '13.0', '', '1 3', 'thirteen', '13,13', '13, 8', '+13', '0x0d'), fc.stringMatching(/^[0-9]{1,4}$/))
      .filter((v) => v.trim() !== '13')
      .map((v) => headers([h('Sec-WebSocket-Version', v, 'breaks', 'version:bad')], 'version')),
    fc.constant(headers([], 'version')),
    // Node joins repeated headers with ", ": "13, 13" is not 13.
    fc.constant(headers([h('Sec-WebSocket-Version', '13', 'breaks', 'version:dup'), h('Sec-WebSocket-Version', '13', 'breaks', 'version:dup')], 'version')),
  ),
};

/** RFC 6455 4.1: the key is 16 random bytes, base64 (header values lose their surrounding whitespace). */
const wellFormedKey = (value: string) => /^[+/0-9A-Za-z]{22}==$/.test(value.replace(/^[ \t]+|[ \t]+$/g, ''));
const keyHeaders = (name: string, values: readonly string[]): Headers & { key: string | undefined } => {
  const effect: Effect = values.length === 1 && wellFormedKey(values[0]!) ? 'keeps' : /[\r\n\0]/.test(values.join('')) ? 'either' : 'breaks';
  const tag = values.length === 0 ? 'key:missing' : values.length > 1 ? 'key:dup' : effect === 'keeps' ? 'key' : 'key:bad';
  return { headers: values.map((v) => h(name, v, effect, tag)), effect: values.length === 0 ? 'breaks' : effect, tag, key: effect === 'keeps' ? values[0]!.trim() : undefined };
};
const key: Family<Headers & { key: string | undefined }> = {
  good: fc.tuple(anyCase('Sec-WebSocket-Key'), fc.constantFrom('', ' ', '  ')).map(([n, pad]) => keyHeaders(n, [pad + wsKey() + pad])),
  bad: fc.oneof(
    fc
      .oneof(
        fc.uint8Array({ minLength: 0, maxLength: 40 }).filter((b) => b.length !== 16).map((b) => Buffer.from(b).toString('base64')),
        fc.constantFrom('x', 'AAAAAAAAAAAAAAAAAAAAAA=', 'AAAAAAAAAAAAAAAAAAAAAA===', 'AAAAAAAAAAAAAAAAAAAAAAAA', 'not-a-key', '=='.repeat(12)),
        fc.constant(null).map(() => `${wsKey()}x`),
        fc.constant(null).map(() => wsKey().slice(1)),
        fc.constant(null).map(() => wsKey().replace(/=/g, 'A')),
        fc.constant(null).map(() => wsKey().replace(/\+/g, '-').replace(/\//g, '_')),
        printable(30),
        hostileText,
      )
      .map((v) => keyHeaders('Sec-WebSocket-Key', [v])),
    fc.constant(null).map(() => keyHeaders('Sec-WebSocket-Key', [])),
    // Joined by Node as "k1, k2".
    fc.constant(null).map(() => keyHeaders('Sec-WebSocket-Key', [wsKey(), wsKey()])),
  ),
};

// Credentials, in every source of the route's authenticator (bearer, query, header, cookie, protocol).
const junkArb = fc.oneof(
  fc.stringMatching(/^[\x21-\x7e]{1,60}$/),
  fc.constant(FORGED),
  fc.constant(null).map(() => `${TOKEN.slice(0, -3)}abc`),
  fc.constant(null).map(() => TOKEN.split('.').slice(0, 2).join('.')),
  fc.base64String({ minLength: 4, maxLength: 80 }),
);
const credential: Family<Credential> = {
  good: fc.oneof(
    {
      weight: 4,
      arbitrary: fc
        .tuple(anyCase('Authorization'), fc.constantFrom('Bearer ', 'bearer ', 'BEARER ', 'Bearer  ', 'Bearer\t'), fc.constantFrom('', ' ', '\t'))
        .map(([n, scheme, tail]): Credential => ({ headers: [h(n, `${scheme}${TOKEN}${tail}`, 'keeps', 'cred')], effect: 'keeps', tag: 'cred:bearer', junk: [] })),
    },
    { weight: 1, arbitrary: fc.constant<Credential>({ headers: [], query: `access_token=${TOKEN}`, effect: 'keeps', tag: 'cred:query', junk: [] }) },
    { weight: 1, arbitrary: anyCase('X-Token').map((n): Credential => ({ headers: [h(n, TOKEN, 'keeps', 'cred')], effect: 'keeps', tag: 'cred:header', junk: [] })) },
    {
      weight: 1,
      arbitrary: fc
        .constantFrom(`token=${TOKEN}`, `theme=dark; token=${TOKEN}`, `token=${TOKEN}; lang=en`, `token="${TOKEN}"`)
        .map((v): Credential => ({ headers: [h('Cookie', v, 'keeps', 'cred')], effect: 'keeps', tag: v.includes('"') ? 'cred:cookie-quoted' : 'cred:cookie', junk: [] })),
    },
    {
      weight: 1,
      arbitrary: fc
        .constantFrom(`bearer, bearer.${TOKEN}`, `bearer.${TOKEN}`, `chat, bearer.${TOKEN}, bearer`)
        .map((v): Credential => ({ headers: [h('Sec-WebSocket-Protocol', v, 'keeps', 'cred')], effect: 'keeps', tag: 'cred:protocol', junk: [] })),
    },
  ),
  bad: fc.oneof(
    { weight: 1, arbitrary: fc.constant<Credential>({ headers: [], effect: 'breaks', tag: 'cred:none', junk: [] }) },
    {
      weight: 4,
      arbitrary: fc
        .tuple(
          fc.constantFrom('bearer', 'query', 'header', 'cookie', 'protocol', 'scheme'),
          junkArb,
          fc.constantFrom(`Basic ${TOKEN}`, 'Bearer', `Bearer ${TOKEN} extra`, `Token ${TOKEN}`, `Bearer${TOKEN}`, `Bearer ${TOKEN},x`),
        )
        .map(([source, junk, scheme]): Credential => {
          const base = { effect: 'breaks' as Effect, tag: `cred:junk-${source}`, junk: [junk] };
          switch (source) {
            case 'bearer':
              return { ...base, headers: [h('Authorization', `Bearer ${junk}`, 'breaks', 'cred')] };
            case 'query':
              return { ...base, headers: [], query: `access_token=${encodeURIComponent(junk)}` };
            case 'header':
              return { ...base, headers: [h('X-Token', junk, 'breaks', 'cred')] };
            case 'cookie':
              return { ...base, headers: [h('Cookie', `token=${encodeURIComponent(junk)}`, 'breaks', 'cred')] };
            case 'protocol':
              return { ...base, headers: [h('Sec-WebSocket-Protocol', `bearer, bearer.${junk.replace(/[^A-Za-z0-9._~-]/g, 'x')}`, 'breaks', 'cred')] };
            default:
              return { ...base, junk: [], headers: [h('Authorization', scheme, 'breaks', 'cred')] };
          }
        }),
    },
    { weight: 1, arbitrary: hostileText.map((v): Credential => ({ headers: [h('Authorization', `Bearer ${v}`, 'either', 'cred')], effect: 'either', tag: 'cred:hostile', junk: [] })) },
    // Node keeps the first of repeated Authorization headers; which one wins is Node's business.
    { weight: 1, arbitrary: fc.constant<Credential>({ headers: [h('Authorization', `Bearer ${TOKEN}`, 'either', 'cred'), h('Authorization', `Bearer ${FORGED}`, 'either', 'cred')], effect: 'either', tag: 'cred:dup', junk: [] }) },
  ),
};

const origin: Family<Headers> = {
  good: fc.oneof(
    { weight: 3, arbitrary: fc.constant(headers([], 'origin', 'keeps')) },
    { weight: 1, arbitrary: fc.constantFrom(ORIGIN, ORIGIN.toUpperCase(), 'https://APP.example.com').map((v) => headers([h('Origin', v, 'keeps', 'origin')], 'origin')) },
  ),
  bad: fc.oneof(
    fc
      .oneof(fc.constantFrom('https://evil.example', 'null', 'https://app.example.com.evil.example', 'http://app.example.com', 'https://app.example.com:443', `${ORIGIN}/`), printable(40))
      .filter((v) => v.toLowerCase() !== ORIGIN)
      .map((v) => headers([h('Origin', v, 'breaks', 'origin:other')], 'origin')),
    fc.constant(headers([h('Origin', ORIGIN, 'either', 'origin:dup'), h('Origin', 'https://evil.example', 'either', 'origin:dup')], 'origin')),
  ),
};

// Everything else a client may send.
const extras: Family<Header[][]> = {
  good: fc.array(
    fc.oneof(
      {
        weight: 6,
        arbitrary: fc
          .tuple(fc.stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,24}$/), fc.oneof(printable(60), fc.constant('')))
          .filter(([n]) => !SIGNIFICANT.has(n.toLowerCase()))
          .map(([n, v]) => [h(n, v, 'keeps', 'extra')]),
      },
      { weight: 1, arbitrary: fc.constantFrom('X-Auth-Subject', 'x-auth-claims', 'X-Forwarded-For', 'X-Forwarded-Host', 'X-Real-IP').map((n) => [h(n, 'mallory', 'keeps', 'extra:identity')]) },
      { weight: 1, arbitrary: fc.oneof(printable(200), fc.constant('a'.repeat(129)), fc.constant('../../etc')).map((v) => [h('X-Request-Id', v, 'keeps', 'extra:request-id')]) },
      { weight: 1, arbitrary: fc.constantFrom(':', ':\t', ':  ').map((colon) => [h('X-Colon', 'v', 'keeps', 'extra:colon', colon)]) },
    ),
    { maxLength: 3 },
  ),
  bad: fc.array(
    fc.oneof(
      { weight: 2, arbitrary: fc.tuple(hostileText, printable(20)).map(([n, v]) => [h(n, v, 'either', 'extra:hostile-name')]) },
      { weight: 2, arbitrary: fc.tuple(fc.stringMatching(/^X-[A-Za-z]{1,10}$/), hostileText).map(([n, v]) => [h(n, v, 'either', 'extra:hostile-value')]) },
      { weight: 1, arbitrary: hostileText.map((v) => [h('X-Request-Id', v, 'either', 'extra:hostile-request-id')]) },
      {
        weight: 1,
        arbitrary: fc
          .constantFrom(['Content-Length', '0'], ['Content-Length', '5'], ['Transfer-Encoding', 'chunked'], ['Expect', '100-continue'], ['Content-Length', '-1'], ['Transfer-Encoding', 'gzip, chunked'])
          .map(([n, v]) => [h(n!, v!, 'either', 'extra:framing')]),
      },
      { weight: 1, arbitrary: fc.integer({ min: 500, max: 16000 }).map((n) => [h('X-Pad', 'p'.repeat(n), 'keeps', 'extra:oversized')]) },
      { weight: 1, arbitrary: fc.integer({ min: 20, max: 400 }).map((n) => Array.from({ length: n }, (_, i) => h(`X-M-${i}`, 'v', 'keeps', 'extra:many'))) },
      { weight: 1, arbitrary: fc.constantFrom(' : ', ' :', '\t: ').map((colon) => [h('X-Space', 'v', 'breaks', 'extra:space-before-colon', colon)]) },
    ),
    { minLength: 1, maxLength: 3 },
  ),
};

// Targets: a route's path with dot segments, percent-encoding, backslashes, fragments, odd and huge queries.
const target: Family<{ path: string; query: string[] }> = {
  good: fc.record({
    path: fc.oneof({ weight: 4, arbitrary: fc.constant('/chat') }, { weight: 2, arbitrary: fc.constantFrom('/open', '/open/', '/open/x', '/open/x/y') }, { weight: 1, arbitrary: fc.constantFrom('/x/../chat', '/./chat', '/x/%2e%2e/chat', '/x\\..\\chat', '/chat#frag', '/open/../chat', '/chat/../open/x') }),
    query: fc.oneof(
      { weight: 3, arbitrary: fc.constant([] as string[]) },
      { weight: 2, arbitrary: fc.array(fc.tuple(fc.stringMatching(/^[a-z0-9]{1,8}$/), fc.stringMatching(/^[A-Za-z0-9._~%+=-]{0,20}$/)).map(([k, v]) => `${k}=${v}`), { minLength: 1, maxLength: 5 }) },
    ),
  }),
  bad: fc.record({
    path: fc.oneof(
      { weight: 3, arbitrary: fc.constantFrom('/chat/.', '/chat/', '//chat', '/%63hat', '/x/%2E%2E/chat', '\\chat', '/chat;a=b', '/CHAT', '/chat%00', '/chat%2F', '/open/%2e%2e/chat', '/open/..%2fchat', '/%2e/chat', '/open#/../chat', '/chat/..', '/.%2e/chat', '*', 'http://127.0.0.1/chat', '', '/', '/nope') },
      { weight: 2, arbitrary: fc.tuple(fc.constantFrom('/chat', '/open/'), fc.stringMatching(/^[\x21-\x7e]{0,30}$/)).map(([a, b]) => a + b) },
      { weight: 1, arbitrary: fc.tuple(fc.constantFrom('/chat', '/open/'), hostileText).map(([a, b]) => a + b) },
    ),
    query: fc.oneof(
      fc.constant([] as string[]),
      fc.array(fc.stringMatching(/^[\x21-\x7e]{0,20}$/).map((p) => p.replace(/#/g, '%23')), { minLength: 1, maxLength: 4 }),
      fc.integer({ min: 100, max: 12000 }).map((n) => [`pad=${'q'.repeat(n)}`]),
    ),
  }),
};

const FAMILIES = { method, version, framing, host, connection, upgrade, wsVersion, key, credential, origin, extras, target } as const;
type FamilyName = keyof typeof FAMILIES;
type Pieces = { [K in FamilyName]: (typeof FAMILIES)[K] extends Family<infer T> ? T : never };

/** Each family generated both ways; the mode picks: all good, one family bad, or every family either way. */
const piecesArb = fc
  .record({
    mode: fc.oneof(
      { weight: 3, arbitrary: fc.constant<'clean' | 'chaos' | FamilyName>('clean') },
      { weight: 6, arbitrary: fc.constantFrom<FamilyName[]>(...(Object.keys(FAMILIES) as FamilyName[])) },
      { weight: 2, arbitrary: fc.constant<'clean' | 'chaos' | FamilyName>('chaos') },
    ),
    good: fc.record(Object.fromEntries(Object.entries(FAMILIES).map(([k, f]) => [k, f.good])) as { [K in FamilyName]: fc.Arbitrary<Pieces[K]> }),
    bad: fc.record(Object.fromEntries(Object.entries(FAMILIES).map(([k, f]) => [k, f.bad])) as { [K in FamilyName]: fc.Arbitrary<Pieces[K]> }),
    coins: fc.array(fc.boolean(), { minLength: 12, maxLength: 12 }),
  })
  .map(({ mode, good, bad, coins }) => {
    const names = Object.keys(FAMILIES) as FamilyName[];
    const pick = <K extends FamilyName>(name: K, i: number): Pieces[K] => (mode === name || (mode === 'chaos' && coins[i]) ? bad[name] : good[name]);
    return { mode, ...(Object.fromEntries(names.map((n, i) => [n, pick(n, i)])) as Pieces) };
  });

const caseArb = fc
  .tuple(piecesArb, fc.array(fc.nat(), { minLength: 5, maxLength: 5 }), fc.oneof({ weight: 6, arbitrary: fc.constant('') }, { weight: 1, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 64 }).map((b) => Buffer.from(b).toString('latin1')) }))
  .map(([p, order, trailing]) => {
    const query = [...p.target.query];
    if (p.credential.query) query.splice(order[0]! % (query.length + 1), 0, p.credential.query);
    // The query goes before a fragment ("/chat#frag" + query is "/chat?query#frag").
    const hash = p.target.path.indexOf('#');
    const [path, fragment] = hash === -1 ? [p.target.path, ''] : [p.target.path.slice(0, hash), p.target.path.slice(hash)];
    const target = query.length > 0 ? `${path}?${query.join('&')}${fragment}` : p.target.path;
    // The upgrade's headers in order, extras spliced in at generated positions.
    const list: Header[] = [...p.host.headers, ...p.connection.headers, ...p.upgrade.headers, ...p.wsVersion.headers, ...p.key.headers];
    p.extras.forEach((extra, i) => list.splice(order[i + 1]! % (list.length + 1), 0, ...extra));
    const tags = [`mode:${p.mode}`, p.connection.tag, p.upgrade.tag, p.wsVersion.tag, p.key.tag, p.credential.tag, ...p.extras.map((e) => e[0]?.tag ?? 'extra')];
    return {
      method: p.method.value,
      sep: p.framing.sep,
      target,
      version: p.version.value,
      eol: p.framing.eol,
      headers: list,
      credential: p.credential,
      origin: p.origin.headers,
      originEffect: p.origin.effect,
      trailing,
      key: p.key.key,
      tags,
      // The verdict pieces that do not depend on the route.
      fixed: worst(p.method.effect, p.version.effect, p.host.effect, p.connection.effect, p.upgrade.effect, p.wsVersion.effect, p.key.effect),
    } as Case & { fixed: Effect };
  });

// ---------------------------------------------------------------------------------------------------------
// The oracle

const printableTarget = (target: string) => /^[\x21-\x7e]*$/.test(target);

/**
 * Which route a target reaches once normalised the WHATWG way (the gateway's documented rule: dot
 * segments, `%2e` and backslashes resolved once), or null for none, or 'unknown' when the parser's verdict
 * on the bytes cannot be told in advance.
 */
function routeOf(target: string): { route: 'chat' | 'open' | null; pathname?: string } | 'unknown' {
  if (!printableTarget(target)) return 'unknown';
  if (!target.startsWith('/')) return { route: null };
  let pathname: string;
  try {
    pathname = new URL(`http://gateway.invalid${target}`).pathname;
  } catch {
    return { route: null };
  }
  if (pathname === '/chat') return { route: 'chat', pathname };
  if (pathname === '/open' || pathname.startsWith('/open/')) return { route: 'open', pathname };
  return { route: null, pathname };
}

/** Header bytes as the gateway counts them (name + trimmed value + 4 per line). */
const headerBytes = (headers: Header[]) => headers.reduce((n, x) => n + x.name.length + x.value.replace(/^[ \t]+|[ \t]+$/g, '').length + 4, 0);

interface Verdict {
  expect: 'accept' | 'reject' | 'either';
  route: 'chat' | 'open' | null | 'unknown';
  pathname?: string;
}

function verdict(c: Case & { fixed: Effect }, all: Header[]): Verdict {
  const reached = routeOf(c.target);
  // Credential and Origin headers count for the authenticated route only (below); their raw bytes may still
  // trip the parser anywhere ('either').
  const routed = (x: Header) => x.tag === 'cred' || x.tag.startsWith('origin');
  const effects: Effect[] = [c.fixed, ...all.filter((x) => !routed(x)).map((x) => x.effect), ...all.filter((x) => routed(x) && x.effect === 'either').map(() => 'either' as Effect)];
  if (c.sep !== ' ' || c.eol !== '\r\n') effects.push('either');
  if (Buffer.byteLength(c.target, 'latin1') > 8192) effects.push('breaks');
  const bytes = headerBytes(all);
  if (bytes > MAX_HEADER_BYTES) effects.push('breaks');
  else if (bytes > MAX_HEADER_BYTES - 200 || all.length > 1900) effects.push('either');
  if (reached === 'unknown') {
    effects.push('either');
    return { expect: expectOf(worst(...effects)), route: 'unknown' };
  }
  if (reached.route === null) effects.push('breaks');
  if (reached.route === 'chat') effects.push(c.credential.effect, c.originEffect);
  // A query that carries an access_token the credential piece did not put there.
  if (reached.route === 'chat' && !c.credential.query && /(^|[?&])access(_|%5f)token=/i.test(c.target)) effects.push('either');
  return { expect: expectOf(worst(...effects)), route: reached.route, ...(reached.pathname !== undefined && { pathname: reached.pathname }) };
}

const expectOf = (e: Effect) => (e === 'keeps' ? 'accept' : e === 'breaks' ? 'reject' : 'either');

// ---------------------------------------------------------------------------------------------------------
// The test

let caseNo = 0;

function serialize(c: Case, id: string): { bytes: Buffer; all: Header[] } {
  // The marker goes first, so a hostile value that ends the head early cannot push it out of the head.
  const all = [h('X-Fuzz-Case', id, 'keeps', 'marker'), ...c.headers, ...c.credential.headers, ...c.origin];
  const head = `${c.method}${c.sep}${c.target}${c.sep}${c.version}${c.eol}${all.map((x) => `${x.name}${x.colon}${x.value}${c.eol}`).join('')}${c.eol}`;
  return { bytes: bytesOf(head + c.trailing), all };
}

/** A valid client through the gateway: open, echo, close. */
async function control(gw: TestGateway): Promise<void> {
  const ws = new WebSocket(gw.url('/chat'), { headers: { Authorization: `Bearer ${TOKEN}` } });
  ws.on('error', () => {});
  await once(ws, 'open');
  ws.send('still serving');
  const [data] = (await once(ws, 'message')) as [Buffer];
  if (data.toString() !== 'still serving') throw new Error('control echo failed');
  const closed = once(ws, 'close');
  ws.close();
  await closed;
}

/** Checks one answer against the verdict; returns what is wrong. */
async function judge(c: Case, v: Verdict, res: Exchange, id: string, upstream: EchoUpstream): Promise<string[]> {
  const wrong = problemsOf(res, c.key, c.method === 'HEAD');
  if (res.status === 101) {
    if (v.expect === 'reject') wrong.push('101 for a request that must be refused');
    await eventually(() => upstream.seen.some((s) => s.headers['x-fuzz-case'] === id), 2000, 'the upstream to record the handshake').catch(() => {});
    const seen = upstream.seen.find((s) => s.headers['x-fuzz-case'] === id);
    if (!seen) wrong.push('101 but the upstream never saw the handshake');
    else {
      const pathname = new URL(`http://gateway.invalid${seen.url}`).pathname;
      const route = pathname === '/chat' ? 'chat' : pathname === '/open' || pathname.startsWith('/open/') ? 'open' : null;
      if (route === null) wrong.push(`the upstream got an unrouted path ${JSON.stringify(seen.url.slice(0, 80))}`);
      if (v.pathname !== undefined && pathname !== v.pathname) wrong.push(`the upstream got ${pathname}, routed was ${v.pathname}`);
      const subject = seen.headers['x-auth-subject'];
      if (route === 'chat' && subject !== 'alice') wrong.push(`the upstream got subject ${String(subject)} on /chat`);
      if (route === 'open' && subject !== undefined) wrong.push(`the upstream got subject ${String(subject)} on a public route`);
      if (route === 'chat' && `${seen.url} ${JSON.stringify(seen.headers)} ${seen.protocol}`.includes(TOKEN)) wrong.push('the credential reached the upstream');
    }
  } else if (v.expect === 'accept') {
    wrong.push(`expected 101, got ${res.status || 'nothing'}`);
  }
  // A public route ignores credentials and forwards them like any other header, so a subprotocol entry that
  // holds one may come back in its 101, to the client that sent it. Anywhere else: never.
  const ownToken = res.status === 101 && !(upstream.seen.find((x) => x.headers['x-fuzz-case'] === id)?.url ?? '').startsWith('/chat');
  const secrets = leaked(res.raw, {
    'the HS256 secret': SECRET,
    ...(!ownToken && { 'the valid token': TOKEN }),
    ...Object.fromEntries(c.credential.junk.filter(distinctive).map((j, i) => [`junk ${i}`, j])),
  });
  if (secrets.length > 0) wrong.push(`the response holds ${secrets.join(', ')}`);
  return wrong;
}

t.test('raw handshake requests: a complete 4xx, or 101 only when valid; closed, alive, no fd left, no secret', async (t) => {
  const crashes = crashSpy(t);
  const upstream = await startEchoUpstream(t);
  const gw = await startSidecar(t, {
    limits: { handshakeTimeoutMs: 2000, maxHeaderBytes: MAX_HEADER_BYTES },
    authenticators: { jwt: jwtAuth({ from: ['bearer', 'query:access_token', 'header:x-token', 'cookie:token', 'protocol:bearer.'] }) },
    routes: [
      { path: '/chat', auth: ['jwt'], upstream: upstream.url, origins: [ORIGIN] },
      { path: '/open/*', auth: [], upstream: upstream.url },
    ],
  });
  await control(gw);
  await eventually(() => gw.gateway.connections === 0 && upstream.open === 0, 3000, 'warm-up closed');
  const baseline = await fdBaseline();
  const s: PropertyStats = stats('raw handshake requests');
  const junkSeen: string[] = [];
  const byVerdict: Record<string, number> = {};

  await check(s, 300, [caseArb], async (c) => {
    const id = `fz-${++caseNo}`;
    const { bytes, all } = serialize(c, id);
    const v = verdict(c as Case & { fixed: Effect }, all);
    const res = await exchange(gw.port, bytes, { head: c.method === 'HEAD' });
    const wrong = await judge(c, v, res, id, upstream);
    count(s, res.raw === '' ? 'none' : res.status, `${res.status || 'none'} ${descriptionOf(res) ?? ''}`.trim());
    byVerdict[`${v.expect} → ${res.status === 101 ? '101' : res.status ? 'refused' : 'none'}`] = (byVerdict[`${v.expect} → ${res.status === 101 ? '101' : res.status ? 'refused' : 'none'}`] ?? 0) + 1;
    junkSeen.push(...c.credential.junk.filter(distinctive));
    if (wrong.length > 0) {
      throw new Error(`${wrong.join('; ')}\nexpected: ${v.expect} (route ${String(v.route)}), tags: ${c.tags.join(' ')}\nrequest: ${JSON.stringify(bytes.toString('latin1').slice(0, 600))}\nanswer: ${JSON.stringify(res.raw.slice(0, 400))}`);
    }
    if (caseNo % 50 === 0) await control(gw);
  });
  for (const [k, n] of Object.entries(byVerdict)) s.outcomes[`verdict ${k}`] = n;

  t.comment(`${s.cases} cases, statuses ${JSON.stringify(s.statuses)}`);
  await control(gw);
  t.pass('a valid client is still served after the run');
  await eventually(() => gw.gateway.connections === 0 && upstream.open === 0, 5000, 'every connection closed').catch(() => {});
  t.equal(gw.gateway.connections, 0, 'no connection left in the gateway');
  t.equal(upstream.open, 0, 'no connection left at the upstream');
  const fds = await fdsBackTo(baseline);
  t.ok(fds <= baseline + 2, `open fds ${fds}, baseline ${baseline}`);
  const log = gw.logText();
  t.same(leaked(log, SECRETS), [], 'no secret in the log');
  t.same(junkSeen.filter((j) => log.includes(j)).slice(0, 3), [], 'no junk credential in the log');
  t.same(crashes, [], 'no uncaught exception or unhandled rejection');
});
