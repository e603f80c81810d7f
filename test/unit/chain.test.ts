import { getEventListeners } from 'node:events';
import type { IncomingMessage } from 'node:http';
import { PassThrough } from 'node:stream';
import t from 'tap';
import type { AuthRequest, AuthResult, Authenticator } from '../../src/auth/authenticator.js';
import { runChain, withDeadline } from '../../src/auth/chain.js';
import { GatewayError } from '../../src/errors.js';
import type { Identity } from '../../src/types.js';

function authRequest(signal = new AbortController().signal): AuthRequest {
  const req = { url: '/chat', method: 'GET', headers: {} } as unknown as IncomingMessage;
  return { req, socket: new PassThrough(), head: Buffer.alloc(0), url: new URL('/chat', 'http://gateway.invalid'), signal };
}

const identity = (subject: string, authenticator: string): Identity => ({ subject, authenticator, claims: { sub: subject } });

/** A fake authenticator with a scripted answer; `calls` counts how often it was asked. */
function fake(name: string, answer: () => AuthResult | null | Promise<AuthResult | null>): Authenticator & { calls: number } {
  return {
    name,
    type: 'fake',
    calls: 0,
    authenticate() {
      this.calls++;
      return answer();
    },
  };
}

const none = (name: string) => fake(name, async () => null);
const accepts = (name: string, subject = name) => fake(name, async () => ({ identity: identity(subject, name) }));
const rejects = (name: string, err: unknown) =>
  fake(name, async () => {
    throw err;
  });

/** What `work` throws or rejects with (runChain throws at once when every authenticator answers at once). */
async function caught(work: () => unknown): Promise<unknown> {
  try {
    await work();
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

t.test('runChain: [null, identity] → the second decides', async (t) => {
  const first = none('cookie');
  const second = accepts('jwt', 'alice');
  const outcome = await runChain([first, second], authRequest());
  t.same(outcome, { identity: { subject: 'alice', authenticator: 'jwt', claims: { sub: 'alice' } }, authenticator: 'jwt' });
  t.equal(first.calls, 1);
  t.equal(second.calls, 1);
});

t.test('runChain: the first that finds its credential decides alone', async (t) => {
  const first = accepts('a', 'alice');
  const second = accepts('b', 'bob');
  const outcome = await runChain([first, second], authRequest());
  t.equal(outcome.authenticator, 'a');
  t.equal(outcome.identity.subject, 'alice');
  t.equal(second.calls, 0, 'the next one is never asked');
});

t.test('runChain: the credential where it was found is passed on', async (t) => {
  const credential = { kind: 'query', name: 'access_token', value: 't' } as const;
  const auth = fake('jwt', async () => ({ identity: identity('alice', 'jwt'), credential }));
  const outcome = await runChain([auth], authRequest());
  t.same(outcome, { identity: identity('alice', 'jwt'), credential, authenticator: 'jwt' });
});

t.test('runChain: [GatewayError, identity] → rejects with the first one\'s error', async (t) => {
  const expired = new GatewayError('GW_ERR_TOKEN_EXPIRED');
  const second = accepts('apikey');
  const err = await caught(() => runChain([rejects('jwt', expired), second], authRequest()));
  t.equal(err, expired, 'the very same error object');
  t.equal(second.calls, 0, 'a later authenticator that would accept is not asked');
});

t.test('runChain: [null, GatewayError, identity] → rejects with the second\'s error', async (t) => {
  const invalid = new GatewayError('GW_ERR_API_KEY_INVALID');
  const third = accepts('c');
  const err = await caught(() => runChain([none('a'), rejects('b', invalid), third], authRequest()));
  t.equal(err, invalid);
  t.equal(third.calls, 0);
});

t.test('runChain: nobody finds a credential → 401 GW_ERR_CREDENTIALS_MISSING', async (t) => {
  for (const chain of [[none('a'), none('b'), none('c')], [none('a')], []]) {
    const err = await caught(() => runChain(chain, authRequest()));
    t.type(err, GatewayError);
    t.match(err, { code: 'GW_ERR_CREDENTIALS_MISSING', status: 401, error: 'unauthorized', description: 'credentials required' }, `${chain.length} authenticators`);
  }
});

t.test('runChain: a plain error fails closed with 503 and keeps the cause', async (t) => {
  const down = new Error('connect ECONNREFUSED 127.0.0.1:6379');
  const next = accepts('next');
  const err = await caught(() => runChain([none('a'), rejects('sessions', down), next], authRequest()));
  t.type(err, GatewayError);
  const gw = err as GatewayError;
  t.equal(gw.code, 'GW_ERR_AUTH_UNAVAILABLE');
  t.equal(gw.status, 503);
  t.equal(gw.error, 'unavailable');
  t.equal(gw.description, 'authentication backend unavailable');
  t.equal(gw.cause, down, 'the original error is the cause');
  t.equal(gw.message, 'sessions: backend failed');
  t.equal(next.calls, 0, 'failing closed: the next authenticator is not asked');
});

t.test('runChain: a synchronous throw and a non-Error throw are 503 too', async (t) => {
  const sync: Authenticator = {
    name: 'sync',
    type: 'fake',
    authenticate() {
      throw new TypeError('boom');
    },
  };
  const syncErr = (await caught(() => runChain([sync], authRequest()))) as GatewayError;
  t.equal(syncErr.code, 'GW_ERR_AUTH_UNAVAILABLE');
  t.type(syncErr.cause, TypeError);

  const stringErr = (await caught(() => runChain([rejects('str', 'just a string')], authRequest()))) as GatewayError;
  t.equal(stringErr.code, 'GW_ERR_AUTH_UNAVAILABLE');
  t.equal(stringErr.cause, 'just a string');
});

const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;

t.test('withDeadline: work that finishes in time resolves; timer and listener cleared', async (t) => {
  const ac = new AbortController();
  const before = timers();
  const p = withDeadline(Promise.resolve('ok'), 10_000, ac.signal);
  t.equal(timers(), before + 1, 'one timer while pending');
  t.equal(getEventListeners(ac.signal, 'abort').length, 1, 'one abort listener while pending');
  t.equal(await p, 'ok');
  t.equal(timers(), before, 'timer cleared');
  t.equal(getEventListeners(ac.signal, 'abort').length, 0, 'listener removed');
});

t.test('withDeadline: work that rejects passes the error through; timer cleared', async (t) => {
  const ac = new AbortController();
  const before = timers();
  const boom = new GatewayError('GW_ERR_SIGNATURE_INVALID');
  t.equal(await caught(() => withDeadline(Promise.reject(boom), 10_000, ac.signal)), boom);
  t.equal(timers(), before);
  t.equal(getEventListeners(ac.signal, 'abort').length, 0);
});

t.test('withDeadline: timeout → 503 GW_ERR_AUTH_TIMEOUT; timers cleared', async (t) => {
  const ac = new AbortController();
  const before = timers();
  const started = Date.now();
  const never = new Promise<never>(() => {});
  const err = await caught(() => withDeadline(never, 30, ac.signal));
  t.type(err, GatewayError);
  t.match(err, { code: 'GW_ERR_AUTH_TIMEOUT', status: 503, error: 'unavailable', description: 'authentication timed out' });
  t.ok(Date.now() - started >= 25, 'not before the deadline');
  t.equal(timers(), before, 'no timer left');
  t.equal(getEventListeners(ac.signal, 'abort').length, 0, 'no listener left');
});

t.test('withDeadline: work settling after the timeout changes nothing', async (t) => {
  const ac = new AbortController();
  let fail!: (err: Error) => void;
  const late = new Promise<never>((_resolve, reject) => (fail = reject));
  const err = (await caught(() => withDeadline(late, 10, ac.signal))) as GatewayError;
  t.equal(err.code, 'GW_ERR_AUTH_TIMEOUT');
  fail(new Error('too late')); // must not surface as an unhandled rejection
  await new Promise((r) => setImmediate(r));
});

t.test('withDeadline: abort → rejects with the abort reason; timers cleared', async (t) => {
  const ac = new AbortController();
  const before = timers();
  const reason = new Error('client hung up');
  const p = withDeadline(new Promise<never>(() => {}), 10_000, ac.signal);
  ac.abort(reason);
  t.equal(await caught(() => p), reason);
  t.equal(timers(), before, 'timer cleared');
  t.equal(getEventListeners(ac.signal, 'abort').length, 0);
});

t.test('withDeadline: an already-aborted signal rejects at once and leaves no timer', async (t) => {
  const ac = new AbortController();
  const reason = new GatewayError('GW_ERR_SHUTTING_DOWN');
  ac.abort(reason);
  const before = timers();
  let workRan = false;
  const work = Promise.resolve().then(() => (workRan = true));
  t.equal(await caught(() => withDeadline(work, 10_000, ac.signal)), reason);
  t.equal(timers(), before);
  t.equal(getEventListeners(ac.signal, 'abort').length, 0);
  t.equal(workRan, true, 'the work itself is not the deadline\'s to cancel');
});

t.test('withDeadline: after every case above, the process holds no timer of ours', async (t) => {
  // tap itself may hold timers; ours were counted relative to the count before each call. Here, an
  // end-to-end check: a burst of deadlines that all resolve leaves the count where it started.
  const before = timers();
  const ac = new AbortController();
  await Promise.all(Array.from({ length: 50 }, (_, i) => withDeadline(Promise.resolve(i), 60_000, ac.signal)));
  t.equal(timers(), before);
  t.equal(getEventListeners(ac.signal, 'abort').length, 0);
});

t.test('runChain: answers synchronously while every authenticator does; a promise once one has to wait', async (t) => {
  const syncNone = fake('a', () => null);
  const syncYes = fake('b', () => ({ identity: identity('bob', 'b') }));
  const decided = runChain([syncNone, syncYes], authRequest());
  t.notOk(decided instanceof Promise, 'no promise, no extra turn');
  t.equal((decided as { authenticator: string }).authenticator, 'b');
  const waited = runChain([syncNone, none('c'), syncYes], authRequest());
  t.ok(waited instanceof Promise);
  t.equal((await waited).authenticator, 'b', 'the chain goes on after the one that waited');
  t.throws(() => runChain([syncNone], authRequest()), { code: 'GW_ERR_CREDENTIALS_MISSING' }, 'a synchronous refusal throws at once');
});
