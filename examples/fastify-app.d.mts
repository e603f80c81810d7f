import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Gateway } from '../dist/index.js';
import type { Counting, Start } from './types.mjs';

export type { Counting, Started, StartOptions } from './types.mjs';
/** An onRequest hook that has `gateway` decide every WebSocket upgrade Fastify routes. */
export declare function portcullisHook(gateway: Gateway): (request: FastifyRequest, reply: FastifyReply) => Promise<void>;
export declare const start: Start<object, Counting>;
