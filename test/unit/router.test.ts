import type { IncomingMessage } from 'node:http';
import t from 'tap';
import { compileMatcher, hostname, parseRequestUrl } from '../../src/router.js';

t.test('compileMatcher: an exact path matches only itself', async (t) => {
  const match = compileMatcher({ path: '/chat' });
  const table: [string, boolean][] = [
    ['/chat', true],
    ['/chat/', false],
    ['/chat/room', false],
    ['/chatroom', false],
    ['/Chat', false],
    ['/', false],
    ['/other/chat', false],
  ];
  for (const [path, expected] of table) t.equal(match(path, '127.0.0.1'), expected, path);
});

t.test('compileMatcher: /x/* matches /x and /x/..., not /xy', async (t) => {
  const match = compileMatcher({ path: '/x/*' });
  const table: [string, boolean][] = [
    ['/x', true],
    ['/x/', true],
    ['/x/a', true],
    ['/x/a/b/c', true],
    ['/xy', false],
    ['/xy/a', false],
    ['/X/a', false],
    ['/', false],
    ['/y/x/a', false],
  ];
  for (const [path, expected] of table) t.equal(match(path, undefined), expected, path);
});

t.test('compileMatcher: /* matches every path', async (t) => {
  const match = compileMatcher({ path: '/*' });
  for (const path of ['/', '/a', '/a/b']) t.equal(match(path, undefined), true, path);
});

t.test('compileMatcher: nested prefix', async (t) => {
  const match = compileMatcher({ path: '/api/v1/*' });
  t.equal(match('/api/v1', undefined), true);
  t.equal(match('/api/v1/ws', undefined), true);
  t.equal(match('/api/v10/ws', undefined), false);
  t.equal(match('/api', undefined), false);
});

t.test('compileMatcher: host is compared without port, case-insensitively', async (t) => {
  const match = compileMatcher({ path: '/c', host: 'Chat.Example.COM' });
  const table: [string | undefined, boolean][] = [
    ['chat.example.com', true],
    ['CHAT.EXAMPLE.COM', true],
    ['chat.example.com:8080', true],
    ['Chat.Example.Com:443', true],
    ['example.com', false],
    ['evil.chat.example.com', false],
    ['chat.example.com.evil.com', false],
    ['', false],
    [undefined, false],
  ];
  for (const [host, expected] of table) t.equal(match('/c', host), expected, String(host));
  t.equal(match('/d', 'chat.example.com'), false, 'the path must match too');

  const prefixed = compileMatcher({ path: '/x/*', host: 'a.test' });
  t.equal(prefixed('/x/y', 'a.test:1'), true);
  t.equal(prefixed('/x/y', 'b.test'), false);
  t.equal(prefixed('/z', 'a.test'), false);

  const v6 = compileMatcher({ path: '/c', host: '[::1]' });
  t.equal(v6('/c', '[::1]:8080'), true);
  t.equal(v6('/c', '[::1]'), true);
  t.equal(v6('/c', '[::2]:8080'), false);
});

t.test('compileMatcher: without host, any Host passes', async (t) => {
  const match = compileMatcher({ path: '/c' });
  for (const host of ['a.test', 'b.test:9', undefined]) t.equal(match('/c', host), true, String(host));
});

t.test('hostname', async (t) => {
  const table: [string | undefined, string | undefined][] = [
    ['Example.com', 'example.com'],
    ['example.com:8080', 'example.com'],
    ['127.0.0.1:80', '127.0.0.1'],
    ['[::1]:8080', '[::1]'],
    ['[::1]', '[::1]'],
    ['', undefined],
    [undefined, undefined],
  ];
  for (const [input, expected] of table) t.equal(hostname(input), expected, String(input));
});

const reqFor = (url: string | undefined) => ({ url, headers: {} }) as unknown as IncomingMessage;

t.test('parseRequestUrl: origin-form URLs, query kept apart from the pathname', async (t) => {
  const table: [string | undefined, string, string][] = [
    ['/chat', '/chat', ''],
    ['/chat?access_token=abc&room=1', '/chat', '?access_token=abc&room=1'],
    ['/x/a/b?', '/x/a/b', ''],
    ['/', '/', ''],
    [undefined, '/', ''],
    ['/a%20b', '/a%20b', ''],
  ];
  for (const [raw, pathname, search] of table) {
    const url = parseRequestUrl(reqFor(raw));
    t.ok(url, String(raw));
    t.equal(url?.pathname, pathname, `${raw} pathname`);
    t.equal(url?.search, search, `${raw} search`);
    t.equal(url?.host, 'gateway.invalid', `${raw}: the placeholder origin`);
  }
});

t.test('parseRequestUrl: absolute-form and garbage are null', async (t) => {
  for (const raw of ['http://evil.com/chat', 'https://gateway/chat', 'ws://h/chat', '*', 'chat', '', 'evil.com:443', ' /chat']) {
    t.equal(parseRequestUrl(reqFor(raw)), null, JSON.stringify(raw));
  }
});

t.test('parseRequestUrl: a scheme-relative "//host/path" is not read as another host', async (t) => {
  // `//evil.com/public` must stay a path: parsed as a network-path reference it would route as "/public".
  const url = parseRequestUrl(reqFor('//evil.com/public'));
  t.ok(url === null || url.pathname === '//evil.com/public', 'null, or the whole path kept');
});
