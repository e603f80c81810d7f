import type { Gateway } from '../../src/gateway.js';
import type { Started, StartOptions } from '../types.mjs';

export interface BrowserDemoOptions extends StartOptions {
  /** Signs the session cookies (a random one per run by default). */
  sessionSecret?: string;
  /** The WebSocket backend; without it the bundled echo upstream is started on a free port. */
  upstream?: string;
  /** Port of the second server that serves the page from another origin (0: any free port). */
  otherPort?: number;
}

export interface BrowserDemo extends Started {
  otherPort: number;
  /** The page, on the gateway's own origin. */
  url: string;
  /** The same page from the other origin, pointed at the gateway (`?gateway=ws://...`). */
  otherUrl: string;
  gateway: Gateway;
}

export declare function start(port?: number, options?: BrowserDemoOptions): Promise<BrowserDemo>;
