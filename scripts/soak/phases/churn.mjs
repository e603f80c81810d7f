// Churn: many short connections through one gateway, then its fds and heap after GC compared with before.
// A cycle is connect, authenticate (a token nobody used before), echo one message, close; alternately on
// the pipe and the relay route. One cycle in 20 presents a token with a bad signature (401) and one in 10
// vanishes after the echo without a close frame, so refusal and abrupt-end paths are churned too.
import { performance } from 'node:perf_hooks';
import { openSocket, pool } from '../lib/client.mjs';
import { mb, startGateway, tokens } from '../lib/gateway.mjs';

/** fds may differ by this many from the baseline (a timer's or a resolver's descriptor coming and going). */
export const FD_SLACK = 5;
/** Heap after GC may grow by this much over a churn (no leak is smaller than 10 000 connections × 1 KiB). */
export const HEAP_SLACK_MB = 10;
/**
 * The JWT authenticator caches up to 10 000 verified tokens (src/auth/jwt.ts TOKEN_CACHE). The warm-up
 * fills it with as many distinct tokens as the churn will use (at most that), so that the baseline and the
 * end state hold the same number of cache entries and a difference between them is not the cache filling.
 */
const TOKEN_CACHE_MAX = 10000;

async function cycles(gw, count, concurrency, nextToken, tally) {
  await pool(count, concurrency, async (i) => {
    const path = i % 2 ? '/relay' : '/echo';
    const rejected = i % 20 === 7;
    const ws = await openSocket({ port: gw.port, path, token: nextToken(rejected) });
    if (rejected) {
      if (ws.status === 401) tally.rejected++;
      else tally.fail(`expected 401, got ${ws.status}`);
      return;
    }
    if (ws.status !== 101) return tally.fail(`handshake ${ws.status}`);
    if (!(await ws.echo(`cycle ${i} ${path}`))) {
      ws.destroy();
      return tally.fail('echo');
    }
    if (i % 10 === 3) {
      ws.destroy();
      tally.abrupt++;
      return;
    }
    if (!(await ws.close())) return tally.fail('close not completed by the server');
    tally.clean++;
  });
}

function newTally() {
  const t = { clean: 0, abrupt: 0, rejected: 0, failures: 0, reasons: {} };
  t.fail = (why) => {
    t.failures++;
    t.reasons[why] = (t.reasons[why] ?? 0) + 1;
  };
  return t;
}

/** Runs the churn phase; resolves { pass, figures, problems }. */
export async function churn(ctx, { count = 10000, concurrency = 50 } = {}) {
  const gw = await startGateway(ctx, 'churn');
  try {
    const nextToken = tokens(ctx.secret);
    const start = await gw.snapshot(200);
    const warm = newTally();
    const warmup = Math.min(count, TOKEN_CACHE_MAX);
    await cycles(gw, warmup, concurrency, nextToken, warm);
    const settledWarm = await gw.waitConnections(0);
    const base = await gw.snapshot();

    const tally = newTally();
    const t0 = performance.now();
    await cycles(gw, count, concurrency, nextToken, tally);
    const seconds = (performance.now() - t0) / 1000;
    const left = await gw.waitConnections(0);
    const end = await gw.snapshot();

    const figures = {
      cycles: count,
      concurrency,
      warmupCycles: warmup,
      seconds: Math.round(seconds * 10) / 10,
      cyclesPerSec: Math.round(count / seconds),
      clean: tally.clean,
      abrupt: tally.abrupt,
      rejected401: tally.rejected,
      failures: tally.failures + warm.failures,
      failureReasons: { ...warm.reasons, ...tally.reasons },
      connectionsLeft: left,
      fds: { start: start.fds, base: base.fds, end: end.fds, delta: end.fds - base.fds },
      heapMB: { start: mb(start.heapBytes), base: mb(base.heapBytes), end: mb(end.heapBytes), delta: mb(end.heapBytes - base.heapBytes) },
      rssMB: { start: mb(start.rssKiB * 1024), base: mb(base.rssKiB * 1024), end: mb(end.rssKiB * 1024) },
    };
    const problems = [];
    if (figures.failures) problems.push(`${figures.failures} cycles failed: ${JSON.stringify(figures.failureReasons)}`);
    if (settledWarm !== 0 || left !== 0) problems.push(`connections left in the gateway: ${settledWarm} after warm-up, ${left} after churn`);
    if (Math.abs(figures.fds.delta) > FD_SLACK) problems.push(`fds ${base.fds} → ${end.fds} (more than ${FD_SLACK} apart)`);
    if (figures.heapMB.delta > HEAP_SLACK_MB) problems.push(`heap after GC grew ${figures.heapMB.delta} MB (bound ${HEAP_SLACK_MB} MB)`);
    const line =
      `${count} cycles in ${figures.seconds} s (${figures.cyclesPerSec}/s, ${tally.clean} clean, ${tally.abrupt} abrupt, ${tally.rejected} rejected 401, ${figures.failures} failed); ` +
      `fds ${base.fds} → ${end.fds}; heap after GC ${figures.heapMB.base} → ${figures.heapMB.end} MB (${figures.heapMB.delta >= 0 ? '+' : ''}${figures.heapMB.delta}); RSS ${figures.rssMB.base} → ${figures.rssMB.end} MB`;
    return { pass: problems.length === 0, line, figures, problems };
  } finally {
    await gw.stop();
  }
}
