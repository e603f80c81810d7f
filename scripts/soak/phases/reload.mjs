// Reload under load: established connections (pipe and relay) keep echoing, new connections keep coming,
// and every 2.5 s the config file is rewritten and the gateway gets SIGHUP (SPEC 6.3). Each valid config
// adds a route /gen-<n>, which proves the new config is in force once it answers 101; the second of every
// three configs is invalid (an unknown field), which must be refused with the previous config still in force.
// No established connection may end, no echo may be lost, and no handshake may fail.
import { performance } from 'node:perf_hooks';
import { openSocket, pool } from '../lib/client.mjs';
import { probe, startGateway, tokens } from '../lib/gateway.mjs';

const RELOAD_EVERY_MS = 2500;
const NEW_CONNECTION_LOOPS = 8;
const ECHO_LOOPS = 20;
const IN_FORCE_WITHIN_MS = 2000;

async function waitStatus(port, token, path, want, withinMs) {
  const deadline = performance.now() + withinMs;
  let status;
  while ((status = await probe(port, token, path)) !== want && performance.now() < deadline) await new Promise((r) => setTimeout(r, 25));
  return status;
}

/** Runs the reload phase; resolves { pass, figures, problems }. */
export async function reload(ctx, { seconds = 30, connections = 1000 } = {}) {
  const gw = await startGateway(ctx, 'reload', { generation: 0 });
  const nextToken = tokens(ctx.secret);
  const established = [];
  const unexpected = [];
  let stopping = false;
  try {
    await pool(connections, 100, async (i) => {
      const ws = await openSocket({ port: gw.port, path: i % 2 ? '/relay' : '/echo', token: nextToken() });
      if (ws.status !== 101) throw new Error(`could not open the established connections: ${ws.status}`);
      ws.onEnd = (s) => s.end.by !== 'client' && unexpected.push({ by: s.end.by, code: s.end.code });
      established.push(ws);
    });

    // Established connections: 20 loops, each going round its own share of them, one echo at a time with
    // a 10 ms pause (at most ~2000 echoes/s in all, so the CPU goes to the gateway's reloads and handshakes).
    const echoes = { ok: 0, failed: 0 };
    const echoLoop = async (k) => {
      const mine = established.filter((_, j) => j % ECHO_LOOPS === k);
      for (let i = 0; !stopping && mine.length; i++) {
        if (await mine[i % mine.length].echo(`established ${k} ${i}`)) echoes.ok++;
        else echoes.failed++;
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    // New connections: connect, authenticate, echo, close, as fast as 8 loops go.
    const fresh = { ok: 0, failed: 0, reasons: {} };
    const freshLoop = async (k) => {
      for (let i = k; !stopping; i += NEW_CONNECTION_LOOPS) {
        const ws = await openSocket({ port: gw.port, path: i % 2 ? '/relay' : '/echo', token: nextToken() });
        const why = ws.status !== 101 ? `handshake ${ws.status}` : !(await ws.echo(`fresh ${i}`)) ? 'echo' : !(await ws.close()) ? 'close' : null;
        if (why) {
          fresh.failed++;
          fresh.reasons[why] = (fresh.reasons[why] ?? 0) + 1;
          ws.destroy();
        } else fresh.ok++;
      }
    };
    const load = [...Array.from({ length: ECHO_LOOPS }, (_, k) => echoLoop(k)), ...Array.from({ length: NEW_CONNECTION_LOOPS }, (_, k) => freshLoop(k))];

    const probeToken = nextToken();
    const reloads = { valid: 0, invalid: 0, notInForce: 0, invalidTakenUp: 0, inForceMs: [] };
    const t0 = performance.now();
    let generation = 0;
    for (let n = 1; performance.now() - t0 < seconds * 1000; n++) {
      await new Promise((r) => setTimeout(r, RELOAD_EVERY_MS));
      const invalid = n % 3 === 2;
      const candidate = generation + 1;
      gw.writeConfig({ generation: candidate, invalid });
      const sent = performance.now();
      gw.signal('SIGHUP');
      if (invalid) {
        reloads.invalid++;
        // The refused config's route must never appear; the one in force keeps answering.
        await new Promise((r) => setTimeout(r, 500));
        if ((await probe(gw.port, probeToken, `/gen-${candidate}`)) !== 404) reloads.invalidTakenUp++;
        if ((await probe(gw.port, probeToken, `/gen-${generation}`)) !== 101) reloads.notInForce++;
      } else {
        reloads.valid++;
        const status = await waitStatus(gw.port, probeToken, `/gen-${candidate}`, 101, IN_FORCE_WITHIN_MS);
        if (status === 101) reloads.inForceMs.push(Math.round(performance.now() - sent));
        else reloads.notInForce++;
        generation = candidate;
      }
    }
    const loadSeconds = (performance.now() - t0) / 1000;
    stopping = true;
    await Promise.all(load);
    const stillOpen = established.filter((s) => s.open).length;
    await pool(established.length, 200, async (i) => void (await established[i].close()));
    const left = await gw.waitConnections(0);

    const inForce = reloads.inForceMs.sort((a, b) => a - b);
    const figures = {
      seconds: Math.round(loadSeconds),
      established: established.length,
      stillOpenAtEnd: stillOpen,
      droppedEstablished: unexpected.length,
      echoes,
      newConnections: fresh.ok,
      failedHandshakesOrEchoes: fresh.failed,
      failureReasons: fresh.reasons,
      reloads: { sighup: reloads.valid + reloads.invalid, valid: reloads.valid, invalid: reloads.invalid, notInForce: reloads.notInForce, invalidTakenUp: reloads.invalidTakenUp },
      inForceMs: { median: inForce[inForce.length >> 1] ?? null, max: inForce.at(-1) ?? null },
      connectionsLeft: left,
    };
    const problems = [];
    if (unexpected.length) problems.push(`${unexpected.length} established connections dropped: ${JSON.stringify(unexpected.slice(0, 5))}`);
    if (echoes.failed) problems.push(`${echoes.failed} echoes on established connections lost`);
    if (fresh.failed) problems.push(`${fresh.failed} new connections failed: ${JSON.stringify(fresh.reasons)}`);
    if (reloads.notInForce) problems.push(`${reloads.notInForce} reloads whose config was not in force within ${IN_FORCE_WITHIN_MS} ms (or a refused one that unseated the config in force)`);
    if (reloads.invalidTakenUp) problems.push(`${reloads.invalidTakenUp} invalid configs were put in force`);
    if (reloads.valid === 0) problems.push('no reload happened (the phase was too short)');
    if (left !== 0) problems.push(`${left} connections left in the gateway`);
    const line =
      `${figures.reloads.sighup} SIGHUPs in ${figures.seconds} s (${reloads.valid} valid, in force after median ${figures.inForceMs.median} ms, max ${figures.inForceMs.max} ms; ${reloads.invalid} invalid, refused): ` +
      `${established.length} established connections, ${unexpected.length} dropped, ${echoes.ok} echoes (${echoes.failed} lost); ${fresh.ok} new connections, ${fresh.failed} failed`;
    return { pass: problems.length === 0, line, figures, problems };
  } finally {
    stopping = true;
    for (const ws of established) if (!ws.end) ws.destroy();
    await gw.stop();
  }
}
