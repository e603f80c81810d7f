import { EventEmitter } from 'node:events';
import type { IncomingMessage, Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import type { Authenticator } from './auth/authenticator.js';
import { runChain, withDeadline } from './auth/chain.js';
import { buildAuthenticator } from './auth/registry.js';
import { MemorySessionStore, type SessionStore } from './auth/session-store.js';
import { runUpgradeHandler } from './auth/upgrade-handler.js';
import { DEFAULT_MAX_HEADER_BYTES, headerBytes, isWellFormedUpgrade, MAX_URL_BYTES, requestIdOf } from './checks.js';
import { validateConfig } from './config/load.js';
import type { GatewayConfig } from './config/schema.js';
import { offeredProtocols, removeProtocolEntry, stripCredential, type FoundCredential } from './credentials.js';
import { GatewayError } from './errors.js';
import { setUpstreamHeaders } from './handoff/forward.js';
import { LocalHandoff, markerOf, rememberMarker } from './handoff/local.js';
import { UpstreamProxy } from './handoff/upstream.js';
import { anonymous, setIdentity } from './identity.js';
import { createLogger } from './log.js';
import { connectRedis, type SharedRedis } from './redis.js';
import { writeRejection } from './respond.js';
import { compileRoute, type CompiledRoute } from './route.js';
import { parseRequestUrl } from './router.js';
import type { Identity, UpgradeHandler } from './types.js';

/** Options for {@link createGateway} that are not part of the config file. */
export interface GatewayOptions {
  /** Directory that relative paths in the config resolve against. Default: the working directory. */
  baseDir?: string;
  /** A pino logger to use instead of one built from `config.log`. */
  logger?: Logger;
  /** Standalone gateway: `mode: "local"` is an error and unmatched paths are answered 404. */
  sidecar?: boolean;
}

/** The outcome of {@link Gateway.authorize}. When `ok` is false the rejection has already been written. */
export type Decision =
  | { readonly ok: true; readonly identity: Identity; readonly route: CompiledRoute; readonly requestId: string }
  | { readonly ok: false; readonly status: number; readonly reason: string };

/** The gateway's events. */
export interface GatewayEvents {
  /** A `local` route accepted a connection. */
  connection: [ws: WebSocket, req: IncomingMessage, identity: Identity];
  /** A handshake passed every check (emitted before the handoff). */
  accepted: [req: IncomingMessage, identity: Identity];
  /** A handshake was refused; `reason` is the response's `error_description`. */
  rejected: [req: IncomingMessage, status: number, reason: string, error: GatewayError];
}

// Why a handshake was dropped without an answer: the client is gone.
class ClientGone extends Error {}

const DEFAULT_HANDSHAKE_TIMEOUT_MS = 5000;
const DEFAULT_DRAIN_TIMEOUT_MS = 30000;
const MAX_TIMER_MS = 2 ** 31 - 1;

function onSocketError(this: Duplex): void {
  // A reset while a check is pending: the close that follows ends the handshake; nothing else to do.
  this.destroy();
}

/**
 * The upgrade gateway: routes, checks and authenticates every `upgrade` request, writes complete HTTP
 * rejections on the raw socket, and hands accepted ones to the application (`local`) or an upstream (`pipe`).
 */
export class Gateway extends EventEmitter<GatewayEvents> {
  /** The validated, frozen config. */
  readonly config: GatewayConfig;
  readonly log: Logger;
  readonly #sidecar: boolean;
  readonly #authenticators = new Map<string, Authenticator>();
  readonly #routes: readonly CompiledRoute[];
  readonly #handlers: UpgradeHandler[] = [];
  readonly #handshakeTimeoutMs: number;
  readonly #inFlight = new Set<AbortController>();
  readonly #live = new Set<Duplex>();
  readonly #perRoute = new Map<CompiledRoute, number>();
  #redis: SharedRedis | undefined;
  #proxy: UpstreamProxy | undefined;
  #local: LocalHandoff | undefined;
  #closing: Promise<void> | undefined;
  #drainDeadline = 0;
  /** Called when the last live connection ends (set while draining). */
  #onIdle: (() => void) | undefined;

  /** @throws ConfigError listing every problem, like `portcullis check` */
  constructor(config: unknown, options: GatewayOptions = {}) {
    super();
    this.config = validateConfig(config, { ...(options.baseDir !== undefined && { baseDir: options.baseDir }), sidecar: options.sidecar ?? false });
    this.log = options.logger ?? createLogger(this.config.log?.level);
    this.#sidecar = options.sidecar ?? false;
    this.#handshakeTimeoutMs = this.config.limits?.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    const deps = { log: this.log, redis: () => (this.#redis ??= connectRedis(this.config.redis!.url, this.log)) };
    const sources = new Map<string, readonly string[]>();
    for (const [name, auth] of Object.entries(this.config.authenticators ?? {})) {
      this.#authenticators.set(name, buildAuthenticator(name, auth, deps));
      if ('from' in auth && auth.from) sources.set(name, auth.from);
    }
    this.#routes = this.config.routes.map((route, i) => compileRoute(route, i, this.#authenticators, sources));
    this.handleUpgrade = this.handleUpgrade.bind(this);
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
    return decision === 'unmatched' ? { ok: false, status: 404, reason: 'no route for this path' } : decision;
  }

  /** Resolves once module authenticators are imported and Redis (when configured) has had its first try. */
  async ready(): Promise<void> {
    await Promise.all([...this.#authenticators.values()].map((a) => a.ready?.()));
    await this.#redis?.ready();
  }

  /** The in-process store of a `session` authenticator with `store: { type: "memory" }`. */
  sessionStore(name: string): MemorySessionStore | undefined {
    const store = (this.#authenticators.get(name) as { store?: SessionStore } | undefined)?.store;
    return store instanceof MemorySessionStore ? store : undefined;
  }

  /** The route a request would take, if any. */
  routeFor(req: IncomingMessage): CompiledRoute | undefined {
    const url = parseRequestUrl(req);
    return url ? this.#match(url, req) : undefined;
  }

  #match(url: URL, req: IncomingMessage): CompiledRoute | undefined {
    return this.#routes.find((r) => r.matches(url.pathname, req.headers.host));
  }

  /** Live connections handed on by this gateway. */
  get connections(): number {
    return this.#live.size;
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
   * Stops: new upgrades get 503, pending checks are answered 503, local connections get close 1001,
   * live connections have `drain.timeoutMs` to end before they are destroyed; then backends are closed.
   */
  close(): Promise<void> {
    return (this.#closing ??= this.#shutdown());
  }

  async #shutdown(): Promise<void> {
    const timeoutMs = this.config.drain?.timeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS;
    this.#drainDeadline = Date.now() + timeoutMs;
    for (const ac of this.#inFlight) ac.abort(this.#shuttingDown());
    for (const ws of this.#local?.clients ?? []) ws.close(1001, 'gateway shutting down');
    if (this.#live.size > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, timeoutMs);
        this.#onIdle = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    for (const socket of this.#live) socket.destroy();
    this.#proxy?.close();
    await this.#local?.close();
    await Promise.all([...this.#authenticators.values()].map((a) => a.close?.()));
    await this.#redis?.close();
  }

  async #handle(req: IncomingMessage, socket: Duplex, head: Buffer, unmatched: 'ignore' | 'reject'): Promise<void> {
    const decision = await this.#decide(req, socket, head, unmatched);
    if (decision === 'unmatched' || !decision.ok) return;
    this.#handoff(req, socket, head, decision.route, decision.identity, decision.requestId);
  }

  async #decide(req: IncomingMessage, socket: Duplex, head: Buffer, unmatched: 'ignore' | 'reject'): Promise<Decision | 'unmatched'> {
    const started = performance.now();
    const url = parseRequestUrl(req);
    const route = url ? this.#match(url, req) : undefined;
    if (!route && unmatched === 'ignore') return 'unmatched';
    socket.on('error', onSocketError);
    const requestId = requestIdOf(req);
    const log = { reqId: requestId, route: route?.path ?? null, remoteAddress: req.socket?.remoteAddress ?? null };
    let authenticator: string | null = null;
    const ac = new AbortController();
    const onClose = () => ac.abort(new ClientGone());
    socket.once('close', onClose);
    this.#inFlight.add(ac);
    try {
      if (!url || !isWellFormedUpgrade(req)) throw new GatewayError('GW_ERR_BAD_UPGRADE');
      if (Buffer.byteLength(req.url ?? '') > MAX_URL_BYTES) throw new GatewayError('GW_ERR_URI_TOO_LONG');
      if (headerBytes(req) > (this.config.limits?.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES)) throw new GatewayError('GW_ERR_HEADERS_TOO_LARGE');
      if (!route) throw new GatewayError('GW_ERR_ROUTE_NOT_FOUND');
      this.#checkCapacity(route);
      if (!route.originAllowed(req.headers.origin)) throw new GatewayError('GW_ERR_ORIGIN_NOT_ALLOWED', `origin ${JSON.stringify(req.headers.origin?.slice(0, 200))}`);
      const outcome = await withDeadline(this.#authenticate(route, req, socket, head, url, ac.signal), this.#handshakeTimeoutMs, ac.signal);
      authenticator = outcome.identity.authenticator;
      if (!route.requireMet(outcome.identity.claims)) throw new GatewayError('GW_ERR_INSUFFICIENT_SCOPE');
      if (socket.destroyed || !socket.writable) throw new ClientGone();
      if (this.#closing) throw this.#shuttingDown();

      this.#prepare(req, url, route, outcome.credential);
      setIdentity(req, outcome.identity);
      this.log.info({ ...log, authenticator, subject: outcome.identity.subject, status: 101, durationMs: elapsed(started) }, 'upgrade accepted');
      this.emit('accepted', req, outcome.identity);
      socket.off('error', onSocketError);
      return { ok: true, identity: outcome.identity, route, requestId };
    } catch (thrown) {
      if (thrown instanceof ClientGone) {
        this.log.info({ ...log, authenticator, status: null, reason: 'client closed', durationMs: elapsed(started) }, 'upgrade abandoned');
        socket.destroy();
        return { ok: false, status: 0, reason: 'client closed' };
      }
      const err = thrown instanceof GatewayError ? thrown : new GatewayError('GW_ERR_INTERNAL', 'unexpected error', {}, { cause: thrown });
      authenticator ??= err.authenticator ?? null;
      const cause = err.cause instanceof Error ? { message: err.cause.message, name: err.cause.name } : undefined;
      const level = err.status >= 500 ? 'warn' : 'info';
      this.log[level]({ ...log, authenticator, status: err.status, code: err.code, reason: err.message, cause, durationMs: elapsed(started) }, 'upgrade rejected');
      writeRejection(socket, err, requestId);
      this.emit('rejected', req, err.status, err.description, err);
      return { ok: false, status: err.status, reason: err.description };
    } finally {
      socket.off('close', onClose);
      this.#inFlight.delete(ac);
    }
  }

  #checkCapacity(route: CompiledRoute): void {
    if (this.#closing) throw this.#shuttingDown();
    const max = this.config.limits?.maxConnections ?? Infinity;
    if (this.#live.size >= max || (this.#perRoute.get(route) ?? 0) >= route.maxConnections) {
      throw new GatewayError('GW_ERR_CAPACITY', undefined, { 'Retry-After': '1' });
    }
  }

  #shuttingDown(): GatewayError {
    const seconds = Math.max(1, Math.ceil((this.#drainDeadline - Date.now()) / 1000));
    return new GatewayError('GW_ERR_SHUTTING_DOWN', undefined, { 'Retry-After': String(seconds) });
  }

  async #authenticate(route: CompiledRoute, req: IncomingMessage, socket: Duplex, head: Buffer, url: URL, signal: AbortSignal) {
    const outcome =
      route.authenticators.length === 0
        ? { identity: anonymous('public'), authenticator: 'public' }
        : await runChain(route.authenticators, { req, socket, head, url, signal });
    let identity = outcome.identity;
    for (const handler of this.#handlers) {
      if (signal.aborted) break;
      identity = await runUpgradeHandler(handler, req, socket, head, identity);
    }
    return { ...outcome, identity };
  }

  /**
   * Normalises `req.url` and strips what must not travel on: the used credential (per `stripCredentials`), and always every
   * subprotocol entry that carries a token for one of the route's `protocol:` sources.
   */
  #prepare(req: IncomingMessage, url: URL, route: CompiledRoute, credential: FoundCredential | undefined): void {
    // The path that was routed and authorised is the one forwarded (dot segments already resolved).
    req.url = url.pathname + url.search;
    if (credential && (route.stripCredentials || credential.kind === 'protocol')) stripCredential(req, url, credential);
    if (route.protocolPrefixes.length === 0) return;
    for (const entry of offeredProtocols(req)) {
      if (route.protocolPrefixes.some((prefix) => entry.startsWith(prefix) && entry.length > prefix.length)) removeProtocolEntry(req, entry);
      else if (route.markers.includes(entry)) rememberMarker(req, entry);
    }
  }

  #handoff(req: IncomingMessage, socket: Duplex, head: Buffer, route: CompiledRoute, identity: Identity, requestId: string): void {
    this.#track(route, socket);
    if (route.mode === 'local') {
      this.#local ??= new LocalHandoff(1024 * 1024);
      this.#local.accept(req, socket, head, (ws) => {
        this.#expireAt(identity, socket, () => ws.close(1008, 'token expired'), route);
        if (this.listenerCount('connection') === 0) this.log.warn({ reqId: requestId, route: route.path }, 'local connection accepted but nobody listens for "connection"');
        this.emit('connection', ws, req, identity);
      });
      return;
    }
    setUpstreamHeaders(req, requestId, identity, route.identityHeaders);
    // The marker is the gateway's business: the upstream chooses among the rest, and the gateway answers
    // the marker itself when the upstream chooses none.
    const marker = markerOf(req);
    if (marker !== undefined) removeProtocolEntry(req, marker);
    this.#proxy ??= new UpstreamProxy();
    const target = route.upstream!;
    this.#proxy.forward(req, socket, head, {
      target,
      timeoutMs: this.#handshakeTimeoutMs,
      tlsVerify: route.tlsVerify,
      ca: route.ca,
      marker,
      onOpen: (upstream: Socket) => {
        this.#expireAt(identity, socket, () => {
          socket.destroy();
          upstream.destroy();
        }, route);
      },
      onError: (err, answered) => {
        const fields = { reqId: requestId, route: route.path, target: new URL(target).host, err: { message: err.message, code: (err as NodeJS.ErrnoException).code } };
        if (answered) {
          this.log.debug(fields, 'upstream connection ended with an error');
          socket.destroy();
          return;
        }
        if (socket.destroyed || !socket.writable) {
          this.log.info({ ...fields, status: null, reason: 'client closed' }, 'upgrade abandoned');
          return;
        }
        this.log.warn({ ...fields, status: 502 }, 'upstream unavailable');
        const rejection = new GatewayError('GW_ERR_UPSTREAM_UNAVAILABLE');
        writeRejection(socket, rejection, requestId);
        this.emit('rejected', req, 502, rejection.description, rejection);
      },
    });
  }

  #track(route: CompiledRoute, socket: Duplex): void {
    this.#live.add(socket);
    this.#perRoute.set(route, (this.#perRoute.get(route) ?? 0) + 1);
    socket.once('close', () => {
      this.#live.delete(socket);
      this.#perRoute.set(route, (this.#perRoute.get(route) ?? 1) - 1);
      if (this.#live.size === 0) this.#onIdle?.();
    });
  }

  /** Ends a live connection when its identity expires (`enforceExpiry`), with one timer per connection. */
  #expireAt(identity: Identity, socket: Duplex, end: () => void, route: CompiledRoute): void {
    if (!route.enforceExpiry || identity.expiresAt === undefined) return;
    const grace = this.#authenticators.get(identity.authenticator)?.clockToleranceSec ?? 0;
    const ms = (identity.expiresAt + grace) * 1000 - Date.now();
    if (ms > MAX_TIMER_MS) return;
    const timer = setTimeout(() => {
      this.log.info({ route: route.path, subject: identity.subject }, 'connection closed: identity expired');
      end();
    }, Math.max(0, ms));
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
  }
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
