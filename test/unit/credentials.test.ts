import type { IncomingMessage } from 'node:http';
import t from 'tap';
import {
  cookieValue,
  findCredential,
  offeredProtocols,
  parseSource,
  protocolMarker,
  removeCookie,
  stripCredential,
  type FoundCredential,
} from '../../src/credentials.js';

const BASE = 'http://gateway.invalid';

/** A request as the pure credential functions see it: a url and lower-cased headers. */
function request(url: string, headers: Record<string, string> = {}): { req: IncomingMessage; url: URL } {
  const req = { url, method: 'GET', headers: { ...headers } } as unknown as IncomingMessage;
  return { req, url: new URL(url, BASE) };
}

t.test('parseSource: each kind present, absent, empty', async (t) => {
  const table: [spec: string, url: string, headers: Record<string, string>, expected: FoundCredential | null][] = [
    // query:NAME
    ['query:access_token', '/c?access_token=abc', {}, { kind: 'query', name: 'access_token', value: 'abc' }],
    ['query:access_token', '/c?room=1&access_token=abc&x=2', {}, { kind: 'query', name: 'access_token', value: 'abc' }],
    ['query:access_token', '/c?room=1', {}, null],
    ['query:access_token', '/c', {}, null],
    ['query:access_token', '/c?access_token=', {}, null],
    ['query:access_token', '/c?access_token', {}, null],
    ['query:access_token', '/c?ACCESS_TOKEN=abc', {}, null],
    ['query:access_token', '/c', { authorization: 'Bearer abc' }, null],
    // bearer
    ['bearer', '/c', { authorization: 'Bearer abc.def.ghi' }, { kind: 'bearer', name: 'authorization', value: 'abc.def.ghi' }],
    ['bearer', '/c', { authorization: 'bearer abc' }, { kind: 'bearer', name: 'authorization', value: 'abc' }],
    ['bearer', '/c', { authorization: 'BEARER abc' }, { kind: 'bearer', name: 'authorization', value: 'abc' }],
    ['bearer', '/c', { authorization: 'BeArEr    abc   ' }, { kind: 'bearer', name: 'authorization', value: 'abc' }],
    ['bearer', '/c', { authorization: 'Bearer\tabc' }, { kind: 'bearer', name: 'authorization', value: 'abc' }],
    ['bearer', '/c', { authorization: 'Basic dXNlcjpwYXNz' }, null],
    ['bearer', '/c', { authorization: 'Bearer' }, null],
    ['bearer', '/c', { authorization: 'Bearer ' }, null],
    ['bearer', '/c', { authorization: 'Bearerabc' }, null],
    ['bearer', '/c', { authorization: 'Bearer a b' }, null],
    ['bearer', '/c', { authorization: '' }, null],
    ['bearer', '/c', {}, null],
    ['bearer', '/c?access_token=abc', {}, null],
    // header:NAME (name is case-insensitive, value is the whole header)
    ['header:X-Api-Key', '/c', { 'x-api-key': 'k-123 with spaces' }, { kind: 'header', name: 'x-api-key', value: 'k-123 with spaces' }],
    ['header:x-api-key', '/c', { 'x-api-key': 'k' }, { kind: 'header', name: 'x-api-key', value: 'k' }],
    ['header:X-Api-Key', '/c', { 'x-api-key': '' }, null],
    ['header:X-Api-Key', '/c', { 'x-other': 'k' }, null],
    ['header:X-Api-Key', '/c', {}, null],
    // cookie:NAME
    ['cookie:sid', '/c', { cookie: 'sid=xyz' }, { kind: 'cookie', name: 'sid', value: 'xyz' }],
    ['cookie:sid', '/c', { cookie: 'a=1; sid=xyz; b=2' }, { kind: 'cookie', name: 'sid', value: 'xyz' }],
    ['cookie:sid', '/c', { cookie: 'a=1;sid=xyz;b=2' }, { kind: 'cookie', name: 'sid', value: 'xyz' }],
    ['cookie:sid', '/c', { cookie: 'sid=s%3Aabc.sig' }, { kind: 'cookie', name: 'sid', value: 's:abc.sig' }],
    ['cookie:sid', '/c', { cookie: 'sid=' }, null],
    ['cookie:sid', '/c', { cookie: 'a=1; b=2' }, null],
    ['cookie:sid', '/c', { cookie: 'xsid=1; sidx=2' }, null],
    ['cookie:sid', '/c', {}, null],
    // protocol:PREFIX
    ['protocol:bearer.', '/c', { 'sec-websocket-protocol': 'bearer, bearer.tok123' }, { kind: 'protocol', name: 'bearer.', value: 'tok123', entry: 'bearer.tok123' }],
    ['protocol:bearer.', '/c', { 'sec-websocket-protocol': 'chat,bearer.tok , v2' }, { kind: 'protocol', name: 'bearer.', value: 'tok', entry: 'bearer.tok' }],
    ['protocol:bearer.', '/c', { 'sec-websocket-protocol': 'bearer.' }, null],
    ['protocol:bearer.', '/c', { 'sec-websocket-protocol': 'bearer' }, null],
    ['protocol:bearer.', '/c', { 'sec-websocket-protocol': 'chat, v2' }, null],
    ['protocol:bearer.', '/c', { 'sec-websocket-protocol': '' }, null],
    ['protocol:bearer.', '/c', {}, null],
  ];
  for (const [spec, url, headers, expected] of table) {
    const r = request(url, headers);
    const source = parseSource(spec);
    t.equal(source.spec, spec);
    t.same(source.find(r.req, r.url), expected, `${spec} ${url} ${JSON.stringify(headers)}`);
  }
});

t.test('parseSource: an unknown kind throws', async (t) => {
  t.throws(() => parseSource('basic'), { name: 'TypeError', message: 'unknown credential source "basic"' });
  t.throws(() => parseSource('form:token'), { name: 'TypeError', message: 'unknown credential source "form:token"' });
});

t.test('findCredential: the first source that is present wins, in `from` order', async (t) => {
  const query = parseSource('query:access_token');
  const bearer = parseSource('bearer');
  const cookie = parseSource('cookie:tok');
  const protocol = parseSource('protocol:bearer.');
  const all = request('/c?access_token=Q', { authorization: 'Bearer B', cookie: 'tok=C', 'sec-websocket-protocol': 'bearer, bearer.P' });
  t.equal(findCredential([query, bearer, cookie, protocol], all.req, all.url)?.value, 'Q');
  t.equal(findCredential([bearer, query, cookie, protocol], all.req, all.url)?.value, 'B');
  t.equal(findCredential([cookie, protocol, bearer, query], all.req, all.url)?.value, 'C');
  t.equal(findCredential([protocol, cookie, bearer, query], all.req, all.url)?.value, 'P');

  const onlyCookie = request('/c?access_token=', { cookie: 'tok=C' });
  t.same(findCredential([query, bearer, cookie], onlyCookie.req, onlyCookie.url), { kind: 'cookie', name: 'tok', value: 'C' }, 'absent and empty sources are skipped');
  const none = request('/c', { cookie: 'other=1' });
  t.equal(findCredential([query, bearer, cookie, protocol], none.req, none.url), null);
  t.equal(findCredential([], all.req, all.url), null);
});

t.test('stripCredential: query parameter removed, req.url rewritten, other params kept', async (t) => {
  const cases: [string, string][] = [
    ['/chat?room=1&access_token=abc&x=2', '/chat?room=1&x=2'],
    ['/chat?access_token=abc', '/chat'],
    ['/chat?access_token=abc&room=1', '/chat?room=1'],
    ['/a/b?room=1&access_token=abc', '/a/b?room=1'],
    ['/chat?a=1&a=2&access_token=abc', '/chat?a=1&a=2'],
  ];
  for (const [before, after] of cases) {
    const r = request(before, { authorization: 'Bearer keep' });
    const found = parseSource('query:access_token').find(r.req, r.url)!;
    stripCredential(r.req, r.url, found);
    t.equal(r.req.url, after, before);
    t.equal(r.url.searchParams.has('access_token'), false);
    t.equal(r.req.headers.authorization, 'Bearer keep', 'headers untouched');
  }
});

t.test('stripCredential (query) leaves the other parameters byte for byte', async (t) => {
  // Only the token parameter goes; the others stay byte for byte (no URLSearchParams re-encoding).
  for (const [before, after] of [
    ['/chat?q=a%20b&access_token=abc', '/chat?q=a%20b'],
    ['/chat?flag&access_token=abc', '/chat?flag'],
  ] as const) {
    const r = request(before);
    stripCredential(r.req, r.url, parseSource('query:access_token').find(r.req, r.url)!);
    t.equal(r.req.url, after, before);
  }
});

t.test('stripCredential: bearer removes Authorization only', async (t) => {
  const r = request('/c?x=1', { authorization: 'Bearer abc', cookie: 'a=1', 'x-other': 'y' });
  stripCredential(r.req, r.url, parseSource('bearer').find(r.req, r.url)!);
  t.same(r.req.headers, { cookie: 'a=1', 'x-other': 'y' });
  t.equal(r.req.url, '/c?x=1', 'url untouched');
});

t.test('stripCredential: header:NAME removes that header only', async (t) => {
  const r = request('/c', { 'x-api-key': 'k', authorization: 'Bearer keep' });
  stripCredential(r.req, r.url, parseSource('header:X-Api-Key').find(r.req, r.url)!);
  t.same(r.req.headers, { authorization: 'Bearer keep' });
});

t.test('stripCredential: cookie:NAME removes only that cookie', async (t) => {
  const cases: [string, string | undefined][] = [
    ['a=1; sid=xyz; b=2', 'a=1; b=2'],
    ['sid=xyz; b=2', 'b=2'],
    ['a=1; sid=xyz', 'a=1'],
    ['a=1;sid=xyz;b=2', 'a=1; b=2'],
    ['sidx=1; sid=xyz; xsid=2', 'sidx=1; xsid=2'],
    ['sid=xyz', undefined],
  ];
  for (const [before, after] of cases) {
    const r = request('/c', { cookie: before, 'x-keep': '1' });
    stripCredential(r.req, r.url, parseSource('cookie:sid').find(r.req, r.url)!);
    t.equal(r.req.headers.cookie, after, before);
    t.equal('cookie' in r.req.headers, after !== undefined, `${before}: header present only when cookies remain`);
    t.equal(r.req.headers['x-keep'], '1');
  }
});

t.test('removeCookie on a request without cookies is a no-op', async (t) => {
  const r = request('/c', { 'x-keep': '1' });
  removeCookie(r.req, 'sid');
  t.same(r.req.headers, { 'x-keep': '1' });
});

t.test('stripCredential: protocol entry removed, header deleted when empty', async (t) => {
  const cases: [string, string | undefined][] = [
    ['bearer, bearer.tok', 'bearer'],
    ['chat, bearer.tok, v2', 'chat, v2'],
    ['bearer.tok', undefined],
    ['bearer.tok,chat', 'chat'],
  ];
  for (const [before, after] of cases) {
    const r = request('/c', { 'sec-websocket-protocol': before });
    const found = parseSource('protocol:bearer.').find(r.req, r.url)!;
    stripCredential(r.req, r.url, found);
    t.equal(r.req.headers['sec-websocket-protocol'], after, before);
    t.equal('sec-websocket-protocol' in r.req.headers, after !== undefined);
  }
});

t.test('offeredProtocols trims and drops empty entries', async (t) => {
  t.same(offeredProtocols(request('/', { 'sec-websocket-protocol': ' a, b ,c,, ' }).req), ['a', 'b', 'c']);
  t.same(offeredProtocols(request('/').req), []);
});

t.test('cookieValue', async (t) => {
  t.equal(cookieValue(request('/', { cookie: 'a=1; b=two' }).req, 'b'), 'two');
  t.equal(cookieValue(request('/', { cookie: 'a=1' }).req, 'b'), undefined);
  t.equal(cookieValue(request('/').req, 'b'), undefined);
});

t.test('cookieValue strips one pair of DQUOTEs before decoding, as express-session (cookie 0.7) does', async (t) => {
  const table: [string, string | undefined][] = [
    ['t="abc"', 'abc'],
    ['t= "abc" ', 'abc'],
    ['t="s%3Aid.sig"', 's:id.sig'],
    ['t=""', undefined], // empty: no credential
    ['t="', undefined], // a lone quote is both ends: empty
    ['t=""abc""', '"abc"'], // one pair only
    ['t="abc', '"abc'],
    ['t=abc"', 'abc"'],
    ['t=%22abc%22', '"abc"'], // quotes that only appear once decoded are kept
    ['t="%zz"', '%zz'], // an invalid escape is kept as is
  ];
  for (const [header, expected] of table) t.equal(cookieValue(request('/', { cookie: header }).req, 't') || undefined, expected, header);
});

t.test('protocolMarker is the prefix without its trailing separator', async (t) => {
  const table: [string, string][] = [
    ['bearer.', 'bearer'],
    ['bearer-', 'bearer'],
    ['token_', 'token'],
    ['auth:', 'auth'],
    ['bearer..', 'bearer'],
    ['bearer', 'bearer'],
    ['a.b.', 'a.b'],
  ];
  for (const [prefix, marker] of table) t.equal(protocolMarker(prefix), marker, prefix);
});
