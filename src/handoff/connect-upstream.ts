import type { ClientRequest, IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { WebSocket } from 'ws';
import { HOP_BY_HOP } from '../hop-by-hop.js';
import { collectBody } from './upstream-response.js';

/** How an upstream answered {@link connectUpstream}. */
export type UpstreamOutcome =
  /**
   * The upstream answered 101. The socket is open and paused so that nothing the upstream sends is lost
   * before it is relayed: relay() resumes it. To drop it instead, `terminate()` it (a paused socket never
   * reads the close reply, so `close()` would wait for ws's 30 s close timeout).
   */
  | { kind: 'open'; ws: WebSocket }
  /**
   * The upstream answered plain HTTP (e.g. 403), to pass through. `headers` are the upstream's as
   * received (Content-Length, Connection and Transfer-Encoding included); `body` is at most its first
   * 64 KiB, so the caller sets its own framing headers.
   */
  | { kind: 'response'; status: number; headers: IncomingHttpHeaders; body: Buffer }
  /** Refused, reset, timed out, TLS failure, bad handshake answer: the caller answers 502 or retries. */
  | { kind: 'error'; error: Error };

/** Options for {@link connectUpstream}. */
export interface ConnectUpstreamOptions {
  /** Request headers for the upstream; hop-by-hop and ws-managed ones are dropped here. */
  headers: Record<string, string | string[] | undefined>;
  /** Subprotocols to offer; the upstream's choice is `ws.protocol`. */
  protocols: string[];
  maxPayload: number;
  /** Bounds the whole attempt, a passed-through response's body included. */
  timeoutMs: number;
  tlsVerify: boolean;
  /** PEM CA certificate(s) for `wss://` targets. */
  ca?: string | undefined;
  /** The client left: give up at once (the outcome is an error) and close what was opened. */
  signal?: AbortSignal | undefined;
}

// ws writes these itself (passing them as well breaks the handshake); the rest are hop-by-hop.
const DROPPED = new Set([
  ...HOP_BY_HOP,
  'host',
  'sec-websocket-key',
  'sec-websocket-version',
  'sec-websocket-extensions',
  'sec-websocket-protocol',
  'sec-websocket-accept',
  'content-length',
]);

/** The headers that may go to ws as they are: hop-by-hop, ws-managed and undefined ones removed. */
export function upstreamRequestHeaders(headers: ConnectUpstreamOptions['headers']): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined && !DROPPED.has(name.toLowerCase())) out[name] = value;
  }
  return out;
}

/**
 * Opens a WebSocket to `target` (a full `ws://`/`wss://` URL, path and query included) and resolves with
 * the outcome; never rejects. Whatever the outcome, no socket or timer is left behind except the open
 * WebSocket handed over, which is paused so that nothing the upstream sends is lost before it is relayed.
 */
export function connectUpstream(target: string, options: ConnectUpstreamOptions): Promise<UpstreamOutcome> {
  return new Promise((resolve) => {
    let ws: WebSocket;
    try {
      ws = new WebSocket(target, options.protocols, {
        headers: upstreamRequestHeaders(options.headers),
        maxPayload: options.maxPayload,
        handshakeTimeout: options.timeoutMs,
        perMessageDeflate: false,
        rejectUnauthorized: options.tlsVerify,
        ...(options.ca !== undefined && { ca: options.ca }),
        followRedirects: false,
      });
    } catch (err) {
      // A bad URL, subprotocol or header value: ws (or http.request) throws synchronously.
      resolve({ kind: 'error', error: err instanceof Error ? err : new Error(String(err)) });
      return;
    }

    let settled = false;
    /** Once the upstream answered plain HTTP: settles with what of its body has arrived. */
    let finishResponse: (() => void) | undefined;

    const settle = (outcome: UpstreamOutcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      ws.off('open', onOpen);
      ws.off('unexpected-response', onResponse);
      if (outcome.kind === 'open') {
        ws.off('error', onError);
        ws.off('close', onClose);
      } else {
        // Aborts the request and destroys its socket; ws then emits 'error' and 'close', still listened to.
        ws.terminate();
      }
      resolve(outcome);
    };
    const onOpen = (): void => {
      ws.pause();
      settle({ kind: 'open', ws });
    };
    const onResponse = (_req: ClientRequest, res: IncomingMessage): void => {
      const status = res.statusCode ?? 502;
      finishResponse = collectBody(res, (body) => settle({ kind: 'response', status, headers: res.headers, body }));
    };
    const onError = (error: Error): void => {
      if (finishResponse) finishResponse();
      else settle({ kind: 'error', error });
    };
    const onClose = (): void => {
      ws.off('error', onError);
      ws.off('close', onClose);
      if (finishResponse) finishResponse();
      else settle({ kind: 'error', error: new Error('upstream closed during the handshake') });
    };

    // ws's handshakeTimeout is an idle timeout; this bounds the whole attempt, a slow body included.
    const deadline = setTimeout(() => {
      if (finishResponse) finishResponse();
      else settle({ kind: 'error', error: new Error('upstream handshake timed out') });
    }, options.timeoutMs);

    const onAbort = (): void => settle({ kind: 'error', error: new Error('client left during the upstream handshake') });
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const resolveOnce = resolve;
    resolve = (outcome) => {
      options.signal?.removeEventListener('abort', onAbort);
      resolveOnce(outcome);
    };
    if (options.signal?.aborted) return onAbort();

    ws.on('open', onOpen);
    ws.on('unexpected-response', onResponse);
    ws.on('error', onError);
    ws.on('close', onClose);
  });
}
