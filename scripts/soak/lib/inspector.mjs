// Heap after a full GC, read from outside the gateway through the V8 inspector (the child runs with
// `--inspect=127.0.0.1:0`): HeapProfiler.collectGarbage, then Runtime.getHeapUsage. This needs no hook
// in src/ and no --expose-gc, and it is the same collection DevTools' "collect garbage" button runs.
import WebSocket from 'ws';

const URL_RE = /Debugger listening on (ws:\/\/\S+)/;

/** The inspector's WebSocket URL in a process's stderr output, or null while it has not printed it. */
export function inspectorUrl(output) {
  return URL_RE.exec(output)?.[1] ?? null;
}

/** A Chrome DevTools Protocol session: `call(method, params)` resolves the result. */
export async function connectInspector(url) {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  let id = 0;
  const pending = new Map();
  ws.on('message', (data) => {
    const msg = JSON.parse(data.toString());
    const p = msg.id !== undefined && pending.get(msg.id);
    if (!p) return;
    pending.delete(msg.id);
    if (msg.error) p.reject(new Error(`${msg.error.message} (${msg.error.code})`));
    else p.resolve(msg.result);
  });
  ws.on('close', () => {
    for (const p of pending.values()) p.reject(new Error('inspector closed'));
    pending.clear();
  });
  ws.on('error', () => {});
  const call = (method, params = {}) =>
    new Promise((resolve, reject) => {
      if (ws.readyState !== WebSocket.OPEN) return reject(new Error('inspector closed'));
      const n = ++id;
      pending.set(n, { resolve, reject });
      ws.send(JSON.stringify({ id: n, method, params }));
    });
  return {
    call,
    /** V8 heap used (bytes) after two full collections (the second picks up what finalizers freed). */
    async heapAfterGc() {
      await call('HeapProfiler.collectGarbage');
      await call('HeapProfiler.collectGarbage');
      const { usedSize } = await call('Runtime.getHeapUsage');
      return usedSize;
    },
    close: () => ws.close(),
  };
}
