/**
 * GPU kernel test cases as data: each case gets a fresh GpuContext and throws on a mismatch. The
 * Node tests (test/unit/gpu-*.test.ts, Dawn) and the browser page (test/browser/harness, Chromium)
 * run the same list, so the WGSL is checked against the CPU reference on both.
 */

import { decodeToF32, encodeFromF32, type FloatDType } from '../../../src/formats/dtype';
import { CommandBatch, readback } from '../../../src/gpu/commands';
import {
  type GpuContext,
  type GpuContextOptions,
  GpuDeviceLostError,
  GpuError,
} from '../../../src/gpu/device';
import { KERNELS, WGSL_LIBRARIES } from '../../../src/gpu/kernels';
import { selectRanks } from '../../../src/gpu/radix-select';
import { type RowSum, rowSums } from '../../../src/gpu/reduce';
import { encodeAndRead, TensorStack } from '../../../src/gpu/stack';
import { blockedSumF32, dotF32, sumAbsF32, sumSquaresF32 } from '../../../src/methods/f32-reduce';
import { magnitudeKey } from '../../../src/methods/rank-select';
import { fillUniform, fnv1a32, philox4x32 } from '../../../src/random/counter-rng';
import { bitsOf, check, checkBits, mulberry32, randomBitsF32, specialF32 } from './gpu-check';
import { METHOD_CASES } from './gpu-method-cases';

export interface GpuCase {
  readonly name: string;
  /** Context options, e.g. a lowered binding limit to force tiling. */
  readonly options?: Omit<GpuContextOptions, 'gpu' | 'adapter'>;
  /** May resolve to a string worth printing (what the compiler did, timings). */
  readonly run: (ctx: GpuContext) => Promise<unknown>;
  /**
   * Set on a case that only re-runs WGSL another case already runs, on other tiles or through the
   * streaming of the TS orchestration (the same code in Node and the browser): the browser pages
   * skip it unless asked for ?all=1, the Node tests run it. Names the case the browser keeps.
   */
  readonly nodeOnly?: string;
}

async function readF32(
  ctx: GpuContext,
  buffer: GPUBuffer,
  offset: number,
  count: number,
): Promise<Float32Array> {
  const batch = new CommandBatch(ctx, 'test.read');
  const read = readback(batch, buffer, offset * 4, count * 4);
  batch.submit();
  const bytes = await read();
  return new Float32Array(bytes.buffer, bytes.byteOffset, count);
}

/** Every row of a stack, concatenated over its tiles. */
async function readStackRow(ctx: GpuContext, stack: TensorStack, row: number): Promise<Float32Array> {
  const out = new Float32Array(stack.count);
  for (const t of stack.tiles) out.set(await readF32(ctx, t.buffer, row * t.stride, t.count), t.start);
  return out;
}

function halfPatterns(): Uint8Array {
  const u = new Uint16Array(65536);
  for (let i = 0; i < u.length; i++) u[i] = i;
  return new Uint8Array(u.buffer);
}

async function gpuEncode(ctx: GpuContext, values: Float32Array, dtype: FloatDType): Promise<Uint8Array> {
  const stack = TensorStack.allocate(ctx, 1, values.length);
  stack.writeValues(0, values);
  const parts: Uint8Array[] = [];
  for (const t of stack.tiles) {
    const batch = new CommandBatch(ctx, 'test.encode');
    const read = encodeAndRead(batch, t.buffer, 0, t.count, dtype);
    batch.submit();
    parts.push(await read());
  }
  stack.release();
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A small test-only program around a WGSL library function: out[i] = f(a[i], b[i]). */
async function binaryProgram(
  ctx: GpuContext,
  name: string,
  library: string,
  expression: string,
  a: Float32Array,
  b: Float32Array,
  c: Float32Array = new Float32Array(a.length),
): Promise<Float32Array> {
  const code = `${library}
struct Params { count: u32, neg_zero: f32, _p0: u32, _p1: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> c: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= params.count) { return; }
  let x = a[i];
  let y = b[i];
  let z = c[i];
  out[i] = ${expression};
}`;
  const batch = new CommandBatch(ctx, `test.${name}`);
  const p = new Uint32Array([a.length, 0, 0, 0]);
  new Float32Array(p.buffer)[1] = -0;
  const out = batch.scratch(a.length * 4, 'test.out');
  batch.dispatch({
    kernel: { name: `test-${name}`, code },
    bindings: [p, batch.upload(a, 'test.a'), batch.upload(b, 'test.b'), batch.upload(c, 'test.c'), out],
    workgroups: Math.ceil(a.length / 64),
  });
  const read = readback(batch, out, 0, a.length * 4);
  batch.submit();
  const bytes = await read();
  return new Float32Array(bytes.buffer, bytes.byteOffset, a.length);
}

/** Reference order statistic: sort (magnitude key, index) and take position `rank`. */
function referenceRank(
  values: Float32Array,
  rank: number,
  order: 'asc' | 'desc',
): { key: number; index: number } {
  const bits = bitsOf(values);
  const idx = Array.from(values, (_, i) => i);
  const key = (i: number) => magnitudeKey(bits[i]);
  idx.sort((i, j) => (order === 'asc' ? key(i) - key(j) : key(j) - key(i)) || i - j);
  return { key: key(idx[rank]), index: idx[rank] };
}

function rankTestData(n: number, seed: number): Float32Array {
  const rnd = mulberry32(seed);
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const r = rnd();
    // Few distinct magnitudes, so thresholds fall on long runs of ties; some specials.
    if (r < 0.02) v[i] = Number.NaN;
    else if (r < 0.03) v[i] = rnd() < 0.5 ? Number.POSITIVE_INFINITY : Number.NEGATIVE_INFINITY;
    else if (r < 0.1) v[i] = rnd() < 0.5 ? 0 : -0;
    else if (r < 0.6) v[i] = (Math.floor(rnd() * 8) - 4) * 0.25;
    else v[i] = (rnd() - 0.5) * 2 ** Math.floor(rnd() * 40 - 20);
  }
  return v;
}

const INFRA_CASES: GpuCase[] = [
  {
    name: 'decode of every BF16 and F16 bit pattern equals dtype.ts',
    async run(ctx) {
      const raw = halfPatterns();
      for (const dtype of ['BF16', 'F16'] as const) {
        const stack = TensorStack.allocate(ctx, 1, 65536);
        stack.load([{ bytes: raw, dtype }]);
        checkBits(await readStackRow(ctx, stack, 0), decodeToF32(raw, dtype), `decode ${dtype}`);
        stack.release();
      }
    },
  },
  {
    name: 'decode of F32 and odd-length halves keeps every bit (unaligned source bytes)',
    async run(ctx) {
      const values = randomBitsF32(4099, 7);
      const bytes = new Uint8Array(values.byteLength + 1);
      bytes.set(new Uint8Array(values.buffer), 1);
      const stack = TensorStack.allocate(ctx, 2, 4099);
      const halves = encodeFromF32(values, 'BF16');
      stack.load([
        { bytes: bytes.subarray(1), dtype: 'F32' },
        { bytes: halves, dtype: 'BF16' },
      ]);
      checkBits(await readStackRow(ctx, stack, 0), values, 'decode F32');
      checkBits(await readStackRow(ctx, stack, 1), decodeToF32(halves, 'BF16'), 'decode BF16 odd length');
      stack.release();
    },
  },
  {
    name: 'encode to BF16, F16 and F32 equals dtype.ts (NaN, Inf, subnormals, -0, ties)',
    async run(ctx) {
      const values = new Float32Array([...specialF32(), ...randomBitsF32(100_001, 11)]);
      for (const dtype of ['BF16', 'F16', 'F32'] as const) {
        const got = await gpuEncode(ctx, values, dtype);
        const want = encodeFromF32(values, dtype);
        check(got.length === want.length, `encode ${dtype}: ${got.length} bytes, expected ${want.length}`);
        for (let i = 0; i < want.length; i++) {
          if (got[i] !== want[i]) {
            const e = Math.floor(i / (dtype === 'F32' ? 4 : 2));
            throw new Error(
              `encode ${dtype}: element ${e} (f32 bits 0x${bitsOf(values)[e].toString(16)}) differs`,
            );
          }
        }
      }
    },
  },
  {
    name: 'encode handles tiles of a tensor larger than the binding limit',
    options: { maxStorageBufferBindingSize: 64 * 1024 },
    async run(ctx) {
      const values = randomBitsF32(40_001, 5);
      const stack = TensorStack.allocate(ctx, 1, values.length);
      check(stack.tiles.length === 3, `expected 3 tiles, got ${stack.tiles.length}`);
      stack.release();
      const got = await gpuEncode(ctx, values, 'BF16');
      const want = encodeFromF32(values, 'BF16');
      check(
        got.every((b, i) => b === want[i]),
        'tiled BF16 encode differs from dtype.ts',
      );
    },
  },
  {
    name: 'Philox4x32-10 known answer and counter-rng.ts agreement',
    async run(ctx) {
      const cases = [
        { lo: 0, hi: 0, model: 0, stream: 0, k0: 0, k1: 0 },
        {
          lo: 0xfffffff0,
          hi: 7,
          model: 3,
          stream: 1,
          k0: 12345,
          k1: fnv1a32('model.layers.0.mlp.up_proj.weight'),
        },
        { lo: 123456789, hi: 0, model: 0xffffffff, stream: 0, k0: 0xffffffff, k1: 0xdeadbeef },
      ];
      for (const c of cases) {
        const count = 40;
        const batch = new CommandBatch(ctx, 'test.philox');
        const dst = batch.scratch(count * 16, 'test.philox.out');
        batch.dispatch({
          kernel: KERNELS.random,
          entryPoint: 'words',
          bindings: [new Uint32Array([count, c.lo, c.hi, c.model, c.stream, c.k0, c.k1, 0]), dst],
          workgroups: 1,
        });
        const read = readback(batch, dst, 0, count * 16);
        batch.submit();
        const bytes = await read();
        const words = new Uint32Array(bytes.buffer, bytes.byteOffset, count * 4);
        for (let i = 0; i < count; i++) {
          const index = c.hi * 2 ** 32 + c.lo + i;
          const want = philox4x32(
            [index >>> 0, c.model, c.stream, Math.floor(index / 2 ** 32)],
            [c.k0, c.k1],
          );
          for (let w = 0; w < 4; w++) {
            check(
              words[i * 4 + w] === want[w],
              `philox element ${i} word ${w}: 0x${words[i * 4 + w].toString(16)} vs 0x${want[w].toString(16)}`,
            );
          }
        }
        if (c.lo === 0 && c.hi === 0 && c.k0 === 0) {
          const kat = [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8];
          check(
            kat.every((w, j) => words[j] === w),
            'philox known answer for counter 0, key 0',
          );
        }
      }
      // Uniforms for a tensor's elements, as fillUniform draws them.
      const count = 5000;
      const hash = fnv1a32('lm_head.weight');
      const batch = new CommandBatch(ctx, 'test.uniform');
      const dst = batch.scratch(count * 4, 'test.uniform.out');
      batch.dispatch({
        kernel: KERNELS.random,
        entryPoint: 'uniforms',
        bindings: [new Uint32Array([count, 1000, 0, 2, 0, 42, hash, 0]), dst],
        workgroups: Math.ceil(count / 256),
      });
      const read = readback(batch, dst, 0, count * 4);
      batch.submit();
      const got = await read();
      const want = new Float32Array(count);
      fillUniform(want, 42, hash, 2, 0, 1000);
      checkBits(new Float32Array(got.buffer, got.byteOffset, count), want, 'philox uniforms');
    },
  },
  {
    name: 'div_rn is correctly rounded IEEE division (normal, subnormal, overflow, specials)',
    async run(ctx) {
      const specials = specialF32();
      const rnd = mulberry32(3);
      const a: number[] = [];
      const b: number[] = [];
      for (const x of specials) {
        for (const y of specials) {
          a.push(x);
          b.push(y);
        }
      }
      const randomA = randomBitsF32(60_000, 17);
      const randomB = randomBitsF32(60_000, 19);
      for (let i = 0; i < randomA.length; i++) {
        a.push(randomA[i]);
        b.push(randomB[i]);
        // Quotients near 1 and small integer ranks over a span (DELLA) exercise the rounding bits.
        const x = Math.fround(1 + rnd());
        a.push(x);
        b.push(Math.fround(x * (1 + (rnd() - 0.5) * 1e-6)));
        a.push(Math.floor(rnd() * 5000));
        b.push(Math.floor(rnd() * 5000) + 1);
      }
      const fa = new Float32Array(a);
      const fb = new Float32Array(b);
      const got = await binaryProgram(ctx, 'div', WGSL_LIBRARIES.divide, 'div_rn(x, y)', fa, fb);
      const want = fa.map((x, i) => x / fb[i]);
      checkBits(got, want, 'div_rn', (i) => `${fa[i]} / ${fb[i]}`, true);
    },
  },
  {
    name: 'a product plus -0 is rounded before the next addition (no fma contraction)',
    async run(ctx) {
      const rnd = mulberry32(23);
      const n = 20000;
      const a = new Float32Array(n);
      const b = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        a[i] = Math.fround(1 + rnd());
        b[i] = Math.fround(1 + rnd());
      }
      // c = -round(a*b): a fused a*b + c returns the rounding error of a*b instead of 0.
      const c = a.map((x, i) => -Math.fround(x * b[i]));
      const guarded = await binaryProgram(ctx, 'guarded', '', '(x * y + params.neg_zero) + z', a, b, c);
      checkBits(guarded, new Float32Array(n), 'guarded product + c');
      const plain = await binaryProgram(ctx, 'plain', '', 'x * y + z', a, b, c);
      const fused = plain.filter((v) => v !== 0).length;
      return `the compiler fused ${fused} of ${n} unguarded a*b+c into fma`;
    },
  },
  {
    name: 'reports whether f32 subnormals survive arithmetic (WGSL lets a GPU flush them)',
    async run(ctx) {
      const tiny = new Float32Array([2 ** -149, 3 * 2 ** -140, -(2 ** -130), 2 ** -126]);
      const one = new Float32Array([1, 1, 1, 0.5]);
      const sum = await binaryProgram(ctx, 'subnormal-add', '', 'x + (y - y)', tiny, one);
      const product = await binaryProgram(ctx, 'subnormal-mul', '', 'x * y + params.neg_zero', tiny, one);
      const kept = (got: Float32Array, want: Float32Array) => got.every((v, i) => v === want[i]);
      return `subnormal sums ${kept(sum, tiny) ? 'kept' : 'flushed'}, products ${
        kept(
          product,
          tiny.map((v, i) => v * one[i]),
        )
          ? 'kept'
          : 'flushed'
      }`;
    },
  },
  {
    name: 'radix select finds the exact element of every rank (ties by index, NaN, Inf, ±0), tiled',
    options: { maxStorageBufferBindingSize: 32 * 1024 },
    async run(ctx) {
      const n = 20011;
      const rows = [rankTestData(n, 1), rankTestData(n, 2)];
      const stack = TensorStack.allocate(ctx, 2, n);
      check(stack.tiles.length > 1, 'the lowered binding limit should split the tensor into tiles');
      rows.forEach((r, i) => {
        stack.writeValues(i, r);
      });
      const queries = [
        { row: 0, rank: 0, order: 'desc' as const },
        { row: 0, rank: 5000, order: 'desc' as const },
        { row: 1, rank: 9999, order: 'asc' as const },
        { row: 1, rank: n - 1, order: 'asc' as const },
        { row: 0, rank: 12345, order: 'asc' as const },
        { row: 1, rank: 777, order: 'desc' as const },
      ];
      for (const radixBits of [8, 11] as const) {
        const got = await selectRanks(ctx, stack, queries, { radixBits });
        queries.forEach((q, s) => {
          const want = referenceRank(rows[q.row], q.rank, q.order);
          check(
            got[s].absBits === want.key,
            `rank ${q.rank} ${q.order}: key 0x${got[s].absBits.toString(16)} vs 0x${want.key.toString(16)}`,
          );
          const keyCount = bitsOf(rows[q.row]).filter((b) => magnitudeKey(b) === want.key).length;
          if (keyCount > 1)
            check(
              got[s].index === want.index,
              `rank ${q.rank} ${q.order}: index ${got[s].index} vs ${want.index}`,
            );
          else check(got[s].index === null, 'a unique threshold reports no index');
        });
      }
      stack.release();
    },
  },
  {
    name: 'blocked sums (|x|, x², x·y, offsets, unit vectors, per row) equal f32-reduce.ts, tiled',
    options: { maxStorageBufferBindingSize: 96 * 1024 },
    async run(ctx) {
      const n = 70_000;
      const rnd = mulberry32(9);
      const rows = [0, 1, 2].map(() =>
        Float32Array.from({ length: n }, () => (rnd() - 0.5) * 10 ** (rnd() * 6 - 3)),
      );
      const stack = TensorStack.allocate(ctx, 3, n);
      check(stack.tiles.length > 1, 'expected several tiles');
      rows.forEach((r, i) => {
        stack.writeValues(i, r);
      });
      const na = Math.fround(Math.sqrt(sumSquaresF32(rows[0])));
      const nb = Math.fround(Math.sqrt(sumSquaresF32(rows[1])));
      const offset = (k: number) => rows[k].map((v, i) => v - rows[0][i]);
      const sums: RowSum[] = [
        { term: 'abs', row: 1 },
        { term: 'square', row: 2 },
        { term: 'dot', row: 0, rowB: 2 },
        { term: 'dot', row: 1, rowB: 2, baseRow: 0 },
        { term: 'dot', row: 0, rowB: 1, divA: na, divB: nb },
      ];
      const got = await rowSums(ctx, stack, sums);
      const want = [
        sumAbsF32(rows[1]),
        sumSquaresF32(rows[2]),
        dotF32(rows[0], rows[2]),
        dotF32(offset(1), offset(2)),
        blockedSumF32(n, (i) => Math.fround(rows[0][i] / na) * Math.fround(rows[1][i] / nb)),
      ];
      checkBits(got, new Float32Array(want), 'whole-tensor sums');
      stack.release();
      // Per-row sums: rows of 700 elements, tiles on row boundaries.
      const rowLength = 700;
      const perRow = TensorStack.allocate(ctx, 3, n, rowLength * 10);
      rows.forEach((r, i) => {
        perRow.writeValues(i, r);
      });
      const rowGot = await rowSums(ctx, perRow, [{ term: 'square', row: 2, baseRow: 0 }], rowLength);
      const o2 = offset(2);
      const rowWant = new Float32Array(n / rowLength).map((_, r) =>
        sumSquaresF32(o2, r * rowLength, rowLength),
      );
      checkBits(rowGot, rowWant, 'per-row sums');
      perRow.release();
    },
  },
  {
    name: 'pipelines are cached per shader and constants; buffers are reused in steady state',
    async run(ctx) {
      const values = randomBitsF32(10_000, 4);
      await gpuEncode(ctx, values, 'BF16');
      const pipelines = ctx.pipelineCount;
      const created = ctx.pool.createdCount;
      await gpuEncode(ctx, values, 'BF16');
      await gpuEncode(ctx, values.subarray(0, 9000), 'BF16');
      check(ctx.pipelineCount === pipelines, 'a second encode of another shape created pipelines');
      check(
        ctx.pool.createdCount === created,
        `steady state created ${ctx.pool.createdCount - created} buffers`,
      );
      await gpuEncode(ctx, values, 'F16');
      check(ctx.pipelineCount === pipelines + 1, 'another dtype constant needs exactly one more pipeline');
    },
  },
  {
    name: 'an uncaptured validation error surfaces as GpuError',
    async run(ctx) {
      // MAP_READ may only be combined with COPY_DST: this buffer is invalid.
      ctx.device.createBuffer({ size: 16, usage: 0x0001 | 0x0080 });
      await ctx.device.queue.onSubmittedWorkDone();
      for (let i = 0; i < 50; i++) {
        try {
          ctx.throwIfFailed();
        } catch (e) {
          check(e instanceof GpuError && (e as Error).name === 'GpuError', `got ${(e as Error).name}`);
          return;
        }
        await new Promise((r) => setTimeout(r, 10));
      }
      throw new Error('the validation error was not reported');
    },
  },
  {
    name: 'device loss becomes GpuDeviceLostError',
    async run(ctx) {
      ctx.device.destroy();
      const lost = await ctx.lost;
      check(lost instanceof GpuDeviceLostError && lost.name === 'GpuDeviceLostError', 'lost error type');
      let thrown: unknown;
      try {
        ctx.throwIfFailed();
      } catch (e) {
        thrown = e;
      }
      check(thrown instanceof GpuDeviceLostError, 'throwIfFailed after loss');
    },
  },
];

export const GPU_CASES: readonly GpuCase[] = [...INFRA_CASES, ...METHOD_CASES];
