import { WebSocket, type RawData } from 'ws';

/** Options for {@link relay}. */
export interface RelayOptions {
  /** Pause reading from one side while the other side's bufferedAmount is above this (default 1 MiB); resume when it falls below half. */
  highWaterMark?: number;
  /**
   * Sees every client message first; return true to consume it (not forwarded). Used later for refresh
   * messages. If it throws, the relay is closed with 1011 `internal error`.
   */
  interceptClient?: (data: Buffer, isBinary: boolean) => boolean;
  /** Counts bytes of message payloads relayed each way (`in`: client → upstream, `out`: upstream → client). */
  onBytes?: (direction: 'in' | 'out', n: number) => void;
}

/** A running relay between a client and an upstream WebSocket. */
export interface Relay {
  /**
   * Closes both sides: the client with (code, reason), the upstream with 1000 (or 1001 for 1001). Never
   * throws: a code that may not be sent is replaced by 1011, a reason over 123 bytes is cut. A no-op once
   * either side has started closing.
   */
  close(code: number, reason: string): void;
  /** Resolves once both sockets are closed. */
  readonly done: Promise<void>;
}

/** Default {@link RelayOptions.highWaterMark}. */
export const DEFAULT_HIGH_WATER_MARK = 1024 * 1024;

/** How long a side we close gets to complete the close handshake before it is terminated. */
export const CLOSE_GRACE_MS = 5000;

const MAX_REASON_BYTES = 123;
const EMPTY = Buffer.alloc(0);

/** Whether a close code may travel in a close frame (RFC 6455 7.4; the same set ws accepts). */
export function isSendableCloseCode(code: number): boolean {
  return (
    Number.isInteger(code) &&
    ((code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999))
  );
}

/** Cuts a close reason to the 123 bytes a close frame can carry, on a character boundary. */
export function fitReason(reason: string): string {
  if (Buffer.byteLength(reason) <= MAX_REASON_BYTES) return reason;
  let out = '';
  let bytes = 0;
  for (const ch of reason) {
    bytes += Buffer.byteLength(ch);
    if (bytes > MAX_REASON_BYTES) break;
    out += ch;
  }
  return out;
}

// A caller may switch binaryType; the relay always forwards Buffers.
function toBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

interface Side {
  readonly ws: WebSocket;
  readonly isClient: boolean;
  /** Paused by the relay for backpressure (not by anyone else). */
  paused: boolean;
  closed: boolean;
  timer: NodeJS.Timeout | undefined;
  readonly onMessage: (data: RawData, isBinary: boolean) => void;
  readonly onClose: (code: number, reason: Buffer) => void;
}

function onError(): void {
  // ws always follows an error with 'close', which is where the relay reacts.
}

class MessageRelay implements Relay {
  readonly done: Promise<void>;
  readonly #client: Side;
  readonly #upstream: Side;
  readonly #highWaterMark: number;
  readonly #options: RelayOptions;
  #closing = false;
  #resolve!: () => void;

  constructor(client: WebSocket, upstream: WebSocket, options: RelayOptions) {
    for (const ws of [client, upstream]) {
      if (ws.readyState === WebSocket.CONNECTING) throw new TypeError('relay() needs sockets whose handshake is complete');
    }
    this.#options = options;
    this.#highWaterMark = options.highWaterMark ?? DEFAULT_HIGH_WATER_MARK;
    this.done = new Promise((resolve) => (this.#resolve = resolve));
    this.#client = this.#side(client, true);
    this.#upstream = this.#side(upstream, false);
    for (const side of [this.#client, this.#upstream]) {
      side.ws.on('message', side.onMessage);
      side.ws.on('close', side.onClose);
      side.ws.on('error', onError);
    }
    // A side may be handed over paused so that nothing it received before the relay existed is lost.
    for (const side of [this.#client, this.#upstream]) {
      if (side.ws.readyState === WebSocket.CLOSED) this.#closed(side, 1006, EMPTY);
      else side.ws.resume();
    }
  }

  close(code: number, reason: string): void {
    if (this.#closing) return;
    this.#closing = true;
    this.#closeSide(this.#client, isSendableCloseCode(code) ? code : 1011, fitReason(reason));
    this.#closeSide(this.#upstream, code === 1001 ? 1001 : 1000);
  }

  #side(ws: WebSocket, isClient: boolean): Side {
    const side: Side = {
      ws,
      isClient,
      paused: false,
      closed: false,
      timer: undefined,
      onMessage: (data, isBinary) => this.#message(side, data, isBinary),
      onClose: (code, reason) => this.#closed(side, code, reason),
    };
    return side;
  }

  #other(side: Side): Side {
    return side === this.#client ? this.#upstream : this.#client;
  }

  #message(from: Side, data: RawData, isBinary: boolean): void {
    if (this.#closing) return;
    const buf = toBuffer(data);
    if (from.isClient && this.#options.interceptClient) {
      let consumed: boolean;
      try {
        consumed = this.#options.interceptClient(buf, isBinary);
      } catch {
        this.close(1011, 'internal error');
        return;
      }
      if (consumed) return;
    }
    const to = this.#other(from);
    if (this.#closing || to.ws.readyState !== WebSocket.OPEN) return;
    this.#options.onBytes?.(from.isClient ? 'in' : 'out', buf.length);
    to.ws.send(buf, { binary: isBinary }, () => this.#written(from, to));
    if (!from.paused && to.ws.bufferedAmount > this.#highWaterMark) {
      from.paused = true;
      from.ws.pause();
    }
  }

  // The send callback runs once a message has left for the kernel: the moment bufferedAmount drops.
  #written(from: Side, to: Side): void {
    if (this.#closing || !from.paused || to.ws.bufferedAmount > this.#highWaterMark / 2) return;
    from.paused = false;
    from.ws.resume();
  }

  #closed(side: Side, code: number, reason: Buffer): void {
    if (side.closed) return;
    side.closed = true;
    clearTimeout(side.timer);
    if (!this.#closing) {
      this.#closing = true;
      this.#propagate(side, this.#other(side), code, reason);
    }
    if (this.#client.closed && this.#upstream.closed) this.#finish();
  }

  #propagate(from: Side, to: Side, code: number, reason: Buffer): void {
    if (isSendableCloseCode(code)) this.#closeSide(to, code, reason);
    else if (code === 1005) this.#closeSide(to);
    else if (from.isClient) this.#closeSide(to, 1001, 'client gone');
    else this.#closeSide(to, 1011, 'upstream error');
  }

  #closeSide(side: Side, code?: number, reason?: string | Buffer): void {
    if (side.closed) return;
    // The peer's close frame has to be read for the handshake to complete.
    if (side.paused) {
      side.paused = false;
      side.ws.resume();
    }
    if (code === undefined) side.ws.close();
    else side.ws.close(code, reason);
    side.timer ??= setTimeout(() => side.ws.terminate(), CLOSE_GRACE_MS).unref();
  }

  #finish(): void {
    for (const side of [this.#client, this.#upstream]) {
      clearTimeout(side.timer);
      side.ws.off('message', side.onMessage);
      side.ws.off('close', side.onClose);
      side.ws.off('error', onError);
    }
    this.#resolve();
  }
}

/**
 * Relays messages between an accepted client WebSocket and an open upstream one until either ends: text
 * and binary messages unchanged both ways, reading paused on one side while the other cannot keep up, and
 * the close (code and reason) carried over to the other side. Both sockets may be handed over paused
 * (`ws.pause()`); the relay resumes them.
 */
export function relay(client: WebSocket, upstream: WebSocket, options: RelayOptions = {}): Relay {
  return new MessageRelay(client, upstream, options);
}
