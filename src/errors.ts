/**
 * Every way a handshake can be refused, as one table: stable code → HTTP status, the body's `error`
 * word and the fixed `error_description`. The description is chosen here, never built from input.
 */
export const REJECTIONS = {
  GW_ERR_BAD_UPGRADE: [400, 'bad_request', 'malformed websocket upgrade'],
  GW_ERR_URI_TOO_LONG: [414, 'bad_request', 'request uri too long'],
  GW_ERR_HEADERS_TOO_LARGE: [431, 'bad_request', 'request headers too large'],
  GW_ERR_REQUEST_TIMEOUT: [408, 'bad_request', 'request head not received in time'],
  GW_ERR_UPGRADE_REQUIRED: [426, 'bad_request', 'websocket upgrade required'],
  GW_ERR_METHOD_NOT_ALLOWED: [405, 'bad_request', 'method not allowed'],
  GW_ERR_ROUTE_NOT_FOUND: [404, 'not_found', 'no route for this path'],
  GW_ERR_CAPACITY: [503, 'unavailable', 'connection limit reached'],
  GW_ERR_SHUTTING_DOWN: [503, 'unavailable', 'gateway is shutting down'],
  GW_ERR_ORIGIN_NOT_ALLOWED: [403, 'forbidden', 'origin not allowed'],
  GW_ERR_RATE_LIMITED: [429, 'rate_limited', 'too many handshakes'],
  GW_ERR_TOO_MANY_CONNECTIONS: [429, 'rate_limited', 'too many connections'],
  GW_ERR_CREDENTIALS_MISSING: [401, 'unauthorized', 'credentials required'],
  GW_ERR_TOKEN_INVALID: [401, 'invalid_token', 'token invalid'],
  GW_ERR_TOKEN_MALFORMED: [401, 'invalid_token', 'token malformed'],
  GW_ERR_TOKEN_TOO_LARGE: [401, 'invalid_token', 'token too large'],
  GW_ERR_TOKEN_EXPIRED: [401, 'invalid_token', 'token expired'],
  GW_ERR_TOKEN_REVOKED: [401, 'invalid_token', 'token revoked'],
  GW_ERR_TICKET_INVALID: [401, 'invalid_token', 'ticket invalid or used'],
  GW_ERR_TOKEN_TOO_OLD: [401, 'invalid_token', 'token too old'],
  GW_ERR_TOKEN_NOT_YET_VALID: [401, 'invalid_token', 'token not yet valid'],
  GW_ERR_SIGNATURE_INVALID: [401, 'invalid_token', 'signature invalid'],
  GW_ERR_ALGORITHM_NOT_ALLOWED: [401, 'invalid_token', 'algorithm not allowed'],
  GW_ERR_KEY_UNKNOWN: [401, 'invalid_token', 'signing key unknown'],
  GW_ERR_ISSUER_INVALID: [401, 'invalid_token', 'issuer invalid'],
  GW_ERR_AUDIENCE_INVALID: [401, 'invalid_token', 'audience invalid'],
  GW_ERR_CLAIM_MISSING: [401, 'invalid_token', 'required claim missing'],
  GW_ERR_API_KEY_INVALID: [401, 'invalid_token', 'api key invalid'],
  GW_ERR_SESSION_INVALID: [401, 'invalid_token', 'session cookie invalid'],
  GW_ERR_SESSION_NOT_FOUND: [401, 'invalid_token', 'session not found'],
  GW_ERR_SESSION_EXPIRED: [401, 'invalid_token', 'session expired'],
  GW_ERR_SESSION_ANONYMOUS: [401, 'invalid_token', 'session not logged in'],
  GW_ERR_TOKEN_INACTIVE: [401, 'invalid_token', 'token inactive'],
  GW_ERR_FORWARD_AUTH_DENIED: [401, 'invalid_token', 'rejected by auth service'],
  GW_ERR_FORWARD_AUTH_FORBIDDEN: [403, 'forbidden', 'forbidden by auth service'],
  GW_ERR_HANDLER_REJECTED: [401, 'unauthorized', 'rejected by upgrade handler'],
  GW_ERR_INSUFFICIENT_SCOPE: [403, 'insufficient_scope', 'required claims missing'],
  GW_ERR_AUTH_TIMEOUT: [503, 'unavailable', 'authentication timed out'],
  GW_ERR_AUTH_UNAVAILABLE: [503, 'unavailable', 'authentication backend unavailable'],
  GW_ERR_INTERNAL: [500, 'internal_error', 'internal error'],
  GW_ERR_UPSTREAM_UNAVAILABLE: [502, 'bad_gateway', 'upstream unavailable'],
} as const satisfies Record<string, readonly [number, string, string]>;

/**
 * Runs `fn` with stack capture off: for libraries that throw errors used only as values (jsonwebtoken
 * builds one per refused token, and its stack costs more than the verification).
 */
export function withoutStacks<T>(fn: () => T): T {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return fn();
  } finally {
    Error.stackTraceLimit = limit;
  }
}

/** A stable, documented rejection code (`GW_ERR_<NOUN>_<PROBLEM>`). */
export type ErrorCode = keyof typeof REJECTIONS;

/** A refused handshake: everything `writeRejection` needs to answer on the raw socket. */
export class GatewayError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  /** The body's `error` word (an RFC 6750 code when there is one). */
  readonly error: string;
  /** The body's `error_description`: fixed text, safe to send. */
  readonly description: string;
  /** Extra response headers (`Retry-After`, a passed-through `WWW-Authenticate`). */
  readonly headers: Readonly<Record<string, string>>;
  /** The authenticator that decided, when one did (for the log line). */
  authenticator?: string;

  /**
   * @param code which rejection
   * @param detail for logs only; never sent to the client
   * @param headers extra response headers
   */
  constructor(code: ErrorCode, detail?: string, headers: Record<string, string> = {}, options?: ErrorOptions) {
    const [status, error, description] = REJECTIONS[code];
    // A refusal is a value, never debugged by its stack (the cause keeps any real error's own): not
    // capturing one is a tenth of a refused handshake's cost (bench/RESULTS.md).
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(detail ?? description, options);
    Error.stackTraceLimit = limit;
    this.name = 'GatewayError';
    this.code = code;
    this.status = status;
    this.error = error;
    this.description = description;
    this.headers = headers;
  }
}

/** The config is invalid; `problems` holds every `path.to.field: message` line. */
export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super(`invalid configuration:\n  ${problems.join('\n  ')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}
