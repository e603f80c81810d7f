// SPEC 9 "rateLimit" (token bucket per key, burst default, continuous refill, Retry-After in whole
// seconds ≥ 1), the connection counts behind the caps (2.3), and SPEC 5 / 9 upstream balancing:
// round-robin or least-connections, passive ejection for ejectMs, the one ejected longest ago when every
// target is out. Time is driven through the `now` parameters, so nothing here sleeps.
import { Session } from 'node:inspector';
import t from 'tap';
import { ConnectionCounts, parseRate, RateLimiter } from '../../src/limits.js';
import { UpstreamPool } from '../../src/upstream-pool.js';

/** Takes `n` tokens for `key` at `now`; the list of what each take returned (0 = allowed). */
const takes = (limiter: RateLimiter, key: string, n: number, now: number) => Array.from({ length: n }, () => limiter.take(key, now));
/** How many takes in a row succeed at one instant, from a fresh key (= the bucket's capacity). */
const capacityOf = (limiter: RateLimiter, key = 'k', now = 1000) => {
  let n = 0;
  while (limiter.take(key, now) === 0 && n < 10_000) n++;
  return n;
};

/**
 * The size of the Map held in a private field, read through the inspector protocol (no other way in
 * from outside, and nothing about the object is altered).
 */
function privateMapSize(object: object, field: string): number {
  const session = new Session();
  session.connect();
  const global = globalThis as { __probe?: object };
  global.__probe = object;
  try {
    let size = NaN;
    session.post('Runtime.evaluate', { expression: 'globalThis.__probe' }, (err, evaluated) => {
      if (err) throw err;
      session.post('Runtime.getProperties', { objectId: evaluated.result.objectId!, ownProperties: true }, (err2, props) => {
        if (err2) throw err2;
        // `privateProperties` is in the protocol (V8 ≥ 9.x) but not in @types/node's typings.
        const { privateProperties } = props as { privateProperties?: { name: string; value?: { description?: string } }[] };
        const entry = privateProperties?.find((p) => p.name === field);
        const match = /^Map\((\d+)\)$/.exec(entry?.value?.description ?? '');
        if (match) size = Number(match[1]);
      });
    });
    return size;
  } finally {
    delete global.__probe;
    session.disconnect();
  }
}

t.test('parseRate: tokens per second', async (t) => {
  const table: [string, number][] = [
    ['20/s', 20],
    ['1/s', 1],
    ['100/m', 100 / 60],
    ['60/m', 1],
    ['1000/h', 1000 / 3600],
    ['3600/h', 1],
    ['0.5/s', 0.5],
  ];
  for (const [rate, perSecond] of table) t.equal(parseRate(rate), perSecond, rate);
  for (const bad of ['', '20', '20/d', '/s', 'x/s', '20/ s', '20 /s', '-1/s', '20/S', '20/sec', '1e3/s']) {
    t.throws(() => parseRate(bad), TypeError, `"${bad}" is refused`);
  }
});

t.test('RateLimiter: capacity is burst, default the per-second count (at least 1)', async (t) => {
  const table: [string, string, number | undefined, number][] = [
    ['20/s default', '20/s', undefined, 20],
    ['2/s default', '2/s', undefined, 2],
    ['1/s default', '1/s', undefined, 1],
    ['60/m default (1 per second)', '60/m', undefined, 1],
    ['1000/h default: less than one per second, still 1', '1000/h', undefined, 1],
    ['1/h default', '1/h', undefined, 1],
    ['20/s burst 40', '20/s', 40, 40],
    ['20/s burst 1', '20/s', 1, 1],
    ['1/m burst 5', '1/m', 5, 5],
    ['1000/h burst 3', '1000/h', 3, 3],
  ];
  for (const [name, rate, burst, capacity] of table) t.equal(capacityOf(new RateLimiter(rate, burst)), capacity, name);
  // 100/m is 1.67 per second: the capacity is a whole number of handshakes, 1 or 2.
  const fractional = capacityOf(new RateLimiter('100/m'));
  t.ok(fractional >= 1 && fractional <= 2, `100/m default capacity ${fractional} is 1 or 2`);
});

t.test('RateLimiter: one bucket per key', async (t) => {
  const limiter = new RateLimiter('2/s');
  t.same(takes(limiter, 'alice', 3, 1000).map((w) => w > 0), [false, false, true], 'alice: two, then refused');
  t.same(takes(limiter, 'bob', 2, 1000), [0, 0], 'bob has a full bucket of his own');
  t.ok(limiter.take('alice', 1000) > 0, 'alice is still refused');
});

t.test('RateLimiter: refilled continuously, not in windows', async (t) => {
  const limiter = new RateLimiter('2/s', 2); // one token every 500 ms
  t.same(takes(limiter, 'k', 2, 10_000), [0, 0], 'the full bucket');
  t.ok(limiter.take('k', 10_000) > 0, 'empty');
  t.ok(limiter.take('k', 10_250) > 0, 'half a token after 250 ms is not enough');
  t.equal(limiter.take('k', 10_500), 0, 'a whole token after 500 ms');
  t.ok(limiter.take('k', 10_500) > 0, 'and only one');
  t.equal(limiter.take('k', 11_000), 0, 'another 500 ms, another token');
  t.ok(limiter.take('k', 11_001) > 0);
  // A refused take does not cost a token: the refill goes on counting from the last one given.
  const fresh = new RateLimiter('2/s', 2);
  takes(fresh, 'k', 2, 0);
  for (let at = 50; at < 500; at += 50) t.ok(fresh.take('k', at) > 0, `refused at ${at} ms`);
  // (501, not 500: ten refills of 0.1 add up to 0.9999999999999999 in floating point.)
  t.equal(fresh.take('k', 501), 0, 'refused takes did not delay the refill');
  // Idle time never fills the bucket beyond burst.
  const idle = new RateLimiter('2/s', 2);
  takes(idle, 'k', 2, 0);
  t.same(takes(idle, 'k', 3, 3_600_000).map((w) => w > 0), [false, false, true], 'after an hour: burst, not 7200');
  // Slow rates refill continuously too: 100/m is one token every 600 ms.
  const slow = new RateLimiter('100/m', 1);
  t.equal(slow.take('k', 0), 0);
  t.ok(slow.take('k', 599) > 0, 'not yet at 599 ms');
  t.equal(slow.take('k', 600), 0, 'a token at 600 ms');
});

t.test('RateLimiter: the wait is whole seconds, at least 1, until the next token', async (t) => {
  const table: [string, string, number | undefined, number, number][] = [
    // name, rate, burst, ms after emptying it, expected Retry-After
    ['20/s just emptied', '20/s', undefined, 0, 1],
    ['2/s just emptied', '2/s', 2, 0, 1],
    ['1/s just emptied', '1/s', undefined, 0, 1],
    ['1/s after 999 ms', '1/s', undefined, 999, 1],
    ['100/m just emptied (0.6 s)', '100/m', 1, 0, 1],
    ['1/m just emptied', '1/m', undefined, 0, 60],
    ['1/m after 30 s', '1/m', undefined, 30_000, 30],
    ['1/m after 59.5 s', '1/m', undefined, 59_500, 1],
    ['1000/h just emptied (3.6 s)', '1000/h', undefined, 0, 4],
    ['1000/h after 3 s', '1000/h', undefined, 3000, 1],
    ['1/h just emptied', '1/h', undefined, 0, 3600],
  ];
  for (const [name, rate, burst, after, expected] of table) {
    const limiter = new RateLimiter(rate, burst);
    while (limiter.take('k', 0) === 0);
    const wait = limiter.take('k', after);
    t.equal(wait, expected, name);
    t.ok(Number.isInteger(wait) && wait >= 1, `${name}: whole seconds, at least 1`);
  }
  // Waiting as long as Retry-After says is always enough.
  for (const rate of ['20/s', '3/s', '100/m', '7/m', '1000/h']) {
    const limiter = new RateLimiter(rate);
    while (limiter.take('k', 0) === 0);
    const wait = limiter.take('k', 0);
    t.equal(limiter.take('k', wait * 1000), 0, `${rate}: a token after Retry-After ${wait}`);
  }
});

t.test('RateLimiter: the default clock is performance.now()', async (t) => {
  const limiter = new RateLimiter('1/h');
  t.equal(limiter.take('k'), 0);
  t.equal(limiter.take('k'), 3600, 'refused without a `now`, a full interval to wait');
  t.equal(limiter.take('k', performance.now() + 3_600_000), 0, 'and given a token an hour on');
});

t.test('ConnectionCounts: acquire counts, release uncounts once', async (t) => {
  const counts = new ConnectionCounts();
  t.equal(counts.count('alice'), 0, 'an unknown key counts 0');
  const a1 = counts.acquire('alice');
  const a2 = counts.acquire('alice');
  const b1 = counts.acquire('bob');
  t.equal(counts.count('alice'), 2);
  t.equal(counts.count('bob'), 1);
  a1();
  t.equal(counts.count('alice'), 1);
  a1();
  a1();
  t.equal(counts.count('alice'), 1, 'releasing the same connection again changes nothing');
  t.equal(counts.count('bob'), 1, 'other keys untouched');
  a2();
  t.equal(counts.count('alice'), 0);
  a2();
  t.equal(counts.count('alice'), 0, 'never below 0');
  const a3 = counts.acquire('alice');
  t.equal(counts.count('alice'), 1, 'a new connection after a double release counts 1');
  a1();
  a2();
  t.equal(counts.count('alice'), 1, 'stale releases do not uncount the new connection');
  a3();
  b1();
  t.equal(counts.count('bob'), 0);
});

t.test('ConnectionCounts: a key is forgotten when its count drops to 0', async (t) => {
  const counts = new ConnectionCounts();
  const size = () => privateMapSize(counts, '#counts');
  t.equal(size(), 0, 'empty at first (the probe reads the map)');
  const releases = Array.from({ length: 1000 }, (_, i) => counts.acquire(`10.0.${i >> 8}.${i & 255}`));
  const again = counts.acquire('10.0.0.0');
  t.equal(size(), 1000, 'one entry per key');
  for (const release of releases) release();
  t.equal(size(), 1, 'only the key still counted is kept');
  t.equal(counts.count('10.0.0.0'), 1);
  again();
  t.equal(size(), 0, 'nothing kept once every connection is released');
  counts.count('never-acquired');
  t.equal(size(), 0, 'count() of an unknown key does not create it');
});

const A = 'ws://10.0.0.1:9001';
const B = 'ws://10.0.0.2:9001';
const C = 'ws://10.0.0.3:9001';
const picks = (pool: UpstreamPool, n: number, now = 0, tried?: Set<string>) => Array.from({ length: n }, () => pool.pick(tried, now));

t.test('UpstreamPool: round-robin in list order', async (t) => {
  const pool = new UpstreamPool([A, B, C]);
  t.same(picks(pool, 7), [A, B, C, A, B, C, A]);
  t.same(new UpstreamPool([A, B, C], 'round-robin').pick(), A, 'round-robin by name, from the first');
  t.same(picks(new UpstreamPool([A]), 3), [A, A, A], 'a single target');
  t.same(pool.targets, [A, B, C]);
});

t.test('UpstreamPool: pick skips the targets already tried', async (t) => {
  const pool = new UpstreamPool([A, B, C]);
  t.equal(pool.pick(new Set([A])), B, 'the first one tried, the next one');
  t.equal(pool.pick(new Set([C])), A, 'rotation goes on past a tried target');
  t.equal(pool.pick(new Set([A, B])), C);
  t.equal(pool.pick(new Set([A, B, C])), undefined, 'nothing left to try');
  t.equal(new UpstreamPool([A]).pick(new Set([A])), undefined, 'a single target, tried');
  const lc = new UpstreamPool([A, B, C], 'least-connections');
  lc.acquire(B);
  t.equal(lc.pick(new Set([A])), C, 'least-connections skips tried too');
  t.equal(lc.pick(new Set([A, C])), B);
});

t.test('UpstreamPool: an ejected target is out of rotation for ejectMs, then back', async (t) => {
  const pool = new UpstreamPool([A, B, C], 'round-robin', 300);
  pool.eject(B, 1000);
  t.ok(pool.isEjected(B, 1000));
  t.ok(pool.isEjected(B, 1299), 'still out at 299 ms');
  t.notOk(pool.isEjected(A, 1000), 'others are not');
  t.same(picks(pool, 4, 1100), [A, C, A, C], 'B is skipped');
  t.same(picks(pool, 6, 1300).sort(), [A, A, B, B, C, C], 'back in rotation after 300 ms');
  t.notOk(pool.isEjected(B, 1300));
  // Ejected again (a second failure) restarts its time out.
  pool.eject(B, 2000);
  t.ok(pool.isEjected(B, 2200));
  t.same(new Set(picks(pool, 4, 2299)), new Set([A, C]), 'out again for a whole ejectMs');
  t.ok(new Set(picks(pool, 3, 2300)).has(B));
});

t.test('UpstreamPool: the default ejectMs is 10000', async (t) => {
  const pool = new UpstreamPool([A, B]);
  pool.eject(A, 0);
  t.ok(pool.isEjected(A, 9999));
  t.same(picks(pool, 3, 9999), [B, B, B]);
  t.notOk(pool.isEjected(A, 10_000));
  t.same(new Set(picks(pool, 2, 10_000)), new Set([A, B]));
});

t.test('UpstreamPool: every target ejected → the one ejected longest ago', async (t) => {
  const pool = new UpstreamPool([A, B, C], 'round-robin', 1000);
  pool.eject(B, 100);
  pool.eject(C, 200);
  pool.eject(A, 300);
  t.same(picks(pool, 3, 500), [B, B, B], 'B, ejected first, every time');
  t.equal(pool.pick(new Set([B]), 500), C, 'B tried: C is next longest out');
  t.equal(pool.pick(new Set([B, C]), 500), A);
  pool.eject(B, 600); // tried again and failed again
  t.equal(pool.pick(undefined, 700), C, 'now C has been out longest');
  const healthy = new UpstreamPool([A, B, C], 'least-connections', 1000);
  healthy.eject(A, 0);
  healthy.eject(C, 10);
  healthy.acquire(B);
  healthy.acquire(B);
  t.equal(healthy.pick(undefined, 20), B, 'a healthy target is preferred even with more connections');
  healthy.eject(B, 30);
  t.equal(healthy.pick(undefined, 40), A, 'least-connections also falls back to the one ejected longest ago');
});

t.test('UpstreamPool: least-connections picks the target with the fewest live connections', async (t) => {
  const pool = new UpstreamPool([A, B, C], 'least-connections');
  const on = (target: string | undefined) => pool.acquire(target!);
  const rA = on(pool.pick());
  const rB = on(pool.pick());
  const rC = on(pool.pick());
  t.same([A, B, C].map((x) => pool.active(x)), [1, 1, 1], 'three connections spread over three targets');
  rB();
  t.equal(pool.pick(), B, 'B has the fewest');
  t.equal(pool.pick(), B, 'and keeps being picked while nothing changes');
  const rB2 = on(B);
  const rA2 = on(A);
  t.not(pool.pick(), A, 'A 2, B 1, C 1 → not A');
  t.same([A, B, C].map((x) => pool.active(x)), [2, 1, 1]);
  rC();
  t.equal(pool.pick(), C, 'C emptied');
  rB();
  t.equal(pool.active(B), 1, 'a release counts once');
  rB2();
  t.equal(pool.active(B), 0);
  on(C);
  t.equal(pool.pick(), B, 'A 2, B 0, C 1');
  rA();
  rA2();
  t.equal(pool.active(A), 0);
  t.not(pool.pick(), C, 'C (1) is never the least while A and B have 0');
  t.equal(new UpstreamPool([A, B]).active(A), 0, 'round-robin pools count too');
});
