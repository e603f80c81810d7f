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

export function start(port?: number, options?: StartOptions & { upstream?: string }): Promise<Started>;
