import { existsSync, readFileSync } from 'node:fs';
import { STATUS_CODES } from 'node:http';
import t from 'tap';
import { ConfigError, GatewayError, REJECTIONS, type ErrorCode } from '../../src/errors.js';

/** SPEC 9: the body's `error` words. */
const WORDS = ['invalid_token', 'insufficient_scope', 'unauthorized', 'bad_request', 'not_found', 'forbidden', 'rate_limited', 'unavailable', 'bad_gateway', 'internal_error'];

/** Which `error` word belongs to which status class. */
const WORDS_FOR_STATUS: Record<number, string[]> = {
  400: ['bad_request'],
  401: ['invalid_token', 'unauthorized'],
  403: ['forbidden', 'insufficient_scope'],
  404: ['not_found'],
  405: ['bad_request'],
  408: ['bad_request'],
  414: ['bad_request'],
  426: ['bad_request'],
  429: ['rate_limited'],
  431: ['bad_request'],
  500: ['internal_error'],
  502: ['bad_gateway'],
  503: ['unavailable'],
};

const codes = Object.keys(REJECTIONS) as ErrorCode[];

t.test('the table is not empty and codes are GW_ERR_<NOUN>_<PROBLEM>', async (t) => {
  t.ok(codes.length >= 30, `${codes.length} codes`);
  for (const code of codes) t.match(code, /^GW_ERR_[A-Z]+(_[A-Z]+)*$/, code);
});

t.test('every code: a 4xx/5xx status with a reason phrase, a SPEC 9 word, fixed safe text', async (t) => {
  for (const code of codes) {
    const [status, error, description] = REJECTIONS[code];
    t.ok(Number.isInteger(status) && status >= 400 && status <= 599, `${code}: status ${status} is 4xx/5xx`);
    t.type(STATUS_CODES[status], 'string', `${code}: ${status} has a reason phrase`);
    t.ok(WORDS.includes(error), `${code}: "${error}" is one of SPEC 9's words`);
    t.ok(WORDS_FOR_STATUS[status]?.includes(error), `${code}: "${error}" fits status ${status}`);
    t.match(description, /^[a-z][a-z0-9 ]*[a-z]$/, `${code}: description "${description}" is short lower-case text`);
  }
});

t.test('every 401 for a bad credential is invalid_token; only "no credential" 401s are unauthorized', async (t) => {
  const unauthorized = codes.filter((c) => REJECTIONS[c][0] === 401 && REJECTIONS[c][1] !== 'invalid_token');
  t.same([...unauthorized].sort(), ['GW_ERR_CREDENTIALS_MISSING', 'GW_ERR_HANDLER_REJECTED']);
  for (const code of codes.filter((c) => /_(TOKEN|SIGNATURE|ALGORITHM|ISSUER|AUDIENCE|CLAIM|API_KEY|SESSION)_/.test(c))) {
    t.equal(REJECTIONS[code][0], 401, `${code} is 401`);
    t.equal(REJECTIONS[code][1], 'invalid_token', `${code} is invalid_token`);
  }
  t.same(REJECTIONS.GW_ERR_TOKEN_EXPIRED, [401, 'invalid_token', 'token expired'], 'the SPEC 4 example');
});

t.test('403 for require is insufficient_scope; other 403s are forbidden', async (t) => {
  t.same(REJECTIONS.GW_ERR_INSUFFICIENT_SCOPE.slice(0, 2), [403, 'insufficient_scope']);
  t.same(REJECTIONS.GW_ERR_ORIGIN_NOT_ALLOWED, [403, 'forbidden', 'origin not allowed']);
  t.same(codes.filter((c) => REJECTIONS[c][1] === 'insufficient_scope'), ['GW_ERR_INSUFFICIENT_SCOPE']);
});

t.test('statuses of the pipeline steps (SPEC 3, 9)', async (t) => {
  const expected: Partial<Record<ErrorCode, number>> = {
    GW_ERR_BAD_UPGRADE: 400,
    GW_ERR_ROUTE_NOT_FOUND: 404,
    GW_ERR_CAPACITY: 503,
    GW_ERR_SHUTTING_DOWN: 503,
    GW_ERR_ORIGIN_NOT_ALLOWED: 403,
    GW_ERR_CREDENTIALS_MISSING: 401,
    GW_ERR_AUTH_TIMEOUT: 503,
    GW_ERR_AUTH_UNAVAILABLE: 503,
    GW_ERR_UPSTREAM_UNAVAILABLE: 502,
    GW_ERR_URI_TOO_LONG: 414,
    GW_ERR_HEADERS_TOO_LARGE: 431,
    GW_ERR_REQUEST_TIMEOUT: 408,
    GW_ERR_UPGRADE_REQUIRED: 426,
    GW_ERR_TOKEN_TOO_LARGE: 401,
    GW_ERR_INTERNAL: 500,
  };
  for (const [code, status] of Object.entries(expected)) t.equal(REJECTIONS[code as ErrorCode][0], status, code);
});

t.test('GatewayError carries the table row; the detail is only the message', async (t) => {
  const cause = new Error('root');
  const err = new GatewayError('GW_ERR_SIGNATURE_INVALID', 'kid abc: bad signature', { 'X-Extra': '1' }, { cause });
  t.type(err, Error);
  t.equal(err.name, 'GatewayError');
  t.equal(err.code, 'GW_ERR_SIGNATURE_INVALID');
  t.equal(err.status, 401);
  t.equal(err.error, 'invalid_token');
  t.equal(err.description, 'signature invalid');
  t.equal(err.message, 'kid abc: bad signature');
  t.same(err.headers, { 'X-Extra': '1' });
  t.equal(err.cause, cause);

  const plain = new GatewayError('GW_ERR_CAPACITY');
  t.equal(plain.message, 'connection limit reached', 'without detail the message is the description');
  t.same(plain.headers, {});
});

t.test('ConfigError lists every problem', async (t) => {
  const err = new ConfigError(['a.b: required', 'c: unknown field']);
  t.equal(err.name, 'ConfigError');
  t.same(err.problems, ['a.b: required', 'c: unknown field']);
  t.equal(err.message, 'invalid configuration:\n  a.b: required\n  c: unknown field');
});

t.test('every code is documented in README.md with its status', async (t) => {
  const readme = new URL('../../README.md', import.meta.url);
  t.ok(existsSync(readme), 'README.md exists');
  const text = existsSync(readme) ? readFileSync(readme, 'utf8') : '';
  const lines = text.split('\n');
  for (const code of codes) {
    const line = lines.find((l) => new RegExp(`\\b${code}\\b`).test(l));
    t.ok(line, `${code} appears in README.md`);
    if (line) t.match(line, new RegExp(`\\b${REJECTIONS[code][0]}\\b`), `${code}: its README line names status ${REJECTIONS[code][0]}`);
  }
});
