/**
 * One page of a hub dataset's rows through the dataset viewer API:
 * `GET {endpoint}/rows?dataset=D&config=C&split=S&offset=O&length=L` (at most 100 rows a request).
 * GSM8K questions (src/eval/gsm8k.ts) and AIM's hub calibration text (src/model/calibration-text.ts)
 * both read it; each names what it needed the rows for in the errors.
 */

export class DatasetFetchError extends Error {
  override name = 'DatasetFetchError';
}

export interface ViewerRows {
  rows: Array<{ row_idx: number; row: Record<string, unknown>; truncated_cells?: string[] }>;
  num_rows_total?: number;
}

export interface ViewerPageRequest {
  endpoint: string;
  dataset: string;
  config: string;
  split: string;
  offset: number;
  length: number;
}

export interface ViewerFetchOptions {
  signal?: AbortSignal;
  /** For tests; default the global fetch. */
  fetch?: typeof fetch;
  /** Appended to "could not reach the dataset viewer at URL (why)": what to do offline. */
  offlineHint: string;
  /** How an HTTP error names the request ("for NAME"); default the URL. */
  name?: string;
}

export function viewerRowsUrl(r: ViewerPageRequest): string {
  const query = new URLSearchParams({
    dataset: r.dataset,
    config: r.config,
    split: r.split,
    offset: String(r.offset),
    length: String(r.length),
  });
  return `${r.endpoint.replace(/\/+$/, '')}/rows?${query}`;
}

export async function fetchViewerRows(
  request: ViewerPageRequest,
  opts: ViewerFetchOptions,
): Promise<ViewerRows> {
  const url = viewerRowsUrl(request);
  const fetchFn = opts.fetch ?? fetch;
  let response: Response;
  try {
    response = await fetchFn(url, { signal: opts.signal, headers: { accept: 'application/json' } });
  } catch (e) {
    if ((e as Error).name === 'AbortError') throw e;
    throw new DatasetFetchError(
      `could not reach the dataset viewer at ${url} (${(e as Error).message})${opts.offlineHint}`,
    );
  }
  const body = await response.text();
  if (!response.ok) {
    let reason = body.slice(0, 200);
    try {
      const parsed = JSON.parse(body) as { error?: unknown };
      if (typeof parsed.error === 'string') reason = parsed.error;
    } catch {
      // not JSON: the start of the body says enough
    }
    throw new DatasetFetchError(
      `the dataset viewer answered ${response.status} for ${opts.name ?? url}: ${reason}`,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    throw new DatasetFetchError(`the dataset viewer's answer for ${url} is not JSON`);
  }
  if (!Array.isArray((parsed as { rows?: unknown }).rows))
    throw new DatasetFetchError(`the dataset viewer's answer for ${url} has no rows list`);
  return parsed as ViewerRows;
}
