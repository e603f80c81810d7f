// The soak's WebSocket client: bench/lib/ws.mjs framing on a net.Socket, plus the bookkeeping the soak
// judges by: who ended the connection and how (a close frame with its code, or the TCP connection cut
// without one), when, how many pings the gateway sent, and whether a message comes back.
import { connect } from 'node:net';
import { performance } from 'node:perf_hooks';
import { buildFrame, FrameParser, OP } from '../../../bench/lib/ws.mjs';

const WS_KEY = 'dGhlIHNhbXBsZSBub25jZQ==';
const ZERO_MASK = Buffer.alloc(4);

function maskedFrame(opcode, payload) {
  // A fresh mask per frame is what RFC 6455 asks of a client; the gateway's parsers must unmask anyway.
  const mask = Buffer.from([(Math.random() * 256) | 0, (Math.random() * 256) | 0, (Math.random() * 256) | 0, (Math.random() * 256) | 0]);
  return buildFrame(opcode, payload, mask);
}

function closeFrame(code) {
  const body = Buffer.alloc(2);
  body.writeUInt16BE(code);
  return maskedFrame(OP.close, body);
}

/**
 * One client WebSocket. `status` is the handshake's HTTP status (0 when the TCP connection failed or
 * ended before an answer). After a 101:
 * - `end` is null while open, then { by, code, at }: `by` is 'client' (we closed), 'server' (a close frame
 *   came first, `code` its status) or 'cut' (the TCP connection ended without a close frame);
 * - `pings` counts the pings received (each answered with a pong at once).
 */
export class SoakSocket {
  constructor(socket) {
    this.socket = socket;
    this.status = 0;
    this.headers = '';
    this.end = null;
    this.pings = 0;
    this.pongs = 0;
    this.onEnd = null;
    this.onServerClose = null;
    this.closeFrameAt = 0;
    this.closeCode = 0;
    this.closeReason = '';
    this.#parser = new FrameParser((b0, opcode, payload) => this.#frame(opcode, payload));
  }

  #parser;
  #waiting = null;
  #closing = false;

  /** The value of response header `name` (lower case), or undefined. */
  header(name) {
    const m = new RegExp(`\\r\\n${name}:[ \\t]*([^\\r\\n]*)`, 'i').exec(this.headers);
    return m?.[1];
  }

  get open() {
    return this.status === 101 && this.end === null;
  }

  _data(chunk) {
    if (!this.#parser.push(chunk)) this.socket.destroy();
  }

  _closed() {
    if (this.end) return;
    const by = this.#closing ? 'client' : this.closeFrameAt ? 'server' : 'cut';
    this.end = { by, code: this.closeCode, at: performance.now() };
    this.#settleWait(false);
    this.onEnd?.(this);
  }

  #frame(opcode, payload) {
    if (opcode === OP.ping) {
      this.pings++;
      this.socket.write(buildFrame(OP.pong, payload, ZERO_MASK));
    } else if (opcode === OP.pong) {
      this.pongs++;
      this.#settleWait(payload.toString('latin1'), 'pong');
    } else if (opcode === OP.close) {
      if (!this.closeFrameAt) {
        this.closeFrameAt = performance.now();
        this.closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
        this.closeReason = payload.subarray(2).toString('utf8');
        this.onServerClose?.(this);
        // Answer the close as a browser does; the server then ends the TCP connection.
        if (!this.#closing && this.socket.writable) this.socket.write(closeFrame(this.closeCode === 1005 ? 1000 : this.closeCode));
      }
    } else if (opcode === OP.text || opcode === OP.binary) {
      this.#settleWait(payload.toString('latin1'), 'message');
    }
  }

  #settleWait(value, kind) {
    const w = this.#waiting;
    if (!w || (value !== false && w.kind !== kind)) return;
    this.#waiting = null;
    clearTimeout(w.timer);
    w.resolve(value !== false && value === w.expect);
  }

  #roundTrip(kind, opcode, text, timeoutMs) {
    if (!this.open || this.#waiting) return Promise.resolve(false);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#waiting = null;
        resolve(false);
      }, timeoutMs);
      this.#waiting = { kind, expect: text, resolve, timer };
      this.socket.write(maskedFrame(opcode, Buffer.from(text, 'latin1')));
    });
  }

  /** Sends `text` and resolves true when the same text comes back within `timeoutMs`. */
  echo(text, timeoutMs = 5000) {
    return this.#roundTrip('message', OP.text, text, timeoutMs);
  }

  /** Sends a ping and resolves true when its pong comes back within `timeoutMs`. */
  ping(text = 'soak', timeoutMs = 5000) {
    return this.#roundTrip('pong', OP.ping, text, timeoutMs);
  }

  /** Closes with 1000 and waits (at most `ms`) for the server to end the connection; true when it did. */
  close(ms = 5000) {
    return new Promise((resolve) => {
      if (this.socket.destroyed || this.end) return resolve(true);
      this.#closing = true;
      const timer = setTimeout(() => {
        this.socket.destroy();
        resolve(false);
      }, ms);
      this.socket.once('close', () => {
        clearTimeout(timer);
        resolve(true);
      });
      if (this.socket.writable) this.socket.write(closeFrame(1000));
      else this.socket.destroy();
    });
  }

  /** Ends the TCP connection at once, without a close frame (a client that vanishes). */
  destroy() {
    this.#closing = true;
    this.socket.destroy();
  }
}

/**
 * Opens a WebSocket to `path` on the gateway with `Authorization: Bearer <token>` (none when null).
 * Resolves the {@link SoakSocket} once the response head is read or the connection fails; a refusal's
 * socket is ended by us after its head (the gateway closes it anyway).
 */
export function openSocket({ port, host = '127.0.0.1', path, token, timeoutMs = 10000 }) {
  return new Promise((resolve) => {
    const socket = connect({ port, host, noDelay: true });
    const ws = new SoakSocket(socket);
    let head = '';
    let settled = false;
    const settle = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(ws);
    };
    const timer = setTimeout(() => {
      socket.destroy();
      settle();
    }, timeoutMs);
    socket.on('data', (chunk) => {
      if (settled && ws.status === 101) return ws._data(chunk);
      if (settled) return;
      head += chunk.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      ws.status = Number(head.slice(9, 12)) || -1;
      ws.headers = head.slice(0, end);
      const rest = Buffer.from(head.slice(end + 4), 'latin1');
      head = '';
      settle();
      if (ws.status === 101) {
        if (rest.length) ws._data(rest);
      } else {
        socket.end();
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      settle();
      if (ws.status === 101) ws._closed();
    });
    const auth = token ? `Authorization: Bearer ${token}\r\n` : '';
    socket.write(
      `GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${WS_KEY}\r\nSec-WebSocket-Version: 13\r\n${auth}\r\n`,
    );
  });
}

/** Runs `task(i)` for i in [0, count) with at most `concurrency` at once. */
export async function pool(count, concurrency, task) {
  let next = 0;
  const worker = async () => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}
