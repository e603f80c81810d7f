import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Gateway } from './gateway.js';

function send(res: ServerResponse, status: number, body: Record<string, unknown>, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-store', ...headers });
  res.end(text);
}

/** Compares a presented bearer token with the admin token in constant time (hashes equalise lengths). */
export function adminTokenMatches(header: string | undefined, token: string): boolean {
  const match = /^bearer[ \t]+(\S+)$/i.exec(header ?? '');
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return match !== null && timingSafeEqual(digest(match[1]!), digest(token));
}

/**
 * The admin listener: `/healthz` (the process runs) and `/readyz` (listening, not draining, Redis
 * reachable when configured) need no token; every other path needs `Authorization: Bearer <admin.token>`.
 */
export function createAdminServer(gateway: Gateway, isListening: () => boolean): Server {
  const token = gateway.config.admin?.token ?? '';
  return createServer(function onAdminRequest(req: IncomingMessage, res: ServerResponse) {
    const path = (req.url ?? '/').split('?', 1)[0];
    if (path === '/healthz') return send(res, 200, { status: 'ok' });
    if (path === '/readyz') {
      const ready = isListening() && !gateway.draining && gateway.redisReady;
      return send(res, ready ? 200 : 503, { status: ready ? 'ready' : gateway.draining ? 'draining' : 'not ready' });
    }
    if (!adminTokenMatches(req.headers.authorization, token)) {
      return send(res, 401, { error: 'unauthorized', error_description: 'admin token required' }, { 'WWW-Authenticate': 'Bearer realm="portcullis-admin"' });
    }
    send(res, 404, { error: 'not_found', error_description: 'no such admin endpoint' });
  });
}
