// The few pieces of RFC 6455 the load generator and the echo upstream need: the accept key, frame
// building (masked or not) and an incremental frame parser. Hand-written on purpose: the `ws` client
// costs about twice as much CPU per handshake, and the load generator must not be the only limit.
import { createHash } from 'node:crypto';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

export function acceptKey(key) {
  return createHash('sha1').update(key + GUID).digest('base64');
}

export const OP = { text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa };

/** One complete frame (FIN set). `mask`: a 4-byte Buffer (client → server) or null (server → client). */
export function buildFrame(opcode, payload, mask = null, fin = true) {
  const len = payload.length;
  const ext = len < 126 ? 0 : len < 65536 ? 2 : 8;
  const head = 2 + ext + (mask ? 4 : 0);
  const frame = Buffer.allocUnsafe(head + len);
  frame[0] = (fin ? 0x80 : 0) | opcode;
  frame[1] = (mask ? 0x80 : 0) | (ext === 0 ? len : ext === 2 ? 126 : 127);
  if (ext === 2) frame.writeUInt16BE(len, 2);
  else if (ext === 8) frame.writeBigUInt64BE(BigInt(len), 2);
  if (mask) {
    mask.copy(frame, 2 + ext);
    for (let i = 0; i < len; i++) frame[head + i] = payload[i] ^ mask[i & 3];
  } else {
    payload.copy(frame, head);
  }
  return frame;
}

/**
 * Incremental frame parser. `onFrame(b0, opcode, payload)` is called for each complete frame, with the
 * payload unmasked in place. Returns false from push() after a protocol error (the caller destroys).
 */
export class FrameParser {
  constructor(onFrame) {
    this.onFrame = onFrame;
    this.pending = null;
  }

  push(chunk) {
    let buf = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    let off = 0;
    for (;;) {
      const avail = buf.length - off;
      if (avail < 2) break;
      const b0 = buf[off];
      const b1 = buf[off + 1];
      const masked = (b1 & 0x80) !== 0;
      let len = b1 & 0x7f;
      let head = 2;
      if (len === 126) {
        if (avail < 4) break;
        len = buf.readUInt16BE(off + 2);
        head = 4;
      } else if (len === 127) {
        if (avail < 10) break;
        const big = buf.readBigUInt64BE(off + 2);
        if (big > 0x7fffffffn) return false;
        len = Number(big);
        head = 10;
      }
      const maskAt = off + head;
      if (masked) head += 4;
      if (avail < head + len) break;
      const start = off + head;
      const payload = buf.subarray(start, start + len);
      if (masked) {
        const m0 = buf[maskAt], m1 = buf[maskAt + 1], m2 = buf[maskAt + 2], m3 = buf[maskAt + 3];
        for (let i = 0; i < len; i += 4) {
          payload[i] ^= m0;
          if (i + 1 < len) payload[i + 1] ^= m1;
          if (i + 2 < len) payload[i + 2] ^= m2;
          if (i + 3 < len) payload[i + 3] ^= m3;
        }
      }
      off = start + len;
      this.onFrame(b0, b0 & 0x0f, payload);
    }
    this.pending = off < buf.length ? (off === 0 ? buf : buf.subarray(off)) : null;
    if (this.pending && this.pending === chunk) this.pending = Buffer.from(chunk); // the socket may reuse it
    return true;
  }
}
