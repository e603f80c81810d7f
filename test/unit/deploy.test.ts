// The deployment files, checked without Docker or a cluster: the Dockerfile linted by dockerfile-utils,
// deploy/docker-compose.yml and deploy/k8s/*.yaml parsed and cross-checked against each other and
// against the gateway's own config validation. Every check is also shown failing on a broken copy.
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler';
import t from 'tap';
import WebSocket from 'ws';
import { parse } from 'yaml';
import { freePort, listenLocal } from '../helpers/net.js';
import {
  composeDurationMs,
  composeProblems,
  contextSources,
  crossCheckProblems,
  dockerfileProblems,
  dockerignored,
  exposedPorts,
  healthcheckPort,
  imageConfigPath,
  imageEnv,
  interpolate,
  kustomizationProblems,
  loadManifests,
  parseDockerfile,
  ROOT,
  schemaProblems,
  unknownFieldProblems,
  type Manifest,
  type Obj,
} from '../helpers/deploy.js';

const DOCKERFILE = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
const COMPOSE_FILE = join(ROOT, 'deploy', 'docker-compose.yml');
const K8S = join(ROOT, 'deploy', 'k8s');
// Test-only values for the secrets the configs name (the JWT secret must be at least 32 bytes).
const SECRETS = { JWT_SECRET: 'test-only-jwt-secret-0123456789abcdef-0123', ADMIN_TOKEN: 'test-only-admin-token' };

const has = (problems: string[], text: string) => problems.some((p) => p.includes(text));

const run = promisify(execFile);
/** The environment of the commands run below: no NODE_OPTIONS (tap's loaders), like in the container. */
const bareEnv = (extra: Record<string, string>) => ({ PATH: process.env.PATH ?? '/usr/bin:/bin', ...extra });
/** Runs `node ...args` the way the container would; resolves its exit code. */
async function exitCode(args: string[], env: Record<string, string>): Promise<number> {
  try {
    await run(process.execPath, args, { env: bareEnv(env), timeout: 10_000 });
    return 0;
  } catch (err) {
    return (err as { code?: number }).code ?? -1;
  }
}

t.test('Dockerfile: dockerfile-utils reports nothing, and the image is what deployments expect', async (t) => {
  t.same(dockerfileProblems(DOCKERFILE), [], 'no lint diagnostic, no missing requirement');

  const all = parseDockerfile(DOCKERFILE);
  const stages = Math.max(...all.map((i) => i.stage)) + 1;
  const runtime = all.filter((i) => i.stage === stages - 1);
  const args = (keyword: string) => runtime.filter((i) => i.keyword === keyword).map((i) => i.args);
  t.ok(stages >= 2, 'multi-stage');
  t.ok(args('COPY').some((a) => a.startsWith('--from=build ')), 'the runtime stage takes the build output from the build stage');
  t.ok(args('RUN').some((a) => a.includes('npm ci --omit=dev')), 'production dependencies only');
  t.equal(args('USER').at(-1), '1000:1000', 'runs as the unprivileged node user, by number');
  t.equal(args('STOPSIGNAL').at(-1), 'SIGTERM');
  t.match(args('HEALTHCHECK').at(-1), /CMD \["node", "-e", "fetch\('http:\/\/127\.0\.0\.1:'\+\(process\.env\.ADMIN_PORT\|\|9090\)\+'\/healthz'/, 'node fetch on /healthz');
  t.same(exposedPorts(DOCKERFILE), [8080, 9090]);
  t.equal(imageConfigPath(DOCKERFILE), '/etc/portcullis/gateway.config.json', 'where a config is mounted');
  t.same(JSON.parse(args('ENTRYPOINT').at(-1)!), ['node', 'dist/cli.js'], 'exec form: node is PID 1 and receives SIGTERM');
  t.notOk(Object.keys(imageEnv(DOCKERFILE)).some((k) => /SECRET|TOKEN/.test(k)), 'no secret in the image environment');
  t.equal(healthcheckPort(DOCKERFILE, {}), 9090);
  t.equal(healthcheckPort(DOCKERFILE, { ADMIN_PORT: '9191' }), 9191, 'ADMIN_PORT moves the healthcheck');
});

t.test('the Dockerfile checks find what they look for', async (t) => {
  const cases: [string, (text: string) => string, string][] = [
    ['a lint error (duration without unit)', (s) => s.replace('--interval=10s', '--interval=10'), 'lint: line'],
    ['a lint warning (lower-case instruction)', (s) => s.replace('EXPOSE 8080', 'expose 8080'), 'lint: line'],
    ['no USER', (s) => s.replace(/^USER .*$/m, ''), 'runs as root'],
    ['USER root', (s) => s.replace(/^USER .*$/m, 'USER root'), 'USER root'],
    ['USER by name', (s) => s.replace(/^USER .*$/m, 'USER node'), 'numeric uid'],
    ['another stop signal', (s) => s.replace('STOPSIGNAL SIGTERM', 'STOPSIGNAL SIGKILL'), 'STOPSIGNAL'],
    ['dev dependencies at run time', (s) => s.replace('npm ci --omit=dev', 'npm ci'), '--omit=dev'],
    ['single stage', (s) => s.slice(s.indexOf('FROM node:20-bookworm-slim AS runtime')).replace(/^COPY --from=build .*$/m, ''), 'multi-stage'],
    ['no HEALTHCHECK', (s) => s.replace(/^HEALTHCHECK[\s\S]*?\n(?=ENTRYPOINT)/m, ''), 'no HEALTHCHECK'],
    ['a HEALTHCHECK with curl', (s) => s.replace(/CMD \[.*\]$/m, 'CMD curl -f http://127.0.0.1:9090/healthz'), 'curl'],
    ['ENTRYPOINT in shell form', (s) => s.replace(/^ENTRYPOINT .*$/m, 'ENTRYPOINT node dist/cli.js'), 'shell form'],
    ['a secret baked in', (s) => s.replace('NODE_ENV=production', 'NODE_ENV=production JWT_SECRET=abc'), 'secret'],
  ];
  for (const [name, change, expected] of cases) {
    const broken = change(DOCKERFILE);
    t.not(broken, DOCKERFILE, `${name}: the change applies`);
    const problems = dockerfileProblems(broken);
    t.ok(has(problems, expected), `${name}: ${problems.join('; ') || 'nothing found'}`);
  }
});

t.test("the Dockerfile's HEALTHCHECK command works: 0 for a 200 from /healthz, 1 otherwise", async (t) => {
  const health = parseDockerfile(DOCKERFILE).filter((i) => i.keyword === 'HEALTHCHECK').at(-1)!.args;
  const argv = JSON.parse(health.slice(health.indexOf('CMD ') + 4)) as string[];
  t.equal(argv[0], 'node');
  let status = 200;
  const paths: string[] = [];
  const server = createServer((req, res) => {
    paths.push(req.url ?? '');
    res.writeHead(status).end();
  });
  const port = String(await listenLocal(t, server));
  t.equal(await exitCode(argv.slice(1), { ADMIN_PORT: port }), 0, 'healthy');
  status = 503;
  t.equal(await exitCode(argv.slice(1), { ADMIN_PORT: port }), 1, 'an error status');
  t.same(paths, ['/healthz', '/healthz']);
  t.equal(await exitCode(argv.slice(1), { ADMIN_PORT: String(await freePort()) }), 1, 'nothing listening');
});

t.test('.dockerignore leaves in what the Dockerfile copies, and keeps secrets out of the context', async (t) => {
  const patterns = readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n');
  const sources = contextSources(DOCKERFILE);
  t.same(sources.sort(), ['gateway.config.json', 'gateway.schema.json', 'package-lock.json', 'package-lock.json', 'package.json', 'package.json', 'src', 'tsconfig.build.json', 'tsconfig.json']);
  for (const source of sources) {
    t.doesNotThrow(() => readFileSync(join(ROOT, source === 'src' ? 'src/index.ts' : source)), `${source} exists`);
    t.notOk(dockerignored(patterns, source), `${source} is in the build context`);
  }
  for (const path of ['node_modules/ws/index.js', 'dist/cli.js', '.git/HEAD', '.env', '.env.local', 'certs/key.pem', 'test/unit/x.test.ts', 'deploy/k8s/secret.yaml']) {
    t.ok(dockerignored(patterns, path), `${path} is not`);
  }
  // The matcher itself.
  t.ok(dockerignored(['**/*.log'], 'a/b/c.log'));
  t.ok(dockerignored(['*.log', '!keep.log', 'keep.log'], 'keep.log'), 'the last matching pattern wins');
  t.notOk(dockerignored(['*.log', '!keep.log'], 'keep.log'));
  t.notOk(dockerignored(['docs'], 'docsx/a'));
});

t.test('docker compose: gateway, Redis and the echo upstream check out', async (t) => {
  const doc = parse(readFileSync(COMPOSE_FILE, 'utf8')) as Obj;
  t.same(composeProblems(doc, { file: COMPOSE_FILE, hostEnv: SECRETS }), []);

  t.same(Object.keys(doc.services).sort(), ['echo', 'gateway', 'redis']);
  const { gateway, echo, redis } = doc.services as Record<string, Obj>;
  t.same(gateway.depends_on, { redis: { condition: 'service_healthy' }, echo: { condition: 'service_healthy' } });
  t.same(gateway.build, { context: '..', dockerfile: 'Dockerfile' });
  t.same(echo.build, gateway.build, 'the echo upstream runs from the same image');
  t.ok(gateway.volumes.includes('./gateway.compose.json:/etc/portcullis/gateway.config.json:ro'), 'the config is mounted, read-only');
  t.match(gateway.environment.JWT_SECRET, /^\$\{JWT_SECRET:\?/, 'compose refuses to start without JWT_SECRET');
  t.match(gateway.environment.ADMIN_TOKEN, /^\$\{ADMIN_TOKEN:\?/, 'and without ADMIN_TOKEN');
  t.ok(echo.healthcheck && redis.healthcheck, 'the services the gateway waits for have healthchecks');
  t.ok(composeDurationMs(gateway.stop_grace_period) > 30_000, 'stop_grace_period outlasts the 30 s drain');
});

t.test('the compose checks find what they look for', async (t) => {
  const doc = parse(readFileSync(COMPOSE_FILE, 'utf8')) as Obj;
  const config = JSON.parse(readFileSync(join(ROOT, 'deploy', 'gateway.compose.json'), 'utf8')) as Obj;
  const check = (changeDoc: (d: Obj) => void, changeConfig: (c: Obj) => void = () => {}, hostEnv: Record<string, string> = SECRETS) => {
    const d = structuredClone(doc);
    const c = structuredClone(config);
    changeDoc(d);
    changeConfig(c);
    return composeProblems(d, { file: COMPOSE_FILE, hostEnv, readJson: () => c });
  };
  const none = () => {};
  const cases: [string, string[], string][] = [
    ['JWT_SECRET unset on the host', check(none, none, { ADMIN_TOKEN: 'x' }), 'required variable JWT_SECRET'],
    ['a mounted file missing', check((d) => (d.services.echo.volumes = ['../examples/nope.mjs:/app/examples/echo-upstream.mjs:ro'])), 'nope.mjs does not exist'],
    ['an undeclared named volume', check((d) => delete d.volumes), 'named volume redis-data'],
    ['a build context missing', check((d) => (d.services.gateway.build.context = '../nowhere')), 'build.context'],
    ['a Dockerfile missing', check((d) => (d.services.gateway.build.dockerfile = 'Nofile')), 'build.dockerfile'],
    ['the echo service without its own healthcheck', check((d) => delete d.services.echo.healthcheck), 'echo.healthcheck: required'],
    ['depends_on an unknown service', check((d) => (d.services.gateway.depends_on.cache = { condition: 'service_healthy' })), 'no service cache'],
    ['a short stop_grace_period', check((d) => (d.services.gateway.stop_grace_period = '10s')), 'stop_grace_period'],
    ['the listen port unpublished', check((d) => (d.services.gateway.ports = ['127.0.0.1:9090:9090'])), 'listen.port 8080 is not published'],
    ['another admin port', check(none, (c) => (c.admin.port = 9191)), 'HEALTHCHECK asks port 9090'],
    ['a port the image does not expose', check(none, (c) => (c.listen.port = 8081)), 'not EXPOSEd'],
    ['a loopback admin host', check(none, (c) => (c.admin.host = '127.0.0.1')), 'admin.host is 127.0.0.1'],
    ['an upstream that is no service', check(none, (c) => (c.routes[0].upstream = 'ws://nowhere:9001')), 'nowhere is not a compose service'],
    ['an upstream on the wrong port', check(none, (c) => (c.routes[0].upstream = 'ws://echo:9002')), 'UPSTREAM_PORT 9001'],
    ['redis that is no service', check(none, (c) => (c.redis.url = 'redis://cache:6379')), 'cache is not a compose service'],
    ['an invalid config', check(none, (c) => (c.authenticators['user-jwt'].secret = 'short')), 'must be at least 32 bytes'],
    ['a secret the service does not set', check(none, (c) => (c.routes[0].upstream = '${UPSTREAM_URL}')), 'UPSTREAM_URL is not set'],
  ];
  for (const [name, problems, expected] of cases) t.ok(has(problems, expected), `${name}: ${problems.join('; ') || 'nothing found'}`);
});

t.test("compose's echo service: its entrypoint serves examples/echo-upstream.mjs on all interfaces, its healthcheck sees it", async (t) => {
  const { echo } = (parse(readFileSync(COMPOSE_FILE, 'utf8')) as Obj).services as Record<string, Obj>;
  const mounted = '/app/examples/echo-upstream.mjs';
  t.ok(echo.volumes.includes(`../examples/echo-upstream.mjs:${mounted}:ro`));
  const [node, ...args] = (echo.entrypoint as string[]).map((a) => a.replace(mounted, join(ROOT, 'examples', 'echo-upstream.mjs')));
  t.equal(node, 'node');
  const healthcheck = (echo.healthcheck.test as string[]).slice(1);
  t.equal(echo.healthcheck.test[0], 'CMD');
  t.equal(healthcheck[0], 'node');
  const port = String(await freePort());
  t.equal(await exitCode(healthcheck.slice(1), { UPSTREAM_PORT: port }), 1, 'unhealthy before it listens');

  const child = spawn(process.execPath, args, { env: bareEnv({ ...echo.environment, UPSTREAM_PORT: port }), stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => void child.kill('SIGKILL'));
  const [line] = (await once(child.stdout!, 'data')) as [Buffer];
  t.equal(line.toString().trim(), `echo upstream listening on port ${port}`);
  t.equal(await exitCode(healthcheck.slice(1), { UPSTREAM_PORT: port }), 0, 'healthy');

  const ws = new WebSocket(`ws://127.0.0.1:${port}/echo`, { headers: { 'x-auth-subject': 'alice' } });
  t.teardown(() => ws.terminate());
  const [greeting] = (await once(ws, 'message')) as [Buffer];
  t.match(JSON.parse(greeting.toString()), { hello: 'alice' });
  ws.send('ping');
  const [echoed] = (await once(ws, 'message')) as [Buffer];
  t.equal(echoed.toString(), 'ping');
  // Bound to every interface, or the gateway's container could not reach it: a server bound to 127.0.0.1
  // alone refuses connections to 127.0.0.2, one bound to 0.0.0.0 takes them.
  const other = new WebSocket(`ws://127.0.0.2:${port}/`);
  t.teardown(() => other.terminate());
  const [hello] = (await once(other, 'message')) as [Buffer];
  t.match(JSON.parse(hello.toString()), { hello: null }, 'reachable on another address');
});

t.test('compose interpolation and durations', async (t) => {
  const env = { A: 'a', EMPTY: '' };
  t.equal(interpolate('${A}/$A/$$A/${B:-d}/${EMPTY:-e}/${EMPTY-e}/${A:+x}/${B:+x}', env), 'a/a/$A/d/e//x/');
  t.throws(() => interpolate('${B:?need B}', env), /required variable B is missing: need B/);
  t.throws(() => interpolate('${EMPTY:?need it}', env), /EMPTY/);
  t.equal(interpolate('${EMPTY?x}', env), '');
  t.equal(composeDurationMs('1m30s'), 90_000);
  t.equal(composeDurationMs('500ms'), 500);
  t.equal(composeDurationMs(40), 40_000);
});

const manifests = loadManifests(K8S);
const doc = (ms: Manifest[], kind: string, name: string): Obj => {
  const found = ms.find((m) => m.doc.kind === kind && m.doc.metadata?.name === name);
  if (!found) throw new Error(`no ${kind}/${name}`);
  return found.doc;
};
const gatewayContainer = (ms: Manifest[]): Obj => doc(ms, 'Deployment', 'portcullis').spec.template.spec.containers[0];

t.test('Kubernetes manifests: every one validates against the Kubernetes schema (kubernetes-models)', async (t) => {
  t.same(
    manifests.map((m) => `${m.file} ${m.doc.apiVersion} ${m.doc.kind}`),
    [
      'configmap.yaml v1 ConfigMap',
      'deployment.yaml apps/v1 Deployment',
      'hpa.yaml autoscaling/v2 HorizontalPodAutoscaler',
      'kustomization.yaml kustomize.config.k8s.io/v1beta1 Kustomization',
      'pdb.yaml policy/v1 PodDisruptionBudget',
      'redis.yaml apps/v1 Deployment',
      'redis.yaml v1 Service',
      'redis.yaml networking.k8s.io/v1 NetworkPolicy',
      'secret.yaml v1 Secret',
      'service.yaml v1 Service',
    ],
  );
  t.same(schemaProblems(manifests), [], 'the OpenAPI schema');
  t.same(unknownFieldProblems(manifests), [], 'no unknown or misplaced field');
});

t.test('the schema validation catches a broken manifest', async (t) => {
  const deployment = doc(manifests, 'Deployment', 'portcullis');
  t.doesNotThrow(() => new Deployment(structuredClone(deployment) as never).validate(), 'the real one passes');

  const portAsString = structuredClone(deployment);
  portAsString.spec.template.spec.containers[0].ports[0].containerPort = '8080';
  t.throws(() => new Deployment(portAsString as never).validate(), /containerPort must be integer/);

  const unnamed = structuredClone(deployment);
  delete unnamed.spec.template.spec.containers[0].name;
  t.throws(() => new Deployment(unnamed as never).validate(), /containers\/0 must have required property name/);

  const noSelector = structuredClone(deployment);
  delete noSelector.spec.selector;
  t.throws(() => new Deployment(noSelector as never).validate(), /selector/);

  const hpa = structuredClone(doc(manifests, 'HorizontalPodAutoscaler', 'portcullis'));
  hpa.spec.minReplicas = 'two';
  t.throws(() => new HorizontalPodAutoscaler(hpa as never).validate(), /minReplicas must be integer/);

  const broken = structuredClone(manifests);
  doc(broken, 'Service', 'portcullis').spec.ports[0].port = 'eighty';
  doc(broken, 'PodDisruptionBudget', 'portcullis').spec.selector = 'app=portcullis';
  const problems = schemaProblems(broken);
  t.equal(problems.length, 2, problems.join('; '));
  t.ok(has(problems, 'service.yaml[0] Service/portcullis'));
  t.ok(has(problems, 'pdb.yaml[0] PodDisruptionBudget/portcullis'));
  t.ok(has(schemaProblems([{ file: 'x.yaml', index: 0, doc: { apiVersion: 'v1', kind: 'Pod' } }]), 'no model for v1/Pod'), 'a kind the test does not know is a problem, not a pass');

  // The schema does not forbid unknown fields, so a misspelled probe would pass it and be silently
  // ignored by an API server without strict validation: the type check catches it.
  const typo = structuredClone(manifests);
  const container = gatewayContainer(typo);
  container.readinesProbe = container.readinessProbe;
  delete container.readinessProbe;
  t.doesNotThrow(() => new Deployment(doc(typo, 'Deployment', 'portcullis') as never).validate(), 'kubernetes-models lets an unknown field through');
  const typoProblems = unknownFieldProblems(typo);
  t.equal(typoProblems.length, 1, typoProblems.join('; '));
  t.match(typoProblems[0], /^deployment\.yaml\[0\] Deployment\/portcullis: .*'"?readinesProbe"?' does not exist/);
  const misplaced = structuredClone(manifests);
  doc(misplaced, 'PodDisruptionBudget', 'portcullis').spec.replicas = 2;
  t.ok(has(unknownFieldProblems(misplaced), 'pdb.yaml[0] PodDisruptionBudget/portcullis'), 'a field in the wrong place');
});

t.test('Kubernetes cross-checks: the manifests agree with each other, the image and the config', async (t) => {
  t.same(crossCheckProblems(manifests, { dockerfile: DOCKERFILE, secretValues: SECRETS }), []);
  t.same(kustomizationProblems(K8S, manifests), []);

  const deployment = doc(manifests, 'Deployment', 'portcullis');
  const container = gatewayContainer(manifests);
  const config = JSON.parse(doc(manifests, 'ConfigMap', 'portcullis-config').data['gateway.config.json']) as Obj;
  t.ok(deployment.spec.replicas >= 2, 'two or more replicas');
  t.same(container.args, ['--config', '/etc/portcullis/gateway.config.json']);
  t.same(container.readinessProbe.httpGet, { path: '/readyz', port: 'admin' });
  t.same(container.livenessProbe.httpGet, { path: '/healthz', port: 'admin' });
  t.same(container.ports.find((p: Obj) => p.name === 'admin').containerPort, config.admin.port);
  t.same(container.lifecycle.preStop.exec.command, ['sleep', '5']);
  t.ok(deployment.spec.template.spec.terminationGracePeriodSeconds > config.drain.timeoutMs / 1000 + 5, 'grace > drain + preStop');
  t.equal(container.securityContext.readOnlyRootFilesystem, true);
  t.equal(deployment.spec.template.spec.securityContext.runAsUser, 1000, 'the image\'s USER');
  t.equal(doc(manifests, 'PodDisruptionBudget', 'portcullis').spec.maxUnavailable, 1);
  t.equal(doc(manifests, 'HorizontalPodAutoscaler', 'portcullis').spec.minReplicas, deployment.spec.replicas);
  t.equal(new URL(config.redis.url).hostname, doc(manifests, 'Service', 'portcullis-redis').metadata.name);
});

t.test('the Secret ships empty placeholders, with which the gateway refuses to start', async (t) => {
  const secret = doc(manifests, 'Secret', 'portcullis-secrets');
  t.same(secret.stringData, { JWT_SECRET: '', ADMIN_TOKEN: '' });
  t.same(crossCheckProblems(manifests, { dockerfile: DOCKERFILE }).sort(), [
    'config: admin.token: environment variable ADMIN_TOKEN is not set',
    'config: authenticators.user-jwt.secret: environment variable JWT_SECRET is not set',
  ]);
  const weak = crossCheckProblems(manifests, { dockerfile: DOCKERFILE, secretValues: { ...SECRETS, JWT_SECRET: 'too-short' } });
  t.same(weak, ['config: authenticators.user-jwt.secret: must be at least 32 bytes']);
});

t.test('the Kubernetes cross-checks find what they look for', async (t) => {
  const check = (change: (ms: Manifest[]) => void) => {
    const ms = structuredClone(manifests);
    change(ms);
    return [...crossCheckProblems(ms, { dockerfile: DOCKERFILE, secretValues: SECRETS }), ...kustomizationProblems(K8S, ms)];
  };
  const deployment = (ms: Manifest[]) => doc(ms, 'Deployment', 'portcullis');
  const config = (ms: Manifest[], change: (c: Obj) => void) => {
    const map = doc(ms, 'ConfigMap', 'portcullis-config');
    const c = JSON.parse(map.data['gateway.config.json']) as Obj;
    change(c);
    map.data['gateway.config.json'] = JSON.stringify(c);
  };
  const cases: [string, (ms: Manifest[]) => void, string][] = [
    ['one replica', (ms) => (deployment(ms).spec.replicas = 1), 'replicas 1'],
    ['a short grace period', (ms) => (deployment(ms).spec.template.spec.terminationGracePeriodSeconds = 35), 'terminationGracePeriodSeconds 35'],
    ['the default grace period', (ms) => delete deployment(ms).spec.template.spec.terminationGracePeriodSeconds, 'terminationGracePeriodSeconds 30'],
    ['a longer drain', (ms) => config(ms, (c) => (c.drain.timeoutMs = 60_000)), 'drain.timeoutMs 60s'],
    ['no preStop', (ms) => delete gatewayContainer(ms).lifecycle, 'no preStop sleep'],
    ['readiness on /healthz', (ms) => (gatewayContainer(ms).readinessProbe.httpGet.path = '/healthz'), 'readinessProbe asks /healthz'],
    ['liveness on the client port', (ms) => (gatewayContainer(ms).livenessProbe.httpGet.port = 'http'), 'livenessProbe asks port 8080'],
    ['a probe on an undeclared port', (ms) => (gatewayContainer(ms).livenessProbe.httpGet.port = 'metrics'), 'port metrics is no container port'],
    ['the admin port moved in the config only', (ms) => config(ms, (c) => (c.admin.port = 9091)), "admin.port is 9091"],
    ['admin on loopback', (ms) => config(ms, (c) => (c.admin.host = '127.0.0.1')), 'admin.host is 127.0.0.1'],
    ['listen host left to its default', (ms) => config(ms, (c) => delete c.listen.host), 'listen.host is not set'],
    ['an invalid config', (ms) => config(ms, (c) => (c.routes[0].mode = 'tunnel')), 'config: routes.0.mode'],
    ['the ConfigMap key renamed', (ms) => {
      const data = doc(ms, 'ConfigMap', 'portcullis-config').data;
      data['config.json'] = data['gateway.config.json'];
      delete data['gateway.config.json'];
    }, 'no key gateway.config.json'],
    ['--config elsewhere', (ms) => (gatewayContainer(ms).args = ['--config', '/etc/gateway/gateway.config.json']), 'is not in a mounted ConfigMap'],
    ['a writable config mount', (ms) => (gatewayContainer(ms).volumeMounts[0].readOnly = false), 'not mounted readOnly'],
    ['a secret key that does not exist', (ms) => (gatewayContainer(ms).env[0].valueFrom.secretKeyRef.key = 'JWT'), 'has no key JWT'],
    ['a writable root filesystem', (ms) => (gatewayContainer(ms).securityContext.readOnlyRootFilesystem = false), 'readOnlyRootFilesystem'],
    ['root allowed', (ms) => {
      delete deployment(ms).spec.template.spec.securityContext.runAsNonRoot;
      delete gatewayContainer(ms).securityContext.runAsNonRoot;
    }, 'runAsNonRoot'],
    ['no limits', (ms) => delete doc(ms, 'Deployment', 'portcullis-redis').spec.template.spec.containers[0].resources.limits, 'portcullis-redis redis: no resources.limits.cpu'],
    ['a selector that misses the template', (ms) => (deployment(ms).spec.selector.matchLabels.tier = 'edge'), 'selector.matchLabels do not match'],
    ['a Service selecting nothing', (ms) => (doc(ms, 'Service', 'portcullis').spec.selector['app.kubernetes.io/component'] = 'gw'), 'selector matches 0'],
    ['a Service selecting both', (ms) => delete doc(ms, 'Service', 'portcullis').spec.selector['app.kubernetes.io/component'], 'selector matches 2'],
    ['a Service to a missing port', (ms) => (doc(ms, 'Service', 'portcullis').spec.ports[0].targetPort = 'web'), 'targetPort web'],
    ['a PDB that blocks every eviction', (ms) => {
      const spec = doc(ms, 'PodDisruptionBudget', 'portcullis').spec;
      delete spec.maxUnavailable;
      spec.minAvailable = 2;
    }, 'allows 0 disruptions'],
    ['a PDB at 100%', (ms) => {
      const spec = doc(ms, 'PodDisruptionBudget', 'portcullis').spec;
      delete spec.maxUnavailable;
      spec.minAvailable = '100%';
    }, 'allows 0 disruptions'],
    ['a PDB that protects nothing', (ms) => (doc(ms, 'PodDisruptionBudget', 'portcullis').spec.maxUnavailable = '100%'), 'every pod to be evicted'],
    ['a PDB on the wrong pods', (ms) => (doc(ms, 'PodDisruptionBudget', 'portcullis').spec.selector.matchLabels['app.kubernetes.io/component'] = 'redis'), "expected the gateway's pods"],
    ['an HPA on another Deployment', (ms) => (doc(ms, 'HorizontalPodAutoscaler', 'portcullis').spec.scaleTargetRef.name = 'gateway'), 'scaleTargetRef Deployment/gateway'],
    ['an HPA down to one', (ms) => (doc(ms, 'HorizontalPodAutoscaler', 'portcullis').spec.minReplicas = 1), 'minReplicas 1'],
    ['CPU scaling without CPU requests', (ms) => delete gatewayContainer(ms).resources.requests.cpu, 'needs cpu requests'],
    ['redis URL to no Service', (ms) => config(ms, (c) => (c.redis.url = 'redis://redis:6379')), 'no Service redis'],
    ['redis URL on the wrong port', (ms) => config(ms, (c) => (c.redis.url = 'redis://portcullis-redis:6380')), 'has no port 6380'],
    ['a NetworkPolicy from no pods', (ms) => (doc(ms, 'NetworkPolicy', 'portcullis-redis').spec.ingress[0].from[0].podSelector.matchLabels['app.kubernetes.io/component'] = 'gw'), 'from.podSelector matches no'],
    ['the kustomization applying the Secret', (ms) => ms.find((m) => m.file === 'kustomization.yaml')!.doc.resources.push('secret.yaml'), 'a Secret with placeholders'],
    ['the kustomization missing a file', (ms) => ms.find((m) => m.file === 'kustomization.yaml')!.doc.resources.pop(), 'does not list hpa.yaml'],
    ['the kustomization listing a missing file', (ms) => ms.find((m) => m.file === 'kustomization.yaml')!.doc.resources.push('ingress.yaml'), 'ingress.yaml does not exist'],
  ];
  for (const [name, change, expected] of cases) {
    const problems = check(change);
    t.ok(has(problems, expected), `${name}: ${problems.join('; ') || 'nothing found'}`);
  }
});
