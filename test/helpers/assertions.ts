import type { Test } from 'tap';
import type { Setup, TestGateway } from './gateway.js';
import type { RawResponse } from './upgrade.js';

/** SPEC 6.5: credentials and secrets never appear in the log, nor (given `res`) in the response. */
export function assertNoLeak(t: Test, gw: TestGateway, secrets: string[], res?: RawResponse): void {
  const log = gw.logText();
  t.ok(log.length > 0, 'something was logged');
  for (const secret of secrets) {
    t.notOk(log.includes(secret), 'the log does not contain the credential');
    if (res) t.notOk(res.raw.includes(secret), 'the response does not contain the credential');
  }
}

/** A complete rejection on the wire: status, JSON body, challenge (or none), closed; upstream untouched. */
export function assertRejected(
  t: Test,
  res: RawResponse,
  s: Setup,
  status: number,
  body: { error: string; error_description: string },
  challenge: string | undefined,
  seenBefore = 0,
): void {
  t.equal(res.status, status, `status ${status} (${body.error_description})`);
  t.same(JSON.parse(res.body || 'null'), body);
  t.equal(res.headers['www-authenticate'], challenge, 'challenge');
  t.equal(res.headers['content-length'], String(Buffer.byteLength(res.body)));
  t.equal(res.headers['cache-control'], 'no-store');
  t.ok(res.closed, 'socket closed by the gateway');
  t.equal(s.upstream.seen.length, seenBefore, 'nothing (more) reached the upstream');
}

/**
 * SPEC 4 + 9: a 401 for a bad credential, byte-level checks; nothing reached the upstream, the decision
 * was logged, and neither the log nor the response holds any of `secrets`.
 */
export function assertInvalidToken(t: Test, res: RawResponse, description: string, s: Setup, secrets: string[], seenBefore = 0): void {
  const challenge = `Bearer realm="portcullis", error="invalid_token", error_description="${description}"`;
  assertRejected(t, res, s, 401, { error: 'invalid_token', error_description: description }, challenge, seenBefore);
  t.equal(res.statusLine, 'HTTP/1.1 401 Unauthorized');
  t.equal(res.headers['content-type'], 'application/json');
  t.ok(res.headers['x-request-id'], 'X-Request-Id on every response');
  assertNoLeak(t, s.gw, secrets, res);
  t.ok(s.gw.logs().some((l) => l.status === 401 && l.msg === 'upgrade rejected'), 'the decision was logged');
}

/**
 * The exact bytes of a raw-socket rejection (SPEC 4): status line (`'503 Service Unavailable'`), the
 * fixed headers, `extra` header lines (`'Retry-After: 1'`) in order, then the JSON body.
 */
export function rejection(statusLine: string, error: string, description: string, requestId: string, extra: string[] = []): string {
  const body = JSON.stringify({ error, error_description: description });
  return (
    `HTTP/1.1 ${statusLine}\r\n` +
    'Connection: close\r\n' +
    'Content-Type: application/json\r\n' +
    `Content-Length: ${Buffer.byteLength(body)}\r\n` +
    'Cache-Control: no-store\r\n' +
    `X-Request-Id: ${requestId}\r\n` +
    extra.map((h) => `${h}\r\n`).join('') +
    `\r\n${body}`
  );
}
