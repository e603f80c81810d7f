// docs/config.md is generated from the shipped JSON Schema; this fails when either is stale
// (regenerate: npm run schema && npm run docs).
import { readFileSync } from 'node:fs';
import t from 'tap';
// @ts-expect-error: a plain .mjs script without type declarations
import { renderConfigDoc } from '../../scripts/config-doc.mjs';
import { configJsonSchema } from '../../src/config/schema.js';

t.test('docs/config.md is renderConfigDoc(configJsonSchema())', async (t) => {
  const shipped = readFileSync(new URL('../../docs/config.md', import.meta.url), 'utf8');
  const rendered = (renderConfigDoc as (schema: unknown) => string)(JSON.parse(JSON.stringify(configJsonSchema())));
  t.equal(shipped, rendered);
  for (const field of ['`routes`', '`maxConnectionsPerSubject`', '`redis.replicaTtlSec`', '### `forwardAuth`', '`jwksUri`']) t.ok(rendered.includes(field), `documents ${field}`);
});
