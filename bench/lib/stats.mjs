// Small statistics helpers shared by the load generator, the runner and the renderer.

/** The q-quantile (0..1) of an already sorted numeric array (nearest rank), or null when empty. */
export function quantileSorted(sorted, q) {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

/** Median of numbers (ignoring null/undefined/NaN), or null. */
export function median(values) {
  const v = values.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

/** { median, min, max, spreadPct } where spreadPct = (max - min) / median × 100. */
export function summarize(values) {
  const v = values.filter((x) => typeof x === 'number' && Number.isFinite(x));
  if (v.length === 0) return { median: null, min: null, max: null, spreadPct: null, n: 0 };
  const med = median(v);
  const min = Math.min(...v);
  const max = Math.max(...v);
  return { median: med, min, max, spreadPct: med ? ((max - min) / Math.abs(med)) * 100 : null, n: v.length };
}
