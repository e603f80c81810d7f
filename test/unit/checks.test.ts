import type { IncomingMessage } from 'node:http';
import t from 'tap';
import { compileOrigins, compileRequire, isWellFormedUpgrade, requestIdOf } from '../../src/checks.js';

const KEY = 'dGhlIHNhbXBsZSBub25jZQ=='; // RFC 6455's sample key
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

function req(method: string, headers: Record<string, string | undefined>, httpVersion = '1.1'): IncomingMessage {
  const clean = Object.fromEntries(Object.entries(headers).filter(([, v]) => v !== undefined));
  return { method, url: '/', httpVersion, headers: clean } as unknown as IncomingMessage;
}

const upgrade = (over: Record<string, string | undefined> = {}) => ({
  upgrade: 'websocket',
  connection: 'Upgrade',
  'sec-websocket-key': KEY,
  'sec-websocket-version': '13',
  ...over,
});

t.test('isWellFormedUpgrade', async (t) => {
  const table: [string, string, Record<string, string | undefined>, boolean][] = [
    ['well-formed', 'GET', upgrade(), true],
    ['Upgrade: WebSocket', 'GET', upgrade({ upgrade: 'WebSocket' }), true],
    ['Upgrade: WEBSOCKET', 'GET', upgrade({ upgrade: 'WEBSOCKET' }), true],
    ['another valid key', 'GET', upgrade({ 'sec-websocket-key': 'AAAAAAAAAAAAAAAAAAAAAA==' }), true],
    ['key with + and /', 'GET', upgrade({ 'sec-websocket-key': '+/+/+/+/+/+/+/+/+/+/+w==' }), true],
    ['POST', 'POST', upgrade(), false],
    ['HEAD', 'HEAD', upgrade(), false],
    ['lower-case get', 'get', upgrade(), false],
    ['Upgrade: h2c', 'GET', upgrade({ upgrade: 'h2c' }), false],
    ['Upgrade: websocketx', 'GET', upgrade({ upgrade: 'websocketx' }), false],
    ['no Upgrade', 'GET', upgrade({ upgrade: undefined }), false],
    ['no key', 'GET', upgrade({ 'sec-websocket-key': undefined }), false],
    ['empty key', 'GET', upgrade({ 'sec-websocket-key': '' }), false],
    ['short key', 'GET', upgrade({ 'sec-websocket-key': 'abc==' }), false],
    ['key of 15 bytes', 'GET', upgrade({ 'sec-websocket-key': 'AAAAAAAAAAAAAAAAAAAA' }), false],
    ['key of 17 bytes', 'GET', upgrade({ 'sec-websocket-key': 'AAAAAAAAAAAAAAAAAAAAAAA=' }), false],
    ['key with bad characters', 'GET', upgrade({ 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZ*==' }), false],
    ['key with trailing garbage', 'GET', upgrade({ 'sec-websocket-key': `${KEY}x` }), false],
    ['version 8', 'GET', upgrade({ 'sec-websocket-version': '8' }), false],
    ['version 12', 'GET', upgrade({ 'sec-websocket-version': '12' }), false],
    ['version 130', 'GET', upgrade({ 'sec-websocket-version': '130' }), false],
    ['no version', 'GET', upgrade({ 'sec-websocket-version': undefined }), false],
  ];
  for (const [name, method, headers, expected] of table) t.equal(isWellFormedUpgrade(req(method, headers)), expected, name);
  // Node's parser takes any d.d version in the request line; only HTTP/1.1 can be upgraded.
  for (const version of ['1.0', '0.9', '2.0', '1.2', '3.0']) t.equal(isWellFormedUpgrade(req('GET', upgrade(), version)), false, `HTTP/${version}`);
});

t.test('requestIdOf reuses a sane X-Request-Id', async (t) => {
  for (const id of ['abc-123', 'a', 'a.b_c:d-E9', 'x'.repeat(128), '0f8fad5b-d9cb-469f-a165-70867728950e']) {
    t.equal(requestIdOf(req('GET', { 'x-request-id': id })), id, id.length > 40 ? `${id.length} chars` : id);
  }
});

t.test('requestIdOf generates a new UUID for anything else', async (t) => {
  const bad: [string, string | undefined][] = [
    ['absent', undefined],
    ['empty', ''],
    ['129 chars', 'x'.repeat(129)],
    ['space', 'has space'],
    ['CR', 'a\rb'],
    ['LF', 'a\nb'],
    ['CRLF injection', 'a\r\nSet-Cookie: x=1'],
    ['comma (two headers joined)', 'a, b'],
    ['slash', 'a/b'],
    ['non-ASCII', 'ünï'],
    ['quote', 'a"b'],
  ];
  for (const [name, value] of bad) {
    const id = requestIdOf(req('GET', { 'x-request-id': value }));
    t.match(id, UUID, name);
    t.not(id, value, `${name}: not reused`);
  }
  t.not(requestIdOf(req('GET', {})), requestIdOf(req('GET', {})), 'a fresh id each time');
});

t.test('compileOrigins: exact entries', async (t) => {
  const check = compileOrigins(['https://app.example.com:8443', 'HTTP://Local.Test']);
  const table: [string | undefined, boolean][] = [
    ['https://app.example.com:8443', true],
    ['HTTPS://APP.EXAMPLE.COM:8443', true],
    ['https://app.example.com', false],
    ['https://app.example.com:443', false],
    ['http://app.example.com:8443', false],
    ['https://app.example.com:8443/', false],
    ['https://sub.app.example.com:8443', false],
    ['http://local.test', true],
    ['http://LOCAL.test', true],
    ['https://local.test', false],
    ['http://local.test:80', false],
    ['null', false],
    ['', false],
    [undefined, true],
  ];
  for (const [origin, expected] of table) t.equal(check(origin), expected, String(origin));
});

t.test('compileOrigins: *.example.com matches subdomains on any scheme and port', async (t) => {
  const check = compileOrigins(['*.example.com']);
  const table: [string | undefined, boolean][] = [
    ['https://sub.example.com', true],
    ['http://sub.example.com', true],
    ['https://sub.example.com:8443', true],
    ['http://a.b.example.com:3000', true],
    ['HTTPS://SUB.EXAMPLE.COM', true],
    ['https://example.com', false],
    ['http://example.com:8080', false],
    ['https://evil-example.com', false],
    ['https://evilexample.com', false],
    ['https://example.com.evil.com', false],
    ['https://sub.example.com.evil.com', false],
    ['https://sub.example.com@evil.com', false],
    ['https://example.org', false],
    ['null', false],
    ['not a url', false],
    ['', false],
    [undefined, true],
  ];
  for (const [origin, expected] of table) t.equal(check(origin), expected, String(origin));
});

t.test('compileOrigins: exact and wildcard together', async (t) => {
  const check = compileOrigins(['https://example.com', '*.example.com']);
  t.equal(check('https://example.com'), true);
  t.equal(check('https://www.example.com'), true);
  t.equal(check('http://example.com'), false);
  t.equal(check('https://evil-example.com'), false);
});

t.test('compileOrigins: "*", undefined and []', async (t) => {
  for (const origin of ['https://anything.test', 'null', 'http://evil.com:1', undefined]) {
    t.equal(compileOrigins('*')(origin), true, `"*" ${origin}`);
    t.equal(compileOrigins(undefined)(origin), true, `unset ${origin}`);
  }
  t.equal(compileOrigins([])('https://app.example.com'), false, 'an empty list allows no browser origin');
  t.equal(compileOrigins([])(undefined), true, 'but non-browser clients pass');
});

t.test('compileRequire', async (t) => {
  const table: [string, Record<string, string | string[]> | undefined, Record<string, unknown>, boolean][] = [
    ['no require', undefined, {}, true],
    ['empty require', {}, {}, true],
    ['string claim split on spaces', { scope: 'chat' }, { scope: 'read chat write' }, true],
    ['string claim, only value', { scope: 'chat' }, { scope: 'chat' }, true],
    ['string claim, extra spaces', { scope: 'chat' }, { scope: '  read   chat  ' }, true],
    ['string claim, substring is not a match', { scope: 'chat' }, { scope: 'chatty read' }, false],
    ['string claim, case matters', { scope: 'chat' }, { scope: 'CHAT' }, false],
    ['array claim', { scope: 'chat' }, { scope: ['read', 'chat'] }, true],
    ['array claim, elements are not split', { scope: 'chat' }, { scope: ['read chat'] }, false],
    ['array claim without it', { scope: 'chat' }, { scope: ['read'] }, false],
    ['missing claim', { scope: 'chat' }, { sub: 'alice' }, false],
    ['null claim', { scope: 'chat' }, { scope: null }, false],
    ['object claim', { scope: 'chat' }, { scope: { chat: true } }, false],
    ['empty string claim', { scope: 'chat' }, { scope: '' }, false],
    ['list: any of, string claim', { role: ['admin', 'ops'] }, { role: 'ops' }, true],
    ['list: any of, array claim', { role: ['admin', 'ops'] }, { role: ['user', 'admin'] }, true],
    ['list: none of', { role: ['admin', 'ops'] }, { role: ['user', 'guest'] }, false],
    ['list: missing claim', { role: ['admin', 'ops'] }, {}, false],
    ['every entry must hold: both', { scope: 'chat', role: ['admin'] }, { scope: 'chat', role: 'admin' }, true],
    ['every entry must hold: one fails', { scope: 'chat', role: ['admin'] }, { scope: 'chat', role: 'user' }, false],
    ['number claim', { level: '3' }, { level: 3 }, true],
    ['number claim, other value', { level: '3' }, { level: 30 }, false],
    ['number array claim', { level: ['3', '4'] }, { level: [1, 4] }, true],
    ['boolean claim', { verified: 'true' }, { verified: true }, true],
    ['boolean claim false', { verified: 'true' }, { verified: false }, false],
  ];
  for (const [name, required, claims, expected] of table) t.equal(compileRequire(required)(claims), expected, name);
});
