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
const wsUrl = () => z.string().regex(/^wss?:\/\/[^\s/]+/i, 'expected a ws:// or wss:// URL');
const httpUrl = () => z.string().regex(/^https?:\/\/[^\s/]+/i, 'expected an http:// or https:// URL');

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
  from: from(),
  secret: str().optional(),
  publicKey: str().optional(),
  jwksUri: httpUrl().optional(),
  jwksCooldownSec: int(0).optional(),
  algorithms: z.array(z.enum(['HS256', 'HS384', 'HS512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'], 'unsupported algorithm')).min(1, 'must list at least one algorithm'),
  issuer: z.union([str(), z.array(str())]).optional(),
  audience: z.union([str(), z.array(str())]).optional(),
  clockToleranceSec: int(0).optional(),
  maxAgeSec: int(1).optional(),
  requiredClaims: z.array(str()).optional(),
});

const ApiKeyAuth = z.strictObject({
  type: z.literal('apiKey'),
  from: from(),
  keys: z.array(ApiKeyEntry).min(1, 'must list at least one key'),
});

const SessionAuth = z.strictObject({
  type: z.literal('session'),
  cookie: str().optional(),
  secrets: z.array(str()).min(1, 'must list at least one secret'),
  store: z
    .union([
      z.strictObject({ type: z.literal('memory') }),
      z.strictObject({ type: z.literal('redis'), prefix: z.string().optional() }),
    ])
    .optional(),
  subjectPath: str(),
});

const IntrospectionAuth = z.strictObject({
  type: z.literal('introspection'),
  from: from(),
  url: httpUrl(),
  clientId: str().optional(),
  clientSecret: str().optional(),
  cacheTtlSec: int(0).optional(),
  timeoutMs: int(1).optional(),
});

const ForwardAuth = z.strictObject({
  type: z.literal('forwardAuth'),
  url: httpUrl(),
  copyHeaders: z.array(str()).optional(),
  timeoutMs: int(1).optional(),
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
  path: z.string().regex(/^\/\S*$/, 'expected a path starting with /'),
  host: str().optional(),
  auth: z.array(str()),
  upstream: z.union([wsUrl(), z.array(wsUrl()).min(1, 'must list at least one upstream')]).optional(),
  balance: z.enum(['round-robin', 'least-connections']).optional(),
  ejectMs: int(0).optional(),
  tlsVerify: bool().optional(),
  ca: str().optional(),
  mode: z.enum(['pipe', 'relay', 'local']).optional(),
  origins: z.union([z.literal('*'), z.array(str())]).optional(),
  require: z.record(z.string(), z.union([z.string(), z.array(z.string()).min(1)])).optional(),
  forwardIdentity: z.strictObject({ subject: str().optional(), claims: str().optional() }).optional(),
  stripCredentials: bool().optional(),
  rateLimit: z.strictObject({ perIp: rate().optional(), perSubject: rate().optional(), burst: int(1).optional() }).optional(),
  maxConnections: int(1).optional(),
  maxConnectionsPerSubject: int(1).optional(),
  maxConnectionsPerIp: int(1).optional(),
  enforceExpiry: bool().optional(),
  heartbeatMs: int(0).optional(),
  maxPayload: int(1).optional(),
  http: bool().optional(),
  sticky: z.union([bool(), z.strictObject({ secret: str() })]).optional(),
  firstMessageAuth: z.strictObject({ timeoutMs: int(1).optional() }).optional(),
  refresh: z.strictObject({ graceSec: int(0).optional() }).optional(),
  revalidateSec: int(1).optional(),
  rejectMode: z.enum(['http', 'close']).optional(),
  assertion: z.strictObject({ header: str().optional(), key: str(), ttlSec: int(1).optional() }).optional(),
});

/** The whole `gateway.config.json` (SPEC 2). */
export const ConfigSchema = z.strictObject({
  $schema: z.string().optional(),
  listen: z
    .strictObject({
      host: str().optional(),
      port: int(0),
      tls: z.strictObject({ cert: str(), key: str() }).optional(),
    })
    .optional(),
  admin: z.strictObject({ host: str().optional(), port: int(0), token: str() }).optional(),
  workers: int(1).optional(),
  log: z.strictObject({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).optional() }).optional(),
  limits: z
    .strictObject({
      maxConnections: int(1).optional(),
      handshakeTimeoutMs: int(1).optional(),
      maxHeaderBytes: int(1024).optional(),
    })
    .optional(),
  drain: z.strictObject({ timeoutMs: int(0).optional(), spreadMs: int(0).optional() }).optional(),
  redis: z
    .strictObject({
      url: z.string().regex(/^rediss?:\/\//, 'expected a redis:// or rediss:// URL'),
      /** How long the connections of a replica that stopped without closing (killed, cut off) still count. */
      replicaTtlSec: int(2).optional(),
    })
    .optional(),
  tickets: z.strictObject({ path: z.string().regex(/^\//, 'expected a path starting with /'), ttlSec: int(1).optional() }).optional(),
  watch: bool().optional(),
  authenticators: z.record(z.string().regex(/^[A-Za-z0-9_.-]+$/, 'names use letters, digits, _ . -'), AuthenticatorSchema).optional(),
  routes: z.array(RouteSchema).min(1, 'must list at least one route'),
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
