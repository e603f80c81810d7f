// Types shared by the declarations of the embedding examples (types only: there is no types.mjs).

/** A running example server. */
export interface Started {
  port: number;
  close(): Promise<void>;
}

/** Options shared by the examples; `secret` is the HS256 secret (≥ 32 bytes) the JWTs are signed with. */
export interface StartOptions {
  secret?: string;
  host?: string;
  logLevel?: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
}

/** A running example that also counts the connections its WebSocket handler has run for. */
export interface Counting extends Started {
  readonly handled: number;
}

/**
 * An example's `start(port, options)`: `port` 0 is any free port; `Extra` are the example's own options,
 * `Result` what it resolves.
 */
export type Start<Extra extends object = object, Result extends Started = Started> = (port?: number, options?: StartOptions & Extra) => Promise<Result>;
