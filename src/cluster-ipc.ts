import cluster, { type Worker } from 'node:cluster';
import { revocationTarget } from './admin.js';
import type { ConnectionView } from './connections.js';
import type { Gateway } from './gateway.js';
import type { RevocationTarget } from './revocations.js';

/** What the cluster primary asks a worker, for the admin endpoints it serves on their behalf. */
export type WorkerQuestion = { op: 'ready' } | { op: 'connections' } | { op: 'metrics' } | { op: 'revoke'; target: RevocationTarget; share: boolean };

/** The answers, by question. */
export interface WorkerAnswers {
  ready: boolean;
  connections: ConnectionView[];
  revoke: number;
  /** prom-client's `getMetricsAsJSON()`, for the primary's AggregatorRegistry. */
  metrics: object[];
}

// Every message carries this tag, so anything else on the channel (another library's) is ignored.
const TAG = 'portcullis';

interface Ask {
  [TAG]: 'ask';
  id: number;
  question: WorkerQuestion;
}

interface Reply {
  [TAG]: 'answer';
  id: number;
  value: unknown;
}

const isObject = (value: unknown): value is Record<string, unknown> => value !== null && typeof value === 'object';

/** Whether an answer has the shape its question expects (a worker is trusted, a garbled message is not). */
function fits(op: WorkerQuestion['op'], value: unknown): boolean {
  if (op === 'ready') return typeof value === 'boolean';
  if (op === 'revoke') return Number.isSafeInteger(value) && (value as number) >= 0;
  if (op === 'metrics') return Array.isArray(value) && value.every((m) => isObject(m) && typeof m.name === 'string');
  return Array.isArray(value) && value.every(isObject);
}

interface Pending {
  op: WorkerQuestion['op'];
  workerId: number;
  resolve(value: unknown): void;
  timer: NodeJS.Timeout;
}

/**
 * The primary's side of the channel: asks one worker a question and matches its answer by id. A worker
 * that does not answer within the timeout, cannot be sent to, or exits meanwhile answers `undefined`.
 */
export class WorkerQuestions {
  readonly #pending = new Map<number, Pending>();
  #next = 0;

  constructor(readonly timeoutMs = 2000) {}

  /** Asks `worker`; resolves its answer, or undefined when it gives none in time. */
  ask<Q extends WorkerQuestion>(worker: Worker, question: Q): Promise<WorkerAnswers[Q['op']] | undefined> {
    const id = ++this.#next;
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.#settle(id, undefined), this.timeoutMs);
      this.#pending.set(id, { op: question.op, workerId: worker.id, resolve: resolve as (value: unknown) => void, timer });
      const message: Ask = { [TAG]: 'ask', id, question };
      // With a callback, a closed channel is reported here instead of as an 'error' event.
      worker.send(message, (err: Error | null) => {
        if (err) this.#settle(id, undefined);
      });
    });
  }

  /** Feeds a message from a worker in; returns whether it was an answer. */
  received(message: unknown): boolean {
    if (!isObject(message) || message[TAG] !== 'answer' || typeof message.id !== 'number') return false;
    const pending = this.#pending.get(message.id);
    if (pending) this.#settle(message.id, fits(pending.op, message.value) ? message.value : undefined);
    return true;
  }

  /** A worker exited: what it was asked will not be answered. */
  gone(workerId: number): void {
    for (const [id, pending] of this.#pending) if (pending.workerId === workerId) this.#settle(id, undefined);
  }

  #settle(id: number, value: unknown): void {
    const pending = this.#pending.get(id);
    if (!pending) return;
    this.#pending.delete(id);
    clearTimeout(pending.timer);
    pending.resolve(value);
  }
}

/** Checks a question read off the channel; undefined when it is not one of ours or is malformed. */
function questionOf(message: unknown): { id: number; question: WorkerQuestion } | undefined {
  if (!isObject(message) || message[TAG] !== 'ask' || !Number.isSafeInteger(message.id) || !isObject(message.question)) return undefined;
  const { op, target, share } = message.question;
  const id = message.id as number;
  if (op === 'ready' || op === 'connections' || op === 'metrics') return { id, question: { op } };
  const checked = revocationTarget(target);
  if (op === 'revoke' && checked && typeof share === 'boolean') return { id, question: { op, target: checked, share } };
  return undefined;
}

/**
 * The worker's side: answers the primary's questions from this worker's gateway. `isListening` tells
 * whether its listener is up. Returns a function that stops answering.
 */
export function answerPrimary(gateway: Gateway, isListening: () => boolean): () => void {
  const onMessage = (message: unknown) => {
    const asked = questionOf(message);
    if (!asked) return;
    const { id, question } = asked;
    const reply = (value: unknown) => process.send?.({ [TAG]: 'answer', id, value } satisfies Reply, undefined, undefined, () => {});
    // Answered with null, which the primary counts as no answer, at once rather than at its timeout.
    const failed = (err: unknown) => {
      gateway.log.error({ op: question.op, error: { message: (err as Error).message } }, 'admin question failed');
      reply(null);
    };
    try {
      if (question.op === 'ready') reply(isListening() && !gateway.draining && gateway.redisReady);
      else if (question.op === 'connections') reply(gateway.listConnections());
      else if (question.op === 'metrics') gateway.metrics.registry.getMetricsAsJSON().then(reply, failed);
      // Every worker applies it; only the one told to share stores and publishes it (with redis).
      else reply(gateway.revoke(question.target, { share: question.share }));
    } catch (err) {
      failed(err);
    }
  };
  process.on('message', onMessage);
  return () => process.off('message', onMessage);
}

/**
 * In a worker, calls `drain` when the channel to the primary closes: the primary is gone (even by
 * SIGKILL), so the worker drains and exits rather than run on as an orphan.
 */
export function onPrimaryGone(drain: () => void): void {
  const worker = cluster.worker;
  worker?.once('disconnect', () => {
    // node:cluster exits a worker at once after this event when the disconnect was not asked for, which
    // would drop every connection without a close frame; marking it as asked lets the drain send 1001.
    worker.exitedAfterDisconnect = true;
    drain();
  });
}
