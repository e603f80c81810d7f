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

/** An example's `start(port, options)`: `port` 0 is any free port; `Extra` are the example's own options. */
export type Start<Extra extends object = object> = (port?: number, options?: StartOptions & Extra) => Promise<Started>;
