// A real headless Chromium, driven by playwright-core over CDP: the Debian `chromium` package (CI installs
// it with scripts/ensure-chromium.sh), never a browser build of Playwright's own.
import { accessSync, constants } from 'node:fs';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import type { Teardown } from './net.js';

/** Where a Chromium is looked for when CHROMIUM_PATH is not set, in order. */
export const CHROMIUM_CANDIDATES = ['/usr/bin/chromium', '/usr/lib/chromium/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome-stable', '/usr/bin/google-chrome'];

/** Flags for a quiet, sandbox-less headless run on a CI machine (as root, no GPU, no network of its own). */
export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

/** How long launching, a navigation or a wait on a page may take before the test fails (a loaded 2-core machine). */
export const BROWSER_TIMEOUT_MS = 60_000;

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The Chromium executable: $CHROMIUM_PATH when set (and executable), else the first of the candidates. */
export function findChromium(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env.CHROMIUM_PATH) return isExecutable(env.CHROMIUM_PATH) ? env.CHROMIUM_PATH : undefined;
  return CHROMIUM_CANDIDATES.find(isExecutable);
}

/** Why the browser tests cannot run, and how to make them: the failure message when none is found. */
export function missingChromiumMessage(env: NodeJS.ProcessEnv = process.env): string {
  const looked = env.CHROMIUM_PATH ? `CHROMIUM_PATH=${env.CHROMIUM_PATH} (not an executable file)` : CHROMIUM_CANDIDATES.join(', ');
  return (
    `headless Chromium is required by the browser tests and was not found (looked at ${looked}). ` +
    'Install it: `sudo apt-get install -y chromium` (or `bash scripts/ensure-chromium.sh`, which CI runs), ' +
    'or set CHROMIUM_PATH to a Chromium or Chrome executable.'
  );
}

/** Launches headless Chromium; closed by `t.teardown` (which ends every Chromium process it started). */
export async function launchChromium(t: Teardown, executablePath: string): Promise<Browser> {
  const browser = await chromium.launch({ executablePath, headless: true, args: CHROMIUM_ARGS, timeout: BROWSER_TIMEOUT_MS });
  t.teardown(() => browser.close());
  return browser;
}

/** A fresh browser context (its own cookies) with generous timeouts; closed by `t.teardown`. */
export async function newContext(t: Teardown, browser: Browser): Promise<BrowserContext> {
  const context = await browser.newContext();
  context.setDefaultTimeout(BROWSER_TIMEOUT_MS);
  context.setDefaultNavigationTimeout(BROWSER_TIMEOUT_MS);
  t.teardown(() => context.close());
  return context;
}

/** Opens `url` in a new page of `context` (closed with the context). */
export async function openPage(context: BrowserContext, url: string): Promise<Page> {
  const page = await context.newPage();
  await page.goto(url);
  return page;
}
