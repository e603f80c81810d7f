// SPEC 2.2 (apiKey), 4, 8, 9: API keys stored as SHA-256 hashes, inline or from a file, over real
// handshakes against a real ws upstream.
import { writeFileSync } from 'node:fs';
import t, { type Test } from 'tap';
import { hashApiKey } from '../../src/auth/api-key.js';
import { assertInvalidToken, assertNoLeak } from '../helpers/assertions.js';
import { echo, openClient } from '../helpers/client.js';
import { startGateway, startGatewayWithUpstream, type Setup } from '../helpers/gateway.js';
import { rawUpgrade, type RawResponse } from '../helpers/upgrade.js';

const KEY_A = 'ak_test_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa';
const KEY_B = 'ak_test_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb';
const KEY_FILE = 'ak_file_0123456789abcdefghijklmnopqrstu';
const claimsOf = (header: unknown) => JSON.parse(Buffer.from(String(header), 'base64url').toString()) as Record<string, unknown>;

const setup = (t: Test, auth: Record<string, unknown>, route: Record<string, unknown> = {}, options: { baseDir?: string } = {}) =>
  startGatewayWithUpstream(t, (upstream) => ({ authenticators: { keys: auth }, routes: [{ path: '/ingest', auth: ['keys'], upstream, ...route }] }), options);

const inline = (from: string[] = ['header:x-api-key']) => ({
  type: 'apiKey',
  from,
  keys: [
    { sha256: hashApiKey(KEY_A), subject: 'svc-a', claims: { scope: 'ingest read', tier: 2 } },
    { sha256: hashApiKey(KEY_B).toUpperCase(), subject: 'svc-b' },
  ],
});

const assertInvalidKey = (t: Test, res: RawResponse, s: Setup, secrets: string[], seenBefore = 0) =>
  assertInvalidToken(t, res, 'api key invalid', s, secrets, seenBefore);

t.test('inline sha256 keys: each key has its subject and claims; the key header is not forwarded', async (t) => {
  const s = await setup(t, inline());
  const ws = await openClient(t, s.gw.url('/ingest'), [], { 'X-Api-Key': KEY_A });
  t.equal(await echo(ws, 'payload'), 'payload');
  const a = s.upstream.seen[0]!;
  t.equal(a.headers['x-auth-subject'], 'svc-a');
  t.same(claimsOf(a.headers['x-auth-claims']), { scope: 'ingest read', tier: 2 });
  t.equal(a.headers['x-api-key'], undefined);
  // Second key (stored as upper-case hex): its own subject, empty claims.
  const res = await rawUpgrade(s.gw.port, '/ingest', { 'x-api-key': KEY_B });
  t.equal(res.status, 101);
  const b = s.upstream.seen[1]!;
  t.equal(b.headers['x-auth-subject'], 'svc-b');
  t.same(claimsOf(b.headers['x-auth-claims']), {});
  t.match(s.gw.logs().filter((l) => l.status === 101), [{ authenticator: 'keys', subject: 'svc-a' }, { authenticator: 'keys', subject: 'svc-b' }]);
  assertNoLeak(t, s.gw, [KEY_A, KEY_B]);
});

t.test('claims from the key are usable by require', async (t) => {
  const s = await setup(t, inline(), { require: { scope: 'ingest' } });
  t.equal((await rawUpgrade(s.gw.port, '/ingest', { 'x-api-key': KEY_A })).status, 101);
  const res = await rawUpgrade(s.gw.port, '/ingest', { 'x-api-key': KEY_B });
  t.equal(res.status, 403, 'svc-b has no scope claim');
  t.equal(JSON.parse(res.body).error, 'insufficient_scope');
  t.equal(s.upstream.seen.length, 1);
});

t.test('a wrong key is 401 "api key invalid" and leaks nowhere', async (t) => {
  const s = await setup(t, inline());
  const wrong = [
    'ak_test_cccccccccccccccccccccccccccccccc',
    KEY_A.slice(0, -1) + 'b', // one character off
    KEY_A + ' extra', // a key with a suffix
    KEY_A.toUpperCase(),
    hashApiKey(KEY_A), // the stored hash is not itself a key
  ];
  for (const key of wrong) {
    const res = await rawUpgrade(s.gw.port, '/ingest', { 'x-api-key': key });
    assertInvalidKey(t, res, s, [key]);
  }
  // No key at all: the bare challenge.
  const none = await rawUpgrade(s.gw.port, '/ingest');
  t.equal(none.status, 401);
  t.equal(none.headers['www-authenticate'], 'Bearer realm="portcullis"');
  t.same(JSON.parse(none.body), { error: 'unauthorized', error_description: 'credentials required' });
  t.equal(s.upstream.seen.length, 0);
  // The gateway keeps serving the right key.
  t.equal((await rawUpgrade(s.gw.port, '/ingest', { 'x-api-key': KEY_A })).status, 101);
  assertNoLeak(t, s.gw, [KEY_A]);
});

t.test('a key above 8 KiB is 401 token too large', async (t) => {
  const s = await setup(t, inline());
  const huge = 'k'.repeat(9000);
  const res = await rawUpgrade(s.gw.port, '/ingest', { 'x-api-key': huge });
  t.equal(res.status, 401);
  t.equal(res.headers['www-authenticate'], 'Bearer realm="portcullis", error="invalid_token", error_description="token too large"');
  t.equal(s.upstream.seen.length, 0);
  assertNoLeak(t, s.gw, [huge.slice(0, 100)]);
});

t.test('query and bearer sources: the key is stripped from where it was found', async (t) => {
  const s = await setup(t, inline(['query:api_key', 'bearer']));
  t.equal((await rawUpgrade(s.gw.port, `/ingest?stream=7&api_key=${KEY_A}`)).status, 101);
  t.equal(s.upstream.seen[0]?.url, '/ingest?stream=7');
  t.equal(s.upstream.seen[0]?.headers['x-auth-subject'], 'svc-a');
  t.equal((await rawUpgrade(s.gw.port, '/ingest', { Authorization: `Bearer ${KEY_B}` })).status, 101);
  t.equal(s.upstream.seen[1]?.headers.authorization, undefined);
  t.equal(s.upstream.seen[1]?.headers['x-auth-subject'], 'svc-b');
  const res = await rawUpgrade(s.gw.port, '/ingest?api_key=nope-nope-nope');
  assertInvalidKey(t, res, s, ['nope-nope-nope'], 2);
  assertNoLeak(t, s.gw, [KEY_A, KEY_B]);
});

t.test('keys from a file (relative to baseDir), mixed with inline keys', async (t) => {
  const dir = t.testdir({
    secrets: {
      'keys.json': JSON.stringify([
        { sha256: hashApiKey(KEY_FILE), subject: 'svc-file', claims: { team: 'data' } },
        { sha256: hashApiKey(KEY_B), subject: 'svc-b-from-file' },
      ]),
    },
  });
  const s = await setup(t, { type: 'apiKey', from: ['header:x-api-key'], keys: [{ file: 'secrets/keys.json' }, { sha256: hashApiKey(KEY_A), subject: 'svc-a' }] }, {}, { baseDir: dir });
  t.equal((await rawUpgrade(s.gw.port, '/ingest', { 'x-api-key': KEY_FILE })).status, 101);
  t.equal(s.upstream.seen[0]?.headers['x-auth-subject'], 'svc-file');
  t.same(claimsOf(s.upstream.seen[0]?.headers['x-auth-claims']), { team: 'data' });
  t.equal((await rawUpgrade(s.gw.port, '/ingest', { 'x-api-key': KEY_A })).status, 101, 'inline key beside the file');
  t.equal(s.upstream.seen[1]?.headers['x-auth-subject'], 'svc-a');
  t.equal((await rawUpgrade(s.gw.port, '/ingest', { 'x-api-key': KEY_B })).status, 101);
  t.equal(s.upstream.seen[2]?.headers['x-auth-subject'], 'svc-b-from-file');
  assertInvalidKey(t, await rawUpgrade(s.gw.port, '/ingest', { 'x-api-key': 'not-in-the-file' }), s, ['not-in-the-file'], 3);
  assertNoLeak(t, s.gw, [KEY_FILE, KEY_A, KEY_B]);
});

t.test('a missing or malformed key file is a config error naming the field', async (t) => {
  const dir = t.testdir({ 'bad.json': '{"not":"a list"}', 'broken.json': '[{"sha256":"zz","subject":"x"}]', 'nojson.json': 'nope' });
  for (const file of ['missing.json', 'bad.json', 'broken.json', 'nojson.json']) {
    await t.rejects(
      startGateway(t, { authenticators: { keys: { type: 'apiKey', from: ['header:x-api-key'], keys: [{ file }] } }, routes: [{ path: '/ingest', auth: ['keys'] }] }, { baseDir: dir }),
      { name: 'ConfigError', message: /authenticators\.keys\.keys\.0\.file/ },
      file,
    );
  }
  // Inline hashes are checked too.
  await t.rejects(
    startGateway(t, { authenticators: { keys: { type: 'apiKey', from: ['header:x-api-key'], keys: [{ sha256: 'abc', subject: 'x' }] } }, routes: [{ path: '/ingest', auth: ['keys'] }] }),
    { name: 'ConfigError', message: /authenticators\.keys\.keys\.0\.sha256/ },
  );
});

t.test('a key file is read at startup: changing it later does not let a new key in', async (t) => {
  const dir = t.testdir({ 'keys.json': JSON.stringify([{ sha256: hashApiKey(KEY_A), subject: 'svc-a' }]) });
  const s = await setup(t, { type: 'apiKey', from: ['header:x-api-key'], keys: [{ file: 'keys.json' }] }, {}, { baseDir: dir });
  writeFileSync(`${dir}/keys.json`, JSON.stringify([{ sha256: hashApiKey(KEY_B), subject: 'svc-b' }]));
  assertInvalidKey(t, await rawUpgrade(s.gw.port, '/ingest', { 'x-api-key': KEY_B }), s, [KEY_B]);
  t.equal((await rawUpgrade(s.gw.port, '/ingest', { 'x-api-key': KEY_A })).status, 101);
});
