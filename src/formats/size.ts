/**
 * Byte sizes as mergekit's `--out-shard-size` reads them: a plain integer, or an integer with a
 * decimal suffix K (1e3), M (1e6) or B (1e9, "billion", not "bytes"), any case. "5B" is 5e9 bytes.
 */

export class ByteSizeError extends Error {
  override name = 'ByteSizeError';
}

const SUFFIX_MULTIPLIERS: Record<string, number> = { k: 1e3, m: 1e6, b: 1e9 };

export function parseByteSize(s: string | number): number {
  if (typeof s === 'number') {
    if (!Number.isSafeInteger(s) || s < 0) {
      throw new ByteSizeError(`size ${s} must be a non-negative whole number of bytes`);
    }
    return s;
  }
  const match = /^(\d+)\s*([kmb]?)$/i.exec(s.trim());
  if (!match) {
    throw new ByteSizeError(
      `size ${JSON.stringify(s)} is not understood; use a whole number of bytes with an optional K, M or B ` +
        '(thousand, million, billion) suffix, e.g. 5B or 500M',
    );
  }
  const value = Number(match[1]) * (match[2] ? SUFFIX_MULTIPLIERS[match[2].toLowerCase()] : 1);
  if (!Number.isSafeInteger(value)) throw new ByteSizeError(`size ${JSON.stringify(s)} is too large`);
  return value;
}

const UNITS = ['B', 'kB', 'MB', 'GB', 'TB', 'PB', 'EB'];

/** Decimal units (as shard sizes are given): 999 B, 1.50 kB, 12.3 MB, 500 MB, 5.00 GB. */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return `${n} B`;
  const sign = n < 0 ? '-' : '';
  let value = Math.abs(n);
  if (value < 1000) return `${sign}${Math.round(value)} B`;
  let unit = 0;
  while (value >= 1000 && unit < UNITS.length - 1) {
    value /= 1000;
    unit++;
  }
  let text = value.toFixed(value < 10 ? 2 : value < 100 ? 1 : 0);
  // 999.96 MB would print as "1000 MB": move up a unit instead.
  if (Number(text) >= 1000 && unit < UNITS.length - 1) {
    unit++;
    text = (value / 1000).toFixed(2);
  }
  return `${sign}${text} ${UNITS[unit]}`;
}
