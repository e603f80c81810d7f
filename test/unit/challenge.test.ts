import t from 'tap';
import { challengeFor, quote } from '../../src/challenge.js';
import { GatewayError } from '../../src/errors.js';

t.test('quote() makes an RFC 7235 quoted-string', async (t) => {
  const cases: [string, string][] = [
    ['portcullis', '"portcullis"'],
    ['', '""'],
    ['token expired', '"token expired"'],
    ['say "hi"', '"say \\"hi\\""'],
    ['back\\slash', '"back\\\\slash"'],
    ['\\"', '"\\\\\\""'],
    ['tab\there', '"tab\there"'],
    ['ünïcode', '"ünïcode"'],
  ];
  for (const [input, expected] of cases) t.equal(quote(input), expected, JSON.stringify(input));
});

t.test('quote() refuses CR, LF and NUL', async (t) => {
  for (const bad of ['a\rb', 'a\nb', 'a\0b', '\r\n', 'x\r\nSet-Cookie: evil=1']) {
    t.throws(() => quote(bad), TypeError, JSON.stringify(bad));
    t.throws(() => quote(bad), { message: 'header value contains CR, LF or NUL' });
  }
});

t.test('challengeFor: 401 without a credential is the bare realm', async (t) => {
  t.equal(challengeFor(new GatewayError('GW_ERR_CREDENTIALS_MISSING')), 'Bearer realm="portcullis"');
  t.equal(challengeFor(new GatewayError('GW_ERR_HANDLER_REJECTED')), 'Bearer realm="portcullis"');
});

t.test('challengeFor: a bad credential is invalid_token with the fixed description', async (t) => {
  t.equal(
    challengeFor(new GatewayError('GW_ERR_TOKEN_EXPIRED')),
    'Bearer realm="portcullis", error="invalid_token", error_description="token expired"',
  );
  t.equal(
    challengeFor(new GatewayError('GW_ERR_SIGNATURE_INVALID', 'detail with "secret" never shown')),
    'Bearer realm="portcullis", error="invalid_token", error_description="signature invalid"',
  );
  t.equal(
    challengeFor(new GatewayError('GW_ERR_SESSION_NOT_FOUND')),
    'Bearer realm="portcullis", error="invalid_token", error_description="session not found"',
  );
});

t.test('challengeFor: require failure is insufficient_scope', async (t) => {
  t.equal(
    challengeFor(new GatewayError('GW_ERR_INSUFFICIENT_SCOPE')),
    'Bearer realm="portcullis", error="insufficient_scope", error_description="required claims missing"',
  );
});

t.test('challengeFor: a passed-through WWW-Authenticate wins', async (t) => {
  const passed = 'Basic realm="upstream-auth", charset="UTF-8"';
  t.equal(challengeFor(new GatewayError('GW_ERR_TOKEN_INVALID', undefined, { 'WWW-Authenticate': passed })), passed);
  t.equal(challengeFor(new GatewayError('GW_ERR_CREDENTIALS_MISSING', undefined, { 'WWW-Authenticate': passed })), passed);
});

t.test('challengeFor: no challenge for statuses that are not about credentials', async (t) => {
  for (const code of [
    'GW_ERR_ROUTE_NOT_FOUND',
    'GW_ERR_CAPACITY',
    'GW_ERR_SHUTTING_DOWN',
    'GW_ERR_AUTH_TIMEOUT',
    'GW_ERR_AUTH_UNAVAILABLE',
    'GW_ERR_BAD_UPGRADE',
    'GW_ERR_ORIGIN_NOT_ALLOWED',
    'GW_ERR_INTERNAL',
    'GW_ERR_UPSTREAM_UNAVAILABLE',
  ] as const) {
    t.equal(challengeFor(new GatewayError(code)), null, code);
  }
});
