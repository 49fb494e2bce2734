/**
 * The final answer of a model's response, and whether it matches a gold answer.
 *
 * Extraction, in order (as in the Qwen2.5-Math evaluation the paper uses, reduced to what
 * grade-school answers need):
 * 1. the content of the last `\boxed{...}` (braces nested to any depth; `\boxed 5` without braces too);
 * 2. else the number after the last "the answer is" (any case, "final answer" too);
 * 3. else the last number in the text.
 * A response with none of these has no answer (`undefined`), which never counts as correct.
 *
 * Normalisation turns an answer into a canonical string so that `1,234`, `1234.0`, `+1234`, `$1234`,
 * `1234 apples` and `\text{1234}` all read `1234`, `-0` reads `0`, and `\frac{3}{4}`, `3/4` and `0.75`
 * all read `0.75`. Non-numeric answers are kept as their whitespace-collapsed text.
 */

export type AnswerSource = 'boxed' | 'answer-is' | 'last-number';

export interface ExtractedAnswer {
  /** The text the answer was read from (the boxed content, or the number as written). */
  raw: string;
  /** normalizeAnswer(raw). */
  value: string;
  source: AnswerSource;
}

/** The content of every `\boxed{...}` (and `\fbox{...}`), in order; unbalanced ones run to the end. */
export function boxedContents(text: string): string[] {
  const found: string[] = [];
  const opener = /\\(?:boxed|fbox)\s*/g;
  for (let m = opener.exec(text); m; m = opener.exec(text)) {
    let i = m.index + m[0].length;
    if (text[i] !== '{') {
      // `\boxed 42`: the argument is the next token.
      const bare = /^[^\s$}]+/.exec(text.slice(i));
      if (bare) found.push(bare[0]);
      continue;
    }
    let depth = 0;
    const start = i + 1;
    for (; i < text.length; i++) {
      if (text[i] === '{') depth++;
      else if (text[i] === '}' && --depth === 0) break;
    }
    found.push(text.slice(start, i));
    opener.lastIndex = i;
  }
  return found;
}

/**
 * A number as people write it: an optional sign, digits with optional thousands commas (groups of
 * exactly three, so the list "14, 27 and 5" stays three numbers), an optional decimal part. A sign
 * counts only where it cannot be a minus between two terms ("35-2" is 35 and 2).
 */
const NUMBER_SOURCE = String.raw`(?:(?<![\w.])[-+−])?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?`;

const ANSWER_IS = new RegExp(
  String.raw`(?:final\s+)?answer\s*(?:is|:)\s*:?\s*\$?\s*(?:\\\(|\\\[)?\s*\$?\s*(${NUMBER_SOURCE})`,
  'gi',
);

export function extractAnswer(text: string): ExtractedAnswer | undefined {
  const boxed = boxedContents(text);
  if (boxed.length > 0) {
    const raw = boxed[boxed.length - 1].trim();
    return { raw, value: normalizeAnswer(raw), source: 'boxed' };
  }
  let answerIs: string | undefined;
  for (const m of text.matchAll(ANSWER_IS)) answerIs = m[1];
  if (answerIs !== undefined) return { raw: answerIs, value: normalizeAnswer(answerIs), source: 'answer-is' };
  const numbers = text.match(new RegExp(NUMBER_SOURCE, 'g'));
  if (numbers) {
    const raw = numbers[numbers.length - 1];
    return { raw, value: normalizeAnswer(raw), source: 'last-number' };
  }
  return undefined;
}

/** Canonical decimal text of a finite number: no exponent for everyday sizes, no trailing zeros, no -0. */
function canonicalNumber(x: number): string {
  if (Object.is(x, -0) || x === 0) return '0';
  // Twelve significant digits hide binary noise such as 0.1 + 0.2 without rounding real answers.
  return String(Number(x.toPrecision(12)));
}

/** `\frac{a}{b}`, `\dfrac{a}{b}`, `\tfrac ab`, `a/b` with plain numbers, as a number. */
function fractionValue(text: string): number | undefined {
  const latex = /^([-+]?)\\[dt]?frac\s*(?:\{([^{}]+)\}|(\d))\s*(?:\{([^{}]+)\}|(\d))$/.exec(text);
  const plain = /^([-+]?)(\d+(?:\.\d+)?)\s*\/\s*(\d+(?:\.\d+)?)$/.exec(text);
  let sign: string;
  let num: number;
  let den: number;
  if (latex) {
    sign = latex[1];
    num = Number(latex[2] ?? latex[3]);
    den = Number(latex[4] ?? latex[5]);
  } else if (plain) {
    sign = plain[1];
    num = Number(plain[2]);
    den = Number(plain[3]);
  } else {
    return undefined;
  }
  if (!Number.isFinite(num) || !Number.isFinite(den) || den === 0) return undefined;
  return (sign === '-' ? -1 : 1) * (num / den);
}

export function normalizeAnswer(answer: string): string {
  let s = answer.trim();
  // LaTeX wrappers and spacing that carry no value.
  s = s.replace(/\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}/g, '$1');
  s = s.replace(/\\[,;:! ]/g, '').replace(/\\left|\\right/g, '');
  s = s.replace(/^\\\(|\\\)$|^\\\[|\\\]$/g, '');
  s = s.replace(/\\?\$/g, '').replace(/\\?%/g, '');
  s = s.replace(/−/g, '-').replace(/\s+/g, ' ').trim();
  // A trailing full stop ends the sentence, not the number.
  s = s.replace(/\.$/, '').trim();
  const fraction = fractionValue(s);
  if (fraction !== undefined) return canonicalNumber(fraction);
  // A number followed by units or words ("42 apples", "12 dollars").
  const leading = new RegExp(`^(${NUMBER_SOURCE})(?:\\s*[a-zA-Z°].*)?$`).exec(s);
  if (leading) {
    const x = Number(leading[1].replace(/,/g, '').replace(/^\+/, ''));
    if (Number.isFinite(x)) return canonicalNumber(x);
  }
  return s;
}

/** Whether an extracted answer equals the gold one (both normalised; numbers compared as numbers). */
export function answersMatch(predicted: string | undefined, gold: string): boolean {
  if (predicted === undefined) return false;
  const a = normalizeAnswer(predicted);
  const b = normalizeAnswer(gold);
  if (a === b) return true;
  const x = Number(a);
  const y = Number(b);
  return (
    a !== '' &&
    b !== '' &&
    Number.isFinite(x) &&
    Number.isFinite(y) &&
    Math.abs(x - y) <= 1e-9 * Math.max(1, Math.abs(y))
  );
}
