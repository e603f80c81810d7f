// Regenerates gateway.schema.json from the zod schema in src/config/schema.ts (run after `npm run build`).
import { writeFileSync } from 'node:fs';
import { configJsonSchema } from '../dist/config/schema.js';

writeFileSync(new URL('../gateway.schema.json', import.meta.url), `${JSON.stringify(configJsonSchema(), null, 2)}\n`);
