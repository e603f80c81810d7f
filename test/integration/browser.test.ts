// Issue 5, SPEC 2.1 (`protocol:`), 2.2 (`session`), 2.3 (`origins`, `rejectMode`): the browser demo
// (examples/browser, against the BUILT package) in a REAL headless Chromium. What only a browser can show:
// it cannot set headers, so the token rides in Sec-WebSocket-Protocol and the handshake must get a
// subprotocol back; it sends cookies by itself, so only `origins` tells the page's own origin from another;
// and it never shows JavaScript a refused handshake's status, only a close code.
// Chromium is the Debian package (scripts/ensure-chromium.sh); without it these tests FAIL, saying how
// to install it.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import t, { type Test } from 'tap';
import type { Browser, Page } from 'playwright-core';
import { start, type BrowserDemo } from '../../examples/browser/serve.mjs';
import { BROWSER_TIMEOUT_MS, findChromium, launchChromium, missingChromiumMessage, newContext, openPage } from '../helpers/browser.js';
import { cleanEnv, ROOT } from '../helpers/cli.js';
import { SECRET } from '../helpers/tokens.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';

// Launching Chromium and a dozen page round trips on a loaded 2-core machine: far more than tap's 60 s.
t.setTimeout(180_000);

/** One connection as the page records it (`window.portcullisDemo.results`, examples/browser/app.js). */
interface Result {
  id: number;
  kind: string;
  state: string;
  opened: boolean;
  protocol: string | null;
  sent: string | null;
  messages: string[];
  error: boolean;
  close: { code: number; reason: string; wasClean: boolean } | null;
}
interface DemoWindow {
  portcullisDemo: { results: Result[] };
}
interface Login {
  subject: string;
  token: string;
  badToken: string;
}
interface Refusal {
  status: number;
  reason: string;
  origin: string | undefined;
  cookie: string | undefined;
}

interface Demo {
  demo: BrowserDemo;
  upstream: EchoUpstream;
  /** Every handshake the gateway refused, with the Origin and Cookie the browser sent. */
  refused: Refusal[];
}

/** The demo with the test's own echo upstream (which records every handshake it accepted). */
async function startDemo(t: Test): Promise<Demo> {
  const upstream = await startEchoUpstream(t);
  const demo = await start(0, { secret: SECRET, upstream: upstream.url, logLevel: 'silent' });
  t.teardown(() => demo.close());
  const refused: Refusal[] = [];
  demo.gateway.on('rejected', (req, status, reason) => refused.push({ status, reason, origin: req.headers.origin, cookie: req.headers.cookie }));
  return { demo, upstream, refused };
}

/** Clicks "Log in"; resolves what POST /login answered, once the page has shown it. */
async function logIn(page: Page): Promise<Login> {
  const [response] = await Promise.all([page.waitForResponse((r) => new URL(r.url()).pathname === '/login'), page.click('#login')]);
  await page.locator('#login-state[data-state="logged-in"]').waitFor();
  return (await response.json()) as Login;
}

/** Clicks the button for `kind` and resolves the connection's result once the page saw it close. */
async function connect(page: Page, kind: string): Promise<Result> {
  const index = await page.evaluate(() => (window as unknown as DemoWindow).portcullisDemo.results.length);
  await page.click(`#connect-${kind}`);
  await page.waitForFunction((i) => ['closed', 'not sent'].includes((window as unknown as DemoWindow).portcullisDemo.results[i]?.state ?? ''), index);
  return page.evaluate((i) => (window as unknown as DemoWindow).portcullisDemo.results[i]!, index);
}

/** What the page shows a person for connection `id`. */
const shown = async (page: Page, id: number) => (await page.locator(`#log li[data-id="${id}"]`).textContent()) ?? '';

function suite(browser: Browser) {
  t.test('token in Sec-WebSocket-Protocol: an echo through the gateway; the token never reaches the upstream nor comes back', async (t) => {
    const { demo, upstream } = await startDemo(t);
    const page = await openPage(await newContext(t, browser), demo.url);
    const { token } = await logIn(page);

    const r = await connect(page, 'token');
    t.ok(r.opened, 'the handshake completed in the browser');
    t.equal(r.protocol, 'bearer', 'the browser got the bare marker back, never the token entry');
    t.same(r.messages, [r.sent], 'the echo came back');
    t.same(r.close, { code: 1000, reason: 'done', wasClean: true }, 'closed by the page after the echo');

    t.equal(upstream.seen.length, 1);
    const seen = upstream.seen[0]!;
    t.equal(seen.url, '/echo');
    t.equal(seen.headers['sec-websocket-protocol'], undefined, 'neither the token entry nor the marker was offered upstream');
    t.equal(seen.protocol, '', 'the upstream selected nothing: the gateway answered the marker');
    t.equal(seen.headers['x-auth-subject'], 'alice', 'the upstream learnt who, from the gateway');
    t.equal(seen.headers.origin, new URL(demo.url).origin, 'the page origin travels on');
    t.notOk(JSON.stringify(seen.headers).includes(token), 'the token is nowhere in the upstream handshake');
    t.notOk(JSON.stringify(seen.headers).includes('bearer'), 'no protocol entry at all');
  });

  t.test('rejectMode "close": the refusal reason is readable from page JavaScript; with "http" only 1006', async (t) => {
    const { demo, upstream, refused } = await startDemo(t);
    const page = await openPage(await newContext(t, browser), demo.url);
    await logIn(page);

    const closeMode = await connect(page, 'bad-token');
    t.ok(closeMode.opened, 'the upgrade completed, only to be closed');
    t.equal(closeMode.protocol, 'bearer', 'the refused token is not echoed either');
    t.same(closeMode.close, { code: 4401, reason: 'signature invalid', wasClean: true }, 'CloseEvent code and reason');
    t.same(closeMode.messages, []);
    t.match(await shown(page, closeMode.id), 'closed: code 4401, reason "signature invalid"', 'and the page shows them');

    const httpMode = await connect(page, 'bad-token-http');
    t.notOk(httpMode.opened, 'a 401 handshake never opens');
    t.ok(httpMode.error, 'an error event');
    t.same(httpMode.close, { code: 1006, reason: '', wasClean: false }, 'the browser hides the status: 1006, no reason');

    t.same(
      refused.map((r) => [r.status, r.reason]),
      [
        [401, 'signature invalid'],
        [401, 'signature invalid'],
      ],
      'both were refused by the gateway for the same reason',
    );
    t.equal(upstream.seen.length, 0, 'nothing reached the upstream');
  });

  t.test('cookie session from the page\'s own origin: 4401 before login, accepted after; the cookie stays HttpOnly and off the upstream', async (t) => {
    const { demo, upstream } = await startDemo(t);
    const context = await newContext(t, browser);
    const page = await openPage(context, demo.url);

    const before = await connect(page, 'session');
    t.same(before.close, { code: 4401, reason: 'credentials required', wasClean: true }, 'no cookie yet');

    await logIn(page);
    const cookie = (await context.cookies(demo.url)).find((c) => c.name === 'connect.sid');
    t.ok(cookie?.value.startsWith('s%3A'), 'an express-session style signed cookie');
    t.equal(cookie?.httpOnly, true);
    t.equal(cookie?.sameSite, 'Lax');
    t.equal(await page.evaluate(() => document.cookie), '', 'page scripts cannot read it');

    const r = await connect(page, 'session');
    t.ok(r.opened);
    t.same(r.messages, [r.sent], 'the echo came back');
    t.same(r.close, { code: 1000, reason: 'done', wasClean: true });
    t.equal(upstream.seen.length, 1);
    const seen = upstream.seen[0]!;
    t.equal(seen.headers['x-auth-subject'], 'alice');
    t.equal(seen.headers.cookie, undefined, 'the session cookie was removed (it was the only one)');
    t.equal(seen.headers.origin, new URL(demo.url).origin);
  });

  t.test('cookie session from another origin: the browser sends the cookie anyway, the gateway refuses 4403 "origin not allowed"', async (t) => {
    const { demo, upstream, refused } = await startDemo(t);
    const context = await newContext(t, browser);
    const own = await openPage(context, demo.url);
    await logIn(own);

    // Same host, another port: another origin but the same site, so even a SameSite=Lax cookie goes
    // with its WebSocket handshake (a sibling subdomain is the same case). Only the Origin check stops it.
    const foreign = await openPage(context, demo.otherUrl);
    const foreignOrigin = await foreign.evaluate(() => location.origin);
    t.not(foreignOrigin, new URL(demo.url).origin, 'the page really is on another origin');
    const r = await connect(foreign, 'session');
    t.ok(r.opened, 'rejectMode close: the upgrade completes...');
    t.same(r.close, { code: 4403, reason: 'origin not allowed', wasClean: true }, '...and closes 4403 with the reason');
    t.match(await shown(foreign, r.id), 'closed: code 4403, reason "origin not allowed"');
    t.equal(refused.length, 1);
    t.equal(refused[0]?.origin, foreignOrigin, 'the browser sent the foreign page\'s Origin');
    t.match(refused[0]?.cookie, /(^|; )connect\.sid=s%3A/, 'and the session cookie: without origins it would have been accepted');
    t.equal(upstream.seen.length, 0, 'nothing reached the upstream');

    // The same cookie from the gateway's own page still works.
    const ok = await connect(own, 'session');
    t.same(ok.close, { code: 1000, reason: 'done', wasClean: true });
    t.equal(upstream.seen.length, 1);
  });

  t.test(
    'a refused token entry offered BEFORE the marker is not echoed back either (SPEC 2.1)',
    async (t) => {
      const { demo } = await startDemo(t);
      const page = await openPage(await newContext(t, browser), demo.url);
      const { badToken } = await logIn(page);
      const protocol = await page.evaluate(
        ([url, token]) =>
          new Promise<string | null>((resolve) => {
            const ws = new WebSocket(url!, [`bearer.${token}`, 'bearer']);
            ws.onopen = () => resolve(ws.protocol);
            ws.onclose = () => resolve(null);
          }),
        [`ws://${new URL(demo.url).host}/echo`, badToken],
      );
      t.equal(protocol, 'bearer');
    },
  );

  t.test('`node examples/browser/serve.mjs` prints the URL; the page works against the bundled echo upstream', async (t) => {
    const child = spawn(process.execPath, ['examples/browser/serve.mjs'], {
      cwd: ROOT,
      env: cleanEnv({ PORT: '0', OTHER_PORT: '0', LOG_LEVEL: 'warn' }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    t.teardown(async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    });
    let stdout = '';
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no URL within ${BROWSER_TIMEOUT_MS} ms; stdout: ${stdout} stderr: ${stderr}`)), BROWSER_TIMEOUT_MS);
      child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
        stdout += chunk;
        const found = /open (http:\/\/\S+)/.exec(stdout);
        if (found) {
          clearTimeout(timer);
          resolve(found[1]!);
        }
      });
      void exited.then(([code]) => {
        clearTimeout(timer);
        reject(new Error(`serve.mjs exited with ${code} before printing its URL; stderr: ${stderr}`));
      });
    });
    t.match(stdout, /another origin .*: http:\/\/127\.0\.0\.1:\d+\/\?gateway=ws:\/\/127\.0\.0\.1:\d+/, 'and the other-origin URL');

    const page = await openPage(await newContext(t, browser), url);
    await logIn(page);
    const r = await connect(page, 'token');
    t.same(r.close, { code: 1000, reason: 'done', wasClean: true });
    t.equal(r.messages.length, 2, 'a greeting, then the echo');
    t.match(JSON.parse(r.messages[0]!), { hello: 'alice', sawCredential: false }, 'the bundled upstream greets with the forwarded identity');
    t.equal(r.messages[1], r.sent);

    child.kill('SIGTERM');
    const [code, signal] = await exited;
    t.same({ code, signal }, { code: 0, signal: null }, 'SIGTERM stops it cleanly');
  });
}

const executablePath = findChromium();
if (executablePath === undefined) t.fail(missingChromiumMessage());
else suite(await launchChromium(t, executablePath));
