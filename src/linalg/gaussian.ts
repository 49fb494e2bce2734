/**
 * Gaussian test matrices for the randomized SVD, from the counter-based generator.
 *
 * Entry (i, j) of a rows x cols matrix has flat index e = i * cols + j. It takes the two uniforms of
 * the counter-based generator (src/random/counter-rng.ts) at element indices 2e and 2e + 1, keyed by
 * (seed, tensor name), with counter words (model index, stream RNG_STREAM_GAUSSIAN = 1):
 *   u1 = uniform(2e), u2 = uniform(2e + 1), both in [0, 1) on the 2^-24 grid,
 *   z  = sqrt(-2 ln(1 - u1)) * cos(2 pi u2)        (Box-Muller, cosine branch only)
 * computed in f64 and rounded to f32. 1 - u1 lies in (0, 1], so the logarithm is finite.
 *
 * The uniforms are bit-identical on CPU and GPU; the logarithm and cosine are not correctly rounded in
 * WGSL, so a GPU test matrix may differ from this one by a few f32 ulps per entry. A randomized range
 * finder is insensitive to that: any Gaussian matrix gives the same error bounds.
 */

import { fillUniform, fnv1a32, RNG_STREAM_GAUSSIAN } from '../random/counter-rng.js';

/** Entries generated per tile, to bound the scratch buffer of uniforms. */
const TILE = 1 << 16;

export interface GaussianKey {
  readonly seed: number;
  /** Tensor name; hashed into the generator's key. */
  readonly name: string;
  /** Position of the model in the merge inputs (counter word c1); 0 when not per model. */
  readonly modelIndex?: number;
}

/** A rows x cols row-major matrix of standard normal f32 values (see the module comment). */
export function gaussianMatrix(rows: number, cols: number, key: GaussianKey): Float32Array {
  const count = rows * cols;
  const out = new Float32Array(count);
  const nameHash = fnv1a32(key.name);
  const modelIndex = key.modelIndex ?? 0;
  const uniforms = new Float32Array(2 * Math.min(TILE, count));
  for (let start = 0; start < count; start += TILE) {
    const len = Math.min(TILE, count - start);
    const pairs = len === TILE ? uniforms : uniforms.subarray(0, 2 * len);
    fillUniform(pairs, key.seed, nameHash, modelIndex, RNG_STREAM_GAUSSIAN, 2 * start);
    for (let k = 0; k < len; k++) {
      const u1 = pairs[2 * k];
      const u2 = pairs[2 * k + 1];
      out[start + k] = Math.sqrt(-2 * Math.log(1 - u1)) * Math.cos(2 * Math.PI * u2);
    }
  }
  return out;
}
