import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Gateway } from './gateway.js';
import type { ConnectionView } from './connections.js';
import type { RevocationTarget } from './revocations.js';

function send(res: ServerResponse, status: number, body: object, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-store', ...headers });
  res.end(text);
}

const MAX_BODY = 4096;

/** Reads a small JSON body; rejects anything larger than 4 KiB or not JSON. */
function readJson(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        // Stop keeping it but drain it, so the 400 can still be written on this connection.
        req.removeAllListeners('data');
        req.resume();
        reject(new Error('body too large'));
      } else chunks.push(chunk);
    });
    req.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch (err) {
        reject(err);
      }
    });
    req.on('error', reject);
  });
}

/** The one revocation target a body (or a message) names, or undefined. */
export function revocationTarget(body: unknown): RevocationTarget | undefined {
  if (body === null || typeof body !== 'object') return undefined;
  const entries = Object.entries(body).filter(([key]) => key === 'subject' || key === 'jti' || key === 'sessionId');
  if (entries.length !== 1 || Object.keys(body).length !== 1) return undefined;
  const [[key, value]] = entries as [[string, unknown]];
  return typeof value === 'string' && value.length > 0 && value.length <= 1024 ? ({ [key]: value } as RevocationTarget) : undefined;
}

/** Compares a presented bearer token with the admin token in constant time (hashes equalise lengths). */
export function adminTokenMatches(header: string | undefined, token: string): boolean {
  const match = /^bearer[ \t]+(\S+)$/i.exec(header ?? '');
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return match !== null && timingSafeEqual(digest(match[1]!), digest(token));
}

/**
 * What the admin endpoints read and act on: the gateway of a single process, or the cluster primary,
 * which asks its workers. Each method may answer at once or with a promise.
 */
export interface AdminTarget {
  /** The bearer token `/connections` and `/revoke` require (`admin.token`). */
  readonly token: string;
  /** True once stopping began: `/readyz` then answers 503 `draining`. */
  readonly draining: boolean;
  /** `/readyz`: listening, not draining, Redis reachable when configured. */
  isReady(): boolean | Promise<boolean>;
  /** `GET /connections`. */
  listConnections(): ConnectionView[] | Promise<ConnectionView[]>;
  /** `POST /revoke`: applies the revocation; resolves how many live connections were closed. */
  revoke(target: RevocationTarget): number | Promise<number>;
  /** `GET /metrics`: the Prometheus text format. */
  metrics(): Promise<string>;
}

/** The admin target of a single-process gateway; `isListening` tells whether its listener is up. */
export function gatewayAdminTarget(gateway: Gateway, isListening: () => boolean): AdminTarget {
  return {
    token: gateway.config.admin?.token ?? '',
    get draining() {
      return gateway.draining;
    },
    isReady: () => isListening() && !gateway.draining && gateway.redisReady,
    listConnections: () => gateway.listConnections(),
    revoke: (target) => gateway.revoke(target),
    metrics: () => gateway.metrics.text(),
  };
}

/** The Prometheus text exposition format (what prom-client writes). */
const PROMETHEUS_TEXT = 'text/plain; version=0.0.4; charset=utf-8';

const INTERNAL = { error: 'internal_error', error_description: 'the admin request failed' };

/**
 * The admin listener: `/healthz` (the process runs) and `/readyz` (listening, not draining, Redis
 * reachable when configured) need no token; every other path needs `Authorization: Bearer <admin.token>`.
 * Give it an {@link AdminTarget}, or a gateway and whether its listener is up.
 */
export function createAdminServer(target: AdminTarget): Server;
export function createAdminServer(gateway: Gateway, isListening: () => boolean): Server;
export function createAdminServer(source: AdminTarget | Gateway, isListening?: () => boolean): Server {
  const target = isListening ? gatewayAdminTarget(source as Gateway, isListening) : (source as AdminTarget);
  const token = target.token;
  return createServer(function onAdminRequest(req: IncomingMessage, res: ServerResponse) {
    const path = (req.url ?? '/').split('?', 1)[0];
    if (path === '/healthz') return send(res, 200, { status: 'ok' });
    if (path === '/readyz') {
      return void answer(res, target.isReady(), (ready) => {
        send(res, ready ? 200 : 503, { status: ready ? 'ready' : target.draining ? 'draining' : 'not ready' });
      });
    }
    if (!adminTokenMatches(req.headers.authorization, token)) {
      return send(res, 401, { error: 'unauthorized', error_description: 'admin token required' }, { 'WWW-Authenticate': 'Bearer realm="portcullis-admin"' });
    }
    if (path === '/metrics' && req.method === 'GET') {
      return void answer(res, target.metrics(), (text) => {
        res.writeHead(200, { 'Content-Type': PROMETHEUS_TEXT, 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-store' });
        res.end(text);
      });
    }
    if (path === '/connections' && req.method === 'GET') return void answer(res, target.listConnections(), (list) => send(res, 200, list));
    if (path === '/revoke') {
      if (req.method !== 'POST') return send(res, 405, { error: 'method_not_allowed', error_description: 'use POST' }, { Allow: 'POST' });
      return void readJson(req).then(
        (body) => {
          const revoked = revocationTarget(body);
          if (!revoked) return send(res, 400, { error: 'bad_request', error_description: 'expected { "subject" | "jti" | "sessionId": "<string>" }' });
          answer(res, target.revoke(revoked), (closed) => send(res, 200, { revoked, closed }));
        },
        () => send(res, 400, { error: 'bad_request', error_description: 'expected a JSON body of at most 4 KiB' }),
      );
    }
    send(res, 404, { error: 'not_found', error_description: 'no such admin endpoint' });
  });
}

/** Answers with `value` once it settles (a plain value at once); a failure is a 500, never a crash. */
function answer<T>(res: ServerResponse, value: T | Promise<T>, reply: (value: T) => void): void {
  if (!(value instanceof Promise)) return reply(value);
  value.then(reply, () => {
    if (!res.headersSent) send(res, 500, INTERNAL);
  });
}
