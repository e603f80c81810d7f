import type { Counting } from './types.mjs';

export type { Counting } from './types.mjs';
/** Starts one Socket.IO instance; `name` is what it answers in 'whoami'. */
export declare function start(port?: number, options?: { name?: string; host?: string }): Promise<Counting>;
