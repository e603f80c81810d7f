// docs/SECURITY.md maps each threat to the tests that cover it. This keeps the map honest: every test
// file it cites exists, every test name it quotes (“…” after a file, on the same line) is in that file,
// and every src/ file it names exists. A renamed test or a moved file fails here, not in a later review.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { ROOT } from '../helpers/cli.js';

const DOC = readFileSync(join(ROOT, 'docs', 'SECURITY.md'), 'utf8');
const TEST_FILE = /`(test\/[\w./-]+\.test\.ts)`/g;
const SRC_FILE = /`(src\/[\w./-]+\.ts)`/g;
const NAME = /“([^”]+)”/g;

/** A test file's text with the escapes of JS string literals undone, so quoted names match as written. */
function sourceText(file: string): string {
  return readFileSync(join(ROOT, file), 'utf8').replace(/\\(['"`])/g, '$1');
}

/** [file, quoted names after it on the same line] for every test file cited in the doc. */
function citations(): [string, string[]][] {
  const out: [string, string[]][] = [];
  for (const line of DOC.split('\n')) {
    const files = [...line.matchAll(TEST_FILE)];
    files.forEach((m, i) => {
      const end = files[i + 1]?.index ?? line.length;
      const names = [...line.slice(m.index + m[0].length, end).matchAll(NAME)].map((n) => n[1]!);
      out.push([m[1]!, names]);
    });
  }
  return out;
}

t.test('every test file cited in docs/SECURITY.md exists', async (t) => {
  const files = new Set(citations().map(([file]) => file));
  t.ok(files.size >= 20, `cites many test files (${files.size})`);
  for (const file of files) t.ok(existsSync(join(ROOT, file)), `${file} exists`);
});

t.test('every test name quoted in docs/SECURITY.md is in the file cited before it', async (t) => {
  let quoted = 0;
  for (const [file, names] of citations()) {
    if (!existsSync(join(ROOT, file))) continue;
    const text = sourceText(file);
    for (const name of names) {
      quoted++;
      t.ok(text.includes(name), `${file}: “${name}”`);
    }
  }
  t.ok(quoted >= 60, `quotes many test names (${quoted})`);
});

t.test('every src/ file named in docs/SECURITY.md exists', async (t) => {
  const files = new Set([...DOC.matchAll(SRC_FILE)].map((m) => m[1]!));
  t.ok(files.size >= 20, `names many src files (${files.size})`);
  for (const file of files) t.ok(existsSync(join(ROOT, file)), `${file} exists`);
});

t.test('docs/SECURITY.md covers the six threats of the review and says how to report', async (t) => {
  for (const heading of ['### 1. Token theft', '### 2. Cross-Site WebSocket Hijacking', '### 3. Header injection', '### 4. Identity spoofing upstream', '### 5. Denial of service at the handshake', '### 6. Key and algorithm confusion', '## Reporting a vulnerability', '## Supported versions']) {
    t.ok(DOC.includes(heading), heading);
  }
  const sections = DOC.split('\n### ').slice(1, 7);
  for (const section of sections) t.match(section, /\nNot covered:\n/, `${section.split('\n')[0]}: says what is not covered`);
});
