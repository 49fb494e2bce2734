import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DatasetFetchError, fetchGsm8kTest, parseGsm8kAnswer } from '../../src/eval/gsm8k';

/** A split of 230 rows served the way the dataset viewer serves them (at most 100 per request). */
const TOTAL = 230;
function viewerRow(i: number) {
  return {
    row_idx: i,
    row: {
      question: `Question ${i}: how many?`,
      answer: `Work ${i} * 2 = <<${i}*2=${i * 2}>>${i * 2}\n#### ${(i * 1000).toLocaleString('en-US')}`,
    },
    truncated_cells: [],
  };
}

let server: Server;
let endpoint: string;
const requests: URLSearchParams[] = [];

beforeAll(async () => {
  server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/broken/rows') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"rows": [{"row_idx": 0, "row": {}}]}');
      return;
    }
    if (url.pathname !== '/rows') {
      res.writeHead(404).end('{"error":"not found"}');
      return;
    }
    requests.push(url.searchParams);
    const p = url.searchParams;
    if (p.get('dataset') !== 'openai/gsm8k' || p.get('config') !== 'main' || p.get('split') !== 'test') {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: 'The dataset does not exist.' }));
      return;
    }
    const offset = Number(p.get('offset'));
    const length = Number(p.get('length'));
    if (length > 100) {
      res.writeHead(422).end(JSON.stringify({ error: "Parameter 'length' must not be greater than 100" }));
      return;
    }
    const rows = [];
    for (let i = offset; i < Math.min(TOTAL, offset + length); i++) rows.push(viewerRow(i));
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({ features: [], rows, num_rows_total: TOTAL, num_rows_per_page: 100, partial: false }),
    );
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(() => new Promise<void>((r) => server.close(() => r())));

describe('parseGsm8kAnswer', () => {
  it('takes the number after the last ####, normalised', () => {
    expect(parseGsm8kAnswer('She has 3 + 4 = <<3+4=7>>7 apples.\n#### 7')).toBe('7');
    expect(parseGsm8kAnswer('...\n#### 1,600')).toBe('1600');
    expect(parseGsm8kAnswer('...\n####-5')).toBe('-5');
  });
  it('names the row when the answer line is missing', () => {
    expect(() => parseGsm8kAnswer('no marker', 'openai/gsm8k test row 4')).toThrow(
      /openai\/gsm8k test row 4: no '#### <answer>' line/,
    );
  });
});

describe('fetchGsm8kTest', () => {
  it('reads the first N rows in pages of at most 100', async () => {
    requests.length = 0;
    const questions = await fetchGsm8kTest(205, { endpoint: `${endpoint}/` });
    expect(questions).toHaveLength(205);
    expect(requests.map((p) => [p.get('offset'), p.get('length')])).toEqual([
      ['0', '100'],
      ['100', '100'],
      ['200', '5'],
    ]);
    expect(questions[0]).toEqual({ id: 'gsm8k-test-0', question: 'Question 0: how many?', answer: '0' });
    expect(questions[204]).toEqual({
      id: 'gsm8k-test-204',
      question: 'Question 204: how many?',
      answer: '204000',
    });
  });

  it('stops where the split ends', async () => {
    const questions = await fetchGsm8kTest(50, { endpoint, offset: 200 });
    expect(questions.map((q) => q.id)).toEqual(Array.from({ length: 30 }, (_, i) => `gsm8k-test-${200 + i}`));
  });

  it('says clearly when offline, and what to use instead', async () => {
    const offline: typeof fetch = async () => {
      throw new TypeError('fetch failed');
    };
    const attempt = fetchGsm8kTest(3, { endpoint: 'https://datasets.example', fetch: offline });
    await expect(attempt).rejects.toBeInstanceOf(DatasetFetchError);
    await expect(attempt).rejects.toThrow(
      /could not reach the dataset viewer at https:\/\/datasets\.example\/rows\?dataset=openai%2Fgsm8k&config=main&split=test&offset=0&length=3 \(fetch failed\).*offline, use the built-in questions/,
    );
    // A closed port, for real.
    const closed = `http://127.0.0.1:1`;
    await expect(fetchGsm8kTest(1, { endpoint: closed })).rejects.toThrow(
      /could not reach the dataset viewer/,
    );
  });

  it("passes on the viewer's own error message and status", async () => {
    await expect(fetchGsm8kTest(1, { endpoint: `${endpoint}/nothing-here` })).rejects.toThrow(
      /answered 404 for .*: not found/,
    );
  });

  it('refuses rows that are not GSM8K', async () => {
    await expect(fetchGsm8kTest(1, { endpoint: `${endpoint}/broken` })).rejects.toThrow(
      /openai\/gsm8k test row 0: expected string 'question' and 'answer' columns/,
    );
  });

  it('refuses a count that is not a positive whole number', async () => {
    await expect(fetchGsm8kTest(0, { endpoint })).rejects.toThrow(RangeError);
    await expect(fetchGsm8kTest(1.5, { endpoint })).rejects.toThrow(/whole number/);
  });

  it('lets an abort through as an abort', async () => {
    const controller = new AbortController();
    controller.abort();
    await expect(fetchGsm8kTest(1, { endpoint, signal: controller.signal })).rejects.toMatchObject({
      name: 'AbortError',
    });
  });
});
