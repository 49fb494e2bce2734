/**
 * The first N questions of the GSM8K test split (`openai/gsm8k`, config `main`), read from the Hugging
 * Face dataset viewer API: `GET {endpoint}/rows?dataset=openai/gsm8k&config=main&split=test&offset=O&length=L`
 * answers `{features, rows: [{row_idx, row: {question, answer}, truncated_cells}], num_rows_total, ...}`,
 * at most 100 rows per request. The endpoint is configurable (a mirror, or a local server in tests),
 * like the model hub's.
 *
 * A GSM8K answer is the worked solution followed by a line `#### N`; N is the gold answer.
 */
import { normalizeAnswer } from './answer';
import { DatasetFetchError, fetchViewerRows, viewerRowsUrl } from './dataset-viewer';
import type { EvalQuestion } from './questions';

export const DEFAULT_DATASETS_URL = 'https://datasets-server.huggingface.co';
export const GSM8K_DATASET = 'openai/gsm8k';
/** The dataset viewer serves at most this many rows per request. */
export const DATASET_VIEWER_MAX_ROWS = 100;

/** The dataset viewer could not be reached, refused the request, or sent something that is not GSM8K. */
export { DatasetFetchError };

/** The gold answer after `####` in a GSM8K answer text, normalised. */
export function parseGsm8kAnswer(answerText: string, where = 'gsm8k answer'): string {
  const marks = answerText.match(/####\s*([^\n]*)/g);
  if (!marks) throw new DatasetFetchError(`${where}: no '#### <answer>' line in the answer text`);
  const final = marks[marks.length - 1].replace(/^####\s*/, '').trim();
  if (!final) throw new DatasetFetchError(`${where}: the '####' line is empty`);
  return normalizeAnswer(final);
}

export interface Gsm8kOptions {
  /** Dataset viewer base URL; default DEFAULT_DATASETS_URL. */
  endpoint?: string;
  /** First row (default 0). */
  offset?: number;
  signal?: AbortSignal;
  /** For tests; default the global fetch. */
  fetch?: typeof fetch;
}

/**
 * Questions `offset` .. `offset + count - 1` of the GSM8K test split (fewer when the split ends
 * first), in order, with ids `gsm8k-test-<row index>`.
 */
export async function fetchGsm8kTest(count: number, opts: Gsm8kOptions = {}): Promise<EvalQuestion[]> {
  if (!Number.isSafeInteger(count) || count < 1) {
    throw new RangeError(`the number of GSM8K questions must be a whole number of at least 1, got ${count}`);
  }
  const endpoint = opts.endpoint || DEFAULT_DATASETS_URL;
  const start = opts.offset ?? 0;
  const questions: EvalQuestion[] = [];
  while (questions.length < count) {
    const offset = start + questions.length;
    const length = Math.min(DATASET_VIEWER_MAX_ROWS, count - questions.length);
    const request = { endpoint, dataset: GSM8K_DATASET, config: 'main', split: 'test', offset, length };
    const url = viewerRowsUrl(request);
    const page = await fetchViewerRows(request, {
      signal: opts.signal,
      fetch: opts.fetch,
      offlineHint: '. GSM8K needs a network connection; offline, use the built-in questions.',
    });
    for (const [i, entry] of page.rows.entries()) {
      const rowIndex = typeof entry?.row_idx === 'number' ? entry.row_idx : offset + i;
      const where = `${GSM8K_DATASET} test row ${rowIndex}`;
      const row = entry?.row;
      if (!row || typeof row.question !== 'string' || typeof row.answer !== 'string') {
        throw new DatasetFetchError(
          `${where}: expected string 'question' and 'answer' columns (from ${url})`,
        );
      }
      if (entry.truncated_cells?.length) {
        throw new DatasetFetchError(
          `${where}: the dataset viewer truncated ${entry.truncated_cells.join(', ')}`,
        );
      }
      questions.push({
        id: `gsm8k-test-${rowIndex}`,
        question: row.question,
        answer: parseGsm8kAnswer(row.answer, where),
      });
    }
    // The split ended (or the viewer sent fewer rows than asked): stop rather than ask again forever.
    if (page.rows.length < length) break;
  }
  return questions.slice(0, count);
}
