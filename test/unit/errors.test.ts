import { existsSync, readdirSync, readFileSync } from 'node:fs';
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

t.test('every code is documented in docs/errors.md with its status, error word and description', async (t) => {
  const doc = new URL('../../docs/errors.md', import.meta.url);
  t.ok(existsSync(doc), 'docs/errors.md exists');
  const lines = (existsSync(doc) ? readFileSync(doc, 'utf8') : '').split('\n');
  for (const code of codes) {
    const [status, error, description] = REJECTIONS[code];
    const line = lines.find((l) => new RegExp(`\\b${code}\\b`).test(l));
    t.ok(line, `${code} appears in docs/errors.md`);
    if (!line) continue;
    const cells = line.split('|').map((c) => c.trim());
    t.equal(cells[1], String(status), `${code}: status ${status}`);
    t.equal(cells[2], `\`${error}\``, `${code}: error ${error}`);
    t.ok(cells[3]?.startsWith(description), `${code}: description "${description}"`);
  }
  const documented = lines.flatMap((l) => [...l.matchAll(/\bGW_ERR_[A-Z_]+\b/g)].map((m) => m[0]));
  t.same(documented.filter((c) => !(c in REJECTIONS)), [], 'no code documented that the table does not have');
});

t.test('every close code and reason the gateway sends is in docs/errors.md', async (t) => {
  const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
  const src = new URL('../../src/', import.meta.url);
  const files = readdirSync(src, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'));
  const sent = new Set<string>();
  for (const file of files) {
    const text = readFileSync(new URL(file, src), 'utf8');
    for (const m of text.matchAll(/\b(?:close|end|closeSide|#closeSide)\((?:[\w.#]+, )?(1\d{3}|4\d{3}),\s*'([^']+)'\)/g)) sent.add(`${m[1]} ${m[2]}`);
  }
  t.ok(sent.size >= 8, `found the close calls in src (${sent.size})`);
  for (const pair of sent) {
    const [code, ...reason] = pair.split(' ');
    const row = doc.split('\n').find((l) => l.includes(`\`${code}\``) && l.includes(`\`${reason.join(' ')}\``));
    t.ok(row, `close ${code} "${reason.join(' ')}" is documented`);
  }
});
