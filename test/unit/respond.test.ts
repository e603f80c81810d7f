import { once } from 'node:events';
import { createServer as createHttpServer, get as httpGet, type IncomingMessage } from 'node:http';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import t from 'tap';
import type { Teardown } from '../helpers/net.js';
import { GatewayError } from '../../src/errors.js';
import { rejectionBody, rejectionBytes, rejectionHeaders, sendRejection, writeRejection } from '../../src/respond.js';

t.test('rejectionBody is the JSON { error, error_description }', async (t) => {
  t.equal(rejectionBody(new GatewayError('GW_ERR_TOKEN_EXPIRED')), '{"error":"invalid_token","error_description":"token expired"}');
  t.equal(
    rejectionBody(new GatewayError('GW_ERR_TOKEN_INVALID', 'eyJhbGciOi.secret-token.detail')),
    '{"error":"invalid_token","error_description":"token invalid"}',
    'the detail (log-only) never reaches the body',
  );
});

t.test('rejectionBytes: exact bytes', async (t) => {
  const cases: [string, GatewayError, string, string][] = [
    [
      'SPEC 4 example: 401 expired token',
      new GatewayError('GW_ERR_TOKEN_EXPIRED'),
      'req-1',
      'HTTP/1.1 401 Unauthorized\r\n' +
        'Connection: close\r\n' +
        'Content-Type: application/json\r\n' +
        'Content-Length: 61\r\n' +
        'Cache-Control: no-store\r\n' +
        'X-Request-Id: req-1\r\n' +
        'WWW-Authenticate: Bearer realm="portcullis", error="invalid_token", error_description="token expired"\r\n' +
        '\r\n' +
        '{"error":"invalid_token","error_description":"token expired"}',
    ],
    [
      '401 without credential: bare challenge',
      new GatewayError('GW_ERR_CREDENTIALS_MISSING'),
      'abc',
      'HTTP/1.1 401 Unauthorized\r\n' +
        'Connection: close\r\n' +
        'Content-Type: application/json\r\n' +
        'Content-Length: 67\r\n' +
        'Cache-Control: no-store\r\n' +
        'X-Request-Id: abc\r\n' +
        'WWW-Authenticate: Bearer realm="portcullis"\r\n' +
        '\r\n' +
        '{"error":"unauthorized","error_description":"credentials required"}',
    ],
    [
      '403 insufficient scope',
      new GatewayError('GW_ERR_INSUFFICIENT_SCOPE'),
      'r',
      'HTTP/1.1 403 Forbidden\r\n' +
        'Connection: close\r\n' +
        'Content-Type: application/json\r\n' +
        'Content-Length: 76\r\n' +
        'Cache-Control: no-store\r\n' +
        'X-Request-Id: r\r\n' +
        'WWW-Authenticate: Bearer realm="portcullis", error="insufficient_scope", error_description="required claims missing"\r\n' +
        '\r\n' +
        '{"error":"insufficient_scope","error_description":"required claims missing"}',
    ],
    [
      '404: no challenge',
      new GatewayError('GW_ERR_ROUTE_NOT_FOUND'),
      'id-404',
      'HTTP/1.1 404 Not Found\r\n' +
        'Connection: close\r\n' +
        'Content-Type: application/json\r\n' +
        'Content-Length: 66\r\n' +
        'Cache-Control: no-store\r\n' +
        'X-Request-Id: id-404\r\n' +
        '\r\n' +
        '{"error":"not_found","error_description":"no route for this path"}',
    ],
    [
      '400 bad upgrade',
      new GatewayError('GW_ERR_BAD_UPGRADE'),
      'x',
      'HTTP/1.1 400 Bad Request\r\n' +
        'Connection: close\r\n' +
        'Content-Type: application/json\r\n' +
        'Content-Length: 73\r\n' +
        'Cache-Control: no-store\r\n' +
        'X-Request-Id: x\r\n' +
        '\r\n' +
        '{"error":"bad_request","error_description":"malformed websocket upgrade"}',
    ],
    [
      '503 capacity with Retry-After',
      new GatewayError('GW_ERR_CAPACITY', undefined, { 'Retry-After': '1' }),
      'cap',
      'HTTP/1.1 503 Service Unavailable\r\n' +
        'Connection: close\r\n' +
        'Content-Type: application/json\r\n' +
        'Content-Length: 70\r\n' +
        'Cache-Control: no-store\r\n' +
        'X-Request-Id: cap\r\n' +
        'Retry-After: 1\r\n' +
        '\r\n' +
        '{"error":"unavailable","error_description":"connection limit reached"}',
    ],
    [
      '503 draining with Retry-After',
      new GatewayError('GW_ERR_SHUTTING_DOWN', undefined, { 'Retry-After': '27' }),
      'drain',
      'HTTP/1.1 503 Service Unavailable\r\n' +
        'Connection: close\r\n' +
        'Content-Type: application/json\r\n' +
        'Content-Length: 70\r\n' +
        'Cache-Control: no-store\r\n' +
        'X-Request-Id: drain\r\n' +
        'Retry-After: 27\r\n' +
        '\r\n' +
        '{"error":"unavailable","error_description":"gateway is shutting down"}',
    ],
    [
      '401 with a passed-through WWW-Authenticate (written once, in the challenge slot)',
      new GatewayError('GW_ERR_TOKEN_INVALID', undefined, { 'WWW-Authenticate': 'Basic realm="upstream"' }),
      'fa',
      'HTTP/1.1 401 Unauthorized\r\n' +
        'Connection: close\r\n' +
        'Content-Type: application/json\r\n' +
        'Content-Length: 61\r\n' +
        'Cache-Control: no-store\r\n' +
        'X-Request-Id: fa\r\n' +
        'WWW-Authenticate: Basic realm="upstream"\r\n' +
        '\r\n' +
        '{"error":"invalid_token","error_description":"token invalid"}',
    ],
  ];
  for (const [name, err, id, expected] of cases) t.equal(rejectionBytes(err, id), expected, name);
});

t.test('Content-Length counts bytes of the body', async (t) => {
  for (const code of ['GW_ERR_TOKEN_EXPIRED', 'GW_ERR_UPSTREAM_UNAVAILABLE', 'GW_ERR_INTERNAL'] as const) {
    const err = new GatewayError(code);
    const body = rejectionBody(err);
    const length = rejectionHeaders(err, 'id', body).find(([n]) => n === 'Content-Length')?.[1];
    t.equal(length, String(Buffer.byteLength(body)), code);
  }
});

t.test('a CR or LF in any header value throws', async (t) => {
  t.throws(() => rejectionBytes(new GatewayError('GW_ERR_CAPACITY', undefined, { 'Retry-After': '1\r\nSet-Cookie: x=1' }), 'id'), {
    name: 'TypeError',
    message: 'unsafe value for header Retry-After',
  });
  t.throws(() => rejectionBytes(new GatewayError('GW_ERR_CAPACITY', undefined, { 'Retry-After': '1\n' }), 'id'), TypeError);
  t.throws(() => rejectionBytes(new GatewayError('GW_ERR_CAPACITY'), 'id\r\nX-Evil: 1'), {
    name: 'TypeError',
    message: 'unsafe value for header X-Request-Id',
  });
  t.throws(() => rejectionBytes(new GatewayError('GW_ERR_TOKEN_INVALID', undefined, { 'WWW-Authenticate': 'Bearer\r\nX: y' }), 'id'), {
    message: 'unsafe value for header WWW-Authenticate',
  });
  t.throws(() => rejectionBytes(new GatewayError('GW_ERR_CAPACITY', undefined, { 'X-Bad\r\nName': '1' }), 'id'), TypeError, 'unsafe header name');
});

/**
 * A connected socket pair over loopback: `server` is the accepted side, `client` the connecting one.
 * `allowHalfOpen` goes to the client.
 */
async function socketPair(t: Teardown, { allowHalfOpen = false } = {}): Promise<{ server: Socket; client: Socket; listener: Server }> {
  const listener = createServer();
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  const accepted = once(listener, 'connection') as Promise<[Socket]>;
  const client = connect({ port: (listener.address() as AddressInfo).port, host: '127.0.0.1', allowHalfOpen });
  client.on('error', () => {});
  const [server] = await accepted;
  t.teardown(() => {
    client.destroy();
    server.destroy();
    listener.close();
  });
  return { server, client, listener };
}

/** Everything the client receives until the server side closes. */
function readAll(client: Socket): Promise<{ data: string; ended: boolean }> {
  return new Promise((resolve) => {
    let data = '';
    let ended = false;
    client.setEncoding('latin1');
    client.on('data', (chunk: string) => (data += chunk));
    client.on('end', () => (ended = true));
    client.on('close', () => resolve({ data, ended }));
  });
}

t.test('writeRejection writes the whole response once, ends and destroys', async (t) => {
  const { server, client } = await socketPair(t);
  const received = readAll(client);
  const err = new GatewayError('GW_ERR_TOKEN_EXPIRED');
  t.equal(writeRejection(server, err, 'req-42'), true);
  t.equal(server.writableEnded, true, 'ended at once');
  t.equal(writeRejection(server, err, 'req-42'), false, 'a second answer is refused');
  const { data, ended } = await received;
  t.equal(data, rejectionBytes(err, 'req-42'), 'exactly one response, byte for byte');
  t.equal(ended, true, 'the client saw a FIN');
  if (!server.destroyed) await once(server, 'close');
  t.equal(server.destroyed, true, 'the server side is destroyed');
});

t.test('writeRejection destroys the socket itself, even when the client keeps its side open', async (t) => {
  // allowHalfOpen: the client does not answer the FIN, so only the gateway's own destroy() closes its side
  const { server, client } = await socketPair(t, { allowHalfOpen: true });
  let data = '';
  client.setEncoding('latin1');
  client.on('data', (chunk: string) => (data += chunk));
  const ended = once(client, 'end');
  const serverClosed = once(server, 'close').then(() => true);
  const err = new GatewayError('GW_ERR_ROUTE_NOT_FOUND');
  t.equal(writeRejection(server, err, 'n'), true);
  await ended;
  t.equal(data, rejectionBytes(err, 'n'), 'the whole response arrived before the FIN');
  const closed = await Promise.race([serverClosed, new Promise((r) => setTimeout(() => r(false), 1000).unref())]);
  t.equal(closed, true, 'the server side closed without the client closing');
  t.equal(server.destroyed, true);
});

t.test('writeRejection is silent on a destroyed socket', async (t) => {
  const { server, client } = await socketPair(t);
  const received = readAll(client);
  server.destroy();
  t.equal(writeRejection(server, new GatewayError('GW_ERR_TOKEN_EXPIRED'), 'id'), false);
  const { data } = await received;
  t.equal(data, '', 'nothing written');
});

t.test('writeRejection on an already-ended socket writes nothing and destroys it', async (t) => {
  const { server, client } = await socketPair(t);
  const received = readAll(client);
  server.end('already answered');
  t.equal(writeRejection(server, new GatewayError('GW_ERR_TOKEN_EXPIRED'), 'id'), false);
  t.equal(server.destroyed, true);
  const { data } = await received;
  t.notMatch(data, /HTTP\/1\.1 401/, 'no rejection after someone else answered');
});

t.test('sendRejection answers an ordinary HTTP request the same way, minus Connection', async (t) => {
  const server = createHttpServer((_req, res) =>
    sendRejection(res, new GatewayError('GW_ERR_CAPACITY', undefined, { 'Retry-After': '1' }), 'plain-1'),
  );
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const port = (server.address() as AddressInfo).port;
  const res = await new Promise<IncomingMessage>((resolve, reject) => httpGet({ port, host: '127.0.0.1', path: '/' }, resolve).on('error', reject));
  let body = '';
  res.setEncoding('utf8');
  for await (const chunk of res) body += chunk;
  t.equal(res.statusCode, 503);
  t.equal(res.headers['content-type'], 'application/json');
  t.equal(res.headers['content-length'], '70');
  t.equal(res.headers['cache-control'], 'no-store');
  t.equal(res.headers['x-request-id'], 'plain-1');
  t.equal(res.headers['retry-after'], '1');
  t.equal(res.headers['www-authenticate'], undefined);
  t.equal(body, '{"error":"unavailable","error_description":"connection limit reached"}');
});
