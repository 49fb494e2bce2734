/**
 * JSON read from model files, bounded before it is trusted. `JSON.parse` itself copes with any
 * nesting, but everything that walks the result recursively afterwards (`JSON.stringify` in an error
 * message, structured clone to a worker) overflows the stack on a few hundred thousand levels, so
 * nesting is checked on the text first. Real safetensors headers, indexes and configs nest at most
 * 4-5 levels.
 */

/** Deepest `[`/`{` nesting accepted in a header, an index or a config. */
export const MAX_JSON_DEPTH = 64;

/**
 * The nesting depth of `text` when it exceeds `maxDepth`, else undefined. Brackets inside strings do
 * not count. Linear in the text, no recursion.
 */
export function jsonDepthOver(text: string, maxDepth = MAX_JSON_DEPTH): number | undefined {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
      continue;
    }
    if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > maxDepth) return depth;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return undefined;
}

/** `JSON.stringify(v)` cut to `max` characters, for one-line error messages about hostile files. */
export function shortJson(v: unknown, max = 80): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > max ? `${s.slice(0, max)}...` : s;
}
