// The benchmark's echo upstream: a minimal RFC 6455 server on net.Server that echoes every data frame,
// answers pings and close frames, and serves the same bytes to every peer. Hand-written so that the core
// it shares with the load generator spends as little as possible on it.
//   node bench/echo-upstream.mjs [port]   → prints {"event":"listening","port":N} on stdout
import { createServer } from 'node:net';
import { acceptKey, buildFrame, FrameParser, OP } from './lib/ws.mjs';

const KEY_RE = /\r\nsec-websocket-key:[ \t]*([^\r\n]+)/i;
const UPGRADE_RE = /\r\nupgrade:[ \t]*websocket/i;

function handleFrames(socket) {
  let closing = false;
  const parser = new FrameParser((b0, opcode, payload) => {
    if (closing) return;
    if (opcode === OP.close) {
      closing = true;
      socket.end(buildFrame(OP.close, payload.subarray(0, 2)));
      return;
    }
    if (opcode === OP.ping) {
      socket.write(buildFrame(OP.pong, payload));
      return;
    }
    if (opcode === OP.pong) return;
    // Data frame or continuation: the same FIN bit and opcode back, unmasked.
    socket.write(buildFrame(opcode, payload, null, (b0 & 0x80) !== 0));
  });
  return (chunk) => {
    if (!parser.push(chunk)) socket.destroy();
  };
}

export function startEcho(port = 0, host = '127.0.0.1') {
  const server = createServer({ noDelay: true }, (socket) => {
    socket.on('error', () => socket.destroy());
    let head = '';
    let onFrames = null;
    socket.on('data', (chunk) => {
      if (onFrames) return onFrames(chunk);
      head += chunk.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (head.length > 65536) socket.destroy();
        return;
      }
      const key = KEY_RE.exec(head);
      if (!key || !UPGRADE_RE.test(head)) {
        socket.end('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\necho\n');
        return;
      }
      socket.write(
        `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptKey(key[1].trim())}\r\n\r\n`,
      );
      onFrames = handleFrames(socket);
      const rest = Buffer.from(head.slice(end + 4), 'latin1');
      head = '';
      if (rest.length) onFrames(rest);
    });
  });
  server.maxConnections = 50000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, 1024, () => resolve(server));
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const server = await startEcho(Number(process.argv[2] ?? 0));
  process.stdout.write(`${JSON.stringify({ event: 'listening', port: server.address().port })}\n`);
  process.on('SIGTERM', () => process.exit(0));
}
