/**
 * Activation-informed merging (AIM; Nobari et al. 2025, official code ahnobari/ActivationInformedMerging,
 * `MergeModels/ActivationMerging/_utils.py`), applied on top of any merge method's f32 result.
 *
 * Semantics, as that code does it:
 * - Statistics come from the base model (System 1) only: for every module that has a weight and whose
 *   name has no `embed` (every linear layer, lm_head, every RMSNorm), a[c] = sum over calibration
 *   blocks of the mean over the block's tokens of |x[t, c]|, x that module's input (see
 *   src/model/calibration.ts).
 * - I = a / max(a); per output tensor `<module>.weight` of shape [..., in]:
 *     W = W_base + (W_merged - W_base) * (1 - (1 - omega) * I[c]),   c = flat index mod in
 *   (the input-channel axis of a [out, in] linear weight; element-wise for a 1-D norm weight).
 * - Biases and embeddings (`embed` in the name) keep the merged values.
 *
 * Where this differs from that code, on purpose:
 * - All math is f32 on the method's unrounded f32 result, rounded once to the output dtype by the engine
 *   (the official code subtracts two bf16 models, so its delta is rounded to bf16 first).
 * - Where the factor is exactly 1 (omega 1, or I = 0) the merged value is kept as is: in f32,
 *   base + (merged - base) can differ from merged by a rounding, and omega 1 must be the plain merge.
 * - max(a) = 0 (a module that never saw a non-zero input) gives I = 0 (the merged weight), not NaN.
 * - A tied lm_head: when the output writes no `lm_head.weight` (every model ties it), the shared matrix
 *   is the embedding and keeps the merged values. (In the official code the tied Parameter is the same
 *   object under both names, so its last write, lm_head's relaxed value, wins.) When the output has its
 *   own `lm_head.weight`, it is relaxed with lm_head's input statistics like any linear layer.
 */

import type { CalibrationSettings } from '../recipe/aim';

/** The paper's (and AIM's README) default. */
export const AIM_DEFAULT_OMEGA = 0.4;

/** AIM cannot be applied as asked: statistics missing or of the wrong shape, a bad omega. */
export class AimError extends Error {
  override name = 'AimError';
}

/** The calibration statistics of one base model: a[c] per module, plus what produced them. */
export interface ActivationStatistics {
  /** Module name (tensor name without `.weight`, e.g. `model.layers.0.mlp.down_proj`) to a[c]. */
  readonly modules: ReadonlyMap<string, Float32Array>;
  /** Calibration blocks summed. */
  readonly blocks: number;
  readonly blockSize: number;
  /** SHA-256 (hex) of the calibration text used (see src/model/calibration-text.ts). */
  readonly textSha256: string;
  /** Tokens seen per module (blocks x blockSize). */
  readonly tokens: number;
  /** The calibration settings that produced them (kept in a saved statistics file). */
  readonly calibration?: CalibrationSettings;
}

/**
 * The module whose input statistics relax tensor `tensorName`, or undefined when AIM keeps the merged
 * values (biases, embeddings, anything that is not a module's `.weight`).
 */
export function aimModuleOf(tensorName: string): string | undefined {
  if (!tensorName.endsWith('.weight') || tensorName.includes('embed')) return undefined;
  return tensorName.slice(0, -'.weight'.length);
}

/** I = a / max(a) in f32 (all zeros when max(a) is 0). Non-finite or negative a is refused. */
export function importanceOf(a: Float32Array, module = 'module'): Float32Array {
  let max = 0;
  for (let c = 0; c < a.length; c++) {
    const v = a[c];
    if (!Number.isFinite(v) || v < 0) {
      throw new AimError(
        `the activation statistics of ${module} hold ${v} at channel ${c}; they must be finite and >= 0`,
      );
    }
    if (v > max) max = v;
  }
  const importance = new Float32Array(a.length);
  if (max === 0) return importance;
  for (let c = 0; c < a.length; c++) importance[c] = a[c] / max;
  return importance;
}

/** The relaxation factor 1 - (1 - omega) * I[c] per channel, f32 at each step. */
export function relaxationFactors(importance: Float32Array, omega: number): Float32Array {
  if (!Number.isFinite(omega) || omega < 0 || omega > 1)
    throw new AimError(`aim.omega must be a number from 0 to 1, got ${omega}`);
  const keep = Math.fround(1 - Math.fround(omega));
  const factors = new Float32Array(importance.length);
  for (let c = 0; c < importance.length; c++) factors[c] = 1 - Math.fround(keep * importance[c]);
  return factors;
}

/**
 * out[i] = base[i] + (merged[i] - base[i]) * factors[(start + i) % factors.length], f32, for elements
 * [start, start + merged.length) of a row-major tensor whose last axis has factors.length entries.
 * `out` may be `merged`.
 */
export function applyRelaxation(
  merged: Float32Array,
  base: Float32Array,
  factors: Float32Array,
  start = 0,
  out: Float32Array = merged,
): Float32Array {
  const channels = factors.length;
  if (base.length !== merged.length || out.length !== merged.length)
    throw new AimError(
      `AIM got ${merged.length} merged, ${base.length} base and ${out.length} output values`,
    );
  let c = start % channels;
  for (let i = 0; i < merged.length; i++) {
    const f = factors[c];
    const m = merged[i];
    if (f !== 1) {
      const b = base[i];
      out[i] = b + Math.fround(Math.fround(m - b) * f);
    } else {
      out[i] = m;
    }
    if (++c === channels) c = 0;
  }
  return out;
}

/** AIM as the engine applies it: one omega and one set of statistics, factors computed once per module. */
export class AimRelaxation {
  private readonly factors = new Map<string, Float32Array>();

  constructor(
    readonly statistics: ActivationStatistics,
    readonly omega: number,
  ) {
    relaxationFactors(new Float32Array(0), omega); // validates omega up front
  }

  /**
   * The per-channel factors for output tensor `tensorName` of `shape`, or undefined when AIM keeps
   * the merged values of that tensor.
   */
  factorsFor(tensorName: string, shape: readonly number[]): Float32Array | undefined {
    const module = aimModuleOf(tensorName);
    if (module === undefined || shape.length === 0) return undefined;
    const cached = this.factors.get(module);
    if (cached) return cached;
    const a = this.statistics.modules.get(module);
    if (!a) {
      throw new AimError(
        `the activation statistics have no entry for module ${module} (needed for tensor ${tensorName}); ` +
          'they were computed for another model: rerun the calibration on this base model',
      );
    }
    const channels = shape[shape.length - 1];
    if (a.length !== channels) {
      throw new AimError(
        `the activation statistics of module ${module} have ${a.length} channels but tensor ${tensorName} ` +
          `has ${channels} inputs (shape [${shape.join(', ')}]); they were computed for another model`,
      );
    }
    const factors = relaxationFactors(importanceOf(a, module), this.omega);
    this.factors.set(module, factors);
    return factors;
  }
}
