/**
 * Bounds on recipe text, checked before and right after YAML parsing. A recipe is a few hundred
 * bytes; without bounds, a 20 MB gradient list keeps the YAML parser busy for half a minute and ends
 * in heap exhaustion, and deeply nested flow collections (`[[[[...`) exhaust it far sooner.
 */
import { isAlias, isMap, isPair, isScalar, isSeq, type Node as YamlNode } from 'yaml';

/** Largest recipe accepted, in characters (the CLI checks the file's size in bytes first). */
export const MAX_RECIPE_CHARS = 1_000_000;

/** Most list entries in one recipe, all lists together (a gradient per layer of a 128-layer model is 128). */
export const MAX_LIST_ENTRIES = 10_000;

/** Deepest nesting of mappings and lists (a real recipe nests 5). */
export const MAX_RECIPE_DEPTH = 32;

/** Keys that would reach an object's prototype when a recipe is turned into plain objects. */
export const RESERVED_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

/** Explicit tags a recipe may use: YAML's core types. Anything else (`!!python/...`, `!foo`) is refused. */
const ALLOWED_TAGS = new Set(
  ['str', 'int', 'float', 'bool', 'null', 'seq', 'map'].map((t) => `tag:yaml.org,2002:${t}`),
);

/**
 * A cheap upper-bound pass over the text, before the YAML parser sees it: flow-collection nesting
 * (`[`, `{` outside quoted scalars and comments) and list entries (flow separators and block `- `
 * items). Returns what is over a limit, or undefined.
 */
export function recipeTextOverLimit(text: string): string | undefined {
  if (text.length > MAX_RECIPE_CHARS) {
    return `is ${text.length} characters, over the ${MAX_RECIPE_CHARS}-character limit for a recipe`;
  }
  let depth = 0;
  let entries = 0;
  let lineStart = true;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '\n') {
      lineStart = true;
      continue;
    }
    if (lineStart && (c === ' ' || c === '\t')) continue;
    const atLineStart = lineStart;
    lineStart = false;
    const prev = i > 0 ? text[i - 1] : '\n';
    const tokenStart = atLineStart || ' \t[{,:-?'.includes(prev);
    if (c === '#' && (atLineStart || prev === ' ' || prev === '\t')) {
      while (i < text.length && text[i] !== '\n') i++;
      i--;
      continue;
    }
    if ((c === '"' || c === "'") && tokenStart) {
      // A quoted scalar: skip to its closing quote (`\"` escapes in double quotes, `''` in single).
      for (i++; i < text.length; i++) {
        if (c === '"' && text[i] === '\\') i++;
        else if (text[i] === c) {
          if (c === "'" && text[i + 1] === "'") i++;
          else break;
        }
      }
      continue;
    }
    if (c === '[' || c === '{') {
      if (++depth > MAX_RECIPE_DEPTH) return `nests [ and { deeper than ${MAX_RECIPE_DEPTH} levels`;
      entries++;
    } else if (c === ']' || c === '}') depth = Math.max(0, depth - 1);
    else if (c === ',' && depth > 0) entries++;
    else if (c === '-' && atLineStart && (text[i + 1] === ' ' || text[i + 1] === '\n')) entries++;
    if (entries > MAX_LIST_ENTRIES)
      return `has more than ${MAX_LIST_ENTRIES} list entries, over the limit for a recipe`;
  }
  return undefined;
}

export type RecipeNodeFault = { node: YamlNode; path: (string | number)[]; detail: string };

/**
 * The first fault in the parsed document: a reserved key, a tag outside YAML's core types, nesting
 * or list entries over the limits. Walks with an explicit stack (no recursion); aliases are not
 * followed (the YAML library bounds their expansion).
 */
export function recipeNodeFault(root: unknown): RecipeNodeFault | undefined {
  let entries = 0;
  const stack: Array<{ node: unknown; path: (string | number)[] }> = [{ node: root, path: [] }];
  while (stack.length > 0) {
    const { node, path } = stack.pop()!;
    if (!node || isAlias(node)) continue;
    const n = node as YamlNode;
    if (n.tag !== undefined && !ALLOWED_TAGS.has(n.tag)) {
      return {
        node: n,
        path,
        detail: `the YAML tag ${n.tag.replace(/^tag:yaml.org,2002:/, '!!')} is not allowed in a recipe`,
      };
    }
    if (path.length > MAX_RECIPE_DEPTH) {
      return { node: n, path, detail: `nests deeper than ${MAX_RECIPE_DEPTH} levels` };
    }
    if (isMap(n)) {
      for (const item of n.items) {
        if (!isPair(item)) continue;
        const key = isScalar(item.key) ? item.key.value : item.key;
        const keyTag = isScalar(item.key) ? item.key.tag : undefined;
        if (keyTag !== undefined && !ALLOWED_TAGS.has(keyTag)) {
          return {
            node: item.key as YamlNode,
            path,
            detail: `the YAML tag ${keyTag} is not allowed in a recipe`,
          };
        }
        if (typeof key === 'string' && RESERVED_KEYS.has(key)) {
          return {
            node: (item.key as YamlNode) ?? n,
            path: [...path, key],
            detail: `the key ${key} is not allowed in a recipe`,
          };
        }
        if (item.key && !isScalar(item.key)) stack.push({ node: item.key, path: [...path, '?'] });
        stack.push({ node: item.value, path: [...path, typeof key === 'string' ? key : String(key)] });
      }
    } else if (isSeq(n)) {
      entries += n.items.length;
      if (entries > MAX_LIST_ENTRIES) {
        return {
          node: n,
          path,
          detail: `has more than ${MAX_LIST_ENTRIES} list entries, over the limit for a recipe`,
        };
      }
      n.items.forEach((item, i) => {
        stack.push({ node: item, path: [...path, i] });
      });
    }
  }
  return undefined;
}
