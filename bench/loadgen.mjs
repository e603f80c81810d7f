// The benchmark's load generator: a minimal RFC 6455 client on net.Socket with pre-built upgrade requests
// and pre-masked frames, so that as little as possible of the core it runs on goes to generating load.
//
//   node bench/loadgen.mjs '<json options>'
//
// kinds:
//   handshake  `concurrency` loops of: connect, send the upgrade (token per `token`), read the status line,
//              then after a 101 send a close frame and wait for the server to close (the server closes first,
//              so TIME_WAIT stays on the server side); one op = one response with the expected status.
//   echo       `connections` WebSockets opened first, then each keeps one message of `payload` bytes in
//              flight: one op = one echoed message (round trip).
//   idle       opens `connections` WebSockets (`concurrency` at a time), prints {"event":"opened",...},
//              answers pings, and closes them all when a line arrives on stdin; then prints the result.
//
// During the timed window (after `warmupMs`, for `durationMs`) it samples /proc CPU time of the system under
// test (`sutPid` and its descendants), of the echo upstream (`echoPid`) and of itself. The result is one JSON
// line on stdout.
import { connect } from 'node:net';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { tokenFactory } from './lib/jwt.mjs';
import { cpuMs, processTree } from './lib/proc.mjs';
import { quantileSorted } from './lib/stats.mjs';
import { buildFrame, FrameParser, OP } from './lib/ws.mjs';

const opts = {
  kind: 'handshake',
  host: '127.0.0.1',
  port: 0,
  path: '/echo',
  token: 'fresh', // fresh | reused | bad | none
  secret: '',
  expectStatus: 101,
  concurrency: 32,
  connections: 64,
  payload: 64,
  warmupMs: 1000,
  durationMs: 5000,
  sutPid: 0,
  echoPid: 0,
  ...JSON.parse(process.argv[2] ?? '{}'),
};

const WS_KEY = 'dGhlIHNhbXBsZSBub25jZQ==';
const MASK = Buffer.from([0x37, 0xfa, 0x21, 0x3d]);
const ZERO_MASK = Buffer.alloc(4);
const CLOSE_FRAME = buildFrame(OP.close, Buffer.from([0x03, 0xe8]), MASK); // 1000, masked
const errors = {};
const statuses = {};
const countError = (code) => (errors[code] = (errors[code] ?? 0) + 1);

// ---------------------------------------------------------------------------------------------- requests
function requestFor(token) {
  const auth = token ? `Authorization: Bearer ${token}\r\n` : '';
  return Buffer.from(
    `GET ${opts.path} HTTP/1.1\r\nHost: ${opts.host}:${opts.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${WS_KEY}\r\nSec-WebSocket-Version: 13\r\n${auth}\r\n`,
    'latin1',
  );
}

/** A source of upgrade requests: distinct tokens are made ahead of the timed window, more on demand. */
function requestSource(mode, expected) {
  if (mode === 'none') {
    const req = requestFor(null);
    return () => req;
  }
  if (mode === 'reused') {
    const req = requestFor(tokenFactory(opts.secret).next());
    return () => req;
  }
  const factory = tokenFactory(opts.secret, { badSignature: mode === 'bad' });
  const pool = [];
  for (let i = 0; i < expected; i++) pool.push(requestFor(factory.next()));
  let i = 0;
  return () => (i < pool.length ? pool[i++] : requestFor(factory.next()));
}

// ----------------------------------------------------------------------------------------------- timing
let measuring = false;
let stopping = false;
let ops = 0;
let lat = new Float64Array(1 << 16);
let latN = 0;
function record(ms) {
  ops++;
  if (latN === lat.length) {
    const bigger = new Float64Array(lat.length * 2);
    bigger.set(lat);
    lat = bigger;
  }
  lat[latN++] = ms;
}

let sutPids = [];
const snap = () => ({
  t: performance.now(),
  mono: Number(process.hrtime.bigint() / 1000n), // µs on the monotonic clock, as V8's .cpuprofile timestamps

  sut: opts.sutPid ? cpuMs(sutPids) : null,
  echo: opts.echoPid ? cpuMs([opts.echoPid]) : null,
  self: process.cpuUsage(),
});

function runWindow() {
  return new Promise((resolve) => {
    setTimeout(() => {
      if (opts.sutPid) sutPids = processTree(opts.sutPid);
      const a = snap();
      const opsAtStart = ops;
      measuring = true;
      setTimeout(() => {
        measuring = false;
        const b = snap();
        resolve({ a, b, ops: ops - opsAtStart });
      }, opts.durationMs);
    }, opts.warmupMs);
  });
}

function summary({ a, b, ops: n }) {
  const wallMs = b.t - a.t;
  const sorted = lat.subarray(0, latN).sort();
  const us = (ms) => (ms == null ? null : Math.round(ms * 1000 * 10) / 10);
  let sum = 0;
  for (let i = 0; i < latN; i++) sum += sorted[i];
  const selfMs = (b.self.user + b.self.system - a.self.user - a.self.system) / 1000;
  const sutCpuMs = a.sut == null ? null : b.sut - a.sut;
  const echoCpuMs = a.echo == null ? null : b.echo - a.echo;
  return {
    ok: n > 0,
    ops: n,
    wallMs: Math.round(wallMs),
    windowMonoUs: [a.mono, b.mono],
    opsPerSec: Math.round((n / wallMs) * 1000 * 10) / 10,
    sutCpuMs,
    sutCpuPerOpUs: sutCpuMs == null || n === 0 ? null : Math.round(((sutCpuMs * 1000) / n) * 100) / 100,
    sutCores: sutCpuMs == null ? null : Math.round((sutCpuMs / wallMs) * 1000) / 1000,
    echoCpuMs,
    loadgenCpuMs: Math.round(selfMs),
    // Busy share of the load generator's core (load generator + echo upstream), 0..1 per core.
    loadgenCoreBusy: Math.round(((selfMs + (echoCpuMs ?? 0)) / wallMs) * 1000) / 1000,
    latencyUs: {
      p50: us(quantileSorted(sorted, 0.5)),
      p90: us(quantileSorted(sorted, 0.9)),
      p99: us(quantileSorted(sorted, 0.99)),
      max: us(latN ? sorted[latN - 1] : null),
      mean: us(latN ? sum / latN : null),
    },
    statuses,
    errors,
  };
}

// --------------------------------------------------------------------------------------- one WebSocket
/**
 * Opens one WebSocket: resolves { socket, status } once the response head is read (status 0 on a socket
 * error before it). `onFrame(opcode, payload)` gets the frames that follow a 101; pings are answered.
 */
function openSocket(request, onFrame) {
  return new Promise((resolve) => {
    const socket = connect({ port: opts.port, host: opts.host, noDelay: true });
    let head = '';
    let parser = null;
    let settled = false;
    const settle = (status) => {
      if (settled) return;
      settled = true;
      statuses[status] = (statuses[status] ?? 0) + 1;
      resolve({ socket, status });
    };
    socket.on('data', (chunk) => {
      if (parser) {
        if (!parser.push(chunk)) socket.destroy();
        return;
      }
      head += chunk.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      const status = Number(head.slice(9, 12)) || -1;
      if (status === 101) {
        parser = new FrameParser((b0, opcode, payload) => {
          if (opcode === OP.ping) socket.write(buildFrame(OP.pong, payload, ZERO_MASK));
          else onFrame?.(opcode, payload);
        });
        const rest = Buffer.from(head.slice(end + 4), 'latin1');
        head = '';
        settle(101);
        if (rest.length) parser.push(rest);
      } else {
        settle(status);
      }
    });
    socket.on('error', (err) => countError(err.code ?? 'error'));
    socket.on('close', () => settle(0));
    socket.write(request);
  });
}

/** Sends a close frame and waits (at most `ms`) for the server to close; then destroys. */
function closeSocket(socket, ms = 3000) {
  return new Promise((resolve) => {
    if (socket.destroyed) return resolve();
    const timer = setTimeout(() => {
      countError('close_timeout');
      socket.destroy();
    }, ms);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    if (socket.writable) socket.write(CLOSE_FRAME);
    else socket.destroy();
  });
}

// --------------------------------------------------------------------------------------------- kinds
async function handshakes() {
  const expectedCount = Math.ceil(((opts.warmupMs + opts.durationMs) / 1000) * (opts.poolPerSec ?? 12000));
  const nextRequest = requestSource(opts.token, opts.token === 'fresh' || opts.token === 'bad' ? expectedCount : 0);
  let active = 0;
  let drained;
  const allDone = new Promise((r) => (drained = r));

  const loop = () => {
    if (stopping) {
      if (--active === 0) drained();
      return;
    }
    const t0 = performance.now();
    const socket = connect({ port: opts.port, host: opts.host, noDelay: true });
    let head = '';
    let gotHead = false;
    const timer = setTimeout(() => {
      countError('timeout');
      socket.destroy();
    }, 5000);
    let bodyLeft = -1; // bytes of a refusal's body still to come
    socket.on('data', (chunk) => {
      if (gotHead) {
        if (bodyLeft > 0 && (bodyLeft -= chunk.length) <= 0) socket.end();
        return;
      }
      head += chunk.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      gotHead = true;
      const status = Number(head.slice(9, 12)) || -1;
      statuses[status] = (statuses[status] ?? 0) + 1;
      if (status === opts.expectStatus && measuring) record(performance.now() - t0);
      if (status === 101) {
        socket.write(CLOSE_FRAME); // the server answers with its close and ends the TCP connection
      } else {
        // A refusal: once its body is in, hang up (a server that keeps the connection alive, as HAProxy
        // does after `http-request deny`, would otherwise wait for a next request).
        const cl = /\r\ncontent-length:[ \t]*(\d+)/i.exec(head.slice(0, end));
        bodyLeft = (cl ? Number(cl[1]) : 0) - (head.length - end - 4);
        if (bodyLeft <= 0) socket.end();
      }
    });
    socket.on('error', (err) => countError(err.code ?? 'error'));
    socket.on('close', () => {
      clearTimeout(timer);
      if (!gotHead) statuses[0] = (statuses[0] ?? 0) + 1;
      setImmediate(loop);
    });
    socket.write(nextRequest());
  };

  const window = runWindow();
  for (let i = 0; i < opts.concurrency; i++) {
    active++;
    loop();
  }
  const w = await window;
  stopping = true;
  await Promise.race([allDone, new Promise((r) => setTimeout(r, 6000))]);
  return summary(w);
}

async function echo() {
  const nextRequest = requestSource(opts.token, 0);
  const frame = buildFrame(OP.binary, Buffer.alloc(opts.payload, 0x61), MASK);
  const conns = [];
  const opened = await Promise.all(
    Array.from({ length: opts.connections }, () => {
      const conn = { socket: null, t0: 0 };
      conns.push(conn);
      return openSocket(nextRequest(), (opcode, payload) => {
        if (opcode !== OP.binary && opcode !== OP.text) return;
        if (payload.length !== opts.payload) countError('bad_echo_length');
        if (measuring) record(performance.now() - conn.t0);
        else if (!stopping) ops++;
        if (stopping) {
          conn.inFlight = false;
          return;
        }
        conn.t0 = performance.now();
        conn.socket.write(frame);
      }).then((r) => {
        conn.socket = r.socket;
        return r.status;
      });
    }),
  );
  const failed = opened.filter((s) => s !== 101).length;
  if (failed > 0) {
    for (const c of conns) c.socket?.destroy();
    return { ok: false, reason: `${failed} of ${opts.connections} upgrades failed`, statuses, errors };
  }
  const window = runWindow();
  for (const conn of conns) {
    conn.inFlight = true;
    conn.t0 = performance.now();
    conn.socket.write(frame);
  }
  const w = await window;
  stopping = true;
  const result = summary(w);
  await new Promise((r) => setTimeout(r, 50));
  await Promise.all(conns.map((c) => closeSocket(c.socket)));
  return result;
}

async function idle() {
  const nextRequest = requestSource(opts.token, opts.token === 'fresh' ? opts.connections : 0);
  const sockets = [];
  let next = 0;
  let failed = 0;
  const t0 = performance.now();
  const worker = async () => {
    while (next < opts.connections) {
      next++;
      const { socket, status } = await openSocket(nextRequest());
      if (status === 101) sockets.push(socket);
      else {
        failed++;
        socket.destroy();
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(opts.concurrency, opts.connections) }, worker));
  const openMs = Math.round(performance.now() - t0);
  const open = sockets.filter((s) => !s.destroyed).length;
  process.stdout.write(`${JSON.stringify({ event: 'opened', opened: open, failed, openMs })}\n`);
  const rl = createInterface({ input: process.stdin });
  await new Promise((resolve) => rl.once('line', resolve));
  rl.close();
  const stillOpen = sockets.filter((s) => !s.destroyed).length;
  const tc = performance.now();
  // Close in batches so the server is not asked to tear down ten thousand connections in one tick.
  for (let i = 0; i < sockets.length; i += 500) await Promise.all(sockets.slice(i, i + 500).map((s) => closeSocket(s, 5000)));
  return { ok: open > 0, opened: open, failed, openMs, stillOpen, closeMs: Math.round(performance.now() - tc), statuses, errors };
}

const kinds = { handshake: handshakes, echo, idle };
const result = await kinds[opts.kind]();
process.stdout.write(`${JSON.stringify({ event: 'result', ...result })}\n`);
process.exit(0);
