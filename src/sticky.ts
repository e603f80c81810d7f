import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { cookieValue } from './credentials.js';

/** The cookie that keeps a client on the upstream it first got (SPEC 2.3 `sticky`). */
export const STICKY_COOKIE = 'portcullis_upstream';

/**
 * Signs and reads the sticky-upstream cookie: `<index>.<hmac>`, HMAC-SHA256 with `sticky.secret`, or a
 * key derived from the route and the config's secrets so it holds across replicas and restarts.
 */
export class StickyCookie {
  readonly #key: Buffer;
  readonly #targets: readonly string[];

  constructor(targets: readonly string[], secret: string) {
    this.#targets = targets;
    this.#key = createHash('sha256').update(`portcullis-sticky\0${secret}`).digest();
  }

  #sign(index: number): string {
    return createHmac('sha256', this.#key).update(`${index}\0${this.#targets[index]}`).digest('base64url');
  }

  /** The `Set-Cookie` value pinning a client to `target`. */
  setCookie(target: string): string {
    const index = this.#targets.indexOf(target);
    return `${STICKY_COOKIE}=${index}.${this.#sign(index)}; Path=/; HttpOnly; SameSite=Lax`;
  }

  /** The target a request's cookie pins it to, when the cookie is present, well signed and still listed. */
  target(req: IncomingMessage): string | undefined {
    const value = cookieValue(req, STICKY_COOKIE);
    const match = value ? /^(\d{1,4})\.([A-Za-z0-9_-]{43})$/.exec(value) : null;
    if (!match) return undefined;
    const index = Number(match[1]);
    if (index >= this.#targets.length) return undefined;
    const expected = Buffer.from(this.#sign(index));
    const given = Buffer.from(match[2]!);
    return given.length === expected.length && timingSafeEqual(given, expected) ? this.#targets[index] : undefined;
  }
}
