/**
 * The model runtime's GPU cases as data, run by test/unit/model-gpu-kernels.test.ts (Dawn in Node)
 * and test/browser/model-gpu.spec.ts (a worker in headless Chromium): every kernel of shaders/model/
 * against its TS twin on edge-case data (odd sizes, each weight dtype, GQA ratios, positions beyond
 * one tile, ties and NaN), and the whole GPU runner on the fixture pair against transformers'
 * reference outputs and the CPU reference runner.
 */

import type { ModelFiles } from '../../../src/engine/io';
import { decodeToF32, encodeFromF32, type FloatDType } from '../../../src/formats/dtype';
import { CommandBatch, readback } from '../../../src/gpu/commands';
import { type GpuContext, GpuDeviceLostError } from '../../../src/gpu/device';
import type { ModelConfig } from '../../../src/model/config';
import {
  DTYPE_CODE,
  MODEL_KERNELS,
  padded16,
  type StepValues,
  stepBytes,
} from '../../../src/model/gpu/kernels';
import { ropeTable } from '../../../src/model/gpu/rope-table';
import { createGpuRunner, GpuModelMemoryError, type GpuModelRunner } from '../../../src/model/gpu/runner';
import { applyRope, createCpuRunner, rmsNorm } from '../../../src/model/reference';
import { argmax, GREEDY, sampleToken, topLogprobs } from '../../../src/model/sampling';
import { openModelWeights } from '../../../src/model/weights';
import type { GpuCase } from './gpu-cases';
import { check, mulberry32 } from './gpu-check';

/** Where the fixture models come from: a folder in Node, fetched files in the browser. */
export interface ModelFixtures {
  open(model: 'system1' | 'system2'): Promise<ModelFiles>;
  reference(model: 'system1' | 'system2'): Promise<FixtureReference>;
}

export interface FixtureReference {
  prompts: Array<{
    prompt_ids: number[];
    generated_ids: number[];
    top_logprobs: Array<{ position: number; top_ids: number[]; top_logprobs: number[] }>;
    last_prompt_position_logits?: number[];
  }>;
}

/** The tolerance for GPU log-probabilities against transformers. */
const GPU_LOGPROB_TOLERANCE = 2e-3;

// ---- helpers ----

function storage(ctx: GpuContext, data: ArrayBufferView | number, label: string): GPUBuffer {
  const bytes = typeof data === 'number' ? data : data.byteLength;
  const b = ctx.device.createBuffer({
    label: `${ctx.label}.${label}`,
    size: padded16(bytes),
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
  });
  if (typeof data !== 'number') {
    const padded = new Uint8Array(padded16(bytes));
    padded.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    ctx.device.queue.writeBuffer(b, 0, padded);
  }
  return b;
}

async function readWords(ctx: GpuContext, buffer: GPUBuffer, words: number): Promise<Uint32Array> {
  const batch = new CommandBatch(ctx, 'test.read');
  const read = readback(batch, buffer, 0, words * 4);
  batch.submit();
  const bytes = await read();
  return new Uint32Array(bytes.buffer, bytes.byteOffset, words).slice();
}

async function readF32(ctx: GpuContext, buffer: GPUBuffer, count: number): Promise<Float32Array> {
  const w = await readWords(ctx, buffer, count);
  return new Float32Array(w.buffer);
}

function paramsOf(values: Array<number | { f32: number }>): Uint32Array {
  const u = new Uint32Array(Math.ceil(values.length / 4) * 4);
  const f = new Float32Array(u.buffer);
  values.forEach((v, i) => {
    if (typeof v === 'number') u[i] = v;
    else f[i] = v.f32;
  });
  return u;
}

async function run(
  ctx: GpuContext,
  kernel: keyof typeof MODEL_KERNELS,
  params: Uint32Array,
  step: StepValues | undefined,
  buffers: GPUBuffer[],
  workgroups: number,
  overrides?: Record<string, number>,
  entryPoint?: string,
): Promise<void> {
  await ctx.scoped(kernel, async () => {
    const batch = new CommandBatch(ctx, `test.${kernel}`);
    const bindings = step ? [params, new Uint32Array(stepBytes(step)), ...buffers] : [params, ...buffers];
    batch.dispatch({ kernel: MODEL_KERNELS[kernel], overrides, entryPoint, bindings, workgroups });
    batch.submit();
  });
}

function randomValues(n: number, seed: number, scale = 1): Float32Array {
  const r = mulberry32(seed);
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = (r() * 2 - 1) * scale;
  return v;
}

/** A weight tensor in `dtype`: its stored bytes and the exact f32 values they hold. */
function weightOf(
  n: number,
  seed: number,
  dtype: FloatDType,
  scale = 1,
): { bytes: Uint8Array; values: Float32Array } {
  const bytes = encodeFromF32(randomValues(n, seed, scale), dtype);
  return { bytes, values: decodeToF32(bytes, dtype) };
}

function checkClose(got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what: string): void {
  check(got.length >= want.length, `${what}: ${got.length} values, expected ${want.length}`);
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    if (!(d <= tol * Math.max(1, Math.abs(want[i])))) {
      throw new Error(`${what}: value ${i} is ${got[i]}, expected ${want[i]} (|diff| ${d} > ${tol})`);
    }
  }
}

const DTYPES: FloatDType[] = ['BF16', 'F16', 'F32'];

// ---- kernel cases ----

const matvecCases: GpuCase[] = [];
for (const dtype of DTYPES) {
  for (const [rows, cols] of [
    [37, 24],
    [19, 13],
    [9, 200],
  ]) {
    for (const lanes of [1, 32]) {
      matvecCases.push({
        name: `model matvec ${dtype} [${rows}x${cols}] lanes ${lanes}: y = W x of the last row, into a strided output`,
        async run(ctx) {
          const w = weightOf(rows * cols, rows * 31 + cols, dtype);
          const tokens = 3;
          const x = randomValues(tokens * cols, 7);
          const ldc = rows + 5;
          const rowStart = 2;
          const start = 4;
          const wb = storage(ctx, w.bytes, 'w');
          const xb = storage(ctx, x, 'x');
          const out = storage(ctx, (start + 1) * ldc * 4 + 64, 'out');
          const rowsPerGroup = 256 / lanes;
          // step_rows: output rows start at step.start; x_last_row: x is the step's last token row.
          const params = paramsOf([rows, cols, DTYPE_CODE[dtype], 0, 0, rowStart, 1, ldc, 1, 0, 0, 0]);
          await run(ctx, 'matvec', params, { tokens, start }, [wb, xb, out], Math.ceil(rows / rowsPerGroup), {
            LANES: lanes,
            ROWS_PER_GROUP: rowsPerGroup,
          });
          const got = await readF32(ctx, out, (start + 1) * ldc);
          const want = new Float64Array(rows);
          for (let r = 0; r < rows; r++) {
            let s = 0;
            for (let k = 0; k < cols; k++) s += w.values[r * cols + k] * x[(tokens - 1) * cols + k];
            want[r] = s;
          }
          checkClose(
            got.subarray(start * ldc + rowStart, start * ldc + rowStart + rows),
            want,
            1e-5,
            'matvec',
          );
          check(
            got[start * ldc] === 0 && got[start * ldc + rowStart + rows] === 0,
            'matvec wrote outside its rows',
          );
          for (const b of [wb, xb, out]) b.destroy();
        },
      });
    }
  }
}

const matmulCases: GpuCase[] = DTYPES.flatMap((dtype) =>
  [
    [70, 67, 37],
    [3, 130, 16],
  ].map(
    ([tokens, rows, cols]): GpuCase => ({
      name: `model matmul ${dtype} ${tokens} tokens x [${rows}x${cols}]: Y = X W^T past one 64x64 tile (tiled and direct)`,
      async run(ctx) {
        const w = weightOf(rows * cols, rows + cols, dtype);
        const x = randomValues(tokens * cols, 11);
        const ldc = rows + 3;
        const wb = storage(ctx, w.bytes, 'w');
        const xb = storage(ctx, x, 'x');
        const colBlocks = Math.ceil(rows / 64);
        const params = paramsOf([rows, cols, DTYPE_CODE[dtype], 0, 0, 1, 0, ldc, colBlocks, 0, 0, 0]);
        // `main` (tiled, workgroup memory) and `direct` (one invocation per output, for CPU adapters).
        for (const entry of ['main', 'direct']) {
          const out = storage(ctx, tokens * ldc * 4, 'out');
          const groups =
            entry === 'main' ? Math.ceil(tokens / 64) * colBlocks : Math.ceil((tokens * rows) / 64);
          await run(ctx, 'matmul', params, { tokens, start: 9 }, [wb, xb, out], groups, undefined, entry);
          const got = await readF32(ctx, out, tokens * ldc);
          for (let t = 0; t < tokens; t++) {
            const want = new Float64Array(rows);
            for (let r = 0; r < rows; r++) {
              let s = 0;
              for (let k = 0; k < cols; k++) s += w.values[r * cols + k] * x[t * cols + k];
              want[r] = s;
            }
            checkClose(got.subarray(t * ldc + 1, t * ldc + 1 + rows), want, 1e-5, `matmul ${entry} row ${t}`);
          }
          out.destroy();
        }
        for (const b of [wb, xb]) b.destroy();
      },
    }),
  ),
);

const rmsnormCases: GpuCase[] = [
  ...DTYPES.map(
    (dtype): GpuCase => ({
      name: `model rmsnorm ${dtype}: 3 rows of 300 channels (more than one workgroup's worth)`,
      async run(ctx) {
        const n = 300;
        const rows = 3;
        const x = randomValues(rows * n, 5, 3);
        const w = weightOf(n, 6, dtype);
        const eps = 1e-6;
        const out = storage(ctx, rows * n * 4, 'out');
        const [xb, wb] = [storage(ctx, x, 'x'), storage(ctx, w.bytes, 'w')];
        const params = paramsOf([n, DTYPE_CODE[dtype], { f32: eps }, 1, 0, 0, 0, 0]);
        await run(ctx, 'rmsnorm', params, { tokens: rows, start: 0 }, [wb, xb, out], rows);
        const want = new Float32Array(rows * n);
        rmsNorm(x, n, w.values, eps, want);
        checkClose(await readF32(ctx, out, rows * n), want, 1e-5, 'rmsnorm');
        for (const b of [xb, wb, out]) b.destroy();
      },
    }),
  ),
  {
    name: 'model rmsnorm per head (Qwen3 q/k norm: 2 tokens x 3 heads of 10) and of the last row only',
    async run(ctx) {
      const hd = 10;
      const x = randomValues(2 * 3 * hd, 8);
      const w = weightOf(hd, 9, 'BF16');
      const out = storage(ctx, x.byteLength, 'out');
      const [xb, wb] = [storage(ctx, x, 'x'), storage(ctx, w.bytes, 'w')];
      await run(
        ctx,
        'rmsnorm',
        paramsOf([hd, DTYPE_CODE.BF16, { f32: 1e-5 }, 3, 0, 0, 0, 0]),
        { tokens: 2, start: 0 },
        [wb, xb, out],
        6,
      );
      const want = new Float32Array(x.length);
      rmsNorm(x, hd, w.values, 1e-5, want);
      checkClose(await readF32(ctx, out, x.length), want, 1e-5, 'per-head rmsnorm');
      const last = storage(ctx, 3 * hd * 4, 'last');
      await run(
        ctx,
        'rmsnorm',
        paramsOf([3 * hd, DTYPE_CODE.F32, { f32: 1e-5 }, 1, 0, 0, 1, 0]),
        { tokens: 2, start: 0 },
        [storage(ctx, weightOf(3 * hd, 1, 'F32').bytes, 'w2'), xb, last],
        1,
      );
      const wantLast = new Float32Array(3 * hd);
      rmsNorm(x.subarray(3 * hd), 3 * hd, weightOf(3 * hd, 1, 'F32').values, 1e-5, wantLast);
      checkClose(await readF32(ctx, last, 3 * hd), wantLast, 1e-5, 'last-row rmsnorm');
    },
  },
];

const embeddingCase: GpuCase = {
  name: 'model embedding: gather from a table in two row chunks, tokens at the chunk edges',
  async run(ctx) {
    const vocab = 40;
    const cols = 12;
    const table = weightOf(vocab * cols, 3, 'BF16');
    const split = 24;
    const chunks = [
      storage(ctx, table.bytes.subarray(0, split * cols * 2), 'c0'),
      storage(ctx, table.bytes.subarray(split * cols * 2), 'c1'),
    ];
    const tokens = new Uint32Array([0, 23, 24, 39, 5]);
    const tb = storage(ctx, tokens, 'tokens');
    const out = storage(ctx, tokens.length * cols * 4, 'out');
    for (const [i, c] of chunks.entries()) {
      const params = paramsOf([cols, DTYPE_CODE.BF16, i === 0 ? 0 : split, i === 0 ? split : vocab - split]);
      await run(
        ctx,
        'embedding',
        params,
        { tokens: tokens.length, start: 0 },
        [c, tb, out],
        Math.ceil((tokens.length * cols) / 256),
      );
    }
    const got = await readF32(ctx, out, tokens.length * cols);
    tokens.forEach((t, i) => {
      checkClose(
        got.subarray(i * cols, (i + 1) * cols),
        table.values.subarray(t * cols, (t + 1) * cols),
        0,
        `token ${t}`,
      );
    });
  },
};

function ropeConfig(headDim: number): ModelConfig {
  return { headDim, ropeTheta: 1_000_000, ropeType: 'default', ropeFactor: 1 } as ModelConfig;
}

const ropeCase: GpuCase = {
  name: 'model rope: 3 tokens x 3 heads of 10 at positions 500.. (table), into the KV cache rows',
  async run(ctx) {
    const [tokens, heads, hd, start] = [3, 3, 10, 500];
    const x = randomValues(tokens * heads * hd, 12);
    const table = ropeTable(ropeConfig(hd), start + tokens);
    const [tab, src] = [storage(ctx, table, 'table'), storage(ctx, x, 'src')];
    const dst = storage(ctx, (start + tokens) * heads * hd * 4, 'dst');
    await run(ctx, 'rope', paramsOf([heads, hd, 0, 0, 1, 0, 0, 0]), { tokens, start }, [tab, src, dst], 1);
    const want = x.slice();
    const inv = new Float32Array(hd / 2);
    const f = Math.fround;
    for (let i = 0; i < hd / 2; i++) inv[i] = f(1 / f(1_000_000 ** f(f(2 * i) / hd)));
    applyRope(want, tokens, heads, hd, start, inv);
    const got = await readF32(ctx, dst, (start + tokens) * heads * hd);
    checkClose(got.subarray(start * heads * hd), want, 2e-6, 'rope');
  },
};

/** Causal GQA attention in f64: the twin of attention.wgsl. */
function attentionTwin(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  tokens: number,
  start: number,
  heads: number,
  kvHeads: number,
  hd: number,
): Float64Array {
  const out = new Float64Array(tokens * heads * hd);
  const kvd = kvHeads * hd;
  const scale = 1 / Math.sqrt(hd);
  for (let t = 0; t < tokens; t++) {
    for (let h = 0; h < heads; h++) {
      const kv = Math.floor(h / (heads / kvHeads));
      const n = start + t + 1;
      const s = new Float64Array(n);
      let m = Number.NEGATIVE_INFINITY;
      for (let j = 0; j < n; j++) {
        let d = 0;
        for (let c = 0; c < hd; c++) d += q[(t * heads + h) * hd + c] * k[j * kvd + kv * hd + c];
        s[j] = d * scale;
        m = Math.max(m, s[j]);
      }
      let z = 0;
      for (let j = 0; j < n; j++) z += s[j] = Math.exp(s[j] - m);
      for (let c = 0; c < hd; c++) {
        let a = 0;
        for (let j = 0; j < n; j++) a += s[j] * v[j * kvd + kv * hd + c];
        out[(t * heads + h) * hd + c] = a / z;
      }
    }
  }
  return out;
}

const attentionCases: GpuCase[] = [
  [5, 150, 6, 2, 40],
  [1, 70, 4, 1, 64],
  [3, 0, 4, 4, 256],
  [2, 63, 2, 2, 2],
].map(
  ([tokens, start, heads, kvHeads, hd]): GpuCase => ({
    name: `model attention: ${tokens} queries at ${start}.., ${heads} heads over ${kvHeads} kv heads of ${hd} (causal, tiles of 64 keys)`,
    async run(ctx) {
      const n = start + tokens;
      const q = randomValues(tokens * heads * hd, 21, 2);
      const k = randomValues(n * kvHeads * hd, 22, 2);
      const v = randomValues(n * kvHeads * hd, 23);
      const [qb, kb, vb] = [storage(ctx, q, 'q'), storage(ctx, k, 'k'), storage(ctx, v, 'v')];
      const out = storage(ctx, q.byteLength, 'out');
      const params = paramsOf([heads, kvHeads, hd, { f32: 1 / Math.sqrt(hd) }]);
      await run(ctx, 'attention', params, { tokens, start }, [qb, kb, vb, out], tokens * heads, {
        WORKGROUP_SIZE: 64,
      });
      const want = attentionTwin(q, k, v, tokens, start, heads, kvHeads, hd);
      checkClose(await readF32(ctx, out, q.length), want, 1e-5, 'attention');
      for (const b of [qb, kb, vb, out]) b.destroy();
    },
  }),
);

const elementwiseCases: GpuCase[] = [
  {
    name: 'model bias-add (bf16 bias, rows from step.start), silu-gate and residual-add on 3 x 37',
    async run(ctx) {
      const [tokens, n, start] = [3, 37, 2];
      const x = randomValues((start + tokens) * n, 31, 4);
      const bias = weightOf(n, 32, 'BF16');
      const xb = storage(ctx, x, 'x');
      await run(
        ctx,
        'biasAdd',
        paramsOf([n, DTYPE_CODE.BF16, 0, 1]),
        { tokens, start },
        [storage(ctx, bias.bytes, 'b'), xb],
        1,
      );
      const gotBias = await readF32(ctx, xb, x.length);
      const wantBias = x.slice();
      for (let t = start; t < start + tokens; t++)
        for (let c = 0; c < n; c++) wantBias[t * n + c] += bias.values[c];
      checkClose(gotBias, wantBias, 0, 'bias-add');

      const g = randomValues(tokens * n, 33, 20);
      g[0] = -200;
      g[1] = 200;
      const u = randomValues(tokens * n, 34);
      const gb = storage(ctx, g, 'g');
      await run(ctx, 'siluGate', paramsOf([n, 0, 0, 0]), { tokens, start: 0 }, [gb, storage(ctx, u, 'u')], 1);
      const want = g.map((v, i) => (v / (1 + Math.exp(-v))) * u[i]);
      checkClose(await readF32(ctx, gb, g.length), want, 1e-6, 'silu-gate');

      const y = randomValues(tokens * n, 35);
      const rb = storage(ctx, g, 'r');
      await run(
        ctx,
        'residualAdd',
        paramsOf([n, 0, 0, 0]),
        { tokens, start: 0 },
        [rb, storage(ctx, y, 'y')],
        1,
      );
      checkClose(
        await readF32(ctx, rb, g.length),
        g.map((v, i) => v + y[i]),
        0,
        'residual-add',
      );
    },
  },
];

// ---- token selection ----

function logitCases(): Array<{ what: string; logits: Float32Array }> {
  const tied = randomValues(3000, 41, 4);
  tied[17] = 9;
  tied[2999] = 9;
  tied[5] = 9;
  const nan = randomValues(513, 42);
  nan[0] = Number.NaN;
  nan[100] = Number.NaN;
  nan[7] = 5;
  nan[400] = Number.NEGATIVE_INFINITY;
  const allNan = new Float32Array(300).fill(Number.NaN);
  const flat = new Float32Array(1000).fill(1.5);
  const peaked = randomValues(5000, 43, 8);
  const withInf = randomValues(100, 44);
  withInf[60] = Number.POSITIVE_INFINITY;
  return [
    { what: 'three-way tie for the max', logits: tied },
    { what: 'NaN and -inf logits', logits: nan },
    { what: 'all NaN', logits: allNan },
    { what: 'all equal', logits: flat },
    { what: 'a wide spread', logits: peaked },
    { what: 'an infinite logit', logits: withInf },
  ];
}

const selectionCases: GpuCase[] = [
  {
    name: 'model argmax: lowest id among ties, NaN never wins, 0 when all NaN',
    async run(ctx) {
      for (const { what, logits } of logitCases()) {
        const lb = storage(ctx, logits, 'logits');
        const result = storage(ctx, 4 * 33, 'result');
        await run(ctx, 'argmax', paramsOf([logits.length, 0, 0, 0]), undefined, [lb, result], 1);
        const got = (await readWords(ctx, result, 1))[0];
        check(got === argmax(logits), `${what}: argmax ${got}, expected ${argmax(logits)}`);
      }
    },
  },
  {
    name: 'model top-logprobs: the 5 (and 16) best [id, log_softmax], ties by lower id',
    async run(ctx) {
      for (const { what, logits } of logitCases().slice(0, 5)) {
        if (what === 'all NaN') continue;
        for (const k of [5, 16]) {
          const lb = storage(ctx, logits, 'logits');
          const result = storage(ctx, 4 * 33, 'result');
          await run(ctx, 'topLogprobs', paramsOf([logits.length, k, 0, 0]), undefined, [lb, result], 1);
          const words = await readWords(ctx, result, 1 + 2 * k);
          const f = new Float32Array(words.buffer);
          const want = topLogprobs(logits, k);
          for (let i = 0; i < k; i++) {
            check(
              words[1 + 2 * i] === want[i][0],
              `${what}, k ${k}: rank ${i} is ${words[1 + 2 * i]}, expected ${want[i][0]}`,
            );
            check(
              Math.abs(f[2 + 2 * i] - want[i][1]) < 1e-5,
              `${what}: logprob ${f[2 + 2 * i]} vs ${want[i][1]}`,
            );
          }
        }
      }
    },
  },
  {
    name: 'model sample-top-p: the TS sampler choice for temperatures, top-p values and seeds',
    async run(ctx) {
      let draws = 0;
      for (const { what, logits } of logitCases()) {
        const lb = storage(ctx, logits, 'logits');
        const scratch = storage(ctx, logits.length * 4, 'scratch');
        const result = storage(ctx, 4 * 33, 'result');
        for (const [temperature, topP] of [
          [1, 1],
          [0.7, 0.9],
          [1.3, 0.5],
          [0.01, 0.95],
        ]) {
          for (const seed of [0, 1, 12345]) {
            const position = 40 + seed;
            await run(
              ctx,
              'sampleTopP',
              paramsOf([logits.length, 0, 0, 0]),
              { tokens: 1, start: 0, seed, samplePosition: position, temperature, topP },
              [lb, scratch, result],
              1,
            );
            const got = (await readWords(ctx, result, 1))[0];
            const want = sampleToken(logits, { temperature, topP, seed }, position);
            check(
              got === want,
              `${what}, T ${temperature}, top-p ${topP}, seed ${seed}: token ${got}, the TS sampler chose ${want}`,
            );
            draws++;
          }
        }
      }
      return `${draws} draws equal`;
    },
  },
];

export const MODEL_KERNEL_CASES: GpuCase[] = [
  ...matvecCases,
  ...matmulCases,
  ...rmsnormCases,
  embeddingCase,
  ropeCase,
  ...attentionCases,
  ...elementwiseCases,
  ...selectionCases,
];

// ---- the whole runner ----

/** Greedy tokens and top-5 log-probabilities of every reference prompt; returns the worst log-prob error. */
async function checkAgainstReference(
  runner: GpuModelRunner,
  reference: FixtureReference,
  what: string,
): Promise<number> {
  let worst = 0;
  for (const [pi, p] of reference.prompts.entries()) {
    runner.reset();
    const tokens: number[] = [];
    let step = await runner.prefill(p.prompt_ids, { ...GREEDY, topLogprobs: 5 });
    for (;;) {
      const position = tokens.length;
      const ref =
        p.top_logprobs.find((r) => r.position === p.prompt_ids.length + position) ?? p.top_logprobs[position];
      if (ref && position < p.top_logprobs.length) {
        const got = step.topLogprobs!;
        check(
          got.map((g) => g[0]).join() === ref.top_ids.join(),
          `${what} prompt ${pi} token ${position}: top ids ${got.map((g) => g[0])}, reference ${ref.top_ids}`,
        );
        for (let i = 0; i < got.length; i++)
          worst = Math.max(worst, Math.abs(got[i][1] - ref.top_logprobs[i]));
      }
      tokens.push(step.token);
      if (tokens.length === p.generated_ids.length) break;
      step = await runner.decode(step.token, {
        ...GREEDY,
        topLogprobs: tokens.length < p.top_logprobs.length ? 5 : 0,
      });
    }
    check(
      tokens.join() === p.generated_ids.join(),
      `${what} prompt ${pi}: greedy tokens ${tokens}, reference ${p.generated_ids}`,
    );
  }
  check(
    worst <= GPU_LOGPROB_TOLERANCE,
    `${what}: a log-probability is ${worst} from the reference (> ${GPU_LOGPROB_TOLERANCE})`,
  );
  return worst;
}

export function modelRunnerCases(fixtures: ModelFixtures): GpuCase[] {
  const cases: GpuCase[] = [];
  for (const model of ['system1', 'system2'] as const) {
    cases.push({
      name: `model GPU runner ${model}: transformers' greedy tokens, top-5 log-probs within 2e-3, last-position logits`,
      // The browser checks system1 against transformers and system2 against the CPU reference runner.
      nodeOnly:
        model === 'system2'
          ? 'model GPU runner system1: transformers; system2 equals the CPU reference runner'
          : undefined,
      async run(ctx) {
        const weights = await openModelWeights(await fixtures.open(model));
        const reference = await fixtures.reference(model);
        const runner = await createGpuRunner(weights, { context: ctx, maxContext: 256 });
        try {
          const worst = await checkAgainstReference(runner, reference, model);
          const p0 = reference.prompts[0];
          runner.reset();
          await runner.prefill(p0.prompt_ids, GREEDY);
          const logits = await runner.lastLogits();
          let worstLogit = 0;
          p0.last_prompt_position_logits!.forEach((v, i) => {
            worstLogit = Math.max(worstLogit, Math.abs(v - logits[i]));
          });
          check(worstLogit < 2e-3, `${model}: a last-position logit is ${worstLogit} from transformers'`);
          return `worst log-prob error ${worst.toExponential(2)}, worst logit error ${worstLogit.toExponential(2)}`;
        } finally {
          runner.dispose();
        }
      },
    });
  }
  cases.push({
    name: 'model GPU runner system2 equals the CPU reference runner (logits, module inputs in order, sampled tokens)',
    async run(ctx) {
      const weights = await openModelWeights(await fixtures.open('system2'));
      const reference = await fixtures.reference('system2');
      const prompt = reference.prompts[1].prompt_ids;
      const gpu = await createGpuRunner(weights, { context: ctx, maxContext: 128, prefillChunk: 16 });
      const cpu = await createCpuRunner(weights, { maxContext: 128 });
      try {
        const seen: Array<{ module: string; x: Float32Array }> = [];
        const cpuSeen: Array<{ module: string; x: Float32Array }> = [];
        const gpuHooked: string[] = [];
        // Two chunks of 16 and one of the rest: the hook sees each chunk in turn.
        await gpu.prefill(prompt, GREEDY, {
          onModuleInput: (module, x) => seen.push({ module, x: x.slice() }),
          onGpuModuleInput: (input) => gpuHooked.push(`${input.module}:${input.tokens}x${input.channels}`),
        });
        await cpu.prefill(prompt, GREEDY, {
          onModuleInput: (module, x) => cpuSeen.push({ module, x: x.slice() }),
        });
        const chunks = Math.ceil(prompt.length / 16);
        check(
          seen.length === cpuSeen.length * chunks,
          `${seen.length} module inputs, expected ${cpuSeen.length} per chunk`,
        );
        const perChunk = cpuSeen.length;
        for (let i = 0; i < perChunk; i++) {
          const parts = Array.from({ length: chunks }, (_, c) => seen[c * perChunk + i]);
          check(
            parts.every((p) => p.module === cpuSeen[i].module),
            `module ${i}: ${parts[0].module}, CPU ${cpuSeen[i].module}`,
          );
          const joined = new Float32Array(cpuSeen[i].x.length);
          let o = 0;
          for (const p of parts) {
            joined.set(p.x, o);
            o += p.x.length;
          }
          checkClose(joined, cpuSeen[i].x, 2e-4, `input of ${cpuSeen[i].module}`);
        }
        check(
          gpuHooked.length === seen.length && gpuHooked[0] === `${cpuSeen[0].module}:16x128`,
          `GPU hook calls: ${gpuHooked.slice(0, 3)}`,
        );
        checkClose(await gpu.lastLogits(), await cpu.lastLogits(), 5e-4, 'last logits');
        // Sampled decoding: each GPU draw is the TS sampler's choice on the GPU's own logits, and the
        // runs stay equal to the CPU runner's tokens.
        let token = (await gpu.decode(42, { temperature: 0.9, topP: 0.95, seed: 7 })).token;
        let cpuToken = (await cpu.decode(42, { temperature: 0.9, topP: 0.95, seed: 7 })).token;
        for (let i = 0; i < 6; i++) {
          const options = { temperature: 0.9, topP: 0.95, seed: 7 };
          const want = sampleToken(await gpu.lastLogits(), options, gpu.length);
          check(
            token === want,
            `draw ${i}: GPU sampled ${token}, the TS sampler chose ${want} on the same logits`,
          );
          check(token === cpuToken, `draw ${i}: GPU ${token}, CPU ${cpuToken}`);
          token = (await gpu.decode(token, options)).token;
          cpuToken = (await cpu.decode(cpuToken, options)).token;
        }
      } finally {
        gpu.dispose();
        cpu.dispose();
      }
    },
  });
  cases.push({
    name: 'model GPU runner with 64 KiB bindings and GPU kernel shapes: weights in row chunks, short prefill chunks, same tokens',
    options: { maxStorageBufferBindingSize: 64 * 1024 },
    async run(ctx) {
      const weights = await openModelWeights(await fixtures.open('system1'));
      const reference = await fixtures.reference('system1');
      // matvecLanes 32: the GPU kernel shapes (workgroup reductions, tiled matmul) on any adapter.
      const runner = await createGpuRunner(weights, { context: ctx, maxContext: 128, matvecLanes: 32 });
      try {
        check(
          runner.prefillChunk === 32,
          `prefill chunk ${runner.prefillChunk}, expected 32 (64 KiB / 2 KiB rows)`,
        );
        const p = reference.prompts[2];
        let step = await runner.prefill(p.prompt_ids, GREEDY);
        const tokens = [step.token];
        while (tokens.length < p.generated_ids.length) {
          step = await runner.decode(step.token, GREEDY);
          tokens.push(step.token);
        }
        check(tokens.join() === p.generated_ids.join(), `tokens ${tokens}, reference ${p.generated_ids}`);
        let refused: unknown;
        await createGpuRunner(weights, { context: ctx, maxContext: 512 }).then(
          (r) => r.dispose(),
          (e) => {
            refused = e;
          },
        );
        check(
          refused instanceof GpuModelMemoryError,
          `a 512-token KV cache over a 64 KiB binding: ${refused}`,
        );
        const message = (refused as Error).message;
        check(/needs .* of GPU memory/.test(message) && /at most 256 tokens/.test(message), message);
        return message;
      } finally {
        runner.dispose();
      }
    },
  });
  cases.push({
    name: 'model GPU runner: a lost device is a GpuDeviceLostError',
    async run(ctx) {
      const weights = await openModelWeights(await fixtures.open('system1'));
      const runner = await createGpuRunner(weights, { context: ctx, maxContext: 64 });
      ctx.device.destroy();
      await ctx.lost;
      let error: unknown;
      await runner.prefill([1, 2, 3], GREEDY).catch((e) => {
        error = e;
      });
      check(error instanceof GpuDeviceLostError, `after the device was lost: ${error}`);
      runner.dispose();
    },
  });
  return cases;
}
