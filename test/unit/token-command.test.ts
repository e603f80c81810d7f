import jsonwebtoken from 'jsonwebtoken';
import t from 'tap';
import { parseDuration } from '../../src/duration.js';
import { makeToken } from '../../src/token-command.js';

const SECRET = 'token-command-secret-0123456789abcdef';
const NOW = 1_700_000_000;

const verify = (token: string, secret = SECRET) =>
  jsonwebtoken.verify(token, secret, { algorithms: ['HS256'], clockTimestamp: NOW }) as Record<string, unknown>;

t.test('makeToken: a verifiable HS256 JWT with sub, iat and exp (default ttl 1h)', async (t) => {
  const token = makeToken({ secret: SECRET, sub: 'alice' }, NOW);
  t.same(jsonwebtoken.decode(token, { complete: true })?.header, { alg: 'HS256', typ: 'JWT' });
  t.same(verify(token), { sub: 'alice', iat: NOW, exp: NOW + 3600 });
  t.throws(() => verify(token, `${SECRET}x`), { name: 'JsonWebTokenError', message: 'invalid signature' }, 'another secret does not verify it');
});

t.test('makeToken: no sub → no sub claim', async (t) => {
  t.same(verify(makeToken({ secret: SECRET }, NOW)), { iat: NOW, exp: NOW + 3600 });
});

t.test('makeToken: --iss and --aud', async (t) => {
  const token = makeToken({ secret: SECRET, sub: 'bob', iss: 'https://issuer.test', aud: 'chat' }, NOW);
  t.same(verify(token), { sub: 'bob', iss: 'https://issuer.test', aud: 'chat', iat: NOW, exp: NOW + 3600 });
  t.ok(jsonwebtoken.verify(token, SECRET, { algorithms: ['HS256'], clockTimestamp: NOW, issuer: 'https://issuer.test', audience: 'chat' }));
  t.throws(() => jsonwebtoken.verify(token, SECRET, { algorithms: ['HS256'], clockTimestamp: NOW, audience: 'other' }), { message: /audience invalid/ });
});

t.test('makeToken: --claim values are JSON-parsed when they parse', async (t) => {
  const token = makeToken(
    {
      secret: SECRET,
      claim: ['n=5', 'x=abc', 'b=true', 'nil=null', 'arr=[1,"two"]', 'obj={"a":{"b":1}}', 'q="5"', 'eq=a=b', 'empty=', 'scope=chat read', 'f=1.5'],
    },
    NOW,
  );
  t.same(verify(token), {
    n: 5,
    x: 'abc',
    b: true,
    nil: null,
    arr: [1, 'two'],
    obj: { a: { b: 1 } },
    q: '5',
    eq: 'a=b',
    empty: '',
    scope: 'chat read',
    f: 1.5,
    iat: NOW,
    exp: NOW + 3600,
  });
});

t.test('makeToken: a malformed --claim throws', async (t) => {
  for (const claim of ['novalue', '=v', '']) {
    t.throws(() => makeToken({ secret: SECRET, claim: [claim] }, NOW), { message: '--claim: expected key=value' }, JSON.stringify(claim));
  }
});

t.test('makeToken: --ttl forms', async (t) => {
  const table: [string, number][] = [
    ['30s', 30],
    ['5m', 300],
    ['1h', 3600],
    ['2d', 172800],
    ['90', 90],
  ];
  for (const [ttl, seconds] of table) {
    const claims = jsonwebtoken.decode(makeToken({ secret: SECRET, ttl }, NOW)) as Record<string, number>;
    t.equal(claims.exp, NOW + seconds, ttl);
    t.equal(claims.iat, NOW);
  }
});

t.test('makeToken: an invalid --ttl throws', async (t) => {
  for (const ttl of ['1w', '-5', '1.5h', 'abc', '', 'h', '5 m', '1h30m']) {
    t.throws(() => makeToken({ secret: SECRET, ttl }, NOW), { message: '--ttl: expected Ns, Nm, Nh, Nd or seconds' }, JSON.stringify(ttl));
  }
});

t.test('makeToken: a missing secret throws', async (t) => {
  for (const secret of [undefined, '']) {
    t.throws(() => makeToken({ secret, sub: 'alice' }, NOW), { message: '--secret is required' }, String(secret));
  }
  t.throws(() => makeToken({}, NOW), { message: '--secret is required' });
});

t.test('makeToken: the defaults use the current time', async (t) => {
  const before = Math.floor(Date.now() / 1000);
  const claims = jsonwebtoken.decode(makeToken({ secret: SECRET })) as Record<string, number>;
  const after = Math.floor(Date.now() / 1000);
  t.ok(claims.iat! >= before && claims.iat! <= after, 'iat is now');
  t.equal(claims.exp! - claims.iat!, 3600);
});

t.test('parseDuration', async (t) => {
  const table: [string, number | null][] = [
    ['30s', 30],
    ['5m', 300],
    ['1h', 3600],
    ['2d', 172800],
    ['90', 90],
    ['0', 0],
    ['01m', 60],
    [' 7s ', 7],
    ['1H', null],
    ['1w', null],
    ['1.5h', null],
    ['-1', null],
    ['+1', null],
    ['', null],
    ['s', null],
    ['1 h', null],
    ['1hh', null],
    ['1e3', null],
  ];
  for (const [text, expected] of table) t.equal(parseDuration(text), expected, JSON.stringify(text));
});
