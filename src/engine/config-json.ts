/**
 * The output's config.json, made by editing the base's text in place: only the values l2s-merge
 * changes are rewritten, so every other key keeps the base's formatting (`0.0` stays `0.0`, `1e-06`
 * stays `1e-06`; `JSON.parse` + `JSON.stringify` would write `0` and `0.000001`, and loaders that
 * compare configs textually, or people diffing them, would see changes that are not there).
 */
import { type FloatDType, torchDTypeName } from '../formats/dtype';

interface Member {
  key: string;
  valueStart: number;
  valueEnd: number;
}

/** Top-level members of a JSON object text that `JSON.parse` accepted. */
function topLevelMembers(text: string): { members: Member[]; open: number; close: number } {
  let i = 0;
  const ws = () => {
    while (i < text.length && ' \t\r\n'.includes(text[i])) i++;
  };
  const skipString = () => {
    i++; // opening quote
    while (text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
    i++;
  };
  const skipValue = () => {
    if (text[i] === '"') return skipString();
    if (text[i] === '{' || text[i] === '[') {
      let depth = 0;
      do {
        if (text[i] === '"') {
          skipString();
          continue;
        }
        if (text[i] === '{' || text[i] === '[') depth++;
        else if (text[i] === '}' || text[i] === ']') depth--;
        i++;
      } while (depth > 0);
      return;
    }
    while (i < text.length && !',}] \t\r\n'.includes(text[i])) i++;
  };
  ws();
  const open = i;
  i++;
  const members: Member[] = [];
  ws();
  while (text[i] !== '}') {
    const keyStart = i;
    skipString();
    const key = JSON.parse(text.slice(keyStart, i)) as string;
    ws();
    i++; // colon
    ws();
    const valueStart = i;
    skipValue();
    members.push({ key, valueStart, valueEnd: i });
    ws();
    if (text[i] === ',') {
      i++;
      ws();
    }
  }
  return { members, open, close: i };
}

/**
 * `text` (a JSON object) with each key of `set` given its value: replaced where the key is present
 * (every occurrence), added before the closing brace otherwise, indented like the first member.
 */
export function setJsonKeys(text: string, set: ReadonlyArray<readonly [string, unknown]>): string {
  const { members, open, close } = topLevelMembers(text);
  const edits: Array<{ start: number; end: number; insert: string }> = [];
  const added: string[] = [];
  for (const [key, value] of set) {
    const hits = members.filter((m) => m.key === key);
    for (const m of hits) edits.push({ start: m.valueStart, end: m.valueEnd, insert: JSON.stringify(value) });
    if (hits.length === 0) added.push(`${JSON.stringify(key)}: ${JSON.stringify(value)}`);
  }
  if (added.length > 0) {
    if (members.length === 0) {
      edits.push({ start: open + 1, end: close, insert: added.join(', ') });
    } else {
      const first = members[0];
      const lineStart = text.lastIndexOf('\n', first.valueStart) + 1;
      const indent = lineStart > open ? /^[ \t]*/.exec(text.slice(lineStart))![0] : '';
      const sep = lineStart > open ? `,\n${indent}` : ', ';
      const last = members[members.length - 1];
      edits.push({ start: last.valueEnd, end: last.valueEnd, insert: added.map((a) => sep + a).join('') });
    }
  }
  edits.sort((a, b) => b.start - a.start);
  let out = text;
  for (const e of edits) out = out.slice(0, e.start) + e.insert + out.slice(e.end);
  return out;
}

/**
 * The output's config.json: the base's, with the dtype and (when the output has its own lm_head)
 * `tie_word_embeddings: false`. transformers >= 4.56 writes `dtype` and reads it before `torch_dtype`,
 * so a base that uses `dtype` gets it set (and `torch_dtype` too when present); otherwise
 * `torch_dtype` is set, as older transformers read only that.
 */
export function outputConfigJson(
  baseText: string | undefined,
  baseConfig: Record<string, unknown>,
  outDtype: FloatDType | undefined,
  untiesHead: boolean,
): string {
  const set: Array<[string, unknown]> = [];
  if (outDtype) {
    const name = torchDTypeName(outDtype);
    if ('dtype' in baseConfig) {
      set.push(['dtype', name]);
      if ('torch_dtype' in baseConfig) set.push(['torch_dtype', name]);
    } else {
      set.push(['torch_dtype', name]);
    }
  }
  if (untiesHead) set.push(['tie_word_embeddings', false]);
  if (baseText === undefined) {
    const config: Record<string, unknown> = { ...baseConfig };
    for (const [k, v] of set) config[k] = v;
    return `${JSON.stringify(config, null, 2)}\n`;
  }
  const edited = setJsonKeys(baseText, set);
  return edited.endsWith('\n') ? edited : `${edited}\n`;
}
