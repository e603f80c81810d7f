import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import { ConnectionTracker, countKey } from '../connections.js';
import { offeredProtocols, removeProtocolEntry } from '../credentials.js';
import { GatewayError } from '../errors.js';
import { scheduleExpiry } from '../expiry.js';
import { Heartbeat } from '../heartbeat.js';
import { sendRejection, writeRejection } from '../respond.js';
import type { CompiledRoute } from '../route.js';
import type { Identity } from '../types.js';
import { Acceptor, chooseProtocol, markerOf } from './accept.js';
import { connectUpstream, type UpstreamOutcome } from './connect-upstream.js';
import { setUpstreamHeaders } from './forward.js';
import { relay, type Relay } from './relay.js';
import { pipeUpgrade } from './raw-pipe.js';
import { joinTarget } from './target.js';
import { dial, UpstreamProxy } from './upstream.js';
import { writeUpstreamResponse } from './upstream-response.js';

/** An accepted handshake, ready to be handed on. */
export interface Accepted {
  readonly req: IncomingMessage;
  readonly socket: Duplex;
  readonly head: Buffer;
  readonly route: CompiledRoute;
  readonly identity: Identity;
  readonly requestId: string;
  /** Headers the deciding authenticator vouched for, to send upstream (forwardAuth `copyHeaders`). */
  readonly upstreamHeaders?: Readonly<Record<string, string>> | undefined;
  /** The credential the identity was accepted with, kept in memory only for `revalidateSec`. */
  readonly credential?: string | undefined;
}

/** What the handoffs need from the gateway. */
export interface HandoffHost {
  readonly log: Logger;
  /** Budget for reaching an upstream (`limits.handshakeTimeoutMs`). */
  readonly timeoutMs: number;
  /** Seconds an identity stays valid past its `expiresAt` (its authenticator's clock tolerance). */
  graceOf(identity: Identity): number;
  /** A local route's connection, for the application. */
  connection(ws: WebSocket, req: IncomingMessage, identity: Identity): void;
  /** A handshake refused after the decision (502, an upstream's own answer). */
  rejected(req: IncomingMessage, err: GatewayError): void;
  /** Checks a token from a first-message `auth` or a `refresh` message with the route's authenticators. */
  verifyToken(route: CompiledRoute, token: string, req: IncomingMessage, socket: Duplex): Promise<Identity>;
  /** Re-checks an identity with the authenticator that accepted it (true when it cannot be re-checked). */
  revalidate(identity: Identity, credential: string | undefined): Promise<boolean>;
  /** While draining: the 503 for a handoff that was still connecting when the drain began. */
  draining(): GatewayError | undefined;
  /** An upstream target failed to connect (it is ejected; metrics count it). */
  upstreamFailed(route: CompiledRoute, target: string): void;
  /** The checks that follow authentication (`require`, per-subject rate and caps); throws a GatewayError. */
  admit(accepted: Accepted, identity: Identity): Promise<void>;
}

/** The `token` of a client message `{ "type": TYPE, "token": "..." }`, or undefined for any other message. */
export function parseTyped(data: Buffer, type: 'auth' | 'refresh'): string | undefined {
  // Cheap test first: most relayed messages are not ours and must not pay for JSON.parse.
  if (data.length > 16384 || data[0] !== 0x7b || !data.includes(type)) return undefined;
  try {
    const message = JSON.parse(data.toString()) as { type?: unknown; token?: unknown };
    return message.type === type && typeof message.token === 'string' ? message.token : undefined;
  } catch {
    return undefined;
  }
}

/** Close codes for `rejectMode: "close"` (SPEC 9). */
export function closeCodeFor(status: number): number {
  return { 400: 4400, 401: 4401, 403: 4403, 429: 4429, 503: 1013 }[status] ?? 1011;
}

/**
 * Hands accepted upgrades on: `local` (the application's `connection`), `pipe` (bytes piped after the
 * upstream's 101) and `relay` (the gateway terminates both WebSockets and relays messages). Owns the live
 * connections: counts, heartbeats and expiry.
 */
export class Handoff {
  readonly tracker = new ConnectionTracker();
  readonly #acceptor = new Acceptor();
  readonly #heartbeat = new Heartbeat();
  readonly #relays = new Set<Relay>();
  readonly #host: HandoffHost;
  #proxy: UpstreamProxy | undefined;

  constructor(host: HandoffHost) {
    this.#host = host;
  }

  /** Hands an accepted upgrade on according to its route's mode; `keys` are its connection-count keys. */
  start(accepted: Accepted, keys: readonly string[]): Promise<void> {
    const { route, req, identity } = accepted;
    this.tracker.track(accepted.socket, keys, { route: route.path, mode: route.mode, remoteAddress: req.socket?.remoteAddress ?? null, identity });
    if (route.revalidateSec !== undefined) this.#revalidate(accepted);
    switch (accepted.route.mode) {
      case 'local':
        return this.#local(accepted);
      case 'pipe':
        return this.#pipe(accepted);
      case 'relay':
        return this.#relay(accepted);
    }
  }

  /** Completes the upgrade only to close it at once with the rejection (`rejectMode: "close"`). */
  async rejectByClose(req: IncomingMessage, socket: Duplex, head: Buffer, route: CompiledRoute, err: GatewayError): Promise<void> {
    const ws = await this.#acceptor.accept(req, socket, head, route.maxPayload);
    ws.close(closeCodeFor(err.status), err.description);
  }

  /**
   * `revalidateSec`: asks the identity's authenticator again every N seconds; a session that is gone or
   * a token no longer active ends the connection (4401 where the gateway speaks WebSocket).
   */
  #revalidate({ socket, route, credential, requestId }: Accepted): void {
    const timer = setInterval(() => {
      const live = this.tracker.get(socket);
      if (!live) return;
      this.#host.revalidate(live.identity, credential).then(
        (valid) => {
          if (valid) return;
          this.#host.log.info({ reqId: requestId, route: route.path, subject: live.identity.subject }, 'connection closed: identity no longer valid');
          live.end(4401, 'session ended');
        },
        (err: unknown) => this.#host.log.warn({ reqId: requestId, route: route.path, error: { message: (err as Error).message } }, 'revalidation failed; connection kept'),
      );
    }, route.revalidateSec! * 1000);
    timer.unref();
    socket.once('close', () => clearInterval(timer));
  }

  /** How a revocation ends a connection the gateway speaks WebSocket on, and its current identity. */
  #describe(socket: Duplex, update: { identity?: Identity; end?: (code: number, reason: string) => void }): void {
    const live = this.tracker.get(socket);
    if (!live) return;
    if (update.identity) live.identity = update.identity;
    if (update.end) live.end = update.end;
  }

  async #local({ req, socket, head, route, identity }: Accepted): Promise<void> {
    const ws = await this.#acceptor.accept(req, socket, head, route.maxPayload);
    // ws emits 'error' for a bad frame or an oversized message: with no listener that would crash the
    // application's process. ws closes the connection itself (1002, 1009); a debug line is enough.
    ws.on('error', (err) => this.#host.log.debug({ route: route.path, error: { message: err.message } }, 'local connection error'));
    this.#describe(socket, { end: (code, reason) => ws.close(code, reason) });
    this.#heartbeat.add(ws, route.heartbeatMs);
    ws.once('close', this.#expireAt(route, identity, this.#host.graceOf(identity), () => ws.close(1008, 'token expired')));
    this.#host.connection(ws, req, identity);
  }

  /** Heartbeat and expiry for a WebSocket the gateway terminates. */
  /** `enforceExpiry`: ends a connection at its identity's expiry plus `graceSec`; returns the canceller. */
  #expireAt(route: CompiledRoute, identity: Identity, graceSec: number, end: () => void): () => void {
    if (!route.enforceExpiry) return () => {};
    return scheduleExpiry(identity.expiresAt, graceSec, () => {
      this.#host.log.info({ route: route.path, subject: identity.subject }, 'connection closed: identity expired');
      end();
    });
  }

  #forwardHeaders({ req, route, identity, requestId, upstreamHeaders }: Accepted): void {
    setUpstreamHeaders(req, requestId, identity, { names: route.identityHeaders, assertion: route.assertion, extra: upstreamHeaders });
  }

  /**
   * Tries a target from the route's pool and, when it fails to connect, once more on another one
   * (SPEC 5); a failed target is ejected for `ejectMs`.
   */
  async connect<T>(accepted: Accepted, attempt: (target: string) => Promise<T>, failure: (result: T) => Error | undefined): Promise<{ target: string; result: T }> {
    const pool = accepted.route.pool!;
    const preferred = accepted.route.sticky?.target(accepted.req);
    const tried = new Set<string>();
    let last: { target: string; result: T } | undefined;
    for (let i = 0; i < 2; i++) {
      const target = pool.pick(tried, Date.now(), preferred);
      if (target === undefined) break;
      tried.add(target);
      const result = await attempt(target);
      const err = failure(result);
      // A client that left is no fault of the target's: neither ejected nor retried.
      if (!err || accepted.socket.destroyed) return { target, result };
      this.#failed(accepted.route, target);
      last = { target, result };
      this.#host.log.warn({ reqId: accepted.requestId, route: accepted.route.path, target: new URL(target).host, error: { message: err.message, code: (err as NodeJS.ErrnoException).code } }, 'upstream connect failed');
    }
    return last!;
  }

  #failed(route: CompiledRoute, target: string): void {
    route.pool!.eject(target);
    this.#host.upstreamFailed(route, target);
  }

  #badGateway(accepted: Accepted): void {
    const { socket, req, requestId, route } = accepted;
    if (socket.destroyed || !socket.writable) {
      this.#host.log.info({ reqId: requestId, route: route.path, status: null, reason: 'client closed' }, 'upgrade abandoned');
      return;
    }
    this.#host.log.warn({ reqId: requestId, route: route.path, status: 502 }, 'upstream unavailable');
    this.#refuse(accepted, new GatewayError('GW_ERR_UPSTREAM_UNAVAILABLE'));
  }

  /** Refuses a handshake after the decision: an HTTP response, or with `rejectMode: "close"` a close code. */
  #refuse({ req, socket, head, route, requestId }: Accepted, err: GatewayError): void {
    if (route.rejectMode === 'close') void this.rejectByClose(req, socket, head, route, err);
    else writeRejection(socket, err, requestId);
    this.#host.rejected(req, err);
  }

  /** Proxies a plain HTTP request on an `http: true` route (the checks have passed). */
  async web(accepted: Accepted, res: ServerResponse): Promise<void> {
    const { req, route, requestId } = accepted;
    this.#forwardHeaders(accepted);
    const dialOptions = { timeoutMs: this.#host.timeoutMs, tlsVerify: route.tlsVerify, ca: route.ca };
    const { target, result } = await this.connect(
      accepted,
      (t) => dial(t, dialOptions).catch((err: Error) => err),
      (r) => (r instanceof Error ? r : undefined),
    );
    const badGateway = () => {
      const err = new GatewayError('GW_ERR_UPSTREAM_UNAVAILABLE');
      this.#host.log.warn({ reqId: requestId, route: route.path, status: 502 }, 'upstream unavailable');
      sendRejection(res, err, requestId);
      this.#host.rejected(req, err);
    };
    if (result instanceof Error) return badGateway();
    if (res.destroyed) return void result.destroy();
    const sticky = route.sticky && route.sticky.target(req) !== target ? route.sticky.setCookie(target) : undefined;
    this.#proxy ??= new UpstreamProxy();
    this.#proxy.web(req, res, { target, upstream: result, setCookie: sticky, onError: () => (res.headersSent ? res.destroy() : badGateway()) });
  }

  async #pipe(accepted: Accepted): Promise<void> {
    const { req, socket, head, route, identity, requestId } = accepted;
    this.#forwardHeaders(accepted);
    // The marker is the gateway's to answer: the upstream chooses among the other protocols.
    const marker = markerOf(req);
    if (marker !== undefined) removeProtocolEntry(req, marker);
    const dialOptions = { timeoutMs: this.#host.timeoutMs, tlsVerify: route.tlsVerify, ca: route.ca };
    const { target, result } = await this.connect(
      accepted,
      (t) => dial(t, dialOptions).catch((err: Error) => err),
      (r) => (r instanceof Error ? r : undefined),
    );
    if (result instanceof Error) return this.#badGateway(accepted);
    if (socket.destroyed) return void result.destroy();
    const release = route.pool!.acquire(target);
    socket.once('close', release);
    pipeUpgrade(req, socket, head, {
      target,
      upstream: result,
      timeoutMs: this.#host.timeoutMs,
      marker,
      onOpen: (upstream: Socket) => {
        const cancel = this.#expireAt(route, identity, this.#host.graceOf(identity), () => {
          socket.destroy();
          upstream.destroy();
        });
        socket.once('close', cancel);
      },
      onError: (err, answered) => {
        if (answered) {
          this.#host.log.debug({ reqId: requestId, route: route.path, error: { message: err.message } }, 'upstream connection ended with an error');
          return void socket.destroy();
        }
        this.#failed(route, target);
        this.#badGateway(accepted);
      },
    });
  }

  /** Connects the upstream WebSocket for a relay, with retry. */
  async #openUpstream(accepted: Accepted): Promise<{ target: string; result: UpstreamOutcome }> {
    const { req, route, socket } = accepted;
    const marker = markerOf(req);
    const protocols = offeredProtocols(req).filter((p) => p !== marker);
    // The client leaving while the upstream answers ends the attempt there and then, and a reset in that
    // window must not be an unhandled 'error' (nobody else listens on the client socket yet).
    const left = new AbortController();
    const leave = () => left.abort();
    const onError = () => socket.destroy();
    socket.once('close', leave);
    socket.on('error', onError);
    const options = { headers: req.headers, protocols, maxPayload: route.maxPayload, timeoutMs: this.#host.timeoutMs, tlsVerify: route.tlsVerify, ca: route.ca, signal: left.signal };
    try {
      return await this.connect<UpstreamOutcome>(
        accepted,
        (t) => connectUpstream(joinTarget(t, req.url ?? '/'), options),
        (r) => (r.kind === 'error' ? r.error : undefined),
      );
    } finally {
      socket.off('close', leave);
      socket.off('error', onError);
    }
  }

  async #relay(accepted: Accepted): Promise<void> {
    const { req, socket, head, route, identity } = accepted;
    if (route.firstMessageTimeoutMs !== undefined) return this.#firstMessage(accepted);
    this.#forwardHeaders(accepted);
    const { target, result } = await this.#openUpstream(accepted);
    if (result.kind === 'error') return this.#badGateway(accepted);
    if (result.kind === 'response') {
      // The upstream's own answer (a 403, say) goes to the client as it is.
      writeUpstreamResponse(socket, result.status, result.headers, result.body);
      return this.#host.rejected(req, new GatewayError('GW_ERR_UPSTREAM_UNAVAILABLE', `upstream answered ${result.status}`));
    }
    if (socket.destroyed) return void result.ws.terminate();
    const draining = this.#host.draining();
    if (draining) {
      // The drain began while the upstream was connecting: this one will not get its 1001, so refuse it.
      result.ws.terminate();
      return this.#refuse(accepted, draining);
    }
    if (result.ws.protocol) chooseProtocol(req, result.ws.protocol);
    const client = await this.#acceptor.accept(req, socket, head, route.maxPayload);
    this.#relayBetween(accepted, client, { target, ws: result.ws }, identity);
  }

  /**
   * `firstMessageAuth`: the client is accepted anonymously; nothing reaches an upstream until its first
   * message `{ "type": "auth", "token": "..." }` is accepted (and that message is never forwarded).
   * Anything else, or nothing within `timeoutMs`, closes with 4401.
   */
  async #firstMessage(accepted: Accepted): Promise<void> {
    const { route, requestId } = accepted;
    const client = await this.#acceptor.accept(accepted.req, accepted.socket, accepted.head, route.maxPayload);
    this.#heartbeat.add(client, route.heartbeatMs);
    const pending: [Buffer, boolean][] = [];
    const hold = (data: Buffer, isBinary: boolean) => pending.push([data, isBinary]);
    const timer = setTimeout(() => client.close(4401, 'authentication timed out'), route.firstMessageTimeoutMs);
    client.once('close', () => clearTimeout(timer));
    client.once('message', async (data: Buffer, isBinary: boolean) => {
      clearTimeout(timer);
      client.on('message', hold);
      const token = isBinary ? undefined : parseTyped(data, 'auth');
      let identity: Identity;
      try {
        if (token === undefined) throw new GatewayError('GW_ERR_CREDENTIALS_MISSING', 'first message is not an auth message');
        identity = await this.#host.verifyToken(route, token, accepted.req, accepted.socket);
        await this.#host.admit(accepted, identity);
        if (identity.subject !== null) this.tracker.track(accepted.socket, [countKey.subject(route.key, identity.subject)]);
        this.#describe(accepted.socket, { identity, end: (code, reason) => client.close(code, reason) });
      } catch (err) {
        const rejection = err instanceof GatewayError ? err : new GatewayError('GW_ERR_AUTH_UNAVAILABLE', 'first message auth failed', {}, { cause: err });
        this.#host.log.info({ reqId: requestId, route: route.path, status: rejection.status, code: rejection.code, reason: rejection.message }, 'first message rejected');
        return client.close(closeCodeFor(rejection.status), rejection.description);
      }
      if (client.readyState !== client.OPEN) return;
      const authed = { ...accepted, identity };
      this.#host.log.info({ reqId: requestId, route: route.path, authenticator: identity.authenticator, subject: identity.subject }, 'first message authenticated');
      this.#forwardHeaders(authed);
      const { target, result } = await this.#openUpstream(authed);
      if (result.kind !== 'open') {
        this.#host.log.warn({ reqId: requestId, route: route.path, status: result.kind === 'response' ? result.status : 502 }, 'upstream unavailable');
        return client.close(1011, 'upstream unavailable');
      }
      if (client.readyState !== client.OPEN) return void result.ws.terminate();
      client.off('message', hold);
      for (const [message, binary] of pending) result.ws.send(message, { binary });
      this.#relayBetween(authed, client, { target, ws: result.ws }, identity);
    });
  }

  /** Relays between an accepted client and its upstream, with heartbeat, expiry and refresh messages. */
  #relayBetween(accepted: Accepted, client: WebSocket, upstream: { target: string; ws: WebSocket }, identity: Identity): void {
    const { route } = accepted;
    const release = route.pool!.acquire(upstream.target);
    let current = identity;
    let cancelExpiry = () => {};
    const refreshing = route.refreshGraceSec !== undefined;
    const intercept = (data: Buffer, isBinary: boolean): boolean => {
      const token = isBinary ? undefined : parseTyped(data, 'refresh');
      if (token === undefined) return false;
      this.#host.verifyToken(route, token, accepted.req, accepted.socket).then(
        (next) => {
          if (next.subject !== current.subject) throw new GatewayError('GW_ERR_TOKEN_INVALID', 'refresh for another subject');
          current = next;
          this.#describe(accepted.socket, { identity: next });
          cancelExpiry();
          cancelExpiry = schedule();
        },
        (err: unknown) => {
          this.#host.log.info({ reqId: accepted.requestId, route: route.path, subject: current.subject, reason: (err as Error).message }, 'refresh rejected');
          session.close(4401, 'token invalid');
        },
      ).catch(() => session.close(4401, 'token invalid'));
      return true;
    };
    const session = relay(client, upstream.ws, refreshing ? { interceptClient: intercept } : {});
    this.#describe(accepted.socket, { end: (code, reason) => session.close(code, reason) });
    this.#heartbeat.add(client, route.heartbeatMs);
    const schedule = () => {
      const grace = refreshing ? route.refreshGraceSec! : this.#host.graceOf(current);
      return this.#expireAt(route, current, grace, () => session.close(refreshing ? 4401 : 1008, 'token expired'));
    };
    cancelExpiry = schedule();
    this.#relays.add(session);
    void session.done.then(() => {
      cancelExpiry();
      release();
      this.#relays.delete(session);
    });
  }

  /** Sends 1001 to every relay and local client, spread evenly over `spreadMs`. */
  closeClients(spreadMs: number): void {
    const clients = [...this.#acceptor.clients()];
    clients.forEach((ws, i) => {
      const close = () => ws.close(1001, 'gateway shutting down');
      if (spreadMs <= 0) return close();
      setTimeout(close, Math.floor((i * spreadMs) / clients.length)).unref();
    });
  }

  async close(): Promise<void> {
    const gone = this.tracker.idle(1000);
    this.tracker.destroyAll();
    await gone;
    this.#heartbeat.stop();
    this.#proxy?.close();
    await this.#acceptor.close();
  }
}
