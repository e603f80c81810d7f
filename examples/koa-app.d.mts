import type { Counting, Start } from './types.mjs';

export type { Counting, Started, StartOptions } from './types.mjs';
export declare const start: Start<object, Counting>;
