// A configured target split into its scheme and authority, and its own path (query and fragment dropped).
const TARGET = /^([a-z][a-z0-9+.-]*:\/\/[^/?#]*)([^?#]*)/i;

/**
 * The path an upstream is asked for: the target's own path (if any, without a trailing slash) followed
 * by the request's path and query, as http-proxy joins them.
 */
export function upstreamPath(target: string, requestUrl: string): string {
  return `${(TARGET.exec(target)?.[2] ?? '').replace(/\/$/, '')}${requestUrl}`;
}

/** The upstream URL for a request: the target's scheme and authority, then {@link upstreamPath}. */
export function joinTarget(target: string, requestUrl: string): string {
  return `${TARGET.exec(target)?.[1] ?? target}${upstreamPath(target, requestUrl)}`;
}
