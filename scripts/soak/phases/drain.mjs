// Drain under load (SPEC 6.4 and 9): open connections on both routes, new handshakes arriving, then
// SIGTERM. What SPEC promises, and what is asserted:
// - relay connections get a close frame 1001 within drain.spreadMs (a clean close, not a cut);
// - pipe connections (bytes the gateway cannot frame) keep working until drain.timeoutMs and are
//   destroyed then, not before;
// - new upgrades while draining are answered 503 with Retry-After, and /readyz is 503;
// - the process exits 0 once the connections are gone, shortly after drain.timeoutMs.
import { performance } from 'node:perf_hooks';
import { openSocket, pool } from '../lib/client.mjs';
import { startGateway, tokens } from '../lib/gateway.mjs';

/** How early a pipe connection may end before drain.timeoutMs and still count as "at the deadline" (timer jitter). */
const EARLY_MS = 100;
/** How much later than spreadMs a relay connection's 1001 may arrive (event-loop delay with many sockets). */
const LATE_MS = 1000;
const PROBE_LOOPS = 2;
const PROBE_EVERY_MS = 50;

/** Runs the drain phase; resolves { pass, figures, problems }. */
export async function drain(ctx, { connections = 1000, timeoutMs = 5000, spreadMs = 1000 } = {}) {
  const gw = await startGateway(ctx, 'drain', { drain: { timeoutMs, spreadMs } });
  const nextToken = tokens(ctx.secret);
  const sockets = [];
  const probes = [];
  let probing = true;
  try {
    await pool(connections, 100, async (i) => {
      const ws = await openSocket({ port: gw.port, path: i % 2 ? '/relay' : '/echo', token: nextToken() });
      if (ws.status !== 101) throw new Error(`could not open the connections to drain: ${ws.status}`);
      ws.mode = i % 2 ? 'relay' : 'pipe';
      sockets.push(ws);
    });
    const probeLoop = async () => {
      while (probing) {
        const at = performance.now();
        const ws = await openSocket({ port: gw.port, path: '/echo', token: nextToken(), timeoutMs: 3000 });
        probes.push({ at, status: ws.status, retryAfter: ws.header('retry-after') });
        if (ws.status === 101) await ws.close();
        await new Promise((r) => setTimeout(r, PROBE_EVERY_MS));
      }
    };
    const load = Array.from({ length: PROBE_LOOPS }, probeLoop);
    await new Promise((r) => setTimeout(r, 300));

    // An attached inspector session would not hold the exit up (the CLI calls process.exit), but the
    // drain is about the client connections only: detach first.
    gw.detach();
    const t0 = performance.now();
    gw.signal('SIGTERM');
    let exitAt = 0;
    const exited = gw.exited.then((e) => {
      exitAt = performance.now();
      return e;
    });
    await new Promise((r) => setTimeout(r, 500));
    const readyz = await gw.readyz();
    await new Promise((r) => setTimeout(r, Math.max(0, timeoutMs / 2 - (performance.now() - t0))));
    const pipes = sockets.filter((s) => s.mode === 'pipe');
    const relays = sockets.filter((s) => s.mode === 'relay');
    const midOpenPipes = pipes.filter((s) => s.open).length;
    let midEchoFailures = 0;
    await pool(pipes.length, 200, async (i) => {
      if (!(await pipes[i].echo(`draining ${i}`))) midEchoFailures++;
    });
    const kill = setTimeout(() => gw.signal('SIGKILL'), timeoutMs + 15000);
    const exit = await exited;
    clearTimeout(kill);
    probing = false;
    await Promise.all(load);
    await new Promise((r) => setTimeout(r, 200));

    const rel = (t) => Math.round(t - t0);
    const relayClean = relays.filter((s) => s.closeCode === 1001 && s.end?.by === 'server' && s.closeFrameAt - t0 <= spreadMs + LATE_MS);
    const relayCut = relays.filter((s) => s.end?.by === 'cut' || !s.closeFrameAt);
    const pipeEarly = pipes.filter((s) => s.end && s.end.at - t0 < timeoutMs - EARLY_MS);
    const pipeEnds = pipes.filter((s) => s.end).map((s) => rel(s.end.at)).sort((a, b) => a - b);
    const relayCloseAt = relays.filter((s) => s.closeFrameAt).map((s) => rel(s.closeFrameAt)).sort((a, b) => a - b);
    // A probe sent after the signal was surely handled and before the exit must get 503 with Retry-After.
    const during = probes.filter((p) => p.at - t0 > 250 && (!exitAt || p.at < exitAt - 250));
    const during503 = during.filter((p) => p.status === 503 && Number(p.retryAfter) >= 1);
    const before = probes.filter((p) => p.at < t0);

    const figures = {
      connections: sockets.length,
      drain: { timeoutMs, spreadMs },
      relay: {
        count: relays.length,
        closed1001: relayClean.length,
        cut: relayCut.length,
        closeFrameMs: { first: relayCloseAt[0] ?? null, last: relayCloseAt.at(-1) ?? null },
      },
      pipe: {
        count: pipes.length,
        openAtHalfTimeout: midOpenPipes,
        echoFailuresAtHalfTimeout: midEchoFailures,
        endedBeforeTimeout: pipeEarly.length,
        endMs: { first: pipeEnds[0] ?? null, last: pipeEnds.at(-1) ?? null },
      },
      probes: { beforeSignal: before.length, beforeSignalOk: before.filter((p) => p.status === 101).length, duringDrain: during.length, answered503: during503.length },
      readyzWhileDraining: readyz,
      exit: { code: exit.code, signal: exit.signal, atMs: exitAt ? rel(exitAt) : null },
    };
    const problems = [];
    if (relayClean.length !== relays.length) problems.push(`${relays.length - relayClean.length} of ${relays.length} relay connections did not get close 1001 within ${spreadMs + LATE_MS} ms (${relayCut.length} cut without a close frame)`);
    if (midOpenPipes !== pipes.length || midEchoFailures) problems.push(`at half the drain timeout ${pipes.length - midOpenPipes} pipe connections were gone and ${midEchoFailures} did not echo`);
    if (pipeEarly.length) problems.push(`${pipeEarly.length} pipe connections cut before drain.timeoutMs (first at ${pipeEnds[0]} ms)`);
    if (during.length === 0) problems.push('no handshake was tried while draining');
    if (during503.length !== during.length) problems.push(`${during.length - during503.length} of ${during.length} handshakes while draining were not 503 with Retry-After: ${JSON.stringify(during.filter((p) => p.status !== 503).slice(0, 3))}`);
    if (readyz !== 503) problems.push(`/readyz answered ${readyz} while draining`);
    if (exit.code !== 0) problems.push(`exit code ${exit.code} (signal ${exit.signal})`);
    if (exitAt && (exitAt - t0 < timeoutMs - EARLY_MS || exitAt - t0 > timeoutMs + 3000)) problems.push(`exited at ${rel(exitAt)} ms, expected shortly after ${timeoutMs} ms`);
    const line =
      `SIGTERM with ${sockets.length} connections (drain.timeoutMs ${timeoutMs}, spreadMs ${spreadMs}): ${relayClean.length}/${relays.length} relay closed 1001 at ${figures.relay.closeFrameMs.first}–${figures.relay.closeFrameMs.last} ms; ` +
      `${pipes.length - pipeEarly.length}/${pipes.length} pipe kept until the deadline (echo at ${timeoutMs / 2} ms: ${pipes.length - midEchoFailures} ok), ended at ${figures.pipe.endMs.first}–${figures.pipe.endMs.last} ms; ` +
      `${during503.length}/${during.length} handshakes while draining 503; readyz ${readyz}; exit ${exit.code} at ${figures.exit.atMs} ms`;
    return { pass: problems.length === 0, line, figures, problems };
  } finally {
    probing = false;
    for (const ws of sockets) if (!ws.end) ws.destroy();
    await gw.stop();
  }
}
