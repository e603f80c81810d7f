import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';

/**
 * Calls `onChange` when a file changes, debounced: editors write a file in several steps, and some
 * replace it (rename), so the directory is watched rather than the file's inode.
 * @returns the watcher, to close
 */
export function watchFile(file: string, onChange: () => void, debounceMs = 200): FSWatcher {
  const name = basename(file);
  let timer: NodeJS.Timeout | undefined;
  const watcher = watch(dirname(file), (_event, changed) => {
    if (changed !== null && changed.toString() !== name) return;
    clearTimeout(timer);
    timer = setTimeout(onChange, debounceMs);
  });
  watcher.unref();
  return watcher;
}
