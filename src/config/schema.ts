import { z } from 'zod';

// A number or boolean field may hold a whole `${NAME}` reference; after expansion it is converted.
const NUMERIC = /^-?\d+(\.\d+)?$|^\$\{[^}]+\}$/;
const BOOLEAN = /^(true|false)$|^\$\{[^}]+\}$/;

const num = (check: (n: z.ZodNumber) => z.ZodNumber = (n) => n) =>
  z
    .union([check(z.number()), z.string().regex(NUMERIC, 'expected a number')])
    .transform(Number)
    .pipe(check(z.number()));
const int = (min = 0) => num((n) => n.int('expected an integer').min(min, `must be at least ${min}`));
const bool = () =>
  z.union([z.boolean(), z.string().regex(BOOLEAN, 'expected true or false')]).transform((v) => v === true || v === 'true');
const str = () => z.string().min(1, 'must not be empty');
/**
 * A URL of one of the schemes `pattern` allows that also parses (`ws://[` or a port of 99999 pass a
 * pattern, then fail at `new URL` when the gateway starts or connects). The pattern stays for the JSON
 * Schema. The parse check runs only when the pattern held, so a value gets one problem (not `abort`: an
 * aborted string would turn the `upstream` union's message into a bare "Invalid input").
 */
const url = (pattern: RegExp, message: string) =>
  z.string().regex(pattern, message).refine((v) => URL.canParse(v), { message, when: (payload) => payload.issues.length === 0 });
const wsUrl = () => url(/^wss?:\/\/[^\s/]+/i, 'expected a ws:// or wss:// URL');
const httpUrl = () => url(/^https?:\/\/[^\s/]+/i, 'expected an http:// or https:// URL');

/** Where a token-bearing authenticator finds its credential (SPEC 2.1). */
export const SourceSchema = z
  .string()
  .regex(/^(bearer|(query|header|cookie|protocol):.+)$/, 'expected bearer, query:NAME, header:NAME, cookie:NAME or protocol:PREFIX');
const from = () => z.array(SourceSchema).min(1, 'must list at least one source');

const ApiKeyEntry = z.union([
  z.strictObject({
    sha256: z.string().regex(/^[0-9a-fA-F]{64}$/, 'expected 64 hex characters'),
    subject: str(),
    claims: z.record(z.string(), z.unknown()).optional(),
  }),
  z.strictObject({ file: str() }),
]);

const JwtAuth = z.strictObject({
  type: z.literal('jwt'),
  from: from().describe("Where the token is read: bearer, query:NAME, header:NAME, cookie:NAME or protocol:PREFIX."),
  secret: str().optional().describe("HS* secret (at least 32 bytes), or file:PATH."),
  publicKey: str().optional().describe("PEM public key (RS*, PS*, ES*, EdDSA), or file:PATH."),
  jwksUri: httpUrl().optional().describe("JWKS endpoint; keys are cached and refetched at most once per jwksCooldownSec for an unknown kid."),
  jwksCooldownSec: int(0).optional().describe("Least seconds between two JWKS refetches for unknown kids (default 30)."),
  algorithms: z.array(z.enum(['HS256', 'HS384', 'HS512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'], 'unsupported algorithm')).min(1, 'must list at least one algorithm').describe("Accepted algorithms; anything else (and alg none) is 401."),
  issuer: z.union([str(), z.array(str())]).optional().describe("Required iss (one of)."),
  audience: z.union([str(), z.array(str())]).optional().describe("Required aud (one of)."),
  clockToleranceSec: int(0).optional().describe("Leeway for exp and nbf, also applied to live-connection expiry (default 0)."),
  maxAgeSec: int(1).optional().describe("Refuse tokens whose iat is older than this."),
  requiredClaims: z.array(str()).optional().describe("Claims the token must carry."),
});

const ApiKeyAuth = z.strictObject({
  type: z.literal('apiKey'),
  from: from().describe("Where the key is read (e.g. header:x-api-key)."),
  keys: z.array(ApiKeyEntry).min(1, 'must list at least one key').describe("Accepted keys, as { sha256, subject, claims } or { file } (one \"sha256 subject\" per line)."),
});

const SessionAuth = z.strictObject({
  type: z.literal('session'),
  cookie: str().optional().describe("Session cookie name (default connect.sid)."),
  secrets: z.array(str()).min(1, 'must list at least one secret').describe("express-session secrets; the first signs, all verify (rotation)."),
  store: z
    .union([
      z.strictObject({ type: z.literal('memory') }),
      z.strictObject({ type: z.literal('redis'), prefix: z.string().optional() }),
    ])
    .optional()
    .describe("memory (default: one process, tests) or redis (the connect-redis layout under prefix, default sess:; needs redis.url)."),
  subjectPath: str().describe("Dotted path of the subject in the session (e.g. passport.user); without it the session is not logged in."),
});

const IntrospectionAuth = z.strictObject({
  type: z.literal('introspection'),
  from: from().describe("Where the token is read."),
  url: httpUrl().describe("RFC 7662 introspection endpoint."),
  clientId: str().optional().describe("Client credentials for the endpoint (HTTP Basic)."),
  clientSecret: str().optional().describe("Client credentials for the endpoint (HTTP Basic)."),
  cacheTtlSec: int(0).optional().describe("Cache answers (active and inactive) this long, never past the token exp (default 30)."),
  timeoutMs: int(1).optional().describe("Endpoint timeout; exceeded is 503 (default 2000)."),
});

const ForwardAuth = z.strictObject({
  type: z.literal('forwardAuth'),
  url: httpUrl().describe("Auth service asked with GET and the original headers plus X-Forwarded-*; 2xx accepts, 401/403 pass through, anything else is 503."),
  copyHeaders: z.array(str()).optional().describe("Headers of the 2xx answer sent upstream (e.g. X-Auth-Request-User)."),
  timeoutMs: int(1).optional().describe("Auth service timeout; exceeded is 503 (default 2000)."),
});

const ModuleAuth = z.strictObject({ type: z.literal('module'), path: str() });
const TicketAuth = z.strictObject({ type: z.literal('ticket'), from: from().optional() });

/** One entry of `authenticators`, discriminated by `type`. */
export const AuthenticatorSchema = z.discriminatedUnion(
  'type',
  [JwtAuth, ApiKeyAuth, SessionAuth, IntrospectionAuth, ForwardAuth, ModuleAuth, TicketAuth],
  { error: 'type must be one of jwt, apiKey, session, introspection, forwardAuth, module, ticket' },
);

const rate = () => z.string().regex(/^\d+(\.\d+)?\/(s|m|h)$/, 'expected a rate like 20/s, 100/m or 1000/h');

/** One entry of `routes` (SPEC 2.3). */
export const RouteSchema = z.strictObject({
  path: z.string().regex(/^\/\S*$/, 'expected a path starting with /').describe("Exact path, or a prefix when it ends in /*."),
  host: str().optional().describe("Only for this Host (compared without the port)."),
  auth: z.array(str()).describe("Authenticator names, any-of in order; [] is a public route."),
  upstream: z.union([wsUrl(), z.array(wsUrl()).min(1, 'must list at least one upstream')]).optional().describe("ws:// or wss:// URL, or a list of them (balanced). Absent: mode local."),
  balance: z.enum(['round-robin', 'least-connections']).optional().describe("round-robin (default) or least-connections over the healthy targets."),
  ejectMs: int(0).optional().describe("A target that failed to connect is skipped this long (default 10000)."),
  tlsVerify: bool().optional().describe("Verify wss:// upstream certificates (default true)."),
  ca: str().optional().describe("CA for wss:// upstreams (PEM or file:PATH)."),
  mode: z.enum(['pipe', 'relay', 'local']).optional().describe("pipe (default with an upstream), relay (the gateway terminates the WebSocket) or local (embedded: the connection event)."),
  origins: z.union([z.literal('*'), z.array(str())]).optional().describe("Allowed Origin values: exact scheme://host[:port] or *.example.com; \"*\" for any. Required with cookie credentials."),
  require: z.record(z.string(), z.union([z.string(), z.array(z.string()).min(1)])).optional().describe("Claims the identity must carry: { \"scope\": \"chat\" }, { \"role\": [\"admin\", \"ops\"] } (any of); else 403."),
  forwardIdentity: z.strictObject({ subject: str().optional(), claims: str().optional() }).optional().describe("Identity header names sent upstream (default x-auth-subject, x-auth-claims)."),
  stripCredentials: bool().optional().describe("Do not forward the credential that was used (default true)."),
  rateLimit: z.strictObject({ perIp: rate().optional(), perSubject: rate().optional(), burst: int(1).optional() }).optional().describe("Handshakes per token bucket: perIp, perSubject (\"20/s\", \"100/m\", \"1000/h\"), burst; empty is 429. With redis, shared by replicas."),
  maxConnections: int(1).optional().describe("Live connections on this route; 503 above."),
  maxConnectionsPerSubject: int(1).optional().describe("Live connections per subject on this route; 429 above. With redis, across replicas."),
  maxConnectionsPerIp: int(1).optional().describe("Live connections per client IP on this route; 429 above. With redis, across replicas."),
  enforceExpiry: bool().optional().describe("Close a live connection when its identity expires (default true)."),
  heartbeatMs: int(0).optional().describe("relay/local: ping every N ms, terminate without a pong (default 30000, 0 off)."),
  maxPayload: int(1).optional().describe("relay/local: largest message in bytes (default 1 MiB); bigger closes 1009."),
  http: bool().optional().describe("Also proxy plain HTTP requests on this path after the same checks (Socket.IO polling)."),
  sticky: z.union([bool(), z.strictObject({ secret: str() })]).optional().describe("Keep a client on the upstream it first got (signed cookie portcullis_upstream)."),
  firstMessageAuth: z.strictObject({ timeoutMs: int(1).optional() }).optional().describe("relay: the credential comes in the first message {\"type\":\"auth\",\"token\":\"...\"} within timeoutMs."),
  refresh: z.strictObject({ graceSec: int(0).optional() }).optional().describe("relay: clients may send {\"type\":\"refresh\",\"token\":\"...\"} before exp; none by exp + graceSec closes 4401."),
  revalidateSec: int(1).optional().describe("Re-check a session or introspection identity every N seconds while connected."),
  rejectMode: z.enum(['http', 'close']).optional().describe("http (default) or close: complete the upgrade and close with 4400/4401/4403/4429/1013 (readable by browsers)."),
  assertion: z.strictObject({ header: str().optional(), key: str(), ttlSec: int(1).optional() }).optional().describe("Also send the identity upstream as a short-lived JWT signed by the gateway: { header, key, ttlSec }."),
});

/** The whole `gateway.config.json` (SPEC 2). */
export const ConfigSchema = z.strictObject({
  $schema: z.string().optional().describe("Path or URL of gateway.schema.json, for editors."),
  listen: z
    .strictObject({
      host: str().optional(),
      port: int(0),
      tls: z.strictObject({ cert: str(), key: str() }).optional(),
    })
    .optional()
    .describe("The main listener (sidecar): host (default 0.0.0.0), port, tls { cert, key } for wss://."),
  admin: z.strictObject({ host: str().optional(), port: int(0), token: str() }).optional().describe("Admin listener: /healthz, /readyz, /metrics, /connections, /revoke; token (Bearer) required. Default host 127.0.0.1."),
  workers: int(1).optional().describe("Processes sharing the port (node:cluster); the admin port is served by the primary. Default 1."),
  log: z.strictObject({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).optional() }).optional().describe("pino JSON lines on stdout; level (default info)."),
  limits: z
    .strictObject({
      maxConnections: int(1).optional(),
      handshakeTimeoutMs: int(1).optional(),
      maxHeaderBytes: int(1024).optional(),
    })
    .optional()
    .describe("maxConnections (whole gateway, 503 above), handshakeTimeoutMs (default 5000), maxHeaderBytes (default 16384, 431 above)."),
  drain: z.strictObject({ timeoutMs: int(0).optional(), spreadMs: int(0).optional() }).optional().describe("On SIGTERM: close 1001 spread over spreadMs (default 0), destroy what is left after timeoutMs (default 30000)."),
  redis: z
    .strictObject({
      url: url(/^rediss?:\/\//, 'expected a redis:// or rediss:// URL'),
      replicaTtlSec: int(2)
        .optional()
        .describe('Seconds the connections of a replica that stopped without closing (killed, cut off) still count (default 15).'),
    })
    .optional()
    .describe('Shared state across replicas: tickets, revocations, rate-limit buckets, connection counts, sessions.'),
  tickets: z.strictObject({ path: z.string().regex(/^\//, 'expected a path starting with /'), ttlSec: int(1).optional() }).optional().describe("One-time tickets: POST path issues { ticket, expiresIn } valid once for ttlSec (default 30)."),
  watch: bool().optional().describe("Reload when the file changes (as SIGHUP does)."),
  authenticators: z.record(z.string().regex(/^[A-Za-z0-9_.-]+$/, 'names use letters, digits, _ . -'), AuthenticatorSchema).optional().describe("Named authenticators that routes refer to."),
  routes: z.array(RouteSchema).min(1, 'must list at least one route').describe("Matched in order; the first match wins."),
});

/** The config file as written (before defaults and type conversion). */
export type ConfigInput = z.input<typeof ConfigSchema>;
/** The config after validation: numbers and booleans converted. */
export type GatewayConfig = z.output<typeof ConfigSchema>;
export type RouteConfig = z.output<typeof RouteSchema>;
export type AuthenticatorConfig = z.output<typeof AuthenticatorSchema>;
export type JwtConfig = z.output<typeof JwtAuth>;
export type ApiKeyConfig = z.output<typeof ApiKeyAuth>;
export type SessionConfig = z.output<typeof SessionAuth>;
export type ModuleConfig = z.output<typeof ModuleAuth>;

/** The JSON Schema shipped as `gateway.schema.json`. */
export function configJsonSchema(): Record<string, unknown> {
  return {
    ...z.toJSONSchema(ConfigSchema, { io: 'input', unrepresentable: 'any' }),
    $id: 'https://portcullis.dev/gateway.schema.json',
    title: 'portcullis gateway.config.json',
  };
}
