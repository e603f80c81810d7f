const REFERENCE = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

/**
 * Deepest nesting a config may have (the root is level 0). Real configs stop around 8 (API key claims);
 * the bound keeps the recursive walks of validation far from the call stack's limit.
 */
export const MAX_CONFIG_DEPTH = 64;

// Characters that would break a problem's single line (or hide in it) when a key holding them is printed.
const UNPRINTABLE = /[\x00-\x1f\x7f-\x9f\u2028\u2029]/;
const UNPRINTABLE_ALL = /[\x00-\x1f\x7f-\x9f\u2028\u2029]/g;

/**
 * Renders a field path the way `portcullis check` prints it: `routes.1.origins`. A key holding a line
 * break or another control character is printed as a JSON string (`limits."a\nb"`), so a problem stays
 * one line.
 */
export function formatPath(path: readonly PropertyKey[]): string {
  return path.length === 0 ? '(root)' : path.map(formatKey).join('.');
}

function formatKey(key: PropertyKey): string {
  const text = String(key);
  if (!UNPRINTABLE.test(text)) return text;
  // JSON.stringify escapes C0 controls but not DEL, C1 controls or U+2028/U+2029.
  return JSON.stringify(text).replace(UNPRINTABLE_ALL, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/**
 * Replaces `${NAME}` and `${NAME:-default}` in every string of a parsed JSON tree.
 * Also reports, as problems named by their field path: a missing variable; a default holding another
 * reference (`${A:-${B}}` is not supported, and would otherwise leave text of it in the value); an own
 * `__proto__` key (dropped from the copy: assigned, it would set the prototype and be read as inherited
 * fields); nesting deeper than {@link MAX_CONFIG_DEPTH} (that subtree is returned as it is).
 * @returns the expanded copy and the problems
 */
export function expandEnv(
  value: unknown,
  env: NodeJS.ProcessEnv,
  path: PropertyKey[] = [],
  problems: string[] = [],
): { value: unknown; problems: string[] } {
  if (typeof value === 'string') {
    const expanded = value.replace(REFERENCE, (_match, name: string, fallback: string | undefined) => {
      if (fallback?.includes('${')) {
        problems.push(`${formatPath(path)}: a \${NAME:-default} default cannot hold another \${...} reference`);
        return '';
      }
      const found = env[name];
      if (found !== undefined && found !== '') return found;
      if (fallback !== undefined) return fallback;
      problems.push(`${formatPath(path)}: environment variable ${name} is not set`);
      return '';
    });
    return { value: expanded, problems };
  }
  if (value === null || typeof value !== 'object') return { value, problems };
  if (path.length >= MAX_CONFIG_DEPTH) {
    problems.push(`${formatPath(path)}: nested deeper than ${MAX_CONFIG_DEPTH} levels`);
    return { value, problems };
  }
  if (Array.isArray(value)) {
    return { value: value.map((item, i) => expandEnv(item, env, [...path, i], problems).value), problems };
  }
  const out: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(value)) {
    if (key === '__proto__') problems.push(`${formatPath([...path, key])}: unknown field`);
    else out[key] = expandEnv(item, env, [...path, key], problems).value;
  }
  return { value: out, problems };
}
