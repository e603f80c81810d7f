// Idle: thousands of authenticated connections held open for minutes, half piped and half relayed, while
// the gateway pings the relayed ones (heartbeatMs) and the client answers. Nothing may end them: every
// close that the client did not start is counted as unexpected. Midway every connection sends a ping and
// at the end an echo, so "open" means "working", not just "not closed". Memory per connection is the
// RSS (and heap after GC) difference divided by the connections opened.
import { performance } from 'node:perf_hooks';
import { openSocket, pool } from '../lib/client.mjs';
import { mb, startGateway, tokens } from '../lib/gateway.mjs';
import { FD_SLACK } from './churn.mjs';

const OPEN_CONCURRENCY = 100;
const SWEEP_CONCURRENCY = 200;

async function openMany(gw, path, count, nextToken, sockets, onEnd) {
  let failed = 0;
  const statuses = {};
  await pool(count, OPEN_CONCURRENCY, async () => {
    const ws = await openSocket({ port: gw.port, path, token: nextToken() });
    if (ws.status !== 101) {
      failed++;
      statuses[ws.status] = (statuses[ws.status] ?? 0) + 1;
      return;
    }
    ws.mode = path === '/relay' ? 'relay' : 'pipe';
    ws.onEnd = onEnd;
    sockets.push(ws);
  });
  return { failed, statuses };
}

async function sweep(sockets, what) {
  let failed = 0;
  await pool(sockets.length, SWEEP_CONCURRENCY, async (i) => {
    const ws = sockets[i];
    const ok = what === 'ping' ? await ws.ping(`p${i}`) : await ws.echo(`idle ${i} still here`);
    if (!ok) failed++;
  });
  return failed;
}

const perConn = (kibDelta, n) => (n ? Math.round((kibDelta * 1024) / n) : null);

/** Runs the idle phase; resolves { pass, figures, problems }. */
export async function idle(ctx, { connections = 9000, minutes = 10 } = {}) {
  const holdMs = Math.round(minutes * 60000);
  // Enough heartbeats to matter in a short run; the SPEC default period (30 s) would send none in one.
  const heartbeatMs = Math.min(20000, Math.max(1000, Math.round(holdMs / 4)));
  const gw = await startGateway(ctx, 'idle', { heartbeatMs });
  const sockets = [];
  const unexpected = [];
  const onEnd = (ws) => {
    if (ws.end.by !== 'client') unexpected.push({ mode: ws.mode, by: ws.end.by, code: ws.end.code });
  };
  try {
    const nextToken = tokens(ctx.secret);
    const base = await gw.snapshot(200);
    const pipeN = Math.floor(connections / 2);
    const t0 = performance.now();
    const pipeOpen = await openMany(gw, '/echo', pipeN, nextToken, sockets, onEnd);
    const afterPipe = await gw.snapshot(500);
    const relayOpen = await openMany(gw, '/relay', connections - pipeN, nextToken, sockets, onEnd);
    const openSeconds = (performance.now() - t0) / 1000;
    const afterRelay = await gw.snapshot(500);
    const counted = await gw.connections();
    const pipeOk = sockets.filter((s) => s.mode === 'pipe').length;
    const relayOk = sockets.length - pipeOk;

    // The hold: samples of memory and fds over time; one ping sweep halfway.
    const samples = [];
    const sampleEvery = Math.max(1000, Math.min(60000, Math.round(holdMs / 10)));
    const holdStart = performance.now();
    let pingFailures = null;
    while (performance.now() - holdStart < holdMs) {
      const left = holdMs - (performance.now() - holdStart);
      await new Promise((r) => setTimeout(r, Math.min(sampleEvery, left)));
      const elapsed = performance.now() - holdStart;
      if (pingFailures === null && elapsed >= holdMs / 2) pingFailures = await sweep(sockets, 'ping');
      const heap = await gw.heapAfterGc();
      samples.push({ s: Math.round(elapsed / 1000), rssMB: mb(gw.rssKiB() * 1024), heapMB: mb(heap), fds: gw.fds(), open: sockets.filter((s) => s.open).length });
    }
    pingFailures ??= await sweep(sockets, 'ping');
    const echoFailures = await sweep(sockets, 'echo');
    const stillOpen = sockets.filter((s) => s.open).length;
    const relayPings = sockets.filter((s) => s.mode === 'relay').map((s) => s.pings);
    const minPings = relayPings.length ? Math.min(...relayPings) : null;
    const expectedPings = Math.max(1, Math.floor(holdMs / heartbeatMs) - 1);

    await pool(sockets.length, SWEEP_CONCURRENCY, async (i) => void (await sockets[i].close()));
    const left = await gw.waitConnections(0);
    const end = await gw.snapshot();

    const opened = sockets.length;
    const figures = {
      connections,
      opened,
      openFailures: pipeOpen.failed + relayOpen.failed,
      openStatuses: { ...pipeOpen.statuses, ...relayOpen.statuses },
      openSeconds: Math.round(openSeconds * 10) / 10,
      gatewayCounted: counted,
      holdMinutes: minutes,
      heartbeatMs,
      unexpectedCloses: unexpected.length,
      unexpectedDetail: unexpected.slice(0, 5),
      stillOpenAtEnd: stillOpen,
      pingSweepFailures: pingFailures,
      echoSweepFailures: echoFailures,
      relayPingsPerConnection: { min: minPings, expectedAtLeast: expectedPings, total: relayPings.reduce((a, b) => a + b, 0) },
      fds: { base: base.fds, open: afterRelay.fds, end: end.fds, perConnection: opened ? Math.round(((afterRelay.fds - base.fds) / opened) * 100) / 100 : null },
      rssMB: { base: mb(base.rssKiB * 1024), open: mb(afterRelay.rssKiB * 1024), end: mb(end.rssKiB * 1024) },
      heapMB: { base: mb(base.heapBytes), open: mb(afterRelay.heapBytes), end: mb(end.heapBytes) },
      rssPerConnectionBytes: {
        all: perConn(afterRelay.rssKiB - base.rssKiB, opened),
        pipe: perConn(afterPipe.rssKiB - base.rssKiB, pipeOk),
        relay: perConn(afterRelay.rssKiB - afterPipe.rssKiB, relayOk),
      },
      heapPerConnectionBytes: {
        all: opened ? Math.round((afterRelay.heapBytes - base.heapBytes) / opened) : null,
        pipe: pipeOk ? Math.round((afterPipe.heapBytes - base.heapBytes) / pipeOk) : null,
        relay: relayOk ? Math.round((afterRelay.heapBytes - afterPipe.heapBytes) / relayOk) : null,
      },
      samples,
      connectionsLeft: left,
    };
    const problems = [];
    if (figures.openFailures) problems.push(`${figures.openFailures} connections failed to open: ${JSON.stringify(figures.openStatuses)}`);
    if (counted !== opened) problems.push(`the gateway counted ${counted} live connections, the client ${opened}`);
    if (unexpected.length) problems.push(`${unexpected.length} unexpected closes, e.g. ${JSON.stringify(figures.unexpectedDetail)}`);
    if (pingFailures || echoFailures) problems.push(`${pingFailures} pings and ${echoFailures} echoes not answered at the sweeps`);
    if (minPings !== null && minPings < expectedPings) problems.push(`a relayed connection got ${minPings} heartbeat pings, expected at least ${expectedPings}`);
    if (left !== 0) problems.push(`${left} connections left in the gateway after the client closed all`);
    if (Math.abs(end.fds - base.fds) > FD_SLACK) problems.push(`fds ${base.fds} → ${end.fds} after closing all (more than ${FD_SLACK} apart)`);
    const rssLine = `RSS/conn ${figures.rssPerConnectionBytes.all} B (pipe ${figures.rssPerConnectionBytes.pipe}, relay ${figures.rssPerConnectionBytes.relay})`;
    const line =
      `${opened} connections (${pipeOk} pipe, ${relayOk} relay) held ${minutes} min, heartbeat ${heartbeatMs} ms: ${unexpected.length} unexpected closes, ` +
      `${pingFailures + echoFailures} sweep failures, relay pings ≥ ${minPings}/conn; ${rssLine}; RSS ${figures.rssMB.base} → ${figures.rssMB.open} MB open → ${figures.rssMB.end} MB closed; fds ${base.fds} → ${afterRelay.fds} → ${end.fds}`;
    return { pass: problems.length === 0, line, figures, problems };
  } finally {
    for (const ws of sockets) if (!ws.end) ws.destroy();
    await gw.stop();
  }
}
