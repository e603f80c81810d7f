import type { Start } from './types.mjs';

export type { Started, StartOptions } from './types.mjs';
/** `upstream` is the WebSocket backend every accepted handshake is piped to. */
export declare const start: Start<{ upstream?: string }>;
