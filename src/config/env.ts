const REFERENCE = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

/** Renders a field path the way `portcullis check` prints it: `routes.1.origins`. */
export function formatPath(path: readonly PropertyKey[]): string {
  return path.length === 0 ? '(root)' : path.map(String).join('.');
}

/**
 * Replaces `${NAME}` and `${NAME:-default}` in every string of a parsed JSON tree.
 * @returns the expanded copy, and one problem per missing variable, named by its field path
 */
export function expandEnv(
  value: unknown,
  env: NodeJS.ProcessEnv,
  path: PropertyKey[] = [],
  problems: string[] = [],
): { value: unknown; problems: string[] } {
  if (typeof value === 'string') {
    const expanded = value.replace(REFERENCE, (_match, name: string, fallback: string | undefined) => {
      const found = env[name];
      if (found !== undefined && found !== '') return found;
      if (fallback !== undefined) return fallback;
      problems.push(`${formatPath(path)}: environment variable ${name} is not set`);
      return '';
    });
    return { value: expanded, problems };
  }
  if (Array.isArray(value)) {
    return { value: value.map((item, i) => expandEnv(item, env, [...path, i], problems).value), problems };
  }
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) out[key] = expandEnv(item, env, [...path, key], problems).value;
    return { value: out, problems };
  }
  return { value, problems };
}
