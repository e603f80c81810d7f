// An identity whose subject cannot be written as a header value (CR/LF, NUL, a character above U+00FF)
// comes from a validly signed token, so it passes authentication. It must never become a header line of
// its own upstream: x-auth-subject carries it percent-encoded (x-auth-claims holds it exactly), in both
// modes, and the connection is served like any other (docs/SECURITY.md, threat 3).
import t from 'tap';
import { WebSocket } from 'ws';
import { startGateway } from '../helpers/gateway.js';
import { hs256, jwtAuth } from '../helpers/tokens.js';
import { rawUpgrade } from '../helpers/upgrade.js';
import { startEchoUpstream } from '../helpers/upstream.js';

const SUBJECTS: [string, string][] = [
  ['CR/LF and a header line', 'mallory\r\nx-injected: 1'],
  ['NUL', 'mal\u0000lory'],
  ['characters above U+00FF', 'ユーザー'],
];

for (const mode of ['pipe', 'relay'] as const) {
  for (const [label, sub] of SUBJECTS) {
    t.test(`${mode}: a signed subject with ${label} never becomes an upstream header line, and travels percent-encoded`, async (t) => {
      const upstream = await startEchoUpstream(t);
      const gw = await startGateway(t, {
        authenticators: { jwt: jwtAuth() },
        routes: [{ path: '/chat', auth: ['jwt'], upstream: upstream.url, mode }],
      });
      const ws = new WebSocket(gw.url('/chat'), { headers: { Authorization: `Bearer ${hs256({ sub })}` } });
      await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
      ws.send('hi');
      t.equal(String(await new Promise((r) => ws.once('message', r))), 'hi', 'served');
      ws.close();
      const seen = upstream.seen[0]!;
      t.notOk('x-injected' in seen.headers, 'no injected header upstream');
      t.equal(seen.headers['x-auth-subject'], encodeURIComponent(sub), 'the subject, percent-encoded');
      t.equal(JSON.parse(Buffer.from(seen.headers['x-auth-claims'] as string, 'base64url').toString()).sub, sub, 'the claims hold it exactly');
      // A Latin-1 subject is not encoded.
      const latin = await rawUpgrade(gw.port, '/chat', { Authorization: `Bearer ${hs256({ sub: 'José Ünal' })}` });
      t.equal(latin.status, 101);
      t.equal(Buffer.from(upstream.seen[1]!.headers['x-auth-subject'] as string, 'latin1').toString('latin1'), 'José Ünal');
    });
  }
}
