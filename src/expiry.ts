const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Calls `onExpire` at `expiresAt + graceSec` (seconds since the epoch): one unref'd timer, no polling.
 * Deadlines beyond a timer's range (~24.8 days) are not scheduled.
 * @returns a function that cancels it
 */
export function scheduleExpiry(expiresAt: number | undefined, graceSec: number, onExpire: () => void): () => void {
  if (expiresAt === undefined) return () => {};
  const ms = (expiresAt + graceSec) * 1000 - Date.now();
  if (ms > MAX_TIMER_MS) return () => {};
  const timer = setTimeout(onExpire, Math.max(0, ms));
  timer.unref();
  return () => clearTimeout(timer);
}
