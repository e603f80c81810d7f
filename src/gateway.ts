import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { DestinationStream, Logger } from 'pino';
import type { WebSocket } from 'ws';
import type { AuthRequest } from './auth/authenticator.js';
import { runChain, withDeadline, type ChainOutcome } from './auth/chain.js';
import { MemorySessionStore, type SessionStore } from './auth/session-store.js';
import { MemoryTicketStore, RedisTicketStore, type TicketStore } from './auth/ticket.js';
import { runUpgradeHandler } from './auth/upgrade-handler.js';
import { DEFAULT_MAX_HEADER_BYTES, headersFit, isWellFormedUpgrade, MAX_URL_BYTES, requestIdOf } from './checks.js';
import { validateConfig, type ValidateOptions } from './config/load.js';
import type { GatewayConfig } from './config/schema.js';
import { offeredProtocols, removeProtocolEntry, stripCredential, type FoundCredential } from './credentials.js';
import { GatewayError } from './errors.js';
import { countKey, type ConnectionView } from './connections.js';
import { matches, Revocations, type RevocationTarget } from './revocations.js';
import { SharedRevocations } from './shared/revocations.js';
import { rememberMarker } from './handoff/accept.js';
import { Handoff, type Accepted } from './handoff/handoff.js';
import { anonymous, setIdentity } from './identity.js';
import { createLogger, scrubRequestValues } from './log.js';
import { GatewayMetrics } from './metrics.js';
import { connectRedis, type SharedRedis } from './redis.js';
import { DEFAULT_REPLICA_TTL_SEC, SharedConnectionCounts, type CapCheck } from './shared/connection-counts.js';
import { sendRejection, writeRejection } from './respond.js';
import type { CompiledRoute } from './route.js';
import { parseRequestUrl } from './router.js';
import { buildState, type GatewayState } from './state.js';
import { issueTicket } from './ticket-endpoint.js';
import type { Identity, UpgradeHandler } from './types.js';

/** Options for {@link createGateway} that are not part of the config file. */
export interface GatewayOptions {
  /** Directory that relative paths in the config resolve against. Default: the working directory. */
  baseDir?: string;
  /** A pino logger to use instead of one built from `config.log`. */
  logger?: Logger;
  /** Where the logger built from `config.log` writes (default: stdout, JSON lines). */
  logDestination?: DestinationStream;
  /** Standalone gateway: `mode: "local"` is an error and unmatched paths are answered 404. */
  sidecar?: boolean;
}

/** The outcome of {@link Gateway.authorize}. When `ok` is false the rejection has already been written. */
export type Decision =
  | {
      readonly ok: true;
      readonly identity: Identity;
      readonly route: CompiledRoute;
      readonly requestId: string;
      /** Headers the deciding authenticator vouched for, sent upstream (forwardAuth `copyHeaders`). */
      readonly upstreamHeaders?: Readonly<Record<string, string>> | undefined;
    }
  | { readonly ok: false; readonly status: number; readonly reason: string };

/** The gateway's events. */
export interface GatewayEvents {
  /** A `local` route accepted a connection. */
  connection: [ws: WebSocket, req: IncomingMessage, identity: Identity];
  /** A handshake passed every check (emitted before the handoff). */
  accepted: [req: IncomingMessage, identity: Identity];
  /** A handshake was refused; `reason` is the response's `error_description`. */
  rejected: [req: IncomingMessage, status: number, reason: string, error: GatewayError];
  /** A reload was applied (`reload()`, SIGHUP, `watch`). */
  reloaded: [config: GatewayConfig];
}

// Why a handshake was dropped without an answer: the client is gone.
class ClientGone extends Error {}

const DEFAULT_HANDSHAKE_TIMEOUT_MS = 5000;
const DEFAULT_DRAIN_TIMEOUT_MS = 30000;
const DEFAULT_TICKET_TTL_SEC = 30;
// Statuses that are answered before a route's rules apply, so never by `rejectMode: "close"`.
const HTTP_ONLY = new Set(['GW_ERR_BAD_UPGRADE', 'GW_ERR_URI_TOO_LONG', 'GW_ERR_HEADERS_TOO_LARGE', 'GW_ERR_ROUTE_NOT_FOUND']);

function onSocketError(this: Duplex): void {
  // A reset while a check is pending: the close that follows ends the handshake; nothing else to do.
  this.destroy();
}

/**
 * The upgrade gateway: routes, checks and authenticates every `upgrade` request, writes complete HTTP
 * rejections on the raw socket, and hands accepted ones to the application (`local`), an upstream
 * (`pipe`) or a relay (`relay`).
 */
export class Gateway extends EventEmitter<GatewayEvents> {
  readonly log: Logger;
  /** The SPEC 6.2 metrics, in a registry of this gateway's own (`GET /metrics` on the admin port). */
  readonly metrics: GatewayMetrics;
  readonly #options: ValidateOptions;
  readonly #timed = (authenticator: string, seconds: number) => this.metrics.authDuration(authenticator, seconds);
  readonly #handlers: UpgradeHandler[] = [];
  readonly #inFlight = new Set<AbortController>();
  /** The capacity slot each handshake holds while it is decided (see ConnectionTracker.reserve). */
  readonly #reservations = new WeakMap<IncomingMessage, (() => void)[]>();
  /** The shared (Redis) connection counts a handshake holds, released with the connection. */
  readonly #holds = new WeakMap<IncomingMessage, (() => void) | undefined>();
  readonly #handoff: Handoff;
  readonly #revocations = new Revocations();
  readonly #tickets: TicketStore;
  /** Tells this gateway's own revocation messages from the other replicas'. */
  readonly #replicaId = randomUUID();
  /** Revocations through Redis, when configured at start. */
  readonly #sharedRevocations: SharedRevocations | undefined;
  /** The credential of a handshake on a `revalidateSec` route, between decision and handoff. */
  readonly #credentials = new WeakMap<IncomingMessage, string>();
  /** Swapped whole by reload(); a handshake keeps the state it started with. */
  #state: GatewayState;
  #redis: SharedRedis | undefined;
  #counts: SharedConnectionCounts | undefined;
  #closing: Promise<void> | undefined;
  #drainDeadline = 0;

  /** @throws ConfigError listing every problem, like `portcullis check` */
  constructor(config: unknown, options: GatewayOptions = {}) {
    super();
    this.#options = { ...(options.baseDir !== undefined && { baseDir: options.baseDir }), sidecar: options.sidecar ?? false };
    const validated = validateConfig(config, this.#options);
    this.log = options.logger ?? createLogger(validated.log?.level, options.logDestination);
    // With redis, tickets and revocations are shared by every replica (and survive restarts).
    const redis = validated.redis ? this.#redisAt(validated.redis.url) : undefined;
    this.#tickets = redis ? new RedisTicketStore(redis) : new MemoryTicketStore();
    this.#sharedRevocations = redis && new SharedRevocations(redis, this.#replicaId, this.log, (target, untilSec, { stored }) => this.#applyRevocation(target, untilSec, undefined, stored));
    this.#state = this.#build(validated);
    const gateway = this;
    this.#handoff = new Handoff({
      log: this.log,
      get timeoutMs() {
        return gateway.#state.handshakeTimeoutMs;
      },
      graceOf: (identity) => this.#state.authenticators.get(identity.authenticator)?.clockToleranceSec ?? 0,
      connection: (ws, req, identity) => {
        if (this.listenerCount('connection') === 0) this.log.warn({ route: req.url }, 'local connection accepted but nobody listens for "connection"');
        this.emit('connection', ws, req, identity);
      },
      rejected: (req, err) => this.emit('rejected', req, err.status, err.description, err),
      draining: () => (this.#closing ? this.#shuttingDown() : undefined),
      revalidate: async (identity, credential) => {
        const auth = this.#state.authenticators.get(identity.authenticator);
        return auth?.revalidate ? auth.revalidate(identity, credential) : true;
      },
      verifyToken: (route, token, req, socket) => this.#verifyToken(route, token, req, socket),
      // The first-message path tracks the connection in the same tick, so it needs no reservation.
      upstreamFailed: (route, target) => this.metrics.upstreamError(route.path, target),
      admit: async (accepted, identity) => releaseOnClose(accepted.socket, await this.#admit(accepted.route, accepted.req, identity, { reserve: false, perIp: false })),
    });
    this.metrics = new GatewayMetrics(this.#handoff.tracker);
    this.#handoff.tracker.onClose = (socket, connection) => this.metrics.closed(socket, connection.route);
    this.handleUpgrade = this.handleUpgrade.bind(this);
  }

  /** The config in force (validated, frozen); replaced by {@link reload}. */
  get config(): GatewayConfig {
    return this.#state.config;
  }

  #build(config: GatewayConfig): GatewayState {
    return buildState(config, {
      log: this.log,
      tickets: this.#tickets,
      redis: () => this.#redisAt(config.redis!.url),
    });
  }

  /**
   * The gateway's one Redis connection. Tickets and revocation sharing hold on to it, so a reload that
   * names another URL keeps it (and says so): `redis.url` changes need a restart, as the README states.
   */
  #redisAt(url: string): SharedRedis {
    if (!this.#redis) this.#redis = connectRedis(url, this.log);
    else if (this.#redis.url !== url) this.log.warn('redis.url changed: restart to use the new one; the current connection stays');
    return this.#redis;
  }

  /**
   * Validates a new config and, when valid, puts it in force at once for new handshakes; live
   * connections keep what they were accepted with. Invalid: nothing changes.
   * @throws ConfigError listing every problem
   */
  async reload(config: unknown): Promise<void> {
    const validated = validateConfig(config, this.#options);
    const next = this.#build(validated);
    await Promise.all([...next.authenticators.values()].map((a) => a.ready?.()));
    this.#state = next;
    if (validated.log?.level) this.log.level = validated.log.level;
    this.log.info({ routes: validated.routes.length }, 'config reloaded');
    this.emit('reloaded', validated);
  }

  /**
   * Adds a Midway-style check `(request, socket, head) => boolean | Identity`, run after the route's
   * authenticators decide, in the order added: false vetoes (401), an object enriches the identity.
   */
  onWebSocketUpgrade(handler: UpgradeHandler): this {
    this.#handlers.push(handler);
    return this;
  }

  /**
   * Takes over a server's `upgrade` event. Requests that match no route are left to the server's other
   * `upgrade` listeners (answered 404 when there are none).
   * @returns a function that detaches the gateway again
   */
  attach(server: Server): () => void {
    const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      const others = server.listenerCount('upgrade') > 1;
      void this.#handle(req, socket, head, others ? 'ignore' : 'reject');
    };
    server.on('upgrade', onUpgrade);
    return () => void server.off('upgrade', onUpgrade);
  }

  /** The `upgrade` listener: `server.on('upgrade', gateway.handleUpgrade)`. Unmatched paths get 404. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    return this.#handle(req, socket, head, 'reject');
  }

  /**
   * Runs every check and decides, without handing the connection on (what `toUpgradeHandler` uses).
   * On a refusal the complete HTTP response has been written when this resolves.
   */
  async authorize(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<Decision> {
    const decision = await this.#decide(req, socket, head, 'reject');
    this.#release(req);
    return decision === 'unmatched' ? { ok: false, status: 404, reason: 'no route for this path' } : decision;
  }

  /**
   * Handles a plain HTTP request when it is for a route with `http: true`: the same checks as an upgrade
   * (rejections are ordinary HTTP responses), then proxied to the route's upstream. Needed for Socket.IO's
   * long-polling transport and for apps served behind the gateway.
   * @returns false, having done nothing, when no such route matches (answer it yourself)
   */
  async handleRequest(req: IncomingMessage, res: ServerResponse): Promise<boolean> {
    const tickets = this.#state.config.tickets;
    if (tickets && parseRequestUrl(req)?.pathname === tickets.path) {
      await issueTicket(req, res, this.#state, tickets.ttlSec ?? DEFAULT_TICKET_TTL_SEC, {
        log: this.log,
        tickets: this.#tickets,
        draining: () => (this.#closing ? this.#shuttingDown() : undefined),
        runHandlers: (identity, request) => this.#runHandlers(identity, request),
        isRevoked: (identity) => this.#revocations.isRevoked(identity),
      });
      return true;
    }
    if (!this.routeFor(req)?.http) return false;
    const decision = await this.#decide(req, req.socket, Buffer.alloc(0), 'reject', res);
    this.#release(req);
    if (decision === 'unmatched' || !decision.ok) return true;
    const { route, identity, requestId, upstreamHeaders } = decision;
    await this.#handoff.web({ req, socket: req.socket, head: Buffer.alloc(0), route, identity, requestId, upstreamHeaders }, res);
    return true;
  }

  /** Resolves once module authenticators are imported and Redis (when configured) has had its first try. */
  async ready(): Promise<void> {
    await Promise.all([...this.#state.authenticators.values()].map((a) => a.ready?.()));
    await this.#redis?.ready();
    await this.#sharedRevocations?.started;
  }

  /** The in-process store of a `session` authenticator with `store: { type: "memory" }`. */
  sessionStore(name: string): MemorySessionStore | undefined {
    const store = (this.#state.authenticators.get(name) as { store?: SessionStore } | undefined)?.store;
    return store instanceof MemorySessionStore ? store : undefined;
  }

  /** The route a request would take, if any. */
  routeFor(req: IncomingMessage): CompiledRoute | undefined {
    const url = parseRequestUrl(req);
    return url ? this.#match(this.#state, url, req) : undefined;
  }

  #match(state: GatewayState, url: URL, req: IncomingMessage): CompiledRoute | undefined {
    return state.routes.find((r) => r.matches(url.pathname, req.headers.host));
  }

  /**
   * Revokes a subject, token id or session id (SPEC 6.1 `POST /revoke`): its live connections are closed
   * (relay and local: close 4403 `revoked`; pipe: both sockets destroyed) and new handshakes with it are
   * refused (401 `token revoked`) until its expiry when known, else for 24 hours.
   * @param options.share false: apply it here only, not through Redis (another process already shares
   *   it, as with `workers`, where every worker is told and one of them shares it)
   * @returns how many live connections were closed
   */
  revoke(target: RevocationTarget, options: { share?: boolean } = {}): number {
    const hit = this.#liveOf(target);
    // A token or a session has one expiry; a subject has none (its other tokens may live longer): 24 h.
    const expiries = 'subject' in target ? [] : hit.map((c) => c.identity.expiresAt).filter((e): e is number => e !== undefined);
    const untilSec = hit.length > 0 && expiries.length === hit.length ? Math.max(...expiries) : Math.floor(Date.now() / 1000) + 24 * 3600;
    this.#applyRevocation(target, untilSec, hit);
    this.metrics.revocation();
    if (options.share !== false) this.#sharedRevocations?.share(target, untilSec);
    return hit.length;
  }

  #liveOf(target: RevocationTarget) {
    return [...this.#handoff.tracker.connections()].filter((c) => matches(c.identity, target));
  }

  /**
   * Refuses `target` until `untilSec` and closes its live connections here. A revocation loaded from
   * Redis (at start or reconnect) is only logged when it closed something.
   */
  #applyRevocation(target: RevocationTarget, untilSec: number, hit = this.#liveOf(target), stored = false): void {
    this.#revocations.add(target, untilSec);
    for (const connection of hit) connection.end(4403, 'revoked');
    if (!stored || hit.length > 0) this.log.info({ target: Object.keys(target)[0], closed: hit.length }, 'revoked');
  }

  /** The live connections, as `GET /connections` lists them. */
  listConnections(): ConnectionView[] {
    return this.#handoff.tracker.list();
  }

  /** Live connections handed on by this gateway. */
  get connections(): number {
    return this.#handoff.tracker.size;
  }

  /** True once {@link close} was called. */
  get draining(): boolean {
    return this.#closing !== undefined;
  }

  /** Whether Redis, when configured, is reachable. */
  get redisReady(): boolean {
    return this.#redis === undefined || this.#redis.isReady;
  }

  /**
   * Drains and stops (SPEC 6.4): new upgrades get 503 with `Retry-After`, pending checks are answered 503,
   * relay and local connections get close 1001 spread over `drain.spreadMs`, and every connection has
   * until `drain.timeoutMs` to end before it is destroyed; then backends are closed.
   */
  close(): Promise<void> {
    return (this.#closing ??= this.#shutdown());
  }

  async #shutdown(): Promise<void> {
    const { timeoutMs = DEFAULT_DRAIN_TIMEOUT_MS, spreadMs = 0 } = this.config.drain ?? {};
    this.#drainDeadline = Date.now() + timeoutMs;
    for (const ac of this.#inFlight) ac.abort(this.#shuttingDown());
    this.#handoff.closeClients(Math.min(spreadMs, timeoutMs));
    await this.#handoff.tracker.idle(timeoutMs);
    await this.#handoff.close();
    await Promise.all([...this.#state.authenticators.values()].map((a) => a.close?.()));
    await this.#counts?.close();
    await this.#redis?.close();
  }

  async #handle(req: IncomingMessage, socket: Duplex, head: Buffer, unmatched: 'ignore' | 'reject'): Promise<void> {
    const decision = await this.#decide(req, socket, head, unmatched);
    if (decision === 'unmatched' || !decision.ok) return;
    const { route, identity, requestId, upstreamHeaders } = decision;
    const accepted: Accepted = { req, socket, head, route, identity, requestId, upstreamHeaders, credential: this.#credentials.get(req) };
    this.#credentials.delete(req);
    // The shared counts are held for as long as the connection lives.
    releaseOnClose(socket, this.#holds.get(req));
    this.#holds.delete(req);
    try {
      const started = this.#handoff.start(accepted, this.#countKeys(route, req, route.firstMessageTimeoutMs === undefined ? identity : undefined));
      // The connection is counted now (start tracks it synchronously): its reservation can go.
      this.#release(req);
      await started;
    } catch (err) {
      this.log.error({ reqId: requestId, route: route.path, error: { message: (err as Error).message } }, 'handoff failed');
      // Still a complete answer when nothing was written yet (an identity no header can carry, say).
      if (!writeRejection(socket, new GatewayError('GW_ERR_INTERNAL'), requestId)) socket.destroy();
    }
  }

  /** The pipeline of SPEC 3, for an upgrade (`res` absent) or a plain HTTP request on an `http` route. */
  async #decide(req: IncomingMessage, socket: Duplex, head: Buffer, unmatched: 'ignore' | 'reject', res?: ServerResponse): Promise<Decision | 'unmatched'> {
    const started = performance.now();
    const state = this.#state;
    const url = parseRequestUrl(req);
    const route = url ? this.#match(state, url, req) : undefined;
    if (!route && unmatched === 'ignore') return 'unmatched';
    // A plain request's socket belongs to the HTTP server, which handles its errors.
    if (!res) socket.on('error', onSocketError);
    const requestId = requestIdOf(req);
    // Built only for a line that is written: the peer address is a system call.
    const fields = () => ({ reqId: requestId, route: route?.path ?? null, remoteAddress: req.socket?.remoteAddress ?? null, ...(res && { method: req.method }) });
    let authenticator: string | null = null;
    try {
      if (!url || (!res && !isWellFormedUpgrade(req))) throw new GatewayError('GW_ERR_BAD_UPGRADE');
      const target = req.url ?? '';
      if (target.length * 3 > MAX_URL_BYTES && Buffer.byteLength(target) > MAX_URL_BYTES) throw new GatewayError('GW_ERR_URI_TOO_LONG');
      if (!headersFit(req, state.config.limits?.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES)) throw new GatewayError('GW_ERR_HEADERS_TOO_LARGE');
      if (!route) throw new GatewayError('GW_ERR_ROUTE_NOT_FOUND');
      this.#checkCapacity(state, route);
      this.#reserve(req, [countKey.route(route.key)]);
      if (!route.originAllowed(req.headers.origin)) throw new GatewayError('GW_ERR_ORIGIN_NOT_ALLOWED', `origin ${JSON.stringify(req.headers.origin?.slice(0, 200))}`);
      if (route.perIp) {
        const ip = clientIp(req);
        const taken = route.perIp.take(ip);
        const wait = taken instanceof Promise ? await taken : taken;
        if (wait > 0) throw new GatewayError('GW_ERR_RATE_LIMITED', `per-ip rate for ${ip}`, { 'Retry-After': String(wait) });
      }

      let identity: Identity;
      let credential: FoundCredential | undefined;
      let upstreamHeaders: Readonly<Record<string, string>> | undefined;
      let hold: Hold | Promise<Hold>;
      if (route.firstMessageTimeoutMs !== undefined) {
        // The credential comes in the first message, after the upgrade (relay only).
        identity = anonymous('first-message');
        hold = this.#admit(route, req, null);
      } else {
        const request = new HandshakeRequest(req, socket, head, url);
        const decided = this.#authenticate(route, request);
        // Only a chain that has to wait pays for a deadline timer and an abort signal.
        const outcome = decided instanceof Promise ? await this.#settle(decided, request, res ?? socket, state.handshakeTimeoutMs) : decided;
        identity = outcome.identity;
        if (this.#revocations.isRevoked(identity)) throw new GatewayError('GW_ERR_TOKEN_REVOKED');
        credential = outcome.credential;
        upstreamHeaders = outcome.upstreamHeaders;
        if (route.revalidateSec !== undefined && credential) this.#credentials.set(req, credential.value);
        authenticator = identity.authenticator;
        hold = this.#admit(route, req, identity);
      }
      const release = hold instanceof Promise ? await hold : hold;
      if (release) this.#holds.set(req, release);
      if (res ? res.destroyed : socket.destroyed || !socket.writable) throw new ClientGone();
      if (this.#closing) throw this.#shuttingDown();

      this.#prepare(req, url, route, credential);
      setIdentity(req, identity);
      if (this.log.isLevelEnabled('info')) {
        this.log.info({ ...fields(), authenticator, subject: identity.subject, status: res ? null : 101, durationMs: elapsed(started) }, res ? 'request accepted' : 'upgrade accepted');
      }
      if (!res) this.metrics.upgrade(route.path, 'accepted', 101);
      this.emit('accepted', req, identity);
      if (!res) socket.off('error', onSocketError);
      return { ok: true, identity, route, requestId, upstreamHeaders };
    } catch (thrown) {
      this.#release(req);
      if (thrown instanceof ClientGone) {
        if (this.log.isLevelEnabled('info')) this.log.info({ ...fields(), authenticator, status: null, reason: 'client closed', durationMs: elapsed(started) }, 'upgrade abandoned');
        if (!res) this.metrics.upgrade(route?.path ?? '', 'abandoned', 0);
        if (!res) socket.destroy();
        return { ok: false, status: 0, reason: 'client closed' };
      }
      const err = thrown instanceof GatewayError ? thrown : new GatewayError('GW_ERR_INTERNAL', 'unexpected error', {}, { cause: thrown });
      authenticator ??= err.authenticator ?? null;
      const level = err.status >= 500 ? 'warn' : 'info';
      if (this.log.isLevelEnabled(level)) {
        // A handler or backend may quote the credential in its error: kept for the operator, minus the values.
        const cause = err.cause instanceof Error ? { message: scrubRequestValues(err.cause.message, req.headers, req.url), name: err.cause.name } : undefined;
        this.log[level]({ ...fields(), authenticator, status: err.status, code: err.code, reason: err.message, cause, durationMs: elapsed(started) }, 'upgrade rejected');
      }
      if (!res) this.metrics.upgrade(route?.path ?? '', 'rejected', err.status);
      if (res) {
        sendRejection(res, err, requestId);
      } else if (route?.rejectMode === 'close' && !HTTP_ONLY.has(err.code) && socket.writable) {
        // The upgrade completes to carry the close: its answer must not echo a token entry either.
        this.#dropProtocolTokens(req, route);
        await this.#handoff.rejectByClose(req, socket, head, route, err);
      } else {
        writeRejection(socket, err, requestId);
      }
      this.emit('rejected', req, err.status, err.description, err);
      return { ok: false, status: err.status, reason: err.description };
    }
  }

  /**
   * Waits for an authentication that did not answer at once, within `handshake.timeoutMs` (then 503),
   * aborting it when the client leaves or the gateway closes.
   */
  async #settle<T>(work: Promise<T>, request: HandshakeRequest, closes: Duplex | ServerResponse, timeoutMs: number): Promise<T> {
    const ac = request.controller;
    const onClose = () => ac.abort(new ClientGone());
    closes.once('close', onClose);
    this.#inFlight.add(ac);
    try {
      return await withDeadline(work, timeoutMs, ac.signal);
    } finally {
      closes.off('close', onClose);
      this.#inFlight.delete(ac);
    }
  }

  /** Holds capacity under `keys` for this handshake until {@link #release} (see ConnectionTracker.reserve). */
  #reserve(req: IncomingMessage, keys: string[]): void {
    const held = this.#reservations.get(req) ?? [];
    held.push(this.#handoff.tracker.reserve(keys));
    this.#reservations.set(req, held);
  }

  /** Ends what a handshake holds: its reservations and, unless handed to the connection, its shared counts. */
  #release(req: IncomingMessage): void {
    for (const release of this.#reservations.get(req) ?? []) release();
    this.#reservations.delete(req);
    this.#holds.get(req)?.();
    this.#holds.delete(req);
  }

  #checkCapacity(state: GatewayState, route: CompiledRoute): void {
    if (this.#closing) throw this.#shuttingDown();
    const tracker = this.#handoff.tracker;
    if (tracker.load >= state.maxConnections || tracker.count(countKey.route(route.key)) >= route.maxConnections) {
      throw new GatewayError('GW_ERR_CAPACITY', undefined, { 'Retry-After': '1' });
    }
  }

  /**
   * SPEC 3 step 7: `require` claims, then the per-subject rate limit and the per-subject and per-IP caps
   * (with `redis`, counted across every replica). A first-message route checks the per-IP cap at the
   * upgrade (`identity` null) and the rest when the first message authenticates (`perIp` false).
   * With `reserve`, this handshake holds its place under the caps until {@link #release}.
   * @returns the hold on the shared counts, to release when the connection ends
   */
  #admit(route: CompiledRoute, req: IncomingMessage, identity: Identity | null, { reserve = true, perIp = true } = {}): Hold | Promise<Hold> {
    if (identity && !route.requireMet(identity.claims)) throw new GatewayError('GW_ERR_INSUFFICIENT_SCOPE');
    // Only the caps that are set are counted (and reserved); reading the client address is a system call.
    const caps: Cap[] = [];
    let wait: number | Promise<number> = 0;
    if (identity?.subject != null) {
      wait = route.perSubject?.take(identity.subject) ?? 0;
      if (route.maxConnectionsPerSubject !== Infinity) caps.push({ key: countKey.subject(route.key, identity.subject), cap: route.maxConnectionsPerSubject, reason: 'per-subject connection cap' });
    }
    if (perIp && route.maxConnectionsPerIp !== Infinity) caps.push({ key: countKey.ip(route.key, clientIp(req)), cap: route.maxConnectionsPerIp, reason: 'per-ip connection cap' });
    const counts = caps.length > 0 ? this.#sharedCounts() : undefined;
    if (wait instanceof Promise || counts) return this.#admitShared(req, caps, wait, counts, reserve);
    if (wait > 0) throw perSubjectRate(wait);
    return this.#admitHere(req, caps, undefined, reserve);
  }

  /** {@link #admit} when a rate limit or the connection counts live in Redis. */
  async #admitShared(req: IncomingMessage, caps: Cap[], wait: number | Promise<number>, counts: SharedConnectionCounts | undefined, reserve: boolean): Promise<Hold> {
    const seconds = await wait;
    if (seconds > 0) throw perSubjectRate(seconds);
    const shared = counts ? await counts.acquire(caps) : undefined;
    if (shared && 'refused' in shared) throw tooMany((shared.refused as Cap).reason);
    return this.#admitHere(req, caps, shared?.release, reserve);
  }

  /** The local count decides too (alone while Redis is unreachable): read right before reserving. */
  #admitHere(req: IncomingMessage, caps: Cap[], shared: Hold, reserve: boolean): Hold {
    const full = caps.find((c) => this.#handoff.tracker.count(c.key) >= c.cap);
    if (full) {
      shared?.();
      throw tooMany(full.reason);
    }
    if (reserve && caps.length > 0) this.#reserve(req, caps.map((c) => c.key));
    return shared;
  }

  /** The connection counts shared through Redis, when `redis` is configured. */
  #sharedCounts(): SharedConnectionCounts | undefined {
    const redis = this.#state.config.redis;
    if (!redis) return undefined;
    const ttlMs = (redis.replicaTtlSec ?? DEFAULT_REPLICA_TTL_SEC) * 1000;
    return (this.#counts ??= new SharedConnectionCounts(this.#redisAt(redis.url), this.#replicaId, ttlMs, this.log));
  }

  /** The keys a live connection is counted under (route, client IP, and subject when known). */
  #countKeys(route: CompiledRoute, req: IncomingMessage, identity: Identity | undefined): string[] {
    const keys = [countKey.route(route.key), countKey.ip(route.key, clientIp(req))];
    if (identity?.subject != null) keys.push(countKey.subject(route.key, identity.subject));
    return keys;
  }

  #shuttingDown(): GatewayError {
    const seconds = Math.max(1, Math.ceil((this.#drainDeadline - Date.now()) / 1000));
    return new GatewayError('GW_ERR_SHUTTING_DOWN', undefined, { 'Retry-After': String(seconds) });
  }

  /** The route's chain, then the `onWebSocketUpgrade` handlers; synchronous when every step is. */
  #authenticate(route: CompiledRoute, request: AuthRequest): ChainOutcome | Promise<ChainOutcome> {
    const outcome = route.authenticators.length === 0 ? { identity: anonymous('public'), authenticator: 'public' } : runChain(route.authenticators, request, this.#timed);
    if (this.#handlers.length === 0) return outcome;
    return Promise.resolve(outcome).then(async (decided) => ({ ...decided, identity: await this.#runHandlers(decided.identity, request) }));
  }

  async #runHandlers(identity: Identity, { req, socket, head, signal }: AuthRequest): Promise<Identity> {
    for (const handler of this.#handlers) {
      if (signal.aborted) break;
      identity = await runUpgradeHandler(handler, req, socket, head, identity);
    }
    return identity;
  }

  /** A first-message or refresh token, checked by the first of the route's authenticators that takes tokens. */
  async #verifyToken(route: CompiledRoute, token: string, req: IncomingMessage, socket: Duplex): Promise<Identity> {
    const auth = route.authenticators.find((a) => a.verifyToken);
    if (!auth) throw new GatewayError('GW_ERR_CREDENTIALS_MISSING', 'no token authenticator on this route');
    const request = { req, socket, head: Buffer.alloc(0), url: parseRequestUrl(req)!, signal: new AbortController().signal };
    const work = auth.verifyToken!(token, request).then((identity) => {
      if (this.#revocations.isRevoked(identity)) throw new GatewayError('GW_ERR_TOKEN_REVOKED');
      return this.#runHandlers(identity, request);
    });
    return withDeadline(work, this.#state.handshakeTimeoutMs, request.signal).catch((err: unknown) => {
      if (err instanceof GatewayError || !(err instanceof Error)) throw err;
      throw new GatewayError('GW_ERR_AUTH_UNAVAILABLE', `${auth.name}: backend failed`, {}, { cause: err });
    });
  }

  /**
   * Normalises `req.url` and strips what must not travel on: the used credential (per
   * `stripCredentials`), and always every subprotocol entry that carries a token for one of the route's
   * `protocol:` sources.
   */
  #prepare(req: IncomingMessage, url: URL, route: CompiledRoute, credential: FoundCredential | undefined): void {
    // The path that was routed and authorised is the one forwarded (dot segments already resolved).
    req.url = url.pathname + url.search;
    if (credential && (route.stripCredentials || credential.kind === 'protocol')) stripCredential(req, url, credential);
    this.#dropProtocolTokens(req, route);
  }

  /** Removes every subprotocol entry that carries a token for the route; remembers the marker to answer. */
  #dropProtocolTokens(req: IncomingMessage, route: CompiledRoute): void {
    if (route.protocolPrefixes.length === 0) return;
    for (const entry of offeredProtocols(req)) {
      if (route.protocolPrefixes.some((prefix) => entry.startsWith(prefix) && entry.length > prefix.length)) removeProtocolEntry(req, entry);
      else if (route.markers.includes(entry)) rememberMarker(req, entry);
    }
  }
}

/** What an admitted handshake holds in the shared (Redis) counts: its release, if anything. */
type Hold = (() => void) | undefined;

/**
 * One handshake as authenticators see it. Its abort signal is made only when asked for: a chain that
 * answers at once never needs one.
 */
class HandshakeRequest implements AuthRequest {
  #controller: AbortController | undefined;
  constructor(
    readonly req: IncomingMessage,
    readonly socket: Duplex,
    readonly head: Buffer,
    readonly url: URL,
  ) {}
  get controller(): AbortController {
    return (this.#controller ??= new AbortController());
  }
  get signal(): AbortSignal {
    return this.controller.signal;
  }
}

function perSubjectRate(seconds: number): GatewayError {
  return new GatewayError('GW_ERR_RATE_LIMITED', 'per-subject rate', { 'Retry-After': String(seconds) });
}

/** A connection cap to check, with the reason a refusal gives. */
interface Cap extends CapCheck {
  readonly reason: string;
}

function tooMany(reason: string): GatewayError {
  return new GatewayError('GW_ERR_TOO_MANY_CONNECTIONS', reason, { 'Retry-After': '1' });
}

/** Ends a hold when the socket closes (at once if it already has). */
function releaseOnClose(socket: Duplex, release: (() => void) | undefined): void {
  if (!release) return;
  if (socket.destroyed) release();
  else socket.once('close', release);
}

/** The client address a connection is counted and rate-limited by. */
function clientIp(req: IncomingMessage): string {
  return req.socket?.remoteAddress ?? 'unknown';
}

function elapsed(started: number): number {
  return Math.round((performance.now() - started) * 100) / 100;
}

/**
 * Builds a gateway from a config object (the shape of `gateway.config.json`, already parsed).
 * Validates it like `portcullis check`; opens no socket (`listen` and `workers` are for the CLI).
 * @throws ConfigError listing every problem
 */
export function createGateway(config: unknown, options: GatewayOptions = {}): Gateway {
  return new Gateway(config, options);
}
