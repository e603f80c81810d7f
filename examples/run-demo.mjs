// What the embedding examples do when run as `node examples/<name>.mjs` rather than imported: start on
// PORT, print how to get a token and connect, and stop cleanly on Ctrl-C.
import { randomBytes } from 'node:crypto';

/** True when `moduleUrl` (pass `import.meta.url`) is the file node was started with. */
export const isMain = (moduleUrl) => moduleUrl === `file://${process.argv[1]}`;

/**
 * Calls the example's `start(port, { secret })` with PORT (or `defaultPort`) and JWT_SECRET, prints
 * `describe(port)` and a wscat line for `path`, and closes the server on SIGINT or SIGTERM.
 */
export async function runDemo(start, { defaultPort, path, describe }) {
  // A throwaway secret keeps the demo runnable without setup; tokens from an earlier run stop working.
  const secret = process.env.JWT_SECRET ?? randomBytes(32).toString('base64url');
  const app = await start(Number(process.env.PORT ?? defaultPort), { secret });
  console.log(`${describe(app.port)}
  TOKEN=$(node dist/cli.js token --secret "${secret}" --sub alice)
  npx wscat -c "ws://127.0.0.1:${app.port}${path}" -H "Authorization: Bearer $TOKEN"`);
  const stop = () => void app.close().then(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
