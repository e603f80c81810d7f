import type { Start } from './types.mjs';

export type { Started, StartOptions } from './types.mjs';
export declare const start: Start;
