import pino, { type DestinationStream, type Logger } from 'pino';

/** Paths pino censors wherever a request or its headers end up in a log line. */
export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["sec-websocket-protocol"]',
  'req.headers["proxy-authorization"]',
  'headers.authorization',
  'headers.cookie',
  'headers["sec-websocket-protocol"]',
  'res.headers["set-cookie"]',
  'token',
  'secret',
  '*.token',
  '*.secret',
  '*.clientSecret',
];

/** The gateway's pino logger: JSON lines, ISO times, secrets redacted. */
export function createLogger(level = 'info', destination?: DestinationStream): Logger {
  return pino(
    {
      name: 'portcullis',
      level,
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      base: { pid: process.pid },
    },
    destination,
  );
}
