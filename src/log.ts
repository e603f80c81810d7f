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

/**
 * Human-readable log lines (pino-pretty) for a terminal: `--pretty`, or stdout is a TTY. Loaded only
 * then, so JSON deployments never import it. The same redaction applies: it formats what pino wrote.
 */
export async function prettyDestination(colorize = process.stdout.isTTY === true): Promise<DestinationStream> {
  const { PinoPretty } = await import('pino-pretty');
  return PinoPretty({ colorize, sync: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,name' });
}

/** Shorter values are not worth hiding (and would scrub ordinary words out of messages). */
const MIN_SECRET_LENGTH = 8;

/**
 * Removes from `text` (an error message from user code, a backend's error) every value the request
 * carried that could be a credential: each header value and its parts, each cookie and query value,
 * each offered subprotocol. Operators keep the message; a handler that quoted a token does not leak it.
 */
export function scrubRequestValues(text: string, headers: Readonly<Record<string, string | string[] | undefined>>, url: string | undefined): string {
  const values = new Set<string>();
  const add = (value: string | undefined) => {
    const v = value?.trim();
    if (v && v.length >= MIN_SECRET_LENGTH) values.add(v);
  };
  for (const header of Object.values(headers)) {
    for (const value of Array.isArray(header) ? header : [header ?? '']) {
      add(value);
      for (const part of value.split(/[\s,;]+/)) {
        add(part);
        add(part.slice(part.indexOf('=') + 1));
      }
    }
  }
  const query = url?.indexOf('?') ?? -1;
  if (url && query >= 0) {
    for (const [, value] of new URLSearchParams(url.slice(query + 1))) add(value);
  }
  let scrubbed = text;
  // Longest first, so a whole header goes before the token inside it.
  for (const value of [...values].sort((a, b) => b.length - a.length)) scrubbed = scrubbed.replaceAll(value, '[redacted]');
  return scrubbed;
}
