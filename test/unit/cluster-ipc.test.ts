// The IPC of `workers: N` (src/cluster-ipc.ts) without processes: the primary's questions matched to
// answers by id, and the worker's side fed malformed messages, which must neither crash nor act.
import type { Worker } from 'node:cluster';
import t from 'tap';
import { answerPrimary, WorkerQuestions } from '../../src/cluster-ipc.js';
import type { Gateway } from '../../src/gateway.js';
import type { RevocationTarget } from '../../src/revocations.js';

type Sent = { portcullis: string; id: number; question: unknown };

/** A worker whose channel records what is sent; `fail` makes the send report an error. */
function fakeWorker(id: number, fail = false) {
  const sent: Sent[] = [];
  const worker = {
    id,
    send(message: Sent, callback: (err: Error | null) => void) {
      sent.push(message);
      queueMicrotask(() => callback(fail ? new Error('channel closed') : null));
      return !fail;
    },
  };
  return { worker: worker as unknown as Worker, sent };
}

t.test('WorkerQuestions: answers are matched by id and checked against the question', async (t) => {
  const q = new WorkerQuestions(1000);
  const a = fakeWorker(1);
  const b = fakeWorker(2);
  const ready = q.ask(a.worker, { op: 'ready' });
  const list = q.ask(b.worker, { op: 'connections' });
  const revoke = q.ask(a.worker, { op: 'revoke', target: { subject: 'alice' }, share: true });
  t.match(a.sent, [{ portcullis: 'ask', question: { op: 'ready' } }, { portcullis: 'ask', question: { op: 'revoke', target: { subject: 'alice' }, share: true } }]);
  // Answered out of order; foreign and unknown messages are ignored.
  t.equal(q.received({ portcullis: 'answer', id: b.sent[0]!.id, value: [{ id: 'c1' }] }), true);
  t.equal(q.received({ cmd: 'NODE_CLUSTER' }), false, 'not ours');
  t.equal(q.received('text'), false);
  t.equal(q.received(null), false);
  t.equal(q.received({ portcullis: 'answer', id: 999, value: true }), true, 'an answer to nothing asked is dropped');
  q.received({ portcullis: 'answer', id: a.sent[1]!.id, value: 3 });
  q.received({ portcullis: 'answer', id: a.sent[0]!.id, value: true });
  t.same(await Promise.all([ready, list, revoke]), [true, [{ id: 'c1' }], 3]);
});

t.test('WorkerQuestions: a wrong shape, a timeout, a failed send or an exit answer undefined', async (t) => {
  const q = new WorkerQuestions(50);
  const w = fakeWorker(1);
  const shapes: [Parameters<WorkerQuestions['ask']>[1], unknown][] = [
    [{ op: 'ready' }, 'yes'],
    [{ op: 'revoke', target: { jti: 'x' }, share: false }, -1],
    [{ op: 'revoke', target: { jti: 'x' }, share: false }, 1.5],
    [{ op: 'connections' }, { length: 1 }],
    [{ op: 'connections' }, [1, 2]],
    [{ op: 'ready' }, null],
  ];
  for (const [question, value] of shapes) {
    const answer = q.ask(w.worker, question);
    q.received({ portcullis: 'answer', id: w.sent.at(-1)!.id, value });
    t.equal(await answer, undefined, `${question.op} answered ${JSON.stringify(value)}: undefined`);
  }
  const started = Date.now();
  t.equal(await q.ask(w.worker, { op: 'ready' }), undefined, 'no answer: undefined');
  t.ok(Date.now() - started >= 45, 'after the timeout');
  t.equal(await q.ask(fakeWorker(2, true).worker, { op: 'ready' }), undefined, 'a send that fails: undefined at once');
  const pending = q.ask(w.worker, { op: 'connections' });
  q.gone(1);
  t.equal(await pending, undefined, 'the worker exited: undefined');
  q.received({ portcullis: 'answer', id: w.sent.at(-1)!.id, value: [] });
  t.pass('a late answer after that is ignored');
});

t.test('answerPrimary: answers well-formed questions, ignores the rest, survives a failing gateway', async (t) => {
  const replies: unknown[] = [];
  const revoked: [RevocationTarget, { share?: boolean }][] = [];
  const errors: unknown[] = [];
  let failing = false;
  const gateway = {
    draining: false,
    redisReady: true,
    listConnections: () => [{ id: 'c1' }],
    revoke(target: RevocationTarget, options: { share?: boolean }) {
      if (failing) throw new Error('boom');
      revoked.push([target, options]);
      return 2;
    },
    log: { error: (...args: unknown[]) => errors.push(args) },
  } as unknown as Gateway;
  const realSend = process.send;
  process.send = ((message: unknown, _h: unknown, _o: unknown, callback?: () => void) => {
    replies.push(message);
    callback?.();
    return true;
  }) as typeof process.send;
  let listening = false;
  const stop = answerPrimary(gateway, () => listening);
  t.teardown(() => {
    stop();
    process.send = realSend;
  });
  const ask = (message: unknown) => process.emit('message', message, undefined);

  ask({ portcullis: 'ask', id: 1, question: { op: 'ready' } });
  listening = true;
  ask({ portcullis: 'ask', id: 2, question: { op: 'ready' } });
  ask({ portcullis: 'ask', id: 3, question: { op: 'connections' } });
  ask({ portcullis: 'ask', id: 4, question: { op: 'revoke', target: { sessionId: 's1' }, share: true } });
  t.same(replies, [
    { portcullis: 'answer', id: 1, value: false },
    { portcullis: 'answer', id: 2, value: true },
    { portcullis: 'answer', id: 3, value: [{ id: 'c1' }] },
    { portcullis: 'answer', id: 4, value: 2 },
  ]);
  t.same(revoked, [[{ sessionId: 's1' }, { share: true }]]);

  replies.length = 0;
  const malformed = [
    null,
    'ask',
    { portcullis: 'answer', id: 5, value: 1 },
    { portcullis: 'ask', id: '6', question: { op: 'ready' } },
    { portcullis: 'ask', id: 7 },
    { portcullis: 'ask', id: 8, question: { op: 'shutdown' } },
    { portcullis: 'ask', id: 9, question: { op: 'revoke', target: { subject: 'a' } } },
    { portcullis: 'ask', id: 10, question: { op: 'revoke', target: { subject: '' }, share: false } },
    { portcullis: 'ask', id: 11, question: { op: 'revoke', target: { subject: 'a', jti: 'b' }, share: false } },
    { portcullis: 'ask', id: 12, question: { op: 'revoke', target: 'alice', share: false } },
  ];
  for (const message of malformed) ask(message);
  t.same(replies, [], 'no malformed question is answered');
  t.equal(revoked.length, 1, 'nor acted on');

  failing = true;
  ask({ portcullis: 'ask', id: 13, question: { op: 'revoke', target: { subject: 'a' }, share: false } });
  t.same(replies, [{ portcullis: 'answer', id: 13, value: null }], 'a failure is answered null at once');
  t.equal(errors.length, 1, 'and logged');
});
