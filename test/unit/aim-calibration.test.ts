/**
 * AIM's calibration: the text rules (order, selection, blocks, hash) and the statistics pass of the CPU
 * reference against a direct computation on the fixture's System 1 model.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUILTIN_QUESTIONS } from '../../src/eval/questions';
import {
  ActivationAccumulator,
  CalibrationError,
  calibrationModules,
  cpuStatisticsSink,
  runAimCalibration,
  runStatisticsPass,
} from '../../src/model/calibration';
import {
  buildCalibrationBlocks,
  builtinCandidates,
  CalibrationTextError,
  type CandidateTexts,
  calibrationOrder,
  calibrationTextSha256,
  fileCandidates,
  hubCandidates,
} from '../../src/model/calibration-text';
import { type CpuReferenceRunner, createCpuRunner, rmsNorm } from '../../src/model/reference';
import { ModelTokenizer } from '../../src/model/tokenizer';
import { type ModelWeights, openModelWeights } from '../../src/model/weights';
import { modelFolder } from '../../src/node/model-folder';
import type { CalibrationSettings } from '../../src/recipe/aim';
import { Sha256 } from '../../src/store/sha256';

const SYSTEM1 = 'test/fixtures/qwen2-tiny-l2s/system1';

const list = (texts: string[]): CandidateTexts => ({
  count: texts.length,
  text: async (i) => texts[i],
  where: (i) => `text ${i}`,
});
/** One token per character: easy to count. */
const charTokenizer = { encode: (t: string) => [...t].map((ch) => ch.charCodeAt(0)) };

describe('calibration text', () => {
  it('orders samples by a seeded Fisher-Yates shuffle: a permutation, the same for the same seed', () => {
    const a = calibrationOrder(50, 42);
    expect([...a].sort((x, y) => x - y)).toEqual([...Array(50).keys()]);
    expect([...calibrationOrder(50, 42)]).toEqual([...a]);
    expect([...calibrationOrder(50, 43)]).not.toEqual([...a]);
    expect([...calibrationOrder(1, 5)]).toEqual([0]);
  });

  it('trims, skips empty and over-long samples, concatenates, drops the short last block, hashes the kept texts', async () => {
    const texts = ['  abcd ', 'x'.repeat(9), '', 'efgh', 'ij', 'klmnop'];
    const settings = { samples: 10, blockSize: 4, seed: 7 };
    const blocks = await buildCalibrationBlocks(list(texts), charTokenizer, settings);
    const order = calibrationOrder(texts.length, 7);
    const kept = [...order].map((i) => texts[i].trim()).filter((t) => t.length > 0 && t.length <= 4);
    const ids = kept
      .join('')
      .split('')
      .map((c) => c.charCodeAt(0));
    expect(blocks.samplesUsed).toBe(kept.length);
    expect(blocks.totalTokens).toBe(ids.length);
    expect(blocks.blocks.length).toBe(Math.floor(ids.length / 4));
    expect(blocks.blocks.flatMap((b) => [...b])).toEqual(ids.slice(0, blocks.blocks.length * 4));
    const expected = new Sha256().update(new TextEncoder().encode(JSON.stringify(kept))).hex();
    expect(blocks.textSha256).toBe(expected);
    expect(calibrationTextSha256(kept)).toBe(expected);
  });

  it('takes only the first `samples` usable samples of the order', async () => {
    const texts = ['aa', 'bb', 'cc', 'dd', 'ee'];
    const blocks = await buildCalibrationBlocks(list(texts), charTokenizer, {
      samples: 2,
      blockSize: 2,
      seed: 1,
    });
    expect(blocks.samplesUsed).toBe(2);
    const order = calibrationOrder(5, 1);
    expect(blocks.blocks.map((b) => String.fromCharCode(...b))).toEqual([texts[order[0]], texts[order[1]]]);
  });

  it('refuses a text shorter than one block, saying how many tokens there were', async () => {
    await expect(
      buildCalibrationBlocks(list(['abc']), charTokenizer, { samples: 5, blockSize: 8, seed: 0 }),
    ).rejects.toThrow(/gives 3 tokens from 1 samples .*fewer than one block/);
  });

  it('built-in samples are question + "\\n" + short answer', async () => {
    const c = builtinCandidates();
    expect(c.count).toBe(BUILTIN_QUESTIONS.length);
    expect(await c.text(0)).toBe(`${BUILTIN_QUESTIONS[0].question}\n${BUILTIN_QUESTIONS[0].answer}`);
  });

  it('reads .txt paragraphs and .jsonl fields, naming the file and line at fault', async () => {
    const enc = new TextEncoder();
    const txt = fileCandidates(enc.encode('one\ntwo\n\n  \nthree\r\n\r\nfour\n'), 'c.txt');
    expect(txt.count).toBe(3);
    expect(await txt.text(0)).toBe('one\ntwo');
    expect((await txt.text(1)).trim()).toBe('three');
    const jsonl = fileCandidates(enc.encode('{"q":"a","s":"b"}\n\n{"q":"c","s":"d"}\n'), 'c.jsonl', [
      'q',
      's',
    ]);
    expect(jsonl.count).toBe(2);
    expect(await jsonl.text(1)).toBe('c\nd');
    expect(jsonl.where(1)).toBe('c.jsonl:3');
    expect(() => fileCandidates(enc.encode('{"q":"a"}\n{oops\n'), 'bad.jsonl', ['q'])).toThrow(
      /bad.jsonl:2: not JSON/,
    );
    expect(() => fileCandidates(enc.encode('{"q":1}\n'), 'n.jsonl', ['q'])).toThrow(
      /n.jsonl:1: field "q" is not a string/,
    );
    expect(() => fileCandidates(new Uint8Array([0xff, 0xfe]), 'b.txt')).toThrow(CalibrationTextError);
  });

  it('reads hub rows from the dataset viewer page by page, fields joined with "\\n"', async () => {
    const total = 230;
    const requested: string[] = [];
    const fakeFetch = (async (url: string) => {
      const u = new URL(url);
      requested.push(u.searchParams.get('offset')!);
      expect(u.pathname).toBe('/rows');
      expect(u.searchParams.get('dataset')).toBe('simplescaling/s1K');
      expect(u.searchParams.get('config')).toBe('default');
      expect(u.searchParams.get('split')).toBe('train');
      const offset = Number(u.searchParams.get('offset'));
      const length = Number(u.searchParams.get('length'));
      const rows = [];
      for (let i = offset; i < Math.min(total, offset + length); i++)
        rows.push({
          row_idx: i,
          row: { question: `q${i}`, solution: `s${i}`, n: i },
          truncated_cells: i === 205 ? ['solution'] : [],
        });
      return new Response(JSON.stringify({ rows, num_rows_total: total }), { status: 200 });
    }) as typeof fetch;
    const source = {
      kind: 'hub',
      dataset: 'simplescaling/s1K',
      config: 'default',
      split: 'train',
      field: ['question', 'solution'],
    } as const;
    const c = await hubCandidates(source, { endpoint: 'http://viewer.test/', fetch: fakeFetch });
    expect(c.count).toBe(total);
    expect(await c.text(150)).toBe('q150\ns150');
    expect(await c.text(3)).toBe('q3\ns3');
    expect(requested).toEqual(['0', '100']);
    await expect(c.text(205)).rejects.toThrow(
      /truncated field\(s\) solution of simplescaling\/s1K \(default\/train\) row 205/,
    );
    const bad = await hubCandidates(
      { ...source, field: ['answer'] },
      { endpoint: 'http://viewer.test', fetch: fakeFetch },
    );
    await expect(bad.text(1)).rejects.toThrow(
      /field "answer" is missing; the row has: question, solution, n/,
    );
    const down = (async () => {
      throw new TypeError('fetch failed');
    }) as typeof fetch;
    await expect(hubCandidates(source, { endpoint: 'http://viewer.test', fetch: down })).rejects.toThrow(
      /could not reach the dataset viewer .* use calibration source builtin or a local file/,
    );
    const refusing = (async () =>
      new Response('{"error":"The dataset does not exist."}', { status: 404 })) as typeof fetch;
    await expect(hubCandidates(source, { fetch: refusing })).rejects.toThrow(/answered 404 .*does not exist/);
  });
});

describe('statistics pass on the fixture System 1 (CPU reference)', () => {
  let files: Awaited<ReturnType<typeof modelFolder>>;
  let weights: ModelWeights;
  let tokenizer: ModelTokenizer;
  let runner: CpuReferenceRunner;
  beforeAll(async () => {
    files = await modelFolder(SYSTEM1);
    weights = await openModelWeights(files);
    tokenizer = await ModelTokenizer.load(files);
    runner = await createCpuRunner(weights, { maxContext: 64 });
  });
  afterAll(async () => {
    runner.dispose();
    await files.close();
  });

  it('equals a direct computation per module and channel; layer 0 checked from the weights alone', async () => {
    const calibration = await buildCalibrationBlocks(builtinCandidates(), tokenizer, {
      samples: 12,
      blockSize: 48,
      seed: 42,
    });
    expect(calibration.blocks.length).toBeGreaterThanOrEqual(2);
    const stats = await runStatisticsPass(runner, calibration, cpuStatisticsSink());

    // Direct: keep a copy of every module input of every block, then mean |x| per channel in f64.
    const inputs = new Map<string, Float32Array[]>();
    for (const block of calibration.blocks) {
      runner.reset();
      await runner.prefill(
        Array.from(block),
        { temperature: 0, topP: 1, seed: 0 },
        {
          onModuleInput: (module, x) => {
            if (!inputs.has(module)) inputs.set(module, []);
            inputs.get(module)!.push(x.slice());
          },
        },
      );
    }
    const modules = calibrationModules(weights.config);
    expect(modules.length).toBe(4 * 9 + 2);
    expect([...stats.modules.keys()]).toEqual(modules);
    for (const module of modules) {
      const a = stats.modules.get(module)!;
      const blocks = inputs.get(module)!;
      expect(blocks.length).toBe(calibration.blocks.length);
      const channels = a.length;
      for (let c = 0; c < channels; c++) {
        let direct = 0;
        for (const x of blocks) {
          let s = 0;
          for (let t = 0; t < x.length / channels; t++) s += Math.abs(x[t * channels + c]);
          direct += s / (x.length / channels);
        }
        expect(Math.abs(a[c] - direct) / Math.max(direct, 1e-30), `${module}[${c}]`).toBeLessThan(2e-6);
      }
    }
    // Independent of the runner: layer 0's input_layernorm sees the embeddings of the tokens, and q_proj
    // sees their RMSNorm times the norm weight.
    const embed = await weights.f32('model.embed_tokens.weight');
    const normW = await weights.f32('model.layers.0.input_layernorm.weight');
    const h = weights.config.hiddenSize;
    const directEmbed = new Float64Array(h);
    const directNormed = new Float64Array(h);
    for (const block of calibration.blocks) {
      const x = new Float32Array(block.length * h);
      for (let t = 0; t < block.length; t++) x.set(embed.subarray(block[t] * h, (block[t] + 1) * h), t * h);
      const normed = new Float32Array(x.length);
      rmsNorm(x, h, normW, weights.config.rmsNormEps, normed);
      for (let c = 0; c < h; c++) {
        let s = 0;
        let n = 0;
        for (let t = 0; t < block.length; t++) {
          s += Math.abs(x[t * h + c]);
          n += Math.abs(normed[t * h + c]);
        }
        directEmbed[c] += s / block.length;
        directNormed[c] += n / block.length;
      }
    }
    const ln = stats.modules.get('model.layers.0.input_layernorm')!;
    const q = stats.modules.get('model.layers.0.self_attn.q_proj')!;
    for (let c = 0; c < h; c++) {
      expect(Math.abs(ln[c] - directEmbed[c]) / directEmbed[c]).toBeLessThan(2e-6);
      expect(Math.abs(q[c] - directNormed[c]) / directNormed[c]).toBeLessThan(2e-6);
    }
    // q, k and v share their input.
    expect([...stats.modules.get('model.layers.2.self_attn.v_proj')!]).toEqual([
      ...stats.modules.get('model.layers.2.self_attn.q_proj')!,
    ]);
    expect(stats.modules.get('lm_head')!.length).toBe(h);
    expect(stats.modules.get('model.layers.1.mlp.down_proj')!.length).toBe(weights.config.intermediateSize);
  });

  it('accumulates chunks of a block like one whole block (same f32 order)', () => {
    const x = Float32Array.from({ length: 6 * 3 }, (_, i) => Math.sin(i) * (i + 1));
    const whole = new ActivationAccumulator();
    whole.observe('m', x, 3);
    whole.endBlock();
    const split = new ActivationAccumulator();
    split.observe('m', x.subarray(0, 6), 3);
    split.observe('m', x.subarray(6), 3);
    split.endBlock();
    expect([...split.a.get('m')!]).toEqual([...whole.a.get('m')!]);
    expect(() => split.observe('m', new Float32Array(4), 3)).toThrow(/4 values for 3 channels/);
  });

  it('reports progress to the end, and stops when cancelled', async () => {
    const calibration = await buildCalibrationBlocks(builtinCandidates(), tokenizer, {
      samples: 12,
      blockSize: 64,
      seed: 1,
    });
    const seen: number[] = [];
    await runStatisticsPass(runner, calibration, cpuStatisticsSink(), {
      onProgress: (p) => seen.push(p.blocksDone),
    });
    expect(seen).toEqual([...Array(calibration.blocks.length + 1).keys()]);
    const controller = new AbortController();
    const run = runStatisticsPass(runner, calibration, cpuStatisticsSink(), {
      signal: controller.signal,
      onProgress: (p) => {
        if (p.blocksDone === 1) controller.abort();
      },
    });
    await expect(run).rejects.toMatchObject({ name: 'AbortError' });
  });

  it('runAimCalibration checks the recorded sha256 of the text', async () => {
    const settings: CalibrationSettings = { source: { kind: 'builtin' }, samples: 8, blockSize: 64, seed: 3 };
    const stats = await runAimCalibration({ base: files, settings, device: 'cpu' });
    expect(stats.blocks).toBeGreaterThan(0);
    expect(stats.calibration).toEqual(settings);
    const again = await runAimCalibration({
      base: files,
      settings: { ...settings, sha256: stats.textSha256 },
      device: 'cpu',
    });
    expect([...again.modules.get('lm_head')!]).toEqual([...stats.modules.get('lm_head')!]);
    await expect(
      runAimCalibration({ base: files, settings: { ...settings, sha256: '0'.repeat(64) }, device: 'cpu' }),
    ).rejects.toThrow(CalibrationError);
  });
});
