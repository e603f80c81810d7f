import { createPublicKey } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import type { z } from 'zod';
import { assertionKey } from '../assertion.js';
import { ConfigError } from '../errors.js';
import { expandEnv, formatPath } from './env.js';
import { AuthenticatorSchema, ConfigSchema, RouteSchema, type AuthenticatorConfig, type GatewayConfig, type RouteConfig } from './schema.js';

/** Options for {@link validateConfig}. */
export interface ValidateOptions {
  /** Directory that relative paths resolve against (the config file's). Default: the working directory. */
  baseDir?: string;
  /** Environment for `${NAME}` references. Default: `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** True for the standalone gateway, where `mode: "local"` has no application to hand to. */
  sidecar?: boolean;
}

// SPEC 9: relay-only fields are errors on a pipe route (maxPayload and heartbeatMs also serve local routes).
const RELAY_ONLY = ['firstMessageAuth', 'refresh', 'maxPayload', 'heartbeatMs'] as const;
const MIN_HMAC_BYTES = 32;
/** At most this many problems are listed; a file with more gets one line saying how many were left out. */
export const MAX_PROBLEMS = 100;

/** Reads and parses a config file; a missing file or bad JSON is a ConfigError. */
export function readConfigFile(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError([`(root): cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`]);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    // JSON.parse quotes the text around the error, which may be a secret: report only where it is.
    const position = /position (\d+)/.exec((err as Error).message);
    const where = position ? ` (line ${lineOf(text, Number(position[1]))})` : '';
    throw new ConfigError([`(root): ${file} is not valid JSON${where}`]);
  }
}

function lineOf(text: string, offset: number): number {
  return text.slice(0, offset).split('\n').length;
}

/** Reads, expands, validates and resolves a config file (what `portcullis check` runs). */
export function loadConfigFile(file: string, options: Omit<ValidateOptions, 'baseDir'> = {}): GatewayConfig {
  const path = resolve(file);
  return validateConfig(readConfigFile(path), { ...options, baseDir: dirname(path) });
}

/**
 * Validates a parsed config: `${ENV}` expansion, the schema (unknown fields are errors), then the rules
 * that span fields. Files it names are read now (`file:` keys, API key files), so the result needs no
 * further I/O. Idempotent: a validated config validates to itself.
 * @throws ConfigError listing every problem as `path.to.field: message`
 */
export function validateConfig(input: unknown, options: ValidateOptions = {}): GatewayConfig {
  const baseDir = options.baseDir ?? process.cwd();
  const expanded = expandEnv(input, options.env ?? process.env);
  // Not problems.push(...list): a file of 100 000 unknown fields would spread past the call stack.
  let problems = expanded.problems;
  const parsed = ConfigSchema.safeParse(expanded.value);
  if (!parsed.success) {
    // A field whose ${NAME} was missing already has its problem; the schema's complaint about it is noise.
    const envPaths = new Set(expanded.problems.map((p) => p.slice(0, p.indexOf(':'))));
    const issues = parsed.error.issues.flatMap((issue) => describeIssue(issue, expanded.value));
    problems = problems.concat(issues.filter((line) => !envPaths.has(line.slice(0, line.indexOf(':')))));
  }
  // The rules that span fields run even when the schema failed, over the parts that did parse, so one
  // run of `check` reports every problem.
  const config = parsed.success ? parsed.data : parsedParts(expanded.value);
  const report = (path: PropertyKey[], message: string) => problems.push(`${formatPath(path)}: ${message}`);

  for (const [name, auth] of Object.entries(config.authenticators ?? {})) {
    if (auth) checkAuthenticator(auth, ['authenticators', name], config, baseDir, report);
  }
  const rawAuths = (expanded.value as { authenticators?: unknown } | null)?.authenticators;
  const accepts = (name: string) => acceptsCookie((rawAuths as Record<string, unknown> | undefined)?.[name]);
  config.routes.forEach((route, i) => route && checkRoute(route, ['routes', i], config, accepts, options, report));
  if (options.sidecar && (config.workers ?? 1) > 1) checkWorkers(config, report);
  if (config.listen?.tls) {
    config.listen.tls.cert = readable(baseDir, config.listen.tls.cert, ['listen', 'tls', 'cert'], report);
    config.listen.tls.key = readable(baseDir, config.listen.tls.key, ['listen', 'tls', 'key'], report);
  }
  if (problems.length > MAX_PROBLEMS) problems = [...problems.slice(0, MAX_PROBLEMS), `(root): ${problems.length - MAX_PROBLEMS} more problems not listed`];
  if (problems.length > 0 || !parsed.success) throw new ConfigError(problems);
  return deepFreeze(parsed.data);
}

/** Every top-level field, authenticator and route that parses on its own; the rest left out. */
function parsedParts(value: unknown): GatewayConfig {
  const input = (value !== null && typeof value === 'object' ? value : {}) as Record<string, unknown>;
  const out: Record<string, unknown> = { routes: [] };
  for (const [key, schema] of Object.entries(ConfigSchema.shape)) {
    const result = schema.safeParse(input[key]);
    if (result.success) out[key] = result.data;
  }
  const auths = input.authenticators;
  if (auths !== null && typeof auths === 'object') {
    out.authenticators = Object.fromEntries(
      Object.entries(auths).flatMap(([name, auth]) => {
        const result = AuthenticatorSchema.safeParse(auth);
        // null: present but invalid (already reported), so routes naming it are not told it is unknown.
        return [[name, result.success ? result.data : null]];
      }),
    );
  }
  if (Array.isArray(input.routes)) out.routes = input.routes.map((route) => RouteSchema.safeParse(route).data);
  return out as GatewayConfig;
}

type Report = (path: PropertyKey[], message: string) => void;

function checkAuthenticator(auth: AuthenticatorConfig, path: PropertyKey[], config: GatewayConfig, baseDir: string, report: Report): void {
  switch (auth.type) {
    case 'jwt': {
      const sources = [auth.secret, auth.publicKey, auth.jwksUri].filter((s) => s !== undefined).length;
      if (sources !== 1) report([...path, 'secret'], 'exactly one of secret, publicKey or jwksUri is required');
      const hmac = auth.algorithms.filter((a) => a.startsWith('HS'));
      if (auth.secret !== undefined) {
        if (hmac.length !== auth.algorithms.length) report([...path, 'algorithms'], 'a secret verifies only HS256, HS384 or HS512');
        if (Buffer.byteLength(auth.secret) < MIN_HMAC_BYTES) report([...path, 'secret'], `must be at least ${MIN_HMAC_BYTES} bytes`);
      } else if (hmac.length > 0) {
        report([...path, 'algorithms'], `${hmac.join(', ')} needs a secret, not ${auth.jwksUri !== undefined ? 'a JWKS' : 'a public key'}`);
      }
      if (auth.publicKey !== undefined) auth.publicKey = publicKeyPem(baseDir, auth.publicKey, [...path, 'publicKey'], report);
      return;
    }
    case 'apiKey':
      auth.keys = auth.keys.flatMap((entry, i) =>
        'file' in entry ? apiKeysFromFile(baseDir, entry.file, [...path, 'keys', i, 'file'], report) : [entry],
      );
      return;
    case 'session':
      if (auth.store?.type === 'redis' && !config.redis) report(['redis', 'url'], `required by ${formatPath([...path, 'store'])}`);
      return;
    case 'module':
      auth.path = readable(baseDir, auth.path, [...path, 'path'], report);
      return;
    case 'introspection':
      if (auth.clientSecret !== undefined && auth.clientId === undefined) report([...path, 'clientId'], 'required with clientSecret');
      return;
    case 'forwardAuth':
      return;
    case 'ticket':
      if (!config.tickets) report(['tickets'], `required by ${formatPath(path)} (tickets are issued at tickets.path)`);
      return;
  }
}

/**
 * SPEC 9: without redis, state is per process, and with `workers > 1` per worker: what must be the same
 * for every worker needs redis. Revocations do not: the primary passes each one to every worker. Only the
 * CLI forks workers, so only the sidecar checks this (`createGateway` ignores `workers`).
 */
function checkWorkers(config: GatewayConfig, report: Report): void {
  if (config.tickets && !config.redis) report(['tickets'], 'needs redis when workers > 1: each worker would keep its own tickets');
  for (const [name, auth] of Object.entries(config.authenticators ?? {})) {
    // A memory store is per process even with redis configured: only { "type": "redis" } is shared.
    if (auth?.type === 'session' && auth.store?.type !== 'redis') {
      report(['authenticators', name, 'store'], 'needs { "type": "redis" } when workers > 1: each worker would keep its own sessions');
    }
  }
}

/**
 * Whether an authenticator entry (as written, valid or not) reads a cookie: `session`, `forwardAuth` (it
 * passes the browser's cookies to the auth service, which may well decide by them), or a `cookie:` source.
 */
function acceptsCookie(auth: unknown): boolean {
  if (auth === null || typeof auth !== 'object') return false;
  const { type, from } = auth as { type?: unknown; from?: unknown };
  return type === 'session' || type === 'forwardAuth' || (Array.isArray(from) && from.some((s) => typeof s === 'string' && s.startsWith('cookie:')));
}

function checkRoute(
  route: RouteConfig,
  path: PropertyKey[],
  config: GatewayConfig,
  acceptsCookieByName: (name: string) => boolean,
  options: ValidateOptions,
  report: Report,
): void {
  const mode = route.mode ?? (route.upstream === undefined ? 'local' : 'pipe');
  route.auth.forEach((name, i) => {
    // Own names only: "toString" or "__proto__" must not find Object.prototype's members.
    if (!Object.hasOwn(config.authenticators ?? {}, name)) report([...path, 'auth', i], `unknown authenticator ${JSON.stringify(name)}`);
  });
  const cookie = route.auth.some(acceptsCookieByName);
  if (cookie && route.origins === undefined) {
    report([...path, 'origins'], 'required on a route that accepts a cookie credential (list the allowed origins, or "*")');
  }
  if (mode === 'local') {
    if (route.upstream !== undefined) report([...path, 'upstream'], 'not used with mode "local"');
    if (options.sidecar) report([...path, 'mode'], route.mode ? '"local" needs an embedding application; the sidecar has none' : 'an upstream is required');
  } else if (route.upstream === undefined) {
    report([...path, 'upstream'], `required with mode "${mode}"`);
  }
  if (mode === 'pipe') {
    for (const field of RELAY_ONLY) if (route[field] !== undefined) report([...path, field], 'only for mode "relay"');
  }
  if (mode === 'local') {
    for (const field of ['firstMessageAuth', 'refresh'] as const) if (route[field] !== undefined) report([...path, field], 'only for mode "relay"');
  }
  if (mode === 'relay' && (route.firstMessageAuth || route.refresh)) {
    const tokens = route.auth.some((name) => ['jwt', 'apiKey', 'introspection'].includes(config.authenticators?.[name]?.type ?? ''));
    if (!tokens) report([...path, 'auth'], `${route.firstMessageAuth ? 'firstMessageAuth' : 'refresh'} needs a token authenticator (jwt, apiKey or introspection)`);
  }
  if (mode === 'local') {
    for (const field of ['http', 'sticky'] as const) if (route[field]) report([...path, field], 'needs an upstream');
  }
  if (route.revalidateSec !== undefined && !route.auth.some((name) => ['session', 'introspection'].includes(config.authenticators?.[name]?.type ?? ''))) {
    report([...path, 'revalidateSec'], 'needs a session or introspection authenticator in auth');
  }
  if (route.assertion) route.assertion.key = assertionKeyPem(options.baseDir ?? process.cwd(), route.assertion.key, [...path, 'assertion', 'key'], report);
  if (route.ca !== undefined) route.ca = readable(options.baseDir ?? process.cwd(), route.ca, [...path, 'ca'], report);
  for (const [i, origin] of (Array.isArray(route.origins) ? route.origins : []).entries()) {
    if (!/^(\*\.[^\s/*]+|[a-z][a-z0-9+.-]*:\/\/[^\s/*]+)$/i.test(origin)) {
      report([...path, 'origins', i], 'expected scheme://host[:port] or *.example.com');
    }
  }
}

/**
 * Resolves `file:PATH` (or a plain path) against the config directory and checks that it can be read.
 * The problem names the field, never its value: a key or secret pasted where a path belongs would be
 * printed by `check` and logged on reload.
 */
function readable(baseDir: string, ref: string, path: PropertyKey[], report: Report): string {
  const name = ref.startsWith('file:') ? ref.slice(5) : ref;
  const file = resolve(baseDir, name);
  if (!existsSync(file)) report(path, isAbsolute(name) ? 'file not found' : `file not found (relative paths resolve against ${baseDir})`);
  return file;
}

function publicKeyPem(baseDir: string, value: string, path: PropertyKey[], report: Report): string {
  let pem = value;
  if (value.startsWith('file:')) {
    const file = readable(baseDir, value, path, report);
    try {
      pem = readFileSync(file, 'utf8');
    } catch {
      return value;
    }
  }
  try {
    createPublicKey(pem);
  } catch {
    report(path, 'not a valid PEM public key or certificate');
  }
  return pem;
}

/** An `assertion.key`: a secret (≥ 32 bytes) or an RSA / P-256 private key, inline or `file:`. */
function assertionKeyPem(baseDir: string, value: string, path: PropertyKey[], report: Report): string {
  let key = value;
  if (value.startsWith('file:')) {
    try {
      key = readFileSync(readable(baseDir, value, path, report), 'utf8');
    } catch {
      return value;
    }
  }
  try {
    const { algorithm } = assertionKey(key);
    if (algorithm === 'HS256' && Buffer.byteLength(key) < MIN_HMAC_BYTES) report(path, `a secret must be at least ${MIN_HMAC_BYTES} bytes`);
  } catch {
    report(path, 'not a usable signing key (a secret, or an RSA or P-256 EC private key in PEM)');
  }
  return key;
}

function apiKeysFromFile(baseDir: string, ref: string, path: PropertyKey[], report: Report) {
  const file = readable(baseDir, ref, path, report);
  try {
    const list: unknown = JSON.parse(readFileSync(file, 'utf8'));
    const entries = Array.isArray(list) ? list : [];
    const valid = entries.every((e) => e && typeof e.sha256 === 'string' && /^[0-9a-f]{64}$/i.test(e.sha256) && typeof e.subject === 'string');
    if (!Array.isArray(list) || !valid) report(path, 'expected a JSON list of { "sha256": "<64 hex>", "subject": "..." }');
    return valid ? (entries as { sha256: string; subject: string; claims?: Record<string, unknown> }[]) : [];
  } catch (err) {
    // Not the parser's message: it quotes the start of the file, which may be a raw key.
    // Nor the error's message: an fs error quotes the path, which may be a secret written in the wrong field.
    if (existsSync(file)) report(path, err instanceof SyntaxError ? 'cannot parse: not valid JSON' : `cannot read: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    return [];
  }
}

function describeIssue(issue: z.core.$ZodIssue, input: unknown): string[] {
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => `${formatPath([...issue.path, key])}: unknown field`);
  }
  const message = valueAt(input, issue.path) === undefined ? 'required' : issue.message.replace(/^Invalid input: /, '');
  return [`${formatPath(issue.path)}: ${message}`];
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let node = root;
  for (const key of path) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<PropertyKey, unknown>)[key];
  }
  return node;
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const item of Object.values(value)) deepFreeze(item);
  }
  return value;
}
