import cluster, { type Address, type Worker } from 'node:cluster';
import type { Server } from 'node:http';
import { dirname } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { LRUCache } from 'lru-cache';
import type { DestinationStream, Logger } from 'pino';
import { AggregatorRegistry } from 'prom-client';
import { createAdminServer, type AdminTarget } from './admin.js';
import { WorkerQuestions } from './cluster-ipc.js';
import { readConfigFile, validateConfig } from './config/load.js';
import type { GatewayConfig } from './config/schema.js';
import type { ConnectionView } from './connections.js';
import { listen } from './listen.js';
import { createLogger } from './log.js';
import { revocationKey, type RevocationTarget } from './revocations.js';

/** A worker that dies sooner than this after it was started is restarted after a growing delay. */
const QUICK_EXIT_MS = 2000;
const FIRST_DELAY_MS = 100;
const MAX_DELAY_MS = 5000;
// As long as any worker keeps a revocation (SPEC 9: its expiry when known, else 24 hours).
const REVOCATION_TTL_MS = 24 * 3600 * 1000;
const MAX_REVOCATIONS = 100_000;

/** One of the N places a worker runs in; its worker is replaced when it exits. */
interface Slot {
  worker: Worker | undefined;
  startedAt: number;
  /** The worker's listener is up (node:cluster's 'listening' event). */
  listening: boolean;
  /** A SIGHUP came while the worker was starting: passed on once it listens. */
  reloadPending: boolean;
  delayMs: number;
  timer: NodeJS.Timeout | undefined;
}

/** A revocation the primary keeps, to tell workers started later. */
interface Kept {
  target: RevocationTarget;
  /** Whether a worker was asked to store and publish it (with redis). */
  shared: boolean;
}

/**
 * The node:cluster primary of `workers: N` (N > 1): forks N workers that each run the gateway on the
 * shared `listen` port, restarts those that exit, passes SIGHUP on, drains them all on SIGTERM/SIGINT,
 * and serves the admin port, asking the workers over IPC.
 */
export class ClusterPrimary implements AdminTarget {
  readonly log: Logger;
  readonly token: string;
  readonly #file: string;
  readonly #config: GatewayConfig;
  readonly #slots: Slot[];
  readonly #questions = new WorkerQuestions();
  // Without redis a restarted worker would know none of them: each new worker is told them all.
  readonly #revoked = new LRUCache<string, Kept>({ max: MAX_REVOCATIONS, ttl: REVOCATION_TTL_MS });
  #admin: Server | undefined;
  #draining = false;
  #everyoneListened = false;
  #exitCode = 0;
  #done: (code: number) => void = () => {};
  readonly #finished = new Promise<number>((resolve) => (this.#done = resolve));

  /** @param destination where log lines go (pretty for a terminal); default stdout as JSON */
  constructor(file: string, config: GatewayConfig, destination?: DestinationStream) {
    this.#file = file;
    this.#config = config;
    this.log = createLogger(config.log?.level, destination);
    this.token = config.admin?.token ?? '';
    this.#slots = Array.from({ length: config.workers ?? 2 }, () => ({
      worker: undefined,
      startedAt: 0,
      listening: false,
      reloadPending: false,
      delayMs: 0,
      timer: undefined,
    }));
  }

  /** True once stopping began. */
  get draining(): boolean {
    return this.#draining;
  }

  /** Starts the admin port and the workers; resolves the exit code once every worker is gone. */
  async run(): Promise<number> {
    // Handled from the start; repeats are ignored (a terminal's Ctrl+C reaches the workers too).
    process.on('SIGTERM', () => this.#stop({ signal: 'SIGTERM' }));
    process.on('SIGINT', () => this.#stop({ signal: 'SIGINT' }));
    process.on('SIGHUP', () => this.#reload());
    const admin = this.#config.admin;
    if (admin) {
      this.#admin = createAdminServer(this);
      try {
        const a = await listen(this.#admin, admin.port, admin.host ?? '127.0.0.1');
        this.log.info({ address: `${a.address}:${a.port}`, port: a.port }, 'admin listening');
      } catch (err) {
        this.log.fatal({ error: { message: (err as Error).message, code: (err as NodeJS.ErrnoException).code } }, 'could not listen');
        return 2;
      }
    }
    // The workers read exactly the file this process validated.
    cluster.setupPrimary({ args: ['--config', this.#file] });
    cluster.on('listening', (worker, address) => this.#listening(worker, address));
    cluster.on('exit', (worker, code, signal) => this.#exited(worker, code, signal));
    cluster.on('message', (_worker, message) => this.#questions.received(message));
    for (const slot of this.#slots) this.#fork(slot);
    return this.#finished;
  }

  /** `/readyz`: not draining, and at least one worker listening, not draining, with Redis when configured. */
  isReady(): Promise<boolean> {
    const workers = this.#listeningWorkers();
    if (this.#draining || workers.length === 0) return Promise.resolve(false);
    return new Promise((resolve) => {
      let left = workers.length;
      for (const worker of workers) {
        void this.#ask(worker, { op: 'ready' }).then((ready) => {
          if (ready === true) resolve(true);
          else if (--left === 0) resolve(false);
        });
      }
    });
  }

  /** `GET /connections`: every worker's live connections (a worker that does not answer is left out). */
  async listConnections(): Promise<ConnectionView[]> {
    const lists = await Promise.all(this.#listeningWorkers().map((worker) => this.#ask(worker, { op: 'connections' })));
    return lists.flatMap((list) => list ?? []);
  }

  /**
   * `POST /revoke`: every worker applies it and closes its connections of it; one of them stores and
   * publishes it when there is redis. Resolves how many connections were closed in all.
   */
  async revoke(target: RevocationTarget): Promise<number> {
    const workers = this.#listeningWorkers();
    const kept: Kept = { target, shared: false };
    this.#revoked.set(revocationKey(target), kept);
    const closed = await Promise.all(workers.map((worker, i) => this.#ask(worker, { op: 'revoke', target, share: i === 0 })));
    // Unshared (no worker, or the first did not answer): the next worker to start shares it.
    if (closed[0] !== undefined) kept.shared = true;
    return closed.reduce<number>((sum, n) => sum + (n ?? 0), 0);
  }

  /**
   * `GET /metrics`: every worker's metrics, summed by prom-client's AggregatorRegistry (counters and
   * gauges added up, histograms merged; a worker that does not answer is left out).
   */
  async metrics(): Promise<string> {
    const answers = await Promise.all(this.#listeningWorkers().map((worker) => this.#ask(worker, { op: 'metrics' })));
    return AggregatorRegistry.aggregate(answers.filter((a) => a !== undefined) as Parameters<typeof AggregatorRegistry.aggregate>[0]).metrics();
  }

  #ask<Q extends Parameters<WorkerQuestions['ask']>[1]>(worker: Worker, question: Q) {
    return this.#questions.ask(worker, question).then((answer) => {
      if (answer === undefined) this.log.warn({ worker: who(worker), op: question.op }, 'a worker did not answer');
      return answer;
    });
  }

  #listeningWorkers(): Worker[] {
    return this.#slots.flatMap((slot) => (slot.worker && slot.listening ? [slot.worker] : []));
  }

  #slotOf(worker: Worker): Slot | undefined {
    return this.#slots.find((slot) => slot.worker === worker);
  }

  #fork(slot: Slot): void {
    slot.timer = undefined;
    if (this.#draining) return;
    const worker = cluster.fork();
    Object.assign(slot, { worker, startedAt: Date.now(), listening: false, reloadPending: false });
    // A signal or message that cannot reach it is reported here rather than crash the primary.
    worker.on('error', (err: Error) => this.log.warn({ worker: who(worker), error: { message: err.message } }, 'worker unreachable'));
    this.log.info({ worker: who(worker) }, 'worker started');
  }

  #listening(worker: Worker, address: Address): void {
    const slot = this.#slotOf(worker);
    if (!slot || slot.listening) return;
    slot.listening = true;
    if (slot.reloadPending) this.#signal(worker, 'SIGHUP');
    this.#revoked.forEach((kept) => {
      void this.#ask(worker, { op: 'revoke', target: kept.target, share: !kept.shared }).then((closed) => {
        if (closed !== undefined) kept.shared = true;
      });
    });
    if (!this.#everyoneListened && this.#slots.every((s) => s.listening)) {
      this.#everyoneListened = true;
      this.log.info({ address: `${address.address}:${address.port}`, port: address.port, workers: this.#slots.length, config: this.#file }, 'all workers listening');
    }
  }

  #exited(worker: Worker, code: number | null, signal: string | null): void {
    this.#questions.gone(worker.id);
    const slot = this.#slotOf(worker);
    if (!slot) return;
    slot.worker = undefined;
    const fields = { worker: who(worker), code, signal };
    if (this.#draining) {
      this.log.info(fields, 'worker exited');
      return this.#finishIfEmpty();
    }
    this.log.warn(fields, 'worker exited');
    // 1 (bad config) or 2 (could not listen) before it ever listened: the next one would fail the same
    // way. Fatal while the cluster starts or when no worker serves; otherwise the others keep serving.
    const failedToStart = !slot.listening && (code === 1 || code === 2);
    if (failedToStart && (!this.#everyoneListened || this.#listeningWorkers().length === 0)) {
      this.log.fatal({ worker: who(worker), code }, 'a worker could not start; stopping');
      return this.#stop({ reason: 'a worker could not start' }, code!);
    }
    slot.listening = false;
    const quick = Date.now() - slot.startedAt < QUICK_EXIT_MS;
    slot.delayMs = quick ? Math.min(slot.delayMs * 2 || FIRST_DELAY_MS, MAX_DELAY_MS) : 0;
    if (failedToStart) this.log.error({ worker: who(worker), code, retryInMs: slot.delayMs }, 'a restarted worker could not start; retrying');
    slot.timer = setTimeout(() => this.#fork(slot), slot.delayMs);
  }

  /** Passes SIGHUP on: every worker re-reads the config file (SPEC 6.3). */
  #reload(): void {
    if (this.#draining) return;
    let workers = 0;
    for (const slot of this.#slots) {
      if (!slot.worker) continue;
      workers++;
      // A worker still starting has no SIGHUP handler yet (the signal would kill it): it gets it once listening.
      if (slot.listening) this.#signal(slot.worker, 'SIGHUP');
      else slot.reloadPending = true;
    }
    this.log.info({ signal: 'SIGHUP', workers }, 'reloading every worker');
    this.#restartOnlyChanges();
  }

  /** Says so when the file changes what only a restart applies: the primary keeps what it started with. */
  #restartOnlyChanges(): void {
    let next: GatewayConfig;
    try {
      next = validateConfig(readConfigFile(this.#file), { baseDir: dirname(this.#file), sidecar: true });
    } catch {
      return; // Every worker logs the problems and keeps its config.
    }
    const fields = (['workers', 'admin'] as const).filter((key) => !isDeepStrictEqual(next[key], this.#config[key]));
    if (fields.length > 0) this.log.warn({ fields }, 'changed fields that take effect at the next restart only');
  }

  /** Stops restarting and drains every worker (each as SPEC 6.4); exits with `exitCode` once all are gone. */
  #stop(cause: { signal: NodeJS.Signals } | { reason: string }, exitCode = 0): void {
    if (this.#draining) return;
    this.#draining = true;
    this.#exitCode = exitCode;
    const live = this.#slots.flatMap((slot) => (slot.worker ? [slot.worker] : []));
    this.log.info({ ...cause, workers: live.length }, 'stopping');
    for (const slot of this.#slots) clearTimeout(slot.timer);
    // A signal, not worker.kill(): that would disconnect first, and /connections still asks them while draining.
    for (const worker of live) this.#signal(worker, 'SIGTERM');
    this.#finishIfEmpty();
  }

  #finishIfEmpty(): void {
    if (this.#slots.some((slot) => slot.worker)) return;
    this.#admin?.close();
    this.#admin?.closeAllConnections();
    this.log.info('stopped');
    this.#done(this.#exitCode);
  }

  #signal(worker: Worker, signal: NodeJS.Signals): void {
    try {
      worker.process.kill(signal);
    } catch (err) {
      this.log.warn({ worker: who(worker), signal, error: { message: (err as Error).message } }, 'could not signal a worker');
    }
  }
}

/** A worker as log lines name it (nested: the line's own `pid` is the primary's). */
function who(worker: Worker): { id: number; pid: number | undefined } {
  return { id: worker.id, pid: worker.process.pid };
}

/** Runs the primary of `workers: N` for the config file `file` (already validated as `config`). */
export function runPrimary(file: string, config: GatewayConfig, destination?: DestinationStream): Promise<number> {
  return new ClusterPrimary(file, config, destination).run();
}
