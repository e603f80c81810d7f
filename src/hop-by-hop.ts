/**
 * Headers that describe one connection, not the request (RFC 9110 §7.6.1, plus the proxy-era ones);
 * a proxy never passes them on. `connection` and `upgrade` included: callers that forward an upgrade
 * keep those two themselves.
 */
export const HOP_BY_HOP: readonly string[] = [
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
];
