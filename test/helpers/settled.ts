// What every fault case checks once the fault has played out: nothing crashed, nothing is left open.
import type { Test } from 'tap';
import type { TestGateway } from './gateway.js';
import { crashSpy, openFds, sleep } from './net.js';

/** Sockets open on a gateway's HTTP server right now. */
export function serverConnections(gw: TestGateway): Promise<number> {
  return new Promise((resolve, reject) => gw.server.getConnections((err, n) => (err ? reject(err) : resolve(n))));
}

/** Something that counts the connections it holds open (an upstream, a backend). */
export interface Holder {
  readonly open: number;
}

/**
 * Watches one test: every uncaught exception and unhandled rejection, and the fds open at the start.
 * `check()` asserts, once things have had up to `ms` to close: the gateway tracks no connection, its server
 * holds no socket, each holder holds none, fds are back within `slack` of the baseline, and nothing crashed.
 */
export function watchFaults(t: Test) {
  const crashes = crashSpy(t);
  let baseline = openFds();
  return {
    /**
     * Takes the fd baseline again once `gw` holds no connection: after a warm-up that opens lasting handles
     * (the upstream and backend connections a healthy run leaves pooled, lazily made servers).
     */
    async rebase(gw: TestGateway): Promise<void> {
      const deadline = Date.now() + 3000;
      while ((gw.gateway.connections > 0 || (await serverConnections(gw)) > 0) && Date.now() < deadline) await sleep(25);
      baseline = openFds();
    },
    /** `on`: the (sub)test to assert on, when not the watched one; `todo`: a known bug makes the crash check fail. */
    async check(gw: TestGateway, holders: Record<string, Holder> = {}, { ms = 3000, slack = 4, on = t, todo = undefined as string | undefined } = {}): Promise<void> {
      const t = on;
      const settled = async () => gw.gateway.connections === 0 && (await serverConnections(gw)) === 0 && Object.values(holders).every((h) => h.open === 0) && openFds() <= baseline + slack;
      const deadline = Date.now() + ms;
      while (!(await settled()) && Date.now() < deadline) await sleep(25);
      t.equal(gw.gateway.connections, 0, 'the gateway tracks no connection');
      t.equal(await serverConnections(gw), 0, "no socket left on the gateway's server");
      for (const [name, holder] of Object.entries(holders)) t.equal(holder.open, 0, `${name}: no connection left open`);
      const fds = openFds();
      t.ok(fds <= baseline + slack, `fds back near the baseline (${fds}, baseline ${baseline})`);
      t.same(crashes.splice(0), [], 'no uncaught exception or unhandled rejection', { todo });
    },
  };
}

