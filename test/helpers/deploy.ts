// Checks of the deployment files (Dockerfile, deploy/docker-compose.yml, deploy/k8s/*.yaml) that need no
// Docker engine and no cluster. Each check returns a list of problems rather than asserting, so the
// tests can show that it finds the problem in a broken copy as well as none in the real file.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, posix, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { validate as lintDockerfile } from 'dockerfile-utils';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import ts from 'typescript';
import { parseAllDocuments } from 'yaml';
import { validateConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

// Parsed YAML and JSON: checked field by field at run time.
export type Obj = Record<string, any>;

const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);
const WILDCARD_HOSTS = new Set(['0.0.0.0', '::', '[::]']);
/** The gateway's drain.timeoutMs when the config leaves it out (src/gateway.ts). */
const DEFAULT_DRAIN_TIMEOUT_MS = 30_000;

function parseUrl(text: string): URL | undefined {
  try {
    return new URL(text);
  } catch {
    return undefined;
  }
}

/** The problems `validateConfig` finds, as `path: message` lines (none when the config is valid). */
export function configProblems(config: unknown, env: NodeJS.ProcessEnv, baseDir: string): string[] {
  try {
    validateConfig(config, { env, baseDir, sidecar: true });
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems];
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------------
// Dockerfile

export interface Instruction {
  keyword: string;
  args: string;
  /** 1-based line of the instruction's first line. */
  line: number;
  /** 0-based build stage (the FROM it follows). */
  stage: number;
}

/** The instructions of a Dockerfile: continuation lines joined, comments dropped. */
export function parseDockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  let stage = -1;
  let pending = '';
  let start = 0;
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, i) => {
    const line = raw.trim();
    // Comments and blank lines are dropped, also between the lines of a continued instruction.
    if (line === '' || line.startsWith('#')) return;
    if (pending === '') start = i + 1;
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1).trim()} `;
      return;
    }
    pending += line;
    const [, keyword = '', args = ''] = /^(\S+)\s*([\s\S]*)$/.exec(pending) ?? [];
    if (keyword.toUpperCase() === 'FROM') stage += 1;
    out.push({ keyword: keyword.toUpperCase(), args: args.trim(), line: start, stage });
    pending = '';
  });
  return out;
}

/** The instructions of the last build stage (what the image is). */
function finalStage(instructions: Instruction[]): Instruction[] {
  const last = Math.max(...instructions.map((i) => i.stage));
  return instructions.filter((i) => i.stage === last);
}

/** `ENV` of the final stage, as the image's environment (`KEY=value ...` and the old `KEY value` form). */
export function imageEnv(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const { keyword, args } of finalStage(parseDockerfile(text))) {
    if (keyword !== 'ENV') continue;
    const tokens = args.match(/(?:[^\s"']+|"[^"]*"|'[^']*')+/g) ?? [];
    if (tokens[0] && !tokens[0].includes('=')) {
      env[tokens[0]] = tokens.slice(1).join(' ');
      continue;
    }
    for (const token of tokens) {
      const eq = token.indexOf('=');
      env[token.slice(0, eq)] = token.slice(eq + 1).replace(/^(["'])(.*)\1$/, '$2');
    }
  }
  return env;
}

/** The ports the final stage `EXPOSE`s. */
export function exposedPorts(text: string): number[] {
  return finalStage(parseDockerfile(text))
    .filter((i) => i.keyword === 'EXPOSE')
    .flatMap((i) => i.args.split(/\s+/))
    .map((p) => Number(p.replace(/\/(tcp|udp)$/i, '')));
}

/** The config file the image starts with: `--config` in CMD/ENTRYPOINT, else `$PORTCULLIS_CONFIG`. */
export function imageConfigPath(text: string): string | undefined {
  const exec = finalStage(parseDockerfile(text)).filter((i) => i.keyword === 'ENTRYPOINT' || i.keyword === 'CMD');
  for (const { args } of exec) {
    const argv = jsonArgs(args) ?? [];
    const at = argv.indexOf('--config');
    if (at >= 0) return argv[at + 1];
  }
  return imageEnv(text).PORTCULLIS_CONFIG;
}

/**
 * The admin port the image's HEALTHCHECK asks, with the container's environment `env`: the check reads
 * `process.env.ADMIN_PORT||<default>`.
 */
export function healthcheckPort(text: string, env: Record<string, string | undefined>): number | undefined {
  const check = finalStage(parseDockerfile(text)).find((i) => i.keyword === 'HEALTHCHECK');
  const match = /ADMIN_PORT\s*\|\|\s*(\d+)/.exec(check?.args ?? '');
  if (!match) return undefined;
  return Number(env.ADMIN_PORT || match[1]);
}

function jsonArgs(args: string): string[] | undefined {
  if (!args.startsWith('[')) return undefined;
  try {
    const parsed: unknown = JSON.parse(args);
    return Array.isArray(parsed) && parsed.every((a) => typeof a === 'string') ? parsed : undefined;
  } catch {
    return undefined;
  }
}

/**
 * What the Dockerfile must be: clean for dockerfile-utils (the linter of VS Code's Docker extension), and
 * a multi-stage build whose runtime stage installs production dependencies only, runs as a non-root user,
 * stops on SIGTERM, checks /healthz without tools the image lacks, exposes its ports, runs node as PID 1
 * (exec form, so it gets the SIGTERM itself) and bakes no secret in.
 */
export function dockerfileProblems(text: string): string[] {
  const problems = lintDockerfile(text).map((d) => `lint: line ${d.range.start.line + 1}: ${d.message}`);
  const all = parseDockerfile(text);
  const stages = new Set(all.map((i) => i.stage)).size;
  const runtime = finalStage(all);
  const find = (keyword: string) => runtime.filter((i) => i.keyword === keyword);
  const last = (keyword: string) => find(keyword).at(-1);

  if (stages < 2) problems.push('not a multi-stage build');
  else if (!runtime.some((i) => i.keyword === 'COPY' && /--from=/.test(i.args))) problems.push('the runtime stage copies nothing from the build stage');

  const runs = find('RUN').map((i) => i.args);
  if (!runs.some((r) => /\bnpm ci\b/.test(r) && /--omit=dev\b/.test(r))) problems.push('the runtime stage does not run `npm ci --omit=dev`');
  if (runs.some((r) => /\bnpm (ci|install|i)\b/.test(r) && !/--omit=dev\b/.test(r))) problems.push('the runtime stage installs dev dependencies');

  const user = last('USER')?.args.split(':')[0];
  if (user === undefined) problems.push('no USER in the runtime stage: the container runs as root');
  else if (user === 'root' || user === '0') problems.push(`USER ${user}: the container runs as root`);
  else if (!/^\d+$/.test(user)) problems.push(`USER ${user}: use a numeric uid so Kubernetes' runAsNonRoot can verify it`);

  if (last('STOPSIGNAL')?.args !== 'SIGTERM') problems.push('STOPSIGNAL is not SIGTERM (the signal that drains)');

  const health = last('HEALTHCHECK')?.args;
  if (health === undefined || /^NONE\b/i.test(health)) problems.push('no HEALTHCHECK');
  else {
    if (!health.includes('/healthz')) problems.push('the HEALTHCHECK does not ask /healthz');
    const installed = runs.join(' ');
    for (const tool of ['curl', 'wget']) {
      if (new RegExp(`\\b${tool}\\b`).test(health) && !new RegExp(`install[^&;]*\\b${tool}\\b`).test(installed)) {
        problems.push(`the HEALTHCHECK uses ${tool}, which the image does not have`);
      }
    }
  }

  if (find('EXPOSE').length === 0) problems.push('no EXPOSE');
  const entry = last('ENTRYPOINT') ?? last('CMD');
  if (!entry) problems.push('no ENTRYPOINT or CMD');
  else if (!jsonArgs(entry.args)) problems.push(`${entry.keyword} in shell form: /bin/sh would be PID 1 and not pass SIGTERM on`);

  for (const { keyword, args, line } of runtime) {
    if ((keyword === 'ENV' || keyword === 'ARG') && /\b\w*(SECRET|TOKEN|PASSWORD|PRIVATE_KEY)\w*\s*=/i.test(args)) {
      problems.push(`line ${line}: ${keyword} sets a secret in the image; pass it at run time`);
    }
  }
  return problems;
}

/** `COPY`/`ADD` sources from the build context (not `--from` another stage). */
export function contextSources(text: string): string[] {
  return parseDockerfile(text)
    .filter((i) => (i.keyword === 'COPY' || i.keyword === 'ADD') && !/--from=/.test(i.args))
    .flatMap((i) => (jsonArgs(i.args) ?? i.args.split(/\s+/).filter((a) => !a.startsWith('--'))).slice(0, -1));
}

/** Whether `.dockerignore` patterns leave `path` (relative to the context) out of the build context. */
export function dockerignored(patterns: string[], path: string): boolean {
  const rules = patterns
    .map((p) => p.trim())
    .filter((p) => p !== '' && !p.startsWith('#'))
    .map((p) => ({ exclude: !p.startsWith('!'), regex: globRegex(posix.normalize(p.replace(/^!/, '')).replace(/^\/|\/$/g, '')) }));
  const parts = posix.normalize(path).replace(/^\.\//, '').split('/');
  let ignored = false;
  for (const rule of rules) {
    // A pattern that matches a directory leaves out everything under it.
    for (let n = 1; n <= parts.length; n++) {
      if (rule.regex.test(parts.slice(0, n).join('/'))) {
        ignored = rule.exclude;
        break;
      }
    }
  }
  return ignored;
}

function globRegex(glob: string): RegExp {
  let out = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*' && glob[i + 1] === '*') {
      out += '.*';
      i += glob[i + 2] === '/' ? 2 : 1;
    } else if (c === '*') out += '[^/]*';
    else if (c === '?') out += '[^/]';
    else out += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${out}$`);
}

// ---------------------------------------------------------------------------------------------------
// docker compose

/**
 * Compose's own `${...}` interpolation of a value from the host's environment: `${A}`, `$A`, `${A:-d}`,
 * `${A-d}`, `${A:?msg}`, `${A?msg}`, `${A:+x}`, `${A+x}` and `$$`.
 * @throws Error naming the variable, for a required one that is unset
 */
export function interpolate(value: string, env: Record<string, string | undefined>): string {
  return value.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (match, braced, op, arg, bare) => {
    if (match === '$$') return '$';
    const name = (braced ?? bare) as string;
    const found = env[name];
    const set = op?.startsWith(':') ? found !== undefined && found !== '' : found !== undefined;
    switch (op) {
      case ':-':
      case '-':
        return set ? found! : arg;
      case ':?':
      case '?':
        if (!set) throw new Error(`required variable ${name} is missing: ${arg}`);
        return found!;
      case ':+':
      case '+':
        return set ? arg : '';
      default:
        return found ?? '';
    }
  });
}

/** Every string of a parsed compose file interpolated (`interpolate`); keys are left alone. */
export function interpolateTree(value: unknown, env: Record<string, string | undefined>): unknown {
  if (typeof value === 'string') return interpolate(value, env);
  if (Array.isArray(value)) return value.map((v) => interpolateTree(v, env));
  if (isObj(value)) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolateTree(v, env)]));
  return value;
}

/** A compose `environment:` (map or `KEY=value` list) as a record. */
function composeEnv(environment: unknown): Record<string, string> {
  if (Array.isArray(environment)) {
    return Object.fromEntries(environment.map((e: string) => [e.split('=')[0], e.slice(e.indexOf('=') + 1)]));
  }
  return Object.fromEntries(Object.entries(isObj(environment) ? environment : {}).map(([k, v]) => [k, String(v ?? '')]));
}

/** A compose duration (`40s`, `1m30s`, `500ms`) in milliseconds. */
export function composeDurationMs(value: unknown): number {
  if (typeof value === 'number') return value * 1000;
  const units: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1, us: 0.001 };
  let total = 0;
  for (const [, n, unit] of String(value).matchAll(/(\d+(?:\.\d+)?)(h|ms|m|s|us)/g)) total += Number(n) * units[unit!]!;
  return total;
}

interface Mount {
  source: string;
  target: string;
  bind: boolean;
}

function mounts(service: Obj): Mount[] {
  return (Array.isArray(service.volumes) ? service.volumes : []).map((v: unknown) => {
    if (typeof v === 'string') {
      const [source = '', target = source] = v.split(':');
      return { source, target, bind: /^[./~]/.test(source) };
    }
    const long = v as Obj;
    return { source: String(long.source ?? ''), target: String(long.target ?? ''), bind: long.type === 'bind' };
  });
}

export interface ComposeOptions {
  /** The compose file's path (relative paths in it resolve against its directory). */
  file: string;
  /** The host environment compose interpolates from. */
  hostEnv: Record<string, string | undefined>;
  /** Reads a JSON file the compose file mounts (default: from disk); a test may hand a changed copy. */
  readJson?: (path: string) => unknown;
}

/**
 * What deploy/docker-compose.yml must be: every build context and Dockerfile, bind-mounted file and named
 * volume exists; depends_on names services, and waits on healthchecks that exist (a service running the
 * gateway's image with another entrypoint must replace the image's HEALTHCHECK, which asks the admin
 * port); the gateway's mounted config validates with the environment the container gets (the image's ENV
 * plus the service's), listens on wildcard hosts, on ports the image exposes and the service publishes,
 * with its admin port where the HEALTHCHECK asks; Redis and the upstreams are compose services; and
 * stop_grace_period outlasts the drain.
 */
export function composeProblems(doc: unknown, options: ComposeOptions): string[] {
  const problems: string[] = [];
  const dir = dirname(options.file);
  const readJson = options.readJson ?? ((path: string) => JSON.parse(readFileSync(path, 'utf8')));
  let compose: Obj;
  try {
    compose = interpolateTree(doc, options.hostEnv) as Obj;
  } catch (err) {
    return [`interpolation: ${(err as Error).message}`];
  }
  const services: Obj = isObj(compose.services) ? compose.services : {};
  const namedVolumes = new Set(Object.keys(isObj(compose.volumes) ? compose.volumes : {}));
  if (Object.keys(services).length === 0) problems.push('no services');

  /** The Dockerfile a service is built from, when it is built at all. */
  const dockerfileOf = (service: Obj): string | undefined => {
    if (service.build === undefined) return undefined;
    const build: Obj = typeof service.build === 'string' ? { context: service.build } : service.build;
    return resolve(dir, String(build.context ?? '.'), String(build.dockerfile ?? 'Dockerfile'));
  };
  const repoDockerfile = join(ROOT, 'Dockerfile');
  const dockerfileText = readFileSync(repoDockerfile, 'utf8');
  const hasHealthcheck = (service: Obj): boolean => {
    if (isObj(service.healthcheck)) return service.healthcheck.disable !== true;
    // Inherited from the image: the repo's HEALTHCHECK fits only the gateway itself.
    return dockerfileOf(service) === repoDockerfile && service.entrypoint === undefined && service.command === undefined;
  };

  for (const [name, service] of Object.entries(services) as [string, Obj][]) {
    const at = `services.${name}`;
    const dockerfile = dockerfileOf(service);
    if (dockerfile !== undefined) {
      if (!existsSync(dirname(dockerfile)) || !statSync(dirname(dockerfile)).isDirectory()) problems.push(`${at}.build.context: no such directory`);
      else if (!existsSync(dockerfile)) problems.push(`${at}.build.dockerfile: ${relative(ROOT, dockerfile)} does not exist`);
    } else if (typeof service.image !== 'string') {
      problems.push(`${at}: neither build nor image`);
    }
    // Built from the gateway's Dockerfile with its own entrypoint: the image's HEALTHCHECK would ask an
    // admin port this service does not have.
    if (dockerfile === repoDockerfile && (service.entrypoint !== undefined || service.command !== undefined) && !isObj(service.healthcheck)) {
      problems.push(`${at}.healthcheck: required (the image's HEALTHCHECK asks the gateway's admin port)`);
    }
    for (const mount of mounts(service)) {
      if (mount.bind) {
        const source = resolve(dir, mount.source);
        if (!source.startsWith(ROOT)) problems.push(`${at}.volumes: ${mount.source} is outside the repository`);
        else if (!existsSync(source)) problems.push(`${at}.volumes: ${mount.source} does not exist`);
      } else if (!namedVolumes.has(mount.source)) {
        problems.push(`${at}.volumes: named volume ${mount.source} is not declared under volumes`);
      }
    }
    const depends = Array.isArray(service.depends_on)
      ? Object.fromEntries(service.depends_on.map((d: string) => [d, { condition: 'service_started' }]))
      : isObj(service.depends_on) ? service.depends_on : {};
    for (const [dep, spec] of Object.entries(depends) as [string, Obj][]) {
      if (!services[dep]) problems.push(`${at}.depends_on: no service ${dep}`);
      else if (spec.condition === 'service_healthy' && !hasHealthcheck(services[dep])) {
        problems.push(`${at}.depends_on.${dep}: waits for service_healthy, but ${dep} has no healthcheck`);
      }
    }
  }

  // The gateway: the service that mounts a config where the image reads it.
  const configPath = imageConfigPath(dockerfileText);
  const gateways = Object.entries(services).filter(([, s]) => mounts(s).some((m) => m.bind && m.target === configPath));
  if (gateways.length !== 1) {
    problems.push(`expected one service mounting a config at ${configPath}, found ${gateways.length}`);
    return problems;
  }
  const [name, gateway] = gateways[0] as [string, Obj];
  const at = `services.${name}`;
  if (dockerfileOf(gateway) !== repoDockerfile) problems.push(`${at}.build: not built from the repository's Dockerfile`);
  const mount = mounts(gateway).find((m) => m.target === configPath)!;
  const hostFile = resolve(dir, mount.source);
  if (!existsSync(hostFile) && !options.readJson) return problems;
  const config = readJson(hostFile) as Obj;
  const env = { ...imageEnv(dockerfileText), ...composeEnv(gateway.environment) };
  problems.push(...configProblems(config, env, dirname(hostFile)).map((p) => `${relative(ROOT, hostFile)}: ${p}`));

  const listen: Obj = isObj(config.listen) ? config.listen : {};
  const admin: Obj | undefined = isObj(config.admin) ? config.admin : undefined;
  const expand = (v: unknown) => (typeof v === 'string' ? interpolate(v, env) : v);
  const listenPort = Number(expand(listen.port ?? 8080));
  const adminPort = admin ? Number(expand(admin.port)) : undefined;
  for (const [field, host] of [['listen.host', listen.host], ['admin.host', admin?.host]] as const) {
    if (field === 'admin.host' && !admin) continue;
    const value = host === undefined ? undefined : String(expand(host));
    if (!value || !WILDCARD_HOSTS.has(value)) problems.push(`config ${field} is ${value ?? 'not set (127.0.0.1)'}: unreachable from outside the container`);
  }
  const exposed = exposedPorts(dockerfileText);
  if (!exposed.includes(listenPort)) problems.push(`config listen.port ${listenPort} is not EXPOSEd by the Dockerfile (${exposed.join(', ')})`);
  if (adminPort !== undefined && !exposed.includes(adminPort)) problems.push(`config admin.port ${adminPort} is not EXPOSEd by the Dockerfile`);
  const published = (Array.isArray(gateway.ports) ? gateway.ports : []).map((p: unknown) =>
    isObj(p) ? Number(p.target) : Number(String(p).split(':').at(-1)!.replace(/\/(tcp|udp)$/, '')),
  );
  if (!published.includes(listenPort)) problems.push(`${at}.ports: listen.port ${listenPort} is not published`);
  for (const port of published) {
    if (port !== listenPort && port !== adminPort) problems.push(`${at}.ports: container port ${port} is neither listen.port nor admin.port`);
  }
  if (!hasHealthcheck(gateway)) problems.push(`${at}: no healthcheck`);
  else if (!isObj(gateway.healthcheck)) {
    const port = healthcheckPort(dockerfileText, env);
    if (port !== adminPort) problems.push(`the image's HEALTHCHECK asks port ${port}, the config's admin.port is ${adminPort}`);
  }

  const redisUrl = isObj(config.redis) ? String(expand(config.redis.url)) : undefined;
  const redisHost = redisUrl ? parseUrl(redisUrl)?.hostname : undefined;
  if (redisHost) {
    const host = redisHost;
    if (!services[host]) problems.push(`config redis.url: ${host} is not a compose service`);
    else if (!Object.keys(isObj(gateway.depends_on) ? gateway.depends_on : {}).includes(host)) {
      problems.push(`${at}.depends_on: does not wait for ${host} (redis)`);
    }
  }
  for (const [i, route] of (Array.isArray(config.routes) ? config.routes : []).entries()) {
    const upstreams = [route.upstream].flat().filter((u: unknown) => typeof u === 'string') as string[];
    for (const upstream of upstreams) {
      const url = parseUrl(String(expand(upstream)));
      if (!url) continue; // the config validation reports it
      const target = services[url.hostname] as Obj | undefined;
      if (!target) {
        problems.push(`config routes.${i}.upstream: ${url.hostname} is not a compose service`);
        continue;
      }
      const targetEnv = composeEnv(target.environment);
      if (targetEnv.UPSTREAM_PORT !== undefined && targetEnv.UPSTREAM_PORT !== (url.port || '80')) {
        problems.push(`config routes.${i}.upstream: port ${url.port} but ${url.hostname} listens on UPSTREAM_PORT ${targetEnv.UPSTREAM_PORT}`);
      }
      if (!Object.keys(isObj(gateway.depends_on) ? gateway.depends_on : {}).includes(url.hostname)) {
        problems.push(`${at}.depends_on: does not wait for ${url.hostname} (upstream)`);
      }
    }
  }
  const drainMs = Number((isObj(config.drain) ? config.drain.timeoutMs : undefined) ?? DEFAULT_DRAIN_TIMEOUT_MS);
  const graceMs = gateway.stop_grace_period === undefined ? 10_000 : composeDurationMs(gateway.stop_grace_period);
  if (graceMs <= drainMs) problems.push(`${at}.stop_grace_period ${graceMs / 1000}s does not outlast drain.timeoutMs ${drainMs / 1000}s`);
  return problems;
}

// ---------------------------------------------------------------------------------------------------
// Kubernetes

export interface Manifest {
  /** File name within the manifest directory. */
  file: string;
  /** Position of the document in its file. */
  index: number;
  doc: Obj;
}

/** Every YAML document of every `*.yaml` in `dir` (the kustomization included). */
export function loadManifests(dir: string): Manifest[] {
  return readdirSync(dir)
    .filter((f) => /\.ya?ml$/.test(f))
    .sort()
    .flatMap((file) =>
      parseAllDocuments(readFileSync(join(dir, file), 'utf8')).flatMap((d, index) => {
        if (d.errors.length > 0) throw new Error(`${file}: ${d.errors[0]!.message}`);
        const doc: unknown = d.toJS();
        return isObj(doc) ? [{ file, index, doc }] : [];
      }),
    );
}

interface Model {
  validate(): void;
}
interface Kind {
  model: new (data: never) => Model;
  /** Module and interface that type the manifest, for the unknown-field check. */
  module: string;
  type: string;
}

/** The kinds these manifests use, by `apiVersion/kind`. */
const KINDS: Record<string, Kind> = {
  'v1/ConfigMap': { model: ConfigMap, module: 'kubernetes-models/v1/ConfigMap', type: 'IConfigMap' },
  'v1/Secret': { model: Secret, module: 'kubernetes-models/v1/Secret', type: 'ISecret' },
  'v1/Service': { model: Service, module: 'kubernetes-models/v1/Service', type: 'IService' },
  'apps/v1/Deployment': { model: Deployment, module: 'kubernetes-models/apps/v1/Deployment', type: 'IDeployment' },
  'autoscaling/v2/HorizontalPodAutoscaler': {
    model: HorizontalPodAutoscaler,
    module: 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler',
    type: 'IHorizontalPodAutoscaler',
  },
  'policy/v1/PodDisruptionBudget': { model: PodDisruptionBudget, module: 'kubernetes-models/policy/v1/PodDisruptionBudget', type: 'IPodDisruptionBudget' },
  'networking.k8s.io/v1/NetworkPolicy': { model: NetworkPolicy, module: 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy', type: 'INetworkPolicy' },
};
const KUSTOMIZATION = 'kustomize.config.k8s.io/v1beta1/Kustomization';

const where = (m: Manifest) => `${m.file}[${m.index}] ${m.doc.kind}/${m.doc.metadata?.name ?? '?'}`;

/**
 * Each manifest through its kubernetes-models class: `new Deployment(doc).validate()` runs the
 * Kubernetes OpenAPI schema (types, enums, required fields) and throws on the first failure. Unknown kinds
 * are problems too. Note that the schema does not reject unknown fields: see `unknownFieldProblems`.
 */
export function schemaProblems(manifests: Manifest[]): string[] {
  const problems: string[] = [];
  for (const m of manifests) {
    const key = `${m.doc.apiVersion}/${m.doc.kind}`;
    if (key === KUSTOMIZATION) continue;
    const kind = KINDS[key];
    if (!kind) {
      problems.push(`${where(m)}: no model for ${key}`);
      continue;
    }
    try {
      // The class sets apiVersion and kind from the document (which wins over its own defaults).
      new kind.model(m.doc as never).validate();
    } catch (err) {
      problems.push(`${where(m)}: ${(err as Error).message}`);
    }
  }
  return problems;
}

/** Parsed declaration files, kept between calls of `unknownFieldProblems`. */
const declarationCache = new Map<string, ts.SourceFile>();

/**
 * The manifests type-checked by TypeScript against kubernetes-models' interfaces, as object literals:
 * excess-property checking finds the misspelled and misplaced fields (`readinesProbe`, a probe under
 * `spec`) that the JSON schema lets through and that `kubectl apply` (strict field validation) refuses.
 */
export function unknownFieldProblems(manifests: Manifest[]): string[] {
  const checked = manifests.filter((m) => KINDS[`${m.doc.apiVersion}/${m.doc.kind}`]);
  const file = join(ROOT, 'test', 'helpers', '__deploy_manifests__.ts');
  const lines = [
    ...checked.map((m, i) => {
      const kind = KINDS[`${m.doc.apiVersion}/${m.doc.kind}`]!;
      return `import type { ${kind.type} as T${i} } from '${kind.module}';`;
    }),
    ...checked.map((m, i) => `export const m${i}: T${i} = ${JSON.stringify(m.doc)};`),
  ];
  const text = lines.join('\n');
  const options: ts.CompilerOptions = {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    strict: true,
    skipLibCheck: true,
    noEmit: true,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  const fileExists = host.fileExists.bind(host);
  host.getSourceFile = (name, version, ...rest) => {
    if (resolve(name) === file) return ts.createSourceFile(name, text, version, true);
    // The declaration files do not change between calls: parsed once.
    let parsed = declarationCache.get(name);
    if (!parsed) {
      parsed = getSourceFile(name, version, ...rest);
      if (parsed) declarationCache.set(name, parsed);
    }
    return parsed;
  };
  host.fileExists = (name) => resolve(name) === file || fileExists(name);
  const program = ts.createProgram([file], options, host);
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const line = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start).line : -1;
    const index = line - checked.length;
    const m = checked[index];
    return `${m ? where(m) : 'manifests'}: ${ts.flattenDiagnosticMessageText(d.messageText, ' ')}`;
  });
}

const byKind = (manifests: Manifest[], kind: string) => manifests.filter((m) => m.doc.kind === kind);
const labelsMatch = (selector: Obj | undefined, labels: Obj | undefined) =>
  isObj(selector) && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels?.[k] === v);

/** A named or numbered container port of a pod template, as a number. */
function containerPort(podSpec: Obj, port: unknown): number | undefined {
  const ports = (podSpec.containers as Obj[]).flatMap((c) => (Array.isArray(c.ports) ? c.ports : []) as Obj[]);
  if (typeof port === 'number') return ports.some((p) => p.containerPort === port) ? port : undefined;
  return ports.find((p) => p.name === port)?.containerPort;
}

/** The pods a percentage or count of a PDB means, with `replicas` pods (Kubernetes rounds up). */
function scaled(value: unknown, replicas: number): number {
  const percent = /^(\d+)%$/.exec(String(value));
  return percent ? Math.ceil((replicas * Number(percent[1])) / 100) : Number(value);
}

/** The Secret and ConfigMap values a container's env takes (`value`, `secretKeyRef`, `configMapKeyRef`). */
function containerEnv(container: Obj, manifests: Manifest[], secretValues: Record<string, string> | undefined, problems: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const entry of (container.env ?? []) as Obj[]) {
    const ref = entry.valueFrom?.secretKeyRef ?? entry.valueFrom?.configMapKeyRef;
    if (!ref) {
      env[entry.name] = String(entry.value ?? '');
      continue;
    }
    const kind = entry.valueFrom.secretKeyRef ? 'Secret' : 'ConfigMap';
    const source = byKind(manifests, kind).find((m) => m.doc.metadata?.name === ref.name)?.doc;
    const values: Record<string, string> = {
      ...Object.fromEntries(Object.entries((source?.data ?? {}) as Record<string, string>).map(([k, v]) => [k, kind === 'Secret' ? Buffer.from(v, 'base64').toString() : v])),
      ...(source?.stringData ?? {}),
    };
    if (!source) problems.push(`env ${entry.name}: no ${kind} ${ref.name} among the manifests`);
    else if (!(ref.key in values)) problems.push(`env ${entry.name}: ${kind} ${ref.name} has no key ${ref.key}`);
    else env[entry.name] = kind === 'Secret' && secretValues ? (secretValues[ref.key] ?? '') : values[ref.key]!;
  }
  return env;
}

export interface K8sOptions {
  /** The image's Dockerfile, for the environment it gives the container. */
  dockerfile: string;
  /** Values to use instead of the Secret's (placeholders) when validating the config; by Secret key. */
  secretValues?: Record<string, string>;
  /** Where the config's relative paths would resolve; default: the manifest directory. */
  baseDir?: string;
}

/**
 * The checks that span manifests. Every Deployment: selector ⊆ template labels, non-root, read-only root
 * filesystem, no privilege escalation, requests and limits. The gateway (the Deployment whose container
 * runs with `--config`): 2+ replicas; the config file comes from a ConfigMap key mounted where --config
 * points, and validates with the container's environment; probes /readyz and /healthz on the admin port,
 * listen and admin hosts reachable on the pod IP, ports declared; terminationGracePeriodSeconds > preStop
 * sleep + drain.timeoutMs. Services, the PDB, the HPA and NetworkPolicies select existing pods and ports;
 * the PDB allows one disruption and does not block all; the Redis URL is a Service; the kustomization
 * lists every manifest but the Secret.
 */
export function crossCheckProblems(manifests: Manifest[], options: K8sOptions): string[] {
  const problems: string[] = [];
  const deployments = byKind(manifests, 'Deployment');
  const podsOf = (selector: Obj | undefined) => deployments.filter((d) => labelsMatch(selector, d.doc.spec?.template?.metadata?.labels));

  for (const d of deployments) {
    const at = where(d);
    const spec = d.doc.spec ?? {};
    const pod: Obj = spec.template?.spec ?? {};
    if (!labelsMatch(spec.selector?.matchLabels, spec.template?.metadata?.labels)) problems.push(`${at}: selector.matchLabels do not match the template's labels`);
    for (const c of (pod.containers ?? []) as Obj[]) {
      const sc: Obj = { ...pod.securityContext, ...c.securityContext };
      if (sc.runAsNonRoot !== true) problems.push(`${at} ${c.name}: runAsNonRoot is not true`);
      if (sc.runAsUser === 0) problems.push(`${at} ${c.name}: runAsUser 0`);
      if (c.securityContext?.readOnlyRootFilesystem !== true) problems.push(`${at} ${c.name}: readOnlyRootFilesystem is not true`);
      if (c.securityContext?.allowPrivilegeEscalation !== false) problems.push(`${at} ${c.name}: allowPrivilegeEscalation is not false`);
      for (const kind of ['requests', 'limits']) {
        for (const resource of ['cpu', 'memory']) {
          if (c.resources?.[kind]?.[resource] === undefined) problems.push(`${at} ${c.name}: no resources.${kind}.${resource}`);
        }
      }
    }
  }

  for (const s of byKind(manifests, 'Service')) {
    const targets = podsOf(s.doc.spec?.selector);
    if (targets.length !== 1) {
      problems.push(`${where(s)}: selector matches ${targets.length} Deployments' pods, expected 1`);
      continue;
    }
    for (const port of (s.doc.spec?.ports ?? []) as Obj[]) {
      if (containerPort(targets[0]!.doc.spec.template.spec, port.targetPort ?? port.port) === undefined) {
        problems.push(`${where(s)}: targetPort ${port.targetPort} is no container port of ${targets[0]!.doc.metadata.name}`);
      }
    }
  }
  for (const n of byKind(manifests, 'NetworkPolicy')) {
    const targets = podsOf(n.doc.spec?.podSelector?.matchLabels);
    if (targets.length === 0) problems.push(`${where(n)}: podSelector matches no Deployment's pods`);
    for (const rule of (n.doc.spec?.ingress ?? []) as Obj[]) {
      for (const from of (rule.from ?? []) as Obj[]) {
        if (from.podSelector && podsOf(from.podSelector.matchLabels).length === 0) problems.push(`${where(n)}: a from.podSelector matches no Deployment's pods`);
      }
      for (const port of (rule.ports ?? []) as Obj[]) {
        if (targets.every((t) => containerPort(t.doc.spec.template.spec, port.port) === undefined)) problems.push(`${where(n)}: port ${port.port} is no container port of the selected pods`);
      }
    }
  }

  // The gateway.
  const isGateway = (d: Manifest) => ((d.doc.spec?.template?.spec?.containers ?? []) as Obj[]).some((c) => (c.args ?? []).includes('--config'));
  const gateways = deployments.filter(isGateway);
  if (gateways.length !== 1) {
    problems.push(`expected one Deployment running the gateway with --config, found ${gateways.length}`);
    return problems;
  }
  const gw = gateways[0]!;
  const at = where(gw);
  const replicas = Number(gw.doc.spec.replicas ?? 1);
  if (replicas < 2) problems.push(`${at}: replicas ${replicas}, expected 2 or more`);
  const pod: Obj = gw.doc.spec.template.spec;
  const container = (pod.containers as Obj[]).find((c) => (c.args ?? []).includes('--config'))!;
  const configPath = String(container.args[container.args.indexOf('--config') + 1]);

  const mount = ((container.volumeMounts ?? []) as Obj[]).find((m) => m.mountPath === posix.dirname(configPath) && m.subPath === undefined)
    ?? ((container.volumeMounts ?? []) as Obj[]).find((m) => m.mountPath === configPath && m.subPath !== undefined);
  const volume = ((pod.volumes ?? []) as Obj[]).find((v) => v.name === mount?.name);
  let configText: string | undefined;
  if (!mount || !volume?.configMap) {
    problems.push(`${at}: --config ${configPath} is not in a mounted ConfigMap`);
  } else {
    if (mount.readOnly !== true) problems.push(`${at}: the config volume is not mounted readOnly`);
    const items = (volume.configMap.items ?? []) as Obj[];
    const fileName = mount.subPath ?? posix.basename(configPath);
    const key = items.length > 0 ? items.find((i) => i.path === fileName)?.key : fileName;
    const configMap = byKind(manifests, 'ConfigMap').find((m) => m.doc.metadata?.name === volume.configMap.name);
    if (!configMap) problems.push(`${at}: ConfigMap ${volume.configMap.name} is not among the manifests`);
    else if (key === undefined || typeof configMap.doc.data?.[key] !== 'string') {
      problems.push(`${where(configMap)}: no key ${key ?? fileName}, which --config ${configPath} reads`);
    } else configText = configMap.doc.data[key];
  }
  if (configText === undefined) return problems;

  let config: Obj;
  try {
    config = JSON.parse(configText) as Obj;
  } catch (err) {
    problems.push(`the ConfigMap's ${posix.basename(configPath)} is not JSON: ${(err as Error).message}`);
    return problems;
  }
  const env = { ...imageEnv(options.dockerfile), ...containerEnv(container, manifests, options.secretValues, problems) };
  problems.push(...configProblems(config, env, options.baseDir ?? ROOT).map((p) => `config: ${p}`));
  const expand = (v: unknown) => (typeof v === 'string' ? interpolate(v, env) : v);

  const admin: Obj | undefined = isObj(config.admin) ? config.admin : undefined;
  const listen: Obj = isObj(config.listen) ? config.listen : {};
  if (!admin) problems.push('config: no admin section, so no /healthz and /readyz for the probes');
  for (const [field, host] of [['listen.host', listen.host], ['admin.host', admin?.host]] as const) {
    const value = host === undefined ? undefined : String(expand(host));
    if (!value || !WILDCARD_HOSTS.has(value)) problems.push(`config ${field} is ${value ?? 'not set (127.0.0.1)'}: the kubelet and the Service reach the pod's IP`);
  }
  const listenPort = Number(expand(listen.port ?? 8080));
  if (containerPort(pod, listenPort) === undefined) problems.push(`${at}: listen.port ${listenPort} is not a container port`);
  for (const [probe, path] of [['readinessProbe', '/readyz'], ['livenessProbe', '/healthz']] as const) {
    const get: Obj | undefined = container[probe]?.httpGet;
    if (!get) {
      problems.push(`${at}: no ${probe}.httpGet`);
      continue;
    }
    if (get.path !== path) problems.push(`${at}: ${probe} asks ${get.path}, expected ${path}`);
    const port = containerPort(pod, get.port);
    if (port === undefined) problems.push(`${at}: ${probe} port ${get.port} is no container port`);
    else if (admin && port !== Number(expand(admin.port))) problems.push(`${at}: ${probe} asks port ${port}, the config's admin.port is ${expand(admin.port)}`);
  }

  const preStop: Obj | undefined = container.lifecycle?.preStop;
  const sleepSec = preStop?.sleep
    ? Number(preStop.sleep.seconds)
    : Number(/^(?:\/bin\/)?sleep$/.test(preStop?.exec?.command?.[0] ?? '') ? preStop!.exec.command[1] : NaN);
  if (!(sleepSec > 0)) problems.push(`${at}: no preStop sleep (the Service keeps routing to a pod for a moment after it starts terminating)`);
  const drain: Obj = isObj(config.drain) ? config.drain : {};
  const drainMs = Number(expand(drain.timeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS));
  if (Number(expand(drain.spreadMs ?? 0)) > drainMs) problems.push('config drain.spreadMs exceeds drain.timeoutMs');
  const grace = Number(pod.terminationGracePeriodSeconds ?? 30);
  if (!(grace > drainMs / 1000 + (sleepSec || 0))) {
    problems.push(`${at}: terminationGracePeriodSeconds ${grace} is not more than preStop ${sleepSec || 0}s + drain.timeoutMs ${drainMs / 1000}s`);
  }

  const url = isObj(config.redis) ? parseUrl(String(expand(config.redis.url))) : null;
  if (url) {
    const service = byKind(manifests, 'Service').find((s) => s.doc.metadata?.name === url.hostname.split('.')[0]);
    if (!service) problems.push(`config redis.url: no Service ${url.hostname}`);
    else if (!((service.doc.spec?.ports ?? []) as Obj[]).some((p) => p.port === Number(url.port || 6379))) {
      problems.push(`config redis.url: Service ${service.doc.metadata.name} has no port ${url.port || 6379}`);
    }
  }

  const hpas = byKind(manifests, 'HorizontalPodAutoscaler');
  for (const h of hpas) {
    const ref = h.doc.spec?.scaleTargetRef ?? {};
    const target = deployments.find((d) => ref.kind === 'Deployment' && d.doc.metadata?.name === ref.name);
    if (!target) problems.push(`${where(h)}: scaleTargetRef ${ref.kind}/${ref.name} is not among the manifests`);
    const min = Number(h.doc.spec?.minReplicas ?? 1);
    if (target === gw && min < 2) problems.push(`${where(h)}: minReplicas ${min}, expected 2 or more`);
    if (Number(h.doc.spec?.maxReplicas) < min) problems.push(`${where(h)}: maxReplicas below minReplicas`);
    for (const metric of (h.doc.spec?.metrics ?? []) as Obj[]) {
      const resource = metric.resource?.name;
      if (metric.type === 'Resource' && target && ((target.doc.spec.template.spec.containers ?? []) as Obj[]).some((c) => c.resources?.requests?.[resource] === undefined)) {
        problems.push(`${where(h)}: scales on ${resource} utilization, which needs ${resource} requests on every container`);
      }
    }
  }
  const pdbs = byKind(manifests, 'PodDisruptionBudget');
  if (pdbs.length === 0) problems.push('no PodDisruptionBudget for the gateway');
  for (const p of pdbs) {
    const targets = podsOf(p.doc.spec?.selector?.matchLabels);
    if (targets.length !== 1 || targets[0] !== gw) {
      problems.push(`${where(p)}: selects ${targets.map((t) => t.doc.metadata.name).join(', ') || 'nothing'}, expected the gateway's pods`);
    }
    // The fewest pods there will be: the Deployment's replicas, or the HPA's minimum.
    const fewest = Math.min(replicas, ...hpas.filter((h) => h.doc.spec?.scaleTargetRef?.name === gw.doc.metadata.name).map((h) => Number(h.doc.spec.minReplicas ?? 1)));
    const spec: Obj = p.doc.spec ?? {};
    const allowed = spec.minAvailable !== undefined ? fewest - scaled(spec.minAvailable, fewest) : Math.min(fewest, scaled(spec.maxUnavailable, fewest));
    if (!(allowed >= 1)) problems.push(`${where(p)}: allows ${allowed} disruptions with ${fewest} replicas: node drains would block`);
    if (allowed >= fewest) problems.push(`${where(p)}: allows every pod to be evicted at once`);
  }
  return problems;
}

/**
 * The kustomization lists every manifest file in the directory except those holding a Secret (applying
 * its placeholders again would overwrite the real one), and nothing that does not exist.
 */
export function kustomizationProblems(dir: string, manifests: Manifest[]): string[] {
  const problems: string[] = [];
  const kustomization = manifests.find((m) => `${m.doc.apiVersion}/${m.doc.kind}` === KUSTOMIZATION);
  if (!kustomization) return ['no kustomization.yaml'];
  const listed = new Set((kustomization.doc.resources ?? []) as string[]);
  for (const file of listed) if (!existsSync(join(dir, file))) problems.push(`kustomization: ${file} does not exist`);
  const files = new Set(manifests.filter((m) => m !== kustomization).map((m) => m.file));
  for (const file of files) {
    const secret = manifests.some((m) => m.file === file && m.doc.kind === 'Secret');
    if (secret && listed.has(file)) problems.push(`kustomization: lists ${file}, a Secret with placeholders`);
    if (!secret && !listed.has(file)) problems.push(`kustomization: does not list ${file}`);
  }
  const images = new Set(((kustomization.doc.images ?? []) as Obj[]).map((i) => i.name));
  for (const d of byKind(manifests, 'Deployment')) {
    for (const c of d.doc.spec?.template?.spec?.containers ?? []) {
      const name = String(c.image).replace(/[:@].*$/, '');
      if (name === 'portcullis' && !images.has(name)) problems.push(`kustomization: no images entry for ${name} (${where(d)})`);
    }
  }
  return problems;
}
