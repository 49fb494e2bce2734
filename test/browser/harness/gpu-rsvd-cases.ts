/**
 * The GPU linear algebra of the SVD family against the TS reference (src/linalg), and the four SVD
 * merge methods on the GPU against their CPU `merge`. Run by test/unit/gpu-rsvd.test.ts (Dawn) and
 * by the browser page (test/browser/harness, Chromium).
 *
 * Tolerances, and why they are not bit-exact as the other methods are:
 * - Products: the GPU sums in f32 (tiles, split-K partial sums), the CPU in f64 rounded once, so they
 *   differ by the rounding of f32 sums: relative Frobenius error below 1e-6 for these sizes.
 * - rsvd: additionally the Gaussian entries may differ by a few ulps (WGSL log/cos) and the
 *   orthonormalization is CholeskyQR in f32; the contract is about accuracy, so the GPU factors are
 *   held to the same bounds as the TS ones (within 1% of the optimal rank-r error, orthonormal
 *   factors, singular values of the exact SVD).
 * - Methods: the test task vectors have a spectral gap of ~1e3 at the kept rank, so the truncated
 *   SVD is well determined and the GPU and CPU merges differ only by the rounding above, amplified
 *   by nothing: the difference is held below 1e-5 of the merged task vector's norm (measured: ~1e-7).
 */
import { decodeToF32, encodeFromF32 } from '../../../src/formats/dtype';
import { GpuMergeBackend } from '../../../src/gpu/backend';
import { STORAGE_USAGE } from '../../../src/gpu/commands';
import type { GpuContext, TilePlan } from '../../../src/gpu/device';
import { GpuMatrix, matmulGpu, matmulTransAGpu } from '../../../src/gpu/matmul';
import {
  gaussianMatrixGpu,
  orthonormalizeGpu,
  orthonormalizeStreamed,
  polarFactorGpu,
  rsvdGpu,
  rsvdResident,
} from '../../../src/gpu/rsvd';
import {
  energyKept,
  exactSvd,
  frobeniusNormSquared,
  gaussianMatrix,
  jacobiSvd,
  lowRankProduct,
  matmul,
  matmulTransA,
  matmulTransB,
  orthonormalize,
  polarFactor,
  rsvd,
} from '../../../src/linalg/index';
import { getMethod } from '../../../src/methods/index';
import type { MergeInputs, ResolvedParams, SpectralReport } from '../../../src/methods/types';
import type { GpuCase } from './gpu-cases';
import { check, maxUlpDistance, mulberry32 } from './gpu-check';

function randomMatrix(rows: number, cols: number, seed: number): Float32Array {
  const rnd = mulberry32(seed);
  return Float32Array.from({ length: rows * cols }, () => rnd() - 0.5);
}

/** ||x - y||_F / ||y||_F. */
function relativeError(x: ArrayLike<number>, y: ArrayLike<number>): number {
  check(x.length === y.length, `lengths differ: ${x.length} vs ${y.length}`);
  let num = 0;
  for (let i = 0; i < y.length; i++) num += (x[i] - y[i]) ** 2;
  const den = frobeniusNormSquared(y);
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

/** Largest |(X^T X - I)_ij| of a rows x cols matrix. */
function orthonormalityError(x: Float32Array, rows: number, cols: number): number {
  const g = matmulTransA(x, x, rows, cols, cols);
  let e = 0;
  for (let i = 0; i < cols; i++)
    for (let j = 0; j < cols; j++) e = Math.max(e, Math.abs(g[i * cols + j] - (i === j ? 1 : 0)));
  return e;
}

/** A = Q1 diag(s) Q2^T with random orthonormal Q1 (m x k), Q2 (n x k), k = s.length. */
function matrixWithSpectrum(m: number, n: number, s: readonly number[], seed: number): Float32Array {
  const k = s.length;
  const q1 = orthonormalize(randomMatrix(m, k, seed), m, k).Q;
  const q2 = orthonormalize(randomMatrix(n, k, seed + 1), n, k).Q;
  for (let i = 0; i < m; i++) for (let j = 0; j < k; j++) q1[i * k + j] *= s[j];
  return matmulTransB(q1, q2, m, k, n);
}

const fmt = (x: number) => x.toExponential(1);

async function checkProduct(ctx: GpuContext, m: number, k: number, n: number, seed: number): Promise<number> {
  const a = randomMatrix(m, k, seed);
  const b = randomMatrix(k, n, seed + 1);
  const err = relativeError(await matmulGpu(ctx, a, b, m, k, n), matmul(a, b, m, k, n));
  check(err < 1e-6, `A*B ${m}x${k}x${n}: relative error ${err}`);
  const at = randomMatrix(k, m, seed + 2);
  const errT = relativeError(await matmulTransAGpu(ctx, at, b, k, m, n), matmulTransA(at, b, k, m, n));
  check(errT < 1e-6, `A^T*B ${m}x${k}x${n}: relative error ${errT}`);
  return Math.max(err, errT);
}

/** GPU rsvd held to the TS rsvd's accuracy contract on a matrix with a known spectrum. */
async function checkRsvdAccuracy(
  ctx: GpuContext,
  m: number,
  n: number,
  spectrum: readonly number[],
  r: number,
): Promise<string> {
  const a = matrixWithSpectrum(m, n, spectrum, 11);
  const exact = jacobiSvd(a, m, n);
  const optimum = Math.sqrt(1 - energyKept(exact.S, r));
  const f = await rsvdGpu(ctx, a, m, n, r, { seed: 5, name: 'test' });
  check(f.rank === r && f.U.length === m * r && f.V.length === n * r, `rsvdGpu returned rank ${f.rank}`);
  const ou = orthonormalityError(f.U, m, r);
  const ov = orthonormalityError(f.V, n, r);
  check(ou < 1e-5 && ov < 1e-5, `factors not orthonormal: U ${ou}, V ${ov}`);
  const err = relativeError(lowRankProduct(f), a);
  check(
    err >= optimum * (1 - 1e-4) && err <= optimum * 1.01,
    `rank-${r} error ${err} vs optimum ${optimum} (must be within 1%)`,
  );
  // The bound the TS rsvd's own test uses: a randomized estimate of sigma_i near the cut is close,
  // not exact.
  for (let i = 0; i < r; i++) {
    const d = Math.abs(f.S[i] - exact.S[i]) / exact.S[0];
    check(d < 5e-4, `sigma_${i}: GPU ${f.S[i]}, exact ${exact.S[i]}`);
  }
  const cpu = rsvd(a, m, n, r, { seed: 5, name: 'test' });
  const cpuErr = relativeError(lowRankProduct(cpu), a);
  return `error/optimum GPU ${(err / optimum).toFixed(5)}, CPU ${(cpuErr / optimum).toFixed(5)}; orthonormality ${fmt(Math.max(ou, ov))}`;
}

// ---------------------------------------------------------------- method scenarios

interface TaskSignal {
  /** Singular values of the model's task vector (a gap of ~1e3 down to the noise). */
  readonly s: readonly number[];
  readonly params?: ResolvedParams;
}

interface LowRankScenario {
  readonly method: string;
  readonly shape: readonly [number, number] | readonly [number];
  readonly models: readonly TaskSignal[];
  readonly params: ResolvedParams;
  /** All task vectors in the same singular subspaces (else independent ones). */
  readonly sharedSubspace?: boolean;
}

/** Base (index 0) plus one model per signal: base + U_t diag(s_t) V_t^T + 1e-5-scale noise. */
function lowRankInputs(sc: LowRankScenario, reports: SpectralReport[]): MergeInputs {
  const [rows, cols] = sc.shape.length === 2 ? sc.shape : [1, sc.shape[0]];
  const count = rows * cols;
  const rnd = mulberry32(count * 7 + sc.models.length);
  const base = Float32Array.from({ length: count }, () => (rnd() - 0.5) * 0.2);
  const tensors = [{ model: 'base', values: base, params: {} as ResolvedParams }];
  sc.models.forEach((signal, t) => {
    const seed = sc.sharedSubspace ? 100 : 100 + 10 * t;
    const delta = rows > 1 ? matrixWithSpectrum(rows, cols, signal.s, seed) : randomMatrix(1, cols, seed);
    const values = Float32Array.from(base, (b, i) => b + delta[i] + (rnd() - 0.5) * 2e-5);
    tensors.push({ model: `model-${t + 1}`, values, params: signal.params ?? {} });
  });
  return {
    tensorName: `model.layers.0.mlp.${sc.method}.weight`,
    shape: sc.shape,
    tensors,
    baseIndex: 0,
    params: sc.params,
    seed: 42,
    report: (e) => reports.push(e),
  };
}

/** GPU merge of an SVD-family method against its CPU merge (see the module comment). */
async function compareLowRank(ctx: GpuContext, sc: LowRankScenario): Promise<number> {
  const method = getMethod(sc.method);
  const cpuReports: SpectralReport[] = [];
  const gpuReports: SpectralReport[] = [];
  const cpuInputs = lowRankInputs(sc, cpuReports);
  const want = method.merge(cpuInputs);
  const backend = GpuMergeBackend.forContext(ctx);
  check(backend.supports(sc.method), `${sc.method} must have GPU wiring`);
  const got = await backend.merge(method, lowRankInputs(sc, gpuReports));
  const base = cpuInputs.tensors[0].values;
  const merged = Float32Array.from(want, (x, i) => x - base[i]);
  const gotDelta = Float32Array.from(got, (x, i) => x - base[i]);
  const err = relativeError(gotDelta, merged);
  check(err < 1e-5, `${sc.method} [${sc.shape.join('x')}]: GPU differs from CPU by ${err} (relative)`);
  check(
    gpuReports.length === cpuReports.length,
    `${sc.method}: ${gpuReports.length} spectral reports on the GPU, ${cpuReports.length} on the CPU`,
  );
  cpuReports.forEach((c, i) => {
    const g = gpuReports[i];
    check(
      g.rank === c.rank && g.model === c.model && Math.abs(g.energyKept - c.energyKept) < 1e-5,
      `${sc.method}: report ${i} GPU ${JSON.stringify(g)} vs CPU ${JSON.stringify(c)}`,
    );
  });
  return err;
}

/** The smallest budget a context takes; the streamed cases' matrices are larger than it. */
const STREAM_BUDGET = 16_000_000;
/** Tile plans of the streamed cases' contexts. */
const streamPlans: TilePlan[] = [];
const streamOptions = { memoryBudget: STREAM_BUDGET, onTilePlan: (p: TilePlan) => streamPlans.push(p) };

/**
 * Takes all but `leave` bytes of the budget with one buffer, as other work holding device memory
 * would, so that small matrices are over what is left (and the cases stay fast on a software GPU).
 */
function holdBudget(ctx: GpuContext, leave: number): void {
  ctx.pool.acquire(ctx.memoryBudget - ctx.pool.inUseBytes - leave, STORAGE_USAGE, 'test.ballast');
}

/** The streamed SVD must have planned over several blocks of rows and kept to the budget. */
function checkStreamed(ctx: GpuContext, name: string): number {
  const plan = streamPlans.find((p) => p.tensor === name);
  check(plan?.streamed === true && plan.tiles > 1, `${name}: not streamed (plan ${JSON.stringify(plan)})`);
  check(
    ctx.pool.peakBytes <= STREAM_BUDGET,
    `pool peak ${ctx.pool.peakBytes} bytes over the budget of ${STREAM_BUDGET}`,
  );
  return plan!.tiles;
}

const S1 = [1, 0.7, 0.5, 0.35];
const S2 = [0.3, 0.9, 0.2, 0.6];

const FAST = { oversample: 4, power_iterations: 1 };
/** The four SVD methods on a gapped spectrum, for the streamed cases. */
const STREAMED_METHODS: Omit<LowRankScenario, 'shape'>[] = [
  {
    method: 'lowrank_task_arithmetic',
    models: [
      { s: S1, params: { weight: 0.7 } },
      { s: S2, params: { weight: 0.4 } },
    ],
    params: { rank: 4, lambda: 0.9, ...FAST },
  },
  {
    method: 'tsv',
    models: [{ s: S1 }, { s: S2, params: { weight: 0.8 } }],
    params: { rank_fraction: 8 / 256, alpha: 0.9, ...FAST },
  },
  {
    method: 'lore',
    models: [{ s: S1 }, { s: S2 }],
    params: { mu: 0.01, rank: 4, iterations: 2, ...FAST },
    sharedSubspace: true,
  },
  {
    method: 'twin',
    models: [
      { s: S1, params: { weight: 0.5 } },
      { s: S2, params: { weight: 0.5 } },
    ],
    params: { rank: 4, ...FAST },
    sharedSubspace: true,
  },
];

export const RSVD_CASES: GpuCase[] = [
  {
    name: 'matmul and matmulTransA equal the TS products to f32 rounding (odd shapes, split-K)',
    async run(ctx) {
      let worst = 0;
      for (const [m, k, n] of [
        [1, 1, 1],
        [7, 13, 5],
        [65, 129, 33],
        [130, 1100, 74],
        [3, 2000, 2],
      ]) {
        worst = Math.max(worst, await checkProduct(ctx, m, k, n, m * 1000 + n));
      }
      return `largest relative error ${fmt(worst)}`;
    },
  },
  {
    name: 'products of row-tiled matrices (lowered binding limit) equal the TS products',
    nodeOnly: 'matmul and matmulTransA equal the TS products',
    options: { maxStorageBufferBindingSize: 4096 },
    async run(ctx) {
      const probe = GpuMatrix.upload(ctx, new Float32Array(100 * 70), 100, 70, 'test.probe');
      const tiles = probe.tiles.length;
      probe.release();
      check(tiles > 1, `a 100x70 matrix must span several 4 KiB tiles, got ${tiles}`);
      // A spans 8 tiles, B 3; A^T*B pairs tiles whose row ranges only partly overlap.
      const err = await checkProduct(ctx, 100, 70, 30, 3);
      const errT = await checkProduct(ctx, 70, 100, 30, 4);
      return `${tiles} tiles; relative errors ${fmt(err)}, ${fmt(errT)}`;
    },
  },
  {
    name: 'the Gaussian test matrix equals gaussianMatrix to a few ulps, tiled',
    options: { maxStorageBufferBindingSize: 4096 },
    async run(ctx) {
      const [rows, cols] = [333, 17];
      const key = { seed: 77, name: 'model.layers.3.mlp.up_proj.weight', modelIndex: 2 };
      const m = gaussianMatrixGpu(ctx, rows, cols, key);
      check(m.tiles.length > 1, 'the Gaussian matrix must span several tiles');
      const got = await m.read();
      m.release();
      const want = gaussianMatrix(rows, cols, key);
      // Entries near zero are compared in absolute terms: one ulp of 2^-10.
      let worst = 0;
      for (let i = 0; i < want.length; i++) {
        const scale = Math.max(Math.abs(want[i]), 2 ** -10);
        worst = Math.max(worst, Math.abs(got[i] - want[i]) / (scale * 2 ** -23));
      }
      check(worst <= 8, `largest difference ${worst} ulps`);
      const other = await gaussianMatrixGpu(ctx, rows, cols, { ...key, modelIndex: 3 }).read();
      check(maxUlpDistance(other, want, 23) > 1e6, 'another model index must give another matrix');
      return `largest difference ${worst.toFixed(2)} ulps`;
    },
  },
  {
    name: 'rsvdGpu: geometric 0.8^i spectrum, rank-r error within 1% of the optimum',
    run: (ctx) =>
      checkRsvdAccuracy(
        ctx,
        300,
        160,
        Array.from({ length: 160 }, (_, i) => 0.8 ** i),
        10,
      ),
  },
  {
    name: 'rsvdGpu: harmonic 1/(i+1) spectrum, rank-r error within 1% of the optimum',
    nodeOnly: 'rsvdGpu: geometric spectrum',
    run: (ctx) =>
      checkRsvdAccuracy(
        ctx,
        160,
        300,
        Array.from({ length: 160 }, (_, i) => 1 / (i + 1)),
        20,
      ),
  },
  {
    name: 'rsvdGpu on a row-tiled matrix (lowered binding limit) is as accurate',
    nodeOnly: 'rsvdGpu: geometric spectrum',
    options: { maxStorageBufferBindingSize: 16 * 1024 },
    run: (ctx) =>
      checkRsvdAccuracy(
        ctx,
        200,
        120,
        Array.from({ length: 120 }, (_, i) => 0.85 ** i),
        8,
      ),
  },
  {
    name: 'rsvdGpu: exact case (tall and wide), rank-1 and zero matrices, rank 0',
    async run(ctx) {
      // rank + oversample covers the smaller side: the exact SVD, no randomness.
      for (const [m, n] of [
        [20, 9],
        [9, 20],
      ]) {
        const a = randomMatrix(m, n, 12 + m);
        const f = await rsvdGpu(ctx, a, m, n, 9, { seed: 1, name: 'a' });
        const want = exactSvd(a, m, n);
        for (let i = 0; i < 9; i++) {
          check(
            Math.abs(f.S[i] - want.S[i]) < 1e-5 * want.S[0],
            `${m}x${n} sigma_${i}: ${f.S[i]} vs ${want.S[i]}`,
          );
        }
        const err = relativeError(lowRankProduct(f), a);
        check(err < 2e-6, `${m}x${n} exact reconstruction error ${err}`);
      }
      // A rank-1 sketch cannot be orthonormalized by CholeskyQR: the TS fallback takes over.
      const [m, n] = [60, 80];
      const a = matmulTransB(randomMatrix(m, 1, 13), randomMatrix(n, 1, 14), m, 1, n);
      const f = await rsvdGpu(ctx, a, m, n, 5, { seed: 3, name: 'r1', oversample: 2 });
      check(f.S[1] < 1e-5 * f.S[0], `rank-1 matrix: sigma_1 = ${f.S[1]}`);
      check(relativeError(lowRankProduct(f, 1), a) < 2e-6, 'rank-1 matrix not recovered');
      check(orthonormalityError(f.U, m, 5) < 1e-5, 'rank-1 matrix: U not orthonormal');
      const zero = await rsvdGpu(ctx, new Float32Array(m * n), m, n, 4, { seed: 3, name: 'zero' });
      check(
        zero.S.every((s) => s === 0),
        `zero matrix: singular values ${Array.from(zero.S)}`,
      );
      check(orthonormalityError(zero.V, n, 4) < 1e-6, 'zero matrix: V not orthonormal');
      check((await rsvdGpu(ctx, a, m, n, 0, { seed: 0, name: '' })).rank === 0, 'rank 0');
    },
  },
  {
    name: 'orthonormalizeGpu: CholeskyQR2 for well-conditioned input, more rounds for ill-conditioned',
    async run(ctx) {
      const notes: string[] = [];
      for (const decay of [0.9, 0.5]) {
        const [m, l] = [500, 24];
        const a = matrixWithSpectrum(
          m,
          l,
          Array.from({ length: l }, (_, i) => decay ** i),
          31,
        );
        const x = GpuMatrix.upload(ctx, a, m, l, 'test.x');
        const { q, r, method, rounds } = await orthonormalizeGpu(ctx, x);
        const qv = await q.read();
        x.release();
        q.release();
        const cond = decay ** -(l - 1);
        check(method === 'cholesky-qr', `condition ${fmt(cond)}: fell back to the CPU`);
        check(decay < 0.9 || rounds === 2, `condition ${fmt(cond)}: ${rounds} rounds, CholeskyQR2 needs 2`);
        const o = orthonormalityError(qv, m, l);
        check(o < 1e-5, `condition ${fmt(cond)}: orthonormality error ${o}`);
        const qr = new Float32Array(m * l);
        for (let i = 0; i < m; i++)
          for (let j = 0; j < l; j++) {
            let s = 0;
            for (let p = 0; p <= j; p++) s += qv[i * l + p] * r[p * l + j];
            qr[i * l + j] = s;
          }
        const err = relativeError(qr, a);
        check(err < 1e-5, `condition ${fmt(cond)}: QR differs from X by ${err}`);
        notes.push(`condition ${fmt(cond)}: ${rounds} rounds, orthonormality ${fmt(o)}`);
      }
      return notes.join('; ');
    },
  },
  {
    name: 'polarFactorGpu equals polarFactor (tall and wide)',
    async run(ctx) {
      for (const [m, n] of [
        [40, 12],
        [12, 40],
      ]) {
        const a = randomMatrix(m, n, 50 + m);
        const err = relativeError(await polarFactorGpu(ctx, a, m, n), polarFactor(a, m, n));
        check(err < 1e-5, `${m}x${n}: polar factor differs by ${err}`);
      }
    },
  },
  {
    name: 'lowrank_task_arithmetic on the GPU equals the CPU (rank, energy, 1-D, tiled)',
    options: { maxStorageBufferBindingSize: 8 * 1024 },
    async run(ctx) {
      const models = [
        { s: S1, params: { weight: 0.7 } },
        { s: S2, params: { weight: 0.4 } },
      ];
      const errs = [
        await compareLowRank(ctx, {
          method: 'lowrank_task_arithmetic',
          shape: [48, 40],
          models,
          params: { rank: 4, lambda: 0.9 },
        }),
        await compareLowRank(ctx, {
          method: 'lowrank_task_arithmetic',
          shape: [37, 53],
          models,
          params: { rank: 6, energy: 0.7 },
        }),
        await compareLowRank(ctx, {
          method: 'lowrank_task_arithmetic',
          shape: [101],
          models,
          params: { rank: 4 },
        }),
      ];
      return `relative differences ${errs.map(fmt).join(', ')}`;
    },
  },
  {
    name: 'tsv, lore and twin on the GPU equal the CPU',
    async run(ctx) {
      const errs = [
        await compareLowRank(ctx, {
          method: 'tsv',
          shape: [40, 56],
          models: [{ s: S1 }, { s: S2, params: { weight: 0.8 } }],
          params: { rank_fraction: 0.2, alpha: 0.9 },
        }),
        await compareLowRank(ctx, {
          method: 'lore',
          shape: [44, 36],
          models: [{ s: S1 }, { s: S2 }],
          params: { mu: 0.01, rank: 4, iterations: 3 },
          sharedSubspace: true,
        }),
        await compareLowRank(ctx, {
          method: 'twin',
          shape: [36, 44],
          models: [
            { s: S1, params: { weight: 0.5 } },
            { s: S2, params: { weight: 0.5 } },
          ],
          params: { rank: 4 },
          sharedSubspace: true,
        }),
      ];
      return `relative differences ${errs.map(fmt).join(', ')}`;
    },
  },
  {
    name: 'mergeBytes of an SVD method decodes BF16 and encodes like decode + CPU merge + encode',
    async run(ctx) {
      const sc: LowRankScenario = {
        method: 'lowrank_task_arithmetic',
        shape: [32, 24],
        models: [{ s: S1, params: { weight: 1 } }],
        params: { rank: 4 },
      };
      const f32 = lowRankInputs(sc, []);
      const raw = f32.tensors.map((t) => ({
        ...t,
        bytes: encodeFromF32(t.values, 'BF16'),
        dtype: 'BF16' as const,
      }));
      const method = getMethod(sc.method);
      const want = method.merge({
        ...f32,
        report: undefined,
        tensors: raw.map((t) => ({ model: t.model, params: t.params, values: decodeToF32(t.bytes, 'BF16') })),
      });
      const got = await GpuMergeBackend.forContext(ctx).mergeBytes(method, {
        ...f32,
        report: undefined,
        tensors: raw.map(({ model, params, bytes, dtype }) => ({ model, params, bytes, dtype })),
        outDtype: 'F32',
      });
      const values = new Float32Array(got.buffer, got.byteOffset, got.byteLength / 4);
      const err = relativeError(values, want);
      check(err < 1e-6, `mergeBytes differs from the CPU merge by ${err}`);
    },
  },
  {
    name: 'rsvdGpu over the memory budget streams A by rows and is as accurate as the TS rsvd',
    nodeOnly: 'rsvdGpu: geometric spectrum',
    options: streamOptions,
    async run(ctx) {
      // 768 x 256 f32 is 786 kB, over the 500 kB left; the spectrum is known, so the optimum rank-r
      // error needs no SVD of A.
      holdBudget(ctx, 500_000);
      const [m, n, r] = [768, 256, 10];
      const spectrum = Array.from({ length: 60 }, (_, i) => 0.8 ** i);
      check(!rsvdResident(ctx, m, n, r + 10), 'the matrix must be over the budget');
      const a = matrixWithSpectrum(m, n, spectrum, 21);
      const key = { seed: 5, name: 'streamed.rsvd' };
      const f = await rsvdGpu(ctx, a, m, n, r, key);
      const tiles = checkStreamed(ctx, key.name);
      const ou = orthonormalityError(f.U, m, r);
      const ov = orthonormalityError(f.V, n, r);
      check(ou < 1e-5 && ov < 1e-5, `factors not orthonormal: U ${ou}, V ${ov}`);
      const total = spectrum.reduce((acc, s) => acc + s * s, 0);
      const optimum = Math.sqrt(spectrum.slice(r).reduce((acc, s) => acc + s * s, 0) / total);
      const err = relativeError(lowRankProduct(f), a);
      check(err <= optimum * 1.01, `rank-${r} error ${err} vs optimum ${optimum} (must be within 1%)`);
      for (let i = 0; i < r; i++) {
        check(Math.abs(f.S[i] - spectrum[i]) < 5e-4, `sigma_${i}: GPU ${f.S[i]}, exact ${spectrum[i]}`);
      }
      const cpu = rsvd(a, m, n, r, key);
      const product = relativeError(lowRankProduct(f), lowRankProduct(cpu));
      check(product < 1e-4, `the streamed rank-${r} approximation differs from the CPU's by ${product}`);
      return `${tiles} tiles; error/optimum ${(err / optimum).toFixed(5)}, vs CPU ${fmt(product)}`;
    },
  },
  {
    name: 'orthonormalizeStreamed and the streamed polar factor equal the TS ones',
    options: streamOptions,
    async run(ctx) {
      // 1200 x 40: resident, the polar factor's X, Q and product would take 780 kB of the 400 kB left.
      holdBudget(ctx, 400_000);
      const [m, n] = [1200, 40];
      const a = randomMatrix(m, n, 61);
      const qr = await orthonormalizeStreamed(ctx, a, m, n);
      check(qr.method === 'cholesky-qr' && qr.rounds === 2, `${qr.method} after ${qr.rounds} rounds`);
      const o = orthonormalityError(qr.q, m, n);
      check(o < 1e-5, `orthonormality error ${o}`);
      const before = ctx.pool.createdCount;
      const err = relativeError(await polarFactorGpu(ctx, a, m, n), polarFactor(a, m, n));
      check(err < 1e-5, `streamed polar factor differs by ${err}`);
      check(ctx.pool.createdCount > before, 'the polar factor made no buffers');
      check(ctx.pool.peakBytes <= STREAM_BUDGET, `pool peak ${ctx.pool.peakBytes} over the budget`);
      return `orthonormality ${fmt(o)}, polar factor ${fmt(err)}`;
    },
  },
  ...STREAMED_METHODS.map(
    (sc): GpuCase => ({
      name: `${sc.method} on a tensor over the memory budget streams and equals the CPU`,
      nodeOnly:
        sc.method === 'lowrank_task_arithmetic'
          ? 'lowrank_task_arithmetic on the GPU equals the CPU'
          : 'tsv, lore and twin on the GPU equal the CPU',
      options: streamOptions,
      async run(ctx) {
        // 768 x 256 f32 is 786 kB per model, over the 500 kB left.
        holdBudget(ctx, 500_000);
        streamPlans.length = 0;
        const err = await compareLowRank(ctx, { ...sc, shape: [768, 256] });
        const tiles = checkStreamed(ctx, `model.layers.0.mlp.${sc.method}.weight`);
        return `${tiles} tiles; relative difference ${fmt(err)}`;
      },
    }),
  ),
];
