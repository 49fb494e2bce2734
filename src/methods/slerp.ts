/**
 * mergekit's `slerp`: spherical linear interpolation between the base model (t = 0) and the one other
 * model (t = 1), treating each whole tensor as one vector (mergekit/merge_methods/slerp.py).
 *
 * In f32 (mergekit runs it in numpy float32), with a = base and b = the other model:
 *   na = normF32(a), nb = normF32(b)                      (blocked sums, f32-reduce.ts)
 *   â[i] = na > fround(1e-8) ? fround(a[i] / na) : a[i]   (likewise b̂; a zero vector stays as it is)
 *   dot = blocked f32 sum of fround(â[i] * b̂[i])
 *   |dot| > fround(0.9995), the vectors nearly colinear: lerp, s0 = fround(1 - t), s1 = fround(t)
 *     (1 - t is computed in double, as a Python float)
 *   otherwise:
 *     theta0 = fround(acos(dot)), sin0 = fround(sin(theta0)), thetaT = fround(theta0 * fround(t)),
 *     s0 = fround(fround(sin(fround(theta0 - thetaT))) / sin0), s1 = fround(fround(sin(thetaT)) / sin0)
 *   out[i] = fround(fround(s0 * a[i]) + fround(s1 * b[i]))
 * A NaN anywhere makes dot NaN, which is not > 0.9995, so every output is NaN, as in numpy.
 * acos/sin are computed in double and rounded to f32: GPU code reduces na, nb and dot on the device and
 * takes s0, s1 from `slerpCoefficients` rather than from WGSL's approximate transcendentals.
 * With a single input the result is that input; more than two inputs is an error.
 * Streaming: pass 0 sums the squares for na and nb, pass 1 sums the dot product of the unit vectors
 * (it needs na and nb), and the output pass is element-wise.
 */

import type { GpuMergeJob } from '../gpu/job';
import { chunkLength, chunkRowLength, mergeAsOneChunk, ScratchF32, specOf } from './chunks';
import { BlockedSumF32 } from './f32-reduce';
import { elementCount, readNumber } from './params';
import { slerpOnGpu } from './slerp.gpu';
import {
  type MergeInputs,
  type MergeMethod,
  MergeMethodError,
  type ParamSpec,
  type StreamingMerge,
  type TensorChunk,
  type TensorMergeSpec,
} from './types';

const fround = Math.fround;

/** |dot| above this (compared in f32) counts as colinear and falls back to linear interpolation. */
export const SLERP_DOT_THRESHOLD = fround(0.9995);
/** Norms at or below this leave the vector unnormalized. */
export const SLERP_NORM_EPSILON = fround(1e-8);

/** na, nb and the cosine of slerp, gathered over chunks (module comment). */
class SlerpStatistics {
  private readonly squaresA = new BlockedSumF32();
  private readonly squaresB = new BlockedSumF32();
  private readonly dot = new BlockedSumF32();
  private norms: { na: number; nb: number } | null = null;
  private readonly unitA = new ScratchF32();
  private readonly unitB = new ScratchF32();

  /** Pass 0. */
  addSquares(a: Float32Array, b: Float32Array): void {
    this.squaresA.addSquares(a, 0, a.length);
    this.squaresB.addSquares(b, 0, b.length);
  }

  /** Pass 1: terms fround(â[i] * b̂[i]). */
  addUnitProducts(a: Float32Array, b: Float32Array): void {
    if (this.norms === null) {
      this.norms = {
        na: fround(Math.sqrt(this.squaresA.result())),
        nb: fround(Math.sqrt(this.squaresB.result())),
      };
    }
    const unitA = this.unit(this.unitA, a, this.norms.na);
    const unitB = this.unit(this.unitB, b, this.norms.nb);
    this.dot.addProducts(unitA, unitB, 0, a.length);
  }

  cosine(): number {
    return this.dot.result();
  }

  /** x / norm, rounded, or x itself when the norm is too small to divide by. */
  private unit(scratch: ScratchF32, x: Float32Array, norm: number): Float32Array {
    if (!(norm > SLERP_NORM_EPSILON)) return x;
    const unit = scratch.take(x.length);
    for (let i = 0; i < x.length; i++) unit[i] = x[i] / norm;
    return unit;
  }
}

/** Cosine of the angle between a and b, computed as in the module comment. */
export function slerpCosine(a: Float32Array, b: Float32Array): number {
  const statistics = new SlerpStatistics();
  statistics.addSquares(a, b);
  statistics.addUnitProducts(a, b);
  return statistics.cosine();
}

/** The two interpolation coefficients for a cosine `dot` and factor `t` (module comment). */
export function slerpCoefficients(dot: number, t: number): { s0: number; s1: number; colinear: boolean } {
  if (Math.abs(dot) > SLERP_DOT_THRESHOLD) {
    return { s0: fround(1 - t), s1: fround(t), colinear: true };
  }
  const theta0 = fround(Math.acos(dot));
  const sin0 = fround(Math.sin(theta0));
  const thetaT = fround(theta0 * fround(t));
  const s0 = fround(fround(Math.sin(fround(theta0 - thetaT))) / sin0);
  const s1 = fround(fround(Math.sin(thetaT)) / sin0);
  return { s0, s1, colinear: false };
}

export class SlerpMerge implements MergeMethod {
  readonly name = 'slerp';
  readonly summary = 'Spherical interpolation between the base model and one other model.';
  readonly baseModel = 'required' as const;
  readonly taskVector = false;
  readonly globalParams: readonly ParamSpec[] = [
    {
      name: 't',
      type: 'number',
      required: true,
      doc: 'Interpolation factor: 0 gives the base model, 1 the other model.',
    },
  ];
  readonly modelParams: readonly ParamSpec[] = [];

  merge(inputs: MergeInputs): Float32Array {
    return mergeAsOneChunk(this.name, this.stream(specOf(inputs)), inputs);
  }

  gpu(job: GpuMergeJob): Promise<void> {
    return slerpOnGpu(this, job);
  }

  stream(spec: TensorMergeSpec): StreamingMerge {
    const { tensors, baseIndex } = spec;
    const rowLength = chunkRowLength(spec.shape);
    const total = elementCount(spec.shape);
    if (tensors.length === 1) {
      return {
        passes: 0,
        accumulate: () => {},
        produce: (chunk: TensorChunk, out: Float32Array) => {
          chunkLength(this.name, spec, chunk, rowLength, total);
          out.set(chunk.values[0]);
        },
      };
    }
    if (tensors.length !== 2) {
      throw new MergeMethodError(
        `slerp merges exactly two models (the base and one other), got ${tensors.length}`,
      );
    }
    if (baseIndex !== 0 && baseIndex !== 1) {
      throw new MergeMethodError('slerp needs a base_model, which must be one of the two models');
    }
    const t = readNumber(this.name, spec.params, this.globalParams, 't');
    const otherIndex = 1 - baseIndex;
    const statistics = new SlerpStatistics();
    let coefficients: { s0: number; s1: number } | null = null;
    const length = (chunk: TensorChunk) => chunkLength(this.name, spec, chunk, rowLength, total, baseIndex);
    return {
      passes: 2,
      accumulate: (pass: number, chunk: TensorChunk) => {
        length(chunk);
        const a = chunk.values[baseIndex];
        const b = chunk.values[otherIndex];
        if (pass === 0) statistics.addSquares(a, b);
        else statistics.addUnitProducts(a, b);
      },
      produce: (chunk: TensorChunk, out: Float32Array) => {
        const n = length(chunk);
        coefficients ??= slerpCoefficients(statistics.cosine(), t);
        const { s0, s1 } = coefficients;
        const a = chunk.values[baseIndex];
        const b = chunk.values[otherIndex];
        for (let i = 0; i < n; i++) out[i] = fround(s0 * a[i]) + fround(s1 * b[i]);
      },
      blend: () => {
        coefficients ??= slerpCoefficients(statistics.cosine(), t);
        return { a: baseIndex, b: otherIndex, s0: coefficients.s0, s1: coefficients.s1 };
      },
    };
  }
}
