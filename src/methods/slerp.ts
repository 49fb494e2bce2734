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
 */
import { blockedSumF32, normF32 } from './f32-reduce';
import { readNumber } from './params';
import { type MergeInputs, type MergeMethod, MergeMethodError, type ParamSpec } from './types';

const fround = Math.fround;

/** |dot| above this (compared in f32) counts as colinear and falls back to linear interpolation. */
export const SLERP_DOT_THRESHOLD = fround(0.9995);
/** Norms at or below this leave the vector unnormalized. */
export const SLERP_NORM_EPSILON = fround(1e-8);

/** Cosine of the angle between a and b, computed as in the module comment. */
export function slerpCosine(a: Float32Array, b: Float32Array): number {
  const na = normF32(a);
  const nb = normF32(b);
  const normalizeA = na > SLERP_NORM_EPSILON;
  const normalizeB = nb > SLERP_NORM_EPSILON;
  return blockedSumF32(a.length, (i) => {
    const unitA = normalizeA ? fround(a[i] / na) : a[i];
    const unitB = normalizeB ? fround(b[i] / nb) : b[i];
    return unitA * unitB;
  });
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

/** Slerp of two equal-length tensors (a at t = 0, b at t = 1). */
export function slerpTensors(t: number, a: Float32Array, b: Float32Array): Float32Array {
  const { s0, s1 } = slerpCoefficients(slerpCosine(a, b), t);
  const out = new Float32Array(a.length);
  for (let i = 0; i < out.length; i++) out[i] = fround(s0 * a[i]) + fround(s1 * b[i]);
  return out;
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
    const { tensors, baseIndex } = inputs;
    if (tensors.length === 1) return tensors[0].values.slice();
    if (tensors.length !== 2) {
      throw new MergeMethodError(
        `slerp merges exactly two models (the base and one other), got ${tensors.length}`,
      );
    }
    if (baseIndex !== 0 && baseIndex !== 1) {
      throw new MergeMethodError('slerp needs a base_model, which must be one of the two models');
    }
    const t = readNumber(this.name, inputs.params, this.globalParams, 't');
    const base = tensors[baseIndex];
    const other = tensors[1 - baseIndex];
    if (base.values.length !== other.values.length) {
      throw new MergeMethodError(
        `slerp: model "${other.model}" has ${other.values.length} elements where the base has ${base.values.length}`,
      );
    }
    return slerpTensors(t, base.values, other.values);
  }
}
