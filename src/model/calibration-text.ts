/**
 * AIM's calibration text: from a source (built-in, a local file, a hub dataset) to token blocks.
 *
 * Exactly, so another implementation reproduces the statistics:
 * 1. Candidates, in source order: builtin = src/eval/questions.ts' BUILTIN_QUESTIONS, each
 *    `question + "\n" + answer` (question and short answer); a `.txt` file = its paragraphs (split at
 *    lines that are empty or whitespace only); a `.jsonl` file = one JSON object per non-empty line;
 *    a hub dataset = the rows of config/split as the dataset viewer serves them. For JSONL and hub rows,
 *    the `field` values (strings) are joined with "\n" in the order listed.
 * 2. Order: a Fisher-Yates shuffle of the candidate indices keyed by `seed`: for i = n-1 down to 1,
 *    j = floor(u_i * (i + 1)) and swap(i, j), with u_i = uniformAt(seed, "aim-calibration", 0,
 *    RNG_STREAM_CALIBRATION, i) of src/random/counter-rng.ts.
 * 3. Selection, as AIM's get_calib_dataset: walking that order, each text is trimmed (leading and
 *    trailing whitespace, Python's str.strip) and encoded with the base model's tokenizer with its
 *    default special tokens (transformers' tokenizer.encode: Qwen2 adds none, Llama a BOS per sample);
 *    a sample is skipped when it has no tokens or more than block_size; the first `samples` kept ones
 *    are used (fewer when the source runs out).
 * 4. Blocks: the kept samples' token ids are concatenated in that order with nothing between them and
 *    cut into floor(total / block_size) blocks of block_size tokens; the short rest at the end is
 *    dropped. No block at all is an error.
 * 5. sha256 = SHA-256 of the UTF-8 bytes of JSON.stringify(array of the kept, trimmed texts in order).
 */
import { DatasetFetchError, fetchViewerRows, type ViewerRows } from '../eval/dataset-viewer';
import { DATASET_VIEWER_MAX_ROWS, DEFAULT_DATASETS_URL } from '../eval/gsm8k';
import { BUILTIN_QUESTIONS } from '../eval/questions';
import { uniformAt } from '../random/counter-rng';
import type { CalibrationSettings, CalibrationSource } from '../recipe/aim';
import { Sha256 } from '../store/sha256';

/** Counter word c2 of the calibration sample order (after sparsify 0, gaussian 1, sampling 2). */
export const RNG_STREAM_CALIBRATION = 3;
const SHUFFLE_KEY = 'aim-calibration';

/** The calibration text cannot be read or gives no block; names the file, dataset or row. */
export class CalibrationTextError extends Error {
  override name = 'CalibrationTextError';
}

/** The candidate texts of a source, read lazily (a hub dataset is fetched page by page as needed). */
export interface CandidateTexts {
  readonly count: number;
  /** Text of candidate `index` (source order), untrimmed. */
  text(index: number): Promise<string>;
  /** Names the candidate in errors, e.g. `calib.jsonl:12` or `simplescaling/s1K row 40`. */
  where(index: number): string;
}

export interface CalibrationBlocks {
  readonly blocks: Int32Array[];
  readonly blockSize: number;
  readonly samplesUsed: number;
  /** Tokens of the kept samples, before cutting (the last total % blockSize are dropped). */
  readonly totalTokens: number;
  readonly textSha256: string;
}

export interface CalibrationTokenizer {
  encode(text: string): number[];
}

/** The sample order for `count` candidates under `seed` (step 2 above). */
export function calibrationOrder(count: number, seed: number): Uint32Array {
  const order = new Uint32Array(count);
  for (let i = 0; i < count; i++) order[i] = i;
  for (let i = count - 1; i >= 1; i--) {
    const j = Math.floor(uniformAt(seed, SHUFFLE_KEY, 0, RNG_STREAM_CALIBRATION, i) * (i + 1));
    const t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  return order;
}

export function calibrationTextSha256(texts: readonly string[]): string {
  return new Sha256().update(new TextEncoder().encode(JSON.stringify(texts))).hex();
}

/** Steps 2 to 5: order, select, tokenize, cut. */
export async function buildCalibrationBlocks(
  candidates: CandidateTexts,
  tokenizer: CalibrationTokenizer,
  settings: Pick<CalibrationSettings, 'samples' | 'blockSize' | 'seed'>,
  signal?: AbortSignal,
): Promise<CalibrationBlocks> {
  const order = calibrationOrder(candidates.count, settings.seed);
  const kept: string[] = [];
  const ids: number[] = [];
  let skipped = 0;
  for (let k = 0; k < order.length && kept.length < settings.samples; k++) {
    if (signal?.aborted) throw abortError();
    const text = (await candidates.text(order[k])).trim();
    const tokens = tokenizer.encode(text);
    if (tokens.length === 0 || tokens.length > settings.blockSize) {
      skipped++;
      continue;
    }
    kept.push(text);
    for (const t of tokens) ids.push(t);
  }
  const count = Math.floor(ids.length / settings.blockSize);
  if (count === 0) {
    throw new CalibrationTextError(
      `the calibration text gives ${ids.length} tokens from ${kept.length} samples (${skipped} skipped as empty ` +
        `or longer than block_size ${settings.blockSize}): fewer than one block; use more samples, a larger ` +
        'source or a smaller block_size',
    );
  }
  const blocks: Int32Array[] = [];
  for (let b = 0; b < count; b++)
    blocks.push(Int32Array.from(ids.slice(b * settings.blockSize, (b + 1) * settings.blockSize)));
  return {
    blocks,
    blockSize: settings.blockSize,
    samplesUsed: kept.length,
    totalTokens: ids.length,
    textSha256: calibrationTextSha256(kept),
  };
}

function abortError(): Error {
  const e = new Error('the calibration was cancelled');
  e.name = 'AbortError';
  return e;
}

export function builtinCandidates(): CandidateTexts {
  return {
    count: BUILTIN_QUESTIONS.length,
    text: async (i) => `${BUILTIN_QUESTIONS[i].question}\n${BUILTIN_QUESTIONS[i].answer}`,
    where: (i) => `built-in question ${BUILTIN_QUESTIONS[i].id}`,
  };
}

function joinFields(row: unknown, fields: readonly string[], where: string): string {
  if (typeof row !== 'object' || row === null || Array.isArray(row))
    throw new CalibrationTextError(`${where}: must be a JSON object with the field(s) ${fields.join(', ')}`);
  return fields
    .map((f) => {
      const v = (row as Record<string, unknown>)[f];
      if (typeof v !== 'string') {
        const keys = Object.keys(row).slice(0, 12).join(', ');
        throw new CalibrationTextError(
          `${where}: field ${JSON.stringify(f)} is ${v === undefined ? 'missing' : `not a string (${typeof v})`}; ` +
            `the row has: ${keys}`,
        );
      }
      return v;
    })
    .join('\n');
}

/** A local `.txt` (paragraphs) or `.jsonl` (one object per line, `field`) calibration file. */
export function fileCandidates(bytes: Uint8Array, file: string, field?: readonly string[]): CandidateTexts {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new CalibrationTextError(`${file}: is not UTF-8 text`);
  }
  if (/\.jsonl$/i.test(file)) {
    if (!field) throw new CalibrationTextError(`${file}: a .jsonl calibration file needs field:`);
    const lines: { line: number; text: string }[] = [];
    text.split('\n').forEach((raw, i) => {
      if (raw.trim() === '') return;
      let row: unknown;
      try {
        row = JSON.parse(raw);
      } catch (e) {
        throw new CalibrationTextError(`${file}:${i + 1}: not JSON (${(e as Error).message})`);
      }
      lines.push({ line: i + 1, text: joinFields(row, field, `${file}:${i + 1}`) });
    });
    return {
      count: lines.length,
      text: async (i) => lines[i].text,
      where: (i) => `${file}:${lines[i].line}`,
    };
  }
  const paragraphs = text
    .replace(/\r\n?/g, '\n')
    .split(/\n[ \t]*\n/)
    .filter((p) => p.trim() !== '');
  return {
    count: paragraphs.length,
    text: async (i) => paragraphs[i],
    where: (i) => `${file} paragraph ${i + 1}`,
  };
}

export interface HubCandidateOptions {
  /** Dataset viewer base URL; default https://datasets-server.huggingface.co. */
  endpoint?: string;
  signal?: AbortSignal;
  fetch?: typeof fetch;
}

/**
 * Rows of a hub dataset through the dataset viewer API (`GET {endpoint}/rows?dataset&config&split&offset&length`,
 * at most 100 rows a request), fetched a page at a time as the sample order reaches them.
 */
export async function hubCandidates(
  source: Extract<CalibrationSource, { kind: 'hub' }>,
  opts: HubCandidateOptions = {},
): Promise<CandidateTexts> {
  const name = `${source.dataset} (${source.config}/${source.split})`;
  const page = (offset: number): Promise<ViewerRows> =>
    fetchViewerRows(
      {
        endpoint: opts.endpoint ?? DEFAULT_DATASETS_URL,
        dataset: source.dataset,
        config: source.config,
        split: source.split,
        offset,
        length: DATASET_VIEWER_MAX_ROWS,
      },
      {
        signal: opts.signal,
        fetch: opts.fetch,
        name,
        offlineHint: `; calibrating on ${name} needs a network connection: offline, use calibration source builtin or a local file`,
      },
    );
  const first = await page(0);
  const total = first.num_rows_total;
  if (typeof total !== 'number' || !Number.isSafeInteger(total) || total < 0)
    throw new DatasetFetchError(`the dataset viewer did not say how many rows ${name} has (num_rows_total)`);
  const pages = new Map<number, Promise<ViewerRows>>([[0, Promise.resolve(first)]]);
  const where = (i: number) => `${name} row ${i}`;
  return {
    count: total,
    where,
    async text(i) {
      const offset = Math.floor(i / DATASET_VIEWER_MAX_ROWS) * DATASET_VIEWER_MAX_ROWS;
      let p = pages.get(offset);
      if (!p) {
        p = page(offset);
        pages.set(offset, p);
      }
      const entry = (await p).rows.find((r) => r.row_idx === i);
      if (!entry) throw new DatasetFetchError(`the dataset viewer did not send ${where(i)}`);
      const cut = source.field.filter((f) => entry.truncated_cells?.includes(f));
      if (cut.length > 0) {
        throw new DatasetFetchError(
          `the dataset viewer truncated field(s) ${cut.join(', ')} of ${where(i)}; such a row is too long to calibrate on`,
        );
      }
      return joinFields(entry.row, source.field, where(i));
    },
  };
}
