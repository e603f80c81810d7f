// Renders docs/config.md from the config's JSON Schema (gateway.schema.json, itself generated from the
// zod schema), so the reference cannot drift from what `portcullis check` accepts. `npm run docs`
// rewrites it; test/unit/config-doc.test.ts fails when it is stale.
import { readFileSync, writeFileSync } from 'node:fs';

const NUMBER_OR_ENV = /\$\\\{/; // the `${NAME}` alternative every number and boolean field has

/** A short type for a schema node: `integer ≥ 1`, `"pipe" | "relay"`, `string[]`, ... */
function typeOf(node) {
  if (!node) return 'any';
  if (node.const !== undefined) return `\`${JSON.stringify(node.const)}\``;
  if (node.enum) return node.enum.map((v) => `\`${JSON.stringify(v)}\``).join(' | ');
  if (node.anyOf) {
    // A number or boolean field also takes a whole "${NAME}" string: shown as the number or boolean.
    const real = node.anyOf.filter((n) => !(n.type === 'string' && NUMBER_OR_ENV.test(n.pattern ?? '') && node.anyOf.length === 2));
    return [...new Set(real.map(typeOf))].join(' or ');
  }
  if (node.type === 'integer' || node.type === 'number') return node.minimum !== undefined && node.minimum !== 0 ? `${node.type} ≥ ${node.minimum}` : node.type;
  if (node.type === 'array') return node.items?.enum ? `list of ${typeOf(node.items).replaceAll(' | ', ', ')}` : `${typeOf(node.items)}[]`.replace(/^(.* or .*)\[\]$/, '($1)[]');
  if (node.type === 'object') return node.properties ? 'object' : 'map';
  return node.type ?? 'any';
}

const cell = (text) => String(text ?? '').replaceAll('|', '\\|').replaceAll('\n', ' ');

/** Table rows for an object's fields, nested objects flattened into dotted paths. */
function rows(node, prefix = '') {
  const out = [];
  const required = new Set(node.required ?? []);
  for (const [name, field] of Object.entries(node.properties ?? {})) {
    const path = `${prefix}${name}`;
    out.push(`| \`${path}\` | ${cell(typeOf(field))} | ${required.has(name) ? 'yes' : ''} | ${cell(field.description)} |`);
    const object = field.anyOf?.find((n) => n.type === 'object' && n.properties) ?? (field.type === 'object' && field.properties ? field : undefined);
    if (object) out.push(...rows(object, `${path}.`));
  }
  return out;
}

function table(node, prefix) {
  return ['| field | type | required | meaning |', '| --- | --- | --- | --- |', ...rows(node, prefix)].join('\n');
}

/** The markdown of docs/config.md for a config JSON Schema. */
export function renderConfigDoc(schema) {
  const route = schema.properties.routes.items;
  const authenticators = schema.properties.authenticators.additionalProperties.oneOf ?? schema.properties.authenticators.additionalProperties.anyOf;
  const sections = [
    '# Config reference (`gateway.config.json`)',
    '',
    'Generated from `gateway.schema.json` by `npm run docs`; do not edit by hand. Unknown fields are',
    'errors. Any string may use `${NAME}` or `${NAME:-default}` (environment variables; a default cannot',
    'hold another reference); a number or boolean field may be a whole `"${NAME}"`. Relative paths resolve',
    'against the config file\'s directory.',
    'The README explains the features; `portcullis check` validates a file and names the path of every problem.',
    '',
    '## Top level',
    '',
    table(schema, ''),
    '',
    '## Authenticators (`authenticators.<name>`)',
    '',
  ];
  for (const auth of authenticators) {
    sections.push(`### \`${auth.properties.type.const}\``, '', table({ ...auth, properties: Object.fromEntries(Object.entries(auth.properties).filter(([k]) => k !== 'type')) }, ''), '');
  }
  sections.push('## Routes (`routes[]`)', '', table(route, ''), '');
  return sections.join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const schema = JSON.parse(readFileSync(new URL('../gateway.schema.json', import.meta.url), 'utf8'));
  writeFileSync(new URL('../docs/config.md', import.meta.url), renderConfigDoc(schema));
}
