const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

/** Parses `Ns`, `Nm`, `Nh`, `Nd` or plain seconds into seconds; null when it is none of those. */
export function parseDuration(text: string): number | null {
  const match = /^(\d+)([smhd]?)$/.exec(text.trim());
  if (!match) return null;
  return Number(match[1]) * UNITS[match[2] || 's']!;
}
